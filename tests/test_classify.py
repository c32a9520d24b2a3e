"""ExpressionClassifier on real int8 TFLite models (stand-ins built with TF by a fixture)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from edge.classify import ExpressionClassifier, ModelConfig
from edge.errors import ModelError
from edge.manifest import FER_LABELS, ModelManifest, default_model_path, sha256_of, write_manifest
from tests.conftest import build_int8_model

# TFLiteConverter notes that the stand-in models have no input statistics; irrelevant here.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")


def test_classifies_a_crop_into_probabilities(standin_model, astronaut_bgr):
    clf = ExpressionClassifier(ModelConfig(path=str(standin_model), accelerator="cpu"))
    assert clf.backend == "cpu" and clf.labels == FER_LABELS
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(3)]
    p = clf.classify(crops[0])
    assert p.shape == (7,) and p.dtype == np.float32
    assert abs(p.sum() - 1) < 1e-5 and (p >= 0).all()
    batch = clf.classify_batch(crops)
    assert batch.shape == (3, 7)
    np.testing.assert_allclose(batch[0], p)
    assert clf.classify_batch([]).shape == (0, 7)


def test_input_quantization_follows_manifest_and_tensor_params(standin_model):
    clf = ExpressionClassifier(ModelConfig(path=str(standin_model), accelerator="cpu"))
    crop = np.arange(48 * 48, dtype=np.int64).reshape(48, 48) % 256
    q = clf.quantize_input(crop.astype(np.uint8))
    scale, zero = clf.interpreter.get_input_details()[0]["quantization"]
    # TFLite's QUANTIZE kernel: float32, multiply by 1/scale, round half to even, then add the zero point.
    x = (crop.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)
    expected = np.clip(np.round(x * (np.float32(1) / np.float32(scale))) + zero, -128, 127)
    assert q.dtype == np.int8 and q.shape == (1, 48, 48, 1)
    np.testing.assert_array_equal(q[0, :, :, 0], expected)


def test_auto_falls_back_to_cpu_with_one_warning(standin_model, caplog):
    with caplog.at_level(logging.WARNING):
        clf = ExpressionClassifier(ModelConfig(path=str(standin_model), accelerator="auto"))
    assert clf.backend == "cpu"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Edge TPU" in warnings[0].getMessage()


def test_tpu_without_a_tpu_says_how_to_fix_it(standin_model):
    with pytest.raises(ModelError, match="libedgetpu"):
        ExpressionClassifier(ModelConfig(path=str(standin_model), accelerator="tpu", device="usb"))


def test_uint8_model_is_accepted(tmp_path):
    path = build_int8_model(tmp_path, name="u8", io_dtype="uint8")
    clf = ExpressionClassifier(ModelConfig(path=str(path), accelerator="cpu"))
    p = clf.classify(np.full((48, 48), 200, np.uint8))
    assert p.shape == (7,) and abs(p.sum() - 1) < 1e-5


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        ExpressionClassifier(ModelConfig(path=str(tmp_path / "nope.tflite")))


def test_missing_manifest(standin_model, tmp_path):
    lone = tmp_path / "lone.tflite"
    shutil.copy(standin_model, lone)
    with pytest.raises(ModelError, match="manifest"):
        ExpressionClassifier(ModelConfig(path=str(lone), accelerator="cpu"))


def _copy_with_manifest(src, dst, **changes):
    shutil.copy(src, dst)
    data = json.loads(src.with_suffix(".json").read_text())
    data.update(changes)
    data.setdefault("sha256", sha256_of(dst))
    dst.with_suffix(".json").write_text(json.dumps(data))
    return dst


def test_corrupt_model_is_refused(standin_model, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64 + b"not a model")
    write_manifest(ModelManifest(name="bad", labels=FER_LABELS, sha256=sha256_of(bad)), bad)
    with pytest.raises(ModelError, match="not a TFLite file"):
        ExpressionClassifier(ModelConfig(path=str(bad), accelerator="cpu"))
    # Right identifier, truncated body: the interpreter itself refuses it.
    trunc = tmp_path / "trunc.tflite"
    trunc.write_bytes(standin_model.read_bytes()[:400])
    write_manifest(ModelManifest(name="trunc", labels=FER_LABELS, sha256=sha256_of(trunc)), trunc)
    with pytest.raises(ModelError, match="cannot be loaded"):
        ExpressionClassifier(ModelConfig(path=str(trunc), accelerator="cpu"))


def test_sha_mismatch_is_refused(standin_model, tmp_path):
    p = _copy_with_manifest(standin_model, tmp_path / "m.tflite", sha256="0" * 64)
    with pytest.raises(ModelError, match="does not match its manifest"):
        ExpressionClassifier(ModelConfig(path=str(p), accelerator="cpu"))


def test_six_labels_are_refused(standin_model, tmp_path):
    p = _copy_with_manifest(standin_model, tmp_path / "m.tflite", labels=FER_LABELS[:6])
    with pytest.raises(ModelError, match="labels"):
        ExpressionClassifier(ModelConfig(path=str(p), accelerator="cpu"))


def test_class_prior_must_have_one_share_per_label(standin_model, tmp_path):
    p = _copy_with_manifest(standin_model, tmp_path / "m.tflite", class_prior=[0.5, 0.5])
    with pytest.raises(ModelError, match="class_prior"):
        ExpressionClassifier(ModelConfig(path=str(p), accelerator="cpu"))


def test_top_classes_breaks_ties_by_prior_only():
    from edge.int8 import top_classes

    prior = [0.1, 0.0, 0.1, 0.3, 0.2, 0.1, 0.2]
    scores = np.array([[0.3, 0, 0, 0, 0.3, 0, 0.3], [0.3, 0, 0, 0, 0.3, 0, 0.31], [0.5, 0, 0, 0, 0.5, 0, 0]])
    assert top_classes(scores, prior).tolist() == [4, 6, 4]  # sad (0.2) beats neutral (0.2) by index
    assert top_classes(scores).tolist() == [0, 6, 0]
    assert top_classes(scores[0], prior) == 4 and isinstance(top_classes(scores[0]), int)


def test_wrong_input_shape_is_refused(tmp_path):
    path = build_int8_model(tmp_path, name="big", input_shape=(64, 64, 1))
    with pytest.raises(ModelError, match=r"input shape is \[1, 64, 64, 1\]"):
        ExpressionClassifier(ModelConfig(path=str(path), accelerator="cpu"))


def test_wrong_output_size_is_refused(tmp_path):
    path = build_int8_model(tmp_path, name="six", n_out=6)
    with pytest.raises(ModelError, match=r"output shape is \[1, 6\]"):
        ExpressionClassifier(ModelConfig(path=str(path), accelerator="cpu"))


def test_float_io_is_refused(tmp_path):
    path = build_int8_model(tmp_path, name="f32io", io_dtype="float32")
    with pytest.raises(ModelError, match="float32, expected int8 or uint8"):
        ExpressionClassifier(ModelConfig(path=str(path), accelerator="cpu"))


def test_edgetpu_file_on_the_cpu_uses_the_plain_model_beside_it(standin_model, tmp_path):
    plain = _copy_with_manifest(standin_model, tmp_path / "m.tflite")
    compiled = tmp_path / "m_edgetpu.tflite"
    shutil.copy(standin_model, compiled)  # stands in for edgetpu_compiler output (no compiler here)
    clf = ExpressionClassifier(ModelConfig(path=str(compiled), accelerator="cpu"))
    assert clf.backend == "cpu" and clf.model_path == plain
    plain.unlink()
    with pytest.raises(ModelError, match="compiled for the Edge TPU"):
        ExpressionClassifier(ModelConfig(path=str(compiled), accelerator="cpu"))


SHIPPED_MODEL = default_model_path()


@pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="the trained model mini_xception.tflite is not shipped yet")
def test_shipped_model_sees_the_smiling_astronaut_as_happy(astronaut_bgr):
    from edge.detect import create_detector

    clf = ExpressionClassifier(ModelConfig(accelerator="cpu"))  # the shipped model and its manifest
    assert clf.labels == FER_LABELS
    (face,) = create_detector().detect(astronaut_bgr)
    p = clf.classify(face.crop)
    assert FER_LABELS[int(np.argmax(p))] == "happy", dict(zip(FER_LABELS, p.round(3)))
    # The mirrored portrait is the same smile.
    (mirrored,) = create_detector().detect(np.ascontiguousarray(astronaut_bgr[:, ::-1]))
    assert FER_LABELS[int(np.argmax(clf.classify(mirrored.crop)))] == "happy"
