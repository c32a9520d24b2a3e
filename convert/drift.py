"""Quantization drift: how much the int8 ``.tflite`` disagrees with the float ``.keras`` it came from.

``fer-edge drift`` runs both models on the same labelled split and reports accuracy of each, the
accuracy drop in percentage points, top-1 agreement, per-class recall/F1 and their change, both
confusion matrices and the mean KL divergence KL(float || int8) of the score vectors, as Markdown,
JSON and PNG plots. It exits 1 when the drop or the agreement is worse than the thresholds, so it
can gate a release; ``--update-manifest`` writes the numbers into the model's ``<name>.json``.

``measure_drift`` is the command as a function (``fer-edge convert`` calls it). The int8 model runs
through ``edge.int8``, the device's own code. Metrics: ``convert.drift_metrics``; the report
folder: ``convert.drift_report``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from convert.data import TRAIN_MEAN, TRAIN_STD
from convert.drift_metrics import compute_drift, drift_verdict
from convert.drift_report import format_summary, write_drift_report
from edge.errors import DataError, ModelError
from edge.int8 import input_detail, make_interpreter, output_detail, quantize_input
from edge.int8 import run as run_int8

log = logging.getLogger(__name__)

# `fer-edge drift --help` (plain text: argparse shows it as written).
HELP = "measure how far an int8 .tflite drifts from the float .keras it came from"
DESCRIPTION = (
    "Run the float .keras and its int8 .tflite on the same labelled split and report the accuracy of each, "
    "the accuracy drop in percentage points, the top-1 agreement, per-class recall and F1 and their change, "
    "both confusion matrices and the mean KL divergence of the scores, as Markdown, JSON and PNG plots. "
    "Exits 1 when the drop or the agreement is worse than the thresholds, so it can gate a release; "
    "--update-manifest writes the numbers into the model's <name>.json."
)

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


def open_int8(tflite_path: str | Path, threads: int = 2):
    """Load a TFLite model for batch-1 scoring on the CPU: ``(interpreter, input detail, output detail)``.

    tflite_path: int8 (or uint8, or float) model with input [1, H, W, 1] (another batch is resized
    to 1). threads: interpreter threads. Loads through ``edge.int8.make_interpreter``, as the device
    does; a missing or unreadable file raises ModelError with what to do next.
    """
    tflite_path = Path(tflite_path)
    if not tflite_path.is_file():
        raise ModelError(f"model file {tflite_path} not found; pass the int8 .tflite")
    interp = make_interpreter(tflite_path, "cpu", threads=threads).interpreter
    inp = input_detail(interp)
    if list(inp["shape"][:1]) != [1]:
        interp.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
        interp.allocate_tensors()
        inp = input_detail(interp)
    return interp, inp, output_detail(interp)


def score_int8(model, xq: np.ndarray, tflite_path: str | Path, progress: bool = False) -> np.ndarray:
    """Scores of ``model`` (``open_int8``'s triple for ``tflite_path``) for already-quantized inputs
    ``xq`` [N, H, W, 1], one ``edge.int8.run`` per image (the device's invoke and dequantize);
    float32 [N, num_classes]. progress: show a tqdm bar."""
    interp, inp, out = model
    scores = np.empty((len(xq), int(np.prod(out["shape"][1:]))), np.float32)
    it = range(len(xq))
    if progress and sys.stderr.isatty():  # no progress bars in logs
        from tqdm import tqdm

        it = tqdm(it, desc=f"int8 {Path(tflite_path).name}", unit="img", leave=False)
    try:
        for i in it:
            scores[i] = run_int8(interp, xq[i: i + 1], inp, out)
    except RuntimeError as exc:
        raise ModelError(f"running {tflite_path} failed ({str(exc).splitlines()[0]})") from None
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
    parser.add_argument("--ferplus", metavar="fer2013new.csv", default=None,
                        help="FER+ votes (same row order as the FER2013 CSV): also score against the FER+ "
                             "majority of the split and the ten annotators' votes")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="Keras predict batch size (default 256)")


def model_input_info(tflite: Path, mean: float | None = None, std: float | None = None,
                     update_manifest: bool = False) -> tuple[float, float, list[str], list[float] | None]:
    """mean, std, labels and class prior of an int8 model: ``mean``/``std`` when given, then the
    manifest beside the model, then defaults (127.5, the FER2013 labels, no prior)."""
    from edge.manifest import FER_LABELS, load_manifest, manifest_path_for

    m_mean, m_std, labels, prior = 127.5, 127.5, list(FER_LABELS), None
    if manifest_path_for(tflite).is_file():
        m = load_manifest(tflite, check_sha=update_manifest)
        m_mean, m_std, labels, prior = m.input.mean, m.input.std, list(m.labels), m.class_prior
    elif update_manifest:
        raise ModelError(f"no manifest {manifest_path_for(tflite)} to update; write it with `fer-edge convert` "
                         "or drop --update-manifest")
    else:
        log.warning("no manifest beside %s; assuming mean=std=127.5 and the FER2013 labels", tflite.name)
    mean = mean if mean is not None else m_mean
    std = std if std is not None else m_std
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
    fp = report.get("ferplus")
    if fp:  # FER+ majority of the same split (convert.ferplus): the labels ten annotators agree on
        metrics.update({
            "ferplus_float_accuracy": fp["float"]["accuracy"], "ferplus_int8_accuracy": fp["int8"]["accuracy"],
            "ferplus_n": fp["int8"]["n"], "ferplus_int8_plausible": fp["int8"]["plausible"],
            "ferplus_per_class_recall": fp["int8"]["per_class_recall"],
        })
    m.metrics = Metrics.model_validate(metrics)
    m.sha256 = sha256_of(tflite_path)
    return write_manifest(m, tflite_path)


class DriftResult(NamedTuple):
    """What ``measure_drift`` returns: the report (``compute_drift``'s dict plus ``source``,
    ``thresholds`` and ``verdict``), whether it passed, the files written and the manifest updated."""

    report: dict
    ok: bool
    files: dict[str, Path]
    manifest: Path | None

    def text(self) -> str:
        """The summary table, the verdict and where the report (and the manifest) went."""
        verdict = self.report["verdict"]
        lines = [format_summary(self.report, (verdict["ok"], verdict["reasons"])), "", f"report: {self.files['markdown']}"]
        if self.manifest is not None:
            lines.append(f"manifest updated: {self.manifest}")
        return "\n".join(lines)


def measure_drift(keras_path: str | Path, tflite_path: str | Path, data: str | Path, split: str = "PrivateTest", *,
                  out_dir: str | Path | None = None, name: str | None = None, dataset: str = "FER2013",
                  max_drop: float = 1.0, min_agreement: float = 0.97, update_manifest: bool = False,
                  mean: float | None = None, std: float | None = None, float_mean: float = TRAIN_MEAN,
                  float_std: float = TRAIN_STD, limit: int | None = None, threads: int = 2,
                  batch_size: int = 256, ferplus: str | Path | None = None) -> DriftResult:
    """Run the float ``keras_path`` and its int8 ``tflite_path`` on ``split`` of ``data``, write the
    drift report into ``out_dir`` (default ``drift-<name>``; ``name`` defaults to the model's file
    name) and gate it: ``ok`` when the accuracy drop is at most ``max_drop`` points and the top-1
    agreement at least ``min_agreement``. ``update_manifest`` writes the metrics into the model's
    ``<name>.json``. ``mean``/``std``: the int8 input normalisation (default: the manifest's);
    ``float_mean``/``float_std``: the float model's, as trained. ``limit``: first N images only.
    ``ferplus``: FER+'s ``fer2013new.csv``; with it the same predictions are also scored against the
    FER+ majority and vote distribution of ``split`` (``report["ferplus"]``, manifest ``ferplus_*``).
    """
    tflite, keras_path = Path(tflite_path), Path(keras_path)
    for p, what in ((tflite, "int8 .tflite"), (keras_path, "float .keras")):
        if not p.is_file():
            raise ModelError(f"{what} {p} not found; pass an existing file")
    if not 0 <= min_agreement <= 1:
        raise DataError(f"--min-agreement is a fraction in [0, 1], got {min_agreement}")
    name = name or tflite.stem
    out_dir = Path(out_dir) if out_dir else Path(f"drift-{name}")
    mean, std, labels, prior = model_input_info(tflite, mean, std, update_manifest)

    x, y = load_eval_data(data, split)
    if limit:
        x, y = x[:limit], y[:limit]
    log.info("evaluating %d images of %s %s", len(y), dataset, split)
    # Each model gets its own input contract: the float model the normalisation it was trained with,
    # the int8 model the one in its manifest (convert folds the difference into the first conv).
    float_probs = predict_float(keras_path, x, float_mean, float_std, batch_size=batch_size)
    int8_probs = predict_int8(tflite, x, mean, std, threads=threads)
    if float_probs.shape[1] != len(labels) or int8_probs.shape[1] != len(labels):
        raise ModelError(f"models output {float_probs.shape[1]} (float) and {int8_probs.shape[1]} (int8) scores, "
                         f"expected {len(labels)} (one per label)")

    report = compute_drift(y, float_probs, int8_probs, labels, prior)
    if ferplus:
        report["ferplus"] = ferplus_report(data, ferplus, split, float_probs, int8_probs, prior, limit)
    report["source"] = {"keras": str(keras_path), "tflite": str(tflite), "data": str(data),
                        "dataset": dataset, "split": split, "mean": mean, "std": std,
                        "float_mean": float_mean, "float_std": float_std}
    report["thresholds"] = {"max_drop": max_drop, "min_agreement": min_agreement}
    ok, reasons = drift_verdict(report, max_drop, min_agreement)
    report["verdict"] = {"ok": ok, "reasons": reasons}
    files = write_drift_report(report, out_dir, name)
    manifest = update_manifest_metrics(tflite, report) if update_manifest else None
    return DriftResult(report, ok, files, manifest)


def ferplus_report(data, ferplus_path, split: str, float_probs, int8_probs, prior, limit=None) -> dict:
    """The float and int8 predictions scored against FER+ votes of ``split`` (``convert.ferplus.score``)."""
    from convert import ferplus

    votes = ferplus.load_votes(data, ferplus_path)[split]
    return ferplus.score_predictions(votes[:limit] if limit else votes, float_probs, int8_probs, prior)


def run(args: argparse.Namespace) -> int:
    """``fer-edge drift``: exit 0 when the int8 model is within the thresholds, 1 when not."""
    result = measure_drift(args.keras, args.tflite, args.data, args.split, out_dir=args.out, name=args.name,
                           dataset=args.dataset, max_drop=args.max_drop, min_agreement=args.min_agreement,
                           update_manifest=args.update_manifest, mean=args.mean, std=args.std,
                           float_mean=args.float_mean, float_std=args.float_std, limit=args.limit,
                           threads=args.threads, batch_size=args.batch_size, ferplus=args.ferplus)
    print(result.text())
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m convert.drift ...`` (the same as ``fer-edge drift``)."""
    from convert.standalone import run_standalone

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_standalone("fer-edge drift", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
