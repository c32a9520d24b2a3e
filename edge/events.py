"""When to publish, and what goes into the summary and stats: small stateful helpers for the daemon.

* ``ExpressionSchedule``: an expression event per face when its reported expression changes, and
  at least every ``events.interval_s`` while the face stays in view.
* ``SummaryWindow``: per-label counts and mean scores of face observations over one window.
* ``StageTimer``: mean per-stage latency (ms) and fps over one stats interval.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

STAGES = ("capture", "detect", "classify", "track", "publish")


class ExpressionSchedule:
    """Decides which tracks get an expression event now.

    Args:
        interval_s: re-send a face's expression at least this often even when it did not change.
    """

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._last_sent: dict[int, float] = {}

    def due(self, tracks: list, now: float) -> list:
        """The tracks (with ``face_id``, ``changed``, ``expression``) to publish at ``now`` (the frame's time, s)."""
        out = []
        for t in tracks:
            if not t.expression:
                continue
            last = self._last_sent.get(t.face_id)
            if t.changed or last is None or now - last >= self.interval_s:
                self._last_sent[t.face_id] = now
                out.append(t)
        # Forget faces the tracker dropped, so the dict does not grow forever.
        live = {t.face_id for t in tracks}
        for fid in [f for f in self._last_sent if f not in live]:
            del self._last_sent[fid]
        return out


class SummaryWindow:
    """Accumulates face observations (one face in one frame) for the ``summary`` payload.

    Args:
        labels: the classifier's labels, in score order.
    """

    def __init__(self, labels: list[str], start: float | None = None):
        self.labels = list(labels)
        self.reset(time.time() if start is None else start)

    def reset(self, start: float) -> None:
        """Begin a new window at unix time ``start``."""
        self.start = start
        self.faces: set[int] = set()
        self.counts = {label: 0 for label in self.labels}
        self.score_sum = np.zeros(len(self.labels), np.float64)
        self.observations = 0

    def add(self, tracks: list) -> None:
        """Count the tracks seen in this frame (``expression`` set, smoothed ``scores``; without labels,
        [model] emotions = false, every confirmed face counts as present)."""
        for t in tracks:
            if self.labels and not t.expression:
                continue
            self.faces.add(t.face_id)
            if not self.labels:
                self.observations += 1
                continue
            self.counts[t.expression] += 1
            self.score_sum += np.asarray(t.scores, np.float64)
            self.observations += 1

    def mean_scores(self) -> dict[str, float]:
        """Mean smoothed probability per label over the window (zeros when empty)."""
        mean = self.score_sum / self.observations if self.observations else self.score_sum
        return {label: float(p) for label, p in zip(self.labels, mean)}


class StageTimer:
    """Per-stage wall time over one stats interval."""

    def __init__(self):
        self.total_s: dict[str, float] = defaultdict(float)
        self.reset(time.monotonic())

    def reset(self, now: float) -> None:
        """Start a new interval at monotonic time ``now``."""
        self.since = now
        self.frames = 0
        # Keep the stages seen so far at 0.0: an interval without frames (the stop's stats, just after the
        # periodic ones) reports "landmarks": 0.0 instead of dropping the key that dashboards read.
        self.total_s = defaultdict(float, dict.fromkeys(self.total_s, 0.0))

    def add(self, stage: str, seconds: float) -> None:
        """Charge ``seconds`` to ``stage`` for the current frame."""
        self.total_s[stage] += seconds

    def frame_done(self) -> None:
        self.frames += 1

    def fps(self, now: float) -> float:
        """Frames per second since the interval began."""
        elapsed = now - self.since
        return self.frames / elapsed if elapsed > 0 else 0.0

    def latency_ms(self) -> dict[str, float]:
        """Mean milliseconds per frame for each stage, plus their ``total``."""
        n = max(self.frames, 1)
        extra = [s for s in self.total_s if s not in STAGES]  # e.g. "landmarks", only when that stage runs
        out = {s: 1000.0 * self.total_s.get(s, 0.0) / n for s in (*STAGES, *extra)}
        out["total"] = sum(out.values())
        return out


class AttentionWindow:
    """The attention figures of one summary window: faces with landmarks, the share of their observations
    looking inside the cone, and the events counted (``summary.attention``)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.faces: set[int] = set()
        self.observations = self.looking = self.posed = 0
        self.events: dict[str, int] = defaultdict(int)
        self.perclos: dict[int, float] = {}  # latest PERCLOS per face

    def add(self, face_id: int, snapshot: dict, looking: bool | None, events: list[dict]) -> None:
        """One face in one frame: its ``AttentionState.snapshot()``, inside the cone or not (None: its ahead pose is
        not learnt yet, left out of the share), its new events."""
        self.faces.add(face_id)
        self.observations += 1
        self.posed += int(looking is not None)
        self.looking += int(looking is True)
        self.perclos[face_id] = float(snapshot.get("perclos", 0.0))
        for e in events:
            self.events[e["type"]] += 1

    def summary(self) -> dict:
        share = self.looking / self.posed if self.posed else None
        return {"faces": len(self.faces), "observations": self.observations,
                "looking_share": None if share is None else round(share, 4),
                "perclos_max": round(max(self.perclos.values()), 4) if self.perclos else None,
                "blinks": self.events["blink"], "long_closures": self.events["long_closure"],
                "yawns": self.events["yawn"], "off_road_events": self.events["off_road"]}
