"""Driver alert logic with scripted event streams (no broker, no clock: times are given)."""

from __future__ import annotations

from dashboard.alerts import NEGATIVE_EXPRESSION, NO_FACE, AlertEngine
from dashboard.config import AlertConfig

T0 = 1_700_000_000.0


def ev(ts, expression, face_id=1):
    return {"v": 1, "ts": ts, "device": "car", "face_id": face_id, "expression": expression, "confidence": 0.9}


def feed(engine, stream, device="car"):
    """Play ``[(ts, expression | None)]``: an event at each ts (None: only time passes); returns transitions."""
    out = []
    for ts, expression in stream:
        if expression is None:
            out += [(ts, a.kind, a.state) for a in engine.tick(ts)]
        else:
            out += [(ts, a.kind, a.state) for a in engine.on_message(device, "expression", ev(ts, expression), received=ts)]
    return out


def test_fear_persisting_raises_after_n_seconds_then_clears():
    engine = AlertEngine(AlertConfig(negative_s=5, no_face_s=60, face_timeout_s=25))
    stream = [(T0, "neutral"), (T0 + 1, "fear"), (T0 + 2, "fear"), (T0 + 4, None), (T0 + 5.9, "fear"),
              (T0 + 6.0, None), (T0 + 7, "fear"), (T0 + 9, "neutral"), (T0 + 10, None)]
    assert feed(engine, stream) == [(T0 + 6.0, NEGATIVE_EXPRESSION, "raised"), (T0 + 9, NEGATIVE_EXPRESSION, "cleared")]


def test_short_negative_bursts_and_mixed_negatives_do_not_alert():
    engine = AlertEngine(AlertConfig(negative_s=5, no_face_s=60))
    # fear 3 s, neutral, sad 3 s: never 5 s in a row; then angry -> sad counts as one negative run? no:
    # each face's run restarts on any non-negative expression only.
    stream = [(T0, "fear"), (T0 + 3, "neutral"), (T0 + 4, "sad"), (T0 + 7, "happy"), (T0 + 8, None)]
    assert feed(engine, stream) == []
    # angry then sad (both negative) is one run of 6 s
    assert feed(engine, [(T0 + 10, "angry"), (T0 + 13, "sad"), (T0 + 16, None)]) == [(T0 + 16, NEGATIVE_EXPRESSION, "raised")]


def test_negative_needs_the_face_to_stay_in_view():
    engine = AlertEngine(AlertConfig(negative_s=5, no_face_s=600, face_timeout_s=2))
    # fear once, then the face vanishes (no events): after face_timeout it left the view, no alert
    assert feed(engine, [(T0, "fear"), (T0 + 6, None)]) == []
    # one face fearful, another happy: the fearful one raises
    engine = AlertEngine(AlertConfig(negative_s=5, no_face_s=600, face_timeout_s=25))
    out = []
    for ts in range(0, 8):
        out += engine.on_message("car", "expression", ev(T0 + ts, "happy", face_id=1), received=T0 + ts)
        out += engine.on_message("car", "expression", ev(T0 + ts, "sad", face_id=2), received=T0 + ts)
    assert [(a.kind, a.state, a.detail["face_id"], a.detail["expression"]) for a in out] == [
        (NEGATIVE_EXPRESSION, "raised", 2, "sad")]
    assert out[0].since == T0


def test_face_disappears_raises_no_face_and_returns_clears():
    engine = AlertEngine(AlertConfig(negative_s=5, no_face_s=10, face_timeout_s=3))
    stream = [(T0, "happy"), (T0 + 2, "happy"), (T0 + 8, None), (T0 + 11.9, None), (T0 + 12, None), (T0 + 20, None),
              (T0 + 21, "neutral")]
    assert feed(engine, stream) == [(T0 + 12, NO_FACE, "raised"), (T0 + 21, NO_FACE, "cleared")]
    raised = engine.devices["car"]
    assert NO_FACE not in raised.active


def test_summaries_and_stats_count_as_faces_seen_and_offline_clears():
    engine = AlertEngine(AlertConfig(no_face_s=10))
    engine.on_message("bus", "status", "online", received=T0)
    summary = {"v": 1, "ts": T0 + 9, "faces": 1, "window": {"start": T0, "end": T0 + 9}}
    assert engine.on_message("bus", "summary", summary, received=T0 + 9) == []
    assert engine.tick(T0 + 15) == []  # face seen at T0 + 9 by the summary
    stats = {"v": 1, "ts": T0 + 18, "faces": 1}
    engine.on_message("bus", "stats", stats, received=T0 + 18)
    assert engine.tick(T0 + 27) == []
    raised = engine.tick(T0 + 28.5)
    assert [(a.kind, a.state) for a in raised] == [(NO_FACE, "raised")] and raised[0].since == T0 + 18
    cleared = engine.on_message("bus", "status", "offline", received=T0 + 30)
    assert [(a.kind, a.state, a.detail["reason"]) for a in cleared] == [(NO_FACE, "cleared", "device offline")]
    assert engine.tick(T0 + 100) == []  # offline: no checks


def test_device_clock_skew_and_device_filter():
    engine = AlertEngine(AlertConfig(negative_s=5, devices=["car"]))
    assert engine.on_message("classroom", "expression", ev(T0, "fear"), received=T0) == []  # not a driver device
    # the car's clock is 1000 s behind the dashboard's: ticks are converted with the observed skew
    engine.on_message("car", "expression", ev(T0 - 1000, "fear"), received=T0)
    assert engine.tick(T0 + 4) == []
    assert [(a.kind, a.state) for a in engine.tick(T0 + 5)] == [(NEGATIVE_EXPRESSION, "raised")]
