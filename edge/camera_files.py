"""File sources: a video file, an image or a folder of images, and the built-in sample clip.

Read on demand (as fast as the consumer reads, or at their frame rate with ``realtime = true``); they end
with ``read() -> None``, or start over with ``loop = true``. A missing or undecodable file is a
``CameraError`` at once: unlike a camera, a file does not appear later.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from edge.errors import CameraError
from edge.frames import IMAGE_EXTS, CameraConfig, Frame, FrameSource, bgr

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


class _PacedFileSource(FrameSource):
    """Shared clock for file sources: ts = open time + n / fps, optional real-time pacing."""

    def __init__(self, cfg: CameraConfig, fps: float):
        super().__init__()
        self.cfg = cfg
        self.fps = fps if fps and fps > 0 else cfg.fps
        self._t0 = time.time()
        self._n = 0

    def _stamp(self, image: np.ndarray) -> Frame:
        ts = self._t0 + self._n / self.fps
        if self.cfg.realtime is True:  # "auto" left unresolved (no Config around it): as fast as read
            delay = ts - time.time()
            if delay > 0:
                time.sleep(delay)
        frame = Frame(self._n, ts, image)
        self._n += 1
        self._saw_frame()
        return frame


class VideoFileSource(_PacedFileSource):
    """A video file decoded by OpenCV, frame by frame as the consumer reads."""

    name = "video"

    def __init__(self, cfg: CameraConfig, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CameraError(f"video file {self.path} not found: check [camera] source (or --source)")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot decode video file {self.path}: not a video, or a codec this OpenCV lacks (convert it to H.264 MP4)")
        self._cap = cap
        super().__init__(cfg, cap.get(cv2.CAP_PROP_FPS))

    def read(self, timeout: float | None = None) -> Frame | None:
        """Next frame of the file; None at the end (unless ``loop``)."""
        if self.ended:
            return None
        ok, image = self._cap.read()
        if not ok and self.cfg.loop and self._n > 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
        if not ok:
            self.close()
            return None
        return self._stamp(bgr(image))

    def close(self) -> None:
        super().close()
        self._cap.release()


def list_images(path: str | Path) -> list[Path]:
    """Image files of a folder (sorted by name, not recursive), or ``[path]`` for one image file."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
    return [p]


class ImageSource(_PacedFileSource):
    """An image file or a folder of images (sorted by name), one frame each at ``fps``.

    Without ``loop`` the pictures are stills: each is returned ``repeat`` times in a row (the
    daemon sets it to the tracker's ``min_hits``, so that a face in a single photo is reported).
    """

    name = "images"

    def __init__(self, cfg: CameraConfig, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise CameraError(f"image path {self.path} not found: check [camera] source (or --source)")
        self.files = list_images(self.path)
        if not self.files:
            raise CameraError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in folder {self.path}: check [camera] source")
        super().__init__(cfg, cfg.fps)
        self.still = not cfg.loop
        self.repeat = 1
        self._next = 0
        self._held: tuple[np.ndarray, int] | None = None  # (image, times still to show)
        self.skipped: list[Path] = []  # files that could not be decoded

    def read(self, timeout: float | None = None) -> Frame | None:
        """Next decodable image (or the same still again); None after the last one (unless ``loop``)."""
        if self._held is not None and not self.ended:
            image, left = self._held
            self._held = (image, left - 1) if left > 1 else None
            return self._stamp(image.copy())
        failures = 0
        while not self.ended:
            if self._next >= len(self.files):
                if not self.cfg.loop or failures >= len(self.files):
                    self.close()
                    return None
                self._next = 0
            f = self.files[self._next]
            self._next += 1
            image = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if image is None:
                failures += 1
                if f not in self.skipped:
                    self.skipped.append(f)
                    log.warning("skipping %s: not a readable image", f)
                continue
            image = bgr(image)
            if self.repeat > 1:
                self._held = (image, self.repeat - 1)
            return self._stamp(image)
        return None


def sample_video_path() -> Path:
    """The built-in sample clip (``edge/samples/sample.mp4``, regenerate with make_sample.py)."""
    path = SAMPLES_DIR / "sample.mp4"
    if not path.is_file():
        raise CameraError(f"built-in sample clip {path} is missing: reinstall fer-edge, or set [camera] source")
    return path


def open_sample(cfg: CameraConfig) -> FrameSource:
    """The sample clip as a video file source."""
    src = VideoFileSource(cfg, sample_video_path())
    src.name = "sample"
    return src
