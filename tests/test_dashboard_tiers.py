"""Dashboard storage tiers on SQLite and a real PostgreSQL server: raw events for ``raw_days``, per-minute
rollups for ``retention_days``, built once per stored row, read by the classroom view and its CSV by window,
and the upgrade of a database written by the schema-1 store (tests/dashboard_store_v1.py)."""

from __future__ import annotations

import json
import random
import time

import pytest

from dashboard import queries
from dashboard.rollups import LABELS, minute_of
from dashboard.store import SCHEMA_VERSION, Message, open_store
from edge.errors import ConfigError
from tests.mqtt_broker import mqtt_broker  # noqa: F401
from tests.test_dashboard_store import expr, summary

DAY = 86400.0


def scored(device, ts, expression, seq, scores):
    return expr(device, ts, expression=expression, seq=seq, scores=scores)


def test_rollups_count_each_stored_row_once_across_redelivery_and_restart(db_url):
    t0 = minute_of(time.time()) - 3600
    batch = [scored("cam", t0 + 1, "happy", 1, {"happy": 0.75, "sad": 0.25}),
             scored("cam", t0 + 2, "sad", 2, {"happy": 0.25, "sad": 0.75}),
             scored("cam", t0 + 2, "sad", 2, {"happy": 0.25, "sad": 0.75}),  # redelivered within the batch
             scored("cam", t0 + 61, "neutral", 3, {"neutral": 1.0}),
             summary("cam", t0 + 30, 3, {"happy": 6, "sad": 2}, seq=1),
             summary("cam", t0 + 59, 1, {"neutral": 4}, seq=2)]
    store = open_store(db_url)
    assert store.write(batch) == (5, 1)
    alert_id = store.add_alert("cam", "no_face", t0 + 5, t0 + 5, {})
    assert store.write(batch) == (0, 6)  # at-least-once: everything again, nothing added
    store.close()
    store = open_store(db_url)  # a restart: schema recorded, nothing rebuilt or doubled
    assert store.execute("SELECT value FROM meta WHERE key = 'schema'") == [(str(SCHEMA_VERSION),)]
    assert store.write(batch[:3]) == (0, 3)
    first, second = queries.minutes(store, "cam", t0 - 60, t0 + 600)
    assert (first["ts"], first["events"], first["summaries"], first["faces_max"], first["faces_mean"]) == (t0, 2, 2, 3, 2.0)
    assert first["expressions"]["happy"] == first["expressions"]["sad"] == 1
    assert first["mean_scores"]["happy"] == first["mean_scores"]["sad"] == 0.5 and first["mean_scores"]["neutral"] == 0.0
    assert first["observations"] == 12 and (first["counts"]["happy"], first["counts"]["neutral"]) == (6, 4)
    assert first["alerts"] == 1 and queries.alerts(store, "cam")[0]["id"] == alert_id
    assert (second["ts"], second["events"], second["expressions"]["neutral"], second["summaries"]) == (t0 + 60, 1, 1, 0)
    assert second["faces_mean"] is None and second["alerts"] == 0
    store.close()


def test_prune_keeps_the_rollups_after_the_raw_window(db_url):
    now = time.time()
    store = open_store(db_url)
    store.write([expr("cam", now - 10 * DAY, seq=1), expr("cam", now - 3 * DAY, seq=2),
                 summary("cam", now - 10 * DAY, 2, {"happy": 3}, seq=1), expr("cam", now - 400 * DAY, seq=3)])
    store.add_alert("cam", "no_face", now - 10 * DAY, now - 10 * DAY, {})
    # raw: 2 expressions and a summary older than 7 days; kept tier: the 400-day-old minute
    assert store.prune(365, now, raw_days=7) == 4
    assert [e["seq"] for e in queries.expressions(store, "cam")] == [2]
    assert store.execute("SELECT COUNT(*) FROM summaries") == [(0,)]
    old, recent = queries.minutes(store, "cam")  # the 10-day-old minute and the 3-day-old one
    assert (old["ts"], recent["ts"]) == (minute_of(now - 10 * DAY), minute_of(now - 3 * DAY))
    assert (old["events"], old["observations"], old["faces_max"], old["alerts"]) == (1, 3, 2, 1)
    assert recent["events"] == 1 and len(queries.alerts(store, "cam")) == 1
    store.close()


def lesson(device, start, minutes, rng, faces=None, seq0=1):
    """A summary every 30 s for ``minutes`` minutes, random counts (the device's window of 30 s)."""
    out = []
    for i in range(minutes * 2):
        counts = {label: rng.randint(0, 12) for label in LABELS}
        out.append(summary(device, start + 30 * i + rng.uniform(0, 29), faces or rng.randint(0, 8), counts, seq=seq0 + i))
    return out


def test_classroom_tiers_agree_and_the_window_picks_one(db_url):
    rng = random.Random(3)
    now = time.time()
    start = minute_of(now - 3 * 3600)
    store = open_store(db_url)
    store.write(lesson("room", start, 150, rng) + lesson("room-2", start, 150, rng))
    until = start + 150 * 60
    for devices in (["room"], ["room", "room-2"]):
        raw = queries.classroom(store, devices, start, until, tier="raw")
        mins = queries.classroom(store, devices, start, until, tier="minutes")
        assert (raw["tier"], mins["tier"], mins["resolution_s"]) == ("raw", "minutes", 60.0)
        assert mins["engagement"] == raw["engagement"] is not None
        assert sum(p["observations"] for p in mins["points"]) == sum(p["observations"] for p in raw["points"]) > 0
        for label in LABELS:
            assert sum(p["counts"][label] for p in mins["points"]) == sum(p["counts"][label] for p in raw["points"])
    assert len(queries.classroom(store, ["room"], start, until, tier="raw")["points"]) == 300  # one per summary
    assert len(queries.classroom(store, ["room"], start, until, tier="minutes")["points"]) == 150
    raw_since = now - 7 * DAY
    assert queries.tier_for(now - 3600, now, raw_since) == "raw"
    assert queries.tier_for(now - 8 * DAY, now - 8 * DAY + 3600, raw_since) == "minutes"  # before the raw window
    assert queries.tier_for(now - DAY, now, raw_since) == "minutes"  # longer than 400 minutes
    month = queries.classroom(store, ["room"], now - 30 * DAY, now, raw_since=raw_since)
    assert month["tier"] == "minutes" and month["resolution_s"] in (108 * 60, 109 * 60)  # 400 points at most
    assert len(month["points"]) in (2, 3)  # 150 minutes in buckets of 108 or 109
    lesson_total = queries.classroom(store, ["room"], start, until, tier="raw")
    assert sum(p["observations"] for p in month["points"]) == sum(p["observations"] for p in lesson_total["points"])
    store.close()


def test_the_api_and_csv_read_the_rollups_beyond_the_raw_window(db_url, tmp_path):
    from fastapi.testclient import TestClient

    from dashboard.config import load_dashboard_config
    from dashboard.live import Live
    from dashboard.web import create_app

    rng = random.Random(5)
    cfg = load_dashboard_config(None, {"db": db_url, "raw_days": 7, "retention_days": 365})
    store = open_store(cfg.db)
    start = minute_of(time.time() - 10 * DAY)
    store.write(lesson("room", start, 60, rng, faces=4))
    before = queries.classroom(store, ["room"], start, start + 3600, tier="raw")
    store.prune(cfg.retention_days, raw_days=cfg.raw_days)
    assert store.execute("SELECT COUNT(*) FROM summaries") == [(0,)]
    client = TestClient(create_app(cfg, store, Live(cfg, store)))
    window = {"devices": "room", "since": start, "until": start + 3600}
    room = client.get("/api/classroom", params=window).json()
    assert room["tier"] == "minutes" and len(room["points"]) == 60 and {p["faces"] for p in room["points"]} == {4}
    assert room["engagement"] == before["engagement"] is not None
    csv = client.get("/api/classroom.csv", params=window)
    assert csv.headers["x-fer-tier"] == "minutes" and len(csv.text.splitlines()) == 61
    got = client.get("/api/devices/room/minutes", params={"since": start, "until": start + 3600}).json()
    assert len(got) == 60 and sum(m["observations"] for m in got) == sum(p["observations"] for p in before["points"])
    assert client.get("/api/devices/room/expressions", params={"since": start}).json() == []  # raw is gone
    assert client.get("/api/config").json()["raw_days"] == 7
    store.close()


def v1_history(v1, now):
    """What a schema-1 dashboard stored: 12 days of two devices, lessons, events with scores, an alert."""
    rng = random.Random(11)
    msgs, seq = [], 0
    for day in range(12):
        for device in ("room", "bus"):
            start = minute_of(now - (12 - day) * DAY + 9 * 3600)
            for m in lesson(device, start, 20, rng, seq0=1000 * day + 1):
                msgs.append(v1.Message(m.device, m.kind, m.payload, m.raw))
            for i in range(30):
                seq += 1
                label = rng.choice(LABELS)
                p = expr(device, start + 40 * i, expression=label, seq=seq,
                         scores={x: round(rng.random(), 4) for x in LABELS}).payload
                msgs.append(v1.Message(device, "expression", p, json.dumps(p).encode()))
    return msgs


def schema_1_database(db_url, now):
    """A database written by the schema-1 store (``tests/dashboard_store_v1.py``): its messages and, per
    device, its classroom series over the whole history."""
    from tests import dashboard_store_v1 as v1

    msgs = v1_history(v1, now)
    old = v1.open_store(db_url)  # the store as it is on main today, writing its own tables
    assert old.write(msgs)[0] == len(msgs)
    old.add_alert("bus", "no_face", now - 11 * DAY, now - 11 * DAY, {"faces": 0})
    before = {d: queries.classroom(old, [d], now - 13 * DAY, now, tier="raw") for d in ("room", "bus")}
    old.close()
    return msgs, before


def test_a_schema_1_database_is_migrated_with_its_history(db_url, tmp_path):
    now = time.time()
    msgs, before = schema_1_database(db_url, now)
    raw_rows = len(msgs) + 1

    store = open_store(db_url)  # the upgrade: schema recorded, the rollups of the stored rows scheduled
    assert store.execute("SELECT value FROM meta WHERE key = 'schema'") == [(str(SCHEMA_VERSION),)]
    assert store.execute("SELECT COUNT(*) FROM minutes") == [(0,)]
    summaries = store.execute("SELECT COUNT(*) FROM summaries")[0][0]
    store.prune(365, now, raw_days=7)  # not rolled up yet: no raw row may go
    assert store.execute("SELECT COUNT(*) FROM summaries")[0][0] == summaries
    assert store.backfill_step(chunk=100) == 100
    store.close()  # a restart in the middle of the backfill
    worker_a, worker_b = open_store(db_url), open_store(db_url)  # two workers take turns
    done = 100
    while True:
        n = worker_a.backfill_step(chunk=300) + worker_b.backfill_step(chunk=300)
        if not n:
            break
        done += n
    assert done >= raw_rows and worker_a.backfill_step() == 0
    ref = open_store(str(tmp_path / "reference.sqlite"))  # the same messages ingested by today's store
    ref.write([Message(m.device, m.kind, m.payload, m.raw) for m in msgs])
    ref.add_alert("bus", "no_face", now - 11 * DAY, now - 11 * DAY, {"faces": 0})
    for d in ("room", "bus"):
        got, want = queries.minutes(worker_a, d, limit=100000), queries.minutes(ref, d, limit=100000)
        assert len(got) == len(want) >= 12 * 20  # 20 minutes a day (and the alert's)
        _same(got, want)
    assert worker_a.prune(365, now, raw_days=7) > 0  # rolled up: 5 days of raw rows go
    assert worker_a.execute("SELECT MIN(ts) FROM summaries")[0][0] > now - 7 * DAY
    for d in ("room", "bus"):
        after = queries.classroom(worker_a, [d], now - 13 * DAY, now, raw_since=now - 7 * DAY)
        assert after["tier"] == "minutes" and after["engagement"] == before[d]["engagement"] is not None
        assert sum(p["observations"] for p in after["points"]) == sum(p["observations"] for p in before[d]["points"])
    assert sum(m["alerts"] for m in queries.minutes(worker_a, "bus", limit=100000)) == 1
    worker_a.close()
    worker_b.close()
    again = open_store(db_url)  # opening again migrates nothing more
    assert again.backfill_step() == 0
    assert sum(m["events"] for m in queries.minutes(again, "room", limit=100000)) == 12 * 30
    again.close()
    ref.close()


def test_a_dashboard_started_on_a_schema_1_database_builds_its_rollups_while_it_ingests(tmp_path, mqtt_broker):
    from tests.dashboard_run import Dashboard
    from tests.daemon_run import wait_until

    db = str(tmp_path / "dash.sqlite")
    now = time.time()
    msgs, before = schema_1_database(db, now)
    dash = Dashboard(tmp_path, mqtt_broker, db).wait_ready()
    try:
        assert wait_until(lambda: "per-minute rollups are built" in dash.stderr(), 60), dash.stderr()[-2000:]
        for d in ("room", "bus"):
            got = dash.get(f"/api/classroom?devices={d}&since={now - 13 * DAY}&until={now}")
            assert got["tier"] == "minutes" and got["engagement"] == before[d]["engagement"]
        assert sum(m["events"] for m in dash.get(f"/api/devices/room/minutes?since={now - 13 * DAY}&limit=100000")) == 360
    finally:
        assert dash.stop() == 0, dash.stderr()[-2000:]
    assert f"schema 1 -> {SCHEMA_VERSION}" in dash.stderr()


def _same(got: list[dict], want: list[dict]) -> None:
    for g, w in zip(got, want):
        for key, value in w.items():
            if key == "mean_scores":  # PostgreSQL's REAL sums in single precision
                assert g[key] == pytest.approx(value, abs=2e-4), (g["ts"], key)
            else:
                assert g[key] == value, (g["ts"], key)


def test_a_newer_schema_is_refused_and_raw_days_must_fit_the_retention(db_url):
    store = open_store(db_url)
    store.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    store.close()
    with pytest.raises(ConfigError, match="schema 99, newer than this fer-edge's"):
        open_store(db_url)
    from dashboard.config import load_dashboard_config

    cfg = load_dashboard_config(None, {})
    assert (cfg.raw_days, cfg.retention_days) == (7, 365)
    with pytest.raises(ConfigError, match=r"raw_days \(30\) is longer than retention_days \(10\)"):
        load_dashboard_config(None, {"raw_days": 30, "retention_days": 10})


def test_cli_raw_days_and_retention_days_reach_the_config():
    import argparse

    from dashboard.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    cfg = config_from_args(parser.parse_args(["dashboard", "--raw-days", "3", "--retention-days", "90"]))
    assert (cfg.raw_days, cfg.retention_days) == (3, 90)


def test_the_classroom_page_says_which_tier_it_shows(tmp_path, mqtt_broker):
    """Real chromium on a real dashboard process: the last 30 days come from the rollups (raw pruned after
    7 days), the last hour from the raw summaries, and the page names the tier it shows."""
    import os

    from tests.dashboard_run import CHROMIUM, Dashboard, launch_chromium

    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium (make setup-dev)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    rng = random.Random(7)
    db = str(tmp_path / "dash.sqlite")
    store = open_store(db)
    now = time.time()
    msgs = [m for day in (20, 12, 9) for m in lesson("room", minute_of(now - day * DAY), 30, rng, seq0=day * 1000)]
    msgs += lesson("room", minute_of(now - 1800), 20, rng, seq0=1)
    store.write(msgs)
    store.prune(365, now, raw_days=7)
    store.close()
    dash = Dashboard(tmp_path, mqtt_broker, db).wait_ready()
    try:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page()
            page.goto(dash.url + "/#/classroom/room")
            page.wait_for_function("document.querySelector('#tier')?.textContent === 'raw summaries'", timeout=15000)
            page.select_option("#window", "month")
            page.wait_for_function("document.querySelector('#tier')?.textContent.startsWith('per-minute rollups')",
                                   timeout=15000)
            assert "a point per 108 min" in page.inner_text("#tier") or "a point per 109 min" in page.inner_text("#tier")
            assert page.evaluate("document.querySelectorAll('#view .uplot').length") >= 3
            month = dash.get("/api/classroom?devices=room&window=" + str(30 * DAY))
            assert month["tier"] == "minutes" and 4 <= len(month["points"]) <= 8  # 4 lessons, 108-min points
            assert sum(p["observations"] for p in month["points"]) == sum(sum(m.payload["counts"].values()) for m in msgs)
            browser.close()
    finally:
        assert dash.stop() == 0, dash.stderr()[-2000:]
