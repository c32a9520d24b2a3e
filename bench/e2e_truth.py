"""``fer-edge bench e2e``: detection and expression end to end, against ground truth.

On a labelled video (``bench.e2e_video``) each pipeline runs in a fresh process, frame by frame:
fer-edge with each detector preset (detect -> crop -> int8 classifier), the ``fer`` package
(``FER(mtcnn=False).detect_emotions``: Haar + its model), and the classifier on the ground-truth boxes
(the ceiling). Per nominal face size: detection recall (face-frames found, IoU >= 0.4, of the detector's box
and of the square region the pipeline classifies, FER2013's convention), end-to-end accuracy on detected faces
(majority label per face over the frames it was found in), the ceiling's accuracy on the same faces, false
positives per face-free frame, and FPS over the whole video.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import maxrss_kib

MATCH_IOU = 0.4


def _iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def truth_ours_worker(video: str, threads: int, detector: str, align: bool | None = None, model: str | None = None,
                      full_every: int | None = None, precision: str | None = None,
                      model_dir: str | None = None) -> dict:
    """fer-edge on ``video`` as a video stream (``detect_frame``: the preset's schedule): per frame the found
    boxes and labels; FPS over decode + detect + classify. ``full_every``: override the schedule; ``precision``:
    the detector's (int8 or float), on the CPU; ``model_dir``: BlazeFace files from there (a fresh conversion)."""
    import cv2

    from edge.classify import ExpressionClassifier, ModelConfig
    from edge.detect import BlazeFaceDetector, DetectorConfig, create_detector

    cv2.setNumThreads(threads)
    opts = {k: v for k, v in (("align", align), ("full_every", full_every), ("precision", precision)) if v is not None}
    cfg = DetectorConfig(type=detector, threads=threads, accelerator="cpu", **opts)
    det = BlazeFaceDetector(cfg, Path(model_dir)) if model_dir else create_detector(cfg)
    clf = ExpressionClassifier(ModelConfig(path=model, accelerator="cpu", threads=threads))
    cap = cv2.VideoCapture(video)
    frames, stages, det_s = [], Counter(), 0.0
    t0 = time.perf_counter()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        t1 = time.perf_counter()
        faces = det.detect_frame(image)
        det_s += time.perf_counter() - t1
        stages.update(det.timings_ms)
        labels = clf.classify_faces(faces).argmax(axis=1) if faces else []
        frames.append([[*map(int, f.box), int(lab)] for f, lab in zip(faces, labels)])
    dt = time.perf_counter() - t0
    cap.release()
    n = max(len(frames), 1)
    return {"frames": frames, "fps": len(frames) / dt, "detect_ms": 1000 * det_s / n,
            "stages_ms": {k: v / n for k, v in stages.items()}, "detector": det.describe(), **det.schedule_stats(),
            "margin": det.cfg.margin, "lift": det.lift,
            "threads": threads, "maxrss_kib": maxrss_kib()}


def truth_fer_worker(video: str, threads: int) -> dict:
    """The ``fer`` package on ``video`` (its Haar detector and its model), per frame boxes and labels."""
    import cv2

    from bench.reference import fer_detector
    from edge.manifest import FER_LABELS

    detector = fer_detector(threads)
    cap = cv2.VideoCapture(video)
    frames = []
    t0 = time.perf_counter()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        found = detector.detect_emotions(image)
        frames.append([[*map(int, f["box"]), FER_LABELS.index(max(f["emotions"], key=f["emotions"].get))]
                       for f in found])
    dt = time.perf_counter() - t0
    cap.release()
    return {"frames": frames, "fps": len(frames) / dt, "detector": "fer (Haar, FER(mtcnn=False))",
            "threads": threads, "maxrss_kib": maxrss_kib()}


def truth_gt_worker(video: str, truth: str, threads: int, model: str | None = None) -> dict:
    """The classifier on the ground-truth boxes (the ceiling): per frame, per true face, its label."""
    import cv2

    from edge.classify import ExpressionClassifier, ModelConfig
    from edge.detect import crop_face

    meta = json.loads(Path(truth).read_text())["frames"]
    clf = ExpressionClassifier(ModelConfig(path=model, accelerator="cpu", threads=threads))
    cap = cv2.VideoCapture(video)
    frames = []
    for gt in meta:
        ok, image = cap.read()
        if not ok:
            break
        crops = [crop_face(image, tuple(f["box"]), 0.0) for f in gt]
        labels = clf.classify_batch(crops).argmax(axis=1) if crops else []
        frames.append([[*f["box"], int(lab)] for f, lab in zip(gt, labels)])
    cap.release()
    return {"frames": frames, "fps": None, "detector": "ground-truth boxes", "threads": threads}


def crop_region(box, margin: float, lift: float = 0.0) -> tuple[float, float, float, float]:
    """The square a pipeline classifies for a detector box (x, y, w, h): ``max(w, h)`` widened by ``margin`` on
    each side, about the box centre raised by ``lift`` x its height (``edge.detect.crop_face``, unaligned). The
    ground truth is a FER2013 crop, so this is the same convention; the detector's own box is the inner face,
    whose share of a FER2013 crop varies."""
    x, y, w, h = box[:4]
    side = max(w, h) * (1.0 + 2.0 * margin)
    return (x + w / 2 - side / 2, y + h / 2 - lift * h - side / 2, side, side)


def _match(gt: list[dict], boxes: list) -> list[int | None]:
    """Greedy one-to-one match, in ground-truth order: each true face takes the free box of the best IoU >= MATCH_IOU."""
    free, out = list(range(len(boxes))), []
    for f in gt:
        best, j_best = MATCH_IOU, None
        for j in free:
            v = _iou(f["box"], boxes[j])
            if v >= best:
                best, j_best = v, j
        if j_best is not None:
            free.remove(j_best)
        out.append(j_best)
    return out


def score(truth: list[list[dict]], frames: list[list[list[int]]], sizes: list[int], margin: float = 0.0,
          lift: float = 0.0) -> dict:
    """Per nominal size: recall, e2e accuracy on detected faces, and the per-face majority labels.

    Recall twice: ``recall``, the detector's box against the true box (IoU >= MATCH_IOU), and ``recall_crop``,
    the region the pipeline classifies (``crop_region`` with ``margin`` and ``lift``) against it. A face's votes (its
    majority label, the accuracy) come from the crop matches: that region is what the classifier saw.
    Returns {"bands": {size: {...}}, "fp_per_empty_frame", "faces": {id: {"label", "size", "pred"}}}.
    """
    seen: dict[int, dict] = {}
    fp_empty = empty = 0
    for gt, dets in zip(truth, frames):
        if not gt:
            empty += 1
            fp_empty += len(dets)
            continue
        inner = _match(gt, [d[:4] for d in dets])
        crop = _match(gt, [crop_region(d, margin, lift) for d in dets])
        for f, j_in, j_crop in zip(gt, inner, crop):
            rec = seen.setdefault(f["id"], {"label": f["label"], "size": f["size"], "angle": f["angle"],
                                            "shown": 0, "found": 0, "found_crop": 0, "votes": Counter()})
            rec["shown"] += 1
            rec["found"] += j_in is not None
            if j_crop is not None:
                rec["found_crop"] += 1
                rec["votes"][dets[j_crop][4]] += 1
    for rec in seen.values():
        # Majority label; ties go to the label seen first among the most common.
        rec["pred"] = rec["votes"].most_common(1)[0][0] if rec["votes"] else None
    bands = {}
    for size in sizes:
        recs = [r for r in seen.values() if r["size"] == size]
        if not recs:
            continue
        shown = sum(r["shown"] for r in recs)
        found = [r for r in recs if r["pred"] is not None]
        bands[size] = {"faces": len(recs), "recall": sum(r["found"] for r in recs) / shown,
                       "recall_crop": sum(r["found_crop"] for r in recs) / shown,
                       "accuracy": (np.mean([r["pred"] == r["label"] for r in found]) if found else None)}
    return {"bands": bands, "fp_per_empty_frame": fp_empty / max(empty, 1), "empty_frames": empty,
            "faces": {i: {"label": r["label"], "size": r["size"], "angle": r["angle"], "pred": r["pred"]}
                      for i, r in seen.items()}}


def truth_align_worker(data: str, n: int = 400, side: int = 200, angles: tuple[int, ...] = (-20, 0, 20),
                       threads: int = 1, seed: int = 1) -> dict:
    """Aligned vs plain crops: ``n`` PrivateTest faces pasted at ``side`` px into a gray 640x480 frame,
    rotated by each of ``angles``; the default detector finds them, the classifier labels the plain and
    the aligned crop of the same detection. Returns per angle: faces found, accuracy plain / aligned."""
    import cv2

    from bench.e2e_video import paste_face
    from convert.data import load_split
    from edge.classify import ExpressionClassifier, ModelConfig
    from edge.detect import DetectorConfig, Face, create_detector, face_views

    cv2.setNumThreads(threads)
    x, y = load_split(data, "PrivateTest")
    pick = np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False)
    det = create_detector(DetectorConfig(threads=threads, align=False))
    clf = ExpressionClassifier(ModelConfig(accelerator="cpu", threads=threads))
    out = {}
    for angle in angles:
        plain, aligned, labels = [], [], []
        for i in pick:
            frame = np.full((480, 640, 3), 110, np.uint8)
            px, py = (640 - side) // 2, (480 - side) // 2
            paste_face(frame, x[i], px, py, side, float(angle))
            faces = [f for f in det.detect(frame) if _iou(f.box, (px, py, side, side)) >= MATCH_IOU]
            if not faces:
                continue
            f = faces[0]
            plain.append(f)
            crop, upright = face_views(frame, f.box, det.cfg.margin, f.eyes, det.lift)
            aligned.append(Face(f.box, f.score, crop, f.eyes, upright))  # what the detector with align gives
            labels.append(int(y[i]))
        labels = np.asarray(labels)
        acc = [float((clf.classify_faces(c).argmax(axis=1) == labels).mean()) if len(c) else None for c in (plain, aligned)]
        out[str(angle)] = {"faces": len(pick), "found": len(labels), "plain": acc[0], "aligned": acc[1]}
    return out
