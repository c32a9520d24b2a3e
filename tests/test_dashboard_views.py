"""Views that cannot mislead (issue 23): 404 for a device that never published, no current expression for a
camera that went offline, alerts grouped per kind with a count and a bounded history, driver alerts by the
role a device states. The API over real SQLite and PostgreSQL stores (FastAPI's TestClient)."""

from __future__ import annotations

import time

import pytest

from dashboard import queries
from dashboard.alerts import NEGATIVE_EXPRESSION, NO_FACE, AlertEngine
from dashboard.config import AlertConfig, load_dashboard_config
from dashboard.live import Live
from dashboard.store import Message, open_store
from dashboard.web import ALERT_HISTORY, create_app
from tests.mqtt_broker import mqtt_broker  # noqa: F401
from tests.test_dashboard_store import expr

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request, tmp_path):
    from fastapi.testclient import TestClient

    db = str(tmp_path / "d.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    cfg = load_dashboard_config(None, {"db": db, "alerts.negative_s": 1})
    store = open_store(db)
    live = Live(cfg, store)
    yield TestClient(create_app(cfg, store, live)), store, live
    store.close()


def stats(device: str, ts: float, role: str | None = None) -> Message:
    import json

    p = {"v": 1, "ts": ts, "device": device, "fps": 9.5, "faces": 1, **({"role": role} if role else {})}
    return Message(device, "stats", p, json.dumps(p).encode())


def feed(store, live, batch):
    store.write(batch)
    live.on_batch(batch)


def test_unknown_device_is_404_on_every_device_route(client):
    c, store, live = client
    now = time.time()
    feed(store, live, [Message("cam-1", "status", "online", b"online"), expr("cam-1", now, seq=1)])
    routes = sorted({(m, r.path) for r in c.app.routes if r.path.startswith("/api/devices/{device}")
                     for m in getattr(r, "methods", ())})
    assert len(routes) >= 4, routes  # device, expressions, driver, alerts/<kind>/ack
    for method, path in routes:
        for device, want in (("cam-1", 200), ("nope", 404)):
            url = path.replace("{device}", device).replace("{kind}", NEGATIVE_EXPRESSION)
            r = c.request(method, url)
            assert r.status_code == want, (method, url, r.status_code, r.text)
            if want == 404:
                assert "no device 'nope'" in r.json()["detail"] and "/api/devices" in r.json()["detail"]
    assert c.get("/api/devices/cam-1").json()["role"] == "general"  # no role stated: general


def test_offline_device_shows_no_current_expression(client):
    c, store, live = client
    now = time.time()
    feed(store, live, [Message("car", "status", "online", b"online"), expr("car", now, expression="happy", seq=1)])
    d = c.get("/api/devices/car/driver").json()
    assert [f["expression"] for f in d["faces"]] == ["happy"] and d["info"]["status"] == "online"
    feed(store, live, [Message("car", "status", "offline", b"offline")])
    d = c.get("/api/devices/car/driver").json()
    assert d["faces"] == [] and d["info"]["status"] == "offline" and d["info"]["last_seen"] == pytest.approx(now, abs=0.01)  # offline is no data


def test_alerts_grouped_per_kind_with_a_count_and_a_bounded_history(client):
    c, store, live = client
    now = time.time()
    feed(store, live, [Message("car", "status", "online", b"online")])
    seq = 0
    for cycle in range(ALERT_HISTORY + 5):  # 15 raise/clear cycles: fear 1.5 s, then neutral
        t = now - 100 + cycle * 3
        for dt, e in ((0, "fear"), (1.5, "fear"), (2, "neutral")):
            seq += 1
            feed(store, live, [expr("car", t + dt, expression=e, seq=seq)])
    groups = c.get("/api/devices/car/driver").json()["alert_groups"]
    assert [(g["kind"], g["count"], g["unacked"], len(g["history"])) for g in groups] == \
        [(NEGATIVE_EXPRESSION, ALERT_HISTORY + 5, ALERT_HISTORY + 5, ALERT_HISTORY)]
    g = groups[0]
    assert g["active"] is None and g["last"]["state"] == "cleared" and g["history"][0] == g["last"]
    assert g["first"] == pytest.approx(now - 100, abs=0.01)  # the first run began at its first fear
    r = c.post(f"/api/devices/car/alerts/{NEGATIVE_EXPRESSION}/ack")
    assert len(r.json()["acked"]) == ALERT_HISTORY + 5
    assert c.get("/api/devices/car/driver").json()["alert_groups"][0]["unacked"] == 0
    assert c.post(f"/api/devices/car/alerts/{NEGATIVE_EXPRESSION}/ack").json()["acked"] == []  # nothing left open


def _fear(engine, device, seconds, t0=T0):
    out = []
    for i in range(int(seconds) + 1):
        out += engine.on_message(device, "expression", {"v": 1, "ts": t0 + i, "face_id": 1, "expression": "fear"},
                                 received=t0 + i)
    return [(a.kind, a.state) for a in out]


def test_alert_rules_follow_the_role_a_device_states():
    engine = AlertEngine(AlertConfig(negative_s=3, no_face_s=60))
    for device, role in (("room-1", "classroom"), ("bus-1", "driver"), ("kiosk", None), ("odd", "lecture-hall")):
        engine.on_message(device, "stats", {"v": 1, "ts": T0 - 1, **({"role": role} if role else {})}, received=T0 - 1)
    assert _fear(engine, "room-1", 10) == []  # classroom: no driver alerts
    assert _fear(engine, "bus-1", 4) == [(NEGATIVE_EXPRESSION, "raised")]
    assert _fear(engine, "kiosk", 4) == [(NEGATIVE_EXPRESSION, "raised")]  # general (no role): as before roles
    assert _fear(engine, "odd", 4) == [(NEGATIVE_EXPRESSION, "raised")]  # a role we do not know: general
    # a driver camera that becomes a classroom one: its open alert is cleared, and it says why
    cleared = engine.on_message("bus-1", "stats", {"v": 1, "ts": T0 + 5, "role": "classroom"}, received=T0 + 5)
    assert [(a.kind, a.state, a.detail["reason"]) for a in cleared] == \
        [(NEGATIVE_EXPRESSION, "cleared", "role classroom: no driver alerts")]
    assert _fear(engine, "bus-1", 10, T0 + 6) == []
    # alerts.devices restricts general cameras only: a driver camera is watched, a classroom one never
    engine = AlertEngine(AlertConfig(negative_s=3, no_face_s=5, devices=["room-2"]))
    engine.on_message("room-2", "stats", {"v": 1, "ts": T0, "role": "classroom"}, received=T0)
    engine.on_message("bus-2", "stats", {"v": 1, "ts": T0, "role": "driver"}, received=T0)
    engine.on_message("kiosk", "stats", {"v": 1, "ts": T0}, received=T0)
    assert sorted((a.device, a.kind) for a in engine.tick(T0 + 10)) == [("bus-2", NO_FACE)]


def test_roles_are_known_from_the_store_and_from_retained_stats(client, tmp_path):
    """A restarted dashboard must not raise driver alerts for a classroom camera while it waits for its next
    stats: the role comes from the stored stats at start, and from a retained stats message at once."""
    c, store, live = client
    now = time.time()
    store.write([stats("room-1", now - 600, role="classroom")])
    fresh = Live(live.cfg, store)  # a dashboard (re)started on that database
    assert fresh.engine.watches("room-1") is False and fresh.engine.watches("bus-1") is True
    old = stats("room-9", now - 600, role="classroom")
    old.retained = True
    fresh.on_batch([old])  # retained: history for the views, but its role holds
    assert fresh.engine.watches("room-9") is False
    for i in range(8):
        fresh.on_batch([expr("room-9", now + i, expression="fear", seq=i + 1)])
    fresh.tick(now + 60)
    assert fresh.engine.active("room-9") == [] and queries.alerts(store, "room-9") == []


def _scripted_fleet(broker):
    """car-1 (role driver): three fear runs of 1.2 s, each ended by neutral; room-1 (role classroom): fear 3 s."""
    import json

    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="scripted-fleet")
    c.connect(broker.host, broker.port)
    c.loop_start()
    seq = {"car-1": 0, "room-1": 0}

    def send(device, kind, payload, retain=False):
        c.publish(f"fer/{device}/{kind}", payload if isinstance(payload, str) else json.dumps(payload), qos=1,
                  retain=retain).wait_for_publish(5)

    def expression(device, e):
        seq[device] += 1
        send(device, "expression", {"v": 1, "ts": round(time.time(), 3), "device": device, "face_id": 1, "expression": e,
                                    "confidence": 0.7 if e == "fear" else 0.9, "scores": {e: 0.7}, "box": [0.4, 0.3, 0.2, 0.3],
                                    "frame": seq[device], "backend": "cpu", "seq": seq[device]})

    for device, role in (("car-1", "driver"), ("room-1", "classroom")):
        send(device, "status", "online", retain=True)
        send(device, "stats", {"v": 1, "ts": round(time.time(), 3), "device": device, "fps": 9.0, "faces": 1,
                               "backend": "cpu", "role": role}, retain=True)
    for _ in range(3):
        for _ in range(5):
            expression("car-1", "fear")
            expression("room-1", "fear")
            time.sleep(0.3)
        expression("car-1", "neutral")
        time.sleep(1.2)  # the alert engine's tick clears it; the next run is a new cycle
    return c, send


@pytest.mark.skipif(not __import__("os").path.exists("/usr/bin/chromium"), reason="needs Debian's chromium")
def test_views_in_chromium_badges_no_data_grouped_alerts_roles_unknown(mqtt_broker, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    from tests.daemon_run import wait_until, write_config
    from tests.dashboard_run import Dashboard, launch_chromium
    from tests.mqtt_broker import Collector

    alerts_seen = Collector(mqtt_broker, "fer/+/alert")
    cfg = write_config(tmp_path / "dash.toml", {"dashboard": {"stale_s": 4}})
    dash = Dashboard(tmp_path / "dash", mqtt_broker, None, "--config", str(cfg), "--negative-s", "1").wait_ready()
    client = None
    try:
        client, send = _scripted_fleet(mqtt_broker)
        assert wait_until(lambda: [g["count"] for g in dash.get_known("/api/devices/car-1/driver", {"alert_groups": []})["alert_groups"]] == [3], 15), \
            dash.get("/api/devices/car-1/driver")["alert_groups"]
        assert dash.get("/api/devices/room-1/driver")["alert_groups"] == []  # classroom: no driver alerts
        assert dash.get("/api/devices/room-1")["role"] == "classroom"
        with playwright_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # driver: one row per kind with its count, one acknowledge button, a chart that names its expressions
            page.goto(dash.url + "/#/driver/car-1")
            page.wait_for_selector("#alerts tr[data-kind='negative_expression']", timeout=15000)
            assert page.locator("#alerts tr[data-kind]").count() == 1
            assert page.inner_text("#alerts td.count").startswith("3×")
            assert page.locator("button[data-ack-kind]").inner_text() == "acknowledge (3)"
            assert page.locator("#alerts details li").count() == 3
            legend = page.inner_text("#conf-chart .u-legend")
            assert "fear" in legend and "neutral" in legend
            assert "confidence of each detected expression" in page.inner_text("#conf-chart .u-title")
            page.click("button[data-ack-kind]")
            page.wait_for_selector("#alerts tr[data-kind] >> text=acknowledged", timeout=10000)
            page.screenshot(path=str(tmp_path / "driver.png"), full_page=True)
            # the camera goes offline: an offline badge, and "no data since" instead of its last expression
            send("car-1", "status", "offline", retain=True)
            page.wait_for_selector("#device-states [data-state='offline']", timeout=10000)
            page.wait_for_selector("#current .nodata", timeout=10000)
            assert "no data since" in page.inner_text("#current")
            page.goto(dash.url + "/#/classroom/car-1")
            page.wait_for_selector("#device-states [data-state='offline']", timeout=10000)
            assert "no data since" in page.inner_text("#faces-now")
            page.screenshot(path=str(tmp_path / "classroom.png"), full_page=True)
            # fleet: car-1 offline and room-1 silent for more than stale_s: badges, no old values
            page.goto(dash.url + "/#/fleet")
            page.wait_for_selector("#fleet tr[data-device='room-1'] [data-state='stale']", timeout=15000)
            for device, state in (("car-1", "offline"), ("room-1", "stale")):
                row = page.inner_text(f"#fleet tr[data-device='{device}']")
                assert state in row and "no data since" in row and "9.0" not in row, row
            assert "classroom" in page.inner_text("#fleet tr[data-device='room-1']")
            page.screenshot(path=str(tmp_path / "fleet.png"), full_page=True)
            page.goto(dash.url + "/#/driver/room-1")
            page.wait_for_selector("#alert-rules >> text=role is classroom", timeout=10000)
            # a device that never published: said so, not an empty page that looks quiet
            page.goto(dash.url + "/#/driver/nope")
            page.wait_for_selector("#unknown", timeout=10000)
            assert 'No device "nope"' in page.inner_text("#unknown")
            page.screenshot(path=str(tmp_path / "unknown.png"))
            assert not errors, errors
            browser.close()
        alerts = alerts_seen.json_on("fer/car-1/alert")
        assert [a["state"] for a in alerts][:2] == ["raised", "cleared"] and not alerts_seen.json_on("fer/room-1/alert")
    finally:
        alerts_seen.close()
        if client is not None:
            client.disconnect()
            client.loop_stop()
        dash.stop()
