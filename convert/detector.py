"""``fer-edge convert-detector``: BlazeFace short-range to full-integer int8, one file per input shape.

Steps: rebuild the float ``.tflite`` in Keras (``convert.blazeface_keras``) and check it computes what the file
computes on real frames (max abs difference of the regressors and logits); equalise the depthwise outputs' channel
ranges (the same function, measured again; at 192x256 it took the int8 file's mean box error on held-out frames from
3.9 to 1.3 px and its mean logit error from 0.32 to 0.21); convert it at every input shape the
``auto`` preset runs at 640x480 (the native 128x128 letterbox and window pass, and the scaled passes' shapes:
the Edge TPU compiles static shapes only) with a representative dataset of real frames; check every file for
the Edge TPU (``convert.edgetpu``); and, with ``--data``, write the drift report: recall per face size, float vs
int8 detector, on ``bench e2e``'s labelled video (``convert.detector_drift``).

Calibration frames never hold the faces the drift report scores: the sample clip (edge/samples/sample.mp4) and
frames drawn like bench e2e's (same backgrounds and sizes) from FER2013 **Training** faces; bench e2e renders
PrivateTest faces.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import convert  # noqa: F401  (ONEDNN_MAX_CPU_ISA before TensorFlow)
from edge.errors import ModelError

HELP = "convert the BlazeFace short-range face detector to full-integer int8 (one .tflite per input shape)"
DESCRIPTION = (
    "Rebuild BlazeFace short-range in Keras from the shipped float .tflite, check it matches on real frames, "
    "convert it to full-integer int8 at each input shape the auto preset uses at 640x480 (calibrated on the sample "
    "clip and on frames of FER2013 Training faces), check each file for the Edge TPU, and with --data write the "
    "drift report (recall per face size, float vs int8, on bench e2e's video). Exits 0 when the float rebuild "
    "matches and every file maps to the Edge TPU."
)

FLOAT_MODEL = "face_detection_short_range.tflite"
INT8_NAME = "face_detection_short_range_int8"
# The Keras rebuild must reproduce the file: float32 against the file's float16-weights-in-float32 graph.
MATCH_TOLERANCE = 1e-3


def auto_shapes(width: int = 640, height: int = 480) -> list[tuple[int, int] | None]:
    """Input shapes (height, width) of the auto preset's passes at that frame size; None: the native 128x128
    (letterbox, and the windows of the schedule and the second look)."""
    from edge.presets import PRESETS

    shapes = [p.shape(width, height) for p in PRESETS["auto"].passes]
    return [None] + sorted({s for s in shapes if s is not None}, reverse=True)


def sample_frames(step: int = 3) -> list[np.ndarray]:
    """Every ``step``-th frame of the built-in sample clip (BGR)."""
    import cv2

    from edge.camera import SAMPLES_DIR

    cap = cv2.VideoCapture(str(SAMPLES_DIR / "sample.mp4"))
    frames, i = [], 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        if i % step == 0:
            frames.append(image)
        i += 1
    cap.release()
    if not frames:
        raise ModelError("the sample clip edge/samples/sample.mp4 cannot be decoded: reinstall fer-edge")
    return frames


def training_frames(data: str | Path, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` 640x480 frames drawn as bench e2e draws its video (its backgrounds, face sizes and tilts, 1-4 faces
    a frame, a face-free frame in ten), from FER2013 Training faces (bench e2e uses PrivateTest)."""
    from bench.e2e_video import SIZES, _background, _backgrounds, _place, paste_face
    from convert.data import load_split

    x, _ = load_split(data, "Training")
    rng = np.random.default_rng(seed)
    photos = _backgrounds()
    frames = []
    while len(frames) < n:
        frame = _background(rng, photos)
        if rng.random() >= 0.1:
            size = int(rng.choice(SIZES))
            most = 1 if size >= 280 else 2 if size >= 200 else 3 if size >= 140 else 4
            sides = [min(int(size * rng.uniform(0.92, 1.08)), 472) for _ in range(int(rng.integers(1, most + 1)))]
            for side, (px, py) in zip(sides, _place(rng, sides) or []):
                paste_face(frame, x[int(rng.integers(len(x)))], px, py, side, float(rng.uniform(-20, 20)))
        frames.append(frame)
    return frames


def model_inputs(frames: list[np.ndarray], shape: tuple[int, int] | None) -> np.ndarray:
    """The float inputs [N, h, w, 3] in [-1, 1] that ``edge.blazeface.BlazeFaceModel`` feeds at ``shape``."""
    from edge.blazeface import BlazeFaceModel

    model = BlazeFaceModel("blazeface_short", shape=shape)
    return np.stack([model._input_tensor(f)[0].astype(np.float32) / 127.5 - 1.0 for f in frames])


def float_outputs(tflite_path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float file's (regressors [N, A, 16], logits [N, A]) for inputs ``x`` (resized to their shape)."""
    from edge.int8 import make_interpreter

    it = make_interpreter(tflite_path).interpreter
    inp = it.get_input_details()[0]["index"]
    it.resize_tensor_input(inp, [1, *x.shape[1:]])
    it.allocate_tensors()
    outs = sorted(it.get_output_details(), key=lambda d: int(d["shape"][-1]), reverse=True)
    raw, logits = [], []
    for xi in x:
        it.set_tensor(inp, xi[None])
        it.invoke()
        raw.append(it.get_tensor(outs[0]["index"])[0])
        logits.append(it.get_tensor(outs[1]["index"])[0, :, 0])
    return np.stack(raw), np.stack(logits)


def keras_match(keras_model, tflite_path: Path, x: np.ndarray) -> dict:
    """Max abs difference between the Keras rebuild and the float file on inputs ``x``: regressors (input
    pixels) and logits (the file's clipped as the rebuild clips them)."""
    from convert.blazeface_keras import LOGIT_CLIP
    from edge.blazeface import flatten_heads

    raw_f, log_f = float_outputs(tflite_path, x)
    d_raw = d_log = 0.0
    for i, xi in enumerate(x):
        raw_k, log_k = flatten_heads([np.asarray(h) for h in keras_model(xi[None], training=False)])
        d_raw = max(d_raw, float(np.abs(raw_k - raw_f[i]).max()))
        d_log = max(d_log, float(np.abs(log_k - np.clip(log_f[i], -LOGIT_CLIP, LOGIT_CLIP)).max()))
    return {"frames": len(x), "max_abs_regressor": d_raw, "max_abs_logit": d_log}


def convert_int8(keras_model, calibration: np.ndarray) -> bytes:
    """Full-integer int8 conversion (int8 input and outputs, static batch-1 shape of ``keras_model``),
    calibrated on ``calibration`` [N, h, w, 3] float inputs."""
    from convert.quantize import saved_model_to_int8

    return saved_model_to_int8(keras_model, calibration, prefix="fer-edge-detector-")


def int8_match(int8_path: Path, tflite_path: Path, frames: list[np.ndarray], shape) -> dict:
    """How far the int8 file's dequantized outputs are from the float file's on ``frames`` at ``shape`` (the file
    resized to it when its input differs):
    mean and max abs logit difference, and mean abs box regressor difference (input pixels), over the anchors the
    float model scores >= 0.5 (logit >= 0)."""
    from convert.detector_bias import int8_heads
    from edge.blazeface import flatten_heads

    x = model_inputs(frames, shape)
    raw_f, log_f = float_outputs(tflite_path, x)
    diffs, reg = [], []
    for i, heads in enumerate(int8_heads(int8_path, x)):
        raw, logits = flatten_heads(heads)
        hot = log_f[i] >= 0.0
        if hot.any():
            diffs.append(np.abs(logits[hot] - log_f[i][hot]))
            reg.append(np.abs(raw[hot, :4] - raw_f[i][hot, :4]))
    d = np.concatenate(diffs) if diffs else np.zeros(1)
    r = np.concatenate(reg).ravel() if reg else np.zeros(1)
    return {"anchors": int(len(d)), "mean_abs_logit": float(d.mean()), "max_abs_logit": float(d.max()),
            "mean_abs_box_px": float(r.mean())}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fer-edge convert-detector``."""
    parser.add_argument("--data", default=None,
                        help="FER2013 csv(.gz): calibration also on frames of Training faces, and the drift report on "
                             "bench e2e's video of PrivateTest faces (without it: the sample clip only, no drift report)")
    parser.add_argument("--out", default="edge/models", help="folder for the int8 files (default: %(default)s)")
    parser.add_argument("--report-dir", default="reports/detector_int8",
                        help="conversion and drift reports (default: %(default)s)")
    parser.add_argument("--calibration", type=int, default=300,
                        help="frames of Training faces for calibration, besides the sample clip (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration frames and of the drift video")
    parser.add_argument("--faces-per-size", type=int, default=40,
                        help="drift report: distinct faces per size in bench e2e's video (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="drift report: interpreter threads (default: %(default)s)")
    parser.add_argument("--no-equalize", dest="equalize", action="store_false",
                        help="skip the per-channel range equalisation of the depthwise outputs before calibration")
    parser.add_argument("--bias-correction", action="store_true",
                        help="shift the heads' biases so that the int8 scores have the float ones' mean near the "
                             "threshold, then convert again (convert.detector_bias; off: it trades the recall drop "
                             "for false positives, docs/detection.md)")
    parser.add_argument("--drift-split", default="PrivateTest", choices=["PrivateTest", "PublicTest"],
                        help="whose faces the drift video shows: PrivateTest (the benchmark, default) or PublicTest "
                             "(to choose settings without looking at the benchmark)")


def run(args: argparse.Namespace) -> int:
    """``fer-edge convert-detector``: exit 0 when the rebuild matches the float file and every int8 file maps to
    the Edge TPU."""
    from tqdm import tqdm

    from convert import edgetpu
    from convert.blazeface_keras import equalize_depthwise, keras_from_tflite
    from edge.blazeface import shaped_path
    from edge.manifest import MODELS_DIR

    src = MODELS_DIR / FLOAT_MODEL
    out, report_dir = Path(args.out), Path(args.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    frames = sample_frames()
    held_out = frames[1::4]  # for the match checks; the rest calibrate
    calib = [f for i, f in enumerate(frames) if i % 4 != 1]
    if args.data:
        calib += training_frames(args.data, args.calibration, args.seed)
    else:
        print("no --data: calibrating on the sample clip only, no drift report")
    report: dict = {"source": FLOAT_MODEL, "calibration_frames": len(calib), "files": {}}
    ok = True
    for shape in tqdm(auto_shapes(), desc="convert", unit="shape"):
        t0 = time.perf_counter()
        model, _ = keras_from_tflite(src, shape)
        x = model_inputs(calib, shape)
        match = keras_match(model, src, model_inputs(held_out, shape))
        if max(match["max_abs_regressor"], match["max_abs_logit"]) > MATCH_TOLERANCE:
            raise ModelError(f"the Keras rebuild of {src.name} differs from it by {match} at {shape}: "
                             "convert.blazeface_keras maps an op wrongly")
        n_eq = equalize_depthwise(model, x[::3]) if args.equalize else 0
        equalized = keras_match(model, src, model_inputs(held_out, shape))  # the float function is unchanged
        path = out / f"{INT8_NAME}.tflite"
        path = shaped_path(path, shape) if shape is not None else path
        path.write_bytes(convert_int8(model, x))
        bias = None
        if args.bias_correction:
            from convert.detector_bias import correct_head_bias

            bias = correct_head_bias(model, path, x[::2])
            path.write_bytes(convert_int8(model, x))
        tpu = edgetpu.edgetpu_report(path, out_dir=out)
        ok &= tpu.ok
        entry = {"shape": list(shape or (128, 128)), "bytes": path.stat().st_size, "keras_vs_float": match,
                 "equalized_depthwise": n_eq, "equalized_vs_float": equalized, "head_bias_correction": bias,
                 "int8_vs_float": int8_match(path, src, held_out, shape), "edgetpu_ok": tpu.ok,
                 "edgetpu_ops": f"{sum(r.count for r in tpu.ops if r.mapped)} of {sum(r.count for r in tpu.ops)}",
                 "seconds": round(time.perf_counter() - t0, 1)}
        report["files"][path.name] = entry
        tqdm.write(f"{path.name}: {entry['bytes'] / 1024:.0f} KiB; Keras vs float max |d| regressor "
                   f"{match['max_abs_regressor']:.2g} px, logit {match['max_abs_logit']:.2g}; int8 vs float "
                   f"mean |d| logit {entry['int8_vs_float']['mean_abs_logit']:.3f}, box "
                   f"{entry['int8_vs_float']['mean_abs_box_px']:.2f} px; Edge TPU: {entry['edgetpu_ops']} ops mapped")
    if args.data:
        from convert.detector_drift import detector_drift, format_drift

        report["drift"] = detector_drift(args.data, args.faces_per_size, args.seed, args.threads,
                                         int8_dir=out.resolve(), split=args.drift_split)
        text = format_drift(report["drift"])
        print(text)
        (report_dir / "drift.md").write_text(text + "\n")
    (report_dir / "convert.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {len(report['files'])} int8 files to {out} and {report_dir / 'convert.json'}")
    return 0 if ok else 1
