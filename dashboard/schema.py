"""The dashboard database's tables, and the upgrade of a database an older version wrote.

Versions (``meta.schema``): 1: raw tables only; 2: + ``minutes`` (per-minute rollups) and ``meta``; 3: +
``attention`` (raw), the devices' own alerts in ``alerts`` (``source``, ``dkey``) and the rollups' attention
columns. ``CREATE TABLE IF NOT EXISTS`` leaves an older table as it was, so the columns added since are added
with ``ALTER TABLE``.

An upgrade does not hold up the start: ``migrate`` records the new version and schedules the rollups the older
version did not keep (``rollups.start_backfill``: ``meta`` rows ``backfill:<job>`` = last id done : last id to
do), and the ingest builds them from the raw rows still there a chunk per transaction between its batches
(``Store.backfill_step``: restart-safe, workers take turns under a lock); no raw row is pruned until every job
is done. From schema 1: every rollup column from every raw table. From schema 2: one ``UPDATE minutes SET
counted = summaries`` here, in the upgrade's transaction (SQL only, no raw row read: schema 2 counted every
summary as one with expression counts), then the ``summaries_v3`` job adds the attention columns of the raw
summaries still kept and takes ``counted``'s 1 back for each without counts. Minutes whose raw summaries were
already pruned keep schema 2's assumption and no attention from summaries; attention messages did not exist
before schema 3 (its ingest rolls them up).
"""

from __future__ import annotations

import logging
from typing import Callable

from dashboard import rollups
from edge.errors import ConfigError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# Added to ``alerts`` by schema 3: who raised the alert (NULL: the dashboard) and a device alert's dedupe key.
ALERT_ADDED = (("source", "TEXT"), ("dkey", "TEXT"))


def statements(autoinc: str, without_rowid: str = "") -> list[str]:
    """``CREATE ... IF NOT EXISTS`` of every table and index (``autoinc``: the backend's id column type;
    ``without_rowid``: SQLite's suffix for the rollups)."""
    real = "DOUBLE PRECISION"
    return [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
        *rollups.schema(real, without_rowid),
        f"""CREATE TABLE IF NOT EXISTS devices (device TEXT PRIMARY KEY, status TEXT, status_ts {real},
            last_seen {real}, stats TEXT, stats_ts {real})""",
        f"""CREATE TABLE IF NOT EXISTS expressions (id {autoinc}, device TEXT NOT NULL, ts {real} NOT NULL,
            seq BIGINT, face_id INTEGER, expression TEXT, confidence REAL, payload TEXT, received {real},
            dkey TEXT NOT NULL, UNIQUE (device, dkey))""",
        "CREATE INDEX IF NOT EXISTS expressions_device_ts ON expressions (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS summaries (id {autoinc}, device TEXT NOT NULL, ts {real} NOT NULL,
            seq BIGINT, faces INTEGER, payload TEXT, received {real}, dkey TEXT NOT NULL, UNIQUE (device, dkey))""",
        "CREATE INDEX IF NOT EXISTS summaries_device_ts ON summaries (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS stats (id {autoinc}, device TEXT NOT NULL, ts {real} NOT NULL,
            payload TEXT, received {real}, dkey TEXT NOT NULL, UNIQUE (device, dkey))""",
        "CREATE INDEX IF NOT EXISTS stats_device_ts ON stats (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS attention (id {autoinc}, device TEXT NOT NULL, ts {real} NOT NULL,
            seq BIGINT, face_id INTEGER, perclos REAL, n_events INTEGER NOT NULL DEFAULT 0, payload TEXT,
            received {real}, dkey TEXT NOT NULL, UNIQUE (device, dkey))""",
        "CREATE INDEX IF NOT EXISTS attention_device_ts ON attention (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS statuses (id {autoinc}, device TEXT NOT NULL, ts {real} NOT NULL,
            status TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS statuses_device_ts ON statuses (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS alerts (id {autoinc}, device TEXT NOT NULL, kind TEXT NOT NULL,
            state TEXT NOT NULL, since {real} NOT NULL, ts {real} NOT NULL, detail TEXT, cleared_ts {real},
            acked_ts {real}, acked_by TEXT, source TEXT, dkey TEXT)""",
        "CREATE INDEX IF NOT EXISTS alerts_device_ts ON alerts (device, ts)",
        f"""CREATE TABLE IF NOT EXISTS workers (name TEXT PRIMARY KEY, started {real}, beat {real},
            received BIGINT, stored BIGINT, duplicates BIGINT)""",
    ]


def migrate(cur, sql: Callable[[str], str], autoinc: str, without_rowid: str, url: str) -> None:
    """Create the tables, or bring an older database to ``SCHEMA_VERSION``, inside the caller's transaction; a
    database of a newer version is a ConfigError."""
    for stmt in statements(autoinc, without_rowid):
        cur.execute(stmt)
    cur.execute("SELECT value FROM meta WHERE key = 'schema'")
    row = cur.fetchone()
    version = int(row[0]) if row else 1  # no meta: a fresh database, or one written by schema 1
    if version > SCHEMA_VERSION:
        raise ConfigError(f"database {url!r} has schema {version}, newer than this fer-edge's "
                          f"{SCHEMA_VERSION}: upgrade fer-edge, or use another --db")
    add_columns(cur, "alerts", ALERT_ADDED)
    add_columns(cur, "minutes", [(c, rollups.column_type(c)) for c in rollups.ATTENTION_COLUMNS], " NOT NULL DEFAULT 0")
    cur.execute("CREATE UNIQUE INDEX IF NOT EXISTS alerts_device_dkey ON alerts (device, dkey)")
    if version < SCHEMA_VERSION:
        step = f"schema {version} -> {SCHEMA_VERSION}"
        if todo := rollups.start_backfill(cur, sql, from_version=version):
            log.info("dashboard: %s: the per-minute rollups of %d stored rows are built next to the ingest; raw "
                     "rows are kept until then", step, todo)
        cur.execute(sql("DELETE FROM meta WHERE key = 'schema'"))
        cur.execute(sql("INSERT INTO meta (key, value) VALUES ('schema', ?)"), (str(SCHEMA_VERSION),))


def add_columns(cur, table: str, columns, suffix: str = "") -> None:
    """``ALTER TABLE ... ADD COLUMN`` each of ``columns`` ((name, type)) that ``table`` does not have yet."""
    cur.execute(f"SELECT * FROM {table} LIMIT 0")
    have = {d[0].lower() for d in cur.description}
    for name, kind in columns:
        if name not in have:
            cur.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}{suffix}")
