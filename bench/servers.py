"""Throwaway servers for benchmarks and tests: a mosquitto broker and a PostgreSQL cluster on free loopback ports.

PostgreSQL refuses to run as root, so under root its cluster belongs to the ``postgres`` system user (created
by Debian's postgresql package) and ``initdb``/``pg_ctl`` run through ``runuser``. fsync is off: the data is
thrown away. Both are context managers (``with Postgres() as pg: pg.create_database()``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def dashboard_process(args: list[str], log_path: Path) -> subprocess.Popen:
    """``fer-edge dashboard ARGS`` of this checkout as a subprocess, its log (stderr) into ``log_path``."""
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.Popen([sys.executable, "-m", "fer_edge", "dashboard", *args], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; a RuntimeError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"bench dashboard: {what} within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin, else the folder of ``pg_ctl`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("pg_ctl")
    return Path(exe).parent if exe else None


class Postgres:
    """One PostgreSQL cluster under a temp folder, trust auth for user ``fer`` on 127.0.0.1:``port``."""

    def __init__(self, workdir: Path | None = None):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (`apt-get install postgresql`, or `make setup-dev`)")
        self.root = os.geteuid() == 0
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fer-pg-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data = self.workdir / "data"
        self.port = free_port()
        self.user = "fer"
        self.log = self.workdir / "postgres.log"
        if self.root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.workdir)

    def start(self) -> "Postgres":
        r = self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-sync")
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr[-2000:]}")
        return self._start()

    def restart(self) -> None:
        """Stop the server (dropping every connection) and start it again on the same port, data kept
        (a fast, clean shutdown: with fsync off an immediate one would lose the last commits)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        self._start()

    def _start(self) -> "Postgres":
        opts = (f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        r = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60", "start")
        if r.returncode:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr[-2000:]} {tail}")
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Postgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Broker:
    """mosquitto on 127.0.0.1:``port``, anonymous, no persistence, large queues (a benchmark broker)."""

    def __init__(self, workdir: Path | None = None):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            raise RuntimeError("mosquitto is not installed (`apt-get install mosquitto`)")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fer-mqtt-"))
        self.host, self.port = "127.0.0.1", free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
                        "max_inflight_messages 1000\n" + ("user root\n" if os.geteuid() == 0 else ""))
        self.argv = [exe, "-c", str(conf)]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Broker":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)
