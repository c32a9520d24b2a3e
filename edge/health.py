"""systemd integration without extra dependencies, a stall detector, and the CPU temperature.

``Type=notify`` units get ``READY=1`` once the pipeline runs, ``WATCHDOG=1`` pings from the main
loop at half of ``$WATCHDOG_USEC``, ``STATUS=...`` lines for ``systemctl status`` and
``STOPPING=1``. When no frame was processed for ``watchdog.stall_s`` seconds (camera unplugged,
RTSP hung, TPU wedged) the pings stop, so systemd's ``WatchdogSec`` restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

THERMAL_DIR = Path("/sys/class/thermal")


class WatchdogConfig(BaseModel):
    """``[watchdog]``: how long without a processed frame counts as a stall."""

    model_config = ConfigDict(extra="forbid")
    stall_s: float = Field(30.0, gt=0)


def sd_notify(message: str, sock_path: str | None = None) -> bool:
    """Send one datagram to ``$NOTIFY_SOCKET`` (``@name`` = abstract socket). False when not under systemd."""
    path = sock_path if sock_path is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify(%r) to %s failed: %s", message, path, exc)
        return False


def watchdog_interval_s() -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when systemd wants no pings."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (e.g. a wrapper script)
    return int(usec) / 2e6


class Health:
    """The daemon's link to systemd: call ``ready()`` once, ``frame_done()`` per frame, ``tick()`` often.

    Args:
        stall_s: stop watchdog pings after this many seconds without ``frame_done()``.
        clock: monotonic clock (tests pass their own).
    """

    def __init__(self, stall_s: float = 30.0, clock=time.monotonic):
        self.stall_s = stall_s
        self.clock = clock
        self.interval = watchdog_interval_s()
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.last_frame = clock()
        self.last_ping = float("-inf")
        self.stalled = False
        self.pings = 0

    def ready(self, status: str = "running") -> None:
        """Tell systemd that start-up is done (``Type=notify``)."""
        self.last_frame = self.clock()
        sd_notify(f"READY=1\nSTATUS={status}")
        self.tick()

    def frame_done(self) -> None:
        """Record progress: one frame went through the pipeline."""
        self.last_frame = self.clock()
        if self.stalled:
            self.stalled = False
            log.warning("frames flow again: resuming watchdog pings")

    def tick(self, waiting: bool = False) -> bool:
        """Ping the watchdog when due and the pipeline is not stalled. Returns True if it pinged.

        ``waiting``: no frame, but for a good reason (the camera is away and being retried): the
        loop is alive, so that counts as progress; a stuck loop or a camera that hangs still stalls.
        """
        now = self.clock()
        if waiting:
            self.last_frame = now
            if self.stalled:
                self.stalled = False
                log.warning("waiting for the camera, which is being retried: resuming watchdog pings")
        idle = now - self.last_frame
        if idle > self.stall_s:
            if not self.stalled:
                self.stalled = True
                log.error(
                    "no frame processed for %.0f s (watchdog.stall_s = %s): camera or accelerator stalled; "
                    "stopping watchdog pings so systemd restarts the service", idle, self.stall_s,
                )
                sd_notify(f"STATUS=stalled: no frame for {idle:.0f} s")
            return False
        if self.interval is None or now - self.last_ping < self.interval:
            return False
        self.last_ping = now
        self.pings += 1
        return sd_notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        """One line for ``systemctl status``."""
        sd_notify(f"STATUS={text}")

    def stopping(self) -> None:
        """Tell systemd that a clean stop has begun."""
        sd_notify("STOPPING=1\nSTATUS=stopping")


def cpu_temperature_c(thermal_dir: Path = THERMAL_DIR) -> float | None:
    """CPU temperature in °C from ``/sys/class/thermal`` (the cpu zone, else the first readable), or None."""
    zones = sorted(thermal_dir.glob("thermal_zone*")) if thermal_dir.is_dir() else []
    # Prefer a zone whose type names the CPU (Raspberry Pi: "cpu-thermal"; x86: "x86_pkg_temp").
    zones.sort(key=lambda z: 0 if any(k in _read(z / "type").lower() for k in ("cpu", "x86_pkg", "soc")) else 1)
    for zone in zones:
        raw = _read(zone / "temp")
        if raw.lstrip("-").isdigit():
            return int(raw) / 1000.0
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
