"""A local MJPEG-over-HTTP camera for tests (``multipart/x-mixed-replace``, what IP cameras serve),
read by OpenCV like a real stream. It can stop (dropping its clients) and start again on the same port."""

from __future__ import annotations

import http.server
import threading
import time

import cv2
import numpy as np

BOUNDARY = "ferframe"


def frames_from_video(path, limit: int = 60, size: tuple[int, int] | None = (320, 240)) -> list[bytes]:
    """The first ``limit`` frames of a video as JPEG bytes (optionally resized to ``size``)."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < limit:
        ok, image = cap.read()
        if not ok:
            break
        if size:
            image = cv2.resize(image, size)
        out.append(cv2.imencode(".jpg", image)[1].tobytes())
    cap.release()
    if not out:
        raise RuntimeError(f"no frames in {path}")
    return out


class MjpegServer:
    """Serves ``frames`` in a loop at ``fps`` on ``http://127.0.0.1:<port>/stream.mjpg``.

    ``port``: pick a free one first (``tests.mqtt_broker.free_port``) to test a camera that is
    absent at start: the URL is known before anything listens there.
    """

    def __init__(self, frames: list[bytes], port: int, fps: float = 10.0):
        self.frames, self.port, self.fps = frames, port, fps
        self.url = f"http://127.0.0.1:{port}/stream.mjpg"
        self.served = 0  # frames sent, all clients
        self._server: http.server.ThreadingHTTPServer | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        server = self
        self._stopped.clear()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                i = 0
                try:
                    while not server._stopped.is_set():
                        jpg = server.frames[i % len(server.frames)]
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpg)}\r\n\r\n".encode() + jpg + b"\r\n")
                        server.served += 1
                        i += 1
                        time.sleep(1.0 / server.fps)
                except OSError:
                    pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self._server = httpd
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self) -> None:
        """Stop listening and end every stream being served (the camera "drops")."""
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        time.sleep(0.3)  # handler loops notice the flag

    @property
    def running(self) -> bool:
        return self._server is not None


def blank_jpegs(n: int = 3) -> list[bytes]:
    """A few small gray JPEG frames (no faces)."""
    return [cv2.imencode(".jpg", np.full((120, 160, 3), 40 * (i + 1), np.uint8))[1].tobytes() for i in range(n)]
