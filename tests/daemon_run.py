"""Helpers to run the real daemon (``python -m fer_edge``) as a subprocess from tests."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def write_config(path: Path, sections: dict[str, dict]) -> Path:
    """Write ``{"mqtt": {"host": ...}, "mqtt.tls": {...}}`` as a TOML file."""
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args: str) -> list:
    """argv for ``python -m fer_edge <args>`` from the repo root."""
    return [sys.executable, "-m", "fer_edge", *args]


def cli_env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.update(extra or {})
    return env


def run_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``fer-edge <args>`` to completion."""
    return subprocess.run(cli(*args), cwd=ROOT, env=cli_env(env), capture_output=True, text=True, timeout=timeout)


def start_daemon(config: Path, *extra: str, env: dict | None = None, log_dir: Path | None = None) -> subprocess.Popen:
    """Start ``fer-edge run --config <config> [extra]`` in the background; stdout/stderr to files."""
    log_dir = log_dir or config.parent
    n = len(list(log_dir.glob("daemon*.err")))
    out = open(log_dir / f"daemon{n}.out", "w")
    err = open(log_dir / f"daemon{n}.err", "w")
    proc = subprocess.Popen(cli("run", "--config", str(config), *extra), cwd=ROOT, env=cli_env(env),
                            stdout=out, stderr=err, text=True)
    proc.stderr_path = log_dir / f"daemon{n}.err"  # type: ignore[attr-defined]
    return proc


def stderr_of(proc) -> str:
    return Path(proc.stderr_path).read_text()


def exit_report(stderr: str) -> dict:
    """The JSON counts the daemon logs when it stops (frames, events per topic, outbox_left)."""
    m = re.search(r"edge\.daemon: stopped \((.*?)\): (\{.*\})", stderr)
    assert m, f"no exit report in the daemon's log:\n{stderr[-3000:]}"
    return {"reason": m.group(1), **json.loads(m.group(2))}


def outbox_rows(path: Path) -> list[tuple[int, str, bytes]]:
    """(id, topic, payload) of the rows waiting in an outbox file (read by another process)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return [(r[0], r[1], bytes(r[2])) for r in db.execute("SELECT id, topic, payload FROM outbox ORDER BY id")]
    except sqlite3.OperationalError:
        return []  # table not created yet
    finally:
        db.close()


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
