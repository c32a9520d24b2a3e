"""Shared pytest fixtures. Append new fixtures; do not rewrite (several helpers add to this file)."""

from __future__ import annotations

import numpy as np
import pytest

# --------------------------------------------------------------------------- device pipeline fixtures

# Where the face is in skimage.data.astronaut() (512x512), x, y, w, h, checked by eye once:
# forehead at the hairline to the chin, ear to ear.
ASTRONAUT_FACE = (170, 60, 115, 125)


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """skimage's astronaut (NASA portrait of Eileen Collins, public domain) as a BGR frame."""
    cv2 = pytest.importorskip("cv2")
    data = pytest.importorskip("skimage.data")
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def box_iou(a, b) -> float:
    """IoU of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def build_int8_model(directory, name: str = "standin", input_shape=(48, 48, 1), n_out: int = 7, labels=None,
                     io_dtype: str = "int8", seed: int = 0):
    """Write a real full-integer TFLite model + manifest (``<name>.tflite`` / ``<name>.json``).

    A tiny Keras conv net (random weights) quantized by TFLiteConverter with representative data;
    stands in for the lead's trained model. ``io_dtype``: "int8", "uint8" or "float32".
    Returns the .tflite path. Uses TensorFlow (test fixtures only; edge/ never imports it).
    """
    import os
    from pathlib import Path

    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")  # TF 2.21 oneDNN segfaults on this CPU otherwise
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = pytest.importorskip("tensorflow")
    from edge.manifest import FER_LABELS, ModelManifest, sha256_of, write_manifest

    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([
        tf.keras.layers.Input(input_shape),
        tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        tf.keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(n_out, activation="softmax"),
    ])
    rng = np.random.default_rng(seed)

    def representative():
        for _ in range(16):
            yield [((rng.integers(0, 256, (1, *input_shape)) - 127.5) / 127.5).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_dtype != "float32":
        conv.inference_input_type = getattr(tf, io_dtype)
        conv.inference_output_type = getattr(tf, io_dtype)
    path = Path(directory) / f"{name}.tflite"
    path.write_bytes(conv.convert())
    manifest = ModelManifest(name=name, labels=list(labels or FER_LABELS), sha256=sha256_of(path),
                             params=int(model.count_params()))
    write_manifest(manifest, path)
    return path


@pytest.fixture(scope="session")
def standin_model(tmp_path_factory):
    """A real int8 [1,48,48,1] -> int8 [1,7] TFLite model with its manifest (path to the .tflite)."""
    return build_int8_model(tmp_path_factory.mktemp("models"))


def write_test_video(path, frames: int = 12, size=(160, 120), fps: float = 10.0, fourcc: str = "mp4v"):
    """Write a real video whose frame i is a flat gray of level 10 * i (decoded levels stay within 4 units)."""
    import cv2

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for i in range(frames):
        writer.write(np.full((h, w, 3), 10 * i + 5, np.uint8))
    writer.release()
    return path


# --------------------------------------------------------------------------- dashboard: one PostgreSQL per session
from tests.pg_server import db_url, pg_server, pg_url  # noqa: E402,F401  (fixtures: a real server, a fresh database per test)
