"""The learnt "ahead" pose and the device's own alerts (pure logic over signal series; the real-model path is in
test_attention_daemon.py)."""

from __future__ import annotations

from edge.attention import AttentionConfig, AttentionState, FaceSignals
from edge.attention.alerts import DeviceAlerts

OPEN_EARS = dict(ear_left=0.3, ear_right=0.3, mar=0.0)


def feed(state, seconds, t0, yaw, pitch, fps=15.0):
    events, n = [], int(round(seconds * fps))
    for i in range(n):
        events += state.update(FaceSignals(**OPEN_EARS, pitch=pitch, yaw=yaw, roll=0.0), t0 + i / fps)
    return events, t0 + n / fps


def test_ahead_pose_is_learnt_per_face_and_a_glance_does_not_move_it():
    state = AttentionState(AttentionConfig())
    _, t = feed(state, 0.2, 0.0, yaw=25.0, pitch=-20.0)  # a camera off to the side and above the driver
    assert state.snapshot()["looking"] is None  # fewer than baseline_min_samples frames: not known yet
    _, t = feed(state, 2.0, t, yaw=25.0, pitch=-20.0)
    assert state.snapshot()["looking"] is True and state.snapshot()["ahead"] == [25.0, -20.0]
    events, t = feed(state, 4.0, t, yaw=-20.0, pitch=-20.0)  # 45 degrees away, inside the learning period
    assert [e["type"] for e in events] == ["off_road"] and state.snapshot()["distracted"]
    assert state.snapshot()["ahead"] == [25.0, -20.0]


def test_fixed_ahead_pose_from_the_config():
    state = AttentionState(AttentionConfig(yaw_center=0.0, pitch_center=0.0))
    _, t = feed(state, 1.0, 0.0, yaw=25.0, pitch=-25.0)
    assert state.snapshot()["looking"] is False and state.snapshot()["off_road_s"] > 0.9


def test_device_alerts_raise_once_and_clear():
    alerts = DeviceAlerts(absent_s=3.5)
    assert alerts.update({1: {"drowsy": False}}, 0.0) == []
    (up,) = alerts.update({1: {"drowsy": True, "perclos": 0.2, "long_closures_per_min": 2}}, 1.0)
    assert (up.kind, up.state, up.since, up.face_id) == ("drowsy", "raised", 1.0, 1) and "20%" in up.detail
    assert alerts.update({1: {"drowsy": True}}, 2.0) == []  # still up: nothing new
    (down,) = alerts.update({1: {"drowsy": False}}, 3.0)
    assert (down.kind, down.state, down.since, down.detail) == ("drowsy", "cleared", 1.0, "back to normal")


def test_a_face_that_is_no_longer_read_counts_as_distracted():
    alerts = DeviceAlerts(absent_s=3.5)
    alerts.update({7: {}}, 10.0)  # the driver, read
    assert alerts.update({}, 13.0, read=False) == []
    (up,) = alerts.update({}, 13.6, read=False)
    assert (up.kind, up.state, up.face_id) == ("distracted", "raised", 7) and "no face read for 3.6 s" in up.detail
    (down,) = alerts.update({8: {}}, 15.0, read=True)  # a face read again, looking ahead
    assert (down.kind, down.state, down.detail) == ("distracted", "cleared", "back to normal")
    assert DeviceAlerts(absent_s=None).update({}, 100.0, read=False) == []
