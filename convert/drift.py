"""Quantization drift: how much the int8 ``.tflite`` disagrees with the float ``.keras`` it came from.

``fer-edge drift`` runs both models on the same labelled split and reports accuracy of each, the
accuracy drop in percentage points, top-1 agreement, per-class recall/F1 and their change, both
confusion matrices and the mean KL divergence KL(float || int8) of the score vectors, as Markdown,
JSON and PNG plots. It exits 1 when the drop or the agreement is worse than the thresholds, so it
can gate a release; ``--update-manifest`` writes the numbers into the model's ``<name>.json``.

Sign conventions: ``*_drop_points`` are float minus int8 in percentage points (positive = int8 is
worse); ``*_delta`` are int8 minus float as fractions (negative = int8 is worse).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np

from convert.data import TRAIN_MEAN, TRAIN_STD
from edge.errors import DataError, ModelError
from edge.manifest import top_classes

log = logging.getLogger(__name__)

KL_EPS = 1e-6


# --------------------------------------------------------------------------- int8 inference

def _as_images(x: np.ndarray) -> np.ndarray:
    """Accept [N,48,48] or [N,48,48,1] uint8; return [N,48,48] uint8."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise DataError(f"expected grayscale images shaped [N, H, W], got {list(x.shape)}")
    if x.dtype != np.uint8:
        raise DataError(f"expected uint8 pixels (0..255), got {x.dtype}; pass the raw pixels, not normalised ones")
    return x


def quantize_input(x_uint8: np.ndarray, mean: float, std: float, scale: float, zero_point: int,
                   dtype) -> np.ndarray:
    """Pixels -> model input: ``(pixel - mean) / std``, then ``round(x / scale) + zero_point``.

    Computed as TFLite's QUANTIZE kernel does (float32, multiply by 1/scale, round half to even),
    so a model fed here gets exactly the input the same model converted with float input would
    quantize itself (pixels 127 and 128 can share a level). ``scale == 0`` means a float input.
    """
    xf = (np.asarray(x_uint8, np.float32) - np.float32(mean)) / np.float32(std)
    if not scale:
        return xf.astype(dtype)
    q = np.round(xf * (np.float32(1.0) / np.float32(scale))) + zero_point
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def open_int8(tflite_path: str | Path, threads: int = 2):
    """Load a TFLite model for batch-1 scoring: ``(interpreter, input detail, output detail)``.

    tflite_path: int8 (or uint8, or float) model with input [1, H, W, 1]. threads: interpreter threads.
    A missing or unreadable file raises ModelError with what to do next.
    """
    tflite_path = Path(tflite_path)
    if not tflite_path.is_file():
        raise ModelError(f"model file {tflite_path} not found; pass the int8 .tflite")
    from edge.runtime import interpreter_module

    Interpreter = interpreter_module().Interpreter
    try:
        interp = Interpreter(model_path=str(tflite_path), num_threads=threads)
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        if list(inp["shape"][:1]) != [1]:
            interp.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        hint = ("it is compiled for the Edge TPU; pass the CPU model (without _edgetpu)"
                if "edgetpu" in tflite_path.name else "re-export it with `fer-edge convert`")
        raise ModelError(f"cannot load {tflite_path} ({str(exc).splitlines()[0]}); {hint}") from None
    return interp, inp, out


def score_int8(model, xq: np.ndarray, tflite_path: str | Path, progress: bool = False) -> np.ndarray:
    """Scores of ``model`` (``open_int8``'s triple for ``tflite_path``) for already-quantized inputs
    ``xq`` [N, H, W, 1], one invoke per image; float32 [N, num_classes], dequantized with the
    output's scale/zero point. progress: show a tqdm bar."""
    interp, inp, out = model
    out_scale, out_zp = out["quantization"]
    scores = np.empty((len(xq), int(np.prod(out["shape"][1:]))), np.float32)
    it = range(len(xq))
    if progress and sys.stderr.isatty():  # no progress bars in logs
        from tqdm import tqdm

        it = tqdm(it, desc=f"int8 {Path(tflite_path).name}", unit="img", leave=False)
    try:
        for i in it:
            interp.set_tensor(inp["index"], xq[i: i + 1])
            interp.invoke()
            scores[i] = interp.get_tensor(out["index"]).reshape(-1)
    except RuntimeError as exc:
        raise ModelError(f"running {tflite_path} failed ({str(exc).splitlines()[0]})") from None
    if out_scale:  # dequantize; the raw values were written into float storage unchanged
        scores = (scores - np.float32(out_zp)) * np.float32(out_scale)
    return scores


def predict_int8(tflite_path: str | Path, x_uint8: np.ndarray, mean: float, std: float,
                 threads: int = 2, progress: bool = True) -> np.ndarray:
    """Scores of the TFLite model for each image.

    tflite_path: int8 (or uint8, or float) model with input [1, H, W, 1].
    x_uint8: [N, H, W] uint8 raw pixels. mean, std: the model's normalisation; the float input
    ``(pixel - mean) / std`` is then quantized with the input tensor's scale/zero point.
    Returns float32 [N, num_classes], the output dequantized with its scale/zero point.
    """
    tflite_path = Path(tflite_path)
    model = open_int8(tflite_path, threads)
    x = _as_images(x_uint8)
    inp = model[1]
    h, w = int(inp["shape"][1]), int(inp["shape"][2])
    if x.shape[1:] != (h, w):
        raise DataError(f"images are {x.shape[1]}x{x.shape[2]} but {tflite_path.name} takes {h}x{w}")
    xq = quantize_input(x, mean, std, *inp["quantization"], inp["dtype"])[..., None]
    return score_int8(model, xq, tflite_path, progress)


def predict_float(keras_path: str | Path, x_uint8: np.ndarray, mean: float, std: float,
                  batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Scores of the float Keras model (TensorFlow backend) for each image, float32 [N, classes]."""
    keras_path = Path(keras_path)
    if not keras_path.is_file():
        raise ModelError(f"model file {keras_path} not found; pass the float .keras the .tflite came from")
    x = _as_images(x_uint8)
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")  # TF 2.21 oneDNN segfaults on some CPUs otherwise
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    try:
        model = keras.models.load_model(keras_path, compile=False)
    except Exception as exc:  # keras raises many types for a bad file
        raise ModelError(f"cannot load {keras_path} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                         "pass a .keras saved by `fer-edge train`") from None
    fixed_batch = model.input_shape[0] if isinstance(model.input_shape, tuple) else None
    xf = ((x.astype(np.float32) - np.float32(mean)) / np.float32(std))[..., None]
    # Keras draws its progress bar on stdout; keep stdout for the summary table.
    with contextlib.redirect_stdout(sys.stderr):
        probs = model.predict(xf, batch_size=fixed_batch or batch_size, verbose=1 if progress and sys.stderr.isatty() else 0)
    probs = np.asarray(probs, np.float32).reshape(len(x), -1)
    if np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        log.warning("%s outputs logits, not probabilities; applying softmax", keras_path.name)
        e = np.exp(probs - probs.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
    return probs


# --------------------------------------------------------------------------- metrics

def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """[k, k] counts; rows are the true class, columns the predicted class."""
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def _class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision/recall/F1 from a confusion matrix; NaN where undefined (0/0)."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        denom = support + predicted  # = 2tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
    return {"support": support, "recall": recall, "precision": precision, "f1": f1}


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def compute_drift(y_true, float_probs, int8_probs, labels: list[str], prior=None) -> dict:
    """Compare float and int8 scores on the same labelled images. Pure numpy.

    y_true: [N] ints in [0, K). float_probs, int8_probs: [N, K] scores (probabilities).
    labels: K class names. prior: None or the K training shares that break ties between equal
    scores (``edge.manifest.top_classes``; int8 scores tie for ~1% of faces). Returns a JSON-ready
    dict: ``n``, ``labels``, ``float_accuracy``,
    ``int8_accuracy`` (fractions), ``accuracy_drop_points`` (float minus int8, in points),
    ``agreement`` (fraction of images with the same top-1 class), ``float_macro_f1``,
    ``int8_macro_f1``, ``macro_f1_drop_points``, ``mean_kl`` / ``max_kl`` (KL(float || int8) of the
    score vectors after clipping to ``KL_EPS`` and renormalising), ``per_class`` {label: support,
    float/int8 recall, precision, f1, recall_delta and f1_delta (int8 minus float)},
    ``confusion_float`` / ``confusion_int8`` (rows true, columns predicted), ``int8_top_ties``
    (images whose int8 top score is shared), ``tie_break`` and ``agreement_lowest_index`` (the
    agreement when ties go to the lowest class index instead).

    Macro-F1 averages over the classes that occur in the labels or the predictions (as
    scikit-learn does by default); recall of a class with no images is None.
    """
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    pf = np.asarray(float_probs, np.float64)
    pq = np.asarray(int8_probs, np.float64)
    k = len(labels)
    if pf.shape != (len(y), k) or pq.shape != (len(y), k):
        raise ValueError(f"expected scores shaped [{len(y)}, {k}], got float {list(pf.shape)} and int8 {list(pq.shape)}")
    if len(y) == 0:
        raise ValueError("no images to compare")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must be in [0, {k}), got {y.min()}..{y.max()}")
    pred_f, pred_q = top_classes(pf, prior), top_classes(pq, prior)
    cm_f, cm_q = confusion_matrix(y, pred_f, k), confusion_matrix(y, pred_q, k)
    mf, mq = _class_metrics(cm_f), _class_metrics(cm_q)

    p = np.clip(pf, KL_EPS, None)
    q = np.clip(pq, KL_EPS, None)
    p /= p.sum(axis=1, keepdims=True)
    q /= q.sum(axis=1, keepdims=True)
    kl = np.sum(p * np.log(p / q), axis=1)

    acc_f, acc_q = float(np.mean(pred_f == y)), float(np.mean(pred_q == y))
    f1_f, f1_q = float(np.nanmean(mf["f1"])), float(np.nanmean(mq["f1"]))
    per_class = {}
    for i, name in enumerate(labels):
        per_class[name] = {
            "support": int(mf["support"][i]),
            "float_recall": _num(mf["recall"][i]), "int8_recall": _num(mq["recall"][i]),
            "recall_delta": _num(mq["recall"][i] - mf["recall"][i]),
            "float_precision": _num(mf["precision"][i]), "int8_precision": _num(mq["precision"][i]),
            "float_f1": _num(mf["f1"][i]), "int8_f1": _num(mq["f1"][i]),
            "f1_delta": _num(mq["f1"][i] - mf["f1"][i]),
        }
    return {
        "n": int(len(y)),
        "labels": list(labels),
        "float_accuracy": acc_f,
        "int8_accuracy": acc_q,
        "accuracy_drop_points": (acc_f - acc_q) * 100.0,
        "agreement": float(np.mean(pred_f == pred_q)),
        "disagreements": int(np.sum(pred_f != pred_q)),
        "int8_top_ties": int(np.sum((pq == pq.max(axis=1, keepdims=True)).sum(axis=1) > 1)),
        "tie_break": "class_prior" if prior is not None else "lowest_index",
        "agreement_lowest_index": float(np.mean(pf.argmax(axis=1) == pq.argmax(axis=1))),
        "float_macro_f1": f1_f,
        "int8_macro_f1": f1_q,
        "macro_f1_drop_points": (f1_f - f1_q) * 100.0,
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
        "per_class": per_class,
        "confusion_float": cm_f.tolist(),
        "confusion_int8": cm_q.tolist(),
    }


def drift_verdict(report: dict, max_drop: float = 1.0, min_agreement: float = 0.97) -> tuple[bool, list[str]]:
    """Gate a quantized model: (ok, reasons it fails).

    max_drop: largest allowed accuracy drop, in percentage points. min_agreement: smallest
    allowed top-1 agreement, as a fraction.
    """
    reasons = []
    drop = report["accuracy_drop_points"]
    if drop > max_drop:
        reasons.append(f"accuracy drops {drop:.2f} points (float {report['float_accuracy']:.2%} -> int8 "
                       f"{report['int8_accuracy']:.2%}), more than the allowed {max_drop:g}")
    if report["agreement"] < min_agreement:
        reasons.append(f"top-1 agreement {report['agreement']:.2%} is below the required {min_agreement:.2%} "
                       f"({report['disagreements']} of {report['n']} images change class)")
    return not reasons, reasons


# --------------------------------------------------------------------------- reports

def _pct(v) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def _pts(v) -> str:
    return "n/a" if v is None else f"{v * 100:+.1f} pts"


def format_summary(report: dict, verdict: tuple[bool, list[str]] | None = None) -> str:
    """Compact Markdown table of the drift numbers (for the terminal and closing notes)."""
    r = report
    src = r.get("source", {})
    title = "Quantization drift"
    if src:
        title += (f": `{Path(src.get('tflite', '')).name}` vs `{Path(src.get('keras', '')).name}` on "
                  f"{src.get('dataset', '')} {src.get('split', '')}")
    lines = [f"{title} (n={r['n']})", "",
             "| metric | float | int8 | change |", "|---|---:|---:|---:|",
             f"| accuracy | {r['float_accuracy']:.2%} | {r['int8_accuracy']:.2%} | {-r['accuracy_drop_points']:+.2f} pts |",
             f"| macro-F1 | {r['float_macro_f1']:.4f} | {r['int8_macro_f1']:.4f} | "
             f"{r['int8_macro_f1'] - r['float_macro_f1']:+.4f} |",
             f"| top-1 agreement | | {r['agreement']:.2%} | {r['disagreements']} changed |",
             f"| mean KL(float‖int8) | | {r['mean_kl']:.3g} | max {r['max_kl']:.3g} |"]
    if "int8_top_ties" in r:
        rule = "the more frequent class (class_prior)" if r["tie_break"] == "class_prior" else "the lowest index"
        lines.append(f"| int8 top-score ties | | {r['int8_top_ties']} | to {rule}; "
                     f"lowest-index agreement {r['agreement_lowest_index']:.2%} |")
    for name, c in r["per_class"].items():
        lines.append(f"| recall {name} (n={c['support']}) | {_pct(c['float_recall'])} | "
                     f"{_pct(c['int8_recall'])} | {_pts(c['recall_delta'])} |")
    if verdict is not None:
        ok, reasons = verdict
        th = r.get("thresholds", {})
        limits = (f" (max drop {th['max_drop']:.1f} pts, min agreement {th['min_agreement']:.1%})"
                  if th else "")
        lines += ["", ("Verdict: PASS" + limits) if ok else ("Verdict: FAIL" + limits + ": " + "; ".join(reasons))]
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(float(obj)) else float(obj)
    return obj


def _plot_confusion(cm: np.ndarray, labels: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, np.float64)
    support = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 * k + 2.2, 0.9 * k + 1.8), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            v = norm[i, j]
            ax.text(j, i, f"{v * 100:.0f}%\n{int(cm[i, j])}", ha="center", va="center", fontsize=7.5,
                    color="white" if v > 0.55 else "black")
    ax.set_xticks(range(k), labels, rotation=40, ha="right")
    ax.set_yticks(range(k), [f"{name} ({int(s)})" for name, s in zip(labels, support[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (images)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _plot_recall(report: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = report["labels"]
    rf = [report["per_class"][n]["float_recall"] or 0.0 for n in labels]
    rq = [report["per_class"][n]["int8_recall"] or 0.0 for n in labels]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 1.5), 4.2), dpi=110)
    ax.bar(x - 0.2, np.array(rf) * 100, 0.4, label=f"float (acc {report['float_accuracy']:.1%})", color="#4c72b0")
    ax.bar(x + 0.2, np.array(rq) * 100, 0.4, label=f"int8 (acc {report['int8_accuracy']:.1%})", color="#dd8452")
    for xi, a, b in zip(x, rf, rq):
        ax.text(xi, max(a, b) * 100 + 1.5, f"{(b - a) * 100:+.1f}", ha="center", fontsize=8)
    ax.set_xticks(x, labels, rotation=20)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 112)
    ax.set_title(title + f"  (agreement {report['agreement']:.1%}, change in points above bars)", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def write_drift_report(report: dict, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Write ``<name>_drift.md``, ``<name>_drift.json``, ``<name>_confusion_float.png``,
    ``<name>_confusion_int8.png`` and ``<name>_recall.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / f"{name}_drift.md",
        "json": out / f"{name}_drift.json",
        "confusion_float": out / f"{name}_confusion_float.png",
        "confusion_int8": out / f"{name}_confusion_int8.png",
        "recall": out / f"{name}_recall.png",
    }
    labels = report["labels"]
    _plot_confusion(report["confusion_float"], labels,
                    f"{name} float: accuracy {report['float_accuracy']:.1%} (rows normalised)", paths["confusion_float"])
    _plot_confusion(report["confusion_int8"], labels,
                    f"{name} int8: accuracy {report['int8_accuracy']:.1%} (rows normalised)", paths["confusion_int8"])
    _plot_recall(report, f"{name}: per-class recall", paths["recall"])

    paths["json"].write_text(json.dumps(_jsonable(report), indent=2) + "\n")

    verdict = report.get("verdict")
    summary = format_summary(report, (verdict["ok"], verdict["reasons"]) if verdict else None)
    md = [f"# Quantization drift: {name}", "", summary, "", "## Per class", "",
          "| class | images | recall float | recall int8 | change | F1 float | F1 int8 | change |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n, c in report["per_class"].items():
        f1f = "n/a" if c["float_f1"] is None else f"{c['float_f1']:.3f}"
        f1q = "n/a" if c["int8_f1"] is None else f"{c['int8_f1']:.3f}"
        f1d = "n/a" if c["f1_delta"] is None else f"{c['f1_delta']:+.3f}"
        md.append(f"| {n} | {c['support']} | {_pct(c['float_recall'])} | {_pct(c['int8_recall'])} | "
                  f"{_pts(c['recall_delta'])} | {f1f} | {f1q} | {f1d} |")
    for kind in ("float", "int8"):
        cm = report[f"confusion_{kind}"]
        md += ["", f"## Confusion matrix, {kind} (rows true, columns predicted)", "",
               "| true \\ pred | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        md += [f"| {labels[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(cm)]
        md += ["", f"![{kind} confusion matrix]({paths[f'confusion_{kind}'].name})"]
    md += ["", "## Per-class recall", "", f"![per-class recall]({paths['recall'].name})", ""]
    src = report.get("source")
    if src:
        md += ["## Inputs", ""] + [f"- {k}: `{v}`" for k, v in src.items()] + [""]
    paths["markdown"].write_text("\n".join(md))
    return paths


# --------------------------------------------------------------------------- data

def load_eval_data(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of ``split``: (x uint8 [N,48,48], y int64 [N]).

    ``path``: an ``.npz`` holding one split as arrays ``x`` and ``y`` (``split`` is then ignored),
    or anything ``convert.data.load_split`` reads (the FER2013 ``.csv``/``.csv.gz``, its parsed
    ``.npz`` cache with ``<split>_x``/``<split>_y``, an image-folder root).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data {p} not found; pass the FER2013 CSV (fer2013.csv.gz) or an .npz with x and y")
    x = y = None
    if p.suffix == ".npz" and p.is_file():
        try:
            with np.load(p) as z:
                if "x" in z.files and "y" in z.files:
                    x, y = z["x"], z["y"]
                elif not any(f.endswith("_x") for f in z.files):
                    raise DataError(f"{p} has neither arrays 'x' and 'y' (uint8 [N,48,48], [N] ints) nor "
                                    f"'<split>_x'/'<split>_y' (found {', '.join(z.files) or 'nothing'})")
        except (ValueError, OSError) as exc:
            raise DataError(f"{p} is not a readable .npz ({exc})") from None
    if x is None:
        try:
            from convert.data import load_split
        except ModuleNotFoundError as exc:
            if exc.name != "convert.data":
                raise
            raise DataError("reading the FER2013 CSV needs convert/data.py, which is missing; pass an .npz "
                            "with arrays x and y instead") from None
        x, y = load_split(p, split)
    x = _as_images(x)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(x) != len(y) or len(y) == 0:
        raise DataError(f"{p}: {len(x)} images but {len(y)} labels")
    return x, y


# --------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fer-edge drift``."""
    parser.add_argument("--keras", required=True, metavar="MODEL.keras", help="the float model")
    parser.add_argument("--tflite", required=True, metavar="MODEL.tflite", help="its int8 conversion (CPU model)")
    parser.add_argument("--data", required=True, metavar="FER.csv.gz",
                        help="FER2013 CSV (or an .npz with arrays x uint8 [N,48,48] and y)")
    parser.add_argument("--split", default="PrivateTest", help="Usage value to evaluate (default PrivateTest)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="report folder (default ./drift-<name>)")
    parser.add_argument("--name", default=None, help="report file prefix (default: the .tflite name)")
    parser.add_argument("--dataset", default="FER2013", help="dataset name recorded in the report/manifest")
    parser.add_argument("--max-drop", type=float, default=1.0,
                        help="fail (exit 1) when int8 accuracy is more than this many points below float (default 1.0)")
    parser.add_argument("--min-agreement", type=float, default=0.97,
                        help="fail (exit 1) when fewer than this fraction of images keep their top-1 class (default 0.97)")
    parser.add_argument("--update-manifest", action="store_true",
                        help="write the metrics into the <name>.json beside the .tflite")
    parser.add_argument("--mean", type=float, default=None, help="input mean (default: from the manifest, else 127.5)")
    parser.add_argument("--std", type=float, default=None, help="input std (default: from the manifest, else 127.5)")
    parser.add_argument("--float-mean", type=float, default=TRAIN_MEAN,
                        help="the float model's own input mean, as trained (default: %(default)s)")
    parser.add_argument("--float-std", type=float, default=TRAIN_STD,
                        help="the float model's own input std, as trained (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images (quick check)")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="Keras predict batch size (default 256)")


def _model_info(tflite: Path, args) -> tuple[float, float, list[str], list[float] | None]:
    """mean, std, labels and class prior: CLI flags first, then the manifest beside the model, then defaults."""
    from edge.manifest import FER_LABELS, load_manifest, manifest_path_for

    mean, std, labels, prior = 127.5, 127.5, list(FER_LABELS), None
    if manifest_path_for(tflite).is_file():
        m = load_manifest(tflite, check_sha=args.update_manifest)
        mean, std, labels, prior = m.input.mean, m.input.std, list(m.labels), m.class_prior
    elif args.update_manifest:
        raise ModelError(f"no manifest {manifest_path_for(tflite)} to update; write it with `fer-edge convert` "
                         "or drop --update-manifest")
    else:
        log.warning("no manifest beside %s; assuming mean=std=127.5 and the FER2013 labels", tflite.name)
    mean = args.mean if args.mean is not None else mean
    std = args.std if args.std is not None else std
    if std <= 0:
        raise DataError(f"--std must be > 0, got {std}")
    return mean, std, labels, prior


def update_manifest_metrics(tflite_path: str | Path, report: dict) -> Path:
    """Write the drift metrics into the manifest beside ``tflite_path`` (its sha256 stays the model's)."""
    from edge.manifest import Metrics, load_manifest, sha256_of, write_manifest

    tflite_path = Path(tflite_path)
    m = load_manifest(tflite_path, check_sha=True)  # refuses a manifest of another file
    src = report.get("source", {})
    metrics = m.metrics.model_dump()
    metrics.update({
        "dataset": src.get("dataset", metrics.get("dataset")),
        "split": src.get("split", metrics.get("split")),
        "float_accuracy": round(report["float_accuracy"], 6),
        "int8_accuracy": round(report["int8_accuracy"], 6),
        "agreement": round(report["agreement"], 6),
        "macro_f1": round(report["int8_macro_f1"], 6),
        "float_macro_f1": round(report["float_macro_f1"], 6),
        "accuracy_drop_points": round(report["accuracy_drop_points"], 4),
        "mean_kl": round(report["mean_kl"], 6),
        "n": report["n"],
        "per_class_recall": {k: (None if c["int8_recall"] is None else round(c["int8_recall"], 6))
                             for k, c in report["per_class"].items()},
    })
    m.metrics = Metrics.model_validate(metrics)
    m.sha256 = sha256_of(tflite_path)
    return write_manifest(m, tflite_path)


def run(args: argparse.Namespace) -> int:
    """``fer-edge drift``: exit 0 when the int8 model is within the thresholds, 1 when not."""
    tflite, keras_path = Path(args.tflite), Path(args.keras)
    for p, what in ((tflite, "int8 .tflite"), (keras_path, "float .keras")):
        if not p.is_file():
            raise ModelError(f"{what} {p} not found; pass an existing file")
    if not 0 <= args.min_agreement <= 1:
        raise DataError(f"--min-agreement is a fraction in [0, 1], got {args.min_agreement}")
    name = args.name or tflite.stem
    out_dir = Path(args.out) if args.out else Path(f"drift-{name}")
    mean, std, labels, prior = _model_info(tflite, args)

    x, y = load_eval_data(args.data, args.split)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    log.info("evaluating %d images of %s %s", len(y), args.dataset, args.split)
    # Each model gets its own input contract: the float model the normalisation it was trained with,
    # the int8 model the one in its manifest (convert folds the difference into the first conv).
    float_mean, float_std = getattr(args, "float_mean", TRAIN_MEAN), getattr(args, "float_std", TRAIN_STD)
    float_probs = predict_float(keras_path, x, float_mean, float_std, batch_size=args.batch_size)
    int8_probs = predict_int8(tflite, x, mean, std, threads=args.threads)
    if float_probs.shape[1] != len(labels) or int8_probs.shape[1] != len(labels):
        raise ModelError(f"models output {float_probs.shape[1]} (float) and {int8_probs.shape[1]} (int8) scores, "
                         f"expected {len(labels)} (one per label)")

    report = compute_drift(y, float_probs, int8_probs, labels, prior)
    report["source"] = {"keras": str(keras_path), "tflite": str(tflite), "data": str(args.data),
                        "dataset": args.dataset, "split": args.split, "mean": mean, "std": std,
                        "float_mean": float_mean, "float_std": float_std}
    report["thresholds"] = {"max_drop": args.max_drop, "min_agreement": args.min_agreement}
    ok, reasons = drift_verdict(report, args.max_drop, args.min_agreement)
    report["verdict"] = {"ok": ok, "reasons": reasons}
    paths = write_drift_report(report, out_dir, name)
    print(format_summary(report, (ok, reasons)))
    print(f"\nreport: {paths['markdown']}")
    if args.update_manifest:
        print(f"manifest updated: {update_manifest_metrics(tflite, report)}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m convert.drift ...`` (the same as ``fer-edge drift``)."""
    from convert.cli import run_standalone

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_standalone("fer-edge drift", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
