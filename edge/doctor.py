"""``fer-edge doctor``: check camera, model, accelerator and broker; print OK/FAIL; exit with a bitmask.

Exit code bits: 1 camera, 2 model, 4 accelerator (only when ``model.accelerator = "tpu"``),
8 broker (only when ``mqtt.host`` is set). 0 means every check passed.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from edge.config import Config
from edge.errors import FerEdgeError

CAMERA, MODEL, ACCELERATOR, BROKER = 1, 2, 4, 8


@dataclass
class Check:
    """One row of the doctor's table."""

    name: str
    ok: bool
    detail: str
    bit: int = 0  # added to the exit code when not ok (0: informational)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_camera(cfg: Config, timeout: float = 10.0) -> Check:
    """Open the configured source and read one frame."""
    from edge.camera import open_source

    try:
        source = open_source(cfg.camera)
    except Exception as exc:  # CameraError, or whatever a driver raises
        # A camera or stream that does not open (LiveSource: "cannot open ..."), unlike a missing file,
        # is retried by the daemon.
        retry = ("; the daemon starts anyway and keeps retrying it (stats camera.connected = false)"
                 if str(exc).startswith("cannot open ") else "")
        return Check("camera", False, _first_line(exc) + retry, CAMERA)
    try:
        frame = source.read(timeout=timeout)
        if frame is None:
            return Check("camera", False, f"{cfg.camera.source!r} opened but gave no frame within {timeout:.0f} s", CAMERA)
        h, w = frame.image.shape[:2]
        return Check("camera", True, f"{cfg.camera.source!r}: {w}x{h} frame")
    except Exception as exc:
        return Check("camera", False, _first_line(exc), CAMERA)
    finally:
        source.close()


def check_model(cfg: Config) -> Check:
    """Load the model on the CPU (the accelerator is checked separately) and run one crop through it."""
    import numpy as np

    from edge.classify import ExpressionClassifier

    try:
        clf = ExpressionClassifier(cfg.model.model_copy(update={"accelerator": "cpu"}))
        t0 = time.perf_counter()
        probs = clf.classify(np.full((48, 48), 128, np.uint8))
        ms = 1000 * (time.perf_counter() - t0)
    except Exception as exc:
        return Check("model", False, _first_line(exc), MODEL)
    if not np.isfinite(probs).all():
        return Check("model", False, f"{clf.model_path} produced non-finite scores", MODEL)
    m = clf.manifest
    return Check("model", True, f"{clf.model_path} ({m.name} v{m.version}, {len(clf.labels)} labels, "
                                f"int8 accuracy {m.metrics.int8_accuracy:.3f}), {ms:.1f} ms/crop on cpu")


def check_accelerator(cfg: Config) -> Check:
    """Look for the Edge TPU; a failure counts only when the config demands one (accelerator = "tpu")."""
    acc = cfg.model.accelerator
    if acc == "cpu":
        return Check("accelerator", True, "not used (model.accelerator = \"cpu\")")
    from edge.int8 import load_edgetpu_delegate

    try:
        load_edgetpu_delegate(cfg.model.device)
    except Exception as exc:
        if acc == "tpu":
            return Check("accelerator", False, _first_line(exc), ACCELERATOR)
        return Check("accelerator", True, f"no Edge TPU, the CPU will be used (accelerator = \"auto\"): {_first_line(exc)}")
    return Check("accelerator", True, f"Edge TPU {cfg.model.device or '(first found)'} is available")


def check_broker(cfg: Config, timeout: float = 5.0) -> Check:
    """Connect to the broker with the configured TLS and credentials and wait for CONNACK."""
    m = cfg.mqtt
    if not m.host:
        return Check("broker", True, "not used (no mqtt.host: events go to stdout)")
    from edge import broker_errors
    from edge.publish import make_client

    where = f"{m.host}:{m.port}{' (TLS)' if m.tls.enabled else ''}"
    try:
        client = make_client(m, f"fer-edge-doctor-{cfg.device.id}")
    except FerEdgeError as exc:
        return Check("broker", False, str(exc), BROKER)
    done = threading.Event()
    result: list = []

    def on_connect(c, userdata, flags, reason_code, properties):
        result.append(reason_code)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, keepalive=10)
    except Exception as exc:  # refused, DNS, TLS handshake
        return Check("broker", False, broker_errors.from_exception(m, exc).message, BROKER)
    client.loop_start()
    try:
        if not done.wait(timeout):
            # paho does not say why the connection closed without a CONNACK: look at what the port answers.
            cause = broker_errors.probe(m, timeout) or broker_errors.Cause("no_answer", f"{where}: no CONNACK within {timeout:.0f} s")
            return Check("broker", False, cause.message, BROKER)
        if result[0].is_failure:
            return Check("broker", False, broker_errors.from_connack(m, result[0]).message, BROKER)
        return Check("broker", True, f"{where}: connected")
    finally:
        client.disconnect()
        client.loop_stop()


def check_daemon(cfg: Config, wait_s: float = 1.5) -> Check:
    """What the running daemon of ``device.id`` last said on the broker (retained status and stats):
    informational, it never fails the doctor."""
    m = cfg.mqtt
    if not m.host:
        return Check("daemon", True, "not visible (no broker)")
    from edge.payloads import decode, parse_topic, subscription
    from edge.publish import make_client

    seen: dict[str, object] = {}
    try:
        client = make_client(m, f"fer-edge-doctor-d-{cfg.device.id}")
        client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else c.subscribe(
            subscription(m.prefix, cfg.device.id), qos=1)

        def on_message(c, u, msg):
            parsed = parse_topic(msg.topic, m.prefix)
            if parsed and msg.retain:
                seen[parsed[2]] = decode(parsed[2], msg.payload)

        client.on_message = on_message
        client.connect(m.host, m.port, keepalive=10)
    except Exception:  # the broker check says why
        return Check("daemon", True, "not visible (broker unreachable)")
    client.loop_start()
    time.sleep(wait_s)
    client.disconnect()
    client.loop_stop()
    if "status" not in seen:
        return Check("daemon", True, f"no retained status for device {cfg.device.id!r}: not started yet?")
    text = f"{seen['status']}"
    stats = seen.get("stats")
    cam = stats.get("camera") if isinstance(stats, dict) else None
    if isinstance(cam, dict):
        if cam.get("connected"):
            text += f", camera connected ({cam.get('reconnects', 0)} reconnect(s))"
        else:
            text += f", camera DOWN (last frame {cam.get('last_frame_age_s')} s ago: {cam.get('error')})"
    if isinstance(stats, dict):
        box = stats.get("outbox", {})
        text += f", {stats.get('fps')} fps, outbox {box.get('depth')} waiting / {box.get('dropped')} dropped"
    return Check("daemon", True, text)


def check_detector(cfg: Config) -> Check:
    """Load the configured face detector and time it on one 640x480 frame: its passes, where each model runs
    (Edge TPU or CPU) and ms per pass."""
    import numpy as np

    from edge.detect import create_detector

    try:
        det = create_detector(cfg.detector)
        frame = np.full((480, 640, 3), 128, np.uint8)
        runs = []
        for _ in range(3):  # the first run pays for memory allocation: keep the best of three
            t0 = time.perf_counter()
            det.detect(frame)
            runs.append((1000 * (time.perf_counter() - t0), dict(det.timings_ms)))
    except Exception as exc:
        return Check("detector", False, _first_line(exc), MODEL)
    ms, stages = min(runs, key=lambda r: r[0])
    per = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
    where = getattr(det, "backends", dict)()
    models = "; models: " + ", ".join(f"{k} on {v}" for k, v in where.items()) if where else " on cpu"
    return Check("detector", True, f"{det.describe()}: {ms:.1f} ms per 640x480 frame" + (f" ({per})" if per else "")
                 + models)


CHECKS: dict[str, Callable[[Config], Check]] = {
    "camera": check_camera, "model": check_model, "accelerator": check_accelerator, "broker": check_broker,
    "daemon": check_daemon, "detector": check_detector,
}


def run_doctor(cfg: Config, out: TextIO | None = None) -> int:
    """Run every check, print the table, return the exit-code bitmask."""
    out = out or sys.stdout
    rows = [fn(cfg) for fn in CHECKS.values()]
    width = max(len(r.name) for r in rows)
    for r in rows:
        out.write(f"{r.name:<{width}}  {'OK' if r.ok else 'FAIL':<4}  {r.detail}\n")
    code = 0
    for r in rows:  # OR, not a sum: two checks share the model bit (the classifier and the detector)
        code |= 0 if r.ok else r.bit
    out.write("all checks passed\n" if code == 0 else f"exit code {code} = sum of the failed checks' bits "
              "(1 camera, 2 model, 4 accelerator, 8 broker)\n")
    out.flush()
    return code
