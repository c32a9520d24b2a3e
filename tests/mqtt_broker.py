"""A real mosquitto broker for tests, on a free loopback port, that can stop and restart on the SAME port.

Persistence is on, so a subscriber with a persistent session (clean_session=False, QoS 1) keeps
its queued messages across a broker restart: tests can prove that nothing published while the
broker was down is lost.

Use the ``mqtt_broker`` fixture (import it into a test module or conftest), or ``MosquittoBroker``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MosquittoBroker:
    """One mosquitto process bound to 127.0.0.1:``port``, its files under ``workdir``."""

    def __init__(self, workdir: Path, port: int | None = None):
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (`apt-get install mosquitto`, or `make setup-dev`)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen | None = None
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            # Run as whoever started us: as root mosquitto would switch to a user that cannot write here.
            + ("user root\n" if os.geteuid() == 0 else "")
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until it accepts connections."""
        self._log_fh = open(self.log, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self._log_fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop mosquitto (SIGTERM, so it saves its persistence file) and wait for it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log_fh", None):
            self._log_fh.close()
            self._log_fh = None

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def mqtt_broker(tmp_path):
    """A running ``MosquittoBroker`` for one test; fails (not skips) when mosquitto is missing."""
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed: `make setup-dev` (or `apt-get install mosquitto`)")
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


class Collector:
    """A real paho subscriber that records every message on ``topic_filter``.

    With ``persistent=True`` it uses a persistent session (clean_session=False, QoS 1), so the
    broker queues messages for it while it is disconnected, also across a broker restart.

    It acknowledges each message itself (paho ``manual_ack``) while recording it, so ``freeze()``
    can tell exactly which messages the broker knows it has: see there.
    """

    def __init__(self, broker: MosquittoBroker, topic_filter: str = "#", client_id: str | None = None,
                 persistent: bool = True):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._frozen = False  # set by freeze(): record and acknowledge nothing until the next connection
        self._unsubacks: dict[int, threading.Event] = {}
        self.topic_filter = topic_filter
        self.persistent = persistent
        self.client_id = client_id or f"collector-{id(self)}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  clean_session=not persistent, manual_ack=True)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("collector could not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        # A new connection: what the broker sends from now on was not recorded (a frozen collector
        # neither recorded nor acknowledged it), so record it again.
        with self._lock:
            self._frozen = False
        client.subscribe(self.topic_filter, qos=1)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            if self._frozen:
                return  # not acknowledged either: the broker keeps it and delivers it again
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            # Queued before anything freeze() sends afterwards (paho writes its packets in order).
            client.ack(msg.mid, msg.qos)

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._lock:
            done = self._unsubacks.get(mid)
        if done:
            done.set()

    def freeze(self, timeout: float = 10.0) -> bool:
        """Stop recording (and acknowledging) messages until the next connection, and wait until the
        broker has processed the PUBACK of every message recorded so far. True when it has.

        Call it just before stopping the broker with messages still flowing: without it the broker
        may stop between sending a message and reading this subscriber's PUBACK, and the restarted
        broker (persistent session) delivers that message a second time (flagged DUP): a duplicate
        made by the test's own subscriber, not by the publisher. Frozen, every recorded message was
        acknowledged, every later one is left unacknowledged and is recorded once when redelivered.
        The proof is an UNSUBSCRIBE round trip: it is sent after those PUBACKs on the same
        connection, and the broker handles one connection's packets in order. Persistent sessions
        only (a clean session would forget what was left unacknowledged).
        """
        import paho.mqtt.client as mqtt

        if not self.persistent:
            raise RuntimeError("freeze() needs a persistent session (persistent=True)")

        with self._lock:
            self._frozen = True
            done = threading.Event()
            rc, mid = self.client.unsubscribe(f"collector-sync/{self.client_id}")
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return False
            self._unsubacks[mid] = done
        return done.wait(timeout)

    def on(self, suffix: str) -> list[tuple[str, bytes, bool]]:
        """Messages whose topic ends with ``suffix`` (e.g. "/expression")."""
        with self._lock:
            return [m for m in self.messages if m[0].endswith(suffix)]

    def json_on(self, suffix: str) -> list[dict]:
        import json

        return [json.loads(m[1]) for m in self.on(suffix)]

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        """Poll ``predicate(self)`` until it is true or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return bool(predicate(self))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(broker: MosquittoBroker, topic: str, timeout: float = 10.0) -> bytes | None:
    """The retained payload on ``topic`` as a fresh subscriber sees it (None if there is none)."""
    import threading

    import paho.mqtt.client as mqtt

    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"retained-{time.monotonic_ns()}")

    def on_message(c, u, msg):
        if msg.retain:
            got.append(msg.payload)
        done.set()

    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: threading.Timer(1.0, done.set).start()  # no retained -> give up
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    done.wait(timeout)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None
