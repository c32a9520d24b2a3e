"""Frame sources: Raspberry Pi camera, OpenCV (USB camera, RTSP/HTTP stream, video file), image
files, and the built-in sample clip. Registry: ``SOURCES``; entry point: ``open_source``.

The sources themselves: ``edge.camera_files`` (files, ends or loops) and ``edge.camera_live``
(cameras and streams on a grabber thread, reconnecting with capped backoff); what they share:
``edge.frames``. The names are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edge.camera_files import (  # noqa: F401  (re-exported)
    SAMPLES_DIR, ImageSource, VideoFileSource, list_images, open_sample, sample_video_path,
)
from edge.camera_live import PICAMERA2_HELP, LiveSource, OpenCVLiveSource, Picamera2Source  # noqa: F401
from edge.frames import IMAGE_EXTS, CameraConfig, Frame, FrameSource  # noqa: F401

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def source_type(source: str | int) -> str:
    """Registry key for a ``[camera] source`` value."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return "opencv"
    s = source.strip()
    if s == "sample":
        return "sample"
    if s == "picamera2":
        return "picamera2"
    if s.lower().startswith(URL_SCHEMES):
        return "opencv"
    p = Path(s).expanduser()
    if p.is_dir() or s.endswith(("/", "\\")) or p.suffix.lower() in IMAGE_EXTS:
        return "images"
    return "opencv"


def open_opencv(cfg: CameraConfig, wait: bool = False) -> FrameSource:
    """Device index or URL -> live grabber; anything else -> video file."""
    src = cfg.source
    if isinstance(src, int) or src.strip().isdigit():
        return OpenCVLiveSource(cfg, int(src), wait)
    if src.strip().lower().startswith(URL_SCHEMES):
        return OpenCVLiveSource(cfg, src.strip(), wait)
    return VideoFileSource(cfg, Path(src).expanduser())


SOURCES: dict[str, Callable[..., FrameSource]] = {
    "sample": lambda cfg, wait=False: open_sample(cfg),
    "picamera2": Picamera2Source,
    "opencv": open_opencv,
    "images": lambda cfg, wait=False: ImageSource(cfg, Path(str(cfg.source)).expanduser()),
}


def open_source(cfg: CameraConfig | None = None, wait: bool = False) -> FrameSource:
    """Open the source named by ``cfg.source``; raises CameraError (one line with the fix) if it cannot.

    ``wait``: a camera or stream that is not there yet is retried in the background (the daemon)
    instead of failing; files that do not exist, and a bad config, still fail at once.
    """
    cfg = cfg or CameraConfig()
    return SOURCES[source_type(cfg.source)](cfg, wait=wait)
