"""Run ``fer-edge bench e2e`` (see ``bench.e2e_truth``) and turn its results into tables and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.common import cache_dir, detector_options, machine, run_worker
from bench.e2e_truth import score
from convert.report import markdown_table
from edge.manifest import FER_LABELS

SAMPLE_NOTE = "built-in sample clip (2 smiling real faces per frame, 640x480)"


def _ours(video: Path, threads: int, name: str, yunet: str | None = None) -> dict:
    if name.startswith("yunet"):  # "yunet" or "yunet@0.7": the candidate at that score threshold (bench.yunet)
        if not yunet:
            from edge.errors import DataError

            raise DataError(f"pipeline {name!r} needs the YuNet model: pass --yunet face_detection_yunet_2023mar.onnx")
        score = {"score": float(name.split("@", 1)[1])} if "@" in name else {}
        return run_worker("truth_yunet", {"video": str(video), "threads": threads, "yunet": yunet, **score},
                          timeout=3600)
    det, opts = detector_options(name)  # "+noalign": aligned crops off; "+every1": the pyramid on every frame
    return run_worker("truth_ours", {"video": str(video), "threads": threads, "detector": det, **opts}, timeout=3600)


def run_e2e_truth(data: str | Path, detectors: list[str], threads: int = 1, with_fer: bool = True,
                  faces_per_size: int = 40, seed: int = 0, video_dir: str | Path | None = None,
                  yunet: str | None = None) -> dict:
    """Build (or reuse) the labelled video, run every pipeline on it and on the sample clip, score them."""
    from bench.common import progress
    from bench.e2e_video import build_truth_video
    from edge.camera import SAMPLES_DIR

    sample = SAMPLES_DIR / "sample.mp4"

    video = build_truth_video(data, video_dir or cache_dir(), faces_per_size=faces_per_size, seed=seed)
    meta = json.loads(video.with_suffix(".json").read_text())
    truth, sizes = meta["frames"], meta["sizes"]
    runs = {}
    names = list(detectors) + (["fer"] if with_fer else []) + ["ground truth"]
    for name in progress(names, desc="e2e", unit="pipeline"):
        if name == "fer":
            r = run_worker("truth_fer", {"video": str(video), "threads": threads}, timeout=3600)
            s = run_worker("truth_fer", {"video": str(sample), "threads": threads}, timeout=3600)
        elif name == "ground truth":
            r = run_worker("truth_gt", {"video": str(video), "truth": str(video.with_suffix(".json")),
                                        "threads": threads}, timeout=3600)
            s = None
        else:
            r = _ours(video, threads, name, yunet)
            s = _ours(sample, threads, name, yunet)
        res = score(truth, r.pop("frames"), sizes, r.get("margin", 0.0), r.get("lift", 0.0))
        res.update({k: v for k, v in r.items()})
        if s is not None:
            faces = [len(f) for f in s["frames"]]
            happy = [f[4] == 3 for fr in s["frames"] for f in fr]
            res["sample"] = {"faces_per_frame": float(np.mean(faces)), "happy_share": float(np.mean(happy)) if happy else None,
                             "fps": s["fps"]}
        runs[name] = res
    gt = runs["ground truth"]["faces"]
    for name, res in runs.items():  # the ceiling on the very faces each pipeline found
        for size, band in res["bands"].items():
            ids = [i for i, f in res["faces"].items() if f["size"] == size and f["pred"] is not None]
            band["ceiling"] = float(np.mean([gt[i]["pred"] == gt[i]["label"] for i in ids])) if ids else None
    align = run_worker("truth_align", {"data": str(data), "threads": threads}, timeout=3600)
    return {"video": video.name, "frames": len(truth), "faces": len(gt), "sizes": sizes, "threads": threads,
            "machine": machine(), "runs": runs, "align": align}


BAR = (70, 420)  # the face sizes the detection bar covers (issue 11)


def _overall(runs: dict, name: str) -> str:
    """Accuracy on the faces of BAR sizes that ``name`` found, and the ceiling on those same faces."""
    gt, faces = runs["ground truth"]["faces"], runs[name]["faces"]
    ids = [i for i, f in faces.items() if f["pred"] is not None and BAR[0] <= f["size"] <= BAR[1]]
    if not ids:
        return "-"
    acc = np.mean([faces[i]["pred"] == faces[i]["label"] for i in ids])
    ceil = np.mean([gt[i]["pred"] == gt[i]["label"] for i in ids])
    return f"{100 * acc:.1f} ({100 * ceil:.1f}, n={len(ids)})"


def _class_recall(res: dict, labels: list[str]) -> list:
    out = []
    for k in range(len(labels)):
        f = [v for v in res["faces"].values() if v["label"] == k and BAR[0] <= v["size"] <= BAR[1]]
        out.append(np.mean([v["pred"] == k for v in f]) if f else None)
    return out


def _align_line(align: dict | None) -> str:
    if not align:
        return ""
    parts = [f"{a} deg: {_f(r['plain'])}% plain, {_f(r['aligned'])}% aligned ({r['found']} of {r['faces']} found)"
             for a, r in align.items()]
    return ("- Aligned crops, the same detections of PrivateTest faces pasted at 200 px and rotated (default "
            "detector): " + "; ".join(parts) + ".\n")


def _int_bands(runs: dict) -> dict:
    """The runs with integer size keys (a result read back from JSON has them as strings)."""
    return {n: {**r, "bands": {int(k): v for k, v in r["bands"].items()}} for n, r in runs.items()}


def _f(v, pct=True) -> str:
    return "-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.1f}")


def format_e2e_truth(result: dict) -> str:
    """Markdown: recall / accuracy per size and pipeline, then FP, FPS, sample clip; tilted faces."""
    sizes, runs = result["sizes"], _int_bands(result["runs"])
    names = [n for n in runs if n != "ground truth"]
    head = ["pipeline"] + [f"{s} px" for s in sizes] + ["FP / empty frame", "FPS", "detect ms", "sample faces/frame"]
    rec = [[n] + [_f(runs[n]["bands"][s]["recall"]) for s in sizes]
           + [f"{runs[n]['fp_per_empty_frame']:.3f}", _f(runs[n].get("fps"), False),
              _f(runs[n].get("detect_ms"), False), f"{runs[n]['sample']['faces_per_frame']:.2f}"] for n in names]
    crop = [[n] + [_f(runs[n]["bands"][s].get("recall_crop")) for s in sizes] for n in names]
    acc = [[n] + [f"{_f(runs[n]['bands'][s]['accuracy'])} ({_f(runs[n]['bands'][s]['ceiling'])})" for s in sizes]
           + [_overall(runs, n)] for n in names + ["ground truth"]]
    labels = FER_LABELS
    per_class = [[n] + [_f(v) for v in _class_recall(runs[n], labels)] for n in names + ["ground truth"]]
    fer = runs.get("fer", {}).get("fps")
    ratio = [f"{n}: {runs[n]['fps'] / fer:.1f}x fer's FPS" for n in names if fer and n != "fer"]
    tilt = []
    for n in ("auto", "auto+noalign", "auto+align", "ground truth"):
        if n in runs:
            f = [v for v in runs[n]["faces"].values() if abs(v["angle"]) >= 10 and v["pred"] is not None]
            tilt.append(f"{n}: {100 * np.mean([v['pred'] == v['label'] for v in f]):.1f}% of {len(f)}" if f else f"{n}: -")
    stages = {n: runs[n].get("stages_ms") for n in names if runs[n].get("stages_ms")}
    return ("### End to end against ground truth\n\n"
            f"Detection recall (% of face-frames found, IoU >= {0.4} of the detector's box) by drawn face size:\n\n"
            + markdown_table(head, rec) + "\n\nThe same, IoU >= 0.4 of the square region the pipeline classifies (the "
            "box widened by the crop margin, 0.1 a side; fer: its box squared), the convention of the ground truth, a "
            "FER2013 crop whose inner face (the detector's box) fills 50-100% of its width:\n\n"
            + markdown_table(["pipeline"] + [f"{s} px" for s in sizes], crop)
            + "\n\nEnd-to-end accuracy on detected faces (majority label per face, faces matched by the region "
            "classified), "
            "with the classifier on the ground-truth boxes of the same faces in brackets (the ceiling):\n\n"
            + markdown_table(["pipeline"] + [f"{s} px" for s in sizes] + [f"all {BAR[0]}-{BAR[1]} px"], acc)
            + f"\n\nPer-class end-to-end recall, faces {BAR[0]}-{BAR[1]} px (a face counts when it was found and its "
            "majority label is right; faces never found count as wrong):\n\n"
            + markdown_table(["pipeline"] + labels, per_class) + "\n\n"
            f"- Video: `{result['video']}`, {result['frames']} frames, {result['faces']} FER2013 PrivateTest faces "
            f"pasted into 640x480 mp4 frames (see bench/e2e_video.py); {result['threads']} thread(s); {result['machine']}.\n"
            f"- Speed: {'; '.join(ratio) or 'fer not measured'}.\n"
            f"- Tilted faces in the video (|angle| >= 10 deg), e2e accuracy: {'; '.join(tilt)}.\n"
            + _align_line(result.get("align")) +
            f"- Sample clip: {SAMPLE_NOTE}; faces/frame found per pipeline in the first table.\n"
            f"- Detector stage ms per frame: " + "; ".join(
                f"{n}: " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()) for n, s in stages.items()) + "\n")


def plot_e2e_truth(result: dict, path: str | Path) -> Path:
    """Recall and accuracy against face size, one line per pipeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, runs = result["sizes"], _int_bands(result["runs"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, res in runs.items():
        style = "k--" if name == "ground truth" else "-o"
        if name != "ground truth":
            line, = axes[0].plot(sizes, [100 * res["bands"][s]["recall"] for s in sizes], style, label=name, ms=4)
            if all("recall_crop" in res["bands"][s] for s in sizes):  # the region classified: dotted, same colour
                axes[0].plot(sizes, [100 * res["bands"][s]["recall_crop"] for s in sizes], ":", color=line.get_color())
        axes[1].plot(sizes, [np.nan if res["bands"][s]["accuracy"] is None else 100 * res["bands"][s]["accuracy"]
                             for s in sizes], style, label=name, ms=4)
    for ax, title in zip(axes, ("detection recall (%; dotted: region classified)", "e2e accuracy on detected faces (%)")):
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("face size in a 640x480 frame (px)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].axhline(95, color="gray", lw=0.8)
    axes[0].axvspan(70, 420, color="gray", alpha=0.08)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
