"""Labelled videos for the end-to-end benchmark (``fer-edge bench e2e``).

FER2013 PrivateTest faces (never trained on) are pasted, as the dataset's 48x48 crops upscaled to the
drawn size, into 640x480 frames over public-domain backgrounds (``skimage.data`` photos without people,
or a noisy gradient): several sizes from 40 to 450 px, random positions, tilts, up to four faces per
frame, a few pixels of drift per frame, face-free shots, and mp4 (MPEG-4 part 2) compression. The video
and its ground truth (``<name>.json``: per frame the boxes, labels and face ids) are cached, not committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZES = (40, 56, 72, 100, 140, 200, 280, 420)  # nominal face sizes (px, square side), drawn +-8%
FRAME = (640, 480)
# skimage.data images with no person in them (astronaut and camera hold faces; chelsea/cat are a cat).
BACKGROUNDS = ("coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "brick", "grass", "gravel",
               "moon", "coins", "stereo_motorcycle", "clock", "page", "text")
VIDEO_VERSION = 1


def _backgrounds() -> list[np.ndarray]:
    import cv2
    from skimage import data

    out = []
    for name in BACKGROUNDS:
        img = getattr(data, name)()
        img = img[0] if isinstance(img, tuple) else img
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
        img = img.astype(np.uint8) if img.dtype == np.uint8 else (255 * (img > 0)).astype(np.uint8)
        out.append(cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), FRAME, interpolation=cv2.INTER_AREA))
    return out


def _background(rng: np.random.Generator, photos: list[np.ndarray]) -> np.ndarray:
    w, h = FRAME
    k = int(rng.integers(0, len(photos) + 3))
    if k >= len(photos):  # a noisy horizontal gradient (a plain wall)
        a, b = rng.integers(30, 220, size=2)
        ramp = np.linspace(a, b, w)[None, :, None] * np.ones((h, 1, 3))
        return np.clip(ramp + rng.normal(0, 5, (h, w, 3)), 0, 255).astype(np.uint8)
    img = photos[k]
    return np.ascontiguousarray(img[:, ::-1] if rng.random() < 0.5 else img).copy()


def paste_face(frame: np.ndarray, face48: np.ndarray, x: int, y: int, side: int, angle: float) -> None:
    """Draw the 48x48 grayscale ``face48`` upscaled to ``side`` px with its top-left corner at (x, y),
    rotated by ``angle`` degrees about its centre (the rotated square, not a rotated frame: corners
    cover the background). In place."""
    import cv2

    face = cv2.resize(face48, (side, side), interpolation=cv2.INTER_CUBIC)
    if abs(angle) < 0.5:
        frame[y:y + side, x:x + side] = face[..., None]
        return
    big = int(np.ceil(side * np.sqrt(2))) + 2
    off = (big - side) // 2
    canvas = np.zeros((big, big), np.uint8)
    mask = np.zeros((big, big), np.uint8)
    canvas[off:off + side, off:off + side] = face
    mask[off:off + side, off:off + side] = 255
    rot = cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0)
    canvas = cv2.warpAffine(canvas, rot, (big, big), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(mask, rot, (big, big), flags=cv2.INTER_LINEAR)
    fx0, fy0 = x - off, y - off
    h, w = frame.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, fx0), max(0, fy0), min(w, fx0 + big), min(h, fy0 + big)
    c = canvas[cy0 - fy0:cy1 - fy0, cx0 - fx0:cx1 - fx0].astype(np.float32)
    m = mask[cy0 - fy0:cy1 - fy0, cx0 - fx0:cx1 - fx0].astype(np.float32)[..., None] / 255.0
    region = frame[cy0:cy1, cx0:cx1].astype(np.float32)
    frame[cy0:cy1, cx0:cx1] = np.clip(region * (1 - m) + c[..., None] * m, 0, 255).astype(np.uint8)


def _place(rng: np.random.Generator, sides: list[int], tries: int = 200) -> list[tuple[int, int]] | None:
    """Top-left corners for squares of ``sides`` inside the frame, not overlapping (10% slack)."""
    w, h = FRAME
    placed: list[tuple[int, int, int]] = []
    for side in sides:
        for _ in range(tries):
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            if all(x + side * 1.1 < px or px + ps * 1.1 < x or y + side * 1.1 < py or py + ps * 1.1 < y
                   for px, py, ps in placed):
                placed.append((x, y, side))
                break
        else:
            return None
    return [(x, y) for x, y, _ in placed]


def build_truth_video(data: str | Path, out_dir: str | Path, faces_per_size: int = 40, shot_frames: int = 5,
                      empty_shots: int = 20, max_tilt: float = 20.0, tilt_share: float = 0.5, seed: int = 0,
                      sizes: tuple[int, ...] = SIZES, fps: float = 15.0, name: str | None = None,
                      split: str = "PrivateTest") -> Path:
    """Write ``<name>.mp4`` and ``<name>.json`` (ground truth) under ``out_dir``; return the .mp4 path.

    faces_per_size: distinct faces of ``split`` per nominal size (PrivateTest, the benchmark; PublicTest for
    choices made while developing), each shown for ``shot_frames`` frames
    (one shot: 1-4 faces of one size, drifting a few pixels per frame). tilt_share of the faces are
    rotated by a uniform angle in +-max_tilt degrees, the others by +-3. empty_shots: face-free shots.
    """
    import cv2

    from convert.data import load_split

    tag = "" if split == "PrivateTest" else f"_{split.lower()}"
    name = name or f"truth_v{VIDEO_VERSION}_s{seed}_n{faces_per_size}_t{int(max_tilt)}{tag}"
    out_dir = Path(out_dir)
    mp4, meta = out_dir / f"{name}.mp4", out_dir / f"{name}.json"
    if mp4.is_file() and meta.is_file():
        return mp4
    out_dir.mkdir(parents=True, exist_ok=True)
    x, y = load_split(data, split)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    photos = _backgrounds()
    shots: list[list[dict]] = []
    nxt = 0
    for size in sizes:
        most = 1 if size >= 280 else 2 if size >= 200 else 3 if size >= 140 else 4
        left = faces_per_size
        while left > 0:
            k = int(min(left, rng.integers(1, most + 1)))
            sides = [int(round(size * rng.uniform(0.92, 1.08))) for _ in range(k)]
            sides = [min(s, FRAME[1] - 8) for s in sides]
            spots = _place(rng, sides)
            if spots is None:
                continue
            shot = []
            for side, (px, py) in zip(sides, spots):
                i = int(order[nxt])
                nxt += 1
                tilt = rng.uniform(-max_tilt, max_tilt) if rng.random() < tilt_share else rng.uniform(-3, 3)
                shot.append({"id": nxt - 1, "index": i, "label": int(y[i]), "size": size, "side": side,
                             "x": px, "y": py, "angle": round(float(tilt), 1),
                             "vx": int(rng.integers(-2, 3)), "vy": int(rng.integers(-2, 3))})
            shots.append(shot)
            left -= k
    shots += [[] for _ in range(empty_shots)]
    rng.shuffle(shots)
    tmp = mp4.with_suffix(".tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, FRAME)
    if not writer.isOpened():
        from edge.errors import CameraError

        raise CameraError(f"OpenCV cannot write {tmp} (no mp4v encoder)")
    frames = []
    w, h = FRAME
    for shot in shots:
        bg = _background(rng, photos)
        for t in range(shot_frames):
            frame = bg.copy()
            truth = []
            for f in shot:
                fx = int(np.clip(f["x"] + f["vx"] * t, 0, w - f["side"]))
                fy = int(np.clip(f["y"] + f["vy"] * t, 0, h - f["side"]))
                paste_face(frame, x[f["index"]], fx, fy, f["side"], f["angle"])
                truth.append({"id": f["id"], "box": [fx, fy, f["side"], f["side"]], "label": f["label"],
                              "size": f["size"], "angle": f["angle"]})
            writer.write(frame)
            frames.append(truth)
    writer.release()
    meta.write_text(json.dumps({"version": VIDEO_VERSION, "seed": seed, "sizes": list(sizes), "fps": fps,
                                "frame": list(FRAME), "source": f"FER2013 {split}", "frames": frames}))
    tmp.replace(mp4)
    return mp4
