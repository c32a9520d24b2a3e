"""Outbox files: where they live (one per device and broker), their ``[outbox]`` section, who may send a row.

Each row of an ``edge.outbox.Outbox`` records the device id and the broker (``broker_key``) it is
meant for. Older versions shared one ``outbox.sqlite`` between every daemon without ``outbox.path``
and recorded no owner: such a row names its device in its topic only (``row_owner``), and
``take_legacy_rows`` moves one device's rows out of that file into the device's own outbox.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from edge.payloads import parse_topic

log = logging.getLogger(__name__)


class OutboxConfig(BaseModel):
    """``[outbox]``: where unacknowledged events wait, and how many/how old they may get."""

    model_config = ConfigDict(extra="forbid")
    path: str = ""  # empty: one file per device and broker under the state folder (default_outbox_path)
    max_events: int = Field(100_000, ge=1)
    max_age_s: float = Field(604_800, gt=0)
    min_free_mb: float = Field(20.0, ge=0)  # below this free space new messages wait in memory instead
    memory_max: int = Field(10_000, ge=1)  # in-memory queue while the database cannot be written


def state_folder() -> Path:
    """Where the daemon keeps its state: ``$STATE_DIRECTORY`` under systemd (``StateDirectory=``), else
    ``$XDG_STATE_HOME/fer-edge``, else ``~/.local/state/fer-edge``."""
    state = os.environ.get("STATE_DIRECTORY", "")
    if state:
        # systemd passes a colon-separated list when several StateDirectory= are set.
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"  # the spec ignores relative paths
    return base / "fer-edge"


def broker_key(host: str, port: int) -> str:
    """The broker a row is meant for, as stored with it: ``host:port`` (host lower-cased)."""
    return f"{host.strip().lower()}:{int(port)}"


def default_outbox_path(device_id: str | None = None, host: str = "", port: int = 1883) -> Path:
    """``<state_folder>/outbox/<device_id>@<host>_<port>.sqlite``: one file per device and broker, so two
    daemons on one host, or one daemon trying several brokers, never share a file. Without ``device_id``:
    ``<state_folder>/outbox.sqlite``, the file all daemons shared before (``legacy_outbox_path``)."""
    if device_id is None:
        return legacy_outbox_path()
    safe_host = re.sub(r"[^a-z0-9.-]", "_", host.strip().lower()) or "_"  # "::1" -> "__1"
    return state_folder() / "outbox" / f"{device_id}@{safe_host}_{int(port)}.sqlite"


def legacy_outbox_path() -> Path:
    """The outbox every daemon without ``outbox.path`` shared before outboxes were per device and broker."""
    return state_folder() / "outbox.sqlite"


def resolve_outbox_path(cfg: OutboxConfig) -> Path:
    """The configured path (``edge.config`` fills in ``default_outbox_path`` of the device and broker
    when ``outbox.path`` is empty); empty here, on its own: ``legacy_outbox_path``."""
    return Path(cfg.path).expanduser() if cfg.path else legacy_outbox_path()


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and missing parents as 0700 (chmod: the umask does not matter)."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o700)


def row_owner(topic: str, device: str | None, broker: str | None) -> tuple[str, str | None]:
    """(device, broker) a row is meant for: as recorded, else the device named by its topic and no broker
    (rows written before owners were recorded)."""
    if device is not None:
        return device, broker
    parsed = parse_topic(topic)
    return (parsed[1] if parsed else ""), None


def sort_rows(rows: list[tuple], owner: tuple[str, str], path: Path) -> tuple[list[int], Counter]:
    """Of an outbox's ``(id, topic, device, broker)`` rows: the ids of rows without a recorded owner whose topic
    names ``owner``'s device (they become ``owner``'s), and the rows of other owners per ``(path, device, broker)``."""
    unowned, foreign = [], Counter()
    for row_id, topic, device, broker in rows:
        whose = row_owner(topic, device, broker)
        if whose == (owner[0], None):
            unowned.append(row_id)
        elif whose != owner:
            foreign[(path, *whose)] += 1
    return unowned, foreign


def describe_foreign(foreign: Counter) -> str:
    """``"3 of lab-a for 127.0.0.1:1883 in /path"; ...``: the rows left in place, for the one warning."""
    parts = []
    for (path, device, broker), n in sorted(foreign.items(), key=lambda kv: str(kv[0])):
        whose = device or "(no device in topic)"
        parts.append(f"{n} of {whose}" + (f" for {broker}" if broker else " (broker not recorded)") + f" in {path}")
    return "; ".join(parts)


def take_legacy_rows(legacy: Path, owner: tuple[str, str],
                     insert: Callable[[list[tuple], dict[str, int]], None]) -> Counter:
    """Move ``owner``'s undelivered rows out of ``legacy``, the shared outbox file of older versions.

    A row is ``owner``'s when its recorded owner is ``owner``, or when it records none and its topic names
    ``owner``'s device. ``insert(rows, seq_counters)`` must commit the rows ``(ts, topic, payload, qos,
    retain)`` and the file's ``seq`` counters into the device's own outbox; only then are they deleted
    here, so a crash in between duplicates (same ``seq``, subscribers drop it), never loses. Returns the
    rows left in ``legacy``, counted per ``(legacy, device, broker)``. A file that cannot be read or
    written is logged once and left as it is.
    """
    device_id = owner[0]
    foreign: Counter = Counter()
    try:
        src = sqlite3.connect(str(legacy), timeout=5.0, isolation_level=None)
    except sqlite3.Error as exc:
        log.warning("outbox: cannot open %s, the shared outbox of older versions (%s); its messages stay there",
                    legacy, exc)
        return foreign
    try:
        columns = [r[1] for r in src.execute("PRAGMA table_info(outbox)")]
        if not columns:
            return foreign
        owner_cols = "device, broker" if "device" in columns else "NULL, NULL"
        undelivered = " WHERE delivered = 0" if "delivered" in columns else ""
        ids, rows = [], []
        for r in src.execute(f"SELECT id, ts, topic, payload, qos, retain, {owner_cols} FROM outbox{undelivered}"
                             " ORDER BY id").fetchall():
            whose = row_owner(r[2], r[6], r[7])
            if whose in ((device_id, None), owner):
                ids.append(r[0])
                payload = r[3] if isinstance(r[3], bytes) else str(r[3]).encode()
                rows.append((r[1], r[2], payload, r[4], bool(r[5])))
            else:
                foreign[(legacy, *whose)] += 1
        counters = {}
        if src.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone():
            counters = {k[4:]: int(v) for k, v in src.execute("SELECT key, value FROM meta") if k.startswith("seq:")}
        insert(rows, counters)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            src.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        if rows:
            log.info("outbox: moved %d message(s) of %s out of %s (the shared outbox of older versions); they go to %s",
                     len(rows), device_id, legacy, owner[1])
    except sqlite3.Error as exc:
        log.warning("outbox: cannot move the messages of %s out of %s (%s); they stay there for the next start",
                    device_id, legacy, exc)
    finally:
        src.close()
    return foreign
