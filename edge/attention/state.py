"""``AttentionState``: one tracked face's signals over time -> blink, long-closure, yawn and off-road events
and a snapshot (PERCLOS, blinks per minute, eyes-off-road seconds, the drowsy/distracted/yawning flags)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge.attention.config import AttentionConfig
from edge.attention.signals import (
    LEFT_EYE, OPEN_EAR, RIGHT_EYE, eye_aspect_ratio, eye_openness, head_pose, mouth_aspect_ratio, mouth_opening,
    off_road,
)


class SustainedCondition:
    """A condition that makes one event once it has held for a while (a long eye closure, a yawn, eyes off the
    road): the event's ``start`` is when it began, ``duration`` how long it had held when the event was sent; it
    re-arms when the condition ends."""

    def __init__(self, kind: str):
        self.kind = kind
        self.since: float | None = None  # when the condition began; None while it does not hold
        self.sent = False

    def update(self, active: bool, ts: float, min_s: float) -> list[dict]:
        """The frame at ``ts``: whether the condition holds; returns the event (at most one) it makes now, once
        it has held ``min_s`` seconds."""
        if not active:
            self.since = None
            return []
        if self.since is None:
            self.since, self.sent = ts, False
        if self.sent or ts - self.since < min_s:
            return []
        self.sent = True
        return [{"type": self.kind, "start": self.since, "duration": round(ts - self.since, 3)}]

    def held(self, ts: float) -> float:
        """Seconds the condition has held at ``ts`` (0 when it does not)."""
        return 0.0 if self.since is None else ts - self.since


@dataclass
class FaceSignals:
    """One face's signals in one frame: EAR per eye, mouth aspect ratio, head pose (degrees, AFLW2000-3D
    convention; NaN when unknown)."""

    ear_left: float
    ear_right: float
    mar: float
    pitch: float = float("nan")
    yaw: float = float("nan")
    roll: float = float("nan")


def measure(points: np.ndarray, frame_size: tuple[int, int]) -> FaceSignals:
    """All signals of one face: landmarks [468, 2+] in frame pixels of a (width, height) frame."""
    pitch, yaw, roll = head_pose(points, frame_size)
    return FaceSignals(eye_aspect_ratio(points, LEFT_EYE), eye_aspect_ratio(points, RIGHT_EYE),
                       mouth_aspect_ratio(points), pitch, yaw, roll)


def single_frame(signals: FaceSignals, cfg: AttentionConfig | None = None) -> dict:
    """The signals of a face seen once (one image): no per-face baseline exists, so eye openness uses the
    population OPEN_EAR. Returns eye_openness [left, right], eyes_closed (mean openness < closed_below),
    mouth_open, yaw, pitch, roll."""
    cfg = cfg or AttentionConfig()
    left = eye_openness(signals.ear_left, OPEN_EAR, cfg.closed_ear)
    right = eye_openness(signals.ear_right, OPEN_EAR, cfg.closed_ear)
    return {"eye_openness": [round(left, 3), round(right, 3)], "eyes_closed": (left + right) / 2.0 < cfg.closed_below,
            "mouth_open": round(mouth_opening(signals.mar), 3),
            "yaw": round(signals.yaw, 1), "pitch": round(signals.pitch, 1), "roll": round(signals.roll, 1)}


class AttentionState:
    """The attention state of one tracked face. ``update(signals, ts)`` once per frame (ts in seconds, rising)
    returns the events that ended or crossed a threshold in that frame; ``snapshot()`` the current values.

    Events (dicts): ``{"type": "blink", "start": ts, "duration": s}`` when the eyes reopen after a closure
    shorter than ``long_closure_s``; ``{"type": "long_closure", "start": ts, "duration": s}`` once, when a
    closure reaches ``long_closure_s`` (the eyes may still be closed); ``{"type": "yawn", "start", "duration"}``
    once, when the mouth has been open over ``yawn_mar`` for ``yawn_min_s``; ``{"type": "off_road", "start",
    "duration"}`` once, when the head has been outside the road cone for ``distracted_s``.
    """

    def __init__(self, cfg: AttentionConfig | None = None):
        self.cfg = cfg or AttentionConfig()
        self._first_ts: float | None = None
        self._last_ts: float | None = None
        self._ears: list[tuple[float, float]] = []  # (left, right) over the baseline period
        self._poses: list[tuple[float, float]] = []  # (yaw, pitch) over the baseline period
        # The pose of "looking ahead": fixed by the config, else learnt (None until enough frames are seen).
        fixed = self.cfg.yaw_center is not None and self.cfg.pitch_center is not None
        self.ahead: tuple[float, float] | None = (self.cfg.yaw_center, self.cfg.pitch_center) if fixed else None
        self.baseline = (OPEN_EAR, OPEN_EAR)
        self._closure = SustainedCondition("long_closure")  # the eyes closed (blinks end it early)
        self._yawn = SustainedCondition("yawn")
        self._off_road = SustainedCondition("off_road")
        self._perclos: deque[tuple[float, float, bool]] = deque()  # (ts, seconds it counts for, >= 80 % closed)
        self._history: deque[tuple[float, str]] = deque()  # (ts, event type) over the longest window
        self._now: dict = {}

    def _learn_baseline(self, s: FaceSignals, ts: float) -> None:
        if ts - self._first_ts <= self.cfg.baseline_s:
            self._ears.append((s.ear_left, s.ear_right))
            if len(self._ears) >= self.cfg.baseline_min_samples:
                p = np.percentile(np.asarray(self._ears), self.cfg.baseline_percentile, axis=0)
                floor = self.cfg.closed_ear + 0.05  # a face first seen with closed eyes keeps a usable span
                self.baseline = (max(float(p[0]), floor), max(float(p[1]), floor))

    def _learn_ahead(self, s: FaceSignals, ts: float) -> None:
        cfg = self.cfg
        if ts - self._first_ts > cfg.baseline_s or not (np.isfinite(s.yaw) and np.isfinite(s.pitch)):
            return
        if self.ahead is not None and self.looking(s) is False:
            return  # a glance away while the pose is learnt does not move "ahead" towards it
        self._poses.append((s.yaw, s.pitch))
        if len(self._poses) >= cfg.baseline_min_samples:
            yaw, pitch = np.median(np.asarray(self._poses), axis=0)
            self.ahead = (cfg.yaw_center if cfg.yaw_center is not None else float(yaw),
                          cfg.pitch_center if cfg.pitch_center is not None else float(pitch))

    def looking(self, signals: FaceSignals) -> bool | None:
        """The head inside the cone around the ahead pose; None while that pose is still being learnt."""
        if self.ahead is None:
            return None
        cfg = self.cfg
        return not off_road(signals.yaw, signals.pitch, cfg.yaw_limit, cfg.pitch_limit, *self.ahead)

    def update(self, signals: FaceSignals, ts: float) -> list[dict]:
        """Add one frame's ``signals`` (``measure(...)``) at time ``ts`` seconds; returns the new events."""
        cfg, events = self.cfg, []
        if self._first_ts is None:
            self._first_ts = ts
        dt = 0.0 if self._last_ts is None else min(max(ts - self._last_ts, 0.0), cfg.max_gap_s)
        self._last_ts = ts
        self._learn_baseline(signals, ts)
        if self.cfg.yaw_center is None or self.cfg.pitch_center is None:
            self._learn_ahead(signals, ts)
        left = eye_openness(signals.ear_left, self.baseline[0], cfg.closed_ear)
        right = eye_openness(signals.ear_right, self.baseline[1], cfg.closed_ear)
        openness = (left + right) / 2.0

        # Blinks and long closures, with hysteresis so that a noisy half-open eye is not many blinks (a closure
        # begins below closed_below, ends at closed_below + hysteresis); none begins before the face's baseline
        # exists (narrow eyes would read closed against the population's). One that ends early is a blink.
        held = self._closure.held(ts)
        if self._closure.since is None:
            closed = len(self._ears) >= cfg.baseline_min_samples and openness < cfg.closed_below
        else:
            closed = openness < cfg.closed_below + cfg.hysteresis
            if not closed and held < cfg.long_closure_s:
                events.append({"type": "blink", "start": self._closure.since, "duration": round(held, 3)})
        events += self._closure.update(closed, ts, cfg.long_closure_s)
        closed_s = self._closure.held(ts)

        # PERCLOS P80, time-weighted: each frame counts for the time since the previous one.
        self._perclos.append((ts, dt, openness <= cfg.perclos_closed_below))
        while self._perclos and self._perclos[0][0] <= ts - cfg.perclos_window_s:
            self._perclos.popleft()
        total = sum(d for _, d, _ in self._perclos)
        perclos = sum(d for _, d, c in self._perclos if c) / total if total > 0 else 0.0

        mar = signals.mar
        events += self._yawn.update(mar >= cfg.yawn_mar, ts, cfg.yawn_min_s)
        self._looking = self.looking(signals)
        events += self._off_road.update(self._looking is False, ts, cfg.distracted_s)
        off_road_s = self._off_road.held(ts)

        self._history.extend((ts, e["type"]) for e in events)
        keep = max(cfg.perclos_window_s, cfg.yawning_window_s, 60.0)
        while self._history and self._history[0][0] <= ts - keep:
            self._history.popleft()
        minute = min(60.0, max(ts - self._first_ts, 1e-9))
        blinks = sum(1 for t, k in self._history if k == "blink" and t > ts - 60.0)
        long_closures = sum(1 for t, k in self._history if k == "long_closure" and t > ts - 60.0)
        yawns = sum(1 for t, k in self._history if k == "yawn" and t > ts - cfg.yawning_window_s)
        self._now = {
            "ts": ts,
            "eye_openness": [round(left, 3), round(right, 3)],
            "eyes_closed": self._closure.since is not None,
            "closed_s": round(closed_s, 3),
            "mouth_open": round(mouth_opening(mar), 3),
            "yaw": round(signals.yaw, 1), "pitch": round(signals.pitch, 1), "roll": round(signals.roll, 1),
            "perclos": round(perclos, 4),
            # Over the last minute, or over the time seen so far when the face is newer than that.
            "blinks_per_min": round(blinks * 60.0 / minute, 1),
            "long_closures_per_min": long_closures,
            "yawns": yawns,
            "off_road_s": round(off_road_s, 3),
            "baseline_ear": [round(self.baseline[0], 3), round(self.baseline[1], 3)],
            "looking": self._looking,
            "ahead": None if self.ahead is None else [round(self.ahead[0], 1), round(self.ahead[1], 1)],
            # PERCLOS counts once a whole window is seen: one blink in a face's first second is not drowsiness.
            "drowsy": (perclos >= cfg.drowsy_perclos and ts - self._first_ts >= cfg.perclos_window_s)
            or long_closures >= cfg.drowsy_long_closures,
            "distracted": off_road_s >= cfg.distracted_s,
            "yawning": yawns >= cfg.yawning_count,
        }
        return events

    def snapshot(self) -> dict:
        """The current values (after the last ``update``): eye_openness [left, right] 0..1, eyes_closed,
        closed_s, mouth_open 0..1, yaw/pitch/roll (degrees), perclos (0..1, last perclos_window_s),
        blinks_per_min, long_closures_per_min, yawns (in yawning_window_s), off_road_s, baseline_ear
        [left, right], and the flags drowsy (PERCLOS only once a whole window is seen), distracted, yawning. Empty before the first update."""
        return dict(self._now)
