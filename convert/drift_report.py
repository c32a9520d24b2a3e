"""Drift reports: the Markdown summary for the terminal, and the report folder (Markdown, JSON, PNG plots)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from convert.report import markdown_table


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
    rows = [["accuracy", f"{r['float_accuracy']:.2%}", f"{r['int8_accuracy']:.2%}", f"{-r['accuracy_drop_points']:+.2f} pts"],
            ["macro-F1", f"{r['float_macro_f1']:.4f}", f"{r['int8_macro_f1']:.4f}",
             f"{r['int8_macro_f1'] - r['float_macro_f1']:+.4f}"],
            ["top-1 agreement", "", f"{r['agreement']:.2%}", f"{r['disagreements']} changed"],
            ["mean KL(float‖int8)", "", f"{r['mean_kl']:.3g}", f"max {r['max_kl']:.3g}"]]
    if "int8_top_ties" in r:
        rule = "the more frequent class (class_prior)" if r["tie_break"] == "class_prior" else "the lowest index"
        rows.append(["int8 top-score ties", "", r["int8_top_ties"],
                     f"to {rule}; lowest-index agreement {r['agreement_lowest_index']:.2%}"])
    for name, c in r["per_class"].items():
        rows.append([f"recall {name} (n={c['support']})", _pct(c["float_recall"]), _pct(c["int8_recall"]),
                     _pts(c["recall_delta"])])
    fp = r.get("ferplus")
    if fp:
        f, q = fp["float"], fp["int8"]
        rows.append([f"FER+ majority accuracy (n={q['n']})", _pct(f["accuracy"]), _pct(q["accuracy"]),
                     _pts(q["accuracy"] - f["accuracy"])])
        rows.append(["FER+ top class chosen by >= 3 of 10", _pct(f["plausible"]), _pct(q["plausible"]),
                     _pts(q["plausible"] - f["plausible"])])
    lines = [f"{title} (n={r['n']})", "", markdown_table(["metric", "float", "int8", "change"], rows)]
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
    rows = []
    for n, c in report["per_class"].items():
        f1f = "n/a" if c["float_f1"] is None else f"{c['float_f1']:.3f}"
        f1q = "n/a" if c["int8_f1"] is None else f"{c['int8_f1']:.3f}"
        f1d = "n/a" if c["f1_delta"] is None else f"{c['f1_delta']:+.3f}"
        rows.append([n, c["support"], _pct(c["float_recall"]), _pct(c["int8_recall"]), _pts(c["recall_delta"]),
                     f1f, f1q, f1d])
    md = [f"# Quantization drift: {name}", "", summary, "", "## Per class", "",
          markdown_table(["class", "images", "recall float", "recall int8", "change", "F1 float", "F1 int8", "change"],
                         rows)]
    for kind in ("float", "int8"):
        cm = report[f"confusion_{kind}"]
        md += ["", f"## Confusion matrix, {kind} (rows true, columns predicted)", "",
               markdown_table(["true \\ pred", *labels], [[labels[i], *row] for i, row in enumerate(cm)]),
               "", f"![{kind} confusion matrix]({paths[f'confusion_{kind}'].name})"]
    md += ["", "## Per-class recall", "", f"![per-class recall]({paths['recall'].name})", ""]
    src = report.get("source")
    if src:
        md += ["## Inputs", ""] + [f"- {k}: `{v}`" for k, v in src.items()] + [""]
    paths["markdown"].write_text("\n".join(md))
    return paths
