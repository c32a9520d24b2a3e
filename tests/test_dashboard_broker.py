"""The dashboard on a broker that wants TLS with a client certificate and a username/password, configured
exactly like the daemon (``[mqtt]`` + ``[mqtt.tls]``, the password from a file, never the command line)."""

from __future__ import annotations

import shutil
import subprocess

from tests.daemon_run import wait_until, write_config
from tests.dashboard_run import Dashboard
from tests.mqtt_broker import MosquittoBroker
from tests.test_publish import make_pki


def test_dashboard_over_tls_with_password(tmp_path):
    pki = make_pki(tmp_path / "pki")
    broker = MosquittoBroker(tmp_path / "broker")
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([passwd, "-b", "-c", str(broker.workdir / "passwd"), "dashboard", "s3cret"], check=True)
    subprocess.run([passwd, "-b", str(broker.workdir / "passwd"), "bus-7", "bus-pw"], check=True)
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
                           + f"password_file {broker.workdir / 'passwd'}\ncafile {pki['ca_crt']}\n"
                           f"certfile {pki['server_crt']}\nkeyfile {pki['server_key']}\nrequire_certificate true\n")
    broker.start()
    secret = tmp_path / "mqtt_password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    tls = {"enabled": True, "ca_file": str(pki["ca_crt"]), "certfile": str(pki["client_crt"]),
           "keyfile": str(pki["client_key"])}
    cfg = write_config(tmp_path / "dash.toml", {
        "mqtt": {"host": broker.host, "port": broker.port, "username": "dashboard", "password_file": str(secret)},
        "mqtt.tls": tls,
    })
    dash = Dashboard(tmp_path / "dash", broker, None, "--config", str(cfg))
    try:
        dash.wait_ready()  # /healthz says mqtt_connected only after a TLS + password login
        import paho.mqtt.client as mqtt

        device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bus-7")
        device.username_pw_set("bus-7", "bus-pw")
        device.tls_set(ca_certs=tls["ca_file"], certfile=tls["certfile"], keyfile=tls["keyfile"])
        device.connect(broker.host, broker.port)
        device.loop_start()
        device.publish("fer/bus-7/status", "online", qos=1, retain=True).wait_for_publish(10)
        device.disconnect()
        device.loop_stop()
        assert wait_until(lambda: [d["status"] for d in dash.get("/api/devices")] == ["online"], 20)
        assert "s3cret" not in " ".join(dash.proc.args)  # the password never reaches the command line
    finally:
        dash.stop()
        broker.stop()


def test_named_dashboard_gets_what_was_published_while_it_was_down(tmp_path):
    """With --worker-name the broker keeps the dashboard's session: QoS 1 messages published while it is
    stopped are stored after it restarts, each once (raw rows and per-minute rollups) though sent twice."""
    import json

    import paho.mqtt.client as mqtt

    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    db = str(tmp_path / "dash.sqlite")
    try:
        first = Dashboard(tmp_path / "d", broker, db, "--worker-name", "dash-1").wait_ready()
        assert first.stop() == 0
        device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bus-9")
        device.connect(broker.host, broker.port)
        device.loop_start()
        for seq in range(1, 6):
            p = {"v": 1, "ts": 1_800_000_000.0 + seq, "device": "bus-9", "face_id": 1, "expression": "sad",
                 "confidence": 0.5, "scores": {"sad": 0.5}, "box": [0, 0, 0.1, 0.1], "frame": seq, "backend": "cpu",
                 "seq": seq}
            for _ in range(2):  # at-least-once: each delivered twice
                device.publish("fer/bus-9/expression", json.dumps(p), qos=1).wait_for_publish(10)
        device.disconnect()
        device.loop_stop()
        again = Dashboard(tmp_path / "d", broker, db, "--worker-name", "dash-1").wait_ready()
        try:
            assert wait_until(lambda: len(again.get_known("/api/devices/bus-9/expressions", [])) == 5, 20)
            minutes = again.get("/api/devices/bus-9/minutes")  # the rollups count each event once
            assert sum(m["events"] for m in minutes) == sum(m["expressions"]["sad"] for m in minutes) == 5
        finally:
            again.stop()
    finally:
        broker.stop()
