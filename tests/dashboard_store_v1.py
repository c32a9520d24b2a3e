"""Frozen copy of dashboard/store.py as of commit a02af2b (schema 1: raw tables only, no rollups, no meta).

Its code is kept verbatim below this note (which replaces its docstring), so tests can build "a database made
by today's code" and check that the current store migrates it (tests/test_dashboard_tiers.py). Never edit it:
it stands for the databases already in the field.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TABLES_BY_TS = ("expressions", "summaries", "stats", "statuses", "alerts")
# Expression payload keys kept as columns (or implied by the row), not repeated in its stored JSON.
_EXPR_COLUMNS = frozenset({"v", "ts", "device", "face_id", "expression", "confidence", "seq"})


@dataclass
class Message:
    """One MQTT message as the ingest parsed it (``payload`` is a dict, or the status string)."""

    device: str
    kind: str  # expression | summary | stats | status
    payload: Any
    raw: bytes
    received: float = field(default_factory=time.time)
    retained: bool = False

    @property
    def ts(self) -> float:
        if isinstance(self.payload, dict) and isinstance(self.payload.get("ts"), (int, float)):
            return float(self.payload["ts"])
        return self.received

    @property
    def seq(self) -> int | None:
        s = self.payload.get("seq") if isinstance(self.payload, dict) else None
        return s if isinstance(s, int) and not isinstance(s, bool) else None

    @property
    def dkey(self) -> str:
        if self.seq is not None:
            return f"{self.seq}:{self.ts:.3f}"
        return "h" + hashlib.blake2b(self.raw, digest_size=10).hexdigest()


def _schema(autoinc: str) -> list[str]:
    real = "DOUBLE PRECISION"
    return [
        f"""CREATE TABLE IF NOT EXISTS devices (device TEXT PRIMARY KEY, status TEXT, status_ts {real},
            last_seen {real}, stats TEXT, stats_ts {real})""",
        f"""CREATE TABLE IF NOT EXISTS expressions (id {autoinc}, device TEXT NOT NULL, ts {real} NOT NULL,
            seq BIGINT, face_id INTEGER, expression TEXT, confidence REAL, payload TEXT, received {real},
            dkey TEXT NOT NULL, UNIQUE (device, dkey))""",
        "CREATE INDEX IF NOT EXISTS expressions_device_ts ON expressions (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS summaries (id {autoinc}, device TEXT NOT NULL, ts {real} NOT NULL,
            seq BIGINT, faces INTEGER, payload TEXT, received {real}, dkey TEXT NOT NULL, UNIQUE (device, dkey))""",
        "CREATE INDEX IF NOT EXISTS summaries_device_ts ON summaries (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS stats (id {autoinc}, device TEXT NOT NULL, ts {real} NOT NULL,
            payload TEXT, received {real}, dkey TEXT NOT NULL, UNIQUE (device, dkey))""",
        "CREATE INDEX IF NOT EXISTS stats_device_ts ON stats (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS statuses (id {autoinc}, device TEXT NOT NULL, ts {real} NOT NULL,
            status TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS statuses_device_ts ON statuses (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS alerts (id {autoinc}, device TEXT NOT NULL, kind TEXT NOT NULL,
            state TEXT NOT NULL, since {real} NOT NULL, ts {real} NOT NULL, detail TEXT, cleared_ts {real},
            acked_ts {real}, acked_by TEXT)""",
        "CREATE INDEX IF NOT EXISTS alerts_device_ts ON alerts (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS workers (name TEXT PRIMARY KEY, started {real}, beat {real},
            received BIGINT, stored BIGINT, duplicates BIGINT)""",
    ]


class Store:
    """Thread-safe access: one connection per thread (the ingest writer, each web request thread)."""

    postgres = False

    def __init__(self, url: str):
        self.url = url
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    # -- connections -------------------------------------------------------------------------
    def _connect(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def conn(self):
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = self._connect()
            with self._lock:
                self._all.append(c)
        return c

    def sql(self, text: str) -> str:
        return text

    def execute(self, text: str, params: tuple | list = ()) -> list[tuple]:
        """Run one statement in its own transaction; rows for a SELECT."""
        c = self.conn()
        try:
            with self._tx(c) as cur:
                cur.execute(self.sql(text), params)
                return cur.fetchall() if cur.description else []
        except Exception:
            if getattr(c, "broken", False) or getattr(c, "closed", False):
                self.reset()  # the server went away: this thread reconnects on its next query
            raise

    def _tx(self, c):  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                try:
                    c.close()
                except Exception:  # noqa: BLE001 - closing from another thread may fail; the process ends anyway
                    pass
            self._all.clear()
        self._local = threading.local()

    def init(self) -> "Store":
        c = self.conn()
        with self._tx(c) as cur:
            if self.postgres:  # workers starting together: CREATE TABLE IF NOT EXISTS races in PostgreSQL
                cur.execute("SELECT pg_advisory_xact_lock(7262001)")
            for stmt in _schema(self.AUTOINC):
                cur.execute(stmt)
        return self

    # -- writes ------------------------------------------------------------------------------
    def write(self, batch: list[Message]) -> tuple[int, int]:
        """Store a batch in one transaction; returns (rows stored, duplicates dropped).

        Rows and device updates are written in (device, key) order, so concurrent workers take their row
        locks in the same order and cannot deadlock each other.
        """
        expr, summ, stats, statuses = [], [], [], []
        devices: dict[str, list] = {}  # device -> [last_seen, stats payload, stats ts]
        for m in batch:
            p = m.payload
            if m.kind == "status":
                statuses.append(m)
                continue
            if not isinstance(p, dict):
                continue
            if m.kind == "expression":  # the payload minus what the columns hold (a third of the row)
                rest = json.dumps({k: v for k, v in p.items() if k not in _EXPR_COLUMNS}, separators=(",", ":"))
                expr.append((m.device, m.ts, m.seq, _int(p.get("face_id")), str(p.get("expression", "")),
                             _float(p.get("confidence")), rest, m.received, m.dkey))
            elif m.kind == "summary":
                summ.append((m.device, m.ts, m.seq, _int(p.get("faces")), m.raw.decode(), m.received, m.dkey))
            elif m.kind == "stats":
                stats.append((m.device, m.ts, m.raw.decode(), m.received, m.dkey))
            else:
                continue
            d = devices.setdefault(m.device, [m.ts, None, None])
            d[0] = max(d[0], m.ts)
            if m.kind == "stats" and (d[2] is None or m.ts >= d[2]):
                d[1], d[2] = m.raw.decode(), m.ts
        stored = 0
        c = self.conn()
        with self._tx(c) as cur:
            for table, cols, rows in (
                ("expressions", "device, ts, seq, face_id, expression, confidence, payload, received, dkey", expr),
                ("summaries", "device, ts, seq, faces, payload, received, dkey", summ),
                ("stats", "device, ts, payload, received, dkey", stats),
            ):
                if rows:
                    rows.sort(key=lambda r: (r[0], r[-1]))
                    marks = ", ".join("?" * len(rows[0]))
                    stored += self._insert_many(cur, f"INSERT INTO {table} ({cols}) VALUES ({marks}) "
                                                     "ON CONFLICT (device, dkey) DO NOTHING", rows)
            if devices:
                newer_stats = "excluded.stats_ts IS NOT NULL AND (devices.stats_ts IS NULL OR devices.stats_ts <= excluded.stats_ts)"
                self._many(cur, (
                    "INSERT INTO devices (device, last_seen, stats, stats_ts) VALUES (?, ?, ?, ?) ON CONFLICT (device) "
                    "DO UPDATE SET last_seen = CASE WHEN devices.last_seen IS NULL OR devices.last_seen < excluded.last_seen "
                    "THEN excluded.last_seen ELSE devices.last_seen END, "
                    f"stats = CASE WHEN {newer_stats} THEN excluded.stats ELSE devices.stats END, "
                    f"stats_ts = CASE WHEN {newer_stats} THEN excluded.stats_ts ELSE devices.stats_ts END"),
                    [(dev, *vals) for dev, vals in sorted(devices.items())])
            for m in sorted(statuses, key=lambda m: m.device):
                stored += self._status(cur, m)
        dups = len(expr) + len(summ) + len(stats) + len(statuses) - stored
        return stored, dups

    def _many(self, cur, text: str, rows: list[tuple]) -> None:
        cur.executemany(self.sql(text), rows)

    def reset(self) -> None:
        """Drop this thread's connection (after an error that may have broken it); the next use reconnects."""
        c = getattr(self._local, "conn", None)
        self._local.conn = None
        if c is not None:
            with self._lock:
                if c in self._all:
                    self._all.remove(c)
            try:
                c.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass

    def _status(self, cur, m: Message) -> int:
        """Record a status message: a transition row when it changes the device's status."""
        status = str(m.payload).strip().lower()
        cur.execute(self.sql("SELECT status FROM devices WHERE device = ?"), (m.device,))
        row = cur.fetchone()
        if row and row[0] == status:
            return 0
        # A retained status is the device's state as of some earlier time: don't let it move last_seen.
        cur.execute(self.sql(
            "INSERT INTO devices (device, status, status_ts, last_seen) VALUES (?, ?, ?, ?) ON CONFLICT (device) "
            "DO UPDATE SET status = excluded.status, status_ts = excluded.status_ts, "
            "last_seen = COALESCE(excluded.last_seen, devices.last_seen)"),
            (m.device, status, m.received, None if m.retained else m.received))
        cur.execute(self.sql("INSERT INTO statuses (device, ts, status) VALUES (?, ?, ?)"),
                    (m.device, m.received, status))
        return 1

    def _insert_many(self, cur, text: str, rows: list[tuple]) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def prune(self, retention_days: float, now: float | None = None) -> int:
        """Delete everything older than the retention; returns the rows deleted."""
        cutoff = (now or time.time()) - retention_days * 86400.0
        n = 0
        c = self.conn()
        with self._tx(c) as cur:
            for table in TABLES_BY_TS:
                cur.execute(self.sql(f"DELETE FROM {table} WHERE ts < ?"), (cutoff,))
                n += max(cur.rowcount, 0)
            cur.execute(self.sql("DELETE FROM devices WHERE COALESCE(last_seen, status_ts, 0) < ?"), (cutoff,))
        return n

    def worker_beat(self, name: str, started: float, received: int, stored: int, duplicates: int) -> None:
        self.execute("INSERT INTO workers (name, started, beat, received, stored, duplicates) VALUES (?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (name) DO UPDATE SET beat = excluded.beat, received = excluded.received, "
                     "stored = excluded.stored, duplicates = excluded.duplicates",
                     (name, started, time.time(), received, stored, duplicates))

    # -- alerts ------------------------------------------------------------------------------
    def add_alert(self, device: str, kind: str, since: float, ts: float, detail: dict) -> int:
        rows = self.execute("INSERT INTO alerts (device, kind, state, since, ts, detail) VALUES (?, ?, 'raised', ?, ?, ?) "
                            "RETURNING id", (device, kind, since, ts, json.dumps(detail)))
        return int(rows[0][0])

    def clear_alert(self, alert_id: int, ts: float) -> None:
        self.execute("UPDATE alerts SET state = 'cleared', cleared_ts = ? WHERE id = ?", (ts, alert_id))

    def ack_alert(self, alert_id: int, user: str = "") -> bool:
        rows = self.execute("UPDATE alerts SET acked_ts = ?, acked_by = ? WHERE id = ? RETURNING id",
                            (time.time(), user, alert_id))
        return bool(rows)

    def checkpoint(self) -> None:
        """Flush write-ahead state where the backend has one to flush (SQLite); a no-op otherwise."""

    def size_bytes(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


def _int(v) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _float(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class _SqliteTx:
    def __init__(self, c):
        self.c = c

    def __enter__(self):
        self.cur = self.c.cursor()
        self.cur.execute("BEGIN IMMEDIATE")
        return self.cur

    def __exit__(self, exc_type, exc, tb):
        self.c.execute("ROLLBACK" if exc_type else "COMMIT")
        self.cur.close()


class SqliteStore(Store):
    AUTOINC = "INTEGER PRIMARY KEY"

    def __init__(self, path: str):
        super().__init__(path)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self):
        import sqlite3

        c = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        return c

    def _tx(self, c):
        return _SqliteTx(c)

    def _insert_many(self, cur, text, rows):
        before = cur.connection.total_changes
        cur.executemany(text, rows)
        return cur.connection.total_changes - before

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (so its size is the data's)."""
        self.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())


class PostgresStore(Store):
    AUTOINC = "BIGSERIAL PRIMARY KEY"
    postgres = True

    def _connect(self):
        import psycopg

        return psycopg.connect(self.url, autocommit=False)

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def _tx(self, c):
        return _PgTx(c)

    def _insert_many(self, cur, text, rows):
        cur.executemany(self.sql(text), rows)  # psycopg 3: rowcount sums the rows inserted (conflicts: 0)
        return max(cur.rowcount, 0)

    def size_bytes(self) -> int:
        return int(self.execute("SELECT pg_database_size(current_database())")[0][0])


class _PgTx:
    def __init__(self, c):
        self.c = c

    def __enter__(self):
        self.cur = self.c.cursor()
        return self.cur

    def __exit__(self, exc_type, exc, tb):
        if exc_type:
            self.c.rollback()
        else:
            self.c.commit()
        self.cur.close()


def open_store(url: str) -> Store:
    """A ready ``Store`` for ``url``: ``postgresql://...`` or a SQLite file path."""
    store: Store = PostgresStore(url) if url.startswith(("postgresql://", "postgres://")) else SqliteStore(url)
    return store.init()
