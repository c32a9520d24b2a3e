"""Whether the dashboard hears the fleet: one MQTT client's link to the broker and, while it is down, why.

The causes are the daemon's (``edge.broker_errors``: refused, dns, tls, not_mqtt, not_authorised,
no_answer for a port that stays silent, lost). paho only says "connection failed", so the link wraps the
client's ``reconnect`` to keep the exception (refused, DNS, TLS), reads the CONNACK (not authorised) and
the SUBACK (a subscription the broker's ACL refuses: connected, yet deaf), and probes the port
(``broker_errors.probe``) when a connection closed before its CONNACK or nothing came back for
``PROBE_AFTER_S`` (not MQTT, silent). Each cause is logged once, with the fix, when it changes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from edge import broker_errors
from edge.broker_errors import Cause

log = logging.getLogger(__name__)

DOWN_AFTER_S = 5.0  # /healthz answers 503 once the link was down this long (a broker restart is not an outage)
PROBE_AFTER_S = 3.0  # an attempt without CONNACK this long: ask the port what it is
PROBE_TIMEOUT_S = 3.0


class BrokerLink:
    """The state of one paho client's link: ``up`` (connected and subscribed), since when it is down, why.

    Args:
        cfg: the ``[mqtt]`` section the client connects with (for the messages and the probe).
        client: the paho client; its ``reconnect`` is wrapped (paho calls it for every attempt).
        name: what the log lines call this link (the subscription filter).
    """

    def __init__(self, cfg: Any, client: Any, name: str):
        self.cfg, self.name = cfg, name
        self.up = False
        self.down_since: float | None = time.time()  # not connected yet counts as down
        self.cause: Cause | None = None
        self._logged: str | None = None  # key of the last cause logged
        self._attempt_at: float | None = None  # monotonic start of the attempt in flight
        self._attempt_explained = False
        self._probe_now = threading.Event()
        self._stop = threading.Event()
        self._paho_reconnect = client.reconnect
        client.reconnect = self._reconnect
        self._watchdog = threading.Thread(target=self._watch, name="broker-link", daemon=True)

    # -- called from paho's thread -------------------------------------------------------------
    def _reconnect(self):
        self._attempt_at, self._attempt_explained = time.monotonic(), False
        try:
            return self._paho_reconnect()
        except Exception as exc:
            self._explain(broker_errors.from_exception(self.cfg, exc))
            raise

    def connack(self, reason_code: Any) -> None:
        """The broker answered the CONNECT (``reason_code``: paho's ReasonCode)."""
        self._attempt_at = None
        if reason_code.is_failure:
            self._explain(broker_errors.from_connack(self.cfg, reason_code))

    def subscribed(self, refused: list | None = None) -> None:
        """The SUBACK came: ``refused`` holds the failure codes (an ACL without read access), else the link is up."""
        if refused:
            self._explain(Cause("not_authorised", f"broker {self.cfg.host}:{self.cfg.port} refused the subscription "
                                                  f"{self.name} ({', '.join(map(str, refused))}): give the dashboard's "
                                                  f"account (mqtt.username {self.cfg.username or 'unset'}) read access "
                                                  f"to it in the broker's ACL"))
            return
        if self.down_since is not None and self._logged is not None:
            log.info("dashboard hears the fleet again: %s on %s:%d after %.0f s", self.name, self.cfg.host,
                        self.cfg.port, time.time() - self.down_since)
        self.up, self.down_since, self.cause, self._logged = True, None, None, None

    def disconnected(self, reason_code: Any) -> None:
        was_up = self.up
        self.up = False
        if self._stop.is_set():
            return
        if was_up:
            self.down_since = time.time()
            self._explain(broker_errors.lost(self.cfg, reason_code))
        elif not self._attempt_explained:
            self._probe_now.set()  # closed before any CONNACK: paho cannot tell why, the port can

    # -- public --------------------------------------------------------------------------------
    def start(self) -> None:
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        self._probe_now.set()

    def down_s(self, now: float | None = None) -> float:
        """Seconds the link has been down (0 while up)."""
        return 0.0 if self.down_since is None else max(0.0, (now or time.time()) - self.down_since)

    def state(self, now: float | None = None) -> dict:
        """``up``, ``down_since``, ``down_s``, ``cause`` (key) and ``error`` (the line with the fix)."""
        return {"up": self.up, "down_since": self.down_since, "down_s": round(self.down_s(now), 1),
                "cause": self.cause.key if self.cause else None, "error": self.cause.message if self.cause else None}

    # -- internals -----------------------------------------------------------------------------
    def _explain(self, cause: Cause) -> None:
        """Keep ``cause``; log it when it differs from the last one logged."""
        self._attempt_explained = True
        self.up = False
        if self.down_since is None:
            self.down_since = time.time()
        self.cause = cause
        if cause.key != self._logged:
            self._logged = cause.key
            log.error("dashboard cannot hear the fleet (%s): %s (retrying)", self.name, cause.message)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._probe_now.wait(0.5)
            if self._stop.is_set():
                return
            asked = self._probe_now.is_set()
            self._probe_now.clear()
            at = self._attempt_at
            silent = at is not None and not self._attempt_explained and time.monotonic() - at > PROBE_AFTER_S
            if self.up or not (asked or silent):
                continue
            cause = broker_errors.probe(self.cfg, timeout=PROBE_TIMEOUT_S)
            if cause is None:  # an MQTT broker answered the probe
                if not asked:  # only slow (a TLS handshake on a busy Pi): let paho's attempt finish
                    self._attempt_explained = True
                    continue
                cause = Cause("rejected", f"broker {self.cfg.host}:{self.cfg.port} closed the dashboard's connection "
                                          "before accepting it: see the broker's log")
            if not self.up:
                self._explain(cause)
