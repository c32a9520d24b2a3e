"""Read side of the store: what the JSON API and the CSV export return.

Engagement index (shown on the classroom page): over the face observations of a window (one face in one
frame, as counted by the device's ``summary``), ``E = 100 * (happy + surprise + 0.5 * neutral) / N``, N all
observations. 0 = every face negative (angry, disgust, fear, sad), 100 = every face happy or surprised.
It is a proxy for how a room reacts, not a measure of attention.

Devices that infer no emotions (``[model] emotions = false``, the classroom role's default: the EU AI Act
forbids emotion inference in schools) send summaries without ``counts``: the classroom series then says
``emotions: false`` and carries presence (faces) and the attention share (the summaries' ``attention``
block: faces whose landmarks were read, the share of observations looking toward the front) only.

Tiers: the classroom view and its CSV read the raw summaries when the window starts inside the raw window
(``raw_since``) and spans at most ``max_points`` minutes (6 h 40 min: up to there a point can be finer than a
minute); otherwise the per-minute rollups (``dashboard.rollups``), bucketed into whole minutes in SQL.
"""

from __future__ import annotations

import json
import time

from dashboard import rollups
from dashboard.rollups import LABELS
from dashboard.store import Store

MINUTE = int(rollups.MINUTE)
ENGAGEMENT_FORMULA = "E = 100 × (happy + surprise + 0.5 × neutral) / N   (N = all face observations in the window)"
ENGAGEMENT_WEIGHTS = {"happy": 1.0, "surprise": 1.0, "neutral": 0.5}


def engagement(counts: dict[str, int]) -> float | None:
    n = sum(v for v in counts.values() if isinstance(v, (int, float)))
    if n <= 0:
        return None
    return round(100.0 * sum(ENGAGEMENT_WEIGHTS.get(k, 0.0) * v for k, v in counts.items()) / n, 1)


ROLES = ("general", "driver", "classroom")


def role_of(stats: dict | None) -> str:
    """The role a device states in its ``stats`` (``general``, ``driver``, ``classroom``); ``general`` when it
    states none or one this dashboard does not know."""
    role = (stats or {}).get("role")
    return role if role in ROLES else "general"


def devices(store: Store, stale_s: float, now: float | None = None, device: str | None = None) -> list[dict]:
    """Every device (or only ``device``): status, last_seen, role and the health fields of its latest stats."""
    now = now or time.time()
    out = []
    sql = "SELECT device, status, status_ts, last_seen, stats, stats_ts FROM devices"
    rows = store.execute(sql + " WHERE device = ?", (device,)) if device is not None else \
        store.execute(sql + " ORDER BY device")
    for device, status, status_ts, last_seen, stats, stats_ts in rows:
        s = json.loads(stats) if stats else {}
        seen = max(x for x in (last_seen, status_ts if status == "online" else None, 0.0) if x is not None)
        status = status if status in ("online", "offline") else "unknown"
        out.append({
            "device": device,
            "status": status,
            "last_seen": last_seen,
            "status_since": status_ts,
            "stale": status == "online" and (now - seen) > stale_s,
            "role": role_of(s),
            "fps": s.get("fps"),
            "backend": s.get("backend"),
            "outbox_depth": (s.get("outbox") or {}).get("depth"),
            "cpu_temp_c": s.get("cpu_temp_c"),
            "faces": s.get("faces"),
            "uptime_s": s.get("uptime_s"),
            "stats_ts": stats_ts,
        })
    return out


def device(store: Store, device_id: str, stale_s: float, now: float | None = None) -> dict | None:
    """One device as in ``devices``; None when it never published (or its rows aged out)."""
    found = devices(store, stale_s, now, device=device_id)
    return found[0] if found else None


def expressions(store: Store, device: str, since: float | None = None, until: float | None = None,
                limit: int = 1000) -> list[dict]:
    """Stored expression events of one device, oldest first (the latest ``limit`` of the window)."""
    rows = store.execute(
        "SELECT ts, seq, face_id, expression, confidence, payload FROM expressions WHERE device = ? AND ts >= ? "
        "AND ts <= ? ORDER BY ts DESC, id DESC LIMIT ?", (device, since or 0.0, until or 1e12, int(limit)))
    out = []
    for ts, seq, face_id, expression, confidence, payload in reversed(rows):
        p = json.loads(payload) if payload else {}
        out.append({"device": device, "ts": ts, "seq": seq, "face_id": face_id, "expression": expression,
                    "confidence": confidence, "scores": p.get("scores"), "box": p.get("box")})
    return out


def tier_for(since: float, until: float, raw_since: float | None, max_points: int = 400) -> str:
    """``"raw"`` when the raw summaries hold the window and a point could be finer than a minute, else
    ``"minutes"`` (``raw_since``: the oldest time the raw tier still holds; None: raw is kept for ever)."""
    inside = raw_since is None or since >= raw_since
    return "raw" if inside and until - since <= max_points * MINUTE else "minutes"


def classroom(store: Store, devices_: list[str], since: float, until: float, max_points: int = 400,
              raw_since: float | None = None, tier: str | None = None) -> dict:
    """Faces present, the expression mix (shares per label) and the engagement index over time; with landmarks,
    the faces read and the share of them looking toward the front (``faces_read``, ``looking_share``).

    ``emotions``: False when no summary of the window carried expression counts (devices with
    ``[model] emotions = false``): then no point has ``counts``, ``shares``, ``observations`` or
    ``engagement``, and the answer no ``labels``, ``formula`` or ``engagement``; None without summaries.

    Raw tier: one point per stored ``summary`` (per device window); with several devices (a group), or more
    summaries than ``max_points``, summaries are merged into time buckets so the curve stays one line.
    Minutes tier: the rollups merged into buckets of whole minutes (at most ``max_points``). ``tier`` forces
    one; None picks it with ``tier_for``. Faces of a merged point: each device's most, summed over devices.
    """
    tier = tier or tier_for(since, until, raw_since, max_points)
    head = {"devices": devices_, "since": since, "until": until, "labels": list(LABELS), "tier": tier,
            "formula": ENGAGEMENT_FORMULA}
    if not devices_:
        return {**head, "points": [], "engagement": None, "resolution_s": None, "emotions": None,
                "looking_share": None}
    if tier == "raw":
        points, resolution = _raw_points(store, devices_, since, until, max_points)
    else:
        points, resolution = _minute_points(store, devices_, since, until, max_points)
    summaries = sum(pt.pop("summaries") for pt in points)
    counted = sum(pt.pop("counted") for pt in points)
    # None: no summary in the window; False: none of them carried expression counts (no emotions inferred)
    emotions = None if not summaries else counted > 0
    look_obs_all = look_sum_all = 0.0
    for pt in points:
        n = sum(pt["counts"].values())
        pt["faces"] = sum(pt.pop("faces_by_device").values())
        pt["faces_read"] = sum(pt.pop("read_by_device").values())
        look_obs, look_sum = pt.pop("look")
        look_obs_all, look_sum_all = look_obs_all + look_obs, look_sum_all + look_sum
        pt["looking_share"] = round(look_sum / look_obs, 4) if look_obs else None
        if emotions is False:  # no expression field at all, not empty ones
            del pt["counts"]
            continue
        pt["observations"] = n
        pt["shares"] = {k: (round(v / n, 4) if n else 0.0) for k, v in pt["counts"].items()}
        pt["engagement"] = engagement(pt["counts"])
    total: dict[str, int] = {}
    for p in points:
        for label, n in p.get("counts", {}).items():
            total[label] = total.get(label, 0) + n
    out = {**head, "points": points, "emotions": emotions, "resolution_s": resolution,
           "looking_share": round(look_sum_all / look_obs_all, 4) if look_obs_all else None}
    if emotions is False:
        del out["labels"], out["formula"]
        return out
    return {**out, "engagement": engagement(total)}


def _raw_points(store: Store, devices_: list[str], since: float, until: float, max_points: int):
    marks = ", ".join("?" * len(devices_))
    rows = store.execute(f"SELECT device, ts, faces, payload FROM summaries WHERE device IN ({marks}) AND ts >= ? "
                         f"AND ts <= ? ORDER BY ts", (*devices_, since, until))
    span = max(until - since, 1.0)
    bucket = span / max_points if len(rows) > max_points or len(devices_) > 1 else 0.0
    points: list[dict] = []
    for device, ts, faces, payload in rows:
        p = json.loads(payload) or {}
        counts = p.get("counts")
        att = p.get("attention") if isinstance(p.get("attention"), dict) else {}
        key = ts if not bucket else since + bucket * int((ts - since) // bucket)
        if points and points[-1]["ts"] == key:
            pt = points[-1]
            pt["faces_by_device"][device] = max(pt["faces_by_device"].get(device, 0), faces or 0)
        else:
            pt = _point(key)
            pt["faces_by_device"][device] = faces or 0
            points.append(pt)
        pt["summaries"] += 1
        pt["counted"] += isinstance(counts, dict)
        pt["read_by_device"][device] = max(pt["read_by_device"].get(device, 0), int(att.get("faces") or 0))
        if isinstance(att.get("looking_share"), (int, float)) and att.get("observations"):
            pt["look"][0] += att["observations"]
            pt["look"][1] += att["looking_share"] * att["observations"]
        for label, n in (counts or {}).items():
            if isinstance(n, (int, float)):
                pt["counts"][label] = pt["counts"].get(label, 0) + int(n)
    return points, (bucket or None)


def _point(ts: float) -> dict:
    """An empty classroom point being merged (``look``: observations with a learnt pose, looking ones)."""
    return {"ts": ts, "counts": {label: 0 for label in LABELS}, "faces_by_device": {}, "read_by_device": {},
            "summaries": 0, "counted": 0, "look": [0.0, 0.0]}


def _minute_points(store: Store, devices_: list[str], since: float, until: float, max_points: int):
    origin = int(since // MINUTE) * MINUTE  # integral, so integer division buckets in SQLite and PostgreSQL alike
    width = MINUTE * max(1, -(-int(max(until - origin, 1.0)) // (MINUTE * max_points)))
    marks = ", ".join("?" * len(devices_))
    obs = ", ".join(f"SUM(obs_{x})" for x in LABELS)
    rows = store.execute(
        f"SELECT (CAST(ts AS BIGINT) - ?) / ? AS b, device, SUM(summaries), SUM(counted), MAX(att_faces_max), "
        f"SUM(look_obs), SUM(look_sum), MAX(faces_max), SUM(obs), {obs} FROM minutes "
        f"WHERE device IN ({marks}) AND ts >= ? AND ts <= ? AND summaries > 0 GROUP BY b, device ORDER BY b, device",
        (origin, width, *devices_, float(origin), until))
    points: list[dict] = []
    for b, device, summaries, counted, read, look_obs, look_sum, faces, n_obs, *per_label in rows:
        key = float(origin + int(b) * width)
        if not points or points[-1]["ts"] != key:
            points.append(_point(key))
        pt = points[-1]
        pt["summaries"] += int(summaries or 0)
        pt["counted"] += int(counted or 0)
        pt["read_by_device"][device] = int(read or 0)
        pt["look"][0] += float(look_obs or 0)
        pt["look"][1] += float(look_sum or 0)
        pt["faces_by_device"][device] = int(faces or 0)
        for label, n in zip(LABELS, per_label):
            pt["counts"][label] += int(n or 0)
        other = int(n_obs or 0) - sum(int(n or 0) for n in per_label)  # labels this dashboard does not know
        if other > 0:
            pt["counts"]["other"] = pt["counts"].get("other", 0) + other
    return points, float(width)


def minutes(store: Store, device: str, since: float | None = None, until: float | None = None,
            limit: int = 1440) -> list[dict]:
    """The per-minute rollups of one device, oldest first (the latest ``limit`` of the window): expression
    events per label and their mean scores, summaries' face observations per label, faces, alerts, and the
    ``attention`` of the minute (None when the device sent no attention figures in it)."""
    cols = ", ".join(rollups.COLUMNS)
    rows = store.execute(f"SELECT ts, {cols} FROM minutes WHERE device = ? AND ts >= ? AND ts <= ? "
                         "ORDER BY ts DESC LIMIT ?", (device, since or 0.0, until or 1e12, int(limit)))
    out = []
    for ts, *vals in reversed(rows):
        v = dict(zip(rollups.COLUMNS, vals))
        scored, summaries = v["scored"], v["summaries"]
        out.append({
            "device": device, "ts": ts, "events": v["events"],
            "expressions": {x: v[f"n_{x}"] for x in LABELS},
            "mean_scores": {x: (round(v[f"score_{x}"] / scored, 4) if scored else None) for x in LABELS},
            "summaries": summaries, "faces_max": v["faces_max"],
            "faces_mean": round(v["faces_sum"] / summaries, 2) if summaries else None,
            "observations": v["obs"], "counts": {x: v[f"obs_{x}"] for x in LABELS}, "alerts": v["alerts"],
            "emotion_summaries": v["counted"], "attention": _minute_attention(v),
        })
    return out


def _minute_attention(v: dict) -> dict | None:
    """The attention figures of one rollup row (``minutes``)."""
    if not v["att_msgs"] and not v["att_obs"]:
        return None
    n = v["att_msgs"]
    return {"messages": n, "perclos_max": round(v["perclos_max"], 4) if n else None,
            "perclos_mean": round(v["perclos_sum"] / n, 4) if n else None,
            "blinks": v["blinks"], "long_closures": v["long_closures"], "yawns": v["yawns"],
            "off_road_events": v["off_road"], "faces_read": v["att_faces_max"], "observations": v["att_obs"],
            "looking_share": round(v["look_sum"] / v["look_obs"], 4) if v["look_obs"] else None}


def attention(store: Store, device: str, since: float | None = None, until: float | None = None,
              limit: int = 1000, events_only: bool = False) -> list[dict]:
    """Stored attention messages of one device, oldest first (the latest ``limit`` of the window; raw tier);
    ``events_only``: only those reporting events (blink, long_closure, yawn, off_road)."""
    rows = store.execute(
        "SELECT ts, seq, face_id, perclos, payload FROM attention WHERE device = ? AND ts >= ? AND ts <= ?"
        + (" AND n_events > 0" if events_only else "") + " ORDER BY ts DESC, id DESC LIMIT ?",
        (device, since or 0.0, until or 1e12, int(limit)))
    return [{"device": device, "ts": ts, "seq": seq, "face_id": face_id, "perclos": perclos,
             **(json.loads(payload) if payload else {})} for ts, seq, face_id, perclos, payload in reversed(rows)]


def attention_events(store: Store, device: str, since: float | None = None, until: float | None = None,
                     limit: int = 200) -> list[dict]:
    """The events (blink, long_closure, yawn, off_road) of one device's stored attention messages, newest first:
    ``{type, start, duration, face_id, ts}`` (``ts``: the message that reported it)."""
    out = [{**e, "face_id": a["face_id"], "ts": a["ts"]}
           for a in attention(store, device, since, until, limit, events_only=True) for e in a.get("events") or []]
    return sorted(out, key=lambda e: -e["start"])[:limit]


def classroom_csv(data: dict) -> str:
    """The classroom series as CSV: one row per point (without expression columns when ``emotions`` is False)."""
    labels = data.get("labels") if data.get("emotions") is not False else None
    head = "ts_iso,ts,faces,"
    head += "observations,engagement," + ",".join(f"share_{x}" for x in labels) + "," if labels else ""
    lines = [head + "faces_read,looking_share"]
    for p in data["points"]:
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p["ts"]))
        row = f"{iso},{p['ts']:.3f},{p['faces']},"
        if labels:
            eng = "" if p["engagement"] is None else p["engagement"]
            row += f"{p['observations']},{eng}," + ",".join(str(p["shares"][x]) for x in labels) + ","
        share = "" if p["looking_share"] is None else p["looking_share"]
        lines.append(row + f"{p['faces_read']},{share}")
    return "\n".join(lines) + "\n"


def _alert(r) -> dict:
    return {"id": r[0], "device": r[1], "kind": r[2], "state": r[3], "since": r[4], "ts": r[5],
            "detail": json.loads(r[6]) if r[6] else {}, "cleared_ts": r[7], "acked_ts": r[8],
            "acked_by": r[9], "acked": r[8] is not None, "source": r[10] or "dashboard"}


_ALERT_COLUMNS = "id, device, kind, state, since, ts, detail, cleared_ts, acked_ts, acked_by, source"


def alerts(store: Store, device: str | None = None, active: bool = False, limit: int = 200,
           kind: str | None = None) -> list[dict]:
    """Alerts, newest first (one row per raise/clear cycle), of one ``device``/``kind`` or all; ``active``: raised."""
    where, params = [], []
    if device:
        where.append("device = ?")
        params.append(device)
    if kind:
        where.append("kind = ?")
        params.append(kind)
    if active:
        where.append("state = 'raised'")
    sql = (f"SELECT {_ALERT_COLUMNS} FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY ts DESC, id DESC LIMIT ?")
    return [_alert(r) for r in store.execute(sql, (*params, int(limit)))]


def alert_groups(store: Store, device: str, history: int = 10) -> list[dict]:
    """One entry per alert kind of ``device``: ``count`` (raise/clear cycles kept), ``unacked``, ``first``
    (when the oldest kept began), ``active`` (the raised one or None) and the newest ``history`` cycles.
    The page stays one row per kind however often an alert flaps."""
    out = []
    for kind, count, unacked, first in store.execute(
            "SELECT kind, COUNT(*), SUM(CASE WHEN acked_ts IS NULL THEN 1 ELSE 0 END), MIN(since) FROM alerts "
            "WHERE device = ? GROUP BY kind ORDER BY kind", (device,)):
        recent = alerts(store, device, kind=kind, limit=history)
        active = next((a for a in recent if a["state"] == "raised"), None)
        out.append({"kind": kind, "source": recent[0]["source"] if recent else "dashboard",
                    "count": int(count), "unacked": int(unacked or 0), "first": first,
                    "active": active, "last": recent[0] if recent else None, "history": recent})
    return out


def latest_faces(store: Store, device: str, face_timeout_s: float, now: float | None = None) -> list[dict]:
    """Each face's latest expression event within ``face_timeout_s`` of the device's newest event; none when
    that newest event was stored longer than ``face_timeout_s`` ago (the face has left)."""
    rows = store.execute("SELECT MAX(ts), MAX(received) FROM expressions WHERE device = ?", (device,))
    newest, stored = rows[0] if rows else (None, None)
    if newest is None or (stored is not None and (now or time.time()) - stored > face_timeout_s):
        return []
    rows = store.execute("SELECT face_id, ts, expression, confidence FROM expressions WHERE device = ? AND ts >= ? "
                         "ORDER BY ts", (device, newest - face_timeout_s))
    faces: dict[int, dict] = {}
    for face_id, ts, expression, confidence in rows:
        faces[face_id] = {"face_id": face_id, "ts": ts, "expression": expression, "confidence": confidence}
    return sorted(faces.values(), key=lambda f: -f["ts"])


def workers(store: Store) -> list[dict]:
    return [{"name": r[0], "started": r[1], "beat": r[2], "received": r[3], "stored": r[4], "duplicates": r[5]}
            for r in store.execute("SELECT name, started, beat, received, stored, duplicates FROM workers ORDER BY name")]
