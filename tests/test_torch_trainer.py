"""The CUDA trainer that produced the shipped models runs the Keras graph in PyTorch: check, on the
CPU, that it computes exactly what Keras computes (TensorFlow 'same' padding, batch norm) and that
trained weights come back into a Keras model that reproduces the torch net."""

import json

import numpy as np
import pytest

import convert  # noqa: F401
from convert.models import build_model
from convert.recipes import get_recipe

torch = pytest.importorskip("torch", reason="the GPU trainer needs PyTorch: make setup-dev installs torch==2.13.0")

from convert.torchnet import GraphExecutor
from convert.trainer import train_torch  # noqa: E402
from tests.convert_model_fixtures import with_random_batch_norm as _with_random_batch_norm  # noqa: E402


@pytest.mark.parametrize("name", ["mini_xception", "tiny"])
def test_graph_executor_matches_keras(name):
    rng = np.random.default_rng(0)
    model = _with_random_batch_norm(build_model(name), rng)
    x = rng.uniform(-1, 1, (4, 48, 48, 1)).astype(np.float32)
    net = GraphExecutor(model).eval()
    with torch.no_grad():
        p_torch = torch.softmax(net(torch.tensor(x).permute(0, 3, 1, 2)), 1).numpy()
    p_keras = model.predict(x, verbose=0)
    assert np.abs(p_torch - p_keras).max() < 1e-4


def test_quant_points_are_the_int8_activation_tensors():
    net = GraphExecutor(build_model("mini_xception"))
    # 15 conv outputs (BN/ReLU fused), 8 depthwise outputs, 4 adds, 1 mean: as TFLite converts it.
    assert len(net.quant_points) == 28
    assert sum(p.endswith("/depthwise") for p in net.quant_points) == 8


def test_train_torch_exports_a_keras_model(tmp_path):
    import keras

    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (96, 48, 48), dtype=np.uint8)
    y = rng.integers(0, 7, 96)
    recipe = get_recipe("smoke", epochs=1, batch_size=32)
    summary = train_torch(recipe, x, y, x[:32], y[:32], tmp_path, device="cpu")
    assert summary["epochs_run"] == 1 and summary["export_max_abs_diff"] < 1e-3
    info = json.loads((tmp_path / "train.json").read_text())
    assert info["trainer"].startswith("torch")
    reloaded = keras.models.load_model(tmp_path / "best.keras", compile=False)
    assert reloaded.count_params() == 58423
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "history.csv").is_file()
    assert (tmp_path / "recalibrated.keras").is_file() and (tmp_path / "recalibrated.json").is_file()

    # warm start + online distillation from the model just trained
    kd = get_recipe("smoke", epochs=1, batch_size=32, init=str(tmp_path / "best.keras"),
                    teacher=str(tmp_path / "best.keras"), distill=0.5)
    student = train_torch(kd, x, y, x[:32], y[:32], tmp_path / "kd", device="cpu")
    assert student["recipe"]["distill"] == 0.5 and (tmp_path / "kd" / "best.keras").is_file()


def test_weight_average_is_what_gets_exported(tmp_path):
    import keras
    import torch

    rng = np.random.default_rng(2)
    x = rng.integers(0, 255, (64, 48, 48), dtype=np.uint8)
    y = rng.integers(0, 7, 64)
    recipe = get_recipe("smoke", epochs=1, batch_size=32, ema=0.5)
    train_torch(recipe, x, y, x[:32], y[:32], tmp_path, device="cpu")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    key = next(k for k in state["ema"] if k.endswith("__k"))
    live, avg = state["net"][key].numpy(), state["ema"][key].numpy()
    assert np.abs(live - avg).max() > 1e-6  # two steps at decay 0.5 leave the average behind
    assert np.array_equal(state["best_state"][key].numpy(), avg)
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert "val_accuracy_live" in rows[0]
    layer = keras.models.load_model(tmp_path / "best.keras", compile=False).get_layer(key.split("__")[0].removeprefix("params."))
    np.testing.assert_allclose(layer.get_weights()[0], avg.transpose(2, 3, 1, 0), atol=1e-7)


def test_int8_teacher_scores_what_the_interpreter_scores(standin_model):
    """An int8 .tflite teacher scores an augmented batch as the TFLite interpreter scores those pixels."""
    from convert.drift import predict_int8
    from convert.trainer import load_teacher
    from edge.manifest import load_manifest

    teacher = load_teacher(get_recipe("smoke", teacher=str(standin_model), distill=0.5), "cpu")
    pixels = np.random.default_rng(3).integers(0, 256, (5, 48, 48)).astype(np.uint8)
    xb = torch.tensor((pixels.astype(np.float32) - 127.5) / 127.5)[:, None]
    m = load_manifest(standin_model)
    expected = predict_int8(standin_model, pixels, m.input.mean, m.input.std, threads=1, progress=False)
    assert np.allclose(teacher(xb).numpy(), expected, atol=1e-6)
    assert load_teacher(get_recipe("smoke"), "cpu") is None


def test_weight_quant_folds_batch_norm():
    """With BN folded into the convolutions and int8 per-channel weights, the net still computes
    (almost) the float function: only weight rounding separates the two."""
    rng = np.random.default_rng(2)
    model = _with_random_batch_norm(build_model("mini_xception"), rng)
    net = GraphExecutor(model).eval()
    assert len(net.bn_after) == 14  # 2 stem + 4 shortcut convs, 8 separable convs; the logits conv has none
    x = torch.tensor(rng.uniform(-1, 1, (8, 1, 48, 48)).astype(np.float32))
    with torch.no_grad():
        ref = net(x)
        net.weight_quant = True
        folded = net(x)
    err = (folded - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05  # rounded (not identical), but the same function
