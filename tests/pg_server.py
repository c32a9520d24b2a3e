"""A real PostgreSQL server for tests (``bench.servers.Postgres``: initdb + pg_ctl from Debian's postgresql).

Fixtures: ``pg_server`` (one cluster per session; skipped with the reason only when it truly cannot start),
``pg_url`` (a fresh database per test) and ``db_url`` (each test twice: a SQLite file, then a PostgreSQL database).
"""

from __future__ import annotations

import subprocess

import pytest

from bench.servers import Postgres


@pytest.fixture(scope="session")
def pg_server():
    try:
        server = Postgres().start()
    except (RuntimeError, OSError, KeyError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"PostgreSQL server could not start: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "dash.sqlite")
    return request.getfixturevalue("pg_url")
