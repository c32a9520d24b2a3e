"""systemd notify over a real unix datagram socket, watchdog interval, stall detector, CPU temperature."""

from __future__ import annotations

import os
import socket

import pytest

from edge.health import Health, cpu_temperature_c, sd_notify, watchdog_interval_s


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A bound AF_UNIX datagram socket standing where systemd's would; yields a receive function."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))

    def received() -> list[str]:
        out = []
        sock.settimeout(0.05)
        try:
            while True:
                out.append(sock.recv(4096).decode())
        except (socket.timeout, BlockingIOError):
            return out

    yield received
    sock.close()


def test_sd_notify_to_path_and_abstract_socket(notify_socket, monkeypatch):
    assert sd_notify("READY=1") is True
    assert notify_socket() == ["READY=1"]
    name = f"fer-edge-test-{os.getpid()}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind("\0" + name)
    abstract.settimeout(2.0)
    try:
        assert sd_notify("WATCHDOG=1", f"@{name}") is True
        assert abstract.recv(100) == b"WATCHDOG=1"
    finally:
        abstract.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sd_notify("READY=1") is False  # not under systemd: a no-op


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert watchdog_interval_s() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval_s() is None  # pings meant for another process


class FakeClock:
    """A settable monotonic clock, so the stall logic is tested without sleeping."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_pings_at_half_interval_and_stop_when_stalled(notify_socket, monkeypatch, caplog):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # 2 s -> ping every 1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    clock = FakeClock()
    h = Health(stall_s=5, clock=clock)
    h.ready()
    assert notify_socket() == ["READY=1\nSTATUS=running", "WATCHDOG=1"]
    clock.t += 0.5
    assert h.tick() is False  # not due yet
    for _ in range(3):
        clock.t += 1.0
        h.frame_done()
        assert h.tick() is True
    assert notify_socket() == ["WATCHDOG=1"] * 3
    clock.t += 6.0  # no frame for longer than stall_s
    assert h.tick() is False and h.stalled
    assert "no frame processed" in caplog.text
    assert [m for m in notify_socket() if m == "WATCHDOG=1"] == []
    clock.t += 1.0
    h.frame_done()  # frames flow again: pings resume
    assert h.tick() is True and not h.stalled


def test_cpu_temperature(tmp_path):
    assert cpu_temperature_c(tmp_path / "none") is None
    zone0, zone1 = tmp_path / "thermal_zone0", tmp_path / "thermal_zone1"
    zone0.mkdir()
    zone1.mkdir()
    (zone0 / "type").write_text("acpitz\n")
    (zone0 / "temp").write_text("30000\n")
    (zone1 / "type").write_text("cpu-thermal\n")
    (zone1 / "temp").write_text("52345\n")
    assert cpu_temperature_c(tmp_path) == pytest.approx(52.345)
    (zone1 / "temp").write_text("garbage")
    assert cpu_temperature_c(tmp_path) == pytest.approx(30.0)


def test_waiting_for_a_camera_keeps_the_watchdog_fed(notify_socket, monkeypatch):
    """No frame for longer than stall_s, but the camera is away and being retried: pings go on.
    The same silence without that reason (a stuck pipeline, a hung camera) stops them."""
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    clock = FakeClock()
    h = Health(stall_s=5, clock=clock)
    h.ready()
    notify_socket()
    pings = []
    for _ in range(12):  # 12 s without a frame, waiting for the camera
        clock.t += 1.0
        h.tick(waiting=True)
        pings += notify_socket()  # read as we go: an AF_UNIX datagram queue holds only ~10
    assert not h.stalled and pings.count("WATCHDOG=1") == 12
    clock.t += 6.0  # the camera is "connected" but nothing comes: a stall
    assert h.tick(waiting=False) is False and h.stalled
    assert notify_socket() == ["STATUS=stalled: no frame for 6 s"]
