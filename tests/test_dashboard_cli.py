"""``fer-edge dashboard`` start-up rough edges (issue 23): a port in use and a ``--db`` into a missing folder are
one-line errors before anything is stored; the default database lives in the state directory, never the
current one. Real processes, a real mosquitto holding a retained message that must not be stored."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess

import pytest

from dashboard.config import default_db_path
from tests.daemon_run import ROOT, cli, cli_env, run_cli, wait_until
from tests.dashboard_run import Dashboard
from tests.mqtt_broker import free_port, mqtt_broker  # noqa: F401


def _retain_status(broker, device: str = "cam-1") -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="retainer")
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(f"fer/{device}/status", "online", qos=1, retain=True).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("fer-edge: error: "), (r.returncode, r.stderr)
    return lines[0]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_port_in_use_fails_at_start_before_anything_is_stored(backend, mqtt_broker, tmp_path, request):
    _retain_status(mqtt_broker)  # what a dashboard that started anyway would store at once
    db = str(tmp_path / "d.sqlite") if backend == "sqlite" else request.getfixturevalue("pg_url")
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        r = run_cli("dashboard", "--mqtt-port", str(mqtt_broker.port), "--listen", f"127.0.0.1:{port}", "--db", db,
                    timeout=60)
    finally:
        taken.close()
    line = _one_error_line(r)
    assert f"127.0.0.1:{port}" in line and "already in use" in line and "--listen" in line
    assert _tables(db) == []  # not even created: the address is checked first
    # on a free port the same database and broker work: the retained status is stored at once
    dash = Dashboard(tmp_path / "ok", mqtt_broker, db).wait_ready()
    try:
        assert wait_until(lambda: [d["device"] for d in dash.get("/api/devices")] == ["cam-1"], 20)
    finally:
        dash.stop()
    assert "devices" in _tables(db)


def _tables(db: str) -> list[str]:
    """The tables in ``db`` (SQLite file or PostgreSQL URL); [] for a SQLite file that does not exist."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as c:
            return [r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    if not os.path.exists(db):
        return []
    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def test_db_in_a_missing_folder_is_an_error_not_a_mkdir(mqtt_broker, tmp_path):
    missing = tmp_path / "typo" / "dashbaord.sqlite"
    r = run_cli("dashboard", "--mqtt-port", str(mqtt_broker.port), "--listen", f"127.0.0.1:{free_port()}",
                "--db", str(missing), timeout=60)
    line = _one_error_line(r)
    assert str(missing.parent) in line and "does not exist" in line and "mkdir -p" in line
    assert not missing.parent.exists()
    r = run_cli("dashboard", "--mqtt-port", str(mqtt_broker.port), "--listen", f"127.0.0.1:{free_port()}",
                "--db", str(tmp_path), timeout=60)
    assert "is a folder" in _one_error_line(r)


def test_default_db_follows_xdg_and_systemd_state_directories(monkeypatch, tmp_path):
    for var in ("STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / ".local" / "state" / "fer-edge" / "dashboard.sqlite"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")  # the XDG spec: only absolute paths count
    assert default_db_path() == tmp_path / "home" / ".local" / "state" / "fer-edge" / "dashboard.sqlite"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "fer-edge" / "dashboard.sqlite"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'var-lib'}:{tmp_path / 'other'}")  # systemd: first one
    assert default_db_path() == tmp_path / "var-lib" / "dashboard.sqlite"


def test_default_db_is_created_under_xdg_state_home_not_the_current_directory(mqtt_broker, tmp_path):
    _retain_status(mqtt_broker, "cam-x")
    state, cwd = tmp_path / "state", tmp_path / "cwd"
    cwd.mkdir()
    port = free_port()
    env = cli_env({"XDG_STATE_HOME": str(state), "HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)})
    env.pop("STATE_DIRECTORY", None)
    err = tmp_path / "dash.err"
    proc = subprocess.Popen(cli("dashboard", "--mqtt-port", str(mqtt_broker.port), "--listen", f"127.0.0.1:{port}"),
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=open(err, "w"))
    db = state / "fer-edge" / "dashboard.sqlite"
    try:
        assert wait_until(lambda: db.exists() and "subscribed to" in err.read_text(), 30), err.read_text()
        assert wait_until(lambda: _devices(db) == ["cam-x"], 20)
        assert oct(db.parent.stat().st_mode & 0o777) == "0o700"
        assert list(cwd.iterdir()) == [] and not (tmp_path / "home").exists()
        assert f"db {db}" in err.read_text()  # the log says where the history is
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def _devices(db) -> list[str]:
    try:
        with sqlite3.connect(db) as c:
            return [r[0] for r in c.execute("SELECT device FROM devices")]
    except sqlite3.Error:
        return []


@pytest.mark.parametrize("listen", ["203.0.113.7:8080"])
def test_an_address_of_another_host_is_one_line(listen, tmp_path):
    token = tmp_path / "token"
    token.write_text("t\n")
    r = run_cli("dashboard", "--listen", listen, "--token-file", str(token), "--db", str(tmp_path / "d.sqlite"),
                timeout=60)
    assert "cannot listen there" in _one_error_line(r) and not (tmp_path / "d.sqlite").exists()


def test_unit_state_directory_and_ansible_name_the_default_db(monkeypatch):
    """The systemd unit's StateDirectory= (as $STATE_DIRECTORY) gives the file the Ansible role writes into
    dashboard.toml: with or without the config, the history is the same file."""
    import re

    unit = (ROOT / "systemd" / "fer-edge-dashboard.service").read_text()
    state = re.search(r"^StateDirectory=(\S+)$", unit, re.M).group(1)
    monkeypatch.setenv("STATE_DIRECTORY", f"/var/lib/{state}")
    defaults = (ROOT / "ansible" / "roles" / "dashboard" / "defaults" / "main.yml").read_text()
    ansible_db = re.search(r"^dashboard_db_path: (\S+)$", defaults, re.M).group(1)
    assert str(default_db_path()) == ansible_db == "/var/lib/fer-edge-dashboard/dashboard.sqlite"


def test_the_web_address_accepts_connections_from_the_start():
    """The socket listens before the store opens and the app is built: a browser or health check that comes
    early waits in the backlog rather than being refused (the small-fleet bench once hit that race)."""
    from dashboard.config import DashboardConfig
    from dashboard.server import listen_socket

    sock = listen_socket(DashboardConfig(listen=f"127.0.0.1:{free_port()}"))
    try:
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass
    finally:
        sock.close()
