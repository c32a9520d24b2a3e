"""Issue 21's bar on the dashboard, end to end: the real daemon (``fer-edge run``) -> real mosquitto -> a real
``fer-edge dashboard`` process (SQLite) -> Debian's chromium.

* role driver on the real-frame driver clip (tests/attention_video.py: eyes shut 2 s, head turned away 4.5 s):
  the driver page, opened before the device ever published, shows the long eye closure and the device's
  ``distracted`` alert (raised, then cleared by the device) with its detail, PERCLOS and head-pose charts, and the
  offline badge when the daemon ends;
* role classroom on the sample clip (no emotions inferred): the classroom page shows presence and the attention
  share, says why there is no expression mix, and has none.

Screenshots go to the test's folder, and to ``$FER_DASHBOARD_SCREENSHOTS`` when set (docs/img).
"""

from __future__ import annotations

import os

import pytest

from tests.daemon_run import exit_report, start_daemon, stderr_of, wait_until
from tests.dashboard_run import CHROMIUM, Dashboard, launch_chromium
from tests.mqtt_broker import mqtt_broker  # noqa: F401
from tests.test_attention_daemon import driver_clip, role_config, sample_clip  # noqa: F401 (fixtures)
from tests.test_dashboard_e2e import shot

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (make setup-dev)")


def test_driver_page_shows_the_long_closure_and_the_devices_distracted_alert(mqtt_broker, tmp_path, driver_clip):
    playwright_api = pytest.importorskip("playwright.sync_api")
    clip, _ = driver_clip
    dash = Dashboard(tmp_path / "dash", mqtt_broker).wait_ready()
    daemon = None
    try:
        with playwright_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(dash.url + "/#/driver/driver")
            page.wait_for_selector("#unknown", timeout=15000)  # not published yet: the page fills in when it does
            # paced as a camera (15 FPS), so the page is watched while the device runs
            daemon = start_daemon(role_config(tmp_path, mqtt_broker, clip, "driver", attention={"interval_s": 0.5},
                                              camera={"source": str(clip), "realtime": True}))
            page.wait_for_selector("#att-events tr.event[data-type='long_closure']", timeout=180000)
            page.wait_for_selector("#alerts tr.alert[data-kind='distracted'][data-source='device']", timeout=180000)
            shot(page, tmp_path, "driver-attention")  # live: the device still online (unless it already ended)
            assert daemon.wait(180) == 0, stderr_of(daemon)
            report = exit_report(stderr_of(daemon))
            assert report["outbox_left"] == 0
            # everything the device sent is stored, once
            assert wait_until(lambda: len(dash.get_known("/api/devices/driver/attention?limit=100000", []))
                              == report["events"]["attention"], 30)
            events = dash.get("/api/devices/driver/attention/events")
            assert [e["type"] for e in events if e["type"] != "blink"] == ["long_closure"], events
            (distracted,) = dash.get("/api/alerts?device=driver&limit=100")
            assert (distracted["kind"], distracted["source"], distracted["state"]) == ("distracted", "device", "cleared")
            assert distracted["detail"]["text"] and distracted["cleared_ts"] > distracted["ts"]
            # the page, after the device's offline status: badge, no current eyes, the history kept
            page.wait_for_selector("#device-states [data-state='offline']", timeout=30000)
            page.wait_for_selector("#alerts tr.alert.cleared[data-kind='distracted']", timeout=15000)
            row = page.inner_text("#alerts tr.alert[data-kind='distracted']")
            assert "distracted" in row and "device" in row and distracted["detail"]["text"] in row
            assert "long eye closure" in page.inner_text("#att-events")
            assert "no data since" in page.inner_text("#eyes")
            for chart in ("perclos-chart", "blink-chart", "pose-chart", "minutes-chart"):
                assert page.locator(f"#{chart} .uplot canvas").count() == 1, chart
            assert "PERCLOS" in page.inner_text("#perclos-chart") and "yaw" in page.inner_text("#pose-chart")
            assert not errors, errors
            browser.close()
        assert dash.stop() == 0, dash.stderr()[-3000:]
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        dash.stop()


def test_classroom_page_without_emotions_shows_presence_and_attention_share(mqtt_broker, tmp_path, sample_clip):
    playwright_api = pytest.importorskip("playwright.sync_api")
    dash = Dashboard(tmp_path / "dash", mqtt_broker).wait_ready()
    daemon = start_daemon(role_config(tmp_path, mqtt_broker, sample_clip, "classroom"), "--max-frames", "60")
    try:
        assert daemon.wait(120) == 0, stderr_of(daemon)
        assert wait_until(lambda: [d["status"] for d in dash.get("/api/devices")] == ["offline"], 30)
        data = dash.get("/api/classroom?devices=classroom&window=3600")
        assert data["emotions"] is False and data["looking_share"] is not None
        assert max(p["faces"] for p in data["points"]) >= 2
        assert all("counts" not in p and "shares" not in p for p in data["points"])
        with playwright_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(dash.url + "/#/classroom/classroom")
            page.wait_for_selector("#look-chart .uplot canvas", timeout=15000)
            notice = page.locator("#no-emotions")
            assert notice.is_visible() and "Emotions are not inferred" in notice.inner_text()
            assert notice.locator("a").get_attribute("href").endswith("docs/attention.md#lawful-use")
            assert page.locator("#faces-chart .uplot canvas").count() == 1
            assert "faces read" in page.inner_text("#faces-chart")
            assert page.inner_text("#looking").strip() == f"{round(100 * data['looking_share'])} %"
            # no expression mix, no engagement index: nothing of them is shown
            assert not page.locator("#mix-chart").is_visible() and not page.locator("#engagement").is_visible()
            assert page.locator("#mix-chart .uplot").count() == 0
            shot(page, tmp_path, "classroom-attention")
            assert not errors, errors
            browser.close()
        csv = dash.get_text("/api/classroom.csv?devices=classroom&window=3600").splitlines()
        assert csv[0] == "ts_iso,ts,faces,faces_read,looking_share" and len(csv) == len(data["points"]) + 1
        assert dash.stop() == 0, dash.stderr()[-3000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
        dash.stop()
