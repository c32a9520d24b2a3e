"""SQLite outbox: durable, ordered, bounded (oldest dropped and counted), survives kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from pathlib import Path

from edge.outbox import Outbox, OutboxConfig, default_outbox_path, resolve_outbox_path

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


def test_default_path_uses_state_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    assert default_outbox_path() == tmp_path / "a" / "outbox.sqlite"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert default_outbox_path().parts[-3:] == ("state", "fer-edge", "outbox.sqlite")
    assert resolve_outbox_path(OutboxConfig(path=str(tmp_path / "x.db"))) == tmp_path / "x.db"


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
