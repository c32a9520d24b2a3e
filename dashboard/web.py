"""The dashboard's HTTP side (FastAPI): the single-page app, the JSON API, CSV export and live events (SSE).

API (all JSON unless noted; times are unix seconds):

* ``GET /healthz``: ``{"ok", "db", "db_ok", "mqtt_connected", "mqtt", "received", "stored", "duplicates"}``; 503
  while the database fails or MQTT has been down for more than ``DOWN_AFTER_S`` (``mqtt``: ``up``,
  ``down_since``, ``down_s``, ``cause``, ``error``, ``deaf``)
* ``GET /api/devices``: every device: ``device``, ``status`` (online/offline), ``last_seen``, ``stale``,
  ``fps``, ``backend``, ``outbox_depth``, ``cpu_temp_c``, ``faces``
* ``GET /api/devices/<id>``: that device (as above, with ``role`` and ``alerts_apply``); every
  ``/api/devices/<id>/...`` route answers 404 for a device that never published
* ``GET /api/devices/<id>/expressions?since=&until=&limit=``: stored expression events, oldest first (raw tier)
* ``GET /api/devices/<id>/minutes?since=&until=&limit=``: per-minute rollups, oldest first (with ``attention``)
* ``GET /api/devices/<id>/attention?since=&until=&limit=``: stored attention messages, oldest first (raw tier);
  ``GET /api/devices/<id>/attention/events?since=&until=&limit=``: their events (blink, long_closure, yawn,
  off_road), newest first
* ``GET /api/classroom?devices=a,b&since=&until=`` (or ``window=<s>``): faces, expression mix, engagement
  index per point, ``tier`` (``raw`` or ``minutes``, see ``queries.tier_for``); ``GET /api/classroom.csv`` the
  same as CSV (header ``X-Fer-Tier``)
* ``GET /api/devices/<id>/driver``: the device, current faces and attention (none while offline or stale),
  alerts grouped per kind (count, unacknowledged, active, the last ``ALERT_HISTORY``; ``source``: ``device``
  for the device's drowsy/distracted/yawning), thresholds
* ``POST /api/devices/<id>/alerts/<kind>/ack``: acknowledge that kind's open alerts
* ``GET /api/alerts?device=&active=1``, ``POST /api/alerts/<id>/ack``
* ``GET /api/groups``, ``GET /api/config``, ``GET /api/activity?window=`` (messages per 2 s, live feed)
* ``GET /api/stream?devices=&kinds=``: server-sent events, each ``data:`` a JSON list of events
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from dashboard import queries
from dashboard.auth import COOKIE, Authenticator
from dashboard.broker_link import DOWN_AFTER_S
from dashboard.config import DashboardConfig
from dashboard.live import Live
from dashboard.store import Store

STATIC = Path(__file__).resolve().parent / "static"
ALERT_HISTORY = 10  # raise/clear cycles listed per alert kind on the driver page
_OPEN = ("/healthz",)


def _csv_set(text: str | None) -> set[str]:
    return {x for x in (text or "").split(",") if x}


def _window(since: float | None, until: float | None, window: float | None) -> tuple[float, float]:
    until = until if until is not None else time.time()
    if since is None:
        since = until - (window if window else 3600.0)
    if since > until:
        raise HTTPException(400, "since must be before until")
    return since, until


def create_app(cfg: DashboardConfig, store: Store, live: Live, feeds: list | None = None) -> FastAPI:
    """The web app over ``store`` (reads) and ``live`` (alerts, event ring); ``feeds`` for /healthz counters."""
    app = FastAPI(title="fer-edge dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    auth = Authenticator(cfg.auth)
    feeds = feeds or []
    app.state.stopping = lambda: False  # the server replaces it: open event streams end on shutdown

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        path = request.url.path
        if not auth.enabled or path in _OPEN:
            return await call_next(request)
        token = request.query_params.get("token")
        if path == "/" and token and auth.check_token(token):
            resp = Response(status_code=303, headers={"Location": "/"})
            resp.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return resp
        user = auth.user(request.headers.get("authorization"), request.cookies.get(COOKIE))
        if user is None:
            return PlainTextResponse("authentication required", 401, headers={"WWW-Authenticate": auth.challenge})
        request.state.user = user
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz")
    def healthz():
        """503 while the database does not answer, or while a feed has been off the broker for more than
        ``DOWN_AFTER_S`` (the dashboard cannot hear the fleet); ``mqtt`` says since when and why."""
        db_ok = True
        try:
            store.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - report, don't raise
            db_ok = False
        now = time.time()
        links = [f.link.state(now) for f in feeds]
        worst = max(links, key=lambda s: s["down_s"], default=None)
        deaf = worst is not None and worst["down_s"] > DOWN_AFTER_S
        ok = db_ok and not deaf
        return JSONResponse({
            "ok": ok, "db": "postgresql" if store.postgres else "sqlite", "db_ok": db_ok,
            "mqtt_connected": all(s["up"] for s in links) if links else None,
            "mqtt": {**worst, "deaf": deaf} if worst else None,
            "received": sum(f.received for f in feeds), "stored": sum(f.stored for f in feeds),
            "duplicates": sum(f.duplicates for f in feeds),
        }, status_code=200 if ok else 503)

    @app.get("/api/config")
    def config():
        a = cfg.alerts
        return {"stale_s": cfg.stale_s, "retention_days": cfg.retention_days, "raw_days": cfg.raw_days,
                "formula": queries.ENGAGEMENT_FORMULA,
                "labels": list(queries.LABELS), "groups": cfg.groups,
                "alerts": {"negative_s": a.negative_s, "no_face_s": a.no_face_s, "negative": a.negative,
                           "face_timeout_s": a.face_timeout_s}}

    @app.get("/api/groups")
    def groups():
        return cfg.groups

    @app.get("/api/devices")
    def devices():
        return queries.devices(store, cfg.stale_s)

    def known(device: str) -> dict:
        """The device's row, or 404: an unknown id must not look like a quiet device (200 ``[]``)."""
        found = queries.device(store, device, cfg.stale_s)
        if found is None:
            raise HTTPException(404, f"no device {device!r}: it has not published within the retention "
                                     f"({cfg.retention_days:g} days); GET /api/devices lists the known ones")
        return found

    @app.get("/api/devices/{device}")
    def device_info(device: str):
        return {**known(device), "alerts_apply": live.engine.watches(device)}

    @app.get("/api/activity")
    def activity(window: float = 120.0):
        """Messages received per 2 s over the last ``window`` s (this process's live feed)."""
        return live.activity(max(2.0, min(window, 1200.0)))

    @app.get("/api/workers")
    def workers():
        return queries.workers(store)

    @app.get("/api/devices/{device}/expressions")
    def expressions(device: str, since: float | None = None, until: float | None = None, limit: int = 1000):
        known(device)
        return queries.expressions(store, device, since, until, max(1, min(limit, 100000)))

    @app.get("/api/devices/{device}/minutes")
    def minutes(device: str, since: float | None = None, until: float | None = None, limit: int = 1440):
        known(device)
        return queries.minutes(store, device, since, until, max(1, min(limit, 100000)))

    @app.get("/api/devices/{device}/attention")
    def attention(device: str, since: float | None = None, until: float | None = None, limit: int = 1000):
        known(device)
        return queries.attention(store, device, since, until, max(1, min(limit, 100000)))

    @app.get("/api/devices/{device}/attention/events")
    def attention_events(device: str, since: float | None = None, until: float | None = None, limit: int = 200):
        known(device)
        return queries.attention_events(store, device, since, until, max(1, min(limit, 10000)))

    def _classroom(devices: str, since, until, window):
        ids = sorted(_csv_set(devices))
        if not ids:
            raise HTTPException(400, "devices=<id>[,<id>...] is required")
        ids = sorted({d for x in ids for d in cfg.groups.get(x, [x])})
        s, u = _window(since, until, window)
        return queries.classroom(store, ids, s, u, raw_since=time.time() - cfg.raw_days * 86400.0)

    @app.get("/api/classroom")
    def classroom(devices: str = "", since: float | None = None, until: float | None = None,
                  window: float | None = None):
        return _classroom(devices, since, until, window)

    @app.get("/api/classroom.csv")
    def classroom_csv(devices: str = "", since: float | None = None, until: float | None = None,
                      window: float | None = None):
        data = _classroom(devices, since, until, window)
        name = "classroom-" + re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(data["devices"]))[:60] + ".csv"
        return PlainTextResponse(queries.classroom_csv(data), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"',
                                          "X-Fer-Tier": data["tier"]})

    @app.get("/api/devices/{device}/driver")
    def driver(device: str):
        """The driver page: faces only while the device is online and not stale (never an old expression that
        looks current), alerts grouped per kind with a bounded history."""
        info = known(device)
        hearing = info["status"] != "offline" and not info["stale"]
        latest = queries.attention(store, device, time.time() - cfg.alerts.face_timeout_s, limit=1) if hearing else []
        return {"device": device, "info": {**info, "alerts_apply": live.engine.watches(device)},
                "faces": queries.latest_faces(store, device, cfg.alerts.face_timeout_s) if hearing else [],
                "attention": latest[-1] if latest else None,
                "alert_groups": queries.alert_groups(store, device, history=ALERT_HISTORY),
                "thresholds": {"negative_s": cfg.alerts.negative_s, "no_face_s": cfg.alerts.no_face_s,
                               "negative": cfg.alerts.negative}}

    @app.post("/api/devices/{device}/alerts/{kind}/ack")
    def ack_kind(device: str, kind: str, request: Request):
        """Acknowledge every open ``kind`` alert of ``device`` at once (the grouped row's button)."""
        known(device)
        ids = store.ack_alerts(device, kind, getattr(request.state, "user", ""))
        live._push([{"type": "ack", "device": device, "id": i} for i in ids])  # noqa: SLF001 - the live channel
        return {"device": device, "kind": kind, "acked": ids}

    @app.get("/api/alerts")
    def alerts(device: str | None = None, active: bool = False, limit: int = 200):
        return queries.alerts(store, device, active, max(1, min(limit, 10000)))

    @app.post("/api/alerts/{alert_id}/ack")
    def ack(alert_id: int, request: Request):
        if not store.ack_alert(alert_id, getattr(request.state, "user", "")):
            raise HTTPException(404, f"no alert {alert_id}")
        live._push([{"type": "ack", "id": alert_id}])  # noqa: SLF001 - the ring is the live channel
        return {"id": alert_id, "acked": True}

    @app.get("/api/stream")
    async def stream(request: Request, devices: str = "", kinds: str = ""):
        want_devices, want_kinds = _csv_set(devices), _csv_set(kinds)

        async def events():
            n = live.last
            idle = 0.0
            yield "retry: 2000\n\n"
            try:
                while not app.state.stopping() and not await request.is_disconnected():
                    n, items = live.since(n, want_devices or None, want_kinds or None)
                    if items:
                        idle = 0.0
                        yield f"data: {json.dumps(items, separators=(',', ':'))}\n\n"
                    else:
                        idle += 0.25
                        if idle >= 15:
                            idle = 0.0
                            yield ": keepalive\n\n"
                    await asyncio.sleep(0.25)
            except asyncio.CancelledError:  # the server is shutting down: end the stream quietly
                return

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app
