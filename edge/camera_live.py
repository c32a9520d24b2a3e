"""Live sources: USB/V4L2 cameras and network streams (OpenCV), the Raspberry Pi camera (picamera2).

Each captures on a grabber thread that keeps only the newest frame, counts the frames the consumer
never saw (``dropped``) and reconnects after any error with exponential backoff (0.5 s, 1 s, 2 s...
up to ``camera.reconnect_max_s``). With ``wait=True`` (the daemon) a camera that is not there at
start is retried the same way instead of failing: a stream that comes up after boot, a USB camera
plugged in late. ``error``, ``connected`` and ``reconnects`` say how it goes (stats ``camera``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import cv2
import numpy as np

from edge.errors import CameraError
from edge.frames import CameraConfig, Frame, FrameSource, bgr, one_line

log = logging.getLogger(__name__)

PICAMERA2_HELP = (
    "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
    "and create the venv with --system-site-packages"
)
# A connect attempt that has not returned after this long (plus the backoff cap) is a hang, not a
# wait: the daemon then lets the watchdog restart it.
ATTEMPT_HANG_S = 60.0
BACKOFF_MIN_S = 0.5


class LiveSource(FrameSource):
    """A camera or stream captured on a grabber thread that keeps only the newest frame.

    Subclasses implement ``_open`` (raise on failure), ``_grab`` (a BGR image, or raise) and
    ``_release``. The first open happens in the constructor: a missing device is a CameraError
    at once, unless ``wait`` (then the grabber keeps retrying and ``error`` says why).
    """

    live = True

    def __init__(self, cfg: CameraConfig, describe: str, wait: bool = False):
        super().__init__()
        self.cfg = cfg
        self.describe = describe
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._index = 0
        self._stop = threading.Event()
        self._connected = False
        self._connects = 0
        self._attempt_mono = time.monotonic()
        try:
            self._connect()
        except CameraError:
            raise
        except Exception as exc:  # noqa: BLE001 - any backend error means "not connected"
            message = f"cannot open {self.describe} ({one_line(exc)}): {self._fix_hint()}"
            if not wait:
                raise CameraError(message) from None
            self.error = f"{self.describe}: {one_line(exc)}"
            log.warning("%s; retrying in the background (backoff up to %g s)", message, cfg.reconnect_max_s)
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

    @property
    def connected(self) -> bool:
        return self._connected and not self.ended

    def waiting_for_camera(self) -> bool:
        """Not connected, and the grabber is retrying (not stuck inside one attempt)."""
        if self.ended or self._connected or not self._thread.is_alive():
            return False
        return time.monotonic() - self._attempt_mono < self.cfg.reconnect_max_s + ATTEMPT_HANG_S

    def _connect(self) -> None:
        try:
            self._open()
            # A device that opens but yields nothing is as missing as one that does not open.
            self._publish(self._grab())
        except BaseException:
            self._safe_release()
            raise
        self._connected = True
        self._connects += 1
        self.reconnects = self._connects - 1
        self.error = None

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
            self._latest = Frame(self._index, time.time(), bgr(image))
            self._index += 1
            self._saw_frame()
            self._cond.notify_all()

    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._stop.is_set():
            try:
                if not self._connected:
                    self._attempt_mono = time.monotonic()
                    self._connect()
                    log.info("%s: %s", self.describe, "reconnected" if self._connects > 1 else "connected")
                else:
                    self._publish(self._grab())
                backoff = BACKOFF_MIN_S
            except Exception as exc:  # noqa: BLE001 - keep capturing whatever the backend throws
                if self._stop.is_set():
                    break
                self._safe_release()
                error = f"{self.describe}: {one_line(exc)}"
                # Once per cause: a camera away for an hour does not fill the journal.
                (log.debug if error == self.error else log.warning)("%s; reconnecting in %.1f s", error, backoff)
                self.error = error
                self._attempt_mono = time.monotonic()
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


class OpenCVLiveSource(LiveSource):
    """A USB/V4L2 camera (device index) or a network stream (RTSP/HTTP URL) via OpenCV."""

    name = "opencv"

    def __init__(self, cfg: CameraConfig, target: int | str, wait: bool = False):
        self.target = target
        self._cap: Any = None
        what = f"camera {target}" if isinstance(target, int) else f"stream {target}"
        super().__init__(cfg, what, wait)

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

    def __init__(self, cfg: CameraConfig, wait: bool = False):
        try:
            from picamera2 import Picamera2  # noqa: F401 - only on a Pi, imported on use
        except ImportError:
            raise CameraError(PICAMERA2_HELP) from None
        self._cam: Any = None
        super().__init__(cfg, "Raspberry Pi camera", wait)

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
