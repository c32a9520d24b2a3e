"""edge/int8.py: the one adapter every model runs through (device classifier, drift gate, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.int8 import cpu_path, dequantize, edgetpu_path, is_edgetpu_model, make_interpreter, quantize_input
from edge.manifest import manifest_path_for

pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")


def test_edgetpu_file_names():
    assert edgetpu_path("m/foo.tflite") == Path("m/foo_edgetpu.tflite")
    assert edgetpu_path("m/foo_edgetpu.tflite") == Path("m/foo_edgetpu.tflite")
    assert cpu_path("m/foo_edgetpu.tflite") == Path("m/foo.tflite") and cpu_path("m/foo.tflite") == Path("m/foo.tflite")
    assert is_edgetpu_model("foo_edgetpu.tflite") and not is_edgetpu_model("foo.tflite")
    assert manifest_path_for("m/foo_edgetpu.tflite") == manifest_path_for("m/foo.tflite") == Path("m/foo.json")


def test_quantize_input_is_tflites_quantize_kernel():
    px = np.array([0, 127, 128, 255], np.uint8)
    # mean = std = 128, scale 1/128, zero point 0 (the shipped contract): exactly pixel - 128.
    assert quantize_input(px, 128.0, 128.0, 1 / 128, 0, np.int8).tolist() == [-128, -1, 0, 127]
    # mean = std = 127.5 as the converter quantizes it (scale 2/255, zero point -1): float32, x * (1/scale),
    # half to even, so pixels 127 and 128 share a level.
    assert quantize_input(px, 127.5, 127.5, 0.007843137718737125, -1, np.int8).tolist() == [-128, -1, -1, 126]


def test_dequantize():
    q = np.array([-128, 0, 127], np.int8)
    np.testing.assert_array_equal(dequantize(q, {"quantization": (0.5, -128)}), [0.0, 64.0, 127.5])
    assert dequantize(np.array([0.25], np.float32), {"quantization": (0.0, 0)}).tolist() == [0.25]  # float output


def test_make_interpreter_says_which_file_it_loaded(standin_model, tmp_path):
    loaded = make_interpreter(standin_model)
    assert loaded.backend == "cpu" and loaded.path == Path(standin_model)
    plain = tmp_path / "m.tflite"
    plain.write_bytes(Path(standin_model).read_bytes())
    compiled = tmp_path / "m_edgetpu.tflite"
    compiled.write_bytes(plain.read_bytes())  # stands in for the compiler's output
    interpreter, backend, path = make_interpreter(compiled, "cpu")
    assert backend == "cpu" and path == plain


def test_device_and_drift_gate_compute_the_same_scores(standin_model):
    """The classifier on the device and the drift gate's predict_int8 share quantize, invoke and dequantize."""
    from convert.drift import predict_int8
    from edge.classify import ExpressionClassifier, ModelConfig

    clf = ExpressionClassifier(ModelConfig(path=str(standin_model), accelerator="cpu"))
    crops = np.random.default_rng(4).integers(0, 256, (6, 48, 48)).astype(np.uint8)
    gate = predict_int8(standin_model, crops, clf.manifest.input.mean, clf.manifest.input.std, threads=1,
                        progress=False)
    device = clf.classify_batch(list(crops))  # the device renormalises the int8 softmax to sum to 1
    np.testing.assert_allclose(device, gate / gate.sum(axis=1, keepdims=True), rtol=1e-6)
