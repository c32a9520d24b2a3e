"""Frame sources: Raspberry Pi camera, OpenCV (USB camera, RTSP/HTTP stream, video file), image
files, and the built-in sample clip. Registry: ``SOURCES``; entry point: ``open_source``.

Live sources (cameras, streams) capture on a grabber thread that keeps only the newest frame,
counts the frames the consumer never saw (``dropped``) and reconnects with exponential backoff
after errors. Files are read on demand, end with ``read() -> None``, or loop with ``loop = true``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.errors import CameraError

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
PICAMERA2_HELP = (
    "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
    "and create the venv with --system-site-packages"
)


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
    realtime: bool = False  # pace files at their frame rate like a camera (default: as fast as read)


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
    """

    name = "source"
    live = False

    def __init__(self) -> None:
        self.dropped = 0  # frames captured but never read because the consumer was slower
        self.ended = False

    def read(self, timeout: float | None = None) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file (idempotent)."""
        self.ended = True

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- files


def _bgr(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGRA, 16-bit) as BGR uint8 HxWx3."""
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1.0, float(np.iinfo(image.dtype).max)))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


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
        if self.cfg.realtime:
            delay = ts - time.time()
            if delay > 0:
                time.sleep(delay)
        frame = Frame(self._n, ts, image)
        self._n += 1
        return frame


class VideoFileSource(_PacedFileSource):
    """A video file decoded by OpenCV, frame by frame as the consumer reads."""

    name = "video"

    def __init__(self, cfg: CameraConfig, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CameraError(f"video file {self.path} not found: check [camera] source")
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
        return self._stamp(_bgr(image))

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
    """An image file or a folder of images (sorted by name), one frame each at ``fps``."""

    name = "images"

    def __init__(self, cfg: CameraConfig, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise CameraError(f"image path {self.path} not found: check [camera] source")
        self.files = list_images(self.path)
        if not self.files:
            raise CameraError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in folder {self.path}: check [camera] source")
        super().__init__(cfg, cfg.fps)
        self._next = 0
        self.skipped: list[Path] = []  # files that could not be decoded

    def read(self, timeout: float | None = None) -> Frame | None:
        """Next decodable image; None after the last one (unless ``loop``)."""
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
            return self._stamp(_bgr(image))
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


# --------------------------------------------------------------------------- live sources


class LiveSource(FrameSource):
    """A camera or stream captured on a grabber thread that keeps only the newest frame.

    Subclasses implement ``_open`` (raise on failure), ``_grab`` (a BGR image, or raise) and
    ``_release``. The first open happens in the constructor so a missing device fails at once
    with CameraError; later failures reconnect with backoff 0.5 s, 1 s, 2 s... up to
    ``cfg.reconnect_max_s``.
    """

    live = True

    def __init__(self, cfg: CameraConfig, describe: str):
        super().__init__()
        self.cfg = cfg
        self.describe = describe
        self.reconnects = 0
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._index = 0
        self._stop = threading.Event()
        self._connected = False
        self._connect(first=True)
        self._thread = threading.Thread(target=self._run, name=f"grab-{self.name}", daemon=True)
        self._thread.start()

    # subclass hooks
    def _open(self) -> None:
        raise NotImplementedError

    def _grab(self) -> np.ndarray:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def _fix_hint(self) -> str:
        return "check the [camera] source"

    def _connect(self, first: bool = False) -> None:
        try:
            self._open()
            # A device that opens but yields nothing is as missing as one that does not open.
            self._publish(self._grab())
        except CameraError:
            self._safe_release()
            raise
        except Exception as exc:  # noqa: BLE001 - any backend error means "not connected"
            self._safe_release()
            if first:
                raise CameraError(f"cannot open {self.describe} ({_one_line(exc)}): {self._fix_hint()}") from None
            raise
        self._connected = True

    def _safe_release(self) -> None:
        self._connected = False
        try:
            self._release()
        except Exception:  # noqa: BLE001 - best effort on a broken device
            pass

    def _publish(self, image: np.ndarray) -> None:
        with self._cond:
            if self._latest is not None:
                self.dropped += 1  # the consumer never saw the previous one
            self._latest = Frame(self._index, time.time(), _bgr(image))
            self._index += 1
            self._cond.notify_all()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if not self._connected:
                    self._connect()
                    self.reconnects += 1
                    log.info("%s: reconnected", self.describe)
                else:
                    self._publish(self._grab())
                backoff = 0.5
            except Exception as exc:  # noqa: BLE001 - keep capturing whatever the backend throws
                if self._stop.is_set():
                    break
                self._safe_release()
                log.warning("%s: %s; reconnecting in %.1f s", self.describe, _one_line(exc), backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not read yet; waits for one. None only after close()."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self.ended:
                    return None
                if self._latest is not None:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no frame from {self.describe} for {timeout:g} s (reconnecting)")
                self._cond.wait(remaining)
            frame, self._latest = self._latest, None
            return frame

    def close(self) -> None:
        """Stop the grabber thread and release the device."""
        if self.ended:
            return
        self._stop.set()
        with self._cond:
            self.ended = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        self._safe_release()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OpenCVLiveSource(LiveSource):
    """A USB/V4L2 camera (device index) or a network stream (RTSP/HTTP URL) via OpenCV."""

    name = "opencv"

    def __init__(self, cfg: CameraConfig, target: int | str):
        self.target = target
        self._cap: Any = None
        what = f"camera {target}" if isinstance(target, int) else f"stream {target}"
        super().__init__(cfg, what)

    def _fix_hint(self) -> str:
        if isinstance(self.target, int):
            return ("check that it is plugged in (`ls /dev/video*`), that the user is in the `video` group, "
                    "or set [camera] source")
        return "check the URL, credentials and that the camera is reachable, or set [camera] source"

    def _open(self) -> None:
        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise OSError("device did not open" if isinstance(self.target, int) else "stream did not open")
        if isinstance(self.target, int):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
            cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # we want the newest frame, not a queue of old ones
        self._cap = cap

    def _grab(self) -> np.ndarray:
        ok, image = self._cap.read()
        if not ok or image is None:
            raise OSError("no frame (device unplugged or stream ended)")
        return image

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class Picamera2Source(LiveSource):
    """The Raspberry Pi camera (libcamera) through picamera2."""

    name = "picamera2"

    def __init__(self, cfg: CameraConfig):
        try:
            from picamera2 import Picamera2  # noqa: F401 - only on a Pi, imported on use
        except ImportError:
            raise CameraError(PICAMERA2_HELP) from None
        self._cam: Any = None
        super().__init__(cfg, "Raspberry Pi camera")

    def _fix_hint(self) -> str:
        return ("check the ribbon cable and `rpicam-hello --list-cameras`, that no other program uses the camera, "
                "or set [camera] source")

    def _open(self) -> None:
        from picamera2 import Picamera2

        cam = Picamera2()
        try:
            # picamera2's "RGB888" is B, G, R in memory: what OpenCV calls BGR.
            config = cam.create_video_configuration(
                main={"size": (self.cfg.width, self.cfg.height), "format": "RGB888"},
                controls={"FrameRate": float(self.cfg.fps)},
            )
            cam.configure(config)
            cam.start()
        except Exception:
            cam.close()
            raise
        self._cam = cam

    def _grab(self) -> np.ndarray:
        return self._cam.capture_array("main")

    def _release(self) -> None:
        if self._cam is not None:
            cam, self._cam = self._cam, None
            try:
                cam.stop()
            finally:
                cam.close()


# --------------------------------------------------------------------------- registry


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


def open_opencv(cfg: CameraConfig) -> FrameSource:
    """Device index or URL -> live grabber; anything else -> video file."""
    src = cfg.source
    if isinstance(src, int) or src.strip().isdigit():
        return OpenCVLiveSource(cfg, int(src))
    if src.strip().lower().startswith(URL_SCHEMES):
        return OpenCVLiveSource(cfg, src.strip())
    return VideoFileSource(cfg, Path(src).expanduser())


SOURCES: dict[str, Callable[[CameraConfig], FrameSource]] = {
    "sample": open_sample,
    "picamera2": Picamera2Source,
    "opencv": open_opencv,
    "images": lambda cfg: ImageSource(cfg, Path(str(cfg.source)).expanduser()),
}


def open_source(cfg: CameraConfig | None = None) -> FrameSource:
    """Open the source named by ``cfg.source``; raises CameraError (one line with the fix) if it cannot."""
    cfg = cfg or CameraConfig()
    return SOURCES[source_type(cfg.source)](cfg)
