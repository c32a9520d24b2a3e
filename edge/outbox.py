"""SQLite outbox: every event is written here first and deleted only after the broker's PUBACK.

A broker outage or a daemon restart (even ``kill -9``) therefore loses nothing: each ``append``
is committed before it returns (WAL journal, ``synchronous=NORMAL`` is durable across process
crashes), and the publisher re-reads the table in id order on start. The table is bounded by
``max_events`` and ``max_age_s``; when a bound is hit the OLDEST rows are dropped, logged and
counted in ``dropped`` (reported on the stats topic).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edge.errors import ConfigError

log = logging.getLogger(__name__)

# Age pruning scans an index; doing it on every append would be wasted work.
_PRUNE_EVERY_S = 10.0


class OutboxConfig(BaseModel):
    """``[outbox]``: where unacknowledged events wait, and how many/how old they may get."""

    model_config = ConfigDict(extra="forbid")
    path: str = ""  # empty: $STATE_DIRECTORY/outbox.sqlite, else ~/.local/state/fer-edge/outbox.sqlite
    max_events: int = Field(100_000, ge=1)
    max_age_s: float = Field(604_800, gt=0)


@dataclass
class OutboxRow:
    """One stored message, in the order it was appended."""

    id: int
    ts: float
    topic: str
    payload: bytes
    qos: int
    retain: bool


def default_outbox_path() -> Path:
    """``$STATE_DIRECTORY/outbox.sqlite`` under systemd (``StateDirectory=``), else ~/.local/state."""
    state = os.environ.get("STATE_DIRECTORY", "")
    if state:
        # systemd passes a colon-separated list when several StateDirectory= are set.
        return Path(state.split(":")[0]) / "outbox.sqlite"
    return Path.home() / ".local" / "state" / "fer-edge" / "outbox.sqlite"


def resolve_outbox_path(cfg: OutboxConfig) -> Path:
    """The configured path, or the default one when ``outbox.path`` is empty."""
    return Path(cfg.path).expanduser() if cfg.path else default_outbox_path()


class Outbox:
    """A durable FIFO of MQTT messages; thread safe (one connection guarded by a lock).

    Args:
        path: SQLite file; created with its parent folders.
        max_events: keep at most this many rows (oldest dropped first).
        max_age_s: drop rows older than this many seconds.
    """

    def __init__(self, path: str | Path, max_events: int = 100_000, max_age_s: float = 604_800):
        self.path = Path(path)
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.dropped = 0  # rows dropped by the bounds since this process opened the outbox
        self._lock = threading.Lock()
        self._last_prune = 0.0
        self._last_drop_log = -1e9
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, so every statement is durable when it returns.
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
                " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS outbox_ts ON outbox(ts)")
            self._depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                f"outbox.path: cannot open SQLite outbox {self.path} ({exc}); set outbox.path to a writable file"
            ) from None
        if self._depth:
            log.info("outbox %s holds %d undelivered message(s) from a previous run", self.path, self._depth)
        self._prune(time.time())

    @property
    def depth(self) -> int:
        """Number of messages waiting for a PUBACK."""
        return self._depth

    def append(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> int:
        """Store one message (committed before returning) and return its id."""
        if isinstance(payload, str):
            payload = payload.encode()
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (ts, topic, payload, qos, retain) VALUES (?, ?, ?, ?, ?)",
                (now, topic, payload, int(qos), int(bool(retain))),
            )
            self._depth += 1
            row_id = int(cur.lastrowid)
            if self._depth > self.max_events:
                self._drop_oldest_locked(self._depth - self.max_events, "max_events", self.max_events)
        if now - self._last_prune >= _PRUNE_EVERY_S:
            self._prune(now)
        return row_id

    def pending(self, after_id: int = 0, limit: int = 100) -> list[OutboxRow]:
        """Up to ``limit`` messages with id > ``after_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, ts, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [OutboxRow(r[0], r[1], r[2], bytes(r[3]), r[4], bool(r[5])) for r in rows]

    def delete(self, row_id: int) -> None:
        """Forget a message once the broker acknowledged it (no-op if it was already dropped)."""
        with self._lock:
            cur = self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            self._depth -= cur.rowcount

    def close(self) -> None:
        """Close the database (rows stay on disk for the next run)."""
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    def _prune(self, now: float) -> None:
        """Drop rows older than ``max_age_s``."""
        self._last_prune = now
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM outbox WHERE ts < ?", (now - self.max_age_s,)).fetchone()[0]
            if n:
                self._drop_oldest_locked(n, "max_age_s", self.max_age_s)

    def _drop_oldest_locked(self, n: int, bound: str, value: float) -> None:
        cur = self._db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (n,))
        self._depth -= cur.rowcount
        self.dropped += cur.rowcount
        now = time.monotonic()
        if now - self._last_drop_log < 60.0:  # a full outbox drops on every append: log once a minute
            return
        self._last_drop_log = now
        log.warning(
            "outbox full (outbox.%s = %s): dropped the %d oldest undelivered message(s), %d dropped so far",
            bound, value, cur.rowcount, self.dropped,
        )
