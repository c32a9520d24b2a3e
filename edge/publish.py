"""MQTT publishing (paho-mqtt 2.x) of the MQTT contract (topics and payloads: ``edge.payloads``).

Topics are ``<prefix>/<device_id>/{status,expression,summary,stats}``:

* ``status``: ``online`` on every connect, ``offline`` on a clean stop and as the broker-held
  last will; retained, QoS 1; a plain string, not JSON.
* ``expression``: QoS 1, not retained; ``summary``: QoS 1, retained. Both go through the SQLite
  ``Outbox`` first and are deleted only on the broker's PUBACK.
* ``stats``: QoS 0, retained; best effort (the next one replaces it), sent only while connected.

Ordering: the outbox is drained in id order in batches; the next batch is handed to paho only
when every message of the previous one was acknowledged. paho re-sends unacknowledged messages
itself after a reconnect, so a batch never overtakes the messages of an older one.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge import broker_errors
from edge.errors import ConfigError
from edge.outbox import Outbox, broker_key, default_outbox_path, legacy_outbox_path
from edge.payloads import (  # noqa: F401  (payload builders re-exported for existing callers)
    DURABLE_KINDS, PAYLOAD_VERSION, QOS_RETAIN, SCHEMAS_DIR, encode, expression_event, outbox_state, stats_event, status_payload,
    summary_event, topic,
)

log = logging.getLogger(__name__)

# What the daemon always publishes; with [attention] also attention and its own alerts (counted once sent).
TOPIC_KINDS = ("status", "expression", "summary", "stats")
_BATCH = 50  # outbox rows handed to paho at once (also paho's max in-flight)


class TlsConfig(BaseModel):
    """``[mqtt.tls]``: TLS to the broker; an empty ``ca_file`` means the system CA store."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    ca_file: str = ""
    certfile: str = ""  # client certificate (mutual TLS), optional
    keyfile: str = ""


class MqttConfig(BaseModel):
    """``[mqtt]``: the broker. An empty ``host`` means no broker: events go to stdout only."""

    model_config = ConfigDict(extra="forbid")
    host: str = ""
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = "fer"
    username: str = ""
    password_file: str = ""  # empty: $CREDENTIALS_DIRECTORY/mqtt_password if present, else password_env
    password_env: str = "FER_EDGE_MQTT_PASSWORD"
    client_id: str = ""  # empty: fer-edge-<device.id>
    keepalive: int = Field(30, ge=5, le=3600)
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    ha_discovery: bool = False  # announce sensors to Home Assistant (MQTT discovery) on every connect
    ha_discovery_prefix: str = "homeassistant"

    @field_validator("prefix")
    @classmethod
    def _plain_prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "+#\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError("a topic prefix without wildcards (+ #) or leading/trailing '/', e.g. \"fer\"")
        return v


def resolve_password(cfg: MqttConfig) -> str | None:
    """The broker password: ``password_file``, else ``$CREDENTIALS_DIRECTORY/mqtt_password``
    (systemd ``LoadCredential=``), else the environment variable ``password_env``; None if none."""
    if cfg.password_file:
        try:
            return Path(cfg.password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"mqtt.password_file: cannot read {cfg.password_file!r} ({exc.strerror}); "
                "give a readable file, or leave it empty to use $CREDENTIALS_DIRECTORY or the environment"
            ) from None
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / "mqtt_password").is_file():
        return (Path(cred_dir) / "mqtt_password").read_text().rstrip("\r\n")
    return os.environ.get(cfg.password_env) if cfg.password_env else None


# --- publishers -----------------------------------------------------------------------------


def make_client(cfg: MqttConfig, client_id: str, mqtt5: bool = False):
    """A paho 2.x client set up from ``[mqtt]``: auth, TLS, reconnect back-off (not connected yet).

    ``mqtt5``: speak MQTT 5 (shared subscriptions, as the dashboard's ingest workers use) instead of 3.1.1.
    Raises ConfigError for TLS files that do not exist or an unreadable password file.
    """
    import paho.mqtt.client as mqtt

    if mqtt5:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=True)
    client.reconnect_delay_set(min_delay=max(1, int(cfg.reconnect_min_s)), max_delay=max(1, int(cfg.reconnect_max_s)))
    if cfg.username:
        client.username_pw_set(cfg.username, resolve_password(cfg))
    if cfg.tls.enabled:
        for key in ("ca_file", "certfile", "keyfile"):
            value = getattr(cfg.tls, key)
            if value and not Path(value).is_file():
                raise ConfigError(f"mqtt.tls.{key}: file {value!r} not found; give an existing PEM file or leave it empty")
        if bool(cfg.tls.certfile) != bool(cfg.tls.keyfile):
            raise ConfigError("mqtt.tls: set both certfile and keyfile for a client certificate, or neither")
        # ca_certs=None: the system CA store.
        client.tls_set(ca_certs=cfg.tls.ca_file or None, certfile=cfg.tls.certfile or None,
                       keyfile=cfg.tls.keyfile or None)
    return client


class StdoutPublisher:
    """No broker configured: one JSON line per message on stdout ``{"topic": ..., "payload": ...}``."""

    connected = False

    def __init__(self, prefix: str, device_id: str, stream: TextIO | None = None):
        self.prefix, self.device_id = prefix, device_id
        self.stream = stream or sys.stdout
        self.produced = {k: 0 for k in TOPIC_KINDS if k != "status"}
        self.outbox_depth = 0
        self.outbox_dropped = 0
        self.last_error = None
        self._seq: dict[str, int] = {}  # no outbox: numbered from 1 in each run

    def start(self) -> None:
        self._write("status", status_payload(True))

    def publish_event(self, kind: str, payload: dict) -> None:
        """Write one message of ``kind`` (expression, summary, stats, attention, alert)."""
        self.produced[kind] = self.produced.get(kind, 0) + 1
        if kind in DURABLE_KINDS:
            self._seq[kind] = payload["seq"] = self._seq.get(kind, 0) + 1
        self._write(kind, payload)

    def outbox_stats(self) -> dict:
        return outbox_state(0, 0)

    def stop(self, timeout: float = 3.0) -> bool:
        self._write("status", status_payload(False))
        return True

    def _write(self, kind: str, payload: dict | str) -> None:
        line = json.dumps({"topic": topic(self.prefix, self.device_id, kind), "payload": payload})
        self.stream.write(line + "\n")
        self.stream.flush()


class MqttPublisher:
    """Publishes to an MQTT broker through a durable ``Outbox``; reconnects by itself.

    Args:
        cfg: the ``[mqtt]`` section (host must be set).
        device_id: ``device.id``, the second topic level.
        outbox: where durable messages wait for their PUBACK. It is claimed for this device and broker:
            only their rows are sent (``Outbox.claim``); at the default path it also takes over this
            device's rows from the outbox file all daemons shared before.
    """

    def __init__(self, cfg: MqttConfig, device_id: str, outbox: Outbox):
        self.cfg, self.device_id, self.outbox = cfg, device_id, outbox
        at_default = outbox.path == default_outbox_path(device_id, cfg.host, cfg.port)
        outbox.claim(device_id, broker_key(cfg.host, cfg.port), legacy_outbox_path() if at_default else None)
        self.produced = {k: 0 for k in TOPIC_KINDS if k != "status"}
        self.connected = False
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()  # mids acked, filled by paho's thread
        self._inflight: dict[int, int] = {}  # mid -> outbox row id
        self._last_pushed = 0  # highest outbox id handed to paho
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.last_error: broker_errors.Cause | None = None  # why the broker is not connected (None while connected)
        self._attempt_failed = False  # the current connection attempt already has its cause
        self._probing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._status_topic = topic(cfg.prefix, device_id, "status")

        client = make_client(cfg, cfg.client_id or f"fer-edge-{device_id}")
        client.max_inflight_messages_set(_BATCH)
        client.max_queued_messages_set(0)  # unbounded in paho; the outbox and _BATCH bound it
        client.will_set(self._status_topic, status_payload(False), *QOS_RETAIN["status"])
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        # paho swallows the exception of a failed connect; wrap its reconnect() to name the cause.
        self._paho_reconnect = client.reconnect
        client.reconnect = self._reconnect
        self.client = client

    # paho callbacks (run in paho's network thread; they must not take locks paho might wait on)

    def _reconnect(self):
        """paho's reconnect() (called from its thread for every attempt), with the cause of a failure
        recorded, and the password read again after the broker refused it."""
        self._attempt_failed = False
        if self.last_error is not None and self.last_error.key == "not_authorised" and self.cfg.username:
            try:
                self.client.username_pw_set(self.cfg.username, resolve_password(self.cfg))
            except ConfigError as exc:
                log.error("%s", exc)
        try:
            return self._paho_reconnect()
        except Exception as exc:
            self._attempt_failed = True
            self._set_cause(broker_errors.from_exception(self.cfg, exc))
            raise

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._attempt_failed = True
            self._set_cause(broker_errors.from_connack(self.cfg, reason_code))
            return
        log.info("connected to mqtt broker %s:%d", self.cfg.host, self.cfg.port)
        self.last_error = None
        client.publish(self._status_topic, status_payload(True), *QOS_RETAIN["status"])
        if self.cfg.ha_discovery:
            from edge.hass import discovery_messages
            from fer_edge import __version__

            for t, cfg in discovery_messages(self.cfg.ha_discovery_prefix, self.cfg.prefix, self.device_id, __version__):
                client.publish(t, json.dumps(cfg), qos=1, retain=True)
        self.connected = True
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected
        self.connected = False
        if self._stop.is_set():
            return
        if was:
            self._set_cause(broker_errors.lost(self.cfg, reason_code))
        elif not self._attempt_failed and self._probing.acquire(blocking=False):
            # Closed before any CONNACK: paho cannot tell why, so look at what the port answers.
            threading.Thread(target=self._probe, args=(str(reason_code),), name="mqtt-probe", daemon=True).start()

    def _probe(self, reason: str) -> None:
        try:
            cause = broker_errors.probe(self.cfg, timeout=5.0)
            self._set_cause(cause or broker_errors.Cause("rejected", f"broker {self.cfg.host}:{self.cfg.port} "
                                                                     f"closed the connection before CONNACK ({reason})"))
        finally:
            self._probing.release()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.put(mid)
        self._wake.set()

    def _set_cause(self, cause: "broker_errors.Cause") -> None:
        """Log the cause once per change of cause; keep it in ``last_error``."""
        if self.connected:
            return
        changed = self.last_error is None or self.last_error.key != cause.key
        self.last_error = cause
        if changed:
            log.warning("mqtt: %s; buffering events in the outbox %s and retrying", cause.message, self.outbox.path)

    # public API

    @property
    def outbox_depth(self) -> int:
        return self.outbox.depth

    @property
    def outbox_dropped(self) -> int:
        return self.outbox.dropped

    def outbox_stats(self) -> dict:
        """The ``outbox`` object of the stats payload."""
        box = self.outbox
        return outbox_state(box.depth, box.dropped, box.drops, box.memory_depth, box.write_errors)

    def start(self) -> None:
        """Connect in the background (works with the broker down) and start draining the outbox."""
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._drain_loop, name="outbox-drain", daemon=True)
        self._thread.start()

    def publish_event(self, kind: str, payload: dict) -> None:
        """Publish one message of ``kind``: durable kinds via the outbox, stats directly (QoS 0)."""
        qos, retain = QOS_RETAIN[kind]
        self.produced[kind] = self.produced.get(kind, 0) + 1
        t = topic(self.cfg.prefix, self.device_id, kind)
        if kind in DURABLE_KINDS:
            # Numbered (seq) and stored; a database that cannot be written holds it in memory instead.
            self.outbox.append(t, payload, qos, retain, seq_kind=kind)
            self._wake.set()
        elif self.connected:
            self.client.publish(t, encode(payload), qos=qos, retain=retain)

    def stop(self, timeout: float = 3.0) -> bool:
        """Flush the outbox (at most ``timeout`` s, only while connected), publish ``offline``,
        disconnect. Returns True when nothing was left undelivered."""
        deadline = time.monotonic() + timeout
        while self.connected and (self.outbox.depth or self._inflight) and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(2.0)
        self._process_acks()
        if self.connected:
            info = self.client.publish(self._status_topic, status_payload(False), *QOS_RETAIN["status"])
            try:
                info.wait_for_publish(max(0.2, min(1.0, deadline - time.monotonic() + 1.0)))
            except (RuntimeError, ValueError):
                pass
        was_connected = self.connected
        self.client.disconnect()
        if was_connected:
            self.client.loop_stop()
        # else: paho's thread may sit in a connect attempt (up to its 5 s timeout); it is a daemon
        # thread and exits after that attempt, so a stop never waits for an unreachable broker.
        left = self.outbox.depth
        self.outbox.close()
        if left:
            log.warning("%d message(s) stay in the outbox %s for the next run", left, self.outbox.path)
        return left == 0

    # outbox drain (own thread)

    def _process_acks(self) -> None:
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                return
            row_id = self._inflight.pop(mid, None)
            if row_id is not None:
                self.outbox.delete(row_id)

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._drain_once()
            except Exception:  # a bad row or a database hiccup must not end delivery for good
                log.exception("outbox drain failed; retrying in 1 s")
                self._stop.wait(1.0)

    def _drain_once(self) -> None:
        self._process_acks()
        self.outbox.retry_deletes()
        # Next batch only once the previous one is fully acknowledged: keeps order across reconnects.
        if not self.connected or self._inflight:
            return
        # Rows on disk first; messages held in memory (database not writable) are always newer.
        rows = self.outbox.pending(self._last_pushed, _BATCH) or self.outbox.take_memory(_BATCH)
        for row in rows:
            info = self.client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            self._inflight[info.mid] = row.id
            if not row.memory:
                self._last_pushed = row.id


def create_publisher(mqtt_cfg: MqttConfig, device_id: str, outbox_factory) -> StdoutPublisher | MqttPublisher:
    """``MqttPublisher`` when ``mqtt.host`` is set (``outbox_factory()`` opens its outbox), else stdout."""
    if not mqtt_cfg.host:
        return StdoutPublisher(mqtt_cfg.prefix, device_id)
    return MqttPublisher(mqtt_cfg, device_id, outbox_factory())
