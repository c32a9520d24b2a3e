"""Driver alerts from the event stream: a negative expression that persists, or no face for too long.

Pure logic (no I/O): feed it messages with ``on_message`` and the passing of time with ``tick``; both
return the alert transitions (raised / cleared) to store and publish. Times are the device's clock (the
payloads' ``ts``); ``tick`` takes wall-clock time and converts it with the device's last observed skew
(received - ts), so a device whose clock is off still gets timely alerts.

* ``negative_expression``: one face's smoothed expression stays in ``negative`` (angry, fear, sad) for at
  least ``negative_s`` (from its first negative event, as long as the face stays in view: an event at least
  every ``face_timeout_s``). Cleared when no face has such a run any more.
* ``no_face``: no face seen for ``no_face_s`` while the device is online. A face is seen by an expression
  event, an attention message, a summary with ``faces > 0`` (until its window end) or stats with
  ``faces > 0``. Cleared by the next face. An ``offline`` status clears the device's alerts and pauses its
  checks.

The device's own alerts (drowsy, distracted, yawning: ``alert`` messages with ``"source": "device"``) are
not this engine's: the store keeps them and the driver view shows them beside these.

Which devices: each states its ``role`` in its ``stats`` (``queries.role_of``: none is ``general``).
``driver`` cameras are always watched; ``classroom`` cameras never (a room without faces at break time is
no alarm; a role that turns classroom clears the device's alerts); ``general`` ones as before roles
existed: all of them, or only those in ``alerts.devices`` when that list is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dashboard.config import AlertConfig
from dashboard.queries import role_of

NEGATIVE_EXPRESSION = "negative_expression"
NO_FACE = "no_face"


@dataclass
class Alert:
    """One transition of an alert."""

    device: str
    kind: str
    state: str  # raised | cleared
    since: float  # raised: when the condition began; cleared: when it was raised (device clock)
    ts: float  # when it was raised or cleared (device clock)
    detail: dict = field(default_factory=dict)
    id: int | None = None  # set by the store when raised


@dataclass
class _Face:
    last_ts: float
    expression: str
    neg_since: float | None = None


@dataclass
class _Device:
    watch_start: float
    online: bool = True
    skew: float = 0.0  # received (wall) - ts (device)
    last_face_ts: float | None = None
    faces: dict[int, _Face] = field(default_factory=dict)
    active: dict[str, Alert] = field(default_factory=dict)


class AlertEngine:
    """Per-device alert state machines."""

    def __init__(self, cfg: AlertConfig | None = None):
        self.cfg = cfg or AlertConfig()
        self.devices: dict[str, _Device] = {}  # the watched ones
        self.roles: dict[str, str] = {}  # device -> role from its latest stats

    def watches(self, device: str) -> bool:
        """Whether ``device`` gets driver alerts (by its role, then ``alerts.devices``)."""
        role = self.roles.get(device, "general")
        if role != "general":
            return role == "driver"
        return not self.cfg.devices or device in self.cfg.devices

    def _dev(self, device: str, ts: float) -> _Device:
        d = self.devices.get(device)
        if d is None:
            d = self.devices[device] = _Device(watch_start=ts)
        return d

    def active(self, device: str) -> list[Alert]:
        d = self.devices.get(device)
        return list(d.active.values()) if d else []

    def on_role(self, device: str, stats: dict) -> list[Alert]:
        """Note the role a ``stats`` payload states (also an old, retained one: the role is still the device's),
        without taking the payload as a sign of life; clears the device's alerts when it is no longer watched."""
        self.roles[device] = role_of(stats)
        return [] if self.watches(device) else self._unwatch(device, stats.get("ts"), None)

    def on_message(self, device: str, kind: str, payload, received: float | None = None) -> list[Alert]:
        """Feed one message (``payload``: the parsed JSON dict, or the status string)."""
        if kind == "stats" and isinstance(payload, dict):
            self.roles[device] = role_of(payload)
        if not self.watches(device):
            return self._unwatch(device, payload.get("ts") if isinstance(payload, dict) else None, received)
        if kind == "status":
            return self._status(device, str(payload), received)
        if kind == "alert":  # the device's own alert: stored and shown as it is, not a rule's input
            return []
        if not isinstance(payload, dict) or not isinstance(payload.get("ts"), (int, float)):
            return []
        ts = float(payload["ts"])
        d = self._dev(device, ts)
        if received is not None:
            d.skew = received - ts
        if not d.online:  # messages flow again: the device is back even before its status says so
            d.online, d.watch_start = True, ts
        if kind == "expression" and isinstance(payload.get("face_id"), int):
            expr = str(payload.get("expression", ""))
            face = d.faces.get(payload["face_id"])
            if face is None or ts - face.last_ts > self.cfg.face_timeout_s:
                face = d.faces[payload["face_id"]] = _Face(last_ts=ts, expression=expr)
            face.last_ts, face.expression = max(face.last_ts, ts), expr
            if expr in self.cfg.negative:
                if face.neg_since is None:
                    face.neg_since = ts
            else:
                face.neg_since = None
            self._saw_face(d, ts)
        elif kind == "attention":  # a face whose landmarks were read
            self._saw_face(d, ts)
        elif kind == "summary" and (payload.get("faces") or 0) > 0:
            window = payload.get("window") or {}
            self._saw_face(d, float(window.get("end", ts)))
        elif kind == "stats" and (payload.get("faces") or 0) > 0:
            self._saw_face(d, ts)
        return self._evaluate(device, d, ts)

    def tick(self, now: float) -> list[Alert]:
        """Let wall-clock time ``now`` pass for every device; returns the transitions."""
        out: list[Alert] = []
        for device, d in self.devices.items():
            if d.online:
                out += self._evaluate(device, d, now - d.skew)
        return out

    # -- internals ---------------------------------------------------------------------------
    @staticmethod
    def _saw_face(d: _Device, ts: float) -> None:
        d.last_face_ts = ts if d.last_face_ts is None else max(d.last_face_ts, ts)

    def _unwatch(self, device: str, ts, received: float | None) -> list[Alert]:
        """A device that is no longer watched (its role changed): clear its alerts, forget its state."""
        d = self.devices.pop(device, None)
        if d is None:
            return []
        now = float(ts) if isinstance(ts, (int, float)) else (received or d.watch_start) - d.skew
        why = f"role {self.roles.get(device, 'general')}: no driver alerts"
        return [self._clear(device, d, kind, now, why) for kind in list(d.active)]

    def _status(self, device: str, status: str, received: float | None) -> list[Alert]:
        d = self.devices.get(device)
        now = received if received is not None else (d.watch_start if d else 0.0)
        if d is None:
            d = self._dev(device, now - 0.0)
        if status == "online":
            if not d.online:
                d.online, d.watch_start, d.faces, d.last_face_ts = True, now - d.skew, {}, None
            return []
        if status != "offline":
            return []
        d.online = False
        out = [self._clear(device, d, kind, now - d.skew, "device offline") for kind in list(d.active)]
        d.faces.clear()
        return out

    def _evaluate(self, device: str, d: _Device, now: float) -> list[Alert]:
        cfg = self.cfg
        out: list[Alert] = []
        for fid in [f for f, face in d.faces.items() if now - face.last_ts > cfg.face_timeout_s]:
            del d.faces[fid]  # left the view
        runs = [(fid, f) for fid, f in d.faces.items() if f.neg_since is not None and now - f.neg_since >= cfg.negative_s]
        if runs and NEGATIVE_EXPRESSION not in d.active:
            fid, face = min(runs, key=lambda r: r[1].neg_since)
            a = Alert(device, NEGATIVE_EXPRESSION, "raised", face.neg_since, now,
                      {"face_id": fid, "expression": face.expression, "seconds": round(now - face.neg_since, 1),
                       "threshold_s": cfg.negative_s})
            d.active[NEGATIVE_EXPRESSION] = a
            out.append(a)
        elif not runs and NEGATIVE_EXPRESSION in d.active:
            out.append(self._clear(device, d, NEGATIVE_EXPRESSION, now, "no persisting negative expression"))
        ref = d.last_face_ts if d.last_face_ts is not None else d.watch_start
        if now - ref >= cfg.no_face_s and NO_FACE not in d.active:
            a = Alert(device, NO_FACE, "raised", ref, now, {"seconds": round(now - ref, 1), "threshold_s": cfg.no_face_s,
                                                             "face_seen": d.last_face_ts is not None})
            d.active[NO_FACE] = a
            out.append(a)
        elif now - ref < cfg.no_face_s and NO_FACE in d.active:
            out.append(self._clear(device, d, NO_FACE, now, "face back in view"))
        return out

    @staticmethod
    def _clear(device: str, d: _Device, kind: str, now: float, why: str) -> Alert:
        raised = d.active.pop(kind)  # cleared: ``since`` is when the alert was raised (the MQTT contract)
        return Alert(device, kind, "cleared", raised.ts, now, {**raised.detail, "reason": why}, id=raised.id)
