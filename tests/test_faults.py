"""Fault injection with real parts: a real mosquitto stopped and restarted, SQLite at its size limit,
TLS and password mismatches, a listener that is not MQTT, ``kill -9``, and a camera stream (MJPEG
over HTTP, read by OpenCV) absent at start and dropped mid-run.

Each test counts: messages produced = delivered (+ dropped, when a bound says so), no two deliveries
of one ``seq``, ``seq`` rising by one, nothing published stale. Each prints one ``FAULT`` line with its
measured figures (``pytest -s -k faults``); README "Faults and what happens" quotes them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import cv2
import pytest

from edge import payloads
from edge.broker_errors import probe
from edge.camera import sample_video_path
from edge.outbox import Outbox
from edge.publish import MqttConfig, MqttPublisher, TlsConfig
from tests.daemon_run import exit_report, outbox_rows, start_daemon, stderr_of, wait_until, write_config
from tests.mjpeg_server import MjpegServer, frames_from_video
from tests.mqtt_broker import Collector, MosquittoBroker, free_port, mqtt_broker, retained  # noqa: F401
from tests.test_publish import make_pki


def seq_report(payloads_: list[dict]) -> dict:
    """Counts over received payloads: messages, distinct seq, duplicates, gaps, strictly rising?"""
    seqs = [p["seq"] for p in payloads_]
    distinct = sorted(set(seqs))
    gaps = (distinct[-1] - distinct[0] + 1 - len(distinct)) if distinct else 0
    first_seen = list(dict.fromkeys(seqs))
    return {"messages": len(seqs), "distinct": len(distinct), "duplicates": len(seqs) - len(distinct),
            "gaps": gaps, "rising": all(b > a for a, b in zip(first_seen, first_seen[1:])),
            "first": distinct[0] if distinct else None, "last": distinct[-1] if distinct else None}


def publisher(host: str, port: int, tmp_path: Path, device: str = "f", box: Outbox | None = None, **mqtt) -> MqttPublisher:
    cfg = MqttConfig(host=host, port=port, reconnect_min_s=1, reconnect_max_s=1, **mqtt)
    return MqttPublisher(cfg, device, box or Outbox(tmp_path / f"{device}.sqlite"))


def events(pub: MqttPublisher, n: int, start: int = 0, pad: int = 0) -> None:
    for i in range(start, start + n):
        pub.publish_event("expression", {"v": 1, "frame": i, **({"pad": "x" * pad} if pad else {})})


# --------------------------------------------------------------------------- outbox at its size limit


def test_sqlite_at_its_size_limit_keeps_delivering(mqtt_broker, tmp_path, caplog):
    """``PRAGMA max_page_count`` caps the outbox file: live delivery goes on from memory, nothing is
    lost while the broker is up, the memory queue is bounded and its drops counted."""
    caplog.set_level(logging.WARNING)
    col = Collector(mqtt_broker, "fer/full/#")
    box = Outbox(tmp_path / "full.sqlite", memory_max=1000, min_free_mb=0)
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count = {pages}")  # no page to spare: the file is "full"
    pub = publisher(mqtt_broker.host, mqtt_broker.port, tmp_path, "full", box)
    pub.start()
    assert wait_until(lambda: pub.connected, 10)
    for i in range(300):
        events(pub, 1, i, pad=1500)
        time.sleep(0.002)
    assert col.wait_for(lambda c: len(c.on("/expression")) >= 300, 30)
    live = seq_report(col.json_on("/expression"))
    assert box.write_errors > 0  # the file really was full
    assert live["distinct"] == 300 and live["gaps"] == 0 and live["duplicates"] == 0 and live["rising"]
    # Broker down and disk full: only memory is left; it keeps the newest memory_max, counts the rest.
    mqtt_broker.stop()
    assert wait_until(lambda: not pub.connected, 10)
    box.memory_max = 20
    events(pub, 30, 300, pad=1500)
    dropped = box.drops["memory_full"]
    # On disk as far as freed pages allowed, the newest 20 in memory, the rest dropped and counted.
    assert box.memory_depth == 20 and dropped >= 1 and box.depth + dropped == 30
    assert pub.outbox_stats()["drops"]["memory_full"] == dropped and pub.outbox_stats()["memory"] == 20
    mqtt_broker.start()
    assert col.wait_for(lambda c: seq_report(c.json_on("/expression"))["last"] == 330, 30)
    assert wait_until(lambda: box.depth == 0, 10)
    r = seq_report(col.json_on("/expression"))
    produced = 330
    assert r["distinct"] == produced - dropped and r["duplicates"] == 0 and r["rising"]
    assert caplog.text.count("cannot write to the outbox") >= 1
    pub.stop()
    col.close()
    print(f"FAULT sqlite-full: produced {produced}, delivered {r['distinct']} (duplicates {r['duplicates']}), "
          f"dropped {dropped} (memory_full, broker also down), write errors {box.write_errors}")


def test_delivered_rows_whose_delete_fails_are_never_sent_again(mqtt_broker, tmp_path):
    """The database refuses every write (``PRAGMA query_only``) just when the PUBACKs come back:
    nothing is re-sent, and once it can write again the rows are deleted (a restart sends nothing)."""
    col = Collector(mqtt_broker, "fer/del/#")
    mqtt_broker.stop()
    box = Outbox(tmp_path / "del.sqlite", min_free_mb=0)
    pub = publisher(mqtt_broker.host, mqtt_broker.port, tmp_path, "del", box)
    pub.start()
    events(pub, 20)
    assert box.depth == 20
    box._db.execute("PRAGMA query_only = ON")
    mqtt_broker.start()
    assert col.wait_for(lambda c: len(c.on("/expression")) >= 20, 30)
    assert wait_until(lambda: box.depth == 0, 10)  # acknowledged: not pending, though still on disk
    events(pub, 5, 20)  # new events go to memory and are delivered too
    assert col.wait_for(lambda c: len(c.on("/expression")) >= 25, 30)
    time.sleep(2.5)  # several drain rounds: a re-send would show up now
    r = seq_report(col.json_on("/expression"))
    assert r["messages"] == r["distinct"] == 25 and r["rising"]
    box._db.execute("PRAGMA query_only = OFF")
    pub.stop()
    assert Outbox(tmp_path / "del.sqlite").depth == 0  # the failed deletes were retried
    col.close()
    print(f"FAULT delete-fails: produced 25, delivered {r['distinct']}, re-sent {r['duplicates']}")


# --------------------------------------------------------------------------- connection errors named


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, pki):
    broker = MosquittoBroker(tmp_path_factory.mktemp("tls"))
    broker.conf.write_text(broker.conf.read_text() + f"cafile {pki['ca_crt']}\ncertfile {pki['server_crt']}\n"
                           f"keyfile {pki['server_key']}\nrequire_certificate true\n")
    broker.start()
    yield broker
    broker.stop()


class HttpListener:
    """A real non-MQTT service: answers anything with an HTTP 400."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(256)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def wrong_ca(pki):
    return TlsConfig(enabled=True, ca_file=str(pki["server_crt"]))  # not the CA that signed the broker


@pytest.mark.parametrize("case", ["tls-wrong-ca", "plain-to-tls-port", "tls-to-plain-port", "not-mqtt"])
def test_connection_errors_name_the_cause_once(case, tmp_path, pki, tls_broker, mqtt_broker, caplog):
    """Each failure is logged once with its cause (though retried every second), events wait in the
    outbox (0 lost), and doctor's broker check and the probe name the same cause."""
    from edge.config import Config
    from edge.doctor import check_broker

    caplog.set_level(logging.WARNING, logger="edge.publish")
    listener = HttpListener() if case == "not-mqtt" else None
    host = "127.0.0.1"
    port, tls, needle, key = {
        "tls-wrong-ca": (tls_broker.port, wrong_ca(pki), "certificate verification failed", "tls"),
        "plain-to-tls-port": (tls_broker.port, TlsConfig(), "is not an MQTT broker", "not_mqtt"),
        "tls-to-plain-port": (mqtt_broker.port, TlsConfig(enabled=True, ca_file=str(pki["ca_crt"])), "TLS handshake", "tls"),
        "not-mqtt": (listener.port if listener else 0, TlsConfig(), "an HTTP server answered", "not_mqtt"),
    }[case]
    try:
        pub = publisher(host, port, tmp_path, "c", tls=tls)
        pub.start()
        events(pub, 5)
        assert wait_until(lambda: pub.last_error is not None and pub.last_error.key == key, 15), pub.last_error
        time.sleep(3.0)  # three more attempts: still one log line
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("mqtt: ")]
        assert len(lines) == 1 and needle in lines[0], lines
        assert not pub.connected and pub.outbox.depth == 5
        pub.stop(timeout=0.2)
        cfg = Config.model_validate({"mqtt": {"host": host, "port": port, "tls": tls.model_dump()}})
        doctor = check_broker(cfg, timeout=3)
        assert not doctor.ok and needle in doctor.detail, doctor.detail
        print(f"FAULT {case}: logged once: {lines[0]}")
    finally:
        if listener:
            listener.close()


def test_not_authorised_then_password_file_fixed(tmp_path, caplog):
    """A wrong password: "not authorised" once; the corrected file is read at the next attempt."""
    caplog.set_level(logging.WARNING, logger="edge.publish")
    broker = MosquittoBroker(tmp_path / "auth")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(broker.workdir / "passwd"), "room-3", "s3cret"], check=True)
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
                           + f"password_file {broker.workdir / 'passwd'}\n")
    broker.start()
    try:
        pw = tmp_path / "mqtt_password"
        pw.write_text("wrong\n")
        pub = publisher(broker.host, broker.port, tmp_path, "auth", username="room-3", password_file=str(pw))
        pub.start()
        events(pub, 3)
        assert wait_until(lambda: pub.last_error is not None and pub.last_error.key == "not_authorised", 10)
        time.sleep(2.0)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("mqtt: ")]
        assert len(lines) == 1 and "not authorised" in lines[0] and str(pw) in lines[0], lines
        pw.write_text("s3cret\n")  # fixed, no restart
        assert wait_until(lambda: pub.connected and pub.outbox.depth == 0, 15)
        assert pub.stop()
        print(f"FAULT not-authorised: logged once ({lines[0]}); fixed password file read on the next attempt")
    finally:
        broker.stop()


def test_probe_tells_a_silent_listener_from_a_refusal():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        cause = probe(MqttConfig(host="127.0.0.1", port=srv.getsockname()[1]), timeout=0.5)
    assert cause.key == "no_answer" and "did not answer" in cause.message
    assert probe(MqttConfig(host="127.0.0.1", port=free_port()), timeout=0.5).key == "refused"
