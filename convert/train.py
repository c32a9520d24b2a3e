"""Training: augmentation, label smoothing, warm-up + cosine schedule, early stopping on
PublicTest, a checkpoint every epoch (resumable), CSV history and a PNG of the curves.

Backend-agnostic Keras 3, so the same code trains on this CPU (TensorFlow) or on a GPU machine
(JAX); the saved ``.keras`` files load on either.

Output folder ``out_dir``:
  best.keras      the model with the best PublicTest accuracy so far (the one to convert)
  backup/         Keras BackupAndRestore state (weights, optimizer, epoch): what --resume uses
  history.csv     one row per epoch;  curves.png  loss/accuracy curves
  train.json      recipe, data sizes, best epoch, best PublicTest accuracy, wall time
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import convert  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before TensorFlow loads)
from convert.batchnorm import write_recalibrated
from convert.data import normalize
from convert.recipes import Recipe
from edge.errors import FerEdgeError
from edge.manifest import FER_LABELS


def build_augmenter(recipe: Recipe, seed: int):
    """Keras layers applying the recipe's augmentation (active only when training)."""
    import keras
    from keras import layers

    aug = []
    if recipe.flip:
        aug.append(layers.RandomFlip("horizontal", seed=seed))
    if recipe.rotation_deg:
        aug.append(layers.RandomRotation(recipe.rotation_deg / 360.0, fill_mode="reflect", seed=seed + 1))
    if recipe.zoom:
        aug.append(layers.RandomZoom((-recipe.zoom, recipe.zoom), fill_mode="reflect", seed=seed + 2))
    if recipe.shift:
        aug.append(layers.RandomTranslation(recipe.shift, recipe.shift, fill_mode="reflect", seed=seed + 3))
    if recipe.contrast:
        aug.append(layers.RandomContrast(recipe.contrast, value_range=(-1, 1), seed=seed + 4))
    if recipe.brightness:
        aug.append(layers.RandomBrightness(recipe.brightness, value_range=(-1, 1), seed=seed + 5))
    if recipe.erasing:
        aug.append(layers.RandomErasing(factor=recipe.erasing, scale=(0.02, 0.2), fill_value=0.0,
                                        value_range=(-1, 1), seed=seed + 6))
    return keras.Sequential(aug, name="augment")


def class_weight_for(y: np.ndarray) -> dict[int, float]:
    """Inverse-frequency class weights softened by a square root (disgust is ~1.5% of FER2013)."""
    counts = np.bincount(y, minlength=len(FER_LABELS)).astype(float)
    w = np.sqrt(counts.sum() / np.maximum(counts, 1) / len(counts))
    return {i: float(v / w.mean()) for i, v in enumerate(w)}


def epoch_artifacts_callback(inner, out_dir: Path, best: float):
    """Keras callback: save ``best.keras`` when PublicTest accuracy improves, redraw ``curves.png``
    every epoch. ``inner`` is the bare model (without the augmentation layers) that gets saved."""
    import keras

    class EpochArtifacts(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = best

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            acc = float(logs.get("val_accuracy", float("nan")))
            if acc > self.best:
                self.best = acc
                tmp = out_dir / "best.tmp.keras"
                inner.save(tmp)
                tmp.replace(out_dir / "best.keras")  # atomic: a crash never leaves half a file
            plot_history(out_dir / "history.csv", out_dir / "curves.png", extra=(epoch + 1, logs))

    return EpochArtifacts()


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_history(csv_path: Path, png_path: Path, extra=None) -> None:
    """Draw loss and accuracy per epoch (train vs PublicTest) from the CSV history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history(csv_path)
    if extra is not None:  # the epoch just finished is not in the CSV yet when callbacks run
        epoch, logs = extra
        rows = [r for r in rows if int(r["epoch"]) + 1 != epoch] + [{"epoch": epoch - 1, **logs}]
    if not rows:
        return
    ep = [int(r["epoch"]) + 1 for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", a1), ("accuracy", a2)):
        ax.plot(ep, [float(r[key]) for r in rows], label=f"train {key}")
        ax.plot(ep, [float(r[f"val_{key}"]) for r in rows], label=f"PublicTest {key}")
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    a2.set_title(f"best PublicTest accuracy {max(float(r['val_accuracy']) for r in rows):.4f}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def train(recipe: Recipe, x_train, y_train, x_val, y_val, out_dir: str | Path, resume: bool = False,
          verbose: int | None = None) -> dict:
    """Train ``recipe`` on uint8 images ``x_*`` [N,48,48] with labels ``y_*``; validation = PublicTest.

    ``resume``: continue from ``out_dir/backup`` (weights, optimizer state and epoch); without it
    an ``out_dir`` that already holds a run is refused, so nothing is overwritten by accident.
    Returns the summary also written to ``train.json``.
    """
    import keras

    out = Path(out_dir)
    backup = out / "backup"
    if out.exists() and any(out.iterdir()) and not resume:
        raise FerEdgeError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(recipe.seed)

    model = initial_model(recipe)
    aug = build_augmenter(recipe, recipe.seed)
    inp = keras.Input(shape=model.input_shape[1:])
    trainer = keras.Model(inp, model(aug(inp)), name=f"train_{model.name}")

    steps_per_epoch = math.ceil(len(x_train) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    warm = recipe.warmup_epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.lr * (0.1 if warm else 1.0), decay_steps=max(1, total - warm),
        alpha=0.01, warmup_target=recipe.lr if warm else None, warmup_steps=warm)
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=recipe.weight_decay)
    opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    trainer.compile(optimizer=opt,
                    loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
                    metrics=["accuracy"])

    history = read_history(out / "history.csv")
    best = max((float(r["val_accuracy"]) for r in history), default=-1.0)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=recipe.patience),
        epoch_artifacts_callback(model, out, best),
    ]
    n = len(FER_LABELS)
    t0 = time.time()
    targets = keras.utils.to_categorical(y_train, n)
    if recipe.teacher and recipe.distill:
        soft = teacher_scores(recipe.teacher, x_train, out / "teacher_scores.npy")
        targets = (1.0 - recipe.distill) * targets + recipe.distill * soft
    trainer.fit(
        normalize(x_train), targets,
        validation_data=(normalize(x_val), keras.utils.to_categorical(y_val, n)),
        epochs=recipe.epochs, batch_size=recipe.batch_size, shuffle=True,
        class_weight=class_weight_for(y_train) if recipe.class_weights else None,
        callbacks=callbacks, verbose=verbose if verbose is not None else (1 if sys.stdout.isatty() else 2),
    )
    wall = time.time() - t0
    history = read_history(out / "history.csv")
    best_row = max(history, key=lambda r: float(r["val_accuracy"]))
    prior = {}
    if (out / "train.json").is_file():
        prior = json.loads((out / "train.json").read_text())
    summary = {
        "recipe": recipe.to_dict(),
        "params": int(model.count_params()),
        "train_images": int(len(x_train)), "val_images": int(len(x_val)), "val_split": "PublicTest",
        "epochs_run": len(history), "best_epoch": int(best_row["epoch"]) + 1,
        "best_val_accuracy": float(best_row["val_accuracy"]),
        "wall_seconds": round(prior.get("wall_seconds", 0.0) + wall, 1),
        "keras_backend": keras.backend.backend(),
    }
    (out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_history(out / "history.csv", out / "curves.png")
    write_recalibrated(out / "best.keras", x_train, out / "recalibrated.keras")
    return summary


def initial_model(recipe: Recipe):
    """The recipe's model, with the weights of ``recipe.init`` when it names one (a warm start)."""
    import keras

    model = build_model_for(recipe)
    if recipe.init:
        if not Path(recipe.init).is_file():
            raise FerEdgeError(f"init model {recipe.init} not found; fix the recipe's init path")
        model.set_weights(keras.models.load_model(recipe.init, compile=False).get_weights())
    return model


def teacher_file(teacher_path: str | Path) -> Path:
    """The recipe's teacher model as a Path; FerEdgeError naming the fix when it is missing."""
    path = Path(teacher_path)
    if not path.is_file():
        raise FerEdgeError(f"teacher model {path} not found; train it first "
                           f"(fer-edge train --recipe standard) or fix the recipe's teacher path")
    return path


def teacher_scores(teacher_path: str | Path, x_uint8: np.ndarray, cache: Path) -> np.ndarray:
    """Soft targets for distillation: the teacher's scores on each image and on its mirror image,
    averaged (the student sees flipped copies). Cached in ``cache`` so ``--resume`` does not redo it."""
    import keras

    if cache.is_file():
        scores = np.load(cache)
        if scores.shape[0] == len(x_uint8):
            return scores
    teacher = keras.models.load_model(teacher_file(teacher_path), compile=False)
    x = normalize(x_uint8)
    scores = 0.5 * (teacher.predict(x, batch_size=256, verbose=2)
                    + teacher.predict(x[:, :, ::-1], batch_size=256, verbose=2))
    np.save(cache, scores.astype(np.float32))
    return scores.astype(np.float32)


def build_model_for(recipe: Recipe, batch_size=None):
    from convert.models import build_model

    return build_model(recipe.model, batch_size=batch_size, **recipe.model_kw)
