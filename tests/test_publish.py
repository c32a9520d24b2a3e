"""MqttPublisher against a real mosquitto: contract topics/QoS/retain, outbox drain on PUBACK,
ordering and no loss across broker outages, last will, payload schemas, password sources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest

from edge.manifest import FER_LABELS
from edge.outbox import Outbox
from edge.publish import (
    SCHEMAS_DIR, MqttConfig, MqttPublisher, StdoutPublisher, expression_event, resolve_password, stats_event,
    summary_event,
)
from tests.mqtt_broker import Collector, MosquittoBroker, mqtt_broker, retained  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def schema(name: str) -> dict:
    return json.loads((SCHEMAS_DIR / f"{name}.schema.json").read_text())


def validate(name: str, payload) -> None:
    jsonschema.Draft202012Validator(schema(name)).validate(payload)


def make_publisher(broker, tmp_path, device="dev1") -> MqttPublisher:
    cfg = MqttConfig(host=broker.host, port=broker.port, reconnect_min_s=1, reconnect_max_s=1)
    return MqttPublisher(cfg, device, Outbox(tmp_path / "outbox.sqlite"))


def fake_track(face_id=3, box=(64, 48, 128, 96), label="happy"):
    scores = np.full(7, 0.05, np.float32)
    scores[FER_LABELS.index(label)] = 0.7
    return SimpleNamespace(face_id=face_id, box=box, scores=scores, expression=label, confidence=0.7)


def seqs(collector) -> list[int]:
    return [p["frame"] for p in collector.json_on("/expression")]


def test_payloads_validate_against_schemas():
    e = expression_event("d", fake_track(), 12, 1700000000.5, (640, 480), FER_LABELS, "cpu")
    assert e["box"] == [0.1, 0.1, 0.2, 0.2] and e["v"] == 1 and "crop" not in e
    validate("expression", e)
    crop = np.zeros((48, 48), np.uint8)
    validate("expression", expression_event("d", fake_track(), 12, 1.0, (640, 480), FER_LABELS, "cpu", crop=crop))
    s = summary_event("d", 2.0, 2, {k: 0 for k in FER_LABELS} | {"happy": 5}, {k: 0.1 for k in FER_LABELS}, 0.0, 2.0, 5)
    assert s["dominant"] == "happy"
    validate("summary", s)
    validate("summary", summary_event("d", 2.0, 0, {k: 0 for k in FER_LABELS}, {k: 0.0 for k in FER_LABELS}, 0, 2, 0))
    st = stats_event("d", 1.0, 14.2, {k: 1.0 for k in ("capture", "detect", "classify", "track", "publish")},
                     "cpu", 10, 0, 0, 0, 5.0, None, {"expression": 1}, 1, True)
    validate("stats", st)
    validate("status", "online")
    with pytest.raises(jsonschema.ValidationError):
        validate("expression", {**e, "box": [0.1, 0.1, 1.5, 0.2]})


def test_box_is_clipped_to_the_frame():
    e = expression_event("d", fake_track(box=(-10, 400, 700, 200)), 0, 0.0, (640, 480), FER_LABELS, "cpu")
    x, y, w, h = e["box"]
    assert 0 <= x <= 1 and 0 <= y <= 1 and x + w <= 1 and y + h <= 1


def test_stdout_publisher_prints_json_lines(capsys):
    pub = StdoutPublisher("fer", "d")
    pub.start()
    pub.publish_event("expression", {"v": 1})
    pub.stop()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["topic"] for x in lines] == ["fer/d/status", "fer/d/expression", "fer/d/status"]
    assert lines[0]["payload"] == "online" and lines[-1]["payload"] == "offline"


def test_publish_contract_and_outbox_drained(mqtt_broker, tmp_path):
    col = Collector(mqtt_broker, "fer/#")
    pub = make_publisher(mqtt_broker, tmp_path)
    pub.start()
    for i in range(30):
        pub.publish_event("expression", {"v": 1, "frame": i})
    pub.publish_event("summary", {"v": 1, "n": 1})
    assert col.wait_for(lambda c: len(c.on("/expression")) == 30 and c.on("/summary"))
    assert col.wait_for(lambda c: pub.connected)
    pub.publish_event("stats", {"v": 1})
    assert col.wait_for(lambda c: c.on("/stats"))
    assert seqs(col) == list(range(30))
    assert col.wait_for(lambda c: pub.outbox.depth == 0)
    assert pub.stop() is True
    assert retained(mqtt_broker, "fer/dev1/status") == b"offline"
    assert retained(mqtt_broker, "fer/dev1/summary") == b'{"v":1,"n":1,"seq":1}'
    assert [e["seq"] for e in col.json_on("/expression")] == list(range(1, 31))  # numbered by the outbox
    assert retained(mqtt_broker, "fer/dev1/stats") == b'{"v":1}'
    assert retained(mqtt_broker, "fer/dev1/expression") is None  # events are not retained
    assert [p for _, p, _ in col.on("/status")][:1] == [b"online"]
    col.close()


def test_broker_down_at_start_then_up(tmp_path):
    broker = MosquittoBroker(tmp_path / "b")  # not started: nothing listens on its port
    pub = make_publisher(broker, tmp_path)
    pub.start()
    for i in range(20):
        pub.publish_event("expression", {"v": 1, "frame": i})
    assert pub.outbox.depth == 20 and not pub.connected
    broker.start()
    try:
        col = Collector(broker, "fer/#")
        # The collector may subscribe after some were delivered; the outbox must still empty.
        assert col.wait_for(lambda c: pub.outbox.depth == 0, 30)
        assert pub.stop() is True
        col.close()
    finally:
        broker.stop()


def test_outage_loses_nothing_and_keeps_order(mqtt_broker, tmp_path):
    col = Collector(mqtt_broker, "fer/#", client_id="outage-collector", persistent=True)
    pub = make_publisher(mqtt_broker, tmp_path)
    pub.start()
    for i in range(50):
        pub.publish_event("expression", {"v": 1, "frame": i})
    assert col.wait_for(lambda c: len(seqs(c)) == 50)
    mqtt_broker.stop()
    assert col.wait_for(lambda c: not pub.connected)
    for i in range(50, 120):
        pub.publish_event("expression", {"v": 1, "frame": i})
    assert pub.outbox.depth == 70
    mqtt_broker.start()  # same port; the collector's persistent session survives (persistence on)
    assert col.wait_for(lambda c: len(set(seqs(c))) == 120, 60), f"got {len(set(seqs(col)))}"
    got = seqs(col)
    first_seen = list(dict.fromkeys(got))
    assert first_seen == list(range(120))  # in order, none missing (QoS 1 may repeat one)
    assert col.wait_for(lambda c: pub.outbox.depth == 0)
    pub.stop()
    col.close()


def test_last_will_is_offline_when_the_process_dies(mqtt_broker, tmp_path):
    code = (
        "import sys, time\n"
        "from edge.outbox import Outbox\n"
        "from edge.publish import MqttConfig, MqttPublisher\n"
        f"p = MqttPublisher(MqttConfig(host='127.0.0.1', port={mqtt_broker.port}), 'lwt', Outbox({str(tmp_path / 'o.db')!r}))\n"
        "p.start()\n"
        "while not p.connected: time.sleep(0.05)\n"
        "print('up', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "up"
    col = Collector(mqtt_broker, "fer/lwt/status", persistent=False)
    assert col.wait_for(lambda c: c.on("/status"))
    assert col.on("/status")[0][1] == b"online"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert col.wait_for(lambda c: any(p == b"offline" for _, p, _ in c.on("/status")))
    assert retained(mqtt_broker, "fer/lwt/status") == b"offline"
    col.close()


def test_password_sources(tmp_path, monkeypatch):
    from edge.errors import ConfigError

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("FER_EDGE_MQTT_PASSWORD", "from-env")
    assert resolve_password(MqttConfig()) == "from-env"
    (tmp_path / "mqtt_password").write_text("from-credentials\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve_password(MqttConfig()) == "from-credentials"
    (tmp_path / "pw").write_text("from-file\n")
    assert resolve_password(MqttConfig(password_file=str(tmp_path / "pw"))) == "from-file"
    with pytest.raises(ConfigError, match="mqtt.password_file"):
        resolve_password(MqttConfig(password_file=str(tmp_path / "missing")))


def wait_until(predicate, timeout: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    return bool(predicate())


def test_username_password_against_a_broker_that_requires_them(tmp_path, monkeypatch):
    """mosquitto with a password file: the right password (from the env) delivers, a wrong one buffers."""
    import shutil

    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    broker = MosquittoBroker(tmp_path / "auth")
    subprocess.run([passwd, "-b", "-c", str(broker.workdir / "passwd"), "classroom-3", "s3cret"], check=True)
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
                           + f"password_file {broker.workdir / 'passwd'}\n")
    broker.start()
    try:
        cfg = MqttConfig(host=broker.host, port=broker.port, username="classroom-3", reconnect_max_s=1)
        monkeypatch.setenv("FER_EDGE_MQTT_PASSWORD", "wrong")
        bad = MqttPublisher(cfg, "auth", Outbox(tmp_path / "bad.db"))
        bad.start()
        bad.publish_event("expression", {"v": 1, "frame": 0})
        monkeypatch.setenv("FER_EDGE_MQTT_PASSWORD", "s3cret")
        good = MqttPublisher(cfg, "auth", Outbox(tmp_path / "good.db"))
        good.start()
        good.publish_event("expression", {"v": 1, "frame": 0})
        assert wait_until(lambda: good.outbox.depth == 0 and good.connected)
        assert not bad.connected and bad.outbox.depth == 1  # refused: kept, not lost
        good.stop()
        bad.stop(timeout=0.5)
    finally:
        broker.stop()


def make_pki(d: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    import shutil as _sh

    openssl = _sh.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make test certificates (apt-get install openssl)")
    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fer-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "classroom-3")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt", *(["-extfile", "san.ext"] if name == "server" else []))
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


def test_tls_with_ca_and_client_certificate(tmp_path):
    """mosquitto with TLS that requires a client certificate: the configured CA + cert connect; no cert fails."""
    pki = make_pki(tmp_path / "pki")
    broker = MosquittoBroker(tmp_path / "tls")
    broker.conf.write_text(broker.conf.read_text()
                           + f"cafile {pki['ca_crt']}\ncertfile {pki['server_crt']}\nkeyfile {pki['server_key']}\n"
                           "require_certificate true\n")
    broker.start()
    try:
        from edge.publish import TlsConfig

        good_tls = TlsConfig(enabled=True, ca_file=str(pki["ca_crt"]), certfile=str(pki["client_crt"]),
                             keyfile=str(pki["client_key"]))
        good = MqttPublisher(MqttConfig(host=broker.host, port=broker.port, tls=good_tls), "tls", Outbox(tmp_path / "g.db"))
        no_cert = MqttPublisher(MqttConfig(host=broker.host, port=broker.port, reconnect_max_s=1,
                                           tls=TlsConfig(enabled=True, ca_file=str(pki["ca_crt"]))),
                                "tls2", Outbox(tmp_path / "n.db"))
        for pub in (good, no_cert):
            pub.start()
            pub.publish_event("expression", {"v": 1, "frame": 0})
        assert wait_until(lambda: good.outbox.depth == 0 and good.connected)
        assert not no_cert.connected and no_cert.outbox.depth == 1
        good.stop()
        no_cert.stop(timeout=0.5)
    finally:
        broker.stop()


def test_tls_missing_ca_file_is_a_config_error(tmp_path):
    from edge.errors import ConfigError
    from edge.publish import TlsConfig

    cfg = MqttConfig(host="127.0.0.1", tls=TlsConfig(enabled=True, ca_file=str(tmp_path / "nope.crt")))
    with pytest.raises(ConfigError, match="mqtt.tls.ca_file"):
        MqttPublisher(cfg, "d", Outbox(tmp_path / "o.db"))


def test_home_assistant_discovery(mqtt_broker, tmp_path):
    from edge.hass import SENSORS

    cfg = MqttConfig(host=mqtt_broker.host, port=mqtt_broker.port, ha_discovery=True)
    pub = MqttPublisher(cfg, "room-7", Outbox(tmp_path / "o.db"))
    pub.start()
    assert wait_until(lambda: pub.connected)
    pub.stop()
    for obj in SENSORS:
        raw = retained(mqtt_broker, f"homeassistant/sensor/fer_edge_room-7/{obj}/config")
        assert raw is not None, obj
        conf = json.loads(raw)
        assert conf["availability_topic"] == "fer/room-7/status" and conf["state_topic"].startswith("fer/room-7/")
        assert conf["unique_id"] == f"fer_edge_room-7_{obj}"
