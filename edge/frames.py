"""What every frame source shares: the ``[camera]`` config, ``Frame``, the ``FrameSource`` base class.

Sources live in ``edge.camera_files`` (video files, images, the sample clip) and ``edge.camera_live``
(cameras and streams with their reconnect logic); ``edge.camera`` picks one for a ``source`` value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


class CameraConfig(BaseModel):
    """``[camera]`` config section."""

    model_config = ConfigDict(extra="forbid")
    # "sample" | "picamera2" | 0 (USB camera index) | "/path/video.mp4" | "rtsp://..." | "/dir/or/image.jpg"
    source: str | int = "sample"
    width: int = Field(640, ge=16)  # requested capture size (cameras only; files keep theirs)
    height: int = Field(480, ge=16)
    fps: float = Field(15.0, gt=0)  # requested camera rate; frame rate of image folders
    loop: bool = False  # files and image folders start over at the end instead of ending
    reconnect_max_s: float = Field(30.0, gt=0)  # cap of the exponential reconnect backoff
    # Files at their frame rate like a camera (true), or as fast as read (false). "auto": paced when the
    # config publishes to a broker (edge.config resolves it); a CameraConfig on its own reads as fast as it can.
    realtime: bool | Literal["auto"] = "auto"


@dataclass
class Frame:
    """One captured frame."""

    index: int  # 0, 1, 2... in capture order (keeps counting across loops and reconnects)
    ts: float  # unix seconds (capture time; for files: open time + position in the file)
    image: np.ndarray  # BGR uint8 HxWx3


class FrameSource:
    """Base class of all sources.

    ``read(timeout)`` returns the newest frame, or ``None`` once the source has ended (files
    without ``loop``). Live sources raise ``TimeoutError`` when no frame arrives within
    ``timeout`` seconds (``None`` waits for ever) and keep reconnecting in the background.
    ``still`` sources (images without ``loop``) show each picture ``repeat`` times in a row.
    """

    name = "source"
    live = False
    still = False

    def __init__(self) -> None:
        self.dropped = 0  # frames captured but never read because the consumer was slower
        self.ended = False
        self.reconnects = 0
        self.error: str | None = None  # why no frames come (one line); None while they do
        self._last_frame_mono: float | None = None

    @property
    def connected(self) -> bool:
        """Frames can come (a file not at its end; a camera that is open)."""
        return not self.ended

    def waiting_for_camera(self) -> bool:
        """True while a live source is correctly retrying a camera that is away (not a stall)."""
        return False

    def state(self) -> dict:
        """``connected``, ``reconnects``, ``last_frame_age_s`` (None before the first frame), ``error``."""
        age = None if self._last_frame_mono is None else time.monotonic() - self._last_frame_mono
        return {"connected": self.connected, "reconnects": self.reconnects, "last_frame_age_s": age,
                "error": self.error}

    def _saw_frame(self) -> None:
        self._last_frame_mono = time.monotonic()

    def read(self, timeout: float | None = None) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file (idempotent)."""
        self.ended = True

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bgr(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGRA, 16-bit) as BGR uint8 HxWx3."""
    import cv2  # here, so that the config model above does not load OpenCV

    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1.0, float(np.iinfo(image.dtype).max)))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
