"""Why a connection to the MQTT broker failed, in one line that names the cause and the fix.

Causes (``Cause.key``): ``refused`` (nothing listens), ``dns``, ``no_answer``, ``tls`` (handshake
failed, with the certificate verification reason), ``not_mqtt`` (something answered, but not
MQTT: another service, or a TLS port spoken to in plain text), ``not_authorised``, ``rejected``
(another CONNACK refusal), ``lost`` (an established connection dropped).

paho does not report why a connection attempt failed after the TCP connect (it only calls
``on_disconnect`` with "Unspecified error"), so ``probe`` opens its own socket, sends an MQTT
CONNECT and looks at what comes back. Used by the publisher, ``doctor`` and ``monitor``.
"""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cause:
    """A classified connection failure: ``key`` (stable, for "did it change?") and ``message``."""

    key: str
    message: str


def _where(cfg: Any) -> str:
    return f"{cfg.host}:{cfg.port}"


def _password_source(cfg: Any) -> str:
    if cfg.password_file:
        return f"the password file {cfg.password_file}"
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        return "the credential mqtt_password"
    return f"${cfg.password_env}"


def not_authorised(cfg: Any, detail: str = "Not authorized") -> Cause:
    """The broker refused the username or password (CONNACK 4/5, MQTT 5 0x86/0x87)."""
    return Cause("not_authorised", f"broker {_where(cfg)} says not authorised ({detail}): check mqtt.username "
                                   f"({cfg.username or 'unset'}) and {_password_source(cfg)}")


def from_connack(cfg: Any, reason_code: Any) -> Cause:
    """A CONNACK with a failure code."""
    text = str(reason_code)
    if any(k in text.lower() for k in ("not authori", "bad user", "password")):
        return not_authorised(cfg, text)
    return Cause("rejected", f"broker {_where(cfg)} refused the connection ({text})")


def from_exception(cfg: Any, exc: BaseException) -> Cause:
    """An exception raised while opening the TCP/TLS connection."""
    w = _where(cfg)
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", "") or str(exc)
        return Cause("tls", f"TLS handshake with {w} failed: certificate verification failed ({reason}); check "
                            "mqtt.tls.ca_file and that the broker's certificate names this host")
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or str(exc)
        hint = ("the port may not speak TLS: check mqtt.port and mqtt.tls.enabled" if "WRONG_VERSION" in str(reason)
                else "check mqtt.tls (ca_file, certfile, keyfile)")
        return Cause("tls", f"TLS handshake with {w} failed ({reason}): {hint}")
    if isinstance(exc, ConnectionRefusedError):
        return Cause("refused", f"nothing listens on {w} (connection refused): is the broker running, is mqtt.port right?")
    if isinstance(exc, socket.gaierror):
        return Cause("dns", f"cannot resolve mqtt.host {cfg.host!r} ({exc.strerror or exc}): check mqtt.host")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return Cause("no_answer", f"no answer from {w}: check mqtt.host, mqtt.port and the network/firewall")
    if isinstance(exc, ConnectionResetError) and cfg.tls.enabled:
        return Cause("tls", f"TLS handshake with {w} failed (connection reset by the peer): the port may not speak "
                            "TLS: check mqtt.port and mqtt.tls.enabled")
    return Cause("no_answer", f"cannot connect to {w} ({exc}): check mqtt.host and mqtt.port")


def lost(cfg: Any, reason: Any) -> Cause:
    """An established connection dropped."""
    return Cause("lost", f"lost the connection to {_where(cfg)} ({reason})")


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + bytes([len(var)]) + var


def _tls_context(cfg: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cfg.tls.ca_file or None)
    if cfg.tls.certfile:
        ctx.load_cert_chain(cfg.tls.certfile, cfg.tls.keyfile or None)
    return ctx


def _describe_answer(first: bytes) -> str:
    if first.startswith(b"HTTP"):
        return "an HTTP server answered"
    if first[:1] == b"\x15" or first[:2] == b"\x16\x03":
        return "it speaks TLS: set mqtt.tls.enabled = true, or use the broker's plain port"
    if first.startswith((b"SSH-", b"220 ", b"+OK", b"* OK")):
        return f"it greets with {first[:20].decode(errors='replace').strip()!r}"
    return f"it answered {first[:8].hex(' ')}"


def probe(cfg: Any, timeout: float = 5.0) -> Cause | None:
    """Connect, send an MQTT CONNECT, read the answer: None when a CONNACK came back (an MQTT broker
    that accepted or refused us: the CONNACK tells the rest), else the cause."""
    w = _where(cfg)
    try:
        raw = socket.create_connection((cfg.host, cfg.port), timeout=timeout)
    except OSError as exc:
        return from_exception(cfg, exc)
    try:
        sock: socket.socket = raw
        if cfg.tls.enabled:
            try:
                sock = _tls_context(cfg).wrap_socket(raw, server_hostname=cfg.host)
            except (ssl.SSLError, OSError) as exc:
                return from_exception(cfg, exc)
        sock.settimeout(timeout)
        try:
            sock.sendall(_connect_packet(f"fer-edge-probe-{os.getpid()}"))
            first = sock.recv(64)
        except ssl.SSLError as exc:  # TLS 1.3: a refused client certificate arrives as an alert on read
            reason = getattr(exc, "reason", None) or str(exc)
            return Cause("tls", f"TLS handshake with {w} failed ({reason}): the broker refused our client "
                                "certificate or wants one: check mqtt.tls.certfile and keyfile")
        except (TimeoutError, socket.timeout):
            return Cause("no_answer", f"{w} accepted the connection but did not answer within {timeout:g} s "
                                      "(timed out): is it an MQTT broker? check mqtt.port")
        except OSError as exc:
            if cfg.tls.enabled:
                return from_exception(cfg, exc)
            return Cause("not_mqtt", f"{w} is not an MQTT broker (it closed the connection: {exc}; a TLS-only "
                                     "port? then set mqtt.tls.enabled): check mqtt.port")
        if first[:1] == b"\x20":
            return None
        if not first:
            hint = "" if cfg.tls.enabled else " (a TLS-only port? set mqtt.tls.enabled)"
            return Cause("not_mqtt", f"{w} closed the connection without an MQTT answer{hint}: check mqtt.port")
        return Cause("not_mqtt", f"{w} is not an MQTT broker ({_describe_answer(first)}): check mqtt.port")
    finally:
        try:
            raw.close()
        except OSError:
            pass
