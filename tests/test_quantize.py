"""Quantization round trip: train one epoch on a few hundred generated faces, convert to int8,
check every tensor is int8/uint8 (int32 biases), the manifest validates, and drift runs on it."""

import argparse
import json

import numpy as np
import pytest

import convert  # noqa: F401
from convert import drift
from convert.quantize import build_manifest, convert_to_int8, representative_images
from convert.recipes import get_recipe
from convert.train import train
from edge.manifest import FER_LABELS, load_manifest, write_manifest


def _synthetic_faces(n, seed):
    """Class k = a bright square at one of 7 positions, plus noise: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    x = rng.integers(0, 60, (n, 48, 48)).astype(np.uint8)  # includes 0 (and the squares 255)
    for i, k in enumerate(y):
        r, c = divmod(int(k), 3)
        x[i, 4 + r * 14:16 + r * 14, 4 + c * 14:16 + c * 14] = 255
    return x, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    xt, yt = _synthetic_faces(384, 0)
    xv, yv = _synthetic_faces(128, 1)
    recipe = get_recipe("smoke", epochs=1, batch_size=32, erasing=0.0)
    summary = train(recipe, xt, yt, xv, yv, out, verbose=0)
    return out, summary, (xt, yt), (xv, yv)


def test_training_writes_checkpoint_history_and_resumes(trained):
    out, summary, (xt, yt), (xv, yv) = trained
    for name in ("best.keras", "recalibrated.keras", "history.csv", "curves.png", "train.json", "backup"):
        assert (out / name).exists(), name
    assert summary["epochs_run"] == 1 and summary["params"] == 58423
    # batch norms re-estimated on the clean training images: same weights, new moving statistics
    import keras

    best, recal = (keras.models.load_model(out / n, compile=False) for n in ("best.keras", "recalibrated.keras"))
    bn = next(l.name for l in best.layers if isinstance(l, keras.layers.BatchNormalization))
    (g0, b0, m0, v0), (g1, b1, m1, v1) = best.get_layer(bn).get_weights(), recal.get_layer(bn).get_weights()
    assert np.array_equal(g0, g1) and np.array_equal(b0, b1) and not np.allclose(m0, m1)
    note = json.loads((out / "recalibrated.json").read_text())["batch_norm_recalibration"]
    assert note["from"] == "best.keras" and note["images"] == len(xt) and note["batch_norms"] == 14
    from edge.errors import FerEdgeError

    with pytest.raises(FerEdgeError, match="--resume"):
        train(get_recipe("smoke", epochs=2), xt, yt, xv, yv, out, verbose=0)


def test_distillation_uses_teacher_scores_and_warm_start(trained, tmp_path):
    """Recipe fields teacher/distill/init: soft targets from a teacher (cached), weights from init."""
    from edge.errors import FerEdgeError

    out, summary, (xt, yt), (xv, yv) = trained
    recipe = get_recipe("smoke", epochs=1, batch_size=32, erasing=0.0, teacher=str(out / "best.keras"),
                        distill=0.5, init=str(out / "best.keras"))
    student = train(recipe, xt, yt, xv, yv, tmp_path / "kd", verbose=0)
    scores = np.load(tmp_path / "kd" / "teacher_scores.npy")
    assert scores.shape == (len(xt), 7) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert student["epochs_run"] == 1
    # the warm start really starts from init's weights
    import keras

    from convert.train import initial_model

    start = initial_model(recipe).get_weights()
    trained_weights = keras.models.load_model(out / "best.keras", compile=False).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(start, trained_weights))
    missing = get_recipe("smoke", epochs=1, teacher=str(tmp_path / "nope.keras"), distill=0.5)
    with pytest.raises(FerEdgeError, match="teacher model .* not found"):
        train(missing, xt, yt, xv, yv, tmp_path / "kd2", verbose=0)


def test_int8_round_trip(trained, tmp_path):
    import keras

    from edge.int8 import interpreter_module

    out, summary, (xt, yt), (xv, yv) = trained
    model = keras.models.load_model(out / "best.keras", compile=False)
    tflite = tmp_path / "synthetic.tflite"
    tflite.write_bytes(convert_to_int8(model, representative_images(xt, yt, 64)))
    interp = interpreter_module().Interpreter(model_path=str(tflite))
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    assert list(inp["shape"]) == [1, 48, 48, 1] and inp["dtype"] == np.int8
    assert list(outp["shape"]) == [1, 7] and outp["dtype"] == np.int8
    dtypes = {t["dtype"] for t in interp.get_tensor_details()}
    assert dtypes <= {np.int8, np.uint8, np.int32}, dtypes
    float_tensors = [t["name"] for t in interp.get_tensor_details() if t["dtype"] == np.float32]
    assert not float_tensors

    info = json.loads((out / "train.json").read_text())
    manifest = build_manifest("synthetic", tflite, summary["params"], info, 127.5, 127.5)
    write_manifest(manifest, tflite)
    loaded = load_manifest(tflite)
    assert loaded.labels == FER_LABELS and loaded.params == 58423 and loaded.trained.recipe == "smoke"

    # The drift command on the same pair: float and int8 agree on these easy images.
    np.savez(tmp_path / "val.npz", x=xv, y=yv)
    result = drift.measure_drift(out / "best.keras", tflite, tmp_path / "val.npz", "PublicTest",
                                 out_dir=tmp_path / "report", name="synthetic", dataset="synthetic", max_drop=100.0,
                                 min_agreement=0.0, update_manifest=True, threads=1, batch_size=64)
    assert result.ok and result.manifest == tflite.with_suffix(".json")
    metrics = load_manifest(tflite).metrics
    assert metrics.split == "PublicTest" and 0.0 <= metrics.int8_accuracy <= 1.0
    assert (tmp_path / "report" / "synthetic_confusion_int8.png").is_file()


def test_convert_command_end_to_end(trained, tmp_path, capsys):
    """`fer-edge convert` on the trained model: rewrites, int8 file, manifest, Edge TPU check, drift."""
    from convert import quantize
    from edge.int8 import make_interpreter

    out, summary, (xt, yt), (xv, yv) = trained
    data = tmp_path / "fer.npz"
    np.savez(data, Training_x=xt, Training_y=yt, PublicTest_x=xv, PublicTest_y=yv)
    parser = argparse.ArgumentParser()
    quantize.add_arguments(parser)
    args = parser.parse_args(["--keras", str(out / "best.keras"), "--data", str(data), "--name", "synthetic",
                              "--out", str(tmp_path / "models"), "--report-dir", str(tmp_path / "reports"),
                              "--representative", "64", "--split", "PublicTest", "--max-drop", "100",
                              "--min-agreement", "0"])
    assert quantize.run(args) == 0
    printed = capsys.readouterr().out
    assert "separable convolutions expanded" in printed and "equalized channel ranges: 6 ReLU outputs, 4 residual adds" in printed
    tflite = tmp_path / "models" / "synthetic.tflite"
    manifest = load_manifest(tflite, check_sha=True)
    assert (manifest.input.mean, manifest.input.std) == (128.0, 128.0)
    assert manifest.metrics.split == "PublicTest" and manifest.metrics.agreement > 0.9
    assert "expanded" in manifest.trained.int8_graph and manifest.trained.int8_equalized is True
    counts = np.bincount(yt, minlength=len(FER_LABELS))
    assert manifest.class_prior == pytest.approx((counts / counts.sum()).tolist(), abs=1e-6)
    interpreter = make_interpreter(tflite).interpreter
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    assert zero_point == 0 and abs(scale - 1 / 128) < 1e-9  # the int8 input is exactly pixel - 128
    assert (tmp_path / "reports" / "edgetpu.md").is_file()
