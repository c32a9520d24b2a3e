"""Per-minute rollups per device: the tier kept for the whole retention once raw events are pruned.

One row of ``minutes`` per device and minute (``ts``: the minute's start, unix seconds) holds what the views
need from the raw rows of that minute:

* from expression events: ``events``, ``n_<label>`` (events whose expression was the label) and
  ``score_<label>`` (the sum of the events' scores for the label; mean = sum / ``scored``);
* from summaries: ``summaries``, ``faces_max``, ``faces_sum`` (faces present), ``obs`` (face observations,
  the sum of the summaries' counts, every label) and ``obs_<label>``;
* ``alerts``: alerts the dashboard raised in that minute.

Counts and sums only, so a minute is the sum of its rows' contributions: the store adds the contribution of
each row it actually inserted, in the same transaction (``deltas``, ``upsert``). A duplicate delivery inserts
no raw row, so it adds nothing; a crash loses both or neither. ``backfill`` builds the rollups of a database
written before this tier existed from its raw rows, with the same arithmetic.
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


def backfill(cur, sql: Callable[[str], str], chunk: int = 20000,
             progress: Callable[[str, int], None] | None = None) -> int:
    """Rebuild ``minutes`` from the raw ``expressions``, ``summaries`` and ``alerts`` rows (an upgrade: their
    rollups did not exist yet); returns the raw rows read. Runs inside the caller's transaction, reading
    ``chunk`` rows at a time in id order; ``progress(table, rows so far)`` after each chunk."""
    cur.execute("DELETE FROM minutes")
    read = 0
    for table, cols, add in (
        ("expressions", "device, ts, expression, payload",
         lambda d, r: d.expression(r[0], r[1], r[2], _json(r[3]).get("scores"))),
        ("summaries", "device, ts, faces, payload", lambda d, r: d.summary(r[0], r[1], r[2], _json(r[3]).get("counts"))),
        ("alerts", "device, ts", lambda d, r: d.alert(r[0], r[1])),
    ):
        last, done = -1, 0
        while True:
            cur.execute(sql(f"SELECT id, {cols} FROM {table} WHERE id > ? ORDER BY id LIMIT ?"), (last, chunk))
            rows = cur.fetchall()
            if not rows:
                break
            deltas = Deltas()
            for r in rows:
                add(deltas, r[1:])
            cur.executemany(sql(upsert_sql()), deltas.sorted_rows())
            last, done = rows[-1][0], done + len(rows)
            if progress:
                progress(table, done)
        read += done
    return read


def _json(text) -> dict:
    try:
        v = json.loads(text) if text else {}
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}

