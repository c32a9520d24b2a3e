"""The device's own attention alerts: ``drowsy``, ``distracted``, ``yawning``, raised while any followed face's
``AttentionState`` flag is up and cleared when none is (or the face is gone). Raised on the device because only
it sees every frame (a blink lasts 0.1-0.4 s); the dashboard shows them. Thresholds: ``AttentionConfig``."""

from __future__ import annotations

from dataclasses import dataclass

ALERT_KINDS = ("drowsy", "distracted", "yawning")

# Why each alert fires, for the ``detail`` line (the thresholds come from the config, docs/attention.md cites them).
DETAILS = {
    "drowsy": "PERCLOS {perclos:.0%} over the last minute, {long_closures_per_min} eye closure(s) >= 1 s in it",
    "distracted": "eyes off the road for {off_road_s:.1f} s (yaw {yaw}, pitch {pitch})",
    "yawning": "{yawns} yawns in the last 5 minutes",
}


@dataclass
class AlertChange:
    """An alert that was raised or cleared in this frame."""

    kind: str
    state: str  # "raised" | "cleared"
    since: float  # raised: when the condition began (the frame's ts); cleared: when it was raised
    face_id: int
    detail: str


class DeviceAlerts:
    """Raise/clear bookkeeping of the three attention alerts over all followed faces.

    absent_s: a face that was followed and then is not read for this long also counts as ``distracted`` (a driver
    who looks over the shoulder turns further than a face detector or the landmark model can follow: no pose is
    not "looking at the road"); None: only the head pose counts."""

    def __init__(self, absent_s: float | None = None) -> None:
        self.absent_s = absent_s
        self.active: dict[str, tuple[float, int]] = {}  # kind -> (raised at, face_id)
        self._last_read: tuple[float, int] | None = None  # (ts, face_id) of the last frame with a face read

    def update(self, snapshots: dict[int, dict], ts: float, read: bool = True) -> list[AlertChange]:
        """``snapshots``: face_id -> its current snapshot, for the faces followed now; ``read``: a face's
        landmarks were read in this frame. Returns what changed."""
        changes = []
        if read and snapshots:
            self._last_read = (ts, next(iter(snapshots)))
        for kind in ALERT_KINDS:
            up = [(fid, s) for fid, s in snapshots.items() if s.get(kind)]
            if kind == "distracted" and not up and self.absent_s is not None and self._last_read is not None \
                    and ts - self._last_read[0] >= self.absent_s:
                gone = ts - self._last_read[0]
                up = [(self._last_read[1], {"detail": f"no face read for {gone:.1f} s (turned away or out of view)"})]
            if up and kind not in self.active:
                fid, snap = up[0]
                self.active[kind] = (ts, fid)
                changes.append(AlertChange(kind, "raised", ts, fid, snap.get("detail") or _detail(kind, snap)))
            elif not up and kind in self.active:
                since, fid = self.active.pop(kind)
                why = "back to normal" if read and snapshots else "face no longer followed"
                changes.append(AlertChange(kind, "cleared", since, fid, why))
        return changes


def _detail(kind: str, snap: dict) -> str:
    try:
        return DETAILS[kind].format(**snap)
    except (KeyError, ValueError, TypeError):
        return kind
