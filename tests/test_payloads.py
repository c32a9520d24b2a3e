"""edge.payloads: the MQTT contract in one module (topics, QoS/retain, builders valid against edge/schemas/)."""

from __future__ import annotations

from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest

from edge import payloads as P
from edge.manifest import FER_LABELS


def track(face_id=3, box=(64, 48, 128, 96), label="happy"):
    scores = np.full(7, 0.05, np.float32)
    scores[FER_LABELS.index(label)] = 0.7
    return SimpleNamespace(face_id=face_id, box=box, scores=scores, expression=label, confidence=0.7)


def test_topics_round_trip():
    assert P.topic("fer", "room-3", "expression") == "fer/room-3/expression"
    assert P.parse_topic("fer/room-3/expression") == ("fer", "room-3", "expression")
    assert P.parse_topic("site/a/fer/room-3/stats") == ("site/a/fer", "room-3", "stats")  # prefix with levels
    assert P.parse_topic("site/a/fer/room-3/stats", prefix="fer") is None
    assert P.parse_topic("fer/room-3") is None and P.parse_topic("fer//stats") is None
    assert P.subscription("fer") == "fer/+/#" and P.subscription("fer", kind="alert") == "fer/+/alert"
    assert P.device_base("fer", "d") == "fer/d"
    for kind in P.KINDS:
        assert P.parse_topic(P.topic("x/y", "d", kind)) == ("x/y", "d", kind)


def test_qos_retain_table_is_the_contract():
    assert P.qos_retain("status") == (1, True)
    assert P.qos_retain("expression") == (1, False)
    assert P.qos_retain("summary") == (1, True)
    assert P.qos_retain("stats") == (0, True)
    assert P.qos_retain("alert") == (1, False)
    assert P.qos_retain("attention") == (1, False)
    assert set(P.QOS_RETAIN) == set(P.KINDS)
    assert [k for k in P.KINDS if P.is_durable(k)] == ["expression", "summary", "alert", "attention"]
    for kind in P.KINDS:
        assert P.schema_path(kind).is_file(), kind


def test_every_builder_validates_against_its_schema():
    e = P.expression_event("d", track(), 12, 1700000000.5, (640, 480), FER_LABELS, "cpu", seq=7)
    assert e["seq"] == 7 and e["v"] == 1 and e["box"] == [0.1, 0.1, 0.2, 0.2]
    P.validate("expression", e)
    P.validate("expression", {k: v for k, v in e.items() if k != "seq"})  # additive: v1 without seq still valid
    s = P.summary_event("d", 2.0, 2, dict.fromkeys(FER_LABELS, 0) | {"happy": 5}, dict.fromkeys(FER_LABELS, 0.1),
                        0.0, 2.0, 5, seq=1)
    P.validate("summary", s)
    lat = dict.fromkeys(("capture", "detect", "classify", "track", "publish"), 1.0)
    st = P.stats_event("d", 1.0, 14.2, lat,
                       "cpu", 10, 0, 0, 0, 5.0, None, {"expression": 1}, 1, True,
                       camera=P.camera_state(False, 2, 13.04, "stream http://x did not open"),
                       outbox=P.outbox_state(3, 4, {"max_events": 4}, memory=1, write_errors=2))
    assert st["camera"] == {"connected": False, "reconnects": 2, "last_frame_age_s": 13.0,
                            "error": "stream http://x did not open"}
    P.validate("stats", st)
    P.validate("stats", P.stats_event("d", 1.0, 0, lat, "cpu", 0, 0, 0, 0, 0, 40.0, {}, 0, False))
    a = P.alert_event("d", "drowsy", "raised", 1700000000.0, "eyes closed 2.1 s", ts=1700000002.0)
    P.validate("alert", a)
    P.validate("alert", P.alert_event("d", "drowsy", "cleared", 1700000000.0))
    for online in (True, False):
        P.validate("status", P.status_payload(online))
    device_alert = P.alert_event("d", "distracted", "raised", 1.0, "eyes off the road for 3.5 s", ts=4.5,
                                 source="device", face_id=3)
    P.validate("alert", {**device_alert, "seq": 1})
    snap = {"eye_openness": [0.9, 1.0], "eyes_closed": False, "closed_s": 0.0, "mouth_open": 0.1, "yaw": float("nan"),
            "pitch": -3.0, "roll": 1.0, "perclos": 0.02, "blinks_per_min": 14.0, "long_closures_per_min": 0, "yawns": 0,
            "off_road_s": 0.0, "drowsy": False, "distracted": False, "yawning": False, "baseline_ear": [0.3, 0.3]}
    att = P.attention_event("d", 3, (64, 48, 128, 96), 12, 2.0, (640, 480), snap,
                            [{"type": "blink", "start": 1.7, "duration": 0.2}], None, seq=4)
    assert att["yaw"] is None and att["box"] == [0.1, 0.1, 0.2, 0.2] and "baseline_ear" not in att
    P.validate("attention", att)
    no_emotion = P.summary_event("d", 2.0, 2, None, None, 0.0, 2.0, 5, seq=2,
                                 attention={"faces": 2, "observations": 5, "looking_share": 0.6, "perclos_max": 0.0,
                                            "blinks": 1, "long_closures": 0, "yawns": 0, "off_road_events": 0})
    assert not {"counts", "mean_scores", "dominant"} & set(no_emotion)
    P.validate("summary", no_emotion)
    with pytest.raises(jsonschema.ValidationError):
        P.validate("attention", {**att, "events": [{"type": "sneeze", "start": 1.0, "duration": 0.1}]})
    with pytest.raises(ValueError):
        P.alert_event("d", "drowsy", "maybe", 0.0)
    with pytest.raises(jsonschema.ValidationError):
        P.validate("expression", {**e, "seq": 0})
    with pytest.raises(jsonschema.ValidationError):
        P.validate("alert", {**a, "state": "on"})


def test_encode_decode():
    assert P.encode("online") == b"online"
    assert P.encode({"v": 1, "a": [1]}) == b'{"v":1,"a":[1]}'
    assert P.decode("status", b"offline") == "offline"
    assert P.decode("stats", b'{"v":1}') == {"v": 1}
    assert P.decode("stats", b"[1]") is None and P.decode("summary", b"not json") is None


def test_stats_state_the_device_role():
    """Every stats payload says the device's role; the config, the builder and the schema list the same roles."""
    from typing import get_args

    from edge.config import DeviceConfig, load_config

    assert get_args(DeviceConfig.model_fields["role"].annotation) == P.DEVICE_ROLES
    assert P.load_schema("stats")["properties"]["role"]["enum"] == list(P.DEVICE_ROLES)
    lat = dict.fromkeys(("capture", "detect", "classify", "track", "publish"), 1.0)
    assert P.stats_event("d", 1.0, 0, lat, "cpu", 0, 0, 0, 0, 0, None, {}, 0, False)["role"] == "general"
    for role in P.DEVICE_ROLES:
        st = P.stats_event("d", 1.0, 0, lat, "cpu", 0, 0, 0, 0, 0, None, {}, 0, False, role=role)
        assert st["role"] == role
        P.validate("stats", st)
    old = {k: v for k, v in st.items() if k != "role"}  # a device older than the field: still valid
    P.validate("stats", old)
    with pytest.raises(jsonschema.ValidationError):
        P.validate("stats", {**st, "role": "pilot"})
    with pytest.raises(ValueError):
        P.stats_event("d", 1.0, 0, lat, "cpu", 0, 0, 0, 0, 0, None, {}, 0, False, role="pilot")
    assert load_config(None).device.role == "general"
