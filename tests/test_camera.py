"""Frame sources: real OpenCV decoding of real files and an HTTP stream; picamera2 only as a stand-in."""

from __future__ import annotations

import functools
import http.server
import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest

from edge.camera import (
    PICAMERA2_HELP,
    SOURCES,
    CameraConfig,
    Frame,
    LiveSource,
    open_source,
    sample_video_path,
    source_type,
)
from edge.errors import CameraError
from tests.conftest import write_test_video


def level(frame: Frame) -> int:
    return int(round(float(frame.image.mean())))


def read_all(src, limit=1000):
    out = []
    while len(out) < limit:
        f = src.read(timeout=10)
        if f is None:
            break
        out.append(f)
    return out


def test_video_file_is_decoded_in_order_and_ends(tmp_path):
    path = write_test_video(tmp_path / "clip.mp4", frames=12, fps=10.0)
    with open_source(CameraConfig(source=str(path))) as src:
        frames = read_all(src)
        assert src.read() is None  # stays ended
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(abs(level(f) - (10 * i + 5)) <= 4 for i, f in enumerate(frames))
    # File time: 0.1 s apart at 10 fps, whatever the decoding speed.
    np.testing.assert_allclose(np.diff([f.ts for f in frames]), 0.1, atol=1e-6)
    assert src.dropped == 0


def test_video_file_loops(tmp_path):
    path = write_test_video(tmp_path / "clip.avi", frames=5, fourcc="MJPG")
    with open_source(CameraConfig(source=str(path), loop=True)) as src:
        frames = [src.read() for _ in range(12)]
    assert [f.index for f in frames] == list(range(12))
    assert [abs(level(f) - (10 * (i % 5) + 5)) <= 4 for i, f in enumerate(frames)] == [True] * 12


def test_images_folder_sorted_skipping_unreadable(tmp_path):
    for name, lvl in (("b.png", 100), ("a.png", 50), ("c.jpg", 150)):
        cv2.imwrite(str(tmp_path / name), np.full((40, 60, 3), lvl, np.uint8))
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((40, 60), 200, np.uint8))  # grayscale -> BGR
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(CameraConfig(source=str(tmp_path))) as src:
        frames = read_all(src)
        assert [p.name for p in src.skipped] == ["broken.jpg"]
    assert [level(f) for f in frames] == [50, 100, 150, 200]
    assert all(f.image.shape == (40, 60, 3) for f in frames)


def test_single_image_and_loop(tmp_path):
    img = tmp_path / "one.png"
    cv2.imwrite(str(img), np.full((10, 10, 3), 77, np.uint8))
    assert source_type(str(img)) == "images"
    with open_source(CameraConfig(source=str(img))) as src:
        assert len(read_all(src)) == 1
    with open_source(CameraConfig(source=str(img), loop=True, fps=5)) as src:
        frames = [src.read() for _ in range(3)]
    assert [level(f) for f in frames] == [77, 77, 77]
    np.testing.assert_allclose(np.diff([f.ts for f in frames]), 0.2, atol=1e-6)


def test_sample_clip_plays():
    assert sample_video_path().stat().st_size < 2_000_000
    with open_source(CameraConfig()) as src:
        assert src.name == "sample"
        frames = read_all(src)
    assert len(frames) == 90
    assert frames[0].image.shape == (480, 640, 3)


@pytest.mark.parametrize(
    "source, message",
    [
        (9, "cannot open camera 9"),
        ("7", "cannot open camera 7"),
        ("/nonexistent/clip.mp4", "video file /nonexistent/clip.mp4 not found"),
        ("/nonexistent/pics/", "image path /nonexistent/pics not found"),
        ("/nonexistent/face.jpg", "image path /nonexistent/face.jpg not found"),
    ],
)
def test_missing_sources_raise_camera_error(source, message):
    with pytest.raises(CameraError) as err:
        open_source(CameraConfig(source=source))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_folder_and_undecodable_video(tmp_path):
    with pytest.raises(CameraError, match="no images"):
        open_source(CameraConfig(source=str(tmp_path)))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(CameraError, match="cannot decode video file"):
        open_source(CameraConfig(source=str(bad)))


def test_picamera2_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    with pytest.raises(CameraError) as err:
        open_source(CameraConfig(source="picamera2"))
    assert str(err.value) == PICAMERA2_HELP
    assert "sudo apt install python3-picamera2" in str(err.value)


def test_source_types():
    assert source_type("sample") == "sample"
    assert source_type("picamera2") == "picamera2"
    assert source_type(0) == source_type("0") == source_type("rtsp://cam/stream") == "opencv"
    assert source_type("/x/clip.mp4") == "opencv"
    assert set(SOURCES) == {"sample", "picamera2", "opencv", "images"}


# --------------------------------------------------------------------------- live sources


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """Serve tmp_path over HTTP on a free loopback port; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def wait_until(cond, limit_s=30.0):
    """Poll ``cond`` (a progress wait, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_stream_keeps_newest_frame_counts_drops_and_reconnects(tmp_path, http_dir):
    write_test_video(tmp_path / "stream.avi", frames=20, fourcc="MJPG")
    src = open_source(CameraConfig(source=f"{http_dir}/stream.avi", reconnect_max_s=0.2))
    try:
        assert src.live
        # The stream "ends" after 20 frames; the grabber treats that as an error and reconnects.
        assert wait_until(lambda: src.reconnects >= 1)
        frame = src.read(timeout=10)
        # Nothing was read while 20+ frames were captured: all but the newest were dropped.
        assert src.dropped >= 19
        assert src.dropped >= frame.index >= 19  # dropped can only grow after the read
        assert frame.image.shape == (120, 160, 3)
        later = src.read(timeout=10)
        assert later.index > frame.index
    finally:
        src.close()
    assert src.read() is None


class FakePicamera2:
    """Stand-in for picamera2.Picamera2 (no Pi camera can exist here): BGR frames, then one failure."""

    instances: list["FakePicamera2"] = []
    fail_after = 3
    fail_start = False

    def __init__(self):
        self.started = self.closed = False
        self.config = None
        self.n = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main, controls):
        return {"main": main, "controls": controls}

    def configure(self, config):
        self.config = config

    def start(self):
        if FakePicamera2.fail_start:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.started = True

    def capture_array(self, stream):
        assert self.started and stream == "main"
        self.n += 1
        if len(FakePicamera2.instances) == 1 and self.n > FakePicamera2.fail_after:
            raise RuntimeError("camera frontend timeout")
        time.sleep(0.01)
        w, h = self.config["main"]["size"]
        return np.full((h, w, 3), len(FakePicamera2.instances), np.uint8)

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch):
    FakePicamera2.instances = []
    FakePicamera2.fail_start = False
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    return FakePicamera2


def test_picamera2_source_reconnects_after_an_error(fake_picamera2):
    src = open_source(CameraConfig(source="picamera2", width=64, height=48, fps=30, reconnect_max_s=0.5))
    try:
        assert isinstance(src, LiveSource)
        first = src.read(timeout=10)
        assert first.image.shape == (48, 64, 3)
        cfg = fake_picamera2.instances[0].config
        assert cfg["main"]["format"] == "RGB888" and cfg["controls"]["FrameRate"] == 30.0
        # After the failure the grabber closes the camera and opens a new one.
        assert wait_until(lambda: src.reconnects >= 1)
        assert fake_picamera2.instances[0].closed
        frame = src.read(timeout=10)
        assert level(frame) == 2  # produced by the second camera object
    finally:
        src.close()
    assert fake_picamera2.instances[-1].closed


def test_picamera2_that_does_not_start_is_a_camera_error(fake_picamera2):
    fake_picamera2.fail_start = True
    with pytest.raises(CameraError, match="cannot open Raspberry Pi camera .*rpicam-hello"):
        open_source(CameraConfig(source="picamera2"))
    assert fake_picamera2.instances[0].closed


def test_a_camera_that_is_not_there_yet_is_retried_when_waiting():
    """The daemon opens with wait=True: a USB camera plugged in late is retried, not fatal."""
    src = open_source(CameraConfig(source=9, reconnect_max_s=0.5), wait=True)
    try:
        state = src.state()
        assert state["connected"] is False and "camera 9" in state["error"] and state["last_frame_age_s"] is None
        assert src.waiting_for_camera()
        with pytest.raises(TimeoutError):
            src.read(timeout=0.2)
        assert wait_until(lambda: src.waiting_for_camera())  # still retrying, not stuck
    finally:
        src.close()
    assert not src.waiting_for_camera()


def test_still_images_repeat_when_asked():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        for name, lvl in (("a.png", 50), ("b.png", 100)):
            cv2.imwrite(str(Path(d) / name), np.full((20, 20, 3), lvl, np.uint8))
        with open_source(CameraConfig(source=d)) as src:
            assert src.still
            src.repeat = 2
            assert [level(f) for f in read_all(src)] == [50, 50, 100, 100]
        with open_source(CameraConfig(source=d, loop=True)) as src:
            assert not src.still
