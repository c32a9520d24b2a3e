"""``fer-edge monitor``: subscribe to ``<prefix>/+/#`` and show a live per-device view in the terminal."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from edge import broker_errors
from edge.errors import FerEdgeError
from edge.payloads import decode, parse_topic, subscription
from edge.publish import MqttConfig, make_client


@dataclass
class DeviceView:
    """What the monitor knows about one device, from its four topics."""

    status: str = "?"
    faces: dict[int, dict] = field(default_factory=dict)  # face_id -> latest expression payload
    summary: dict | None = None
    stats: dict | None = None
    events: int = 0
    last_seen: float = 0.0


class MonitorState:
    """Devices by id, updated from MQTT messages (thread safe)."""

    def __init__(self, face_ttl_s: float = 30.0):
        self.devices: dict[str, DeviceView] = {}
        self.face_ttl_s = face_ttl_s
        self.lock = threading.Lock()
        self.messages = 0

    def handle(self, topic: str, payload: bytes) -> None:
        """Apply one message on ``<prefix>/<device>/<kind>``; unknown or malformed ones are ignored."""
        parsed = parse_topic(topic)
        if parsed is None:
            return
        _, device, kind = parsed
        with self.lock:
            self.messages += 1
            view = self.devices.setdefault(device, DeviceView())
            view.last_seen = time.time()
            data = decode(kind, payload)
            if isinstance(data, str):
                view.status = data
                return
            if data is None:
                return
            if kind == "expression" and "face_id" in data:
                view.faces[int(data["face_id"])] = data
                view.events += 1
            elif kind == "summary":
                view.summary = data
            elif kind == "stats":
                view.stats = data

    def render(self, now: float | None = None) -> str:
        """The per-device table as text."""
        now = now or time.time()
        lines = []
        with self.lock:
            if not self.devices:
                return "no devices yet (waiting for messages)\n"
            for name in sorted(self.devices):
                v = self.devices[name]
                st = v.stats or {}
                lat = st.get("latency_ms", {})
                temp = st.get("cpu_temp_c")
                lines.append(
                    f"{name:<20} {v.status:<8} fps {st.get('fps', '-'):>5}  backend {st.get('backend', '-'):<7}"
                    f" latency {lat.get('total', '-') if lat else '-'} ms  outbox {st.get('outbox', {}).get('depth', '-')}"
                    f"  temp {'-' if temp is None else f'{temp:.0f}C'}  events {v.events}"
                )
                cam = st.get("camera")
                if isinstance(cam, dict) and not cam.get("connected", True):
                    lines.append(f"    camera DOWN: {cam.get('error')} (last frame {cam.get('last_frame_age_s')} s ago,"
                                 f" {cam.get('reconnects', 0)} reconnect(s))")
                if v.summary:
                    s = v.summary
                    counts = ", ".join(f"{k} {n}" for k, n in s.get("counts", {}).items() if n)
                    lines.append(f"    summary: {s.get('faces', 0)} face(s), dominant {s.get('dominant')}"
                                 + (f" ({counts})" if counts else ""))
                for fid, e in sorted(v.faces.items()):
                    age = now - float(e.get("ts", now))
                    if age > self.face_ttl_s:
                        continue
                    lines.append(f"    face {fid:>4}: {e.get('expression', '?'):<9} {float(e.get('confidence', 0)):.2f}"
                                 f"  box {e.get('box')}  {age:4.0f}s ago")
        return "\n".join(lines) + "\n"


def run_monitor(cfg: MqttConfig, once: bool = False, duration: float | None = None, refresh_s: float = 1.0,
                out: TextIO | None = None, answer_timeout_s: float = 10.0) -> int:
    """Subscribe and print the view every ``refresh_s`` (clearing the screen on a terminal).

    ``once``: print a single view after the retained messages arrived. ``duration``: stop after so many seconds.
    ``answer_timeout_s``: how long the broker has to answer the MQTT connect.
    """
    out = out or sys.stdout
    if not cfg.host:
        raise FerEdgeError("no broker to monitor: set mqtt.host in the config or pass --host")
    state = MonitorState()
    connected = threading.Event()
    failure: list[str] = []
    client = make_client(cfg, f"fer-edge-monitor-{int(time.time() * 1000) % 10**9}")

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            failure.append(broker_errors.from_connack(cfg, reason_code).message)
        else:
            c.subscribe(subscription(cfg.prefix), qos=1)
        connected.set()

    client.on_connect = on_connect
    client.on_message = lambda c, u, msg: state.handle(msg.topic, msg.payload)
    try:
        client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive)
    except OSError as exc:
        raise FerEdgeError(broker_errors.from_exception(cfg, exc).message, exit_code=8) from None
    client.loop_start()
    try:
        if not connected.wait(answer_timeout_s):
            # Closed or silent without a CONNACK: look at what the port answers to name the cause.
            failure.append((broker_errors.probe(cfg, min(answer_timeout_s, 5.0)) or broker_errors.Cause(
                "no_answer", f"broker {cfg.host}:{cfg.port} did not answer within {answer_timeout_s:g} s (timed out); "
                "check mqtt.host/port, the network and that the broker runs")).message)
        if failure:
            raise FerEdgeError(failure[0], exit_code=8)
        tty = out.isatty()
        start = time.monotonic()
        if once:
            time.sleep(min(duration or 2.0, 10.0))  # retained messages arrive right after subscribing
            out.write(state.render())
            return 0
        while duration is None or time.monotonic() - start < duration:
            time.sleep(refresh_s)
            text = state.render()
            header = f"fer-edge monitor  {cfg.host}:{cfg.port}  {subscription(cfg.prefix)}  {time.strftime('%H:%M:%S')}\n"
            out.write(("\x1b[H\x1b[2J" if tty else "") + header + text + ("" if tty else "\n"))
            out.flush()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        client.disconnect()
        client.loop_stop()
