"""The dashboard says when it cannot hear the fleet (issue 23): each broker fault named in one log line with
its fix, ``/healthz`` 503 with the cause while MQTT is down, a banner on every page (Debian's chromium), and
back to 200 without the banner once the broker listens. Real mosquitto, real sockets, no mocks."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from dashboard.config import load_dashboard_config
from dashboard.ingest import Feed
from tests.daemon_run import wait_until, write_config
from tests.dashboard_run import CHROMIUM, Dashboard, launch_chromium
from tests.mqtt_broker import MosquittoBroker, free_port


def health(url: str) -> tuple[int, dict]:
    """(HTTP status, body) of ``/healthz``; a 503 still has its JSON body; (0, {}) while nothing listens."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except urllib.error.URLError:
        return 0, {}


class NotABroker:
    """A real TCP server on a free loopback port that is not an MQTT broker: it answers ``reply`` to whatever
    arrives and closes, or (``reply=None``) accepts and stays silent."""

    def __init__(self, reply: bytes | None):
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.reply is None:
                self.held.append(conn)  # silent: keep it open, say nothing
                continue
            try:
                conn.recv(1024)
                conn.sendall(self.reply)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def _feed_cause(tmp_path, mqtt: dict, timeout: float = 10.0):
    """Start a dashboard feed on ``mqtt`` settings: (the link's cause once one is known within ``timeout``,
    whether the feed counts as connected, seconds from start to the cause)."""
    cfg = load_dashboard_config(None, {"db": str(tmp_path / "unused.sqlite"), **{f"mqtt.{k}": v for k, v in mqtt.items()}})
    t0 = time.monotonic()
    feed = Feed(cfg, None).start()
    try:
        wait_until(lambda: feed.link.cause is not None, timeout, interval=0.01)
        return feed.link.cause, feed.connected, time.monotonic() - t0
    finally:
        feed.stop()


DYNSEC = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


def _broker_that_refuses_the_subscription(broker: MosquittoBroker, tmp_path) -> dict:
    """mosquitto with its dynamic-security plugin: an account ``dashboard`` that may log in but has no role,
    so its SUBSCRIBE is refused (SUBACK 0x87): connected, yet deaf. Returns the [mqtt] keys to log in."""
    ctrl = shutil.which("mosquitto_ctrl") or "/usr/bin/mosquitto_ctrl"
    config = broker.workdir / "dynsec.json"
    subprocess.run([ctrl, "dynsec", "init", str(config), "admin", "admin-pw"], check=True, capture_output=True)
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
                           + f"plugin {DYNSEC}\nplugin_opt_config_file {config}\n")
    broker.start()
    subprocess.run([ctrl, "-h", broker.host, "-p", str(broker.port), "-u", "admin", "-P", "admin-pw", "dynsec",
                    "createClient", "dashboard", "-p", "dash-pw"], check=True, capture_output=True, timeout=30)
    secret = tmp_path / "mqtt_password"
    secret.write_text("dash-pw\n")
    secret.chmod(0o600)
    return {"port": broker.port, "username": "dashboard", "password_file": str(secret)}


@pytest.mark.parametrize("fault", ["refused", "not_mqtt", "silent", "tls", "not_authorised", "no_read_acl"])
def test_each_broker_fault_is_named_with_its_fix(fault, tmp_path, caplog):
    caplog.set_level("ERROR", logger="dashboard.broker_link")
    broker = service = None
    try:
        if fault == "refused":
            mqtt, key, words = {"port": free_port()}, "refused", "nothing listens"
        elif fault in ("not_mqtt", "silent"):
            service = NotABroker(b"HTTP/1.1 400 Bad Request\r\n\r\n" if fault == "not_mqtt" else None)
            mqtt = {"port": service.port}
            key, words = ("not_mqtt", "an HTTP server answered") if fault == "not_mqtt" else ("no_answer", "did not answer")
        else:
            broker = MosquittoBroker(tmp_path / "broker")
            if fault == "not_authorised":
                broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
                key, words = "not_authorised", "not authorised"
            elif fault == "tls":  # TLS towards a plain MQTT port
                key, words = "tls", "TLS"
            if fault == "no_read_acl":
                if not os.path.exists(DYNSEC):
                    pytest.skip("needs mosquitto's dynamic-security plugin")
                mqtt = _broker_that_refuses_the_subscription(broker, tmp_path)
                key, words = "not_authorised", "refused the subscription fer/+/#"
            else:
                broker.start()
                mqtt = {"port": broker.port, **({"tls": {"enabled": True}} if fault == "tls" else {})}
        cause, connected, took = _feed_cause(tmp_path, mqtt)
        assert cause is not None and cause.key == key and words in cause.message, cause
        assert not connected
        assert "check" in cause.message or "give" in cause.message or "?" in cause.message  # the fix is named
        logged = [r.getMessage() for r in caplog.records if "cannot hear the fleet" in r.getMessage()]
        assert len(logged) == 1 and cause.message in logged[0], logged  # once, though paho keeps retrying
        print(f"{fault}: named in {took:.2f} s: {cause.message}")
    finally:
        if service:
            service.close()
        if broker:
            broker.stop()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (make setup-dev)")
def test_no_broker_logged_within_10s_healthz_503_banner_on_every_page_then_recovers(tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    broker = MosquittoBroker(tmp_path / "broker")  # not started yet: nothing listens on its port
    cfg = write_config(tmp_path / "dash.toml", {"mqtt": {"reconnect_min_s": 1, "reconnect_max_s": 1}})
    t0 = time.monotonic()
    dash = Dashboard(tmp_path / "dash", broker, None, "--config", str(cfg))
    try:
        assert wait_until(lambda: "cannot hear the fleet" in dash.stderr(), 10), dash.stderr()
        logged_after = time.monotonic() - t0
        line = next(ln for ln in dash.stderr().splitlines() if "cannot hear the fleet" in ln)
        assert f"nothing listens on 127.0.0.1:{broker.port} (connection refused)" in line and "mqtt.port" in line
        assert wait_until(lambda: health(dash.url)[0] == 503, 15)
        status, body = health(dash.url)
        assert status == 503 and body["ok"] is False and body["mqtt_connected"] is False
        assert body["mqtt"]["cause"] == "refused" and body["mqtt"]["deaf"] and body["mqtt"]["down_s"] > 5
        print(f"no broker: cause logged {logged_after:.1f} s after start; /healthz {status}: {body['mqtt']['error']}")
        with playwright_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            for view in ("#/fleet", "#/classroom", "#/driver"):
                page.goto(f"{dash.url}/{view}")
                page.wait_for_selector("#deaf:not([hidden])", timeout=10000)
                text = page.inner_text("#deaf")
                assert "Not receiving from the broker" in text and "nothing listens" in text, (view, text)
            # the broker comes up on that port: /healthz back to 200, the banner goes away by itself
            broker.start()
            assert wait_until(lambda: health(dash.url)[0] == 200, 20), health(dash.url)
            page.wait_for_selector("#deaf", state="hidden", timeout=10000)
            browser.close()
        assert health(dash.url)[1]["mqtt_connected"] is True
        assert "hears the fleet again" in dash.stderr()
        assert dash.stderr().count("cannot hear the fleet") == 1  # refused over and over: logged once
    finally:
        dash.stop()
        broker.stop()
