"""Device subcommands of ``fer-edge``: run, analyze, doctor, monitor.

``register`` only builds parsers; each command imports its modules (cv2, the TFLite runtime,
paho) when it runs, so ``fer-edge --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging

CONFIG_HELP = ("TOML config file (e.g. /etc/fer-edge/config.toml); omitted: built-in defaults "
               "(sample video, events printed to stdout)")
RUN_EPILOG = """\
Runs until SIGTERM/SIGINT, until the source ends (a video file without camera.loop), or for
--max-frames frames. A clean stop publishes status "offline", flushes the outbox (waits at most
2.5 s) and exits 0. Events are written to the SQLite outbox first and deleted when the broker
acknowledges them; with the broker down the daemon keeps running and buffers. The outbox is
one file per device and broker ($STATE_DIRECTORY, else ~/.local/state/fer-edge: outbox/<device.id>@
<host>_<port>.sqlite) unless outbox.path says otherwise; a daemon sends only its own rows. A camera or
stream that is not there (at start or later) is retried with backoff up to camera.reconnect_max_s
while stats keep coming with camera.connected = false; a missing file is an error at once.

Topics: <mqtt.prefix>/<device.id>/{status,expression,summary,stats} (JSON schemas in edge/schemas/).
Under systemd (Type=notify) it sends READY=1, WATCHDOG=1 at half of WatchdogSec while frames flow
or the camera is being retried (stops after watchdog.stall_s without a frame otherwise, so systemd
restarts a stuck pipeline), STATUS= and STOPPING=1. Faults and drop policy: docs/faults.md.
The MQTT password comes from mqtt.password_file, else $CREDENTIALS_DIRECTORY/mqtt_password
(LoadCredential=mqtt_password:...), else the environment variable mqtt.password_env.
"""
DOCTOR_EPILOG = """\
Checks, in order: camera (opens the source and reads a frame), model (loads it on the CPU and
scores one crop), accelerator (looks for the Edge TPU), broker (connects with the configured
TLS and credentials; a failure names its cause: refused, TLS verification, not an MQTT broker,
not authorised, no answer), daemon (informational: the running daemon's retained status and its
camera state from stats). Prints one OK/FAIL row per check.

Exit code: a bitmask of the failed checks: 1 camera, 2 model, 4 accelerator (counted only when
model.accelerator = "tpu"), 8 broker (only when mqtt.host is set); 0 = all passed. A config
that does not load prints a one-line error and exits 16.
"""
MONITOR_EPILOG = """\
Subscribes to <prefix>/+/# and shows, per device: status, fps, backend, total latency, outbox
depth, CPU temperature, the latest summary and each face's latest expression. Refreshes every
second until Ctrl-C. Broker, TLS and credentials come from --config's [mqtt]; --host/--port/
--prefix override them. A camera that is down is shown under its device. Exit code 8 when the
broker cannot be reached (the message names the cause).
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def camera_source(value: str) -> str | int:
    """A ``--source`` value as ``[camera] source``: ``camera`` is the Raspberry Pi camera where picamera2 is
    installed, else the first USB camera (index 0); a number is a USB camera index; anything else as given."""
    import importlib.util

    if value == "camera":
        return "picamera2" if importlib.util.find_spec("picamera2") is not None else 0
    return int(value) if value.strip().isdigit() else value


RUN_FLAGS = (("--source", "camera.source"), ("--mqtt-host", "mqtt.host"), ("--mqtt-port", "mqtt.port"),
             ("--device-id", "device.id"), ("--realtime", "camera.realtime"), ("--role", "device.role"),
             ("--workers", "pipeline.workers"))


def run_overrides(args: argparse.Namespace) -> list[tuple[str, str, object]]:
    """``(flag, key, value)`` of the ``run`` flags given on the command line, in RUN_FLAGS order."""
    out = []
    for flag, key in RUN_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            out.append((flag, key, camera_source(value) if flag == "--source" else value))
    return out


def cmd_run(args: argparse.Namespace) -> int:
    """``fer-edge run``: the daemon."""
    import threading

    from edge.config import load_config
    from edge.daemon import install_stop_handlers, run_daemon

    cfg = load_config(args.config, run_overrides(args))
    stop = threading.Event()
    install_stop_handlers(stop)
    run_daemon(cfg, max_frames=args.max_frames, stop=stop)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """``fer-edge doctor``: environment checks; exit code = bitmask of failures."""
    from edge.config import load_config
    from edge.doctor import run_doctor
    from edge.errors import ConfigError

    logging.getLogger().setLevel(logging.ERROR)  # the table is the output; the WARNINGs repeat it
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise ConfigError(str(exc), exit_code=16) from None  # 2 would read as "model failed"
    return run_doctor(cfg)


def cmd_monitor(args: argparse.Namespace) -> int:
    """``fer-edge monitor``: live per-device view of the broker's fer topics."""
    from edge.config import load_config
    from edge.monitor import run_monitor

    mqtt = load_config(args.config).mqtt
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("prefix", args.prefix)) if v is not None}
    if overrides:
        from edge.publish import MqttConfig

        mqtt = MqttConfig.model_validate({**mqtt.model_dump(), **overrides})
    return run_monitor(mqtt, once=args.once, duration=args.duration)


def register(subparsers) -> None:
    """Add ``run``, ``analyze``, ``doctor`` and ``monitor`` to the ``fer-edge`` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("run", help="run the device daemon (camera -> faces -> expressions -> MQTT)",
                              description="Run the fer-edge device daemon.", epilog=RUN_EPILOG, formatter_class=fmt)
    p.add_argument("--config", "-c", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--max-frames", type=_positive_int, metavar="N",
                   help="stop cleanly after N processed frames (tests, benchmarks)")
    g = p.add_argument_group("overrides of the config (also without --config), validated like its keys")
    g.add_argument("--source", metavar="SOURCE",
                   help="camera.source: a video or image file or folder, an rtsp:// or http:// URL, sample (the "
                        "built-in clip), camera (the Raspberry Pi camera where picamera2 is installed, else the "
                        "first USB camera), a USB camera index (0, 1...), or picamera2")
    g.add_argument("--mqtt-host", metavar="HOST", help="mqtt.host: publish to this broker (empty: stdout)")
    g.add_argument("--mqtt-port", metavar="PORT", help="mqtt.port (default 1883)")
    g.add_argument("--device-id", metavar="ID", help="device.id: topics <mqtt.prefix>/<ID>/...")
    g.add_argument("--role", metavar="ROLE", help="device.role: general (expressions), driver (landmarks, drowsy/"
                                                   "distracted/yawning alerts) or classroom (no emotions inferred)")
    g.add_argument("--workers", metavar="N", help="pipeline.workers: frames detected at once (default: one per core)")
    g.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                   help="camera.realtime: play a file at its frame rate (default: when publishing to a broker) "
                        "or as fast as it is read")
    p.set_defaults(func=cmd_run)

    import importlib.util

    if importlib.util.find_spec("edge.analyze") is not None:  # absent from checkouts without it
        from edge import analyze

        p = subparsers.add_parser("analyze", help="detect faces and expressions in images, folders or videos",
                                  description=(analyze.__doc__ or "").strip() or None, formatter_class=fmt)
        analyze.add_arguments(p)
        p.set_defaults(func=analyze.run)

    p = subparsers.add_parser("doctor", help="check camera, model, Edge TPU and broker; exit code = failed checks",
                              description="Check that this device can run fer-edge.", epilog=DOCTOR_EPILOG,
                              formatter_class=fmt)
    p.add_argument("--config", "-c", metavar="FILE", help=CONFIG_HELP)
    p.set_defaults(func=cmd_doctor)

    p = subparsers.add_parser("monitor", help="live terminal view of the devices publishing to a broker",
                              description="Show what fer-edge devices publish, live.", epilog=MONITOR_EPILOG,
                              formatter_class=fmt)
    p.add_argument("--config", "-c", metavar="FILE", help="config whose [mqtt] section names the broker")
    p.add_argument("--host", help="broker host (overrides mqtt.host)")
    p.add_argument("--port", type=int, help="broker port (overrides mqtt.port)")
    p.add_argument("--prefix", help="topic prefix (overrides mqtt.prefix)")
    p.add_argument("--once", action="store_true", help="print one view after the retained messages arrived, then exit")
    p.add_argument("--duration", type=float, metavar="S", help="exit after S seconds (with --once: how long to collect)")
    p.set_defaults(func=cmd_monitor)
