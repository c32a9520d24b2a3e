"""The int8 detector's drift report: recall per face size and false positives, float vs int8 BlazeFace (the
``auto`` preset, the same schedule), on ``bench e2e``'s labelled video of FER2013 PrivateTest faces.

Each detector runs in its own process (``bench.common.run_worker``, as bench e2e does), on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from convert.report import markdown_table

# The bar (issue 22): the int8 detector's recall within this many points of the float one at every size.
MAX_RECALL_DROP = 1.0


def detector_drift(data: str | Path, faces_per_size: int = 40, seed: int = 0, threads: int = 1,
                   detector: str = "auto", int8_dir: str | Path | None = None, split: str = "PrivateTest") -> dict:
    """Run ``detector`` as float and as int8 on bench e2e's video (built or reused from the cache); per size:
    recall of the box and of the classified region; false positives per face-free frame; FPS and detect ms.
    ``int8_dir``: the folder of the int8 files to measure (default: the shipped ones). ``split``: whose faces the
    video shows (PublicTest while choosing; PrivateTest, the default, for the figures reported)."""
    import json

    from bench.common import cache_dir, run_worker
    from bench.e2e_truth import score
    from bench.e2e_video import build_truth_video

    video = build_truth_video(data, cache_dir(), faces_per_size=faces_per_size, seed=seed, split=split)
    meta = json.loads(video.with_suffix(".json").read_text())
    out = {"video": video.name, "sizes": meta["sizes"], "detector": detector, "threads": threads, "runs": {}}
    for precision in ("float", "int8"):
        where = {"model_dir": str(int8_dir)} if precision == "int8" and int8_dir else {}
        r = run_worker("truth_ours", {"video": str(video), "threads": threads, "detector": detector,
                                      "precision": precision, **where}, timeout=3600)
        s = score(meta["frames"], r.pop("frames"), meta["sizes"], r.get("margin", 0.0), r.get("lift", 0.0))
        out["runs"][precision] = {
            "recall": {str(k): b["recall"] for k, b in s["bands"].items()},
            "recall_crop": {str(k): b["recall_crop"] for k, b in s["bands"].items()},
            "fp_per_empty_frame": s["fp_per_empty_frame"], "empty_frames": s["empty_frames"],
            "fps": r["fps"], "detect_ms": r["detect_ms"], "stages_ms": r["stages_ms"], "describe": r["detector"]}
    f, q = out["runs"]["float"], out["runs"]["int8"]
    drops = [100 * (f["recall"][k] - q["recall"][k]) for k in f["recall"]]
    out["max_recall_drop"] = max(drops)
    out["ok"] = out["max_recall_drop"] <= MAX_RECALL_DROP and q["fp_per_empty_frame"] <= 0.05
    return out


def format_drift(d: dict) -> str:
    """Markdown: recall (box; classified region) per size, float vs int8, FP per face-free frame, speed."""
    sizes = [str(s) for s in d["sizes"]]
    rows = []
    for name, r in d["runs"].items():
        rows.append([f"{d['detector']} {name}"] + [f"{100 * r['recall'][s]:.1f} ({100 * r['recall_crop'][s]:.1f})"
                                                   for s in sizes]
                    + [f"{r['fp_per_empty_frame']:.3f}", f"{r['detect_ms']:.1f}", f"{r['fps']:.1f}"])
    f, q = d["runs"]["float"], d["runs"]["int8"]
    rows.append(["int8 - float, points"] + [f"{100 * (q['recall'][s] - f['recall'][s]):+.1f} "
                                            f"({100 * (q['recall_crop'][s] - f['recall_crop'][s]):+.1f})" for s in sizes]
                + ["", f"{q['detect_ms'] / f['detect_ms']:.2f}x", f"{q['fps'] / f['fps']:.2f}x"])
    head = ["detector"] + [f"{s} px" for s in sizes] + ["FP / face-free frame", "detect ms", "FPS"]
    verdict = "holds" if d["ok"] else "does not hold"
    return "\n".join([
        f"### Detector drift, float vs int8 (`{d['video']}`, {d['threads']} thread(s))", "",
        markdown_table(head, rows), "",
        f"- Recall of the detector's box (of the classified region in brackets) per nominal face size; "
        f"int8: {q['describe']}.",
        f"- Bar: recall within {MAX_RECALL_DROP:g} point of float at every size and <= 0.05 false positives per "
        f"face-free frame: {verdict} (largest drop {d['max_recall_drop']:.1f} points)."])
