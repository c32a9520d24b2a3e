"""``fer-edge dashboard`` settings: the ``[dashboard]`` section of a TOML file (plus its ``[mqtt]``), CLI overrides.

The broker settings are the daemon's own ``[mqtt]`` model (``edge.publish.MqttConfig``: host, port, prefix,
username, password_file/env, TLS), so one file can describe both. Other daemon sections in the file are
ignored here. Secrets never come from the command line: the web password/token and the broker password
are read from files (or the environment for the broker, as the daemon does).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.errors import ConfigError
from edge.publish import MqttConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NEGATIVE = ("angry", "fear", "sad")


class AlertConfig(BaseModel):
    """``[dashboard.alerts]``: driver alerts and their thresholds (seconds)."""

    model_config = ConfigDict(extra="forbid")
    negative_s: float = Field(5.0, gt=0, description="a negative expression persisting this long raises an alert")
    no_face_s: float = Field(30.0, gt=0, description="no face seen this long raises an alert")
    negative: list[str] = Field(default_factory=lambda: list(NEGATIVE))
    face_timeout_s: float = Field(25.0, gt=0, description="a face without an event this long has left the view")
    publish: bool = True  # also publish on <prefix>/<device>/alert
    devices: list[str] = Field(default_factory=list, description="driver devices; empty: every device")


class AuthConfig(BaseModel):
    """``[dashboard.auth]``: required when listening on anything but loopback.

    ``token_file``: one line, the bearer token (browsers: open ``/?token=...`` once, it sets a cookie).
    ``users_file``: lines ``user:password`` or ``user:pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`` (HTTP Basic).
    """

    model_config = ConfigDict(extra="forbid")
    token_file: str = ""
    users_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.token_file or self.users_file)


class DashboardConfig(BaseModel):
    """``[dashboard]``."""

    model_config = ConfigDict(extra="forbid")
    listen: str = "127.0.0.1:8080"
    db: str = ""  # a path (SQLite, WAL) or postgresql://...; empty: default_db_path()
    retention_days: float = Field(365.0, gt=0, description="per-minute rollups (and alerts, status changes) are kept this long")
    raw_days: float = Field(7.0, gt=0, description="raw events (expressions, summaries, stats) are kept this long")
    stale_s: float = Field(90.0, gt=0, description="an online device silent this long is shown as stale")
    ingest: bool = True  # subscribe and store (False: web + alerts only, next to separate ingest workers)
    web: bool = True  # serve the web app (False: an ingest worker only)
    share_group: str = ""  # MQTT 5 shared subscription group for ingest ($share/<group>/<prefix>/+/#)
    worker_name: str = ""  # shown in /healthz and the workers table; default: host-pid
    groups: dict[str, list[str]] = Field(default_factory=dict, description="classroom groups: name -> device ids")
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    mqtt: MqttConfig = Field(default_factory=lambda: MqttConfig(host="127.0.0.1"))

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("HOST:PORT, e.g. 127.0.0.1:8080")
        return v

    @model_validator(mode="after")
    def _raw_within_retention(self) -> "DashboardConfig":
        if self.raw_days > self.retention_days:
            raise ValueError(f"raw_days ({self.raw_days:g}) is longer than retention_days ({self.retention_days:g}): "
                             "raise retention_days or lower raw_days")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def is_postgres(self) -> bool:
        return self.db.startswith(("postgresql://", "postgres://"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_users(path: str | Path) -> dict[str, str]:
    """``user:secret`` lines of the users file at ``path`` (``#`` comments and blank lines skipped).
    A line without a user or a secret, or a file with no user, is a ConfigError naming the line."""
    users: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, secret = line.partition(":")
        if not (sep and user and secret):
            raise ConfigError(f"{path}:{n}: expected 'user:secret' with both parts set; fix or remove the line")
        users[user] = secret
    if not users:
        raise ConfigError(f"dashboard.auth.users_file {str(path)!r} holds no 'user:secret' line: add one or remove the setting")
    return users


def check_security(cfg: DashboardConfig) -> None:
    """Refuse to serve a non-loopback address without authentication."""
    if cfg.web and not is_loopback(cfg.host) and not cfg.auth.enabled:
        raise ConfigError(f"dashboard.listen = {cfg.listen!r} is not a loopback address: set dashboard.auth.token_file "
                          "or dashboard.auth.users_file (or --token-file / --users-file), or listen on 127.0.0.1")
    for key in ("token_file", "users_file"):
        path = getattr(cfg.auth, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"dashboard.auth.{key}: file {path!r} not found")
    # A file that is configured but holds no secret must not turn authentication off (fail closed).
    if cfg.auth.token_file and not Path(cfg.auth.token_file).read_text().strip():
        raise ConfigError(f"dashboard.auth.token_file {cfg.auth.token_file!r} is empty: write the token into it "
                          "(e.g. `openssl rand -hex 24 > FILE`) or remove the setting")
    if cfg.auth.users_file:
        read_users(cfg.auth.users_file)


def default_db_path() -> Path:
    """Where the SQLite history goes when ``db`` is not set: ``$STATE_DIRECTORY/dashboard.sqlite`` under
    systemd (``StateDirectory=``), else ``$XDG_STATE_HOME/fer-edge/dashboard.sqlite``, else
    ``~/.local/state/fer-edge/dashboard.sqlite`` (never the current directory)."""
    state = os.environ.get("STATE_DIRECTORY", "")
    if state:
        return Path(state.split(":")[0]) / "dashboard.sqlite"  # systemd: a colon-separated list
    xdg = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec: a relative $XDG_STATE_HOME is invalid and ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "fer-edge" / "dashboard.sqlite"


def resolve_db(cfg: DashboardConfig) -> str:
    """The database to open: the PostgreSQL URL, the SQLite path given, or ``default_db_path()`` (its folder
    made, 0700). A given path whose folder does not exist is a ConfigError (a typo must not create folders)."""
    if cfg.is_postgres:
        return cfg.db
    if not cfg.db:
        path = default_db_path()
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        return str(path)
    path = Path(cfg.db).expanduser()
    if path.is_dir():
        raise ConfigError(f"dashboard.db {cfg.db!r} is a folder: give a file in it, "
                          f"e.g. --db {path / 'dashboard.sqlite'}")
    if not path.parent.is_dir():
        raise ConfigError(f"dashboard.db {cfg.db!r}: folder {str(path.parent)!r} does not exist: create it "
                          f"(mkdir -p {path.parent}) or fix the path")
    return str(path)


def load_dashboard_config(path: str | Path | None = None, overrides: dict | None = None) -> DashboardConfig:
    """``[dashboard]`` and ``[mqtt]`` of the TOML file at ``path`` (None: defaults), then ``overrides``.

    ``overrides`` keys are dashboard keys, or ``mqtt.<key>`` for the broker; None values are ignored.
    """
    data: dict = {}
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        data = dict(doc.get("dashboard", {}))
        if "mqtt" in doc or "mqtt" in data:
            data["mqtt"] = {**doc.get("mqtt", {}), **data.get("mqtt", {})}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, sub = key.partition(".")
        if sub:
            data.setdefault(section, {})
            data[section] = {**data[section], sub: value}
        else:
            data[key] = value
    data.setdefault("mqtt", {})
    data["mqtt"] = {"host": "127.0.0.1", **data["mqtt"]}
    try:
        return DashboardConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if not key:  # a rule across keys (raw_days within retention_days): the message names them
            raise ConfigError(f"{f'{path}: ' if path else ''}dashboard: {err['msg'].removeprefix('Value error, ')}") from None
        raise ConfigError(f"{path or 'dashboard'}: dashboard.{key}: {err['msg']} (got {err.get('input')!r})") from None
