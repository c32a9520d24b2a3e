"""Regenerate ``sample.mp4``, the built-in demo clip (`fer-edge run` with no config plays it).

Run from the repository root with the dev extra installed (needs scikit-image):

    python edge/samples/make_sample.py

The clip is composed from ``skimage.data.astronaut()``: NASA's portrait of astronaut Eileen
Collins (image S96-03088, public domain, a work of the US government), shown twice (once
mirrored and smaller) drifting slowly on a plain background, so it has two smiling faces that
move a little from frame to frame. MPEG-4 part 2 ("mp4v") in MP4: small, and decoded by the
FFmpeg that OpenCV's pip wheels and Debian's python3-opencv both include.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT, FPS, FRAMES = 640, 480, 15.0, 90  # 6 s, about 1.4 MB


def render_frame(astronaut_bgr: np.ndarray, i: int) -> np.ndarray:
    """Frame ``i``: gradient background, a large astronaut left, a smaller mirrored one right."""
    ramp = np.linspace(70, 150, WIDTH, dtype=np.float32)
    frame = np.repeat(np.repeat(ramp[None, :, None], HEIGHT, 0), 3, 2).astype(np.uint8)
    t = 2 * np.pi * i / FRAMES
    for scale, x0, y0, mirror, phase in ((0.75, 30, 60, False, 0.0), (0.65, 300, 130, True, 1.3)):
        side = int(512 * scale * (1.0 + 0.04 * np.sin(t + phase)))  # gentle zoom
        img = cv2.resize(astronaut_bgr, (side, side), interpolation=cv2.INTER_AREA)
        if mirror:
            img = img[:, ::-1]
        x = int(x0 + 25 * np.sin(t + phase))
        y = int(y0 + 10 * np.cos(t + phase))
        # Paste, clipped to the frame on every side.
        fx0, fy0, fx1, fy1 = max(x, 0), max(y, 0), min(x + side, WIDTH), min(y + side, HEIGHT)
        frame[fy0:fy1, fx0:fx1] = img[fy0 - y : fy1 - y, fx0 - x : fx1 - x]
    return frame


def main(out: Path = Path(__file__).resolve().parent / "sample.mp4") -> int:
    from skimage import data

    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        print(f"cannot write {out}", file=sys.stderr)
        return 1
    for i in range(FRAMES):
        writer.write(render_frame(astronaut, i))
    writer.release()
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {FRAMES} frames at {FPS:g} fps)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "sample.mp4"))
