"""``fer-edge bench attention``: the attention signals against labelled real faces (``--data`` folder).

``--data`` holds ``zju-eyeblink/`` (stills with open/closed labels, clips with per-frame blink labels and their
``zju_decode.py``) and ``aflw2000-subset/`` (images with head-pose labels); see that folder's README. Research
data: read from its path, never copied into the project. This module measures (landmarks and signals per
face, through the same functions as the device and ``analyze --attention``); ``bench.attention_score``
scores and formats. Subjects 000001-000005 are the tuning subjects, 000006-000010 are held back.
"""

from __future__ import annotations

import csv
import importlib.util
import time
from pathlib import Path

import numpy as np

from bench.attention_score import score_attention

ZJU, AFLW = "zju-eyeblink", "aflw2000-subset"
FPS = 30.0  # the ZJU clips' frame rate (frame i at i / 30 s)
MAX_YAW = 60.0  # the head-pose bar is on |yaw| <= 60 degrees


def check_data(data: str | Path) -> Path:
    """The data folder, or DataError naming what is missing."""
    from edge.errors import DataError

    root = Path(data)
    for need in (f"{ZJU}/stills/labels.csv", f"{ZJU}/frame_labels.csv", f"{ZJU}/zju_decode.py", f"{AFLW}/labels.csv"):
        if not (root / need).is_file():
            raise DataError(f"--data {data}: {need} not found; pass the attention data folder (holding {ZJU}/ and {AFLW}/)")
    return root


def subject_of(clip: str) -> str:
    """``000001M_FBN`` -> ``000001``."""
    return clip[:6]


class FaceReader:
    """Detector + landmarker + ``measure`` for one face per image (the largest), as ``analyze --attention``."""

    def __init__(self, threads: int = 1):
        from edge.attention import FaceLandmarker
        from edge.detect import DetectorConfig, create_detector

        self.detector = create_detector(DetectorConfig(threads=threads))
        self.landmarker = FaceLandmarker(threads=threads)

    def signals(self, image_bgr: np.ndarray, video: bool = False):
        """FaceSignals of the largest face, or None when no face (or no face-presence) is found."""
        from edge.attention import measure
        from edge.attention.landmarks import face_landmarks

        faces = (self.detector.detect_frame if video else self.detector.detect)(image_bgr)
        if not faces:
            return None
        face = max(faces, key=lambda f: f.box[2] * f.box[3])
        lm = face_landmarks(self.landmarker, image_bgr, face)
        if lm is None:
            return None
        return measure(lm.points, image_bgr.shape[1::-1])


def _row(subject: str, s) -> dict:
    return {"subject": subject, "ear_left": s.ear_left, "ear_right": s.ear_right, "mar": s.mar,
            "pitch": s.pitch, "yaw": s.yaw, "roll": s.roll} if s is not None else {"subject": subject, "missed": True}


def stills(root: Path, reader: FaceReader) -> list[dict]:
    """One row per ZJU still: subject, label (``open``/``closed``) and the signals."""
    import cv2

    rows = []
    for r in csv.DictReader(open(root / ZJU / "stills" / "labels.csv")):
        img = cv2.imread(str(root / ZJU / "stills" / r["file"]))
        rows.append({**_row(subject_of(r["clip"]), reader.signals(img)), "label": r["eye_state"], "file": r["file"]})
    return rows


def _decoder(root: Path):
    spec = importlib.util.spec_from_file_location("zju_decode", root / ZJU / "zju_decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def labelled_blinks(rows: list[dict]) -> list[tuple[float, float]]:
    """(start, end) seconds of each labelled blink of one clip (frames sharing a ``blink_id`` other than -1)."""
    spans: dict[str, list[int]] = {}
    for r in rows:
        if r["blink_id"] != "-1":
            spans.setdefault(r["blink_id"], []).append(int(r["frame_id"]))
    return sorted((min(f) / FPS, (max(f) + 1) / FPS) for f in spans.values())


def clips(root: Path, reader: FaceReader, limit: int | None = None) -> list[dict]:
    """Per ZJU clip: subject, labelled blinks, and per decoded frame its time and signals (or None)."""
    from bench.common import progress

    dec = _decoder(root)
    by_clip: dict[str, list[dict]] = {}
    for r in csv.DictReader(open(root / ZJU / "frame_labels.csv")):
        by_clip.setdefault(r["clip"], []).append(r)
    out = []
    for clip, rows in progress(list(by_clip.items())[:limit], desc="zju clips", unit="clip"):
        frames = dec.frames_by_packet(str(root / ZJU / "clips" / rows[0]["video_file"]))
        reader.detector.reset()
        seq = []
        for r in rows:
            k = int(r["frame_id"])
            if k < len(frames) and frames[k] is not None:
                s = reader.signals(np.ascontiguousarray(frames[k][:, :, ::-1]), video=True)  # RGB -> BGR
                seq.append((k / FPS, None if s is None else (s.ear_left, s.ear_right, s.mar, s.pitch, s.yaw, s.roll)))
        out.append({"clip": clip, "subject": subject_of(clip), "blinks": labelled_blinks(rows),
                    "seconds": len(rows) / FPS, "frames": seq})
    return out


def head_poses(root: Path, reader: FaceReader) -> list[dict]:
    """One row per AFLW2000-3D image: the labelled and the measured pitch, yaw, roll (degrees)."""
    import cv2

    rows = []
    for r in csv.DictReader(open(root / AFLW / "labels.csv")):
        s = reader.signals(cv2.imread(str(root / AFLW / r["image"])))
        truth = {k: float(r[f"{k}_deg"]) for k in ("pitch", "yaw", "roll")}
        rows.append({"image": r["image"], "truth": truth,
                     "pred": None if s is None else {"pitch": s.pitch, "yaw": s.yaw, "roll": s.roll}})
    return rows


def ms_per_face(root: Path, threads: int, runs: int = 200) -> dict:
    """Milliseconds per face on one ZJU still, median of ``runs``: one face-model run with the iris model on
    both eyes (``landmarks``), then all signals (``measure``); and the Pi estimate."""
    import cv2

    from edge.attention import FaceLandmarker, measure

    reader = FaceReader(threads)
    first = next(csv.DictReader(open(root / ZJU / "stills" / "labels.csv")))
    img = cv2.imread(str(root / ZJU / "stills" / first["file"]))
    face = max(reader.detector.detect(img), key=lambda f: f.box[2] * f.box[3])
    lm = FaceLandmarker(threads=threads)
    t_lm, t_sig = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        pts = lm.landmarks(img, face.box, face.eyes).points
        t1 = time.perf_counter()
        measure(pts, img.shape[1::-1])
        t_sig.append(time.perf_counter() - t1)
        t_lm.append(t1 - t0)
    return {"threads": threads, "landmarks_ms": float(np.median(t_lm) * 1e3), "signals_ms": float(np.median(t_sig) * 1e3),
            "pi_estimate": pi_estimate()}


def pi_estimate() -> dict:
    """ESTIMATED ms per face on a Pi 4 / Pi 5 (one thread, float32) from the models' MACs (bench.estimate): one
    face-model run and two iris-model runs (the daemon's per-frame cost when it crops from the last landmarks;
    ``analyze`` adds a second face-model run per face)."""
    from bench.estimate import estimate_latency
    from bench.macs import count_macs
    from edge.attention.landmarks import IRIS_MODEL, LANDMARK_MODEL

    total = {"pi4_1t": [0.0, 0.0], "pi5_1t": [0.0, 0.0]}
    macs = 0
    for path, runs in ((LANDMARK_MODEL, 1), (IRIS_MODEL, 2)):
        c = count_macs(path)
        est = estimate_latency(c["total"], sum(c["ops"].values()), int8=False)
        macs += runs * c["total"]
        for k in total:
            total[k] = [total[k][0] + runs * est[k][0], total[k][1] + runs * est[k][1]]
    return {"macs": macs, **total}


def run_attention(data: str | Path, threads: int = 1, limit: int | None = None) -> dict:
    """Measure everything and score it (``bench.attention_score``): the result dict of ``format_attention``."""
    from bench.common import machine

    root = check_data(data)
    reader = FaceReader(threads)
    raw = {"stills": stills(root, reader), "clips": clips(root, reader, limit), "poses": head_poses(root, reader),
           "speed": ms_per_face(root, threads)}
    return {**score_attention(raw), "machine": machine(), "raw": raw}
