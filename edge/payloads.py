"""The MQTT contract in one module: topics, QoS/retain per kind, and the payload builders.

Topics are ``<prefix>/<device_id>/<kind>`` (``prefix`` may itself contain ``/``):

======================  ========  ===  ====================================================
kind                    retained  QoS  payload
======================  ========  ===  ====================================================
``status``              yes       1    the plain string ``online`` / ``offline`` (not JSON)
``expression``          no        1    ``expression_event``: one tracked face; carries ``seq``
``summary``             yes       1    ``summary_event``: one window of all faces; carries ``seq``
``stats``               yes       0    ``stats_event``: throughput, latency, health, camera
``alert``               no        1    ``alert_event``: a driver alert raised or cleared
======================  ========  ===  ====================================================

Every JSON payload carries ``"v": 1``. ``seq`` counts the messages of one topic of one device
(1, 2, 3...), kept across restarts in the device's outbox database, so a subscriber can see gaps
and drop the duplicates of at-least-once delivery (key: ``device``, kind, ``seq``). JSON Schemas
for every kind are in ``edge/schemas/`` (``schema_path``, ``load_schema``).

Plain functions only, no MQTT client here: the daemon, Home Assistant discovery, ``monitor`` and
the dashboard all build and parse topics with these.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

PAYLOAD_VERSION = 1
KINDS = ("status", "expression", "summary", "stats", "alert", "attention")
# (qos, retain) per kind: the contract.
QOS_RETAIN = {"status": (1, True), "expression": (1, False), "summary": (1, True), "stats": (0, True),
              "alert": (1, False), "attention": (1, False)}
# Kinds that must survive an outage: written to the outbox first, deleted on PUBACK, numbered by ``seq``.
# (alert: the device's own attention alerts; the dashboard publishes its alerts itself, without seq.)
DURABLE_KINDS = ("expression", "summary", "attention", "alert")
STATUS_ONLINE, STATUS_OFFLINE = "online", "offline"
ALERT_STATES = ("raised", "cleared")
# What a device watches (``device.role``), stated in its stats: the dashboard picks its alert rules by it
# (driver alerts only for "driver"). A payload without ``role`` (older devices) reads as "general".
DEVICE_ROLES = ("general", "driver", "classroom")
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


# --- topics ---------------------------------------------------------------------------------


def topic(prefix: str, device_id: str, kind: str) -> str:
    """The topic of ``kind`` for one device: ``<prefix>/<device_id>/<kind>``."""
    return f"{prefix}/{device_id}/{kind}"


def device_base(prefix: str, device_id: str) -> str:
    """``<prefix>/<device_id>``: the common part of one device's topics."""
    return f"{prefix}/{device_id}"


def subscription(prefix: str, device_id: str = "+", kind: str = "#") -> str:
    """A subscription filter: every kind of every device by default (``<prefix>/+/#``).

    ``subscription("fer", kind="expression")`` is ``fer/+/expression``; ``subscription("fer", "room-3")``
    is ``fer/room-3/#``. For an MQTT 5 shared subscription prepend ``$share/<group>/`` yourself.
    """
    return f"{prefix}/{device_id}/{kind}"


def parse_topic(name: str, prefix: str | None = None) -> tuple[str, str, str] | None:
    """``(prefix, device_id, kind)`` of a contract topic, or None when ``name`` is not one.

    The last two levels are the device and the kind; everything before them is the prefix (which
    may contain ``/``). With ``prefix`` given, topics under another prefix give None. ``kind`` is
    returned as found: callers ignore kinds they do not know (``kind in KINDS``).
    """
    parts = name.rsplit("/", 2)
    if len(parts) != 3 or not all(parts):
        return None
    if prefix is not None and parts[0] != prefix:
        return None
    return parts[0], parts[1], parts[2]


def qos_retain(kind: str) -> tuple[int, bool]:
    """``(qos, retain)`` of ``kind``; KeyError for a kind outside the contract."""
    return QOS_RETAIN[kind]


def is_durable(kind: str) -> bool:
    """True for the kinds that go through the outbox and carry ``seq`` (expression, summary, attention, and the
    device's alerts)."""
    return kind in DURABLE_KINDS


# --- payloads -------------------------------------------------------------------------------


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def status_payload(online: bool) -> str:
    """The ``status`` payload: ``online`` or ``offline`` (a plain string, not JSON)."""
    return STATUS_ONLINE if online else STATUS_OFFLINE


def expression_event(
    device_id: str, track: Any, frame_index: int, ts: float, frame_size: tuple[int, int],
    labels: list[str], backend: str, crop: Any = None, seq: int | None = None,
) -> dict:
    """The ``expression`` payload for one tracked face.

    Args:
        track: an ``edge.track.Track`` (face_id, box in pixels, smoothed scores, expression, confidence).
        frame_size: (width, height) of the frame, to normalise the box to 0..1.
        crop: the 48x48 grayscale face crop, included (base64 PNG) only when privacy.publish_crops is on.
        seq: the message number; normally left None and set by the publisher when it stores the message.
    """
    w_img, h_img = frame_size
    x, y, w, h = (float(v) for v in track.box)
    x0, y0 = min(max(x / w_img, 0.0), 1.0), min(max(y / h_img, 0.0), 1.0)
    box = [x0, y0, min(w / w_img, 1.0 - x0), min(h / h_img, 1.0 - y0)]
    payload = {
        "v": PAYLOAD_VERSION,
        "ts": round(float(ts), 3),
        "device": device_id,
        "face_id": int(track.face_id),
        "expression": str(track.expression),
        "confidence": _r(track.confidence),
        "scores": {label: _r(p) for label, p in zip(labels, track.scores)},
        "box": [_r(v) for v in box],
        "frame": int(frame_index),
        "backend": backend,
    }
    if seq is not None:
        payload["seq"] = int(seq)
    if crop is not None:
        import cv2  # only when crops are published at all

        ok, png = cv2.imencode(".png", crop)
        if ok:
            payload["crop"] = base64.b64encode(png.tobytes()).decode()
    return payload


def summary_event(
    device_id: str, ts: float, faces: int, counts: dict[str, int] | None, mean_scores: dict[str, float] | None,
    window_start: float, window_end: float, observations: int, seq: int | None = None,
    attention: dict | None = None,
) -> dict:
    """The ``summary`` payload: what the faces in one window showed.

    Args:
        faces: distinct face ids seen in the window.
        counts: per label, face observations (one face in one frame) whose smoothed expression was that label.
        mean_scores: per label, the mean smoothed probability over those observations.
            ``counts`` None ([model] emotions = false): no expression field at all (counts, mean_scores, dominant).
        attention: the window's attention figures (``edge.events.AttentionWindow.summary()``), when landmarks run.
        observations: total face observations in the window.
        seq: the message number; normally set by the publisher.
    """
    dominant = max(counts, key=lambda k: counts[k]) if counts and observations and any(counts.values()) else None
    payload = {
        "v": PAYLOAD_VERSION,
        "ts": round(float(ts), 3),
        "device": device_id,
        "faces": int(faces),
        "counts": {k: int(n) for k, n in (counts or {}).items()},
        "mean_scores": {k: _r(p) for k, p in (mean_scores or {}).items()},
        "dominant": dominant,
        "window": {
            "start": round(float(window_start), 3),
            "end": round(float(window_end), 3),
            "seconds": round(float(window_end - window_start), 3),
            "observations": int(observations),
        },
    }
    if counts is None:
        for key in ("counts", "mean_scores", "dominant"):
            del payload[key]
    if attention is not None:
        payload["attention"] = attention
    if seq is not None:
        payload["seq"] = int(seq)
    return payload


def camera_state(connected: bool, reconnects: int = 0, last_frame_age_s: float | None = None,
                 error: str | None = None) -> dict:
    """The ``camera`` object of ``stats``: is a frame source delivering, how often it reconnected,
    seconds since its last frame (None before the first), and its last error (None while fine)."""
    return {
        "connected": bool(connected),
        "reconnects": int(reconnects),
        "last_frame_age_s": None if last_frame_age_s is None else round(float(last_frame_age_s), 1),
        "error": error or None,
    }


def outbox_state(depth: int, dropped: int, drops: dict[str, int] | None = None, memory: int = 0,
                 write_errors: int = 0) -> dict:
    """The ``outbox`` object of ``stats``.

    Args:
        depth: messages waiting for the broker's PUBACK (on disk and in memory).
        dropped: messages dropped since the outbox file was created (persisted across restarts).
        drops: ``dropped`` per reason: ``max_events``, ``max_age_s``, ``memory_full``.
        memory: messages held in the in-memory fallback queue because the database could not be written.
        write_errors: failed database writes since start (disk full, I/O errors).
    """
    return {
        "depth": int(depth),
        "dropped": int(dropped),
        "drops": {k: int(n) for k, n in (drops or {}).items()},
        "memory": int(memory),
        "write_errors": int(write_errors),
    }


def stats_event(
    device_id: str, ts: float, fps: float, latency_ms: dict[str, float], backend: str, frames: int,
    dropped_frames: int, outbox_depth: int, outbox_dropped: int, uptime_s: float,
    cpu_temp_c: float | None, events: dict[str, int], faces: int, broker_connected: bool,
    camera: dict | None = None, outbox: dict | None = None, detector: dict | None = None,
    role: str = "general",
) -> dict:
    """The ``stats`` payload: throughput, per-stage latency (mean ms over the interval), health.

    ``camera``: a ``camera_state()`` (default: connected). ``outbox``: an ``outbox_state()``
    (default: built from ``outbox_depth`` and ``outbox_dropped``). ``detector``: the detector in use,
    {"type", "passes", "latency_ms" per detector pass} (left out when None). ``role``: ``device.role``,
    one of ``DEVICE_ROLES``.
    """
    if role not in DEVICE_ROLES:
        raise ValueError(f"device role {role!r}: expected one of {DEVICE_ROLES}")
    payload = {
        "v": PAYLOAD_VERSION,
        "ts": round(float(ts), 3),
        "device": device_id,
        "role": role,
        "fps": round(float(fps), 2),
        "latency_ms": {k: round(float(v), 2) for k, v in latency_ms.items()},
        "backend": backend,
        "frames": int(frames),
        "dropped_frames": int(dropped_frames),
        "faces": int(faces),
        "outbox": outbox or outbox_state(outbox_depth, outbox_dropped),
        "events": {k: int(n) for k, n in events.items()},
        "broker_connected": bool(broker_connected),
        "uptime_s": round(float(uptime_s), 1),
        "cpu_temp_c": None if cpu_temp_c is None else round(float(cpu_temp_c), 1),
        "camera": camera or camera_state(True),
    }
    if detector is not None:
        payload["detector"] = detector
    return payload


def alert_event(device_id: str, kind: str, state: str, since: float, detail: str = "",
                ts: float | None = None, source: str | None = None, face_id: int | None = None) -> dict:
    """The ``alert`` payload: a driver alert (``kind``, e.g. "drowsy") ``raised`` or ``cleared``.

    Args:
        since: unix seconds when the condition began (raised) or when the alert was raised (cleared).
        detail: a short human-readable explanation.
        ts: unix seconds of this message (default: now).
        source: "device" for the attention alerts the device raises itself (drowsy, distracted, yawning),
            "dashboard" for the dashboard's rules; None leaves it out (older senders).
        face_id: the tracked face the device's alert is about.
    """
    if state not in ALERT_STATES:
        raise ValueError(f"alert state {state!r}: expected one of {ALERT_STATES}")
    import time

    payload = {
        "v": PAYLOAD_VERSION,
        "ts": round(float(time.time() if ts is None else ts), 3),
        "device": device_id,
        "kind": str(kind),
        "state": state,
        "since": round(float(since), 3),
        "detail": str(detail),
    }
    if source is not None:
        payload["source"] = source
    if face_id is not None:
        payload["face_id"] = int(face_id)
    return payload


# What an attention message carries from AttentionState.snapshot() (the rest of the snapshot stays on the device).
ATTENTION_FIELDS = ("eye_openness", "eyes_closed", "closed_s", "mouth_open", "yaw", "pitch", "roll", "perclos",
                    "blinks_per_min", "long_closures_per_min", "yawns", "off_road_s", "drowsy", "distracted",
                    "yawning")


def attention_event(device_id: str, face_id: int, box: tuple, frame_index: int, ts: float,
                    frame_size: tuple[int, int], snapshot: dict, events: list[dict], looking: bool,
                    seq: int | None = None) -> dict:
    """The ``attention`` payload for one tracked face: its eye, mouth and head-pose signals now, and the events
    (blink, long_closure, yawn, off_road) that ended or crossed a threshold since its previous message.

    Args:
        box: the face's box (x, y, w, h) in pixels; normalised to 0..1 of ``frame_size`` (width, height).
        snapshot: ``edge.attention.AttentionState.snapshot()``.
        events: the state's events since the last message (``start`` in unix seconds, ``duration`` in s).
        looking: the head points inside the cone around the face's ahead pose (toward the road, or the front of the
            room); None while that pose is still being learnt.
    """
    w_img, h_img = frame_size
    x, y, w, h = (float(v) for v in box)
    x0, y0 = min(max(x / w_img, 0.0), 1.0), min(max(y / h_img, 0.0), 1.0)
    payload = {"v": PAYLOAD_VERSION, "ts": round(float(ts), 3), "device": device_id, "face_id": int(face_id),
               "box": [_r(v) for v in (x0, y0, min(w / w_img, 1.0 - x0), min(h / h_img, 1.0 - y0))],
               "frame": int(frame_index), "looking": None if looking is None else bool(looking)}
    for key in ATTENTION_FIELDS:
        value = snapshot.get(key)
        if isinstance(value, float) and value != value:  # NaN (no head pose): null on the wire
            value = None
        payload[key] = value
    payload["events"] = [{"type": e["type"], "start": round(float(e["start"]), 3),
                          "duration": round(float(e["duration"]), 3)} for e in events]
    if seq is not None:
        payload["seq"] = int(seq)
    return payload


def encode(payload: dict | str) -> bytes:
    """The wire form: a status string as UTF-8, a dict as compact JSON."""
    return payload.encode() if isinstance(payload, str) else json.dumps(payload, separators=(",", ":")).encode()


def decode(kind: str, raw: bytes) -> dict | str | None:
    """The payload of a received message: the string for ``status``, a dict for the JSON kinds,
    None when it is not valid JSON or not an object."""
    if kind == "status":
        return raw.decode(errors="replace")
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# --- schemas --------------------------------------------------------------------------------


def schema_path(kind: str) -> Path:
    """``edge/schemas/<kind>.schema.json`` (JSON Schema draft 2020-12)."""
    return SCHEMAS_DIR / f"{kind}.schema.json"


def load_schema(kind: str) -> dict:
    """The JSON Schema of ``kind`` as a dict."""
    return json.loads(schema_path(kind).read_text())


def validate(kind: str, payload: dict | str) -> None:
    """Raise ``jsonschema.ValidationError`` when ``payload`` breaks the schema of ``kind`` (needs jsonschema)."""
    import jsonschema

    jsonschema.Draft202012Validator(load_schema(kind)).validate(payload)
