"""End to end: real mosquitto + the real daemon subprocess on the sample video + a paho subscriber.

Covers the MQTT contract, a broker outage mid-run (nothing lost, in order), kill -9 with events
in the outbox, SIGTERM (offline retained, exit 0) and systemd notify over a real socket.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import jsonschema
import pytest

from edge.camera import sample_video_path
from edge.manifest import default_model_path
from edge.publish import SCHEMAS_DIR
from tests.daemon_run import exit_report, outbox_rows, start_daemon, stderr_of, wait_until, write_config
from tests.mqtt_broker import Collector, mqtt_broker, retained  # noqa: F401

REAL_MODEL = default_model_path()


def validator(name: str):
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS_DIR / f"{name}.schema.json").read_text()))


def daemon_config(tmp_path: Path, broker, model: Path | None, device: str = "e2e", **sections) -> Path:
    """A config for the sample clip publishing to ``broker``; ``sections`` override/extend."""
    cfg = {
        "device": {"id": device},
        "camera": {"source": str(sample_video_path())},
        "model": {"path": str(model) if model else None, "accelerator": "cpu"},
        "mqtt": {"host": broker.host, "port": broker.port, "prefix": "fer", "reconnect_min_s": 1, "reconnect_max_s": 1},
        "events": {"interval_s": 0.2},
        "summary": {"interval_s": 0.5},
        "stats": {"interval_s": 0.5},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
    }
    for name, keys in sections.items():
        cfg[name.replace("__", ".")] = {**cfg.get(name, {}), **keys}
    return write_config(tmp_path / "config.toml", cfg)


def face_key(p: dict) -> tuple:
    return (p["face_id"], p["frame"], p["ts"])


def test_contract_end_to_end(mqtt_broker, tmp_path, standin_model):
    col = Collector(mqtt_broker, "fer/#")
    proc = start_daemon(daemon_config(tmp_path, mqtt_broker, standin_model), "--max-frames", "60")
    assert proc.wait(120) == 0, stderr_of(proc)
    report = exit_report(stderr_of(proc))
    assert report["frames"] == 60 and report["outbox_left"] == 0
    assert col.wait_for(lambda c: len(c.on("/expression")) >= report["events"]["expression"]
                        and c.on("/status") and c.on("/status")[-1][1] == b"offline")

    status = [p for _, p, _ in col.on("fer/e2e/status")]
    assert status[0] == b"online" and status[-1] == b"offline"
    assert retained(mqtt_broker, "fer/e2e/status") == b"offline"

    events = col.json_on("fer/e2e/expression")
    assert len(events) == report["events"]["expression"] > 0
    v = validator("expression")
    for e in events:
        v.validate(e)
    face_ids = {e["face_id"] for e in events}
    assert len(face_ids) >= 2  # the sample shows two faces
    assert all(not m[2] for m in col.on("/expression"))  # expression events are not retained

    summaries = col.json_on("fer/e2e/summary")
    assert len(summaries) == report["events"]["summary"] >= 1
    for s in summaries:
        validator("summary").validate(s)
    assert max(s["faces"] for s in summaries) >= 2
    stats = col.json_on("fer/e2e/stats")
    assert stats, "no stats"
    for s in stats:
        validator("stats").validate(s)
    assert stats[-1]["frames"] == 60 and stats[-1]["backend"] == "cpu"
    assert set(stats[-1]["latency_ms"]) >= {"capture", "detect", "classify", "track", "publish"}
    det = stats[-1]["detector"]  # the detector in use and its passes' mean ms (default: auto, three scales)
    assert det["type"] == "auto" and det["passes"].startswith("auto (")
    assert set(det["latency_ms"]) == {"short@0.7", "short@0.4", "short", "windows", "verify", "merge+crop"}
    assert det["full_every"] == 5 and 0 < det["full_share"] <= 1  # the video schedule: the pyramid on some frames
    print(f"e2e: {len(events)} expression events from faces {sorted(face_ids)}, {len(summaries)} summaries, "
          f"{len(stats)} stats; last stats {json.dumps(stats[-1])}")
    assert retained(mqtt_broker, "fer/e2e/summary") is not None
    assert json.loads(retained(mqtt_broker, "fer/e2e/stats"))["frames"] == 60
    col.close()


@pytest.mark.skipif(not REAL_MODEL.is_file(), reason=f"the trained model {REAL_MODEL.name} is not shipped yet")
def test_sample_astronaut_is_happy(mqtt_broker, tmp_path):
    """The shipped model on the sample clip (two smiling astronauts): the dominant expression is happy."""
    col = Collector(mqtt_broker, "fer/#")
    proc = start_daemon(daemon_config(tmp_path, mqtt_broker, None), "--max-frames", "80")
    assert proc.wait(180) == 0, stderr_of(proc)
    assert col.wait_for(lambda c: c.on("/status") and c.on("/status")[-1][1] == b"offline")
    totals: dict[str, int] = {}
    for s in col.json_on("fer/e2e/summary"):
        for label, n in s["counts"].items():
            totals[label] = totals.get(label, 0) + n
    assert max(totals, key=totals.get) == "happy", totals
    col.close()


def test_broker_outage_loses_nothing(mqtt_broker, tmp_path, standin_model):
    """Stop the broker mid-run, restart it on the same port: every event arrives, in order."""
    col = Collector(mqtt_broker, "fer/#", client_id="e2e-outage", persistent=True)
    # realtime: paced at the clip's 15 fps like a camera, so the run outlasts the outage.
    cfg = daemon_config(tmp_path, mqtt_broker, standin_model, camera={"loop": True, "realtime": True})
    proc = start_daemon(cfg, "--max-frames", "150")
    assert col.wait_for(lambda c: len(c.on("/expression")) >= 3, 60)
    mqtt_broker.stop()
    # The daemon keeps running and buffers: its outbox grows while the broker is down.
    assert wait_until(lambda: len(outbox_rows(tmp_path / "outbox.sqlite")) >= 15, 60)
    during_outage = [json.loads(p) for _, t, p in outbox_rows(tmp_path / "outbox.sqlite") if t.endswith("/expression")]
    assert proc.poll() is None
    mqtt_broker.start()
    assert proc.wait(120) == 0, stderr_of(proc)
    report = exit_report(stderr_of(proc))
    produced = report["events"]["expression"]
    assert report["outbox_left"] == 0
    assert col.wait_for(lambda c: len({face_key(e) for e in c.json_on("/expression")}) >= produced, 60)
    got = col.json_on("/expression")
    unique = list(dict.fromkeys(face_key(e) for e in got))
    assert len(unique) == produced  # every event produced, none invented
    assert {face_key(e) for e in during_outage} <= set(unique)  # including those buffered in the outage
    frames = [k[1] for k in unique]
    assert frames == sorted(frames)  # delivered in the order they were produced
    summaries = {json.dumps(s, sort_keys=True) for s in col.json_on("/summary")}
    assert len(summaries) == report["events"]["summary"]
    print(f"outage: produced {produced} expression events ({len(during_outage)} buffered while the broker was down), "
          f"received {len(got)} messages = {len(unique)} unique, in order; summaries {len(summaries)}")
    err = stderr_of(proc)
    # Warned once per cause (the connection was lost, then nothing listened), not per retry or event.
    assert err.count("mqtt: lost the connection") == 1 and err.count("mqtt: nothing listens on") == 1, err
    col.close()


def test_kill_9_with_events_in_the_outbox_then_delivered(mqtt_broker, tmp_path, standin_model):
    mqtt_broker.stop()  # broker down: everything the first daemon produces stays in its outbox
    cfg = daemon_config(tmp_path, mqtt_broker, standin_model, camera={"loop": True, "realtime": True})
    first = start_daemon(cfg)
    assert wait_until(lambda: len(outbox_rows(tmp_path / "outbox.sqlite")) >= 10, 60), stderr_of(first)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    stranded = outbox_rows(tmp_path / "outbox.sqlite")
    assert len(stranded) >= 10
    mqtt_broker.start()
    col = Collector(mqtt_broker, "fer/#")
    second = start_daemon(cfg, "--max-frames", "5")
    assert second.wait(120) == 0, stderr_of(second)
    assert col.wait_for(lambda c: {(t, p) for _, t, p in stranded} <= {(m[0], m[1]) for m in c.messages}, 30)
    assert exit_report(stderr_of(second))["outbox_left"] == 0
    assert outbox_rows(tmp_path / "outbox.sqlite") == []
    print(f"kill -9: {len(stranded)} message(s) stranded in the outbox, all delivered by the restarted daemon")
    col.close()


def test_sigterm_publishes_offline_and_exits_0(mqtt_broker, tmp_path, standin_model):
    col = Collector(mqtt_broker, "fer/#")
    cfg = daemon_config(tmp_path, mqtt_broker, standin_model, camera={"loop": True, "realtime": True})
    proc = start_daemon(cfg)  # no --max-frames: runs until stopped
    assert col.wait_for(lambda c: c.on("/expression"), 60), stderr_of(proc)
    assert retained(mqtt_broker, "fer/e2e/status") == b"online"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, stderr_of(proc)
    assert retained(mqtt_broker, "fer/e2e/status") == b"offline"
    report = exit_report(stderr_of(proc))
    assert report["reason"] == "signal" and report["outbox_left"] == 0
    col.close()


def test_systemd_notify_ready_and_watchdog(tmp_path, standin_model):
    """A real AF_UNIX datagram socket as NOTIFY_SOCKET: READY=1, then WATCHDOG=1 pings, STOPPING=1."""
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    cfg = write_config(tmp_path / "c.toml", {
        "camera": {"source": str(sample_video_path()), "loop": True, "realtime": True},
        "model": {"path": str(standin_model), "accelerator": "cpu"},
    })
    proc = start_daemon(cfg, "--max-frames", "45", env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"})
    messages = []
    try:
        while not any(m.startswith("STOPPING=1") for m in messages):
            messages.append(sock.recv(4096).decode())
    finally:
        sock.close()
    assert proc.wait(60) == 0, stderr_of(proc)
    first_ready = next(i for i, m in enumerate(messages) if m.startswith("READY=1"))
    pings = [i for i, m in enumerate(messages) if m == "WATCHDOG=1"]
    assert len(pings) >= 3 and pings[0] > first_ready  # 45 frames at 15 fps = 3 s, ping every 0.1 s


def run_stdout(tmp_path: Path, model: Path, **privacy) -> list[dict]:
    """Run the daemon with no broker (events as JSON lines on stdout) and parse its output."""
    from tests.daemon_run import run_cli

    cfg = write_config(tmp_path / "stdout.toml", {
        "camera": {"source": str(sample_video_path())},
        "model": {"path": str(model), "accelerator": "cpu"},
        "privacy": privacy,
    })
    proc = run_cli("run", "--config", str(cfg), "--max-frames", "10")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_no_image_leaves_the_device_unless_opted_in(tmp_path, standin_model):
    import base64

    import cv2
    import numpy as np

    lines = run_stdout(tmp_path, standin_model)
    assert lines[0] == {"topic": "fer/fer-edge-1/status", "payload": "online"}
    events = [m["payload"] for m in lines if m["topic"].endswith("/expression")]
    assert events and all("crop" not in e for e in events)
    events = [m["payload"] for m in run_stdout(tmp_path, standin_model, publish_crops=True)
              if m["topic"].endswith("/expression")]
    assert events and all("crop" in e for e in events)
    crop = cv2.imdecode(np.frombuffer(base64.b64decode(events[0]["crop"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert crop.shape == (48, 48)
