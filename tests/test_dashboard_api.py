"""Dashboard JSON API, CSV export, auth and security rules (FastAPI's TestClient; no broker needed)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dashboard.auth import hash_password
from dashboard.config import check_security, load_dashboard_config
from dashboard.live import Live
from dashboard.store import Message, open_store
from dashboard.web import create_app
from edge.errors import ConfigError
from tests.daemon_run import ROOT, write_config
from tests.test_dashboard_store import expr, summary


def client_for(tmp_path, **overrides):
    from fastapi.testclient import TestClient

    cfg = load_dashboard_config(None, {"db": str(tmp_path / "d.sqlite"), **overrides})
    store = open_store(cfg.db)
    live = Live(cfg, store)
    return TestClient(create_app(cfg, store, live)), store, live


def test_contract_endpoints(tmp_path):
    client, store, live = client_for(tmp_path)
    now = time.time()
    batch = [Message("cam-1", "status", "online", b"online"), expr("cam-1", now - 5, seq=1),
             expr("cam-1", now - 4, face_id=2, expression="sad", seq=2), summary("cam-1", now - 3, 2, {"happy": 1, "sad": 1})]
    store.write(batch)
    live.on_batch(batch)
    assert client.get("/healthz").json()["ok"] is True
    devices = client.get("/api/devices").json()
    assert devices[0]["device"] == "cam-1" and devices[0]["status"] == "online" and devices[0]["last_seen"] >= now - 4
    events = client.get("/api/devices/cam-1/expressions").json()
    assert [(e["face_id"], e["expression"]) for e in events] == [(1, "happy"), (2, "sad")] and all("ts" in e for e in events)
    assert client.get("/api/devices/cam-1/expressions", params={"since": now - 4.5}).json()[0]["face_id"] == 2
    room = client.get("/api/classroom", params={"devices": "cam-1", "window": 600}).json()
    assert room["points"][0]["faces"] == 2 and room["engagement"] == 50.0
    csv = client.get("/api/classroom.csv", params={"devices": "cam-1", "window": 600})
    assert csv.headers["content-type"].startswith("text/csv") and len(csv.text.splitlines()) == 2
    assert client.get("/api/classroom").status_code == 400
    driver = client.get("/api/devices/cam-1/driver").json()
    assert {f["face_id"] for f in driver["faces"]} == {1, 2}
    from dashboard.queries import latest_faces

    assert latest_faces(store, "cam-1", 25, now=time.time() + 60) == []  # nothing new for a minute: no face
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "cdn" not in page.text.lower()
    assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200
    assert "E = 100" in client.get("/api/config").json()["formula"]
    n, items = live.since(0)
    assert {e["type"] for e in items} >= {"status", "expression", "summary", "seen"}


def test_alert_ack_through_the_api(tmp_path):
    client, store, live = client_for(tmp_path, **{"alerts.negative_s": 2})
    now = time.time()
    for i in range(4):
        live.on_batch([expr("car", now + i, expression="fear", seq=i)])
    active = client.get("/api/alerts", params={"device": "car", "active": True}).json()
    assert [(a["kind"], a["state"], a["acked"]) for a in active] == [("negative_expression", "raised", False)]
    assert client.post(f"/api/alerts/{active[0]['id']}/ack").json()["acked"] is True
    assert client.get("/api/alerts").json()[0]["acked"] is True
    assert client.post("/api/alerts/99999/ack").status_code == 404


def test_auth_token_and_users(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    client, *_ = client_for(tmp_path, listen="0.0.0.0:8080", **{"auth.token_file": str(token)})
    assert client.get("/healthz").status_code == 200  # liveness stays open
    assert client.get("/api/devices").status_code == 401
    assert client.get("/api/devices", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/devices", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    r = client.get("/?token=s3cret-token", follow_redirects=False)
    assert r.status_code == 303 and "fer_token" in r.headers["set-cookie"]
    assert client.get("/api/devices").status_code == 200  # the cookie now authenticates the browser
    users = tmp_path / "users"
    users.write_text(f"alice:{hash_password('wonderland', iterations=1000)}\nbob:plain\n")
    client, *_ = client_for(tmp_path, listen="0.0.0.0:8080", **{"auth.users_file": str(users)})
    assert client.get("/api/devices").headers["www-authenticate"].startswith("Basic")
    assert client.get("/api/devices", auth=("alice", "wonderland")).status_code == 200
    assert client.get("/api/devices", auth=("alice", "nope")).status_code == 401
    assert client.get("/api/devices", auth=("bob", "plain")).status_code == 200


def test_non_loopback_needs_auth_and_config_file(tmp_path):
    check_security(load_dashboard_config(None, {"listen": "127.0.0.1:9000"}))
    with pytest.raises(ConfigError, match="not a loopback address"):
        check_security(load_dashboard_config(None, {"listen": "0.0.0.0:9000"}))
    with pytest.raises(ConfigError, match="token_file"):
        check_security(load_dashboard_config(None, {"listen": "0.0.0.0:9000", "auth.token_file": "/nonexistent"}))
    # configured but empty secrets fail closed: refused at start, and never read as "no authentication"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        check_security(load_dashboard_config(None, {"listen": "0.0.0.0:9000", "auth.token_file": str(empty)}))
    with pytest.raises(ConfigError, match="no 'user:secret' line"):
        check_security(load_dashboard_config(None, {"listen": "0.0.0.0:9000", "auth.users_file": str(empty)}))
    blank = tmp_path / "blank-secret"
    blank.write_text("# users\nalice:\n")
    with pytest.raises(ConfigError, match="blank-secret:2: expected 'user:secret'"):
        check_security(load_dashboard_config(None, {"listen": "0.0.0.0:9000", "auth.users_file": str(blank)}))
    from dashboard.auth import Authenticator

    locked = Authenticator(load_dashboard_config(None, {"auth.token_file": str(empty)}).auth)
    assert locked.enabled and locked.user("Bearer ", "") is None
    cfg_file = write_config(tmp_path / "c.toml", {
        "mqtt": {"host": "broker.lan", "port": 8883, "prefix": "school", "username": "dash"},
        "mqtt.tls": {"enabled": True},
        "device": {"id": "ignored-here"},
        "dashboard": {"listen": "127.0.0.1:9001", "db": "/tmp/x.sqlite", "retention_days": 7},
        "dashboard.alerts": {"negative_s": 3, "no_face_s": 12},
    })
    cfg = load_dashboard_config(cfg_file, {"mqtt.port": 8884})
    from edge.config import load_config

    assert load_config(cfg_file).mqtt.host == "broker.lan"  # the daemon accepts the same file
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.prefix, cfg.mqtt.tls.enabled) == ("broker.lan", 8884, "school", True)
    assert (cfg.port, cfg.retention_days, cfg.alerts.negative_s, cfg.alerts.no_face_s) == (9001, 7, 3, 12)
    with pytest.raises(ConfigError, match="listen"):
        load_dashboard_config(None, {"listen": "nowhere"})


def test_dashboard_imports_neither_tensorflow_nor_opencv():
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('tensorflow', 'cv2', 'keras', 'torch'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from fer_edge.cli import build_parser\n"
            "build_parser().parse_args(['dashboard', '--db', '/tmp/x'])\n"
            "from dashboard.server import build\nfrom dashboard.web import create_app\n"
            "import dashboard.cli, dashboard.queries, dashboard.alerts\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_alert_payloads_follow_the_contract():
    import jsonschema

    from dashboard.alerts import Alert
    from dashboard.live import alert_payload
    from edge import payloads

    raised = alert_payload(Alert("car", "negative_expression", "raised", 1.0, 6.0,
                                 {"face_id": 1, "expression": "fear", "seconds": 5.0, "threshold_s": 5.0}))
    payloads.validate("alert", raised)
    assert raised["detail"] == "face 1 fear for 5.0 s (threshold 5.0 s)" and raised["since"] == 1.0
    cleared = alert_payload(Alert("car", "no_face", "cleared", 6.0, 9.0, {"seconds": 30, "threshold_s": 30,
                                                                             "reason": "face back in view"}))
    payloads.validate("alert", cleared)
    assert cleared["detail"].endswith("cleared: face back in view")
    with pytest.raises(jsonschema.ValidationError):
        payloads.validate("alert", {**cleared, "state": "maybe"})


def test_activity_counts_live_messages(tmp_path):
    client, store, live = client_for(tmp_path)
    now = time.time()
    live.on_batch([expr("a", now, seq=1), expr("a", now, seq=2), expr("b", now, seq=1)])
    act = client.get("/api/activity", params={"window": 10}).json()
    after = time.time()
    # the last 2 s bucket is the one the request fell in, which may start after ``now``
    assert len(act) == 6 and sum(n for _, n in act) == 3 and now - 2 < act[-1][0] <= after < act[-1][0] + 2
