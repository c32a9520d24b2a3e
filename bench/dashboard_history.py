"""``fer-edge bench dashboard``'s storage-tier part: days of one fleet's history through the dashboard's store.

A month of traffic cannot be published in real time, so the simulated fleet's messages (``bench.fleet``, with
attention messages every 20 s and attention blocks in the summaries, so every rollup column is filled;
stamped with their scheduled time) go through ``Store.write`` in batches of 1000, the path the MQTT ingest
writes (raw rows and their per-minute rollups in one transaction), ending now. After each simulated day the
store prunes as the running dashboard does (raw rows older than ``raw_days``). Measured per backend:

* raw MB per device-day: the database's growth over the first day (raw rows and rollups, nothing pruned);
* the upgrade of a schema-1 database, per device-day: after the first day the rollups and the schema record
  are dropped, ``Store.init`` and ``Store.backfill_step`` rebuild them from the raw rows, as the first start
  after an upgrade does next to the ingest (the rebuilt rollups are checked against those the ingest built);
* kept MB per device-day after the raw window: every raw row pruned (as ``raw_days`` after the last day),
  the database compacted (SQLite ``VACUUM``, PostgreSQL ``VACUUM FULL``), its growth over the empty
  database divided by the device-days: what each device-day costs for the rest of the retention (PostgreSQL:
  its tables and indexes, ``data_bytes``);
* the classroom view over the whole history for one device (``GET /api/classroom`` and ``.csv`` of a real
  ``fer-edge dashboard --no-ingest`` process on that database, before the final prune): median and max of 5.
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from pathlib import Path

from bench.common import progress
from bench.fleet import Fleet

DAY = 86400.0
_BATCH = 1000


def _write_days(store, fleet: Fleet, start: float, days: float, raw_days: float, retention_days: float,
                empty: int) -> dict:
    """Write ``days`` of the fleet's traffic from ``start``; prune after each day. Returns counts and the growth
    over ``empty`` bytes after the first day."""
    from dashboard.store import Message
    from edge import payloads

    written, first_day_bytes, t_write, upgrade_s, upgrade_same = 0, None, 0.0, None, None
    for day in progress(range(int(-(-days // 1))), desc="history days", unit="day"):
        begin = start + day * DAY
        span = min(DAY, start + days * DAY - begin)
        batch: list = []
        t = time.perf_counter()
        for at, d, kind, f in fleet.events(begin, span):
            p = fleet.payload(d, kind, f, at)
            batch.append(Message(fleet.names[d], kind, p, payloads.encode(p), received=at + 0.05))
            if len(batch) >= _BATCH:
                store.write(batch)
                written, batch = written + len(batch), []
        if batch:
            store.write(batch)
            written += len(batch)
        t_write += time.perf_counter() - t
        if day == 0:
            store.checkpoint()
            first_day_bytes = data_bytes(store) - empty
            upgrade_s, upgrade_same = _time_upgrade(store)
        store.prune(retention_days, begin + span, raw_days)
    return {"messages": written, "write_s": t_write, "first_day_bytes": first_day_bytes, "upgrade_s": upgrade_s,
            "upgrade_same": upgrade_same}


def _time_upgrade(store) -> tuple[float, bool]:
    """Seconds to upgrade ``store``'s database as if schema 1 had written it (no rollups, no schema record),
    and whether the rebuilt rollups equal the ones the ingest built."""
    totals = ("SELECT COUNT(*), SUM(events), SUM(n_happy), SUM(scored), SUM(obs), SUM(obs_sad), SUM(faces_sum), "
              "SUM(counted), SUM(att_obs), SUM(look_obs), SUM(att_msgs), SUM(blinks), SUM(yawns), SUM(off_road), "
              "SUM(att_faces_max) FROM minutes")
    before = store.execute(totals)
    store.execute("DROP TABLE minutes")
    store.execute("DELETE FROM meta")
    t = time.perf_counter()
    store.init()  # schedules the rollups of the stored rows; the ingest then takes steps until none is left
    while store.backfill_step():
        pass
    took = time.perf_counter() - t
    return took, store.execute(totals) == before


def _timed_get(url: str, runs: int = 5) -> tuple[list[float], bytes]:
    took, body = [], b""
    for _ in range(runs):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            body = r.read()
        took.append(time.perf_counter() - t)
    return took, body


def data_bytes(store) -> int:
    """What the dashboard's data takes: the SQLite file (with its WAL), or in PostgreSQL the tables of the
    database's public schema with their indexes and TOAST. Not ``pg_database_size``: VACUUM FULL moves its
    system catalogs by 100-250 KB either way from one run to the next (measured), which outweighed the rollups of
    a short history (``tests/test_dashboard_bench.py`` read -0.5 to -1.3 MB per device-day for 0.05 days)."""
    if not store.postgres:
        return store.size_bytes()
    return int(store.execute("SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN "
                             "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'")[0][0])


def _compact(store) -> None:
    """Give the pruned rows' space back (``size_bytes`` then measures what is kept, not free pages)."""
    if store.postgres:
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as c:  # VACUUM cannot run inside a transaction
            c.execute("VACUUM FULL")
    else:
        store.conn().execute("VACUUM")
        store.checkpoint()


def run_history(backend: str, broker, pg, work: Path, days: float = 30.0, devices: int = 1, raw_days: float = 7.0,
                retention_days: float = 365.0, seed: int = 0) -> dict:
    """One backend: write ``days`` of ``devices`` ending now, time the classroom view over them, measure the
    storage per device-day once the raw window has passed."""
    import json

    from bench.servers import dashboard_process, free_port, wait_for
    from dashboard.store import open_store

    db = pg.create_database() if backend == "postgresql" else str(work / f"history-{backend}.sqlite")
    for old in work.glob(f"history-{backend}.sqlite*"):
        old.unlink()
    store = open_store(db)
    _compact(store)  # the baseline compacted as the end will be (a new PostgreSQL database shrinks too)
    empty = data_bytes(store)
    # the fleet's mean faces, 4.5; attention messages and summary blocks, so every rollup column holds a value
    fleet = Fleet(devices, seed, name="hist", faces=[4 + d % 2 for d in range(devices)], attention=True)
    end = time.time()
    start = end - days * DAY
    w = _write_days(store, fleet, start, days, raw_days, retention_days, empty)
    minutes = store.execute("SELECT COUNT(*) FROM minutes")[0][0]
    store.checkpoint()
    month_bytes = data_bytes(store) - empty
    port = free_port()
    log_path = work / f"history-{backend}-web.log"
    proc = dashboard_process(["--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
                              "--mqtt-prefix", f"hist-{backend}", "--db", db, "--no-ingest",
                              "--listen", f"127.0.0.1:{port}", "--raw-days", str(raw_days),
                              "--retention-days", str(retention_days)], log_path)
    try:
        wait_for(lambda: "serving http" in log_path.read_text(), 60, "the history's dashboard serving")
        query = f"devices={fleet.names[0]}&since={start:.0f}&until={end:.0f}"
        api_s, body = _timed_get(f"http://127.0.0.1:{port}/api/classroom?{query}")
        view = json.loads(body)
        csv_s, _ = _timed_get(f"http://127.0.0.1:{port}/api/classroom.csv?{query}")
    finally:
        proc.terminate()
        proc.wait(30)
    store.prune(retention_days, end + raw_days * DAY + 1, raw_days)  # the raw window has passed: rollups only
    raw_left = sum(store.execute(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("expressions", "summaries", "stats",
                                                                               "attention"))
    _compact(store)
    kept = data_bytes(store) - empty
    store.close()
    device_days = devices * days
    return {
        "backend": backend, "devices": devices, "days": days, "raw_days": raw_days, "messages": w["messages"],
        "msgs_per_device_s": round(w["messages"] / (device_days * DAY), 3),
        "write_msgs_per_s": round(w["messages"] / w["write_s"], 0),
        "raw_mb_per_device_day": round(w["first_day_bytes"] / min(days, 1.0) / devices / 1e6, 2),
        "upgrade_s_per_device_day": round(w["upgrade_s"] / min(days, 1.0) / devices, 2),
        "upgrade_rollups_equal": w["upgrade_same"],
        "db_mb_at_end": round(month_bytes / 1e6, 1),
        "minute_rows_per_device_day": round(minutes / device_days, 0),
        "raw_rows_left": raw_left,
        "kept_mb_per_device_day": round(kept / device_days / 1e6, 3),
        "classroom_tier": view.get("tier"), "classroom_points": len(view.get("points", [])),
        "classroom_ms_median": round(statistics.median(api_s) * 1000, 1),
        "classroom_ms_max": round(max(api_s) * 1000, 1),
        "csv_ms_median": round(statistics.median(csv_s) * 1000, 1),
    }
