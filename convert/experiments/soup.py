"""Weight averaging of fine-tuned models ("model soup", Wortsman et al., ICML 2022).

Models fine-tuned from the same starting weights usually stay in one low-loss basin, so the
element-wise mean of their weights is itself a good model, often better than each of them, for the
cost of one forward pass. The greedy soup adds ingredients in order of their validation accuracy and
keeps one only if the soup's validation accuracy does not fall. Validation is PublicTest; batch norms
are re-estimated on clean Training images (convert/batchnorm.py) before every evaluation, because
averaged weights do not match averaged statistics.

``python -m convert.experiments.soup --keras a.keras b.keras ... --data fer2013.csv.gz --out soup.keras`` writes
the soup (already recalibrated, ready for ``fer-edge convert``) and ``soup.json`` describing it.

Measured on the three `tiny`s from one start (README "Training recipes"): PublicTest float 66.12% ->
66.26%, but int8 66.43% -> 65.84%, so no soup is shipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import convert  # noqa: F401  (ONEDNN_MAX_CPU_ISA before TensorFlow)
from edge.errors import ModelError


def average_weights(models: list) -> list[np.ndarray]:
    """Element-wise mean of the weights of ``models`` (Keras models of one architecture), in
    ``get_weights()`` order. Raises ModelError when the architectures differ."""
    shapes = [[w.shape for w in m.get_weights()] for m in models]
    for m, s in zip(models[1:], shapes[1:]):
        if s != shapes[0]:
            raise ModelError(f"cannot average {m.name} with {models[0].name}: their weights differ in shape; "
                             "a soup needs models of one architecture fine-tuned from the same start")
    return [np.mean(ws, axis=0, dtype=np.float64).astype(ws[0].dtype) for ws in zip(*(m.get_weights() for m in models))]


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on normalised images ``x`` ([N, 48, 48, 1]) with labels ``y``."""
    scores = model.predict(x, batch_size=512, verbose=0)
    return float((scores.argmax(1) == y).mean())


def greedy_soup(paths: list[Path], x_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, log=print):
    """The greedy soup of the ``.keras`` files ``paths``: returns (model, report).

    ``x_train``: normalised Training images for batch-norm re-estimation; ``x_val``/``y_val``:
    normalised PublicTest images and labels that rank the ingredients and accept or reject each."""
    import keras

    from convert.batchnorm import recalibrate_batch_norm

    models = [keras.models.load_model(p, compile=False) for p in paths]
    work = keras.models.clone_model(models[0])

    def score(weights) -> tuple[float, list]:
        """PublicTest accuracy of ``weights`` with recalibrated batch norms, and those weights."""
        work.set_weights(weights)
        recalibrate_batch_norm(work, x_train)
        return accuracy(work, x_val, y_val), work.get_weights()

    alone = [score(m.get_weights()) for m in models]
    for p, (a, _) in zip(paths, alone):
        log(f"ingredient {p}: PublicTest {a:.2%} (batch norms recalibrated)")
    order = sorted(range(len(paths)), key=lambda i: -alone[i][0])
    chosen, (best, best_weights) = [order[0]], alone[order[0]]
    steps = [{"add": str(paths[order[0]]), "val_accuracy": best, "kept": True}]
    for i in order[1:]:
        trial, weights = score(average_weights([models[j] for j in chosen + [i]]))
        kept = trial >= best
        log(f"+ {paths[i]}: PublicTest {trial:.2%} -> {'kept' if kept else 'rejected'}")
        steps.append({"add": str(paths[i]), "val_accuracy": trial, "kept": kept})
        if kept:
            chosen.append(i)
            best, best_weights = trial, weights
    work.set_weights(best_weights)  # the best soup as scored, batch norms already recalibrated
    report = {"ingredients": [{"model": str(p), "val_accuracy": a} for p, (a, _) in zip(paths, alone)],
              "greedy_steps": steps, "chosen": [str(paths[j]) for j in chosen], "val_accuracy": best,
              "val_split": "PublicTest"}
    return work, report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keras", nargs="+", required=True,
                   help="fine-tuned float models (.keras) of one architecture, from the same starting weights")
    p.add_argument("--data", required=True, help="FER2013 data (Training re-estimates batch norms, PublicTest ranks)")
    p.add_argument("--out", required=True, help="the soup (.keras) to write; a .json note goes beside it")


def run(args: argparse.Namespace) -> int:
    from convert.data import load_split, normalize

    paths = [Path(k) for k in args.keras]
    for p in paths:
        if not p.is_file():
            raise ModelError(f"Keras model {p} not found; pass the best.keras files written by training")
    x_train, _ = load_split(args.data, "Training")
    x_val, y_val = load_split(args.data, "PublicTest")
    model, report = greedy_soup(paths, normalize(x_train), normalize(x_val), y_val)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    n_bn = sum(type(l).__name__ == "BatchNormalization" for l in model.layers)
    note = {"soup": report, "batch_norm_recalibration": {"from": "soup", "split": "Training",
                                                         "images": int(len(x_train)), "batch_norms": n_bn}}
    out.with_suffix(".json").write_text(json.dumps(note, indent=2) + "\n")
    print(json.dumps({"model": str(out), "chosen": report["chosen"], "val_accuracy": report["val_accuracy"]}))
    return 0


if __name__ == "__main__":
    from convert.standalone import run_standalone

    raise SystemExit(run_standalone("python -m convert.experiments.soup", __doc__.strip().splitlines()[0],
                                    add_arguments, run))
