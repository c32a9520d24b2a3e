"""Drift metrics: compare a float and an int8 model's scores on the same labelled images (pure numpy).

Sign conventions: ``*_drop_points`` are float minus int8 in percentage points (positive = int8 is
worse); ``*_delta`` are int8 minus float as fractions (negative = int8 is worse).
"""

from __future__ import annotations

import math

import numpy as np

from edge.int8 import top_classes

KL_EPS = 1e-6


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
    scores (``edge.int8.top_classes``; int8 scores tie for ~1% of faces). Returns a JSON-ready
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
