"""The daemon's one TOML config file (``/etc/fer-edge/config.toml``), validated by pydantic.

Each configurable part owns its section model (``CameraConfig`` in ``edge.camera``, ``MqttConfig``
in ``edge.publish``, ...); ``Config`` assembles them. Every key has a working default, so no file
at all runs on the built-in sample video and prints events to stdout. Errors raise ``ConfigError``
with one line naming the key path, the bad value and what is expected.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.attention.config import AttentionConfig
from edge.frames import CameraConfig  # the light module: loading a config does not load OpenCV
from edge.classify import ModelConfig
from edge.detect import DetectorConfig
from edge.errors import ConfigError
from edge.health import WatchdogConfig
from edge.outbox import OutboxConfig, default_outbox_path
from edge.publish import MqttConfig, TlsConfig  # noqa: F401  (TlsConfig re-exported for users of Config)
from edge.track import TrackerConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class DeviceConfig(BaseModel):
    """``[device]``: who this device is; ``id`` is the second MQTT topic level.

    ``role``: what the camera watches, stated in every stats payload so the dashboard applies the
    matching alert rules (driver alerts only for "driver"); one of ``edge.payloads.DEVICE_ROLES``.
    """

    model_config = ConfigDict(extra="forbid")
    id: str = "fer-edge-1"
    role: Literal["general", "driver", "classroom"] = "general"

    @field_validator("id")
    @classmethod
    def _topic_safe(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", v):
            raise ValueError("1-64 characters from letters, digits, '.', '_', '-' (it becomes an MQTT topic level)")
        return v


class EventsConfig(BaseModel):
    """``[events]``: an expression event per face on change, and at least every ``interval_s``."""

    model_config = ConfigDict(extra="forbid")
    interval_s: float = Field(10.0, gt=0)


class SummaryConfig(BaseModel):
    """``[summary]``: one retained summary of all faces every ``interval_s``."""

    model_config = ConfigDict(extra="forbid")
    interval_s: float = Field(30.0, gt=0)


class StatsConfig(BaseModel):
    """``[stats]``: fps, stage latencies and health every ``interval_s``."""

    model_config = ConfigDict(extra="forbid")
    interval_s: float = Field(30.0, gt=0)


class PipelineConfig(BaseModel):
    """``[pipeline]``: how many frames are in flight at once (edge.workers). Each worker thread detects its own
    frame with its own detector while the others' frames are classified and published, in capture order.
    None: one per core this process may use (1: the plain one-frame-at-a-time loop)."""

    model_config = ConfigDict(extra="forbid")
    workers: int | None = Field(None, ge=1, le=16)

    def worker_count(self) -> int:
        from edge.workers import default_workers

        return self.workers or default_workers()


class AttentionSection(AttentionConfig):
    """``[attention]``: face landmarks per tracked face and the signals over them (edge.attention: eye closure,
    blinks, PERCLOS, yawns, head pose), published as ``attention`` messages and, with ``alerts``, the device's own
    ``drowsy`` / ``distracted`` / ``yawning`` alerts. The thresholds (AttentionConfig) cite their sources in
    docs/attention.md. None: by ``device.role`` (driver: all on; classroom: landmarks on, no alerts; general: off)."""

    enabled: bool | None = None
    alerts: bool | None = None
    interval_s: float = Field(1.0, gt=0)  # an attention message per face at least this often, and at once on an event
    # Faces whose landmarks are read, largest first (None: driver 1, the driver; otherwise every face found).
    max_faces: int | None = Field(None, ge=1)


class PrivacyConfig(BaseModel):
    """``[privacy]``: no image or face crop ever leaves the device unless ``publish_crops = true``."""

    model_config = ConfigDict(extra="forbid")
    publish_crops: bool = False


CLASSROOM_PITCH_CENTER = -12.0  # the head-pose model's pitch on frontal faces (AFLW image00050: -13.8 vs -4.7)


def _role_presets(cfg: Config) -> None:
    """What ``device.role`` turns on, for every key the file leaves unset (a key set in the file wins):
    driver: the one-near-face detector, landmarks for the largest face, the device's drowsy/distracted/yawning
    alerts; classroom: no emotions inferred (EU AI Act Art. 5(1)(f), docs/attention.md "Lawful use"), landmarks for
    every face (who looks toward the front); general: expressions only, as before."""
    role, att = cfg.device.role, cfg.attention
    updates = {}
    if att.enabled is None:
        updates["enabled"] = role in ("driver", "classroom")
    if att.alerts is None:
        updates["alerts"] = role == "driver"
    if att.max_faces is None and role == "driver":
        updates["max_faces"] = 1
    if role == "classroom":
        # A pupil's own median pose is what the share is meant to measure, so it cannot be the reference: the
        # front is the camera's direction (mounted at the front of the room), with the head-pose model's pitch bias
        # on frontal faces taken out (measured -9 to -21 degrees, docs/attention.md). The file may set both.
        if att.yaw_center is None and "yaw_center" not in att.model_fields_set:
            updates["yaw_center"] = 0.0
        if att.pitch_center is None and "pitch_center" not in att.model_fields_set:
            updates["pitch_center"] = CLASSROOM_PITCH_CENTER
    if updates:
        cfg.attention = att.model_copy(update=updates)
    if role == "driver" and "type" not in cfg.detector.model_fields_set:
        cfg.detector = cfg.detector.model_copy(update={"type": "driver"})
    if role == "classroom" and "emotions" not in cfg.model.model_fields_set:
        cfg.model = cfg.model.model_copy(update={"emotions": False})


class Config(BaseModel):
    """The whole config file: one section per configurable part."""

    model_config = ConfigDict(extra="forbid")
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    summary: SummaryConfig = Field(default_factory=SummaryConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    attention: AttentionSection = Field(default_factory=AttentionSection)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    # Read and validated by `fer-edge dashboard` (dashboard.config), so one file can serve both; the daemon ignores it.
    dashboard: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _resolve_defaults(self) -> "Config":
        _role_presets(self)
        # camera.realtime = "auto": a file published to a broker plays at its frame rate, like the camera it
        # stands in for (subscribers see real time); printed to stdout it plays as fast as it is read.
        if self.camera.realtime == "auto":
            self.camera = self.camera.model_copy(update={"realtime": bool(self.mqtt.host)})
        # No outbox.path: one file per device and broker, so one device's events never leave through another
        # daemon or towards another broker (the outbox also checks each row's owner before sending it).
        if not self.outbox.path and self.mqtt.host:
            path = default_outbox_path(self.device.id, self.mqtt.host, self.mqtt.port)
            self.outbox = self.outbox.model_copy(update={"path": str(path)})
        # The int8 detector shares the classifier's Edge TPU: [detector] accelerator/device unset -> [model]'s.
        if self.detector.accelerator is None:
            self.detector.accelerator = self.model.accelerator
        if self.detector.device is None:
            self.detector.device = self.model.device
        return self


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the key at ``loc`` (to list its valid keys)."""
    model: Any = Config
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _key(err: dict) -> str:
    """Dotted key path of a pydantic error, without the union-branch tags (``str``, ``int``...)."""
    loc = [p for p in err["loc"] if not (isinstance(p, str) and (p in ("str", "int", "float", "bool") or p.startswith("literal[")))]
    return ".".join(str(p) for p in loc) or "(top level)"


def _expectation(err: dict) -> str:
    msg = err["msg"]
    for prefix in ("Value error, ", "Input should be "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def _describe(errs: list[dict]) -> str:
    """The errors of one key as ``key.path = value: expected ...`` (union branches joined by "or")."""
    err = errs[0]
    key = _key(err)
    loc = tuple(key.split("."))
    if err["type"] == "extra_forbidden":
        if loc[-1] == "password":
            return (f"{key}: passwords never go in the config (it is world-readable); use mqtt.password_file, "
                    "systemd LoadCredential=mqtt_password, or the environment variable named by mqtt.password_env")
        owner = _model_at(loc)
        valid = ", ".join(owner.model_fields) if owner else ""
        return f"{key}: unknown key" + (f"; valid keys here: {valid}" if valid else "")
    expected = " or ".join(dict.fromkeys(_expectation(e) for e in errs))
    value = err.get("input")
    if isinstance(value, dict):
        return f"{key}: expected {expected}"
    return f"{key} = {value!r}: expected {expected}"


def validate_config(data: dict, source: str = "config") -> Config:
    """Validate a parsed TOML document; raises ConfigError (one line) on the first problem."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        by_key: dict[str, list[dict]] = {}
        for err in exc.errors():
            by_key.setdefault(_key(err), []).append(err)
        first = _describe(next(iter(by_key.values())))
        more = len(by_key) - 1
        raise ConfigError(f"{source}: {first}" + (f" (and {more} more problem(s))" if more > 0 else "")) from None


def load_config(path: str | Path | None = None, overrides: Iterable[tuple[str, str, Any]] = ()) -> Config:
    """Read and validate the TOML config at ``path``; None -> all defaults (sample video, stdout).

    ``overrides``: ``(flag, "section.key", value)`` from the command line (``fer-edge run --device-id``),
    applied over the file in order; a bad value is a ConfigError naming the flag, the key and what is expected.
    """
    data = {} if path is None else _read_toml(Path(path))
    cfg = validate_config(data, str(path)) if path is not None else Config()
    for flag, key, value in overrides:
        *sections, name = key.split(".")
        section = data
        for part in sections:  # the file validated: what is there at these keys is a section
            section = section.setdefault(part, {})
        section[name] = value
        cfg = validate_config(data, flag)
    return cfg


def _read_toml(path: Path) -> dict:
    """The parsed TOML document at ``path``; ConfigError (one line) when missing, unreadable or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass an existing file to --config, or omit it for defaults") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not readable ({exc}); fix its permissions or encoding") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{path}:{m.group(1)}" if m else str(path)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        col = f" (column {m.group(2)})" if m else ""
        raise ConfigError(f"{where}: invalid TOML: {reason}{col}; fix the syntax (see the sample config in the README)") from None
    return data
