"""Live side of the dashboard: the alert engine fed by the message stream, and the event ring the
server-sent-events endpoint reads from.

Fed from the ingest writer thread (``on_batch``) and a ticker thread (``tick``, every second); the web
request handlers read the ring by sequence number, so no thread ever waits on a slow browser.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

from dashboard.alerts import Alert, AlertEngine
from dashboard.config import DashboardConfig
from dashboard import queries
from dashboard.queries import role_of
from dashboard.store import Message, Store
from edge import payloads

log = logging.getLogger(__name__)

RING = 20000
RATE_BUCKET_S = 2
RATE_KEEP = 600  # buckets of message-rate history kept (20 min)


def alert_payload(a: Alert) -> dict:
    """The ``<prefix>/<device>/alert`` payload (``edge.payloads.alert_event``, edge/schemas/alert.schema.json)."""
    return payloads.alert_event(a.device, a.kind, a.state, a.since, describe(a), ts=a.ts)


def describe(a: Alert) -> str:
    """One line for people: what the alert is about."""
    d = a.detail
    if a.kind == "negative_expression":
        text = f"face {d.get('face_id')} {d.get('expression')} for {d.get('seconds')} s (threshold {d.get('threshold_s')} s)"
    else:
        text = f"no face for {d.get('seconds')} s (threshold {d.get('threshold_s')} s)"
    return text + (f"; cleared: {d['reason']}" if a.state == "cleared" and d.get("reason") else "")


# What the driver page's live charts take from an attention message.
ATTENTION_EVENT_KEYS = ("ts", "face_id", "perclos", "eyes_closed", "closed_s", "eye_openness", "blinks_per_min",
                        "long_closures_per_min", "yawns", "yaw", "pitch", "off_road_s", "looking", "drowsy",
                        "distracted", "yawning", "events")


def _event(m: Message) -> dict | None:
    p = m.payload
    if m.kind == "status":
        return {"type": "status", "device": m.device, "status": str(p), "ts": m.received}
    if m.kind == "expression":
        return {"type": "expression", "device": m.device, "ts": p.get("ts"), "face_id": p.get("face_id"),
                "expression": p.get("expression"), "confidence": p.get("confidence")}
    if m.kind == "summary":
        return {"type": "summary", "device": m.device, "ts": p.get("ts"), "faces": p.get("faces"),
                "counts": p.get("counts")}
    if m.kind == "attention":
        return {"type": "attention", "device": m.device, **{k: p.get(k) for k in ATTENTION_EVENT_KEYS}}
    if m.kind == "alert":  # the device's own (ingest keeps no other)
        return {"type": "alert", "device": m.device, "id": None, "source": "device",
                **{k: p.get(k) for k in ("ts", "kind", "state", "since", "face_id")},
                "detail": {"text": p.get("detail"), "face_id": p.get("face_id"), "source": "device"}}
    if m.kind == "stats":
        return {"type": "stats", "device": m.device, "ts": p.get("ts"), "fps": p.get("fps"),
                "backend": p.get("backend"), "outbox_depth": (p.get("outbox") or {}).get("depth"),
                "cpu_temp_c": p.get("cpu_temp_c"), "faces": p.get("faces"), "role": role_of(p)}
    return None


class Live:
    """Alert engine + event ring.

    Args:
        publish: ``publish(topic, payload)`` for alerts on MQTT; None to not publish.
    """

    def __init__(self, cfg: DashboardConfig, store: Store, publish: Callable[[str, dict], None] | None = None):
        self.cfg, self.store, self.publish = cfg, store, publish
        self.engine = AlertEngine(cfg.alerts)
        try:  # the roles as last stored: right from the start, even if the broker lost its retained stats
            for d in queries.devices(store, cfg.stale_s):
                self.engine.roles[d["device"]] = d["role"]
        except Exception:  # noqa: BLE001 - the retained stats will tell
            log.exception("reading the devices' roles failed")
        self._ring: collections.deque = collections.deque(maxlen=RING)
        self._n = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._rate: collections.OrderedDict[int, int] = collections.OrderedDict()  # 2 s bucket -> messages

    def activity(self, window_s: float = 120.0, now: float | None = None) -> list[list[float]]:
        """``[[bucket start, messages], ...]`` for the last ``window_s`` (2 s buckets, oldest first)."""
        now = time.time() if now is None else now
        last = int(now // RATE_BUCKET_S)
        first = last - int(window_s // RATE_BUCKET_S)
        with self._lock:
            return [[b * RATE_BUCKET_S, self._rate.get(b, 0)] for b in range(first, last + 1)]

    @property
    def last(self) -> int:
        return self._n

    def on_batch(self, batch: list[Message]) -> None:
        events, seen = [], {}
        alerts: list[Alert] = []
        for m in batch:
            if m.retained and m.kind != "status":
                if m.kind == "stats" and isinstance(m.payload, dict):
                    alerts += self.engine.on_role(m.device, m.payload)  # the role holds; the rest is history
                continue  # an old retained summary/stats is history, not news
            ev = _event(m)
            if ev is not None:
                events.append(ev)
            if m.kind != "status":
                ts, n = seen.get(m.device, (0.0, 0))
                seen[m.device] = (max(ts, m.ts), n + 1)
            alerts += self.engine.on_message(m.device, m.kind, m.payload, m.received)
        events += [{"type": "seen", "device": d, "ts": ts, "n": n} for d, (ts, n) in seen.items()]
        self._push(events)
        bucket = int(time.time() // RATE_BUCKET_S)
        with self._lock:
            self._rate[bucket] = self._rate.get(bucket, 0) + sum(n for _, n in seen.values())
            while len(self._rate) > RATE_KEEP:
                self._rate.popitem(last=False)
        self._handle_alerts(alerts)

    def tick(self, now: float | None = None) -> None:
        self._handle_alerts(self.engine.tick(now if now is not None else time.time()))

    def _push(self, events: list[dict]) -> None:
        with self._lock:
            for ev in events:
                self._n += 1
                self._ring.append((self._n, ev))

    def _handle_alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            try:
                if a.state == "raised":
                    a.id = self.store.add_alert(a.device, a.kind, a.since, a.ts, a.detail)
                elif a.id is not None:
                    self.store.clear_alert(a.id, a.ts)
            except Exception:  # noqa: BLE001 - keep alerting even if the DB hiccups
                log.exception("storing alert %s failed", a)
            log.info("alert %s %s on %s (%s)", a.kind, a.state, a.device, a.detail)
            if self.publish is not None and self.cfg.alerts.publish:
                try:
                    self.publish(payloads.topic(self.cfg.mqtt.prefix, a.device, "alert"), alert_payload(a))
                except Exception:  # noqa: BLE001
                    log.exception("publishing alert failed")
            self._push([{"type": "alert", "id": a.id, **alert_payload(a), "detail": a.detail}])

    def since(self, n: int, devices: set[str] | None = None, kinds: set[str] | None = None) -> tuple[int, list[dict]]:
        """Events after sequence number ``n`` (filtered); returns (new last n, events)."""
        with self._lock:
            last = self._n
            if n >= last:
                return last, []
            items = [ev for k, ev in self._ring if k > n]
        if devices:
            items = [e for e in items if e.get("device") in devices]
        if kinds:
            items = [e for e in items if e["type"] in kinds]
        return last, items

    def start_ticker(self, period_s: float = 1.0) -> None:
        def run():
            while not self._stop.wait(period_s):
                try:
                    self.tick()
                except Exception:  # noqa: BLE001
                    log.exception("alert tick failed")

        self._ticker = threading.Thread(target=run, name="alert-ticker", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
