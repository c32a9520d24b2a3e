"""Batch-norm recalibration: recompute every batch norm's moving mean and variance on clean
(un-augmented) Training images.

Why: during training the moving statistics are averaged over augmented batches (rotations, zoom,
erasing, contrast and brightness jitter), but the model is evaluated on clean faces. Re-estimating
them on clean images closes that gap without touching a trained weight. Measured on PublicTest:
see README "Batch-norm recalibration". Only Training images are used.

``fer-edge train`` (and the torch trainer) write ``recalibrated.keras`` beside ``best.keras`` when
training ends; ``python -m convert.batchnorm --keras best.keras --data fer2013.csv.gz --out
recalibrated.keras`` does it for an existing model.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

import convert  # noqa: F401  (ONEDNN_MAX_CPU_ISA before TensorFlow)
from edge.errors import ModelError


def recalibrate_batch_norm(model, x: np.ndarray, batch_size: int = 512) -> int:
    """Set each BatchNormalization's moving mean/variance to the average of its batch statistics over
    ``x`` (float model input, [N, 48, 48, 1]), in place. Layers run in training mode so each batch
    norm sees the activations it was trained to normalise. Returns the number of batch norms.

    Exact cumulative average (not the training-time exponential one): batch k gets weight 1/k.
    """
    from keras import layers

    bns = [l for l in model.layers if isinstance(l, layers.BatchNormalization)]
    if not bns:
        return 0
    saved = [l.momentum for l in bns]
    try:
        for k, start in enumerate(range(0, len(x), batch_size), start=1):
            for layer in bns:
                layer.momentum = 1.0 - 1.0 / k  # first batch replaces, later ones average in
            model(x[start:start + batch_size], training=True)
    finally:
        for layer, m in zip(bns, saved):
            layer.momentum = m
    return len(bns)


def write_recalibrated(src: str | Path, x_train_uint8: np.ndarray, out: str | Path, batch_size: int = 512) -> dict:
    """Load ``src`` (.keras), recalibrate its batch norms on ``x_train_uint8`` ([N, 48, 48] Training
    pixels), save it as ``out`` and the note ``out.json`` (``fer-edge convert`` copies it into the
    manifest). Returns the note."""
    import keras

    from convert.data import normalize

    src, out = Path(src), Path(out)
    model = keras.models.load_model(src, compile=False)
    n = recalibrate_batch_norm(model, normalize(x_train_uint8), batch_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    note = {"batch_norm_recalibration": {"from": src.name, "split": "Training", "images": int(len(x_train_uint8)),
                                         "batch_norms": n}}
    out.with_suffix(".json").write_text(json.dumps(note, indent=2) + "\n")
    return note


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keras", required=True, help="trained float model (.keras)")
    p.add_argument("--data", required=True, help="FER2013 data (its Training split is used)")
    p.add_argument("--out", required=True, help="recalibrated .keras to write (train.json is copied beside it)")
    p.add_argument("--batch-size", type=int, default=512, help="images per batch-statistics step (default 512)")


def run(args: argparse.Namespace) -> int:
    """Recalibrate ``--keras`` on clean Training images and save it as ``--out``."""
    from convert.data import load_split

    src = Path(args.keras)
    if not src.is_file():
        raise ModelError(f"Keras model {src} not found; pass the best.keras written by `fer-edge train`")
    x, _ = load_split(args.data, "Training")
    out = Path(args.out)
    note = write_recalibrated(src, x, out, args.batch_size)
    info_src = src.with_name("train.json")
    if info_src.is_file() and out.parent != src.parent:
        shutil.copy(info_src, out.with_name("train.json"))
    print(json.dumps({"model": str(out), **note}))
    return 0


if __name__ == "__main__":
    from convert.standalone import run_standalone

    raise SystemExit(run_standalone("python -m convert.batchnorm", __doc__.strip().splitlines()[0], add_arguments, run))
