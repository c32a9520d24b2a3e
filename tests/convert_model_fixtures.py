"""Tiny real TFLite models for the convert-side tests (built with TensorFlow, cached per session).

Each builder returns the path of a ``.tflite`` (and, where asked, the ``.keras`` it came from).
The models are small (a few thousand parameters, 48x48x1 input) so that converting them takes a
few seconds; they are never trained: the tests check the tooling, not the accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")  # TF 2.21 oneDNN segfaults on this CPU otherwise
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def with_random_batch_norm(model, rng):
    """Non-trivial batch-norm statistics, so a wrong BN, folding or padding convention shows up."""
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            g, b, m, v = layer.get_weights()
            layer.set_weights([g * rng.uniform(0.5, 1.5, g.shape), b + rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    return model


def _tf():
    import tensorflow as tf

    return tf


def build_good_keras(batch_size: int | None = 1, leaky: bool = False, seed: int = 0):
    """A mini-Xception-like block: Conv/BN/ReLU, depthwise, residual Add, MaxPool, Conv->GAP->Softmax.

    ``batch_size=None`` leaves the batch dimension dynamic; ``leaky=True`` uses LeakyReLU (an op
    the Edge TPU compiler does not support) after the first convolution.
    """
    tf = _tf()
    keras = tf.keras
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inp = keras.Input(shape=(48, 48, 1), batch_size=batch_size, name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.LeakyReLU(negative_slope=0.1)(x) if leaky else L.ReLU()(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU()(y)
    y = L.Conv2D(8, 1, padding="same")(y)
    x = L.Add()([x, y])
    x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(7, 3, padding="same")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Softmax(name="probs")(x)
    return keras.Model(inp, out, name="tiny_fer")


def representative_images(n: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth random 48x48 uint8 'faces' (gradients + blobs), so activations span a real range."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:48].astype(np.float32) / 47.0
    imgs = []
    for _ in range(n):
        a, b, c = rng.uniform(-1, 1, 3)
        cx, cy, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.1, 0.4)]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img = 128 + 60 * (a * xx + b * yy) + 80 * c * blob + rng.normal(0, 8, (48, 48))
        imgs.append(np.clip(img, 0, 255))
    return np.stack(imgs).astype(np.uint8)


def convert(model, mode: str = "int8", mean: float = 127.5, std: float = 127.5) -> bytes:
    """Convert a Keras model to TFLite.

    mode: ``"int8"`` full integer with int8 input/output (the shipped contract);
    ``"int8_float_io"`` full integer inside but float32 input/output (adds QUANTIZE/DEQUANTIZE);
    ``"dynamic_range"`` int8 weights only, float activations (no representative data).
    """
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode in ("int8", "int8_float_io"):
        reps = (representative_images(32).astype(np.float32) - mean) / std

        def gen():
            for img in reps:
                yield [img[None, :, :, None]]

        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if mode == "int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    elif mode != "dynamic_range":
        raise ValueError(mode)
    return conv.convert()


def make_model(out_dir: Path, kind: str) -> Path:
    """Build and convert one of the named test models into ``out_dir``; returns the .tflite path.

    kinds: ``good`` (full int8, batch 1; also saves ``good.keras``), ``float_io``,
    ``dynamic_range``, ``leaky`` (unsupported LEAKY_RELU), ``dynamic_batch``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{kind}.tflite"
    if path.is_file():
        return path
    if kind == "good":
        model = build_good_keras()
        model.save(out_dir / "good.keras")
        data = convert(model, "int8")
    elif kind == "float_io":
        data = convert(build_good_keras(), "int8_float_io")
    elif kind == "dynamic_range":
        data = convert(build_good_keras(), "dynamic_range")
    elif kind == "leaky":
        data = convert(build_good_keras(leaky=True), "int8")
    elif kind == "dynamic_batch":
        data = convert(build_good_keras(batch_size=None), "int8")
    else:
        raise ValueError(f"unknown test model kind {kind!r}")
    path.write_bytes(data)
    return path
