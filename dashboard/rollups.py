"""Per-minute rollups per device: the tier kept for the whole retention once raw events are pruned.

One row of ``minutes`` per device and minute (``ts``: the minute's start, unix seconds) holds what the views
need from the raw rows of that minute:

* from expression events: ``events``, ``n_<label>`` (events whose expression was the label) and
  ``score_<label>`` (the sum of the events' scores for the label; mean = sum / ``scored``);
* from summaries: ``summaries``, ``faces_max``, ``faces_sum`` (faces present), ``obs`` (face observations,
  the sum of the summaries' counts, every label) and ``obs_<label>``;
* ``alerts``: alerts the dashboard raised in that minute.

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
COLUMNS = (*_SUMMED, "faces_max")  # every value column, in the order of a ``deltas`` vector
_INDEX = {c: i for i, c in enumerate(COLUMNS)}


def schema(real: str, suffix: str = "") -> list[str]:
    """``CREATE`` statements of the tier (``real``: the backend's float type; ``suffix``: e.g. WITHOUT ROWID)."""
    cols = ", ".join(f"{c} {'REAL' if c.startswith('score_') else 'INTEGER'} NOT NULL DEFAULT 0" for c in COLUMNS)
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

    def summary(self, device: str, ts: float, faces: int | None, counts) -> None:
        """One summary (``counts``: its label -> face observations dict)."""
        row = self._row(device, ts)
        row[_INDEX["summaries"]] += 1
        row[_INDEX["faces_sum"]] += faces or 0
        row[_INDEX["faces_max"]] = max(row[_INDEX["faces_max"]], faces or 0)
        for label, n in (counts or {}).items() if isinstance(counts, dict) else ():
            if isinstance(n, (int, float)) and not isinstance(n, bool):
                row[_INDEX["obs"]] += int(n)
                if label in LABELS:
                    row[_INDEX[f"obs_{label}"]] += int(n)

    def alert(self, device: str, ts: float) -> None:
        self._row(device, ts)[_INDEX["alerts"]] += 1

    def sorted_rows(self) -> list[tuple]:
        """``(device, minute, *values)`` in key order (concurrent writers lock rows in the same order)."""
        return [(device, ts, *vals) for (device, ts), vals in sorted(self.rows.items())]


def upsert_sql() -> str:
    """Add a ``sorted_rows`` row to its minute (``?`` placeholders; SQLite and PostgreSQL alike)."""
    cols = ", ".join(COLUMNS)
    marks = ", ".join("?" * (len(COLUMNS) + 2))
    sets = [f"{c} = minutes.{c} + excluded.{c}" for c in _SUMMED]
    sets.append("faces_max = CASE WHEN excluded.faces_max > minutes.faces_max THEN excluded.faces_max "
                "ELSE minutes.faces_max END")
    return (f"INSERT INTO minutes (device, ts, {cols}) VALUES ({marks}) ON CONFLICT (device, ts) DO UPDATE SET "
            + ", ".join(sets))


_SOURCES = (  # raw table, its columns read, how a row adds to the rollups
    ("expressions", "device, ts, expression, payload",
     lambda d, r: d.expression(r[0], r[1], r[2], _json(r[3]).get("scores"))),
    ("summaries", "device, ts, faces, payload", lambda d, r: d.summary(r[0], r[1], r[2], _json(r[3]).get("counts"))),
    ("alerts", "device, ts", lambda d, r: d.alert(r[0], r[1])),
)
BACKFILL = "backfill:"  # meta keys ``backfill:<table>`` = ``<last id done>:<last id to do>``


def start_backfill(cur, sql: Callable[[str], str]) -> int:
    """Schedule the rollups of every raw row already stored (an upgrade: their rollups do not exist yet):
    one ``meta`` entry per table with rows, up to its current highest id (rows stored from now on are rolled up
    at ingest). Runs inside the caller's transaction; returns the rows to do."""
    todo = 0
    for table, _, _ in _SOURCES:
        cur.execute(f"SELECT MIN(id), MAX(id), COUNT(*) FROM {table}")
        low, high, n = cur.fetchone()
        if n:
            cur.execute(sql("INSERT INTO meta (key, value) VALUES (?, ?)"), (BACKFILL + table, f"{low - 1}:{high}"))
            todo += n
    return todo


def backfill_step(cur, sql: Callable[[str], str], chunk: int = 20000) -> int:
    """Roll up the next ``chunk`` raw rows scheduled by ``start_backfill`` and record how far it got, in the
    caller's transaction (so a crash repeats the whole step or none of it). Returns the rows done; 0 when
    nothing is left."""
    cur.execute(sql("SELECT key, value FROM meta WHERE key LIKE ? ORDER BY key"), (BACKFILL + "%",))
    pending = dict(cur.fetchall())
    for table, cols, add in _SOURCES:
        if BACKFILL + table not in pending:
            continue
        done, upto = (int(x) for x in pending[BACKFILL + table].split(":"))
        cur.execute(sql(f"SELECT id, {cols} FROM {table} WHERE id > ? AND id <= ? ORDER BY id LIMIT ?"),
                    (done, upto, chunk))
        rows = cur.fetchall()
        deltas = Deltas()
        for r in rows:
            add(deltas, r[1:])
        if deltas.rows:
            cur.executemany(sql(upsert_sql()), deltas.sorted_rows())
        cur.execute(sql("DELETE FROM meta WHERE key = ?"), (BACKFILL + table,))
        if len(rows) == chunk and rows[-1][0] < upto:
            cur.execute(sql("INSERT INTO meta (key, value) VALUES (?, ?)"), (BACKFILL + table, f"{rows[-1][0]}:{upto}"))
        return max(len(rows), 1)  # a table found empty (pruned meanwhile) still counts as a step taken
    return 0


def _json(text) -> dict:
    try:
        v = json.loads(text) if text else {}
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}

