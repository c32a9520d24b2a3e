"""The daemon as users run it (``fer-edge run``: decode, detect, classify, track, publish to a real mosquitto
through the SQLite outbox) at several ``[pipeline] workers`` counts, on the multi-face clip, in one run.

Each case runs in its own process; the cases alternate (1, 2, 1, 2, ...) so that load from elsewhere on a shared
machine falls on all of them alike, and the fastest run of each is kept (the least disturbed one).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from bench.common import machine, progress, run_worker
from convert.report import markdown_table


def pipeline_worker(video: str, workers: int, frames: int, host: str | None = None, port: int = 1883,
                    threads: int = 1) -> dict:
    """One daemon run: ``video`` looped for ``frames`` frames with ``workers`` workers, publishing to the broker
    at ``host:port`` (None: stdout, discarded). threads: TFLite threads per model. Returns FPS and stage ms."""
    from edge.config import validate_config
    from edge.daemon import run_daemon
    from edge.int8 import InvokeClock

    with tempfile.TemporaryDirectory(prefix="fer-bench-pipeline-") as tmp:
        cfg = validate_config({
            "device": {"id": f"bench-pipeline-{os.getpid()}"},
            "camera": {"source": video, "loop": True, "realtime": False},
            "detector": {"threads": threads}, "model": {"accelerator": "cpu", "threads": threads},
            "pipeline": {"workers": workers},
            "mqtt": {"host": host, "port": port} if host else {},
            "outbox": {"path": str(Path(tmp) / "outbox.sqlite")},
            "stats": {"interval_s": 3600}, "summary": {"interval_s": 3600},
        }, "bench pipeline")
        sink = io.StringIO()
        # The stdout publisher's events are not the result. The clock sees the models run on this thread: all of
        # them at 1 worker (the plain loop), only the in-order stage's with more.
        with contextlib.redirect_stdout(sink), InvokeClock() as clock:
            r = run_daemon(cfg, max_frames=frames)
    stats = r.last_stats or {}
    return {"workers": workers, "frames": r.frames, "seconds": r.seconds, "fps": r.fps,
            "events": r.events, "outbox_left": r.outbox_left, "latency_ms": stats.get("latency_ms", {}),
            "broker": bool(host), "model_ms_per_frame": 1000.0 * clock.seconds / max(r.frames, 1) if workers == 1 else None}


def run_pipeline(workers: list[int], frames: int = 450, repeat: int = 3, video: str | Path | None = None,
                 broker: bool = True) -> dict:
    """Daemon FPS per workers count. workers: counts to compare (the first is the baseline of the ratio).
    frames: frames per run (the clip loops). repeat: runs per count, alternating. broker: publish to a
    throwaway mosquitto (falls back to stdout, with a note, when mosquitto is not installed)."""
    from bench.e2e import VIDEO_SOURCE, default_video
    from bench.servers import Broker

    video = Path(video) if video else default_video()
    result = {"video": {"path": str(video), "source": VIDEO_SOURCE}, "frames": frames, "repeat": repeat,
              "machine": machine(), "runs": {str(w): [] for w in workers}}
    stack = contextlib.ExitStack()
    host = port = None
    if broker:
        try:
            b = stack.enter_context(Broker())
            host, port = b.host, b.port
        except RuntimeError as exc:
            result["broker_note"] = f"published to stdout instead: {exc}"
    with stack:
        order = [w for _ in range(repeat) for w in workers]
        for w in progress(order, desc="pipeline", unit="run"):
            params = {"video": str(video), "workers": w, "frames": frames}
            if host:
                params.update(host=host, port=port)
            result["runs"][str(w)].append(run_worker("pipeline", params))
    base = max(r["fps"] for r in result["runs"][str(workers[0])])
    result["rows"] = []
    for w in workers:
        runs = result["runs"][str(w)]
        best = max(runs, key=lambda r: r["fps"])
        result["rows"].append({"workers": w, "fps": best["fps"], "fps_all": [r["fps"] for r in runs],
                               "ratio": best["fps"] / base if base else 0.0, "latency_ms": best["latency_ms"],
                               "events": best["events"], "outbox_left": best["outbox_left"],
                               "model_ms_per_frame": best.get("model_ms_per_frame")})
    return result


def format_pipeline(result: dict) -> str:
    """The table (Markdown) of ``run_pipeline``'s result."""
    rows = []
    for r in result["rows"]:
        lat = r["latency_ms"]
        rows.append([r["workers"], f"{r['fps']:.1f}", " / ".join(f"{v:.1f}" for v in r["fps_all"]),
                     f"{r['ratio']:.2f}x"] + [f"{lat.get(s, 0.0):.2f}" for s in
                                              ("capture", "detect", "classify", "track", "publish")])
    where = "mosquitto on loopback" if not result.get("broker_note") else "stdout"
    return "\n".join([
        "### The daemon at 1 and more workers (`fer-edge bench pipeline`)", "",
        f"`fer-edge run` in-process on {result['video']['source']}, looped for {result['frames']} frames, publishing "
        f"to {where} through the outbox; {result['repeat']} runs per count, alternating, fastest kept. "
        f"{result['machine']}. Stage columns: mean ms per frame, each frame's own "
        "(with several workers the stages overlap, so they add up to more than 1000 / FPS).", "",
        markdown_table(["workers", "FPS", "all runs", "vs first", "capture ms", "detect ms", "classify ms",
                        "track ms", "publish ms"], rows),
        *([f"\nAt 1 worker {one['model_ms_per_frame']:.2f} of the {1000 / one['fps']:.2f} ms per frame are spent inside "
           "the models' invoke (all of them on the one thread); the rest is decoding, resizing, box decoding, NMS, "
           "crops, tracking and publishing, the part `fer-edge bench estimate` scales to the Pis."]
          if (one := result["rows"][0]).get("model_ms_per_frame") else []),
        *([f"\n{result['broker_note']}"] if result.get("broker_note") else []), ""])
