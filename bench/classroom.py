"""``fer-edge bench classroom``: many small faces in 1280x720 frames, BlazeFace presets (float and int8) against
YuNet (``--yunet``): recall per face size, false positives per frame, ms per frame, each detector on the same
frames in one process (single images: no video schedule).

Frames: FER2013 PrivateTest faces (as bench e2e: never trained on) pasted at 28-64 px, 16 a frame on a jittered
grid, tilted +-10 degrees, over bench e2e's backgrounds scaled to 1280x720.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from convert.report import markdown_table

SIZE = (1280, 720)
FACES = 16
BANDS = ((28, 40), (40, 52), (52, 65))  # face side, px: [lo, hi)


def classroom_frames(data: str | Path, n: int = 30, seed: int = 0) -> list[tuple[np.ndarray, list[tuple]]]:
    """``n`` frames and their true boxes (x, y, side, side)."""
    import cv2

    from bench.e2e_video import _backgrounds, paste_face
    from convert.data import load_split

    x, _ = load_split(data, "PrivateTest")
    rng = np.random.default_rng(seed)
    photos = [cv2.resize(p, SIZE, interpolation=cv2.INTER_LINEAR) for p in _backgrounds()]
    cells = [(cx, cy) for cy in range(4) for cx in range(8)]  # 160x180 cells
    out = []
    for _ in range(n):
        frame = photos[int(rng.integers(len(photos)))].copy()
        truth = []
        for k in rng.permutation(len(cells))[:FACES]:
            side = int(rng.integers(BANDS[0][0], BANDS[-1][1]))
            cx, cy = cells[k]
            px = cx * 160 + int(rng.integers(0, 160 - side))
            py = cy * 180 + int(rng.integers(0, 180 - side))
            paste_face(frame, x[int(rng.integers(len(x)))], px, py, side, float(rng.uniform(-10, 10)))
            truth.append((px, py, side, side))
        out.append((frame, truth))
    return out


def _detectors(yunet: str | None, threads: int) -> dict:
    from edge.detect import DetectorConfig, create_detector

    dets = {}
    for name, cfg in (("auto", {}), ("auto int8", {"precision": "int8"}), ("classroom", {"type": "classroom"}),
                      ("classroom int8", {"type": "classroom", "precision": "int8"})):
        det = create_detector(DetectorConfig(threads=threads, accelerator="cpu", **cfg))
        dets[name] = lambda f, d=det: [face.box for face in d.detect(f)]
    if yunet:
        from bench.yunet import create_yunet, yunet_faces

        for score in (0.9, 0.7):
            yn = create_yunet(yunet, score, threads)
            dets[f"YuNet {score:g}"] = lambda f, y=yn: yunet_faces(y, f)[0]
    return dets


def run_classroom(data: str | Path, yunet: str | None = None, n: int = 30, seed: int = 0, threads: int = 1) -> dict:
    """Every detector on the same frames: recall per band, false positives per frame, median ms per frame."""
    import cv2

    from bench.common import machine, progress
    from bench.e2e_truth import MATCH_IOU, _iou

    cv2.setNumThreads(threads)
    frames = classroom_frames(data, n, seed)
    rows = {}
    for name, detect in progress(list(_detectors(yunet, threads).items()), desc="classroom", unit="detector"):
        found = {b: [0, 0] for b in BANDS}
        fp, ms = 0, []
        for frame, truth in frames:
            t0 = time.perf_counter()
            boxes = detect(frame)
            ms.append(1000 * (time.perf_counter() - t0))
            used = set()
            for t in truth:
                band = next(b for b in BANDS if b[0] <= t[2] < b[1])
                found[band][1] += 1
                best = max(((j, _iou(t, b)) for j, b in enumerate(boxes) if j not in used), key=lambda v: v[1],
                           default=(None, 0.0))
                if best[1] >= MATCH_IOU:
                    used.add(best[0])
                    found[band][0] += 1
            fp += len(boxes) - len(used)
        rows[name] = {"recall": {f"{lo}-{hi - 1}": f / t for (lo, hi), (f, t) in found.items()},
                      "fp_per_frame": fp / len(frames), "ms": float(np.median(ms))}
    return {"frames": n, "faces_per_frame": FACES, "size": list(SIZE), "seed": seed, "threads": threads,
            "machine": machine(), "rows": rows}


def format_classroom(res: dict) -> str:
    bands = list(next(iter(res["rows"].values()))["recall"])
    rows = [[n] + [f"{100 * r['recall'][b]:.1f}" for b in bands] + [f"{r['fp_per_frame']:.2f}", f"{r['ms']:.1f}"]
            for n, r in res["rows"].items()]
    w, h = res["size"]
    return "\n".join([f"### Classroom: {res['faces_per_frame']} small faces per {w}x{h} frame ({res['frames']} frames, "
                      f"seed {res['seed']}, {res['threads']} thread(s))", "",
                      markdown_table(["detector"] + [f"recall {b} px" for b in bands] + ["FP / frame", "ms / frame"],
                                     rows), "",
                      f"- {res['machine']}; single images (no video schedule), every detector on the same frames in "
                      "one process."])
