"""Dashboard storage on SQLite and on a real PostgreSQL server: dedupe, retention, queries, alerts."""

from __future__ import annotations

import json
import time

import pytest

from dashboard import queries
from dashboard.ingest import parse_message
from dashboard.store import Message, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(str(tmp_path / "dash.sqlite"))
    else:
        s = open_store(request.getfixturevalue("pg_url"))
    yield s
    s.close()


def expr(device, ts, face_id=1, expression="happy", seq=None, **extra):
    p = {"v": 1, "ts": ts, "device": device, "face_id": face_id, "expression": expression, "confidence": 0.8,
         "scores": {expression: 0.8}, "box": [0.1, 0.1, 0.2, 0.2], "frame": int(ts), "backend": "cpu", **extra}
    if seq is not None:
        p["seq"] = seq
    return Message(device, "expression", p, json.dumps(p).encode())


def summary(device, ts, faces, counts, seq=None):
    p = {"v": 1, "ts": ts, "device": device, "faces": faces, "counts": counts, "mean_scores": {}, "dominant": None,
         "window": {"start": ts - 30, "end": ts, "seconds": 30, "observations": sum(counts.values())}}
    if seq is not None:
        p["seq"] = seq
    return Message(device, "summary", p, json.dumps(p).encode())


def test_duplicates_by_seq_and_by_content_are_stored_once(store):
    now = time.time()
    first = [expr("d1", now, seq=1), expr("d1", now + 1, seq=2), expr("d2", now, seq=1)]
    assert store.write(first) == (3, 0)
    # at-least-once redelivery: same seq again (also within one batch); no-seq payloads dedupe on content
    again = [expr("d1", now, seq=1), expr("d1", now + 1, seq=2), expr("d1", now + 1, seq=2)]
    assert store.write(again) == (0, 3)
    legacy = expr("d3", now, face_id=4)
    assert store.write([legacy, legacy]) == (1, 1)
    # a device whose counter restarted (outbox wiped) is not mistaken for duplicates: ts differs
    assert store.write([expr("d1", now + 50, seq=1)]) == (1, 0)
    got = queries.expressions(store, "d1")
    assert [(e["seq"], e["ts"]) for e in got] == [(1, pytest.approx(now)), (2, pytest.approx(now + 1)), (1, pytest.approx(now + 50))]
    assert set(got[0]) >= {"ts", "face_id", "expression"}


def test_status_devices_and_stale(store):
    now = time.time()
    store.write([Message("cam-1", "status", "online", b"online", received=now - 500)])
    store.write([Message("cam-2", "status", "online", b"online", received=now)])
    stats = {"v": 1, "ts": now, "device": "cam-2", "fps": 14.5, "backend": "edgetpu", "outbox": {"depth": 3, "dropped": 0},
             "cpu_temp_c": 51.2, "faces": 2}
    store.write([Message("cam-2", "stats", stats, json.dumps(stats).encode())])
    devs = {d["device"]: d for d in queries.devices(store, stale_s=90, now=now)}
    assert devs["cam-1"]["status"] == "online" and devs["cam-1"]["stale"]
    assert devs["cam-2"]["stale"] is False
    assert (devs["cam-2"]["fps"], devs["cam-2"]["backend"], devs["cam-2"]["outbox_depth"]) == (14.5, "edgetpu", 3)
    store.write([Message("cam-2", "status", "offline", b"offline", received=now + 1)])
    store.write([Message("cam-2", "status", "offline", b"offline", received=now + 2, retained=True)])  # no new row
    assert {d["device"]: d["status"] for d in queries.devices(store, 90)} == {"cam-1": "online", "cam-2": "offline"}
    assert store.execute("SELECT COUNT(*) FROM statuses WHERE device = 'cam-2'")[0][0] == 2


def test_retention_deletes_old_rows(store):
    now = time.time()
    store.write([expr("old", now - 40 * 86400, seq=1), expr("new", now - 3600, seq=1),
                 summary("old", now - 31 * 86400, 1, {"happy": 3})])
    store.add_alert("old", "no_face", now - 35 * 86400, now - 35 * 86400, {})
    assert store.prune(30, now) == 6  # an expression, a summary, an alert and the 3 minutes they were counted in
    assert queries.expressions(store, "old") == [] and len(queries.expressions(store, "new")) == 1
    assert [d["device"] for d in queries.devices(store, 90)] == ["new"]


def test_classroom_mix_engagement_and_csv(store):
    now = time.time()
    store.write([summary("room", now - 60, 3, {"happy": 6, "neutral": 4, "sad": 0}),
                 summary("room", now - 30, 2, {"happy": 0, "neutral": 2, "sad": 2}),
                 summary("other", now - 30, 5, {"angry": 5})])
    data = queries.classroom(store, ["room"], now - 3600, now)
    assert [p["faces"] for p in data["points"]] == [3, 2]
    assert data["points"][0]["shares"]["happy"] == 0.6 and data["points"][0]["engagement"] == 80.0  # (6 + 2) / 10
    assert data["points"][1]["engagement"] == 25.0  # (0 + 1) / 4
    assert data["engagement"] == pytest.approx(100 * (6 + 0.5 * 6) / 14, abs=0.1)
    assert "E = 100" in data["formula"]
    csv = queries.classroom_csv(data).splitlines()
    assert csv[0].startswith("ts_iso,ts,faces,observations,engagement,share_angry")
    assert len(csv) == 3 and csv[1].split(",")[2] == "3"
    group = queries.classroom(store, ["room", "other"], now - 3600, now)
    assert sum(p["faces"] for p in group["points"]) == 10


def test_alert_rows_and_ack(store):
    aid = store.add_alert("drv", "negative_expression", 100.0, 105.0, {"face_id": 1})
    assert [a["state"] for a in queries.alerts(store, "drv", active=True)] == ["raised"]
    assert store.ack_alert(aid, "ops") and not store.ack_alert(aid + 1000)
    store.clear_alert(aid, 120.0)
    a = queries.alerts(store, "drv")[0]
    assert (a["state"], a["acked"], a["acked_by"], a["cleared_ts"]) == ("cleared", True, "ops", 120.0)
    assert queries.alerts(store, "drv", active=True) == []


def test_payload_parsing():
    assert parse_message("fer", "fer/x/alert", b'{"v": 1}', False, 0.0) is None  # the dashboard's own kind
    assert parse_message("fer", "other/x/stats", b'{"v": 1, "ts": 1}', False, 0.0) is None
    assert parse_message("fer", "fer/x/stats", b"not json", False, 0.0) is None
    assert parse_message("fer", "fer/x/stats", b'{"v": 2, "ts": 1}', False, 0.0) is None  # unknown version
    assert parse_message("a/b", "a/b/x/expression", b'{"v": 1, "ts": 1}', False, 0.0).device == "x"
    m = parse_message("fer", "fer/x/status", b"online", True, 5.0)
    assert (m.device, m.kind, m.payload, m.retained, m.ts) == ("x", "status", "online", True, 5.0)


def test_a_failed_batch_is_retried_not_lost(tmp_path):
    from dashboard.config import load_dashboard_config
    from dashboard.ingest import Feed

    cfg = load_dashboard_config(None, {"db": str(tmp_path / "f.sqlite")})
    store = open_store(cfg.db)
    feed = Feed(cfg, store)  # not started: only its write path is used
    real, calls = store.write, []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("deadlock detected")
        return real(batch)

    store.write = flaky
    assert feed._write([expr("d", time.time(), seq=1)]) == (1, 0) and calls == [1, 1]
    store.close()


def test_postgres_restart_reconnects_readers_and_the_ingest(tmp_path):
    from bench.servers import Postgres
    from dashboard.config import load_dashboard_config
    from dashboard.ingest import Feed

    with Postgres() as pg:  # in /tmp: the postgres user cannot enter pytest's private tmp_path
        url = pg.create_database()
        store = open_store(url)
        feed = Feed(load_dashboard_config(None, {"db": url}), store)  # not started: only its write path
        assert feed._write([expr("d", time.time(), seq=1)]) == (1, 0)
        pg.restart()
        with pytest.raises(Exception):
            store.execute("SELECT 1")  # this query saw the server go away...
        assert store.execute("SELECT COUNT(*) FROM expressions") == [(1,)]  # ...the next one reconnects
        pg.restart()
        assert feed._write([expr("d", time.time(), seq=2)]) == (1, 0)  # retried on a fresh connection
        store.close()
