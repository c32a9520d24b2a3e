"""``fer-edge dashboard``: MQTT -> SQLite/PostgreSQL -> web app. ``register`` imports nothing heavy."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

EPILOG = """\
Subscribes to <prefix>/+/# and stores every status, expression, summary and stats message (SQLite in WAL
mode by default, PostgreSQL with --db postgresql://user@host/db), duplicates once: raw events for --raw-days,
per-minute rollups per device for --retention-days.
Serves the fleet, classroom and driver views and the JSON API on --listen (default 127.0.0.1:8080).
Listening on anything but loopback needs --token-file or --users-file. Broker TLS and credentials come
from the config's [mqtt] section, as for the daemon (password from mqtt.password_file or the environment).
A broker it cannot use is named in the log and on every page, and /healthz answers 503 after 5 s of it.

Scale-out: run ingest workers with `--ingest-only --share-group G --db postgresql://...` (MQTT 5 shared
subscription $share/G/<prefix>/+/#: the broker splits the stream between them) and one web process with
`--no-ingest --db postgresql://...` (it stores only the retained messages a shared subscription never gets).
Every option also reads from the [dashboard] section of --config (keys: listen, db, retention_days, raw_days, stale_s,
share_group, groups, [dashboard.alerts] negative_s/no_face_s/face_timeout_s/devices, [dashboard.auth]).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("dashboard", help="web dashboard: store what devices publish, fleet/classroom/driver views",
                              description="Run the fer-edge web dashboard (extra: pip install 'fer-edge[dashboard]').",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", metavar="FILE", help="TOML file with [dashboard] and [mqtt] sections")
    p.add_argument("--mqtt-host", metavar="H", help="broker host (mqtt.host)")
    p.add_argument("--mqtt-port", type=int, metavar="P", help="broker port (mqtt.port)")
    p.add_argument("--mqtt-prefix", metavar="PREFIX", help="topic prefix (mqtt.prefix, default fer)")
    p.add_argument("--listen", metavar="HOST:PORT", help="web address (default 127.0.0.1:8080)")
    p.add_argument("--db", metavar="PATH|URL",
                   help="SQLite file, in an existing folder (default: dashboard.sqlite in $STATE_DIRECTORY under "
                        "systemd, else in $XDG_STATE_HOME/fer-edge or ~/.local/state/fer-edge), or postgresql://...")
    p.add_argument("--retention-days", type=float, metavar="D", help="keep D days of per-minute rollups (default 365)")
    p.add_argument("--raw-days", type=float, metavar="D", help="keep D days of raw events (default 7)")
    p.add_argument("--token-file", metavar="FILE", help="file holding the bearer token (auth)")
    p.add_argument("--users-file", metavar="FILE", help="file of user:password lines (HTTP Basic auth)")
    p.add_argument("--negative-s", type=float, metavar="S", help="driver alert: negative expression for S s (default 5)")
    p.add_argument("--no-face-s", type=float, metavar="S", help="driver alert: no face for S s (default 30)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--ingest-only", action="store_true", help="an ingest worker: no web server")
    mode.add_argument("--no-ingest", action="store_true", help="web + alerts only, next to ingest workers")
    p.add_argument("--share-group", metavar="G", help="ingest through the MQTT 5 shared subscription $share/G/...")
    p.add_argument("--worker-name", metavar="NAME",
                   help="this process's stable name (default host-pid): with a name the broker keeps its session and "
                        "queues messages while it restarts; unique per process")
    p.set_defaults(func=cmd_dashboard)


def config_from_args(args: argparse.Namespace):
    from dashboard.config import load_dashboard_config

    overrides = {
        "mqtt.host": args.mqtt_host, "mqtt.port": args.mqtt_port, "mqtt.prefix": args.mqtt_prefix,
        "listen": args.listen, "db": args.db, "retention_days": args.retention_days, "raw_days": args.raw_days,
        "auth.token_file": args.token_file, "auth.users_file": args.users_file,
        "alerts.negative_s": args.negative_s, "alerts.no_face_s": args.no_face_s,
        "share_group": args.share_group, "worker_name": args.worker_name,
        "web": False if args.ingest_only else None, "ingest": False if args.no_ingest else None,
    }
    return load_dashboard_config(args.config, overrides)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from edge.errors import ConfigError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the dashboard needs {exc.name}: pip install 'fer-edge[dashboard]'") from None
    from dashboard.server import run_dashboard

    return run_dashboard(config_from_args(args))

