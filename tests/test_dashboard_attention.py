"""Attention on the dashboard, SQLite and a real PostgreSQL server: attention messages and the device's own alerts
stored once (raw tier, per-minute rollups), classroom series and CSV of devices that infer no emotions, the
schema 2 -> 3 upgrade, and the API routes (FastAPI's TestClient). Payloads come from the device's builders
(``edge.payloads``), as the daemon sends them."""

from __future__ import annotations

import json
import time

import pytest

from dashboard import queries
from dashboard.ingest import parse_message
from dashboard.rollups import ATTENTION_COLUMNS, minute_of
from dashboard.store import SCHEMA_VERSION, Message, open_store
from edge import payloads

DAY = 86400.0


def msg(kind: str, p: dict) -> Message:
    return Message(p["device"], kind, p, payloads.encode(p))


def attention(device, ts, seq, perclos=0.1, events=(), face_id=1, eyes_closed=False, yaw=2.0, looking=True):
    snapshot = {"eye_openness": [0.1, 0.1] if eyes_closed else [0.9, 0.95], "eyes_closed": eyes_closed,
                "closed_s": 0.0, "mouth_open": 0.05, "yaw": yaw, "pitch": -3.0, "roll": 1.0, "perclos": perclos,
                "blinks_per_min": 12.0, "long_closures_per_min": 0.0, "yawns": 0, "off_road_s": 0.0,
                "drowsy": False, "distracted": False, "yawning": False}
    return msg("attention", payloads.attention_event(device, face_id, (10, 10, 50, 50), int(ts * 15), ts, (640, 480),
                                                     snapshot, list(events), looking, seq=seq))


def device_alert(device, kind, state, since, ts, seq, detail="eyes off the road for 3.5 s"):
    p = payloads.alert_event(device, kind, state, since, detail, ts=ts, source="device", face_id=1)
    return msg("alert", {**p, "seq": seq})


def no_emotion_summary(device, ts, faces, looking_share, observations, seq):
    att = {"faces": faces, "observations": observations, "looking_share": looking_share}
    return msg("summary", payloads.summary_event(device, ts, faces, None, None, ts - 1, ts, observations, seq=seq,
                                                 attention=att))


def test_attention_and_device_alerts_are_stored_once_with_their_rollups(db_url):
    t0 = minute_of(time.time()) - 600
    closure = {"type": "long_closure", "start": t0 + 3, "duration": 1.0}
    batch = [attention("drv", t0 + 1, 1, perclos=0.1), attention("drv", t0 + 2, 2, perclos=0.3, events=[closure]),
             attention("drv", t0 + 3, 3, perclos=0.2, events=[{"type": "blink", "start": t0 + 2.5, "duration": 0.2},
                                                              {"type": "yawn", "start": t0, "duration": 1.6}]),
             device_alert("drv", "distracted", "raised", t0 + 10, t0 + 13.5, 1)]
    clear = device_alert("drv", "distracted", "cleared", t0 + 13.5, t0 + 20, 2, "back on the road")
    store = open_store(db_url)
    assert store.write(batch) == (4, 0)
    assert store.write(batch + [clear]) == (1, 4)  # redelivered: only the clear is new
    assert store.write([clear, batch[-1]]) == (0, 2)  # a clear and a raise again after the cycle closed
    (alert,) = queries.alerts(store, "drv")
    assert (alert["kind"], alert["state"], alert["source"], alert["since"], alert["ts"], alert["cleared_ts"]) == \
        ("distracted", "cleared", "device", t0 + 10, t0 + 13.5, t0 + 20)
    assert alert["detail"] == {"text": "eyes off the road for 3.5 s", "face_id": 1, "source": "device"}
    (group,) = queries.alert_groups(store, "drv")
    assert (group["kind"], group["source"], group["count"], group["active"]) == ("distracted", "device", 1, None)

    (minute,) = queries.minutes(store, "drv", t0 - 1, t0 + 59)
    a = minute["attention"]
    assert (a["messages"], a["perclos_max"], a["perclos_mean"]) == (3, 0.3, 0.2)
    assert (a["blinks"], a["long_closures"], a["yawns"], a["off_road_events"]) == (1, 1, 1, 0)
    assert minute["alerts"] == 1 and minute["events"] == 0 and minute["summaries"] == 0
    events = queries.attention_events(store, "drv")
    assert [(e["type"], e["start"]) for e in events] == [("long_closure", t0 + 3), ("blink", t0 + 2.5), ("yawn", t0)]
    rows = queries.attention(store, "drv")
    assert [r["seq"] for r in rows] == [1, 2, 3] and rows[1]["perclos"] == 0.3 and rows[0]["eye_openness"] == [0.9, 0.95]

    # A clear whose raise was never stored still shows the cycle, once.
    orphan = device_alert("drv", "drowsy", "cleared", t0 + 30, t0 + 40, 3, "eyes open again")
    assert store.write([orphan]) == (1, 0) and store.write([orphan]) == (0, 1)
    drowsy = queries.alerts(store, "drv", kind="drowsy")
    assert [(x["state"], x["ts"], x["cleared_ts"]) for x in drowsy] == [("cleared", t0 + 30, t0 + 40)]

    # Two ingest workers: a clear stored before its raise; the raise completes the cycle (once).
    raise_, clear_ = (device_alert("drv", "yawning", "raised", t0 + 50, t0 + 52, 4, "3 yawns in 5 min"),
                      device_alert("drv", "yawning", "cleared", t0 + 52, t0 + 58, 5, "no yawn for 5 min"))
    assert store.write([clear_]) == (1, 0) and store.write([raise_]) == (1, 0)
    assert store.write([raise_, clear_]) == (0, 2)
    yawning = queries.alerts(store, "drv", kind="yawning")
    assert [(x["state"], x["since"], x["ts"], x["cleared_ts"], x["detail"]["text"]) for x in yawning] == \
        [("cleared", t0 + 50, t0 + 52, t0 + 58, "3 yawns in 5 min")]

    # Raw attention rows go with the raw window; their rollups and the alerts stay.
    store.prune(365, now=t0 + 2 * DAY, raw_days=1)
    assert queries.attention(store, "drv") == [] and queries.attention_events(store, "drv") == []
    assert queries.minutes(store, "drv", t0 - 1, t0 + 59)[0]["attention"]["long_closures"] == 1
    assert len(queries.alerts(store, "drv")) == 3
    store.close()


def test_the_dashboards_own_alerts_are_not_taken_in_again():
    topic = "fer/cam/alert"
    own = payloads.alert_event("cam", "no_face", "raised", 1.0, "no face for 30 s", ts=2.0)
    tagged = {**own, "source": "dashboard"}
    device = payloads.alert_event("cam", "drowsy", "raised", 1.0, "PERCLOS 0.2", ts=2.0, source="device", face_id=3)
    assert parse_message("fer", topic, payloads.encode(own), False, 3.0) is None
    assert parse_message("fer", topic, payloads.encode(tagged), False, 3.0) is None
    m = parse_message("fer", topic, payloads.encode(device), False, 3.0)
    assert (m.kind, m.device, m.payload["kind"]) == ("alert", "cam", "drowsy")
    a = parse_message("fer", "fer/cam/attention", payloads.encode(attention("cam", 5.0, 1).payload), False, 6.0)
    assert (a.kind, a.seq) == ("attention", 1)


@pytest.mark.parametrize("tier", ["raw", "minutes"])
def test_classroom_without_emotions_shows_presence_and_looking_share(db_url, tier):
    t0 = minute_of(time.time()) - 3600
    store = open_store(db_url)
    store.write([no_emotion_summary("room", t0 + 10, 3, 0.5, 60, 1), no_emotion_summary("room", t0 + 40, 4, 1.0, 20, 2),
                 no_emotion_summary("room", t0 + 70, 2, None, 0, 3)])
    data = queries.classroom(store, ["room"], t0, t0 + 600, tier=tier)
    assert data["emotions"] is False and "labels" not in data and "engagement" not in data
    assert data["looking_share"] == round((0.5 * 60 + 1.0 * 20) / 80, 4)
    for p in data["points"]:
        assert not {"counts", "shares", "observations", "engagement"} & set(p)
    if tier == "raw":
        assert [(p["faces"], p["faces_read"], p["looking_share"]) for p in data["points"]] == \
            [(3, 3, 0.5), (4, 4, 1.0), (2, 2, None)]
    else:  # one point per minute: the minute's most faces, its observations' share
        assert [(p["faces"], p["faces_read"], p["looking_share"]) for p in data["points"]] == \
            [(4, 4, 0.625), (2, 2, None)]
    csv = queries.classroom_csv(data).splitlines()
    assert csv[0] == "ts_iso,ts,faces,faces_read,looking_share"
    assert csv[-1].endswith(",2,2,")
    minute = queries.minutes(store, "room", t0, t0 + 59)[0]
    assert minute["emotion_summaries"] == 0 and minute["observations"] == 0 and minute["attention"]["looking_share"] == 0.625
    store.close()


def test_classroom_with_emotions_keeps_its_mix_and_adds_the_attention_columns(db_url):
    t0 = time.time() - 100
    store = open_store(db_url)
    store.write([msg("summary", payloads.summary_event("mix", t0, 2, {"happy": 3, "sad": 1}, {}, t0 - 1, t0, 4, seq=1,
                                                       attention={"faces": 2, "observations": 4, "looking_share": 0.75}))])
    data = queries.classroom(store, ["mix"], t0 - 10, t0 + 10)
    assert data["emotions"] is True and data["engagement"] == 75.0 and data["looking_share"] == 0.75
    head = queries.classroom_csv(data).splitlines()[0]
    assert head.startswith("ts_iso,ts,faces,observations,engagement,share_angry") and head.endswith(",faces_read,looking_share")
    store.close()


def test_a_schema_2_database_gets_the_attention_columns_from_its_raw_summaries(db_url, tmp_path):
    """A database as schema 2 left it (this store's tables without what schema 3 added, dropped here; meta 2):
    the upgrade sets ``counted`` at start and schedules the rest, which steps add (a restart in the middle, two
    stores taking turns, a summary stored meanwhile) to equal the same messages stored by schema 3; no raw row
    is pruned before. A minute whose raw summaries were pruned under schema 2 keeps its assumption."""
    from tests.test_dashboard_tiers import _same

    t0 = minute_of(time.time()) - 1800
    old = t0 - 3 * DAY  # its raw summary is pruned under schema 2, its minute is kept
    msgs = [no_emotion_summary("room", t0 + 5 + 10 * i, 3 + i % 2, 0.5, 30, 1 + i) for i in range(8)]
    msgs += [msg("summary", payloads.summary_event("mix", t0 + 5, 1, {"happy": 2}, {}, t0, t0 + 5, 2, seq=1)),
             no_emotion_summary("room", old + 5, 2, 1.0, 10, 99)]
    store = open_store(db_url)
    store.write(msgs)
    for c in ATTENTION_COLUMNS:
        store.execute(f"ALTER TABLE minutes DROP COLUMN {c}")
    store.execute("DROP INDEX alerts_device_dkey")
    for c in ("source", "dkey"):
        store.execute(f"ALTER TABLE alerts DROP COLUMN {c}")
    store.execute("DROP TABLE attention")
    store.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    store.execute("DELETE FROM summaries WHERE ts < ?", (t0 - DAY,))
    store.close()

    store = open_store(db_url)  # the upgrade: counted = summaries, the raw summaries' columns scheduled
    assert store.execute("SELECT value FROM meta WHERE key = 'schema'") == [(str(SCHEMA_VERSION),)]
    assert store.execute("SELECT key FROM meta WHERE key LIKE ?", ("backfill:%",)) == [("backfill:summaries_v3",)]
    assert queries.minutes(store, "room", t0, t0 + 59)[0]["emotion_summaries"] == 6  # not stepped yet
    store.prune(365, time.time() + DAY, raw_days=0.5)  # pending: no raw row may go
    assert store.execute("SELECT COUNT(*) FROM summaries") == [(9,)]
    late = no_emotion_summary("room", t0 + 50, 4, 0.25, 20, 100)  # the ingest goes on meanwhile
    assert store.write([late]) == (1, 0)
    assert store.backfill_step(chunk=3) == 3
    store.close()  # a restart in the middle
    worker_a, worker_b = open_store(db_url), open_store(db_url)
    while worker_a.backfill_step(chunk=1) + worker_b.backfill_step(chunk=1):
        pass
    assert worker_a.execute("SELECT COUNT(*) FROM meta WHERE key LIKE ?", ("backfill:%",)) == [(0,)]

    ref = open_store(str(tmp_path / "reference.sqlite"))  # the same messages stored by schema 3
    ref.write([*msgs[:-1], late])
    for d in ("room", "mix"):
        got, want = queries.minutes(worker_a, d, t0, t0 + 3600), queries.minutes(ref, d, t0, t0 + 3600)
        assert len(got) == len(want) >= 1
        _same(got, want)
    room = queries.minutes(worker_a, "room", t0, t0 + 60)
    assert [m["emotion_summaries"] for m in room] == [0, 0] and room[0]["attention"]["faces_read"] == 4
    assert [m["attention"]["looking_share"] for m in room] == [0.475, 0.5]
    kept = queries.minutes(worker_a, "room", old - 60, old + 60)  # schema 2 counted it as a summary with counts
    assert [(m["summaries"], m["emotion_summaries"], m["attention"]) for m in kept] == [(1, 1, None)]
    assert queries.classroom(worker_a, ["room"], t0, t0 + 600, tier="minutes")["emotions"] is False
    t1 = time.time()
    assert worker_a.write([attention("room", t1, 1), device_alert("room", "yawning", "raised", t1 - 60, t1, 1)]) == (2, 0)
    assert worker_a.prune(365, time.time() + DAY, raw_days=0.5) > 0  # done: raw rows go again
    for s in (worker_a, worker_b, ref):
        s.close()
    again = open_store(db_url)  # opening again schedules nothing
    assert again.backfill_step() == 0
    again.close()


def test_api_routes_for_attention(tmp_path):
    from tests.test_dashboard_api import client_for

    client, store, live = client_for(tmp_path)
    now = round(time.time(), 3)  # the payloads' precision
    closure = {"type": "long_closure", "start": now - 4, "duration": 1.0}
    stats = payloads.stats_event("drv", now - 6, 15.0, {}, "cpu", 10, 0, 0, 0, 5.0, None, {}, 1, True, role="driver")
    batch = [Message("drv", "status", "online", b"online"), msg("stats", stats),
             attention("drv", now - 3, 1, perclos=0.25, events=[closure]),
             device_alert("drv", "drowsy", "raised", now - 4, now - 2, 1, "long closures 3 in 60 s")]
    store.write(batch)
    live.on_batch(batch)
    rows = client.get("/api/devices/drv/attention", params={"since": now - 60}).json()
    assert [(r["perclos"], r["events"]) for r in rows] == [(0.25, [closure])]
    events = client.get("/api/devices/drv/attention/events").json()
    assert [(e["type"], e["face_id"]) for e in events] == [("long_closure", 1)]
    driver = client.get("/api/devices/drv/driver").json()
    assert driver["attention"]["perclos"] == 0.25 and driver["attention"]["yaw"] == 2.0
    (group,) = driver["alert_groups"]
    assert (group["kind"], group["source"], group["active"]["detail"]["text"]) == \
        ("drowsy", "device", "long closures 3 in 60 s")
    minutes = client.get("/api/devices/drv/minutes", params={"since": now - 120}).json()
    assert sum((m["attention"] or {}).get("long_closures", 0) for m in minutes) == 1
    _, alert_events = live.since(0, kinds={"alert", "attention"})
    assert [e["type"] for e in alert_events] == ["attention", "alert"] and alert_events[1]["source"] == "device"
    for path in ("/api/devices/nope/attention", "/api/devices/nope/attention/events"):
        r = client.get(path)
        assert r.status_code == 404 and "no device 'nope'" in r.json()["detail"]
    stored = json.loads(store.execute("SELECT detail FROM alerts")[0][0])
    assert stored["source"] == "device"


def test_a_schema_2_database_with_its_1_to_2_backfill_pending_counts_each_summary_once(db_url, tmp_path):
    """Schema 2 left with the summaries of its upgrade from 1 not all rolled up (``backfill:summaries``): that
    job goes on with every column and the 2 -> 3 job takes only the summaries schema 2 had rolled up."""
    from tests.test_dashboard_tiers import _same

    t0 = minute_of(time.time()) - 1800
    msgs = [no_emotion_summary("room", t0 + 5 + 7 * i, 2 + i % 3, 0.5 if i % 2 else 1.0, 10 + i, 1 + i) for i in range(12)]
    msgs.append(msg("summary", payloads.summary_event("room", t0 + 9, 1, {"sad": 2}, {}, t0, t0 + 9, 2, seq=50)))
    ref = open_store(str(tmp_path / "reference.sqlite"))
    ref.write(msgs)
    store = open_store(db_url)
    store.write(msgs[:6])  # rolled up by schema 2 (at ingest, or by its backfill's steps done)
    cols = "device, ts, seq, faces, payload, received, dkey"
    low, done = store.execute("SELECT MIN(id), MAX(id) FROM summaries")[0]
    have = {r[0] for r in store.execute("SELECT dkey FROM summaries")}
    pending = [r for r in ref.execute(f"SELECT {cols} FROM summaries ORDER BY id") if r[-1] not in have]
    assert len(pending) == 7
    for row in pending:  # stored before the 1 -> 2 upgrade, not rolled up yet
        store.execute(f"INSERT INTO summaries ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
    high = store.execute("SELECT MAX(id) FROM summaries")[0][0]
    store.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("backfill:summaries", f"{done}:{high}"))
    for c in ATTENTION_COLUMNS:
        store.execute(f"ALTER TABLE minutes DROP COLUMN {c}")
    store.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    store.close()

    store = open_store(db_url)
    assert sorted(store.execute("SELECT key, value FROM meta WHERE key LIKE ?", ("backfill:%",))) == \
        [("backfill:summaries", f"{done}:{high}"), ("backfill:summaries_v3", f"{low - 1}:{done}")]
    while store.backfill_step(chunk=4):
        pass
    got, want = queries.minutes(store, "room", t0, t0 + 3600), queries.minutes(ref, "room", t0, t0 + 3600)
    assert len(got) == len(want) == 2 and sum(m["summaries"] for m in got) == 13
    _same(got, want)
    assert sum(m["emotion_summaries"] for m in got) == 1
    store.close()
    ref.close()
