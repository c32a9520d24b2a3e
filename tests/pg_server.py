"""A real PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` from Debian's postgresql package, in a temp dir.

PostgreSQL refuses to run as root, so under root the cluster belongs to the ``postgres`` system user (created
by the package) and its commands run through ``runuser``. Listens on 127.0.0.1 on a free port, trust auth,
fsync off (a throwaway cluster). Use the session fixture ``pg_server`` and ``pg_url`` (a fresh database per test).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.mqtt_broker import free_port


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("pg_ctl")
    return Path(exe).parent if exe else None


class PostgresServer:
    def __init__(self, workdir: Path | None = None):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (`apt-get install postgresql`, or `make setup-dev`)")
        self.root = os.geteuid() == 0
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fer-pg-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self.user = "fer"
        if self.root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        self.log = self.workdir / "postgres.log"

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.workdir)

    def start(self) -> "PostgresServer":
        r = self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-sync")
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr[-2000:]}")
        opts = (f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        r = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60", "start")
        if r.returncode:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr[-2000:]} {self.log.read_text()[-2000:] if self.log.exists() else ''}")
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str | None = None) -> str:
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_or_reason() -> tuple[PostgresServer | None, str]:
    try:
        return PostgresServer().start(), ""
    except (RuntimeError, OSError, KeyError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)


@pytest.fixture(scope="session")
def pg_server():
    server, why = start_or_reason()
    if server is None:
        pytest.skip(f"PostgreSQL server could not start: {why}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    t0 = time.monotonic()
    url = pg_server.create_database()
    assert time.monotonic() - t0 < 30
    return url
