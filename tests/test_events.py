"""Event scheduling, summary windows, stage timing, and the monitor's per-device view."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from edge.events import ExpressionSchedule, StageTimer, SummaryWindow
from edge.manifest import FER_LABELS
from edge.monitor import MonitorState


def track(face_id, expression="happy", changed=False):
    scores = np.full(7, 0.1, np.float32)
    if expression:
        scores[FER_LABELS.index(expression)] = 0.4
    return SimpleNamespace(face_id=face_id, expression=expression, changed=changed, scores=scores)


def test_expression_on_first_report_on_change_and_every_interval():
    s = ExpressionSchedule(interval_s=10)
    assert [t.face_id for t in s.due([track(1), track(2, "")], now=0)] == [1]  # unreported face: nothing
    assert s.due([track(1)], now=5) == []
    assert [t.face_id for t in s.due([track(1, "sad", changed=True)], now=6)] == [1]
    assert s.due([track(1, "sad")], now=15) == []
    assert [t.face_id for t in s.due([track(1, "sad")], now=16)] == [1]  # 10 s since the last one
    s.due([], now=17)  # face 1 left
    assert [t.face_id for t in s.due([track(1, "sad")], now=18)] == [1]  # back: reported again


def test_summary_window_counts_and_means():
    w = SummaryWindow(FER_LABELS, start=100.0)
    w.add([track(1), track(2, "sad")])
    w.add([track(1), track(3, "")])
    assert w.faces == {1, 2} and w.observations == 3
    assert w.counts["happy"] == 2 and w.counts["sad"] == 1
    assert abs(w.mean_scores()["happy"] - (0.4 + 0.1 + 0.4) / 3) < 1e-6
    w.reset(200.0)
    assert w.observations == 0 and w.start == 200.0 and w.mean_scores()["happy"] == 0.0


def test_stage_timer():
    t = StageTimer()
    t.reset(0.0)
    for _ in range(4):
        t.add("detect", 0.005)
        t.add("classify", 0.001)
        t.frame_done()
    ms = t.latency_ms()
    assert abs(ms["detect"] - 5.0) < 1e-9 and abs(ms["classify"] - 1.0) < 1e-9 and ms["capture"] == 0.0
    assert abs(ms["total"] - 6.0) < 1e-9 and t.fps(2.0) == 2.0
    t.add("landmarks", 0.002)  # an extra stage, e.g. the attention role's
    t.reset(2.0)  # an interval with no frames (the stats at a clean stop, just after the periodic ones)
    assert t.latency_ms()["landmarks"] == 0.0 and t.latency_ms()["total"] == 0.0


def test_monitor_view():
    m = MonitorState()
    assert "no devices" in m.render()
    m.handle("fer/room-1/status", b"online")
    m.handle("fer/room-1/stats", json.dumps({"fps": 14.9, "backend": "edgetpu", "latency_ms": {"total": 12.5},
                                             "outbox": {"depth": 3}, "cpu_temp_c": 51.2}).encode())
    m.handle("fer/room-1/expression", json.dumps({"face_id": 4, "expression": "happy", "confidence": 0.81,
                                                  "box": [0.1, 0.1, 0.2, 0.2], "ts": 1000.0}).encode())
    m.handle("fer/room-1/summary", json.dumps({"faces": 1, "dominant": "happy", "counts": {"happy": 5}}).encode())
    m.handle("fer/room-2/status", b"offline")
    m.handle("fer/room-2/expression", b"not json")  # ignored, no crash
    text = m.render(now=1005.0)
    assert "room-1" in text and "online" in text and "14.9" in text and "edgetpu" in text and "51C" in text
    assert "face    4: happy" in text and "dominant happy" in text
    assert "room-2" in text and "offline" in text
