"""A real-frame driver clip for the attention tests: skimage's astronaut (NASA, public domain) looking ahead, her
eyes shut for 2 s (the lids' band cut out: real pixels, moved), then her head turned away for 4.5 s (the frame
warped as the face plane seen turned by 70 degrees about the vertical: too far for the detector, as a real
over-the-shoulder look is), then ahead again."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FPS = 15.0
# (segment, seconds): what the clip shows, in order
SEGMENTS = (("ahead", 3.0), ("eyes_shut", 2.0), ("ahead", 3.0), ("turned_away", 4.5), ("ahead", 2.5))


def turned(image: np.ndarray, centre_x: float, degrees: float, focal: float = 600.0) -> np.ndarray:
    """``image`` as a plane turned by ``degrees`` about the vertical line x = ``centre_x``, pinhole camera."""
    import cv2

    h, w = image.shape[:2]
    a = np.deg2rad(degrees)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = []
    for u, v in src:
        x, z = (u - centre_x) * np.cos(a), (u - centre_x) * np.sin(a)
        dst.append([centre_x + focal * x / (focal + z), h / 2 + focal * (v - h / 2) / (focal + z)])
    m = cv2.getPerspectiveTransform(src, np.float32(dst))
    return cv2.warpPerspective(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def make_driver_clip(path: Path, astronaut_bgr: np.ndarray, shut_bgr: np.ndarray, face_box) -> tuple[Path, dict]:
    """Write the clip (MJPG .avi) and return it with the start/end seconds of each segment."""
    import cv2

    x, _, w, _ = face_box
    frames = {"ahead": astronaut_bgr, "eyes_shut": shut_bgr, "turned_away": turned(astronaut_bgr, x + w / 2, 70.0)}
    h, w_img = astronaut_bgr.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (w_img, h))
    times, t = {}, 0.0
    for name, seconds in SEGMENTS:
        n = int(round(seconds * FPS))
        times.setdefault(name, []).append((t, t + n / FPS))
        for _ in range(n):
            writer.write(frames[name])
        t += n / FPS
    writer.release()
    return path, times
