"""SQLite outbox: durable, ordered, bounded (oldest dropped and counted), survives kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from pathlib import Path

from edge.outbox import Outbox, OutboxConfig, default_outbox_path, legacy_outbox_path, resolve_outbox_path

ROOT = Path(__file__).resolve().parents[1]


def test_append_pending_delete_in_order(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    ids = [box.append("fer/d/expression", f"m{i}", 1, False) for i in range(5)]
    assert ids == sorted(ids) and box.depth == 5
    rows = box.pending()
    assert [r.payload for r in rows] == [f"m{i}".encode() for i in range(5)]
    assert rows[0].topic == "fer/d/expression" and rows[0].qos == 1 and rows[0].retain is False
    assert [r.id for r in box.pending(after_id=ids[2])] == ids[3:]
    box.delete(ids[0])
    box.delete(ids[0])  # deleting twice is harmless and does not corrupt the depth
    assert box.depth == 4 and box.pending()[0].id == ids[1]


def test_survives_reopen(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    box.append("t", b"x", 1, True)
    box.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert again.depth == 1 and again.pending()[0].retain is True


def test_max_events_drops_oldest_and_counts(tmp_path, caplog):
    box = Outbox(tmp_path / "o.sqlite", max_events=3)
    for i in range(7):
        box.append("t", str(i), 1, False)
    assert box.depth == 3 and box.dropped == 4
    assert [r.payload for r in box.pending()] == [b"4", b"5", b"6"]
    assert "dropped the 1 oldest" in caplog.text


def test_max_age_drops_old_rows_on_open(tmp_path):
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    box.append("t", "old", 1, False)
    box.append("t", "new", 1, False)
    box.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE outbox SET ts = ts - 1000 WHERE payload = ?", (b"old",))
    db.commit()
    db.close()
    box = Outbox(path, max_age_s=100)
    assert [r.payload for r in box.pending()] == [b"new"] and box.dropped == 1


def test_committed_rows_survive_kill_9(tmp_path):
    """A writer killed with SIGKILL right after append() returned loses nothing."""
    path = tmp_path / "o.sqlite"
    code = (
        "import sys, time; from edge.outbox import Outbox\n"
        f"b = Outbox({str(path)!r})\n"
        "for i in range(50): b.append('t', str(i), 1, False)\n"
        "print('written', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    box = Outbox(path)
    assert [r.payload for r in box.pending(limit=100)] == [str(i).encode() for i in range(50)]


def test_default_path_is_one_file_per_device_and_broker(monkeypatch, tmp_path):
    from edge.config import Config

    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    assert default_outbox_path("lab-a", "Broker.local", 1883) == tmp_path / "a" / "outbox" / "lab-a@broker.local_1883.sqlite"
    assert default_outbox_path("lab-a", "::1", 8883).name == "lab-a@__1_8883.sqlite"  # sanitised: a plain file name
    assert legacy_outbox_path() == default_outbox_path() == tmp_path / "a" / "outbox.sqlite"  # the old shared file
    monkeypatch.setenv("STATE_DIRECTORY", "")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_outbox_path("d", "h", 1) == tmp_path / "xdg" / "fer-edge" / "outbox" / "d@h_1.sqlite"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # the XDG spec says: ignore relative paths
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_outbox_path("d", "h", 1) == tmp_path / "home" / ".local" / "state" / "fer-edge" / "outbox" / "d@h_1.sqlite"
    # The config fills in the per-device default when publishing to a broker; an explicit path is kept.
    cfg = Config.model_validate({"device": {"id": "lab-b"}, "mqtt": {"host": "127.0.0.1", "port": 1884}})
    assert resolve_outbox_path(cfg.outbox) == default_outbox_path("lab-b", "127.0.0.1", 1884)
    cfg = Config.model_validate({"mqtt": {"host": "h"}, "outbox": {"path": str(tmp_path / "x.db")}})
    assert resolve_outbox_path(cfg.outbox) == tmp_path / "x.db"
    assert Config().outbox.path == ""  # no broker: no outbox at all (events go to stdout)


def _rows(path: Path, columns: str = "topic, device, broker") -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT {columns} FROM outbox ORDER BY id").fetchall()
    finally:
        db.close()


def test_a_claimed_outbox_sends_bounds_and_counts_only_its_own_rows(tmp_path, caplog):
    """Two daemons sharing one file (an explicit outbox.path): each sees only its device and broker's rows."""
    import json
    import logging

    path = tmp_path / "shared.sqlite"
    a = Outbox(path)
    a.claim("lab-a", "127.0.0.1:1111")
    for i in range(5):
        a.append("fer/lab-a/expression", {"v": 1, "i": i}, seq_kind="expression")
    a.close()
    b = Outbox(path, max_events=3)
    with caplog.at_level(logging.WARNING, "edge.outbox"):
        b.claim("lab-b", "127.0.0.1:2222")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "5 of lab-a for 127.0.0.1:1111" in warnings[0] and str(path) in warnings[0]
    assert b.depth == 0 and b.pending() == []  # nothing of lab-a's is handed to lab-b's publisher
    for i in range(4):  # past max_events: lab-b drops its own oldest, never lab-a's rows
        b.append("fer/lab-b/expression", {"v": 1, "i": i}, seq_kind="expression")
    assert [json.loads(r.payload)["i"] for r in b.pending()] == [1, 2, 3] and b.depth == 3
    b._prune(time.time() + 30 * 86400)  # a month later: lab-b's rows age out, lab-a's stay
    assert b.depth == 0
    b.close()
    assert [r[1:] for r in _rows(path)] == [("lab-a", "127.0.0.1:1111")] * 5
    # lab-a against another broker does not send them either; against its own it does.
    other = Outbox(path)
    other.claim("lab-a", "127.0.0.1:3333")
    assert other.pending() == [] and other.depth == 0
    other.close()
    again = Outbox(path)
    again.claim("lab-a", "127.0.0.1:1111")
    assert [json.loads(r.payload)["i"] for r in again.pending()] == [0, 1, 2, 3, 4] and again.depth == 5


def old_layout_outbox(path: Path, topics: list[str], seq: int) -> None:
    """An outbox file as versions before owners were recorded wrote it (no device/broker columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, topic TEXT NOT NULL,"
               " payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
               " delivered INTEGER NOT NULL DEFAULT 0)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    for i, t in enumerate(topics, 1):
        payload = f'{{"v":1,"device":"{t.split("/")[1]}","seq":{i}}}'.encode()
        db.execute("INSERT INTO outbox (ts, topic, payload, qos, retain) VALUES (?, ?, ?, 1, 0)", (time.time(), t, payload))
    db.execute("INSERT INTO meta VALUES ('seq:expression', ?)", (seq,))
    db.close()


def test_rows_of_the_old_shared_layout_go_only_to_their_own_device(tmp_path, caplog):
    """The shared outbox.sqlite of older versions records no owner: its topic names the device. A daemon at
    its per-device default path takes over its own device's rows (seq goes on) and leaves the others there."""
    import json
    import logging

    legacy = tmp_path / "outbox.sqlite"
    old_layout_outbox(legacy, ["fer/lab-a/expression", "fer/lab-b/expression", "fer/lab-a/summary",
                               "fer/lab-b/expression", "fer/lab-a/expression"], seq=5)
    b = Outbox(tmp_path / "outbox" / "lab-b@h_1.sqlite")
    with caplog.at_level(logging.WARNING, "edge.outbox"):
        b.claim("lab-b", "h:1", legacy=legacy)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 of lab-a (broker not recorded)" in warnings[0] and str(legacy) in warnings[0]
    assert [(r.topic, json.loads(r.payload)["seq"]) for r in b.pending()] == [
        ("fer/lab-b/expression", 2), ("fer/lab-b/expression", 4)]
    new = {"v": 1}
    b.append("fer/lab-b/expression", new, seq_kind="expression")
    assert new["seq"] == 6  # goes on from the shared counter: never reuses a number
    assert [r[0] for r in _rows(legacy, "topic")] == ["fer/lab-a/expression", "fer/lab-a/summary", "fer/lab-a/expression"]
    b.close()
    a = Outbox(tmp_path / "outbox" / "lab-a@h_2.sqlite")
    a.claim("lab-a", "h:2", legacy=legacy)
    assert [r.topic for r in a.pending()] == ["fer/lab-a/expression", "fer/lab-a/summary", "fer/lab-a/expression"]
    assert _rows(legacy, "topic") == []
    # An explicit outbox.path to a file of the old layout: its own device's rows are stamped, the rest left.
    mixed = tmp_path / "mixed.sqlite"
    old_layout_outbox(mixed, ["fer/lab-a/expression", "fer/lab-b/expression"], seq=2)
    box = Outbox(mixed)
    box.claim("lab-b", "h:1")
    assert [r.topic for r in box.pending()] == ["fer/lab-b/expression"]
    assert _rows(mixed) == [("fer/lab-a/expression", None, None), ("fer/lab-b/expression", "lab-b", "h:1")]


def test_unwritable_path_is_a_config_error(tmp_path):
    import pytest

    from edge.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="outbox.path"):
        Outbox(blocker / "sub" / "o.sqlite")


def test_files_are_private_whatever_the_umask(tmp_path):
    """Under umask 022 the outbox, its WAL and a folder it creates are still 0600 / 0700."""
    old = os.umask(0o022)
    try:
        box = Outbox(tmp_path / "state" / "fer-edge" / "o.sqlite")
        box.append("t", "x", 1, False)
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "state") == 0o700 and mode(tmp_path / "state" / "fer-edge") == 0o700
    assert mode(box.path) == 0o600
    assert mode(Path(f"{box.path}-wal")) == 0o600
    box.close()


def test_seq_and_drop_counters_survive_restarts(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_events=2)
    payloads = [{"v": 1, "i": i} for i in range(5)]
    for p in payloads:
        box.append("fer/d/expression", p, seq_kind="expression")
    box.append("fer/d/summary", {"v": 1}, seq_kind="summary")
    assert [p["seq"] for p in payloads] == [1, 2, 3, 4, 5]
    assert box.drops["max_events"] == 4 and box.dropped == 4
    box.close()
    again = Outbox(tmp_path / "o.sqlite", max_events=2)
    assert again.last_seq("expression") == 5 and again.last_seq("summary") == 1
    assert again.drops["max_events"] == 4  # persisted, not restarting at 0
    nxt = {"v": 1}
    again.append("fer/d/expression", nxt, seq_kind="expression")
    assert nxt["seq"] == 6
    import json

    # max_events = 2 keeps the newest two rows: the summary and expression 6 (5 dropped, counted).
    assert [json.loads(r.payload)["seq"] for r in again.pending()] == [1, 6] and again.drops["max_events"] == 5


def test_wal_stays_bounded(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    for _ in range(20):
        ids = [box.append("t", "x" * 2000, 1, False) for _ in range(50)]
        for i in ids:
            box.delete(i)
    wal = Path(f"{box.path}-wal")
    assert box.depth == 0 and (not wal.exists() or wal.stat().st_size <= 512 * 1024), wal.stat().st_size


def test_below_min_free_mb_messages_wait_in_memory(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", min_free_mb=1e12)  # no disk has that much free
    rid = box.append("t", {"v": 1}, seq_kind="expression")
    assert rid < 0 and box.memory_depth == 1 and box.depth == 1
    assert box.pending() == [] and [r.memory for r in box.take_memory()] == [True]


def test_a_row_marked_delivered_is_not_sent_again(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    ids = [box.append("t", str(i), 1, False) for i in range(3)]
    box.close()
    db = sqlite3.connect(tmp_path / "o.sqlite")
    db.execute("UPDATE outbox SET delivered = 1 WHERE id = ?", (ids[0],))  # acked, its delete failed
    db.commit()
    db.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert again.depth == 2 and [r.id for r in again.pending()] == ids[1:]


def refuse_deletes(box: Outbox) -> None:
    """Make every DELETE on the outbox's own connection fail with a real SQLite error while UPDATEs
    still work: the case of a delete that fails and a "delivered" mark that is written."""
    box._db.execute("CREATE TEMP TRIGGER refuse_delete BEFORE DELETE ON outbox BEGIN SELECT RAISE(ABORT, 'delete refused'); END")


def test_a_row_marked_delivered_is_deleted_while_running(tmp_path):
    """Its delete is retried on the next ``retry_deletes()`` (each drain round), not only at the next open."""
    box = Outbox(tmp_path / "o.sqlite", min_free_mb=0)
    ids = [box.append("t", str(i), 1, False) for i in range(3)]

    def on_disk():
        db = sqlite3.connect(tmp_path / "o.sqlite")
        try:
            return db.execute("SELECT id, delivered FROM outbox ORDER BY id").fetchall()
        finally:
            db.close()

    refuse_deletes(box)
    box.delete(ids[0])  # acked: the DELETE fails, the mark is written
    assert box.depth == 2 and [r.id for r in box.pending()] == ids[1:]
    assert on_disk() == [(ids[0], 1), (ids[1], 0), (ids[2], 0)]
    box.retry_deletes()  # still refused: the row stays marked, not handed out
    assert on_disk() == [(ids[0], 1), (ids[1], 0), (ids[2], 0)] and [r.id for r in box.pending()] == ids[1:]
    box._db.execute("DROP TRIGGER refuse_delete")
    box.retry_deletes()
    assert on_disk() == [(ids[1], 0), (ids[2], 0)] and box.depth == 2
    box.delete(ids[1])
    assert on_disk() == [(ids[2], 0)]
