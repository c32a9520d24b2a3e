"""Per-minute rollups per device: the tier kept for the whole retention once raw events are pruned.

One row of ``minutes`` per device and minute (``ts``: the minute's start, unix seconds) holds what the views
need from the raw rows of that minute:

* from expression events: ``events``, ``n_<label>`` (events whose expression was the label) and
  ``score_<label>`` (the sum of the events' scores for the label; mean = sum / ``scored``);
* from summaries: ``summaries``, ``faces_max``, ``faces_sum`` (faces present), ``obs`` (face observations,
  the sum of the summaries' counts, every label) and ``obs_<label>``;
* ``counted``: summaries that carried expression counts (a device with ``[model] emotions = false`` sends
  none: ``summaries - counted`` of them);
* from the summaries' ``attention`` block (devices with landmarks): ``att_faces_max`` (faces read), ``att_obs``
  (observations with landmarks), ``look_obs`` and ``look_sum`` (the observations behind ``looking_share`` and
  its sum over them: looking share = ``look_sum / look_obs``);
* from attention messages (one per tracked face every ``interval_s``): ``att_msgs``, ``perclos_sum`` (mean =
  sum / ``att_msgs``) and ``perclos_max``, and the events they report: ``blinks``, ``long_closures``,
  ``yawns``, ``off_road`` (each event is in one message only, so the sum counts it once);
* ``alerts``: alerts raised in that minute (the dashboard's own and the device's).

Counts and sums only, so a minute is the sum of its rows' contributions: the store adds the contribution of
each row it actually inserted, in the same transaction (``Deltas``, ``upsert_sql``). A duplicate delivery
inserts no raw row, so it adds nothing; a crash loses both or neither. ``start_backfill`` / ``backfill_step``
build the rollups of the rows a database held before this tier existed, with the same arithmetic, a chunk per
transaction next to the ingest.
"""

from __future__ import annotations

import json
from typing import Callable

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # edge.manifest.FER_LABELS
MINUTE = 60.0
_SUMMED = ("events", *(f"n_{x}" for x in LABELS), "scored", *(f"score_{x}" for x in LABELS),
           "summaries", "faces_sum", "obs", *(f"obs_{x}" for x in LABELS), "alerts")
# Schema 3: whether emotions were inferred, and attention (summaries' block and attention messages).
ATTENTION_SUMMED = ("counted", "att_obs", "look_obs", "look_sum", "att_msgs", "perclos_sum", "blinks",
                    "long_closures", "yawns", "off_road")
ATTENTION_MAX = ("att_faces_max", "perclos_max")
EVENT_COLUMNS = {"blink": "blinks", "long_closure": "long_closures", "yawn": "yawns", "off_road": "off_road"}
_MAX = ("faces_max", *ATTENTION_MAX)
COLUMNS = (*_SUMMED, "faces_max", *ATTENTION_SUMMED, *ATTENTION_MAX)  # every value column, in ``deltas`` order
ATTENTION_COLUMNS = (*ATTENTION_SUMMED, *ATTENTION_MAX)  # added by the schema 2 -> 3 upgrade
_REAL = ("look_sum", "perclos_sum", "perclos_max")
_INDEX = {c: i for i, c in enumerate(COLUMNS)}


def column_type(c: str) -> str:
    return "REAL" if c.startswith("score_") or c in _REAL else "INTEGER"


def schema(real: str, suffix: str = "") -> list[str]:
    """``CREATE`` statements of the tier (``real``: the backend's float type; ``suffix``: e.g. WITHOUT ROWID)."""
    cols = ", ".join(f"{c} {column_type(c)} NOT NULL DEFAULT 0" for c in COLUMNS)
    return [f"CREATE TABLE IF NOT EXISTS minutes (device TEXT NOT NULL, ts {real} NOT NULL, {cols}, "
            f"PRIMARY KEY (device, ts)){suffix}"]


def minute_of(ts: float) -> float:
    """The start of the minute holding ``ts`` (unix seconds)."""
    return float(int(ts // MINUTE) * MINUTE)


class Deltas:
    """Contributions of inserted rows, summed per (device, minute)."""

    def __init__(self):
        self.rows: dict[tuple[str, float], list] = {}

    def _row(self, device: str, ts: float) -> list:
        key = (device, minute_of(ts))
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0] * len(COLUMNS)
        return row

    def expression(self, device: str, ts: float, expression: str | None, scores) -> None:
        """One expression event (``scores``: its label -> probability dict, or None)."""
        row = self._row(device, ts)
        row[_INDEX["events"]] += 1
        if expression in LABELS:
            row[_INDEX[f"n_{expression}"]] += 1
        if isinstance(scores, dict):
            row[_INDEX["scored"]] += 1
            for label in LABELS:
                v = scores.get(label)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    row[_INDEX[f"score_{label}"]] += float(v)

    def summary(self, device: str, ts: float, faces: int | None, counts, attention=None) -> None:
        """One summary (``counts``: its label -> face observations dict, None when the device infers no
        emotions; ``attention``: its attention block, or None)."""
        row = self._row(device, ts)
        row[_INDEX["summaries"]] += 1
        row[_INDEX["faces_sum"]] += faces or 0
        row[_INDEX["faces_max"]] = max(row[_INDEX["faces_max"]], faces or 0)
        if isinstance(counts, dict):
            row[_INDEX["counted"]] += 1
        for label, n in (counts or {}).items() if isinstance(counts, dict) else ():
            if _num(n):
                row[_INDEX["obs"]] += int(n)
                if label in LABELS:
                    row[_INDEX[f"obs_{label}"]] += int(n)
        self.summary_attention(device, ts, attention)

    def summary_attention(self, device: str, ts: float, attention) -> None:
        """The ``attention`` block of one summary (faces read, observations, looking share)."""
        if not isinstance(attention, dict):
            return
        row = self._row(device, ts)
        obs = int(attention["observations"]) if _num(attention.get("observations")) else 0
        faces = int(attention["faces"]) if _num(attention.get("faces")) else 0
        row[_INDEX["att_obs"]] += obs
        row[_INDEX["att_faces_max"]] = max(row[_INDEX["att_faces_max"]], faces)
        share = attention.get("looking_share")
        if _num(share) and obs:
            row[_INDEX["look_obs"]] += obs
            row[_INDEX["look_sum"]] += float(share) * obs

    def attention(self, device: str, ts: float, perclos, events) -> None:
        """One attention message (``perclos``: its PERCLOS; ``events``: its list of {type, start, duration})."""
        row = self._row(device, ts)
        row[_INDEX["att_msgs"]] += 1
        if _num(perclos):
            row[_INDEX["perclos_sum"]] += float(perclos)
            row[_INDEX["perclos_max"]] = max(row[_INDEX["perclos_max"]], float(perclos))
        for e in events if isinstance(events, list) else ():
            column = EVENT_COLUMNS.get(e.get("type")) if isinstance(e, dict) else None
            if column:
                row[_INDEX[column]] += 1

    def alert(self, device: str, ts: float) -> None:
        self._row(device, ts)[_INDEX["alerts"]] += 1

    def sorted_rows(self) -> list[tuple]:
        """``(device, minute, *values)`` in key order (concurrent writers lock rows in the same order)."""
        return [(device, ts, *vals) for (device, ts), vals in sorted(self.rows.items())]


def upsert_sql() -> str:
    """Add a ``sorted_rows`` row to its minute (``?`` placeholders; SQLite and PostgreSQL alike)."""
    cols = ", ".join(COLUMNS)
    marks = ", ".join("?" * (len(COLUMNS) + 2))
    sets = [f"{c} = minutes.{c} + excluded.{c}" for c in (*_SUMMED, *ATTENTION_SUMMED)]
    sets += [f"{c} = CASE WHEN excluded.{c} > minutes.{c} THEN excluded.{c} ELSE minutes.{c} END" for c in _MAX]
    return (f"INSERT INTO minutes (device, ts, {cols}) VALUES ({marks}) ON CONFLICT (device, ts) DO UPDATE SET "
            + ", ".join(sets))


def _summary_row(d: Deltas, r) -> None:
    p = _json(r[3])
    d.summary(r[0], r[1], r[2], p.get("counts"), p.get("attention"))


def _summary_attention_row(d: Deltas, r) -> None:
    """Schema 2 -> 3: the columns 2 did not have, of one raw summary (``counted`` was set to ``summaries``
    for every minute first: a summary without counts takes its 1 back)."""
    p = _json(r[3])
    if not isinstance(p.get("counts"), dict):
        d._row(r[0], r[1])[_INDEX["counted"]] -= 1
    d.summary_attention(r[0], r[1], p.get("attention"))


SUMMARIES_V3 = "summaries_v3"  # the schema 2 -> 3 job
# Backfill jobs: name (meta key ``backfill:<name>``), raw table, its columns read, how a row adds to the rollups.
_JOBS = (
    ("expressions", "expressions", "device, ts, expression, payload",
     lambda d, r: d.expression(r[0], r[1], r[2], _json(r[3]).get("scores"))),
    ("summaries", "summaries", "device, ts, faces, payload", _summary_row),
    ("attention", "attention", "device, ts, perclos, payload",
     lambda d, r: d.attention(r[0], r[1], r[2], _json(r[3]).get("events"))),
    ("alerts", "alerts", "device, ts", lambda d, r: d.alert(r[0], r[1])),
    # schema 2 -> 3: only the columns schema 3 added, of the summaries whose schema-2 rollups exist
    (SUMMARIES_V3, "summaries", "device, ts, faces, payload", _summary_attention_row),
)
BACKFILL = "backfill:"  # meta keys ``backfill:<job>`` = ``<last id done>:<last id to do>``


def start_backfill(cur, sql: Callable[[str], str], from_version: int = 1) -> int:
    """Schedule the rollups of the raw rows already stored (an upgrade: their rollups do not exist yet): one
    ``meta`` entry per job with rows, up to its table's current highest id (rows stored from now on are rolled
    up at ingest). From schema 1: every rollup column, from every raw table. From schema 2 (``minutes`` kept):
    ``counted = summaries`` on every minute (one statement: schema 2 counted every summary as one with
    expression counts) and the ``summaries_v3`` job, the schema-3 columns of the raw summaries still there
    (a summary without counts takes its 1 back), up to the last summary schema 2 rolled up (a 1 -> 2 backfill
    still pending goes on with every column). Runs inside the caller's transaction; returns the rows to do."""
    cur.execute(sql("SELECT key, value FROM meta WHERE key LIKE ?"), (BACKFILL + "%",))
    pending = {k[len(BACKFILL):]: int(v.split(":")[0]) for k, v in cur.fetchall()}
    if from_version >= 2:
        cur.execute("UPDATE minutes SET counted = summaries")
    todo = 0
    for job, table, _, _ in _JOBS:
        if (job == SUMMARIES_V3) != (from_version >= 2) or job in pending:
            continue
        bound = sql(" WHERE id <= ?") if job == SUMMARIES_V3 and table in pending else ""
        cur.execute(f"SELECT MIN(id), MAX(id), COUNT(*) FROM {table}{bound}", (pending[table],) if bound else ())
        low, high, n = cur.fetchone()
        if n:
            cur.execute(sql("INSERT INTO meta (key, value) VALUES (?, ?)"), (BACKFILL + job, f"{low - 1}:{high}"))
            todo += n
    return todo


def backfill_step(cur, sql: Callable[[str], str], chunk: int = 20000) -> int:
    """Roll up the next ``chunk`` raw rows scheduled by ``start_backfill`` and record how far it got, in the
    caller's transaction (so a crash repeats the whole step or none of it). Returns the rows done; 0 when
    nothing is left."""
    cur.execute(sql("SELECT key, value FROM meta WHERE key LIKE ? ORDER BY key"), (BACKFILL + "%",))
    pending = dict(cur.fetchall())
    for job, table, cols, add in _JOBS:
        if BACKFILL + job not in pending:
            continue
        done, upto = (int(x) for x in pending[BACKFILL + job].split(":"))
        cur.execute(sql(f"SELECT id, {cols} FROM {table} WHERE id > ? AND id <= ? ORDER BY id LIMIT ?"),
                    (done, upto, chunk))
        rows = cur.fetchall()
        deltas = Deltas()
        for r in rows:
            add(deltas, r[1:])
        if deltas.rows:
            cur.executemany(sql(upsert_sql()), deltas.sorted_rows())
        cur.execute(sql("DELETE FROM meta WHERE key = ?"), (BACKFILL + job,))
        if len(rows) == chunk and rows[-1][0] < upto:
            cur.execute(sql("INSERT INTO meta (key, value) VALUES (?, ?)"), (BACKFILL + job, f"{rows[-1][0]}:{upto}"))
        return max(len(rows), 1)  # a table found empty (pruned meanwhile) still counts as a step taken
    return 0


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json(text) -> dict:
    try:
        v = json.loads(text) if text else {}
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}

