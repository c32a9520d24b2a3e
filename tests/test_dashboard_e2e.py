"""End to end: the real daemon on the sample clip -> real mosquitto -> ``fer-edge dashboard`` -> headless chromium.

The device shows up online, its expressions are stored (as many as it produced), Debian's chromium renders
the app with the device, charts and live updates arriving without a reload, and the device goes offline
when the daemon stops. Screenshots of the three views go to the test's folder, and to
``$FER_DASHBOARD_SCREENSHOTS`` when set (``docs/img`` regenerates the README's).
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from edge.camera import sample_video_path
from tests.daemon_run import exit_report, start_daemon, stderr_of, wait_until, write_config
from tests.dashboard_run import CHROMIUM, Dashboard, launch_chromium
from tests.mqtt_broker import mqtt_broker  # noqa: F401

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (make setup-dev)")


def device_config(tmp_path: Path, broker, device: str = "e2e") -> Path:
    return write_config(tmp_path / f"{device}.toml", {
        "device": {"id": device},
        "camera": {"source": str(sample_video_path()), "loop": True, "realtime": True},
        "model": {"accelerator": "cpu"},
        "mqtt": {"host": broker.host, "port": broker.port, "prefix": "fer", "reconnect_min_s": 1, "reconnect_max_s": 1},
        "events": {"interval_s": 0.5},
        "summary": {"interval_s": 1.0},
        "stats": {"interval_s": 1.0},
        "outbox": {"path": str(tmp_path / f"{device}-outbox.sqlite")},
    })


def shot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("FER_DASHBOARD_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def publish_fear(broker, device: str, seconds: float, period: float = 0.5) -> None:
    """A scripted driver camera: one face, ``fear`` every ``period`` s for ``seconds`` (with seq)."""
    import json
    import time

    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"scripted-{device}")
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(f"fer/{device}/status", "online", qos=1, retain=True).wait_for_publish(5)
    t0 = time.time()
    seq = 0
    while time.time() - t0 < seconds:
        seq += 1
        p = {"v": 1, "ts": round(time.time(), 3), "device": device, "face_id": 1, "expression": "fear", "confidence": 0.71,
             "scores": {"fear": 0.71, "neutral": 0.29}, "box": [0.4, 0.3, 0.2, 0.3], "frame": seq, "backend": "edgetpu",
             "seq": seq}
        c.publish(f"fer/{device}/expression", json.dumps(p), qos=1).wait_for_publish(5)
        time.sleep(period)
    c.disconnect()
    c.loop_stop()


def live_count(page) -> int:
    return int(page.inner_text("#live-count"))


def test_daemon_dashboard_browser(mqtt_broker, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    from edge import payloads
    from tests.mqtt_broker import Collector

    alerts_seen = Collector(mqtt_broker, "fer/+/alert")
    dash = Dashboard(tmp_path / "dash", mqtt_broker, None, "--negative-s", "2").wait_ready()
    daemon = start_daemon(device_config(tmp_path, mqtt_broker))
    try:
        assert wait_until(lambda: any(d["device"] == "e2e" and d["status"] == "online" for d in dash.get("/api/devices")), 60), \
            stderr_of(daemon)
        assert wait_until(lambda: len(dash.get_known("/api/devices/e2e/expressions", [])) >= 3, 60)
        assert wait_until(lambda: len(dash.get("/api/classroom?devices=e2e&window=600")["points"]) >= 2, 30)
        with playwright_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(dash.url + "/")
            # fleet: the device id appears once the scripts ran, with its status and a chart
            page.wait_for_selector("#fleet tr[data-device='e2e']", timeout=15000)
            assert "online" in page.inner_text("#fleet tr[data-device='e2e']")
            page.wait_for_selector("#rate-chart .uplot canvas", timeout=10000)
            # live: server-sent events arrive without a reload (the counter and the row's last-seen move)
            before = live_count(page)
            page.wait_for_function(f"Number(document.querySelector('#live-count').textContent) > {before}", timeout=15000)
            shot(page, tmp_path, "fleet")
            # classroom: stacked expression mix, faces, engagement with its formula
            page.goto(dash.url + "/#/classroom/e2e")
            page.wait_for_function("document.querySelectorAll('#view .uplot').length >= 3", timeout=15000)
            assert "E = 100" in page.inner_text("#formula")
            assert page.inner_text("#faces-now").strip() not in ("", "–")
            n_points = page.evaluate("document.querySelectorAll('#mix-chart .u-legend').length")
            assert n_points == 1
            before = live_count(page)
            page.wait_for_function(f"Number(document.querySelector('#live-count').textContent) > {before}", timeout=15000)
            assert page.get_attribute("#csv", "href").startswith("/api/classroom.csv?devices=e2e")
            shot(page, tmp_path, "classroom")
            # driver: the current expression, live
            page.goto(dash.url + "/#/driver/e2e")
            page.wait_for_selector("#current span", timeout=15000)
            assert page.inner_text("#current").strip() in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
            before = live_count(page)
            page.wait_for_function(f"Number(document.querySelector('#live-count').textContent) > {before}", timeout=15000)
            # a scripted driver who stays afraid: the alert appears live, is published on MQTT, and is acknowledged
            page.goto(dash.url + "/#/driver/car-1")
            publish_fear(mqtt_broker, "car-1", 4.0)
            page.wait_for_selector("#current .expr-fear", timeout=15000)
            page.wait_for_selector("button[data-ack-kind]", timeout=15000)
            assert "negative expression" in page.inner_text("#alerts")
            shot(page, tmp_path, "driver")
            page.click("button[data-ack-kind]")
            page.wait_for_selector("text=acknowledged", timeout=10000)
            assert dash.get("/api/alerts?device=car-1")[0]["acked"] is True
            assert alerts_seen.wait_for(lambda c: c.json_on("fer/car-1/alert"), 10)
            alert = alerts_seen.json_on("fer/car-1/alert")[0]
            payloads.validate("alert", alert)
            assert (alert["kind"], alert["state"]) == ("negative_expression", "raised") and "fear" in alert["detail"]
            assert not errors, errors
            browser.close()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, stderr_of(daemon)
        produced = exit_report(stderr_of(daemon))["events"]["expression"]
        assert wait_until(lambda: [d["status"] for d in dash.get("/api/devices") if d["device"] == "e2e"] == ["offline"], 30)
        assert wait_until(lambda: len(dash.get_known("/api/devices/e2e/expressions?limit=100000", [])) == produced, 30), \
            (produced, len(dash.get("/api/devices/e2e/expressions?limit=100000")))
        events = dash.get("/api/devices/e2e/expressions?limit=100000")
        assert {e["face_id"] for e in events} and all(e["expression"] for e in events)
        print(f"dashboard e2e: {produced} expression events produced and stored; device online -> offline")
        assert dash.stop() == 0, dash.stderr()[-3000:]  # SIGTERM: feeds flushed, exit 0
        assert "dashboard feed fer/+/#: received" in dash.stderr()
    finally:
        alerts_seen.close()
        if daemon.poll() is None:
            daemon.kill()
        dash.stop()
