"""SQLite outbox: every durable event is written here first and deleted only after the broker's PUBACK.

A broker outage or a daemon restart (even ``kill -9``) therefore loses nothing: each ``append``
is committed before it returns (WAL journal, ``synchronous=NORMAL`` is durable across process
crashes), and the publisher re-reads the table in id order on start.

Drop policy (counters persisted in the file, reported in ``stats.outbox``):

* ``max_events`` / ``max_age_s``: past either bound the OLDEST undelivered rows are dropped.
* The database cannot be written (disk full, I/O error, or less than ``min_free_mb`` free): new
  messages wait in a bounded in-memory queue (``memory_max``; past it the oldest are dropped as
  ``memory_full``), so live delivery goes on while the broker is up; they are moved back to disk
  as soon as it can be written again. Only what is in memory is lost if the process dies then.

Each durable message gets ``seq``, its number on its topic (1, 2, 3...), stored in the same
transaction as the row, so it keeps rising across restarts. A delivered row whose DELETE fails is
marked delivered (or remembered in memory when even that fails) and its delete retried while running
(``retry_deletes``, on every drain round of the publisher) and at the next open: it is never sent
twice by this process, nor by the next one when the mark was written. The WAL is bounded
(``journal_size_limit``, small auto-checkpoints, a truncating checkpoint when the outbox empties,
at most every 30 s, and at close). The file and its WAL are 0600 and a folder it creates 0700, whatever the umask.

Ownership: each row records the device id and broker it is meant for; a publisher ``claim``s the
outbox and sends only those rows, leaving other owners' rows in place (``edge.outbox_files``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ConfigError
from edge.outbox_files import (  # noqa: F401  (re-exported: the config, the daemon and the publisher import them here)
    OutboxConfig, broker_key, default_outbox_path, describe_foreign, legacy_outbox_path, make_private_dirs,
    resolve_outbox_path, sort_rows, state_folder, take_legacy_rows,
)
from edge.payloads import encode

log = logging.getLogger(__name__)

_PRUNE_EVERY_S = 10.0  # age pruning scans an index; doing it on every append would be wasted work
_FREE_CHECK_S = 5.0  # statvfs at most this often
_WAL_LIMIT_BYTES = 256 * 1024  # journal_size_limit: the WAL is truncated to this after a checkpoint
_AUTOCHECKPOINT_PAGES = 64  # checkpoint every ~256 KB of WAL instead of SQLite's 4 MB
_CHECKPOINT_EVERY_S = 30.0  # a truncating checkpoint when the outbox empties, at most this often
DROP_REASONS = ("max_events", "max_age_s", "memory_full")


@dataclass
class OutboxRow:
    """One stored message, in the order it was appended (``memory``: held in RAM, not on disk)."""

    id: int
    ts: float
    topic: str
    payload: bytes
    qos: int
    retain: bool
    memory: bool = False


class Outbox:
    """A durable FIFO of MQTT messages; thread safe (one connection guarded by a lock).

    Args:
        path: SQLite file; created (0600) with its missing parent folders (0700).
        max_events: keep at most this many undelivered rows (oldest dropped first).
        max_age_s: drop rows older than this many seconds.
        min_free_mb: below this much free space on the file's disk, new messages wait in memory.
        memory_max: bound of that in-memory queue.
    """

    def __init__(self, path: str | Path, max_events: int = 100_000, max_age_s: float = 604_800,
                 min_free_mb: float = 20.0, memory_max: int = 10_000):
        self.path = Path(path)
        self.max_events, self.max_age_s = max_events, max_age_s
        self.min_free_mb, self.memory_max = min_free_mb, memory_max
        self.write_errors = 0  # failed database writes since this process opened the outbox
        self._lock = threading.Lock()
        self._last_prune = 0.0
        self._last_drop_log = -1e9
        self._last_write_log = -1e9
        self._last_checkpoint = -1e9
        self._memory: deque[OutboxRow] = deque()
        self._memory_ids = 0
        self._undeleted: set[int] = set()  # delivered rows whose delete and mark both failed
        self._marked = True  # rows marked delivered may be in the file (this run's failed deletes, or a former run's)
        self._disk_ok = True
        self.owner: tuple[str, str] | None = None  # (device id, broker) once claimed; None: every row is ours
        self._mine = ("", ())  # SQL condition (and its parameters) selecting the rows this outbox sends
        self._free_checked = -1e9
        self._free_ok = True
        try:
            make_private_dirs(self.path.parent)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
            # isolation_level=None: autocommit, so every statement is durable when it returns.
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"journal_size_limit={_WAL_LIMIT_BYTES}",
                           f"wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}"):
                self._db.execute(f"PRAGMA {pragma}")
            # device, broker: who may send the row (NULL: written before owners were recorded; see claim()).
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
                " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
                " delivered INTEGER NOT NULL DEFAULT 0, device TEXT, broker TEXT)"
            )
            columns = [r[1] for r in self._db.execute("PRAGMA table_info(outbox)")]
            for column, kind in (("delivered", "INTEGER NOT NULL DEFAULT 0"), ("device", "TEXT"), ("broker", "TEXT")):
                if column not in columns:  # an outbox written by an older version
                    self._db.execute(f"ALTER TABLE outbox ADD COLUMN {column} {kind}")
            self._db.execute("CREATE INDEX IF NOT EXISTS outbox_ts ON outbox(ts)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            self._depth = self._db.execute("SELECT COUNT(*) FROM outbox WHERE delivered = 0").fetchone()[0]
            for suffix in ("-wal", "-shm"):
                side = Path(f"{self.path}{suffix}")
                if side.exists():
                    os.chmod(side, 0o600)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                f"outbox.path: cannot open SQLite outbox {self.path} ({exc}); set outbox.path to a writable file"
            ) from None
        # Rows delivered by a previous run whose delete failed are never re-sent (pending() skips them);
        # delete them now if the disk lets us (it may still be full: that must not stop the start).
        self.retry_deletes()
        self._seq = {k[4:]: int(v) for k, v in meta.items() if k.startswith("seq:")}
        self.drops = {r: int(meta.get(f"dropped:{r}", 0)) for r in DROP_REASONS}
        if self._depth:
            log.info("outbox %s holds %d undelivered message(s) from a previous run", self.path, self._depth)
        if self.dropped:
            log.info("outbox %s has dropped %d message(s) so far (%s)", self.path, self.dropped,
                     ", ".join(f"{k} {n}" for k, n in self.drops.items() if n))
        self._prune(time.time(), unowned_only=True)  # rows with an owner: bounded by the daemon that claims them

    # --- state ---------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Messages waiting for a PUBACK: on disk plus in memory."""
        return self._depth + len(self._memory)

    @property
    def memory_depth(self) -> int:
        """Messages in the in-memory fallback queue."""
        return len(self._memory)

    @property
    def dropped(self) -> int:
        """Messages dropped since the outbox file was created, all reasons (persisted)."""
        return sum(self.drops.values())

    def last_seq(self, kind: str) -> int:
        """The last ``seq`` given to a message of ``kind`` (0 before the first)."""
        return self._seq.get(kind, 0)

    # --- writing -------------------------------------------------------------------------------

    def append(self, topic: str, payload: bytes | str | dict, qos: int = 1, retain: bool = False,
               seq_kind: str | None = None) -> int:
        """Store one message and return its id (committed to disk before returning when it can be).

        With ``seq_kind``, ``payload`` must be a dict: it gets ``seq`` (in place), the next number
        for that kind, stored in the same transaction as the row. When the database cannot be
        written the message waits in memory (``OutboxRow.memory``) and the write error is counted.
        """
        now = time.time()
        with self._lock:
            if seq_kind is not None:
                seq = self._seq.get(seq_kind, 0) + 1
                self._seq[seq_kind] = seq
                payload["seq"] = seq  # type: ignore[index]
            data = encode(payload) if isinstance(payload, (dict, str)) else bytes(payload)
            row = OutboxRow(0, now, topic, data, int(qos), bool(retain))
            if not (self._writable(now) and self._append_to_disk_locked(row, seq_kind)):
                return self._to_memory_locked(row)
        if now - self._last_prune >= _PRUNE_EVERY_S:
            self._prune(now)
        return row.id

    def _append_to_disk_locked(self, row: OutboxRow, seq_kind: str | None) -> bool:
        """Insert ``row`` (after any rows held in memory, to keep the order) in one transaction."""
        moved = list(self._memory)
        try:
            self._begin()
            self._insert_locked(moved)
            row.id = self._insert_locked([row])
            if seq_kind is not None:
                self._set_meta_locked(f"seq:{seq_kind}", self._seq[seq_kind])
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._write_failed(exc)
            return False
        if moved:
            log.info("outbox %s writable again: moved %d message(s) from memory to disk", self.path, len(moved))
            self._memory.clear()
        self._depth += len(moved) + 1
        self._disk_ok = True
        if self._depth > self.max_events:
            self._drop_oldest_locked(self._depth - self.max_events, "max_events", self.max_events)
        return True

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _insert_locked(self, rows: list[OutboxRow]) -> int:
        device, broker = self.owner or (None, None)
        last = 0
        for r in rows:
            cur = self._db.execute("INSERT INTO outbox (ts, topic, payload, qos, retain, device, broker)"
                                   " VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   (r.ts, r.topic, r.payload, r.qos, int(r.retain), device, broker))
            last = int(cur.lastrowid)
        return last

    def _set_meta_locked(self, key: str, value: int) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                         (key, value, value))

    def _writable(self, now: float) -> bool:
        """False while the disk has less than ``min_free_mb`` free (checked every few seconds)."""
        if self.min_free_mb <= 0 or now - self._free_checked < _FREE_CHECK_S:
            return self._free_ok
        self._free_checked = now
        try:
            st = os.statvfs(self.path.parent)
            free_mb = st.f_bavail * st.f_frsize / 1e6
        except OSError:
            return self._free_ok
        ok = free_mb >= self.min_free_mb
        if ok != self._free_ok:
            if ok:
                log.warning("outbox %s: %.0f MB free again, writing to disk", self.path, free_mb)
            else:
                log.error("outbox %s: only %.1f MB free (outbox.min_free_mb = %s): new messages wait in memory "
                          "(at most %d) until space is freed", self.path, free_mb, self.min_free_mb, self.memory_max)
        self._free_ok = ok
        return ok

    def _write_failed(self, exc: Exception) -> None:
        self.write_errors += 1
        now = time.monotonic()
        if self._disk_ok and now - self._last_write_log >= 60.0:  # a disk at its limit flaps: once a minute
            self._last_write_log = now
            log.error("cannot write to the outbox %s (%s): new messages wait in memory (at most %d) and are "
                      "still delivered while the broker is up; free disk space", self.path, exc, self.memory_max)
        self._disk_ok = False

    def _to_memory_locked(self, row: OutboxRow) -> int:
        self._memory_ids += 1
        row.id, row.memory = -self._memory_ids, True
        self._memory.append(row)
        if len(self._memory) > self.memory_max:
            self._memory.popleft()
            self._count_drops_locked("memory_full", 1, self.memory_max)
        return row.id

    # --- ownership ------------------------------------------------------------------------------

    def claim(self, device_id: str, broker: str, legacy: Path | None = None) -> None:
        """Send, count, bound and prune only the rows of ``device_id`` for ``broker`` (``broker_key``) from now on.

        Rows without a recorded owner whose topic names ``device_id`` become this owner's; with ``legacy``
        (the shared file of older versions, when this outbox is at the default per-device path) the
        undelivered rows of ``device_id`` move from there into this file (``take_legacy_rows``).
        Rows of other devices or brokers, here or there, stay where they are: one warning names them.
        """
        self.owner = (device_id, broker)
        with self._lock:
            self._mine = (" AND device = ? AND broker = ?", self.owner)
            rows = self._db.execute("SELECT id, topic, device, broker FROM outbox WHERE delivered = 0").fetchall()
            unowned, foreign = sort_rows(rows, self.owner, self.path)
            try:
                if unowned:
                    self._begin()
                    self._db.executemany("UPDATE outbox SET device = ?, broker = ? WHERE id = ?",
                                         [(device_id, broker, i) for i in unowned])
                    self._db.execute("COMMIT")
            except sqlite3.Error as exc:  # e.g. a full disk: those rows wait for the next start
                self._rollback()
                self._write_failed(exc)
            if legacy is not None and legacy.resolve() != self.path.resolve() and legacy.is_file():
                foreign.update(take_legacy_rows(legacy, self.owner, self._insert_adopted_locked))
            self._depth = self._db.execute("SELECT COUNT(*) FROM outbox WHERE delivered = 0 AND device = ?"
                                           " AND broker = ?", self.owner).fetchone()[0]
        self._prune(time.time())
        if foreign:
            log.warning("outbox: %d message(s) of other devices or brokers left in place, never sent by %s to %s: "
                        "%s; each goes only when a daemon with that device.id runs against that broker",
                        sum(foreign.values()), device_id, broker, describe_foreign(foreign))

    def _insert_adopted_locked(self, rows: list[tuple], counters: dict[str, int]) -> None:
        """Commit rows taken from the shared file of older versions, and its ``seq`` counters where higher."""
        try:
            self._begin()
            for kind, value in counters.items():
                if value > self._seq.get(kind, 0):  # seq goes on rising for this device: no number reused
                    self._seq[kind] = value
                    self._set_meta_locked(f"seq:{kind}", value)
            self._insert_locked([OutboxRow(0, *r) for r in rows])
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()
            raise

    # --- reading and acknowledging ----------------------------------------------------------------

    def pending(self, after_id: int = 0, limit: int = 100) -> list[OutboxRow]:
        """Up to ``limit`` undelivered rows on disk with id > ``after_id``, oldest first."""
        with self._lock:
            mine, params = self._mine
            rows = self._db.execute(
                f"SELECT id, ts, topic, payload, qos, retain FROM outbox WHERE id > ? AND delivered = 0{mine}"
                " ORDER BY id LIMIT ?", (after_id, *params, limit + len(self._undeleted)),
            ).fetchall()
        out = [OutboxRow(r[0], r[1], r[2], bytes(r[3]), r[4], bool(r[5])) for r in rows if r[0] not in self._undeleted]
        return out[:limit]

    def take_memory(self, limit: int = 100) -> list[OutboxRow]:
        """Remove and return up to ``limit`` of the oldest messages held in memory (handed to the client,
        which re-sends them itself until acknowledged)."""
        with self._lock:
            return [self._memory.popleft() for _ in range(min(limit, len(self._memory)))]

    def delete(self, row_id: int) -> None:
        """Forget a message once the broker acknowledged it (no-op if it was already dropped).

        When the DELETE fails the row is marked delivered, or remembered in memory when even that
        fails; ``retry_deletes`` finishes the job later. Either way it is not handed out again.
        """
        if row_id <= 0:
            return  # a memory row: nothing on disk
        with self._lock:
            try:
                cur = self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            except sqlite3.Error as exc:
                self._write_failed(exc)
                try:
                    cur = self._db.execute("UPDATE outbox SET delivered = 1 WHERE id = ? AND delivered = 0", (row_id,))
                except sqlite3.Error:
                    self._undeleted.add(row_id)
                    self._depth -= 1
                    return
                self._marked = True
            self._depth -= cur.rowcount
            if self._depth == 0 and not self._undeleted and time.monotonic() - self._last_checkpoint >= _CHECKPOINT_EVERY_S:
                self._checkpoint_locked()

    def retry_deletes(self) -> None:
        """Delete the delivered rows whose delete failed before: those marked delivered in the file
        and those remembered in memory. Cheap when there are none (no query); the publisher calls it
        on every drain round, so they go as soon as the database can be written again."""
        with self._lock:
            if not self._undeleted and not self._marked:
                return
            try:
                if self._marked:
                    self._db.execute("DELETE FROM outbox WHERE delivered = 1")
                    self._marked = False
                for row_id in list(self._undeleted):
                    self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                    self._undeleted.discard(row_id)
            except sqlite3.Error:
                pass

    def _checkpoint_locked(self) -> None:
        self._last_checkpoint = time.monotonic()
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        """Checkpoint and close the database (undelivered rows stay on disk for the next run;
        messages still in memory are lost and logged)."""
        if self._memory:
            log.error("outbox %s: %d message(s) held in memory are lost (the database could not be written)",
                      self.path, len(self._memory))
        self.retry_deletes()
        with self._lock:
            try:
                self._checkpoint_locked()
                self._db.close()
            except sqlite3.Error:
                pass

    # --- bounds --------------------------------------------------------------------------------

    def _prune(self, now: float, unowned_only: bool = False) -> None:
        """Drop this outbox's rows older than ``max_age_s`` (``unowned_only``: only rows without an owner)."""
        self._last_prune = now
        with self._lock:
            mine, params = (" AND device IS NULL", ()) if unowned_only else self._mine
            try:
                n = self._db.execute(f"SELECT COUNT(*) FROM outbox WHERE ts < ? AND delivered = 0{mine}",
                                     (now - self.max_age_s, *params)).fetchone()[0]
                if n:
                    self._drop_oldest_locked(n, "max_age_s", self.max_age_s, (mine, params))
            except sqlite3.Error as exc:
                self._write_failed(exc)

    def _drop_oldest_locked(self, n: int, reason: str, value: float, rows: tuple[str, tuple] | None = None) -> None:
        """Drop the ``n`` oldest undelivered rows among ``rows`` (an SQL condition; default: this outbox's)."""
        try:
            self._begin()
            mine, params = rows or self._mine
            cur = self._db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE delivered = 0"
                                   f"{mine} ORDER BY id LIMIT ?)", (*params, n))
            self._depth -= cur.rowcount
            self.drops[reason] += cur.rowcount
            self._set_meta_locked(f"dropped:{reason}", self.drops[reason])
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._write_failed(exc)
            return
        self._log_drop(reason, cur.rowcount, value)

    def _count_drops_locked(self, reason: str, n: int, value: float) -> None:
        self.drops[reason] += n
        try:
            self._set_meta_locked(f"dropped:{reason}", self.drops[reason])
        except sqlite3.Error:
            pass  # best effort: the database is what failed in the first place
        self._log_drop(reason, n, value)

    def _log_drop(self, reason: str, n: int, value: float) -> None:
        now = time.monotonic()
        if now - self._last_drop_log < 60.0:  # a full outbox drops on every append: log once a minute
            return
        self._last_drop_log = now
        what = "outbox.memory_max" if reason == "memory_full" else f"outbox.{reason}"
        log.warning("outbox full (%s = %s): dropped the %d oldest undelivered message(s), %d dropped so far",
                    what, value, n, self.dropped)
