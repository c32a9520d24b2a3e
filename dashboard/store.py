"""Where the dashboard keeps what devices publish: SQLite (WAL, the default) or PostgreSQL (psycopg 3).

One schema, written once with ``?`` placeholders and translated for psycopg. Timestamps are unix seconds
(float). Duplicates of at-least-once delivery are stored once: ``expressions``, ``summaries`` and
``stats`` rows carry a key unique per device (``dkey``): ``<seq>:<ts>`` when the payload has an integer
``seq`` (so a device whose counter restarts from 1 after its outbox was wiped is not mistaken for
duplicates), else a hash of the payload bytes. Inserts use ``ON CONFLICT DO NOTHING``, so several ingest
workers may write the same stream concurrently.

``attention`` rows (one tracked face's eye, mouth and head-pose signals) are raw events like expressions. The
device's own alerts (drowsy, distracted, yawning) go into ``alerts`` beside the dashboard's
(``dashboard.device_alerts``).

Two tiers (``dashboard.rollups``): the raw rows above, pruned after ``raw_days``, and per-minute rollups per
device (``minutes``), added to in the same transaction as the raw rows they count and kept for the retention.
``init`` creates the tables or upgrades an older database (``dashboard.schema``): the rollups of the raw rows
stored before the upgrade are built by the ingest a chunk at a time (``backfill_step``), and until then the
raw rows are kept.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from dashboard import device_alerts as device_alerts_
from dashboard import rollups, schema
from dashboard.message import Message  # noqa: F401 - callers take it from here
from dashboard.schema import SCHEMA_VERSION  # noqa: F401 - the version this store writes, for its callers

log = logging.getLogger(__name__)

RAW_TABLES = ("expressions", "summaries", "stats", "attention")  # pruned after raw_days
KEPT_TABLES = ("statuses", "alerts", "minutes")  # pruned after retention_days
TABLES_BY_TS = RAW_TABLES + KEPT_TABLES
# Expression payload keys kept as columns (or implied by the row), not repeated in its stored JSON.
_EXPR_COLUMNS = frozenset({"v", "ts", "device", "face_id", "expression", "confidence", "seq"})
_ATTENTION_COLUMNS = frozenset({"v", "ts", "device", "face_id", "perclos", "seq"})


class Store:
    """Thread-safe access: one connection per thread (the ingest writer, each web request thread)."""

    postgres = False
    WITHOUT_ROWID = ""

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
        """Create the tables, or migrate an older database to ``SCHEMA_VERSION`` (in one transaction)."""
        c = self.conn()
        with self._tx(c) as cur:
            if self.postgres:  # workers starting together: CREATE TABLE IF NOT EXISTS races in PostgreSQL
                cur.execute("SELECT pg_advisory_xact_lock(7262001)")
            schema.migrate(cur, self.sql, self.AUTOINC, self.WITHOUT_ROWID, self.url)
        return self

    # -- writes ------------------------------------------------------------------------------
    def write(self, batch: list[Message]) -> tuple[int, int]:
        """Store a batch in one transaction, with the rollups of the rows it inserted; returns (rows stored,
        duplicates dropped).

        Rows, rollups and device updates are written in (device, key) order, so concurrent workers take their
        row locks in the same order and cannot deadlock each other.
        """
        expr, summ, stats, att, statuses, device_alerts = [], [], [], [], [], []
        extra: dict[tuple, Any] = {}  # (kind, device, dkey) -> scores / counts, for the rollups
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
                extra[("e", m.device, m.dkey)] = p.get("scores")
            elif m.kind == "summary":
                summ.append((m.device, m.ts, m.seq, _int(p.get("faces")), m.raw.decode(), m.received, m.dkey))
                extra[("s", m.device, m.dkey)] = (p.get("counts"), p.get("attention"))
            elif m.kind == "attention":
                events = p.get("events") if isinstance(p.get("events"), list) else []
                rest = json.dumps({k: v for k, v in p.items() if k not in _ATTENTION_COLUMNS}, separators=(",", ":"))
                att.append((m.device, m.ts, m.seq, _int(p.get("face_id")), _float(p.get("perclos")), len(events),
                            rest, m.received, m.dkey))
                extra[("a", m.device, m.dkey)] = events
            elif m.kind == "alert":
                device_alerts.append(m)
            elif m.kind == "stats":
                stats.append((m.device, m.ts, m.raw.decode(), m.received, m.dkey))
            else:
                continue
            d = devices.setdefault(m.device, [m.ts, None, None])
            d[0] = max(d[0], m.ts)
            if m.kind == "stats" and (d[2] is None or m.ts >= d[2]):
                d[1], d[2] = m.raw.decode(), m.ts
        stored = 0
        deltas = rollups.Deltas()
        c = self.conn()
        with self._tx(c) as cur:
            for table, cols, rows in (
                ("expressions", "device, ts, seq, face_id, expression, confidence, payload, received, dkey", expr),
                ("summaries", "device, ts, seq, faces, payload, received, dkey", summ),
                ("stats", "device, ts, payload, received, dkey", stats),
                ("attention", "device, ts, seq, face_id, perclos, n_events, payload, received, dkey", att),
            ):
                if not rows:
                    continue
                rows = _unique(rows)  # a key twice in one batch: the first is the one inserted
                marks = ", ".join("?" * len(rows[0]))
                new = self._insert_new(cur, f"INSERT INTO {table} ({cols}) VALUES ({marks}) "
                                            "ON CONFLICT (device, dkey) DO NOTHING", rows)
                stored += len(new)
                for r in new:
                    if table == "expressions":
                        deltas.expression(r[0], r[1], r[4], extra[("e", r[0], r[-1])])
                    elif table == "summaries":
                        deltas.summary(r[0], r[1], r[3], *extra[("s", r[0], r[-1])])
                    elif table == "attention":
                        deltas.attention(r[0], r[1], r[4], extra[("a", r[0], r[-1])])
            for m in sorted(device_alerts, key=lambda m: (m.device, m.dkey)):
                if device_alerts_.record(cur, self.sql, m.device, m.ts, m.dkey, m.payload):
                    stored += 1
                    if m.payload.get("state") == "raised":
                        deltas.alert(m.device, m.ts)
            if deltas.rows:
                self._many(cur, rollups.upsert_sql(), deltas.sorted_rows())
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
        dups = len(expr) + len(summ) + len(stats) + len(att) + len(device_alerts) + len(statuses) - stored
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
        # A retained status is the device's state as of some earlier time, and "offline" (a clean stop or the
        # broker's last will, up to 1.5 keepalives late) is no sign of life: neither moves last_seen.
        cur.execute(self.sql(
            "INSERT INTO devices (device, status, status_ts, last_seen) VALUES (?, ?, ?, ?) ON CONFLICT (device) "
            "DO UPDATE SET status = excluded.status, status_ts = excluded.status_ts, "
            "last_seen = COALESCE(excluded.last_seen, devices.last_seen)"),
            (m.device, status, m.received, None if m.retained or status != "online" else m.received))
        cur.execute(self.sql("INSERT INTO statuses (device, ts, status) VALUES (?, ?, ?)"),
                    (m.device, m.received, status))
        return 1

    def _insert_new(self, cur, text: str, rows: list[tuple]) -> list[tuple]:  # pragma: no cover - overridden
        """Run the ``ON CONFLICT DO NOTHING`` insert ``text`` for each of ``rows`` (unique (device, dkey), first
        and last items); returns the rows it inserted (not the duplicates)."""
        raise NotImplementedError

    def prune(self, retention_days: float, now: float | None = None, raw_days: float | None = None) -> int:
        """Delete raw rows older than ``raw_days`` (None: the retention) and everything older than
        ``retention_days``; returns the rows deleted."""
        now = now or time.time()
        cutoff = now - retention_days * 86400.0
        raw_cutoff = max(cutoff, now - (retention_days if raw_days is None else raw_days) * 86400.0)
        n = 0
        c = self.conn()
        with self._tx(c) as cur:
            cur.execute(self.sql("SELECT COUNT(*) FROM meta WHERE key LIKE ?"), (rollups.BACKFILL + "%",))
            if cur.fetchone()[0]:  # an upgrade's raw rows not rolled up yet stay until they are
                raw_cutoff = cutoff
            for table in TABLES_BY_TS:
                cur.execute(self.sql(f"DELETE FROM {table} WHERE ts < ?"), (raw_cutoff if table in RAW_TABLES else cutoff,))
                n += max(cur.rowcount, 0)
            cur.execute(self.sql("DELETE FROM devices WHERE COALESCE(last_seen, status_ts, 0) < ?"), (cutoff,))
        return n

    def backfill_step(self, chunk: int = 20000) -> int:
        """Roll up the next ``chunk`` rows an upgrade scheduled (one transaction; workers take turns); returns
        the rows done, 0 when none are left."""
        with self._tx(self.conn()) as cur:
            if self.postgres:
                cur.execute("SELECT pg_advisory_xact_lock(7262002)")
            return rollups.backfill_step(cur, self.sql, chunk)

    def worker_beat(self, name: str, started: float, received: int, stored: int, duplicates: int) -> None:
        self.execute("INSERT INTO workers (name, started, beat, received, stored, duplicates) VALUES (?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (name) DO UPDATE SET beat = excluded.beat, received = excluded.received, "
                     "stored = excluded.stored, duplicates = excluded.duplicates",
                     (name, started, time.time(), received, stored, duplicates))

    # -- alerts ------------------------------------------------------------------------------
    def add_alert(self, device: str, kind: str, since: float, ts: float, detail: dict) -> int:
        """Store a raised alert and count it in its minute's rollup; returns its id."""
        deltas = rollups.Deltas()
        deltas.alert(device, ts)
        with self._tx(self.conn()) as cur:
            cur.execute(self.sql("INSERT INTO alerts (device, kind, state, since, ts, detail) VALUES (?, ?, 'raised', ?, ?, ?) "
                                 "RETURNING id"), (device, kind, since, ts, json.dumps(detail)))
            alert_id = int(cur.fetchone()[0])
            self._many(cur, rollups.upsert_sql(), deltas.sorted_rows())
        return alert_id

    def clear_alert(self, alert_id: int, ts: float) -> None:
        self.execute("UPDATE alerts SET state = 'cleared', cleared_ts = ? WHERE id = ?", (ts, alert_id))

    def ack_alert(self, alert_id: int, user: str = "") -> bool:
        rows = self.execute("UPDATE alerts SET acked_ts = ?, acked_by = ? WHERE id = ? RETURNING id",
                            (time.time(), user, alert_id))
        return bool(rows)

    def ack_alerts(self, device: str, kind: str, user: str = "") -> list[int]:
        """Acknowledge every unacknowledged ``kind`` alert of ``device``; returns their ids."""
        rows = self.execute("UPDATE alerts SET acked_ts = ?, acked_by = ? WHERE device = ? AND kind = ? "
                            "AND acked_ts IS NULL RETURNING id", (time.time(), user, device, kind))
        return sorted(int(r[0]) for r in rows)

    def checkpoint(self) -> None:
        """Flush write-ahead state where the backend has one to flush (SQLite); a no-op otherwise."""

    def size_bytes(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


def _unique(rows: list[tuple]) -> list[tuple]:
    """``rows`` sorted by (device, dkey) (first and last items), each key once."""
    out: list[tuple] = []
    for r in sorted(rows, key=lambda r: (r[0], r[-1])):
        if not out or (out[-1][0], out[-1][-1]) != (r[0], r[-1]):
            out.append(r)
    return out


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
    WITHOUT_ROWID = " WITHOUT ROWID"  # the rollups' key is their table: no second copy in an index

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

    def _insert_new(self, cur, text, rows):
        new = []
        for r in rows:  # one statement per row: its rowcount says inserted (1) or duplicate (0)
            cur.execute(text, r)
            if cur.rowcount > 0:
                new.append(r)
        return new

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

    def _insert_new(self, cur, text, rows):
        # psycopg 3 pipelines the statements and keeps one result per row: the key when inserted, none if not
        cur.executemany(self.sql(text + " RETURNING device, dkey"), rows, returning=True)
        keys = set()
        while True:
            keys.update(cur.fetchall())
            if not cur.nextset():
                break
        return [r for r in rows if (r[0], r[-1]) in keys]

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
