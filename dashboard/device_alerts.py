"""The devices' own alerts in the dashboard's ``alerts`` table.

A device with ``[attention] alerts`` raises and clears ``drowsy``, ``distracted`` and ``yawning`` itself (it sees
every blink) and publishes them on ``<prefix>/<device>/alert`` with ``"source": "device"``, ``face_id`` and ``seq``
(edge/schemas/alert.schema.json). One row per raise/clear cycle, as for the dashboard's alerts: ``source`` is
``'device'``, ``detail`` ``{"text": <the device's detail>, "face_id", "source": "device"}``, ``dkey`` the raise's
dedupe key (``store.Message.dkey``). A ``cleared`` message names in ``since`` when its alert was raised, which is
the raised row's ``ts``.
"""

from __future__ import annotations

import json
from typing import Callable

_NEAR_S = 0.01  # payload times are rounded to 1 ms: a match within 10 ms is the same instant


def record(cur, sql: Callable[[str], str], device: str, ts: float, dkey: str, payload: dict) -> bool:
    """Store one device alert message inside the caller's transaction: ``raised`` adds a row (a redelivery
    conflicts on its key), ``cleared`` closes the row raised at its ``since``, or adds the cycle as cleared when
    that raise was not stored (yet: a raise that comes later completes that row); a redelivered clear finds its
    cycle cleared. Returns False for a duplicate or a message without kind, state or since."""
    kind, state, since = str(payload.get("kind", "")), payload.get("state"), _number(payload.get("since"))
    if not kind or state not in ("raised", "cleared") or since is None:
        return False
    face = payload.get("face_id")
    detail = json.dumps({"text": str(payload.get("detail", "")), "face_id": face if isinstance(face, int) else None,
                         "source": "device"})
    if state == "cleared":
        cycle = "device = ? AND kind = ? AND source = 'device' AND ts BETWEEN ? AND ?"
        near = (device, kind, since - _NEAR_S, since + _NEAR_S)
        cur.execute(sql(f"SELECT 1 FROM alerts WHERE {cycle} AND state = 'cleared' AND cleared_ts BETWEEN ? AND ?"),
                    (*near, ts - _NEAR_S, ts + _NEAR_S))
        if cur.fetchone():
            return False
        cur.execute(sql(f"UPDATE alerts SET state = 'cleared', cleared_ts = ? WHERE {cycle} AND state = 'raised' "
                        "RETURNING id"), (ts, *near))
        if cur.fetchall():
            return True
    else:  # a raise stored after its clear (two ingest workers): the clear's row becomes the whole cycle
        cur.execute(sql("UPDATE alerts SET since = ?, detail = ?, dkey = ? WHERE device = ? AND kind = ? "
                        "AND source = 'device' AND state = 'cleared' AND ts BETWEEN ? AND ? AND since = ts "
                        "AND dkey <> ? RETURNING id"), (since, detail, dkey, device, kind, ts - _NEAR_S, ts + _NEAR_S, dkey))
        if cur.fetchall():
            return True
    cur.execute(sql("INSERT INTO alerts (device, kind, state, since, ts, detail, cleared_ts, source, dkey) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'device', ?) ON CONFLICT (device, dkey) DO NOTHING"),
                (device, kind, state, since, since if state == "cleared" else ts, detail,
                 ts if state == "cleared" else None, dkey))
    return cur.rowcount > 0


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
