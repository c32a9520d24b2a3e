"""MQTT -> store: one paho client subscribed to ``<prefix>/+/#`` (or a shared subscription), one writer thread.

paho's network thread only queues ``(topic, payload, retain)``; the writer thread parses, stores in
batches (one transaction per batch, at most every ``_FLUSH_S``) and then hands the batch to listeners
(the live feed and the alert engine). ``received`` on stored rows is the time the batch was written, so
``received - ts`` is the ingest lag. Between batches a storing feed also prunes (hourly: raw rows after
``raw_days``, rollups after ``retention_days``) and, after an upgrade, builds the rollups of the rows stored
before it, a chunk per step (``Store.backfill_step``).

Scale-out: ingest workers subscribe ``$share/<group>/<prefix>/+/#`` over MQTT 5, and the broker hands each
message to one of them. Retained messages are never delivered to shared subscriptions, so the web process
keeps its own plain subscription and stores only the retained messages it gets (status, summary and stats
as they were when it connected); everything live is stored by the workers.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from typing import Callable

from dashboard.broker_link import BrokerLink
from dashboard.config import DashboardConfig
from dashboard.store import Message, Store
from edge import payloads
from edge.publish import make_client

log = logging.getLogger(__name__)

KINDS = ("expression", "summary", "stats", "status", "attention", "alert")  # stored (alert: the device's only)
_FLUSH_S = 0.05
_BATCH = 1000
_BEAT_S = 5.0
_PRUNE_S = 3600.0
_BACKFILL_CHUNK = 5000  # rows rolled up per step of an upgrade's backfill (~0.1 s between two batches)
SESSION_EXPIRY_S = 24 * 3600  # how long the broker keeps a named feed's messages while it is away


def parse_message(prefix: str, topic: str, raw: bytes, retained: bool, received: float) -> Message | None:
    """A stored kind's message under ``prefix`` as a ``Message``; None for anything else (bad JSON, a payload
    version this dashboard does not know, an alert that is not ``"source": "device"``: the dashboards' own
    alerts, this one's included, come back on the same topic and are not taken in again)."""
    where = payloads.parse_topic(topic, prefix)
    if where is None or where[2] not in KINDS:
        return None
    _, device, kind = where
    payload = payloads.decode(kind, bytes(raw))
    if payload is None:
        return None
    if isinstance(payload, dict) and payload.get("v", payloads.PAYLOAD_VERSION) != payloads.PAYLOAD_VERSION:
        return None
    if kind == "alert" and payload.get("source") != "device":
        return None
    return Message(device, kind, payload.strip() if isinstance(payload, str) else payload, bytes(raw), received, retained)


class Feed:
    """One MQTT subscription feeding a store and/or listeners.

    Args:
        shared: subscribe through ``$share/<cfg.share_group>/...`` (an ingest worker).
        store: where to write; None for a feed that only listens.
        retained_only: store only retained messages (the web process next to shared workers).
        listeners: called in the writer thread with each parsed batch, after it was stored.
    """

    def __init__(self, cfg: DashboardConfig, store: Store | None, shared: bool = False, retained_only: bool = False,
                 listeners: list[Callable[[list[Message]], None]] | None = None, name: str = ""):
        self.cfg, self.store, self.retained_only = cfg, store, retained_only
        self.listeners = list(listeners or [])
        self.prefix = cfg.mqtt.prefix
        base = payloads.subscription(self.prefix)
        self.filter = f"$share/{cfg.share_group}/{base}" if shared and cfg.share_group else base
        self.name = name or cfg.worker_name or f"{socket.gethostname()}-{os.getpid()}"
        self.received = self.stored = self.duplicates = 0
        self.started = time.time()
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        suffix = "share" if shared else ("live" if store is None or retained_only else "ingest")
        self.client = make_client(cfg.mqtt, f"fer-dashboard-{self.name}-{suffix}"[:64], mqtt5=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.link = BrokerLink(cfg.mqtt, self.client, self.filter)  # up, or down since when and why
        self._thread = threading.Thread(target=self._run, name=f"feed-{suffix}", daemon=True)

    # paho thread
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.link.connack(reason_code)
        if not reason_code.is_failure:
            client.subscribe(self.filter, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        refused = [rc for rc in reason_codes if rc.is_failure]
        self.link.subscribed(refused)
        if refused:
            return
        log.info("dashboard subscribed to %s on %s:%d", self.filter, self.cfg.mqtt.host, self.cfg.mqtt.port)
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.link.disconnected(reason_code)

    def _on_message(self, client, userdata, msg):
        self._q.put((msg.topic, msg.payload, bool(msg.retain)))

    # public
    @property
    def connected(self) -> bool:
        """Connected and subscribed: the feed hears the fleet."""
        return self.link.up

    @property
    def persistent(self) -> bool:
        """A named storing feed keeps its broker session: QoS 1 messages wait for it while it restarts."""
        return bool(self.cfg.worker_name) and self.store is not None and not self.retained_only

    def start(self, wait_s: float = 0.0) -> "Feed":
        m = self.cfg.mqtt
        session: dict = {}
        if self.persistent:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            session = {"clean_start": False, "properties": props}
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive, **session)
        self.link.start()
        self.client.loop_start()
        self._thread.start()
        if wait_s:
            self._subscribed.wait(wait_s)
        return self

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def publish(self, topic: str, payload: dict, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payloads.encode(payload), qos=qos, retain=retain)

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect, then store what was already received."""
        self.link.stop()
        self.client.disconnect()
        self.client.loop_stop()
        self._stop.set()
        self._thread.join(timeout)

    # writer thread
    def _run(self) -> None:
        last_beat = last_prune = 0.0
        backfill_at, backfilled = 0.0, 0  # an upgrade's rollups: when to take the next step, rows done
        while True:
            batch = self._drain()
            if batch:
                self._handle(batch)
            now = time.time()
            if self.store is not None and not self.retained_only and backfill_at is not None and now >= backfill_at:
                n = self._safe(self.store.backfill_step, _BACKFILL_CHUNK)
                backfill_at = now + 60.0 if n is None else (None if n == 0 else now)  # an error: retry in a minute
                backfilled += n or 0
                if n == 0 and backfilled:
                    log.info("dashboard: the upgrade's per-minute rollups are built (%d rows)", backfilled)
                elif n and backfilled % 100_000 < n:
                    log.info("dashboard: upgrade: per-minute rollups of %d stored rows built so far", backfilled)
            if self.store is not None and not self.retained_only:
                if now - last_beat >= _BEAT_S or (self._stop.is_set() and self._q.empty()):
                    self._safe(self.store.worker_beat, self.name, self.started, self.received, self.stored,
                               self.duplicates)
                    last_beat = now
                if now - last_prune >= _PRUNE_S:
                    n = self._safe(self.store.prune, self.cfg.retention_days, None, self.cfg.raw_days) or 0
                    if n:
                        log.info("retention: deleted %d rows (raw older than %g days, rollups older than %g days)",
                                 n, self.cfg.raw_days, self.cfg.retention_days)
                    last_prune = now
            if self._stop.is_set() and self._q.empty():
                return

    def _drain(self) -> list:
        items = []
        try:
            items.append(self._q.get(timeout=_FLUSH_S))
        except queue.Empty:
            return items
        deadline = time.monotonic() + _FLUSH_S
        while len(items) < _BATCH:
            try:
                items.append(self._q.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return items

    def _handle(self, items: list) -> None:
        now = time.time()
        batch = [m for m in (parse_message(self.prefix, t, p, r, now) for t, p, r in items) if m is not None]
        self.received += len(batch)
        if self.store is not None:
            to_store = [m for m in batch if m.retained] if self.retained_only else batch
            if to_store:
                now = time.time()
                for m in to_store:
                    m.received = now
                result = self._write(to_store)
                if result:
                    self.stored += result[0]
                    self.duplicates += result[1]
        for listener in self.listeners:
            self._safe(listener, batch)

    def _write(self, batch: list[Message], attempts: int = 8) -> tuple[int, int] | None:
        """Store a batch; on a database error (a deadlock, a lost connection) reconnect and retry, so a
        transient failure loses nothing (the dedupe key makes a retried partial write harmless)."""
        for attempt in range(attempts):
            try:
                return self.store.write(batch)
            except Exception as exc:  # noqa: BLE001 - retried, then reported
                self.store.reset()
                if attempt == attempts - 1 or self._stop.is_set() and attempt >= 2:
                    log.exception("dashboard: dropping a batch of %d messages after %d attempts", len(batch), attempt + 1)
                    return None
                log.warning("dashboard: storing a batch failed (%s); retrying", str(exc).splitlines()[0])
                time.sleep(min(5.0, 0.1 * 2 ** attempt))
        return None

    @staticmethod
    def _safe(fn, *args):
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - a bad batch or a DB hiccup must not stop the ingest
            log.exception("dashboard: %s failed", getattr(fn, "__name__", fn))
            return None
