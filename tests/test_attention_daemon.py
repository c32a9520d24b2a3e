"""The attention stage in the real daemon, end to end through a real mosquitto: the driver role on a real-frame clip
whose eyes close for 2 s and whose head then turns away for 4.5 s; the classroom role publishing who looks to the
front and no emotion at all."""

from __future__ import annotations

import json

import pytest

from edge.config import validate_config
from tests.attention_video import make_driver_clip
from tests.conftest import ASTRONAUT_FACE
from tests.daemon_run import exit_report, start_daemon, stderr_of, write_config
from tests.mqtt_broker import Collector, mqtt_broker  # noqa: F401
from tests.test_attention import _close_eyes
from tests.test_daemon_e2e import validator
from tests.test_no_emotions import EXPRESSION_KEYS, keys_of


@pytest.fixture(scope="module")
def driver_clip(tmp_path_factory, astronaut_bgr):
    from edge.attention import FaceLandmarker

    pts = FaceLandmarker().landmarks(astronaut_bgr, ASTRONAUT_FACE).points
    return make_driver_clip(tmp_path_factory.mktemp("driver") / "driver.avi", astronaut_bgr,
                            _close_eyes(astronaut_bgr, pts), ASTRONAUT_FACE)


def role_config(tmp_path, broker, source, role: str, **sections):
    cfg = {"device": {"id": role, "role": role}, "camera": {"source": str(source), "realtime": False},
           "mqtt": {"host": broker.host, "port": broker.port}, "outbox": {"path": str(tmp_path / "outbox.sqlite")},
           "summary": {"interval_s": 1.0}, "stats": {"interval_s": 1.0}, **sections}
    return write_config(tmp_path / f"{role}.toml", cfg)


def test_roles_turn_on_what_they_need():
    driver = validate_config({"device": {"role": "driver"}})
    assert (driver.attention.enabled, driver.attention.alerts, driver.attention.max_faces, driver.detector.type,
            driver.model.emotions) == (True, True, 1, "driver", True)
    classroom = validate_config({"device": {"role": "classroom"}})
    assert (classroom.attention.enabled, classroom.attention.alerts, classroom.model.emotions) == (True, False, False)
    # The front of a classroom is fixed (the camera's direction), not learnt from each pupil's own median pose.
    assert (classroom.attention.yaw_center, classroom.attention.pitch_center) == (0.0, -12.0)
    assert driver.attention.yaw_center is None and driver.attention.pitch_center is None  # learnt per face
    assert validate_config({"device": {"role": "classroom"},
                            "attention": {"pitch_center": -5.0}}).attention.pitch_center == -5.0
    general = validate_config({})
    assert (general.attention.enabled, general.attention.alerts, general.model.emotions) == (False, False, True)
    # What the file sets wins over the role.
    custom = validate_config({"device": {"role": "classroom"}, "model": {"emotions": True},
                              "attention": {"enabled": False}, "detector": {"type": "auto"}})
    assert custom.model.emotions is True and custom.attention.enabled is False and custom.detector.type == "auto"


def test_driver_eyes_shut_then_turned_away_raises_long_closure_and_distracted(mqtt_broker, tmp_path, driver_clip):
    clip, times = driver_clip
    col = Collector(mqtt_broker, "fer/#")
    proc = start_daemon(role_config(tmp_path, mqtt_broker, clip, "driver", attention={"interval_s": 0.5}))
    assert proc.wait(180) == 0, stderr_of(proc)
    report = exit_report(stderr_of(proc))
    assert report["reason"] == "source ended" and report["outbox_left"] == 0
    assert col.wait_for(lambda c: c.on("/status") and c.on("/status")[-1][1] == b"offline")

    attention = col.json_on("fer/driver/attention")
    assert len(attention) == report["events"]["attention"] > 10
    for a in attention:
        validator("attention").validate(a)
    t0 = min(a["ts"] for a in attention) - 2 / 15  # the clip's time 0 (its first frames feed the tracker)
    events = [e for a in attention for e in a["events"]]
    shut_start, shut_end = times["eyes_shut"][0]
    long_closures = [e for e in events if e["type"] == "long_closure"]
    assert len(long_closures) == 1, events
    assert long_closures[0]["start"] - t0 == pytest.approx(shut_start, abs=0.3)
    assert not [e for e in events if e["type"] == "blink"], "the 2 s closure was also counted as a blink"
    closed = [a for a in attention if a["eyes_closed"]]
    assert closed and all(shut_start - 0.2 <= a["ts"] - t0 <= shut_end + 0.3 for a in closed)

    alerts = col.json_on("fer/driver/alert")
    for a in alerts:
        validator("alert").validate(a)
    distracted = [(a["state"], a["ts"] - t0) for a in alerts if a["kind"] == "distracted"]
    away_start, away_end = times["turned_away"][0]
    assert [s for s, _ in distracted] == ["raised", "cleared"], alerts
    assert away_start + 3.4 <= distracted[0][1] <= away_end and distracted[1][1] >= away_end
    assert all(a["source"] == "device" for a in alerts)
    stats = col.json_on("fer/driver/stats")
    assert {s["role"] for s in stats} == {"driver"}
    assert all("landmarks" in s["latency_ms"] for s in stats) and max(s["latency_ms"]["landmarks"] for s in stats) > 0
    col.close()


def test_classroom_publishes_who_looks_ahead_and_no_emotion(mqtt_broker, tmp_path, sample_clip):
    col = Collector(mqtt_broker, "fer/#")
    proc = start_daemon(role_config(tmp_path, mqtt_broker, sample_clip, "classroom"), "--max-frames", "60")
    assert proc.wait(120) == 0, stderr_of(proc)
    assert "model none (emotions = false)" in stderr_of(proc)
    assert col.wait_for(lambda c: c.on("/status") and c.on("/status")[-1][1] == b"offline")
    assert not col.on("/expression") and not col.on("/alert")
    for topic, payload, _ in col.messages:
        if payload.startswith(b"{"):
            assert not keys_of(json.loads(payload)) & EXPRESSION_KEYS, topic
    summaries = col.json_on("fer/classroom/summary")
    for s in summaries:
        validator("summary").validate(s)
    att = [s["attention"] for s in summaries if s["attention"]["observations"]]
    assert att and max(a["faces"] for a in att) >= 2
    assert all(0.0 <= a["looking_share"] <= 1.0 for a in att)
    assert col.json_on("fer/classroom/attention")
    col.close()


@pytest.fixture
def sample_clip():
    from edge.camera import sample_video_path

    return sample_video_path()
