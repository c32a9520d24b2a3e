"""The FER2013 / FER+ trade-off: each candidate's accuracy on both label sets, one point per model.

FER2013 and FER+ give different labels to a third of the faces, and a model has one top class per
face, so a point gained on one set where they disagree is a point lost on the other. This scores
float ``.keras`` and int8 ``.tflite`` models on PublicTest (never PrivateTest: this is for choosing)
against both label sets and draws them on one plane with the bars of issue 14 as targets.

``python -m convert.experiments.frontier --data fer2013.csv.gz --ferplus fer2013new.csv
--model NAME=PATH ... --out reports/ferplus_frontier`` writes ``frontier.json``, ``frontier.md``
and ``frontier.png``. A ``NAME`` may carry a group after a colon (``tiny:j35=...``): points of
one group share a colour.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import convert  # noqa: F401  (ONEDNN_MAX_CPU_ISA before TensorFlow)
from edge.errors import DataError

# Issue 14's PrivateTest bars (FER2013, FER+) per architecture; drawn for orientation only, the
# points are PublicTest figures.
BARS = {"tiny": (66.5, 80.0), "standard": (69.0, 84.0)}


def predict(path: Path, x: np.ndarray) -> np.ndarray:
    """Top class per image of the float ``.keras`` or int8 ``.tflite`` model at ``path``."""
    if path.suffix == ".tflite":
        from edge.classify import ExpressionClassifier, ModelConfig

        clf = ExpressionClassifier(ModelConfig(path=str(path), accelerator="cpu"))
        return np.concatenate([clf.classify_batch(list(x[i:i + 256])).argmax(1) for i in range(0, len(x), 256)])
    import keras

    from convert.data import TRAIN_MEAN, TRAIN_STD

    model = keras.models.load_model(path, compile=False)
    return model.predict(((x.astype(np.float32) - TRAIN_MEAN) / TRAIN_STD)[..., None], batch_size=512,
                         verbose=0).argmax(1)


def score_models(models: dict[str, Path], data: str, ferplus_path: str) -> list[dict]:
    """``[{"name", "group", "kind", "fer2013", "ferplus", "agree", "differ_ferplus", "differ_fer2013"}]``:
    PublicTest accuracies (%) of each model; ``agree``: its accuracy on the faces whose FER2013 label
    is the FER+ majority; ``differ_*``: on the faces where the two differ, how often it gives each one
    (None where a group is empty)."""
    from convert.data import load_split
    from convert.ferplus import load_votes, majority

    x, y = load_split(data, "PublicTest")
    maj = majority(load_votes(data, ferplus_path)["PublicTest"])
    has = maj >= 0
    if not has.any():
        raise DataError(f"no PublicTest face in {ferplus_path} has a unique FER+ majority; "
                        "pass the fer2013new.csv that belongs to this FER2013 file (--ferplus)")
    same, differ = has & (maj == y), has & (maj != y)
    rows = []
    for name, path in models.items():
        pred = predict(Path(path), x)
        group = name.split(":")[0] if ":" in name else name
        rows.append({"name": name, "group": group, "kind": "int8" if Path(path).suffix == ".tflite" else "float",
                     "fer2013": _percent(pred == y), "ferplus": _percent(pred[has] == maj[has]),
                     "agree": _percent(pred[same] == y[same]),
                     "differ_ferplus": _percent(pred[differ] == maj[differ]),
                     "differ_fer2013": _percent(pred[differ] == y[differ]), "path": str(path)})
        print(f"{name:28s} {rows[-1]['kind']:5s} FER2013 {rows[-1]['fer2013']:.2f}  FER+ {rows[-1]['ferplus']:.2f}",
              flush=True)
    return rows


def _percent(hits: np.ndarray) -> float | None:
    """Percentage of true values in ``hits``, 2 decimals; None for an empty group (e.g. no face where the labels
    differ in a small fixture) rather than numpy's NaN and warning."""
    return round(100 * float(hits.mean()), 2) if hits.size else None


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    colours = {g: f"C{i}" for i, g in enumerate(dict.fromkeys(r["group"] for r in rows))}
    for r in rows:
        ax.scatter(r["fer2013"], r["ferplus"], color=colours[r["group"]], marker="o" if r["kind"] == "float" else "s",
                   label=r["group"] if r is next(q for q in rows if q["group"] == r["group"]) else None)
        ax.annotate(r["name"].split(":")[-1], (r["fer2013"], r["ferplus"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    for g, (fer, fplus) in BARS.items():
        if g in colours:
            ax.axvline(fer, color=colours[g], ls=":", lw=1)
            ax.axhline(fplus, color=colours[g], ls=":", lw=1)
            ax.annotate(f"{g} bars (PrivateTest)", (fer, fplus), color=colours[g], fontsize=7)
    ax.set_xlabel("FER2013 PublicTest accuracy (%)")
    ax.set_ylabel("FER+ PublicTest accuracy, unique majority (%)")
    ax.set_title("One model, two label sets: the trade-off (o float, s int8)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict]) -> str:
    lines = ["| model | kind | FER2013 | FER+ | sum | labels agree: right | labels differ: FER+ / FER2013 given |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['kind']} | {r['fer2013']:.2f} | {r['ferplus']:.2f} | "
                     f"{r['fer2013'] + r['ferplus']:.2f} | {_cell(r['agree'])} | "
                     f"{_cell(r['differ_ferplus'])} / {_cell(r['differ_fer2013'])} |")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="fer2013.csv[.gz]")
    p.add_argument("--ferplus", required=True, help="fer2013new.csv")
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH", help=".keras or .tflite; repeat")
    p.add_argument("--out", default="runs/ferplus_frontier")


def run(a: argparse.Namespace) -> int:
    pairs = [m.split("=", 1) for m in a.model]
    if any(len(pair) != 2 for pair in pairs) or len({n for n, _ in pairs}) != len(pairs):
        raise DataError("each --model is NAME=PATH with a NAME of its own "
                        "(e.g. tiny:j35=a.keras tiny:j35-int8=a.tflite)")
    models = dict(pairs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = score_models(models, a.data, a.ferplus)
    (out / "frontier.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "frontier.md").write_text(markdown(rows))
    plot(rows, out / "frontier.png")
    print(f"wrote {out / 'frontier.md'} and {out / 'frontier.png'}")
    return 0


def main(argv=None) -> int:
    """``python -m convert.experiments.frontier``: a bad input (the FER+ file, a --model pair) is one line, exit 2."""
    from convert.standalone import run_standalone

    return run_standalone("python -m convert.experiments.frontier", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
