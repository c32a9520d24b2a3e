"""Convert a trained model to a full-integer int8 TFLite model, check it for the Edge TPU, measure drift.

``fer-edge convert`` writes ``<name>.tflite`` (int8 input/output, static ``[1, 48, 48, 1]`` input)
and its ``<name>.json`` manifest (the model contract in DESIGN.md), compiles it with
``edgetpu_compiler`` when that is on PATH or checks it offline otherwise, then runs
``fer-edge drift`` on ``--split`` and writes the measured metrics into the manifest.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

import convert  # noqa: F401  (ONEDNN_MAX_CPU_ISA before TensorFlow)
from convert.data import TRAIN_MEAN, TRAIN_STD
from convert.equalize import (batch_norm_as_depthwise, equalize_relu_channels, equalize_residual_channels,
                              expand_separable, fold_input_normalization, standalone_batch_norms)
from edge.errors import ModelError
from edge.manifest import FER_LABELS, ModelManifest, Training, sha256_of, write_manifest

log = logging.getLogger(__name__)

# `fer-edge convert --help` (plain text: argparse shows it as written).
HELP = "convert a trained model to a full-integer int8 .tflite, check it for the Edge TPU, measure drift"
DESCRIPTION = (
    "Write <name>.tflite (int8 input and output, static [1, 48, 48, 1] input) and its <name>.json manifest, "
    "compile it with edgetpu_compiler when that is on PATH or check it offline otherwise, then measure the "
    "drift against the float model on --split and write the metrics into the manifest. Exits 0 when the model "
    "is converted, Edge TPU compatible and within the drift gate."
)


def representative_images(x_uint8: np.ndarray, y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` Training images drawn stratified by class (calibration must see every expression)."""
    from convert.data import stratified_sample

    return x_uint8[stratified_sample(y, n, seed)]


# The int8 input contract (DESIGN.md): the quantized input is exactly ``pixel - 128``, i.e. the float
# input (pixel - 128) / 128 with scale 1/128 and zero point 0. Models train on (pixel - 127.5) / 127.5,
# which the converter would quantize with scale 2/255 and zero point -1: every pixel then lands half a
# grey level off, and that alone flipped ~1% of top-1 answers (simulated on PublicTest).
INT8_MEAN = 128.0
INT8_STD = 128.0


# Expanding separable convolutions multiplies their weights by ~9 (3x3 kernels); below this many
# weights the int8 model stays small (a few hundred KiB: fast on a Pi CPU, fits the Edge TPU's SRAM).
EXPAND_MAX_WEIGHTS = 1_000_000


def saved_model_to_int8(keras_model, inputs, prefix: str = "fer-edge-export-") -> bytes:
    """Full-integer int8 conversion of ``keras_model`` with a static batch of 1: int8 input and outputs, so no
    float QUANTIZE/DEQUANTIZE op is left for the CPU. ``inputs``: an iterable of float32 input arrays of the
    model's shape (batch 1), the representative dataset the activations are calibrated on."""
    import shutil
    import tempfile

    import tensorflow as tf

    shape = [1, *keras_model.input_shape[1:]]
    tmp = tempfile.mkdtemp(prefix=prefix)
    # Export with a fixed [1, ...] signature: the Edge TPU compiler needs static shapes, and a SavedModel (not a
    # traced tf.function) keeps Keras 3 variables convertible to constants.
    keras_model.export(tmp, format="tf_saved_model", verbose=False,
                       input_signature=[tf.TensorSpec(shape, tf.float32, name="image")])

    def representative():
        for x in inputs:
            yield [np.asarray(x, np.float32).reshape(shape)]

    converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_to_int8(keras_model, calibration_uint8: np.ndarray, mean: float = INT8_MEAN, std: float = INT8_STD) -> bytes:
    """Full-integer int8 conversion of ``keras_model`` with a static batch of 1.

    ``calibration_uint8``: [N,48,48] uint8 images for the representative dataset, normalised as the model
    contract says (``(pixel - mean) / std``).
    """
    return saved_model_to_int8(keras_model, ((img.astype(np.float32) - mean) / std for img in calibration_uint8))


def check_input_quantization(tflite_path: Path) -> None:
    """Warn when the int8 input is not exactly ``pixel - 128`` (scale 1/128, zero point 0): that
    happens when the calibration images lack pure black or pure white pixels."""
    from edge.int8 import input_detail, make_interpreter

    detail = input_detail(make_interpreter(tflite_path, accelerator="cpu").interpreter)
    scale, zero_point = detail["quantization"]
    if abs(scale * INT8_STD - 1.0) > 1e-5 or zero_point != 0:
        log.warning("int8 input of %s has scale %.6g and zero point %d, not 1/128 and 0: the calibration images do "
                    "not span 0..255, so pixels are rounded on the way in", tflite_path.name, scale, zero_point)


def build_manifest(name: str, tflite_path: Path, params: int, train_info: dict | None, mean: float, std: float,
                   class_prior: list[float] | None = None) -> ModelManifest:
    """The contract manifest for a freshly converted model (metrics are filled in by drift).

    class_prior: share of each label in the training split (breaks ties between equal int8 scores).
    """
    info = train_info or {}
    recipe = info.get("recipe", {})
    trained = Training(epochs=int(info.get("epochs_run", 0)), seed=int(recipe.get("seed", 0)),
                       recipe=str(recipe.get("name", "")))
    extra = {k: info[k] for k in ("best_epoch", "best_val_accuracy", "val_split", "wall_seconds", "trainer")
             if k in info}
    if recipe:
        extra["recipe_settings"] = recipe
    return ModelManifest(
        name=name, version=1, labels=list(FER_LABELS),
        input={"size": [48, 48], "color": "gray", "mean": mean, "std": std},
        params=params, sha256=sha256_of(tflite_path),
        trained=Training.model_validate({**trained.model_dump(), **extra}), class_prior=class_prior,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fer-edge convert``."""
    parser.add_argument("--keras", required=True, metavar="MODEL.keras", help="trained float model (train's best.keras)")
    parser.add_argument("--data", required=True, help="FER2013 CSV (calibration from Training, drift on --split)")
    parser.add_argument("--name", default=None, help="model name (default: the Keras model's name)")
    parser.add_argument("--out", default="edge/models", help="folder for <name>.tflite and <name>.json (default: %(default)s)")
    parser.add_argument("--report-dir", default=None, help="drift and Edge TPU reports (default: reports/<name>)")
    parser.add_argument("--representative", type=int, default=1000,
                        help="calibration images drawn stratified from Training (default: %(default)s)")
    parser.add_argument("--split", default="PrivateTest", help="split for the drift report (default: %(default)s)")
    parser.add_argument("--max-drop", type=float, default=1.0, help="drift gate: max accuracy drop in points")
    parser.add_argument("--ferplus", metavar="fer2013new.csv", default=None,
                        help="FER+ votes: drift also scores the FER+ majority (manifest ferplus_*), and the tie "
                             "prior becomes the FER+ Training vote shares (for models trained on FER+)")
    parser.add_argument("--min-agreement", type=float, default=0.97, help="drift gate: min top-1 agreement")
    parser.add_argument("--seed", type=int, default=0, help="calibration sample seed")
    parser.add_argument("--no-equalize", dest="equalize", action="store_false",
                        help="skip the per-channel range equalisation before calibration")
    parser.add_argument("--bn-as-depthwise", choices=("yes", "no"), default="yes",
                        help="compute each batch norm that cannot fold into a convolution (after an Add, as in tiny's "
                             "pre-activated blocks) as a 1x1 depthwise convolution with the ReLU fused: one 8-bit "
                             "rounding instead of two (default: %(default)s)")
    parser.add_argument("--expand-separable", choices=("auto", "yes", "no"), default="auto",
                        help="compute each separable convolution as one full convolution in the int8 model: no 8-bit "
                             "rounding between its depthwise and pointwise halves (closer to float), more weights and "
                             f"MACs. auto: when the expanded graph has at most {EXPAND_MAX_WEIGHTS:,} weights (default)")


def run(args: argparse.Namespace) -> int:
    """``fer-edge convert``: exit 0 when converted, Edge-TPU-compatible and within the drift gate."""
    import keras

    from convert import drift, edgetpu
    from convert.data import load_split

    keras_path = Path(args.keras)
    if not keras_path.is_file():
        raise ModelError(f"Keras model {keras_path} not found; train one with `fer-edge train` first")
    model = keras.models.load_model(keras_path, compile=False)
    name = args.name or model.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report_dir = Path(args.report_dir or f"reports/{name}")
    report_dir.mkdir(parents=True, exist_ok=True)

    x, y = load_split(args.data, "Training")
    calib = representative_images(x, y, args.representative, args.seed)
    print(f"converting {keras_path} ({model.count_params()} params) to int8 with {len(calib)} calibration images")
    tflite_path = out / f"{name}.tflite"
    fold_input_normalization(model, TRAIN_MEAN, TRAIN_STD, INT8_MEAN, INT8_STD)
    if args.equalize:
        x_cal = ((calib.astype(np.float32) - INT8_MEAN) / INT8_STD)[..., None]
        n_relu, n_add = equalize_relu_channels(model, x_cal), equalize_residual_channels(model, x_cal)
        print(f"equalized channel ranges: {n_relu} ReLU outputs, {n_add} residual adds")
    graph = model
    n_bn = len(standalone_batch_norms(model)) if args.bn_as_depthwise == "yes" else 0
    if n_bn:
        graph = batch_norm_as_depthwise(model)
        print(f"int8 graph: {n_bn} standalone batch norms computed as 1x1 depthwise convolutions")
    expanded = False
    if args.expand_separable != "no" and any(isinstance(l, keras.layers.SeparableConv2D) for l in model.layers):
        candidate = expand_separable(graph)
        if args.expand_separable == "yes" or candidate.count_params() <= EXPAND_MAX_WEIGHTS:
            graph, expanded = candidate, True
    if expanded:
        print(f"int8 graph: separable convolutions expanded to full convolutions ({graph.count_params():,} weights)")
    tflite_path.write_bytes(convert_to_int8(graph, calib))
    check_input_quantization(tflite_path)
    train_json = keras_path.with_name("train.json")
    info = json.loads(train_json.read_text()) if train_json.is_file() else None
    prior = [round(float(c), 6) for c in np.bincount(y, minlength=len(FER_LABELS)) / len(y)]
    if args.ferplus:
        from convert import ferplus

        votes = ferplus.load_votes(args.data, args.ferplus)["Training"]
        prior = [round(float(c), 6) for c in ferplus.distribution(votes[ferplus.trainable(votes)]).mean(0)]
    manifest = build_manifest(name, tflite_path, int(model.count_params()), info, INT8_MEAN, INT8_STD, prior)
    manifest.trained.representative_images = len(calib)  # type: ignore[attr-defined]
    note = keras_path.with_suffix(".json")  # e.g. python -m convert.batchnorm's record
    if note.is_file():
        for key, value in json.loads(note.read_text()).items():
            setattr(manifest.trained, key, value)
    rewrites = ([f"{n_bn} standalone batch norms as 1x1 depthwise convolutions"] if n_bn else []) + (
        [f"separable convolutions expanded to full convolutions ({graph.count_params()} weights in the int8 graph)"]
        if expanded else [])
    manifest.trained.int8_graph = "; ".join(rewrites) or "as trained"  # type: ignore[attr-defined]
    manifest.trained.int8_equalized = bool(args.equalize)  # type: ignore[attr-defined]
    write_manifest(manifest, tflite_path)
    print(f"wrote {tflite_path} ({tflite_path.stat().st_size / 1024:.0f} KiB) and {tflite_path.with_suffix('.json')}")

    tpu = edgetpu.edgetpu_report(tflite_path, out_dir=out)
    print(tpu.format_table())
    (report_dir / "edgetpu.md").write_text(tpu.to_markdown())
    (report_dir / "edgetpu.json").write_text(json.dumps(tpu.to_dict(), indent=2) + "\n")

    result = drift.measure_drift(keras_path, tflite_path, args.data, args.split, out_dir=report_dir, name=name,
                                 max_drop=args.max_drop, min_agreement=args.min_agreement, update_manifest=True,
                                 float_mean=TRAIN_MEAN, float_std=TRAIN_STD, ferplus=args.ferplus)
    print(result.text())
    return 0 if (tpu.ok and result.ok) else 1
