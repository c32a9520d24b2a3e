"""``fer-edge bench dashboard``: a simulated fleet publishing into a real mosquitto, ingested by real
``fer-edge dashboard`` processes into SQLite and PostgreSQL, with one and with two ingest workers; then the
storage tiers over days of history (``bench.dashboard_history``).

The fleet (``bench.fleet``; per device, defaults from the daemon's config): 1-8 faces (uniform), each face an
expression event every 10 s at most and on changes (exponential gaps, mean 5 s), a summary and a stats message
every 30 s, the retained status. About 1 message/s per device: 500 devices ~ 480 msg/s.

Reported per case: ingest lag (stored - published, from the ``received`` and ``ts`` of every stored row)
p50/p95/max, messages/s ingested, DB size per device-day (growth over the run, scaled), the time to load
``/`` in headless chromium until every device is listed, and ``GET /api/devices`` time.
Each case gets a fresh database; the simulator runs in its own process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.fleet import Fleet
from bench.servers import dashboard_process, wait_for
from convert.report import markdown_table

log = logging.getLogger(__name__)


# --- the simulated fleet (runs in a worker process: python -m bench --worker dashboard_sim JSON) ----------

def simulate_worker(host: str, port: int, devices: int, duration: float, seed: int = 0, clients: int = 4,
                    prefix: str = "fer") -> dict:
    """Publish the fleet's traffic (``bench.fleet``) for ``duration`` s; returns the messages sent per kind."""
    import paho.mqtt.client as mqtt

    from edge import payloads

    fleet = Fleet(devices, seed)
    pubs = []
    for i in range(clients):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fleet-sim-{seed}-{i}")
        c.max_inflight_messages_set(1000)
        c.connect(host, port, keepalive=60)
        c.loop_start()
        pubs.append(c)
    sent = {"status": 0, "expression": 0, "summary": 0, "stats": 0}
    infos = []

    def publish(d: int, kind: str, payload) -> None:
        qos, retain = payloads.qos_retain(kind)
        infos.append(pubs[d % clients].publish(payloads.topic(prefix, fleet.names[d], kind), payloads.encode(payload),
                                               qos, retain))
        sent[kind] += 1

    for d in range(devices):
        publish(d, "status", "online")
    t0 = time.time()
    for at, d, kind, f in fleet.events(t0, duration):
        delay = at - time.time()
        if delay > 0:
            time.sleep(delay)
        publish(d, kind, fleet.payload(d, kind, f, time.time()))
    seconds = time.time() - t0
    for info in infos:
        if info.rc == 0:
            info.wait_for_publish(30)
    for c in pubs:
        c.disconnect()
        c.loop_stop()
    return {"sent": sent, "seconds": round(seconds, 2)}


# --- one case -----------------------------------------------------------------------------------

def _get(url: str) -> tuple[float, object]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        data = json.loads(r.read())
    return time.perf_counter() - t, data


def _page_load_s(url: str, devices: int) -> float | None:
    """Seconds from navigating to ``/`` until the fleet table lists every device (headless chromium)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        return None
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=args, headless=True)
        page = browser.new_page()
        t = time.perf_counter()
        page.goto(url)
        page.wait_for_function(f"document.querySelectorAll('#fleet tr[data-device]').length >= {devices}",
                               timeout=60000)
        took = time.perf_counter() - t
        browser.close()
    return took


def _lags(store) -> list[float]:
    rows = []
    for table in ("expressions", "summaries", "stats"):
        rows += [r[0] for r in store.execute(f"SELECT received - ts FROM {table}")]
    return rows


def _stored(store) -> int:
    return sum(store.execute(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("expressions", "summaries", "stats"))


def run_case(backend: str, workers: int, broker, pg, devices: int, duration: float, work: Path,
             browser: bool = True, seed: int = 0) -> dict:
    """One backend x worker-count case; returns its measurements."""
    import numpy as np

    from bench.servers import free_port
    from dashboard.store import open_store

    db = pg.create_database() if backend == "postgresql" else str(work / f"bench-{backend}-{workers}.sqlite")
    for old in work.glob(f"bench-{backend}-{workers}.sqlite*"):  # a fresh database for every run
        old.unlink()
    store = open_store(db)
    store.checkpoint()
    empty = store.size_bytes()
    port = free_port()
    prefix = f"bench-{backend}-{workers}-{seed}"  # a topic tree of its own: no retained messages of an earlier case
    common = ["--mqtt-host", broker.host, "--mqtt-port", str(broker.port), "--mqtt-prefix", prefix, "--db", db]
    procs, logs = [], []
    name = f"{backend}-{workers}w"
    if workers == 1:
        logs.append(work / f"{name}-web.log")
        procs.append(dashboard_process([*common, "--listen", f"127.0.0.1:{port}"], logs[-1]))
    else:
        for i in range(workers):
            logs.append(work / f"{name}-worker{i}.log")
            procs.append(dashboard_process([*common, "--ingest-only", "--share-group", "bench",
                                            "--worker-name", f"w{i}"], logs[-1]))
        logs.append(work / f"{name}-web.log")
        procs.append(dashboard_process([*common, "--no-ingest", "--listen", f"127.0.0.1:{port}"], logs[-1]))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: all("subscribed to" in p.read_text() for p in logs), 60, "dashboard processes subscribed")
        from bench.common import run_worker

        sim = run_worker("dashboard_sim", {"host": broker.host, "port": broker.port, "devices": devices,
                                           "duration": duration, "seed": seed, "prefix": prefix},
                         timeout=duration + 300)
        want = sim["sent"]["expression"] + sim["sent"]["summary"] + sim["sent"]["stats"]
        t_end = time.monotonic()
        wait_for(lambda: _stored(store) >= want, 300, f"all {want} messages stored")
        drain_s = time.monotonic() - t_end
        lags = np.array(_lags(store))
        api_s, listed = _get(url + "/api/devices")
        page_s = _page_load_s(url + "/", devices) if browser else None
        store.checkpoint()
        grown = store.size_bytes() - empty
        device_days = devices * sim["seconds"] / 86400.0
        return {
            "backend": backend, "workers": workers, "devices": devices, "seconds": sim["seconds"],
            "sent": sim["sent"], "stored": int(len(lags)), "lost": int(want - len(lags)),
            "msgs_per_s": round(len(lags) / sim["seconds"], 1),
            "lag_p50_ms": round(float(np.percentile(lags, 50)) * 1000, 1),
            "lag_p95_ms": round(float(np.percentile(lags, 95)) * 1000, 1),
            "lag_max_ms": round(float(lags.max()) * 1000, 1),
            "drain_s": round(drain_s, 2),
            "db_mb_per_device_day": round(grown / device_days / 1e6, 2),
            "api_devices_ms": round(api_s * 1000, 1), "api_devices_listed": len(listed),
            "page_load_ms": None if page_s is None else round(page_s * 1000, 1),
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        store.close()


def run_dashboard_bench(devices: int = 500, duration: float = 60.0, backends=("sqlite", "postgresql"),
                        workers=(1, 2), browser: bool = True, work: Path | None = None, history_days: float = 30.0,
                        history_devices: int = 1, raw_days: float = 7.0) -> dict:
    """Every backend x workers case against one broker (and one PostgreSQL cluster when needed), then per
    backend ``history_days`` of ``history_devices`` through the storage tiers (none when 0)."""
    import contextlib
    import platform

    from bench.dashboard_history import run_history
    from bench.servers import Broker, Postgres

    work = Path(work or tempfile.mkdtemp(prefix="fer-bench-dash-"))
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(Broker())
        pg = stack.enter_context(Postgres()) if "postgresql" in backends else None
        for backend in backends:
            for n in workers:
                log.info("bench dashboard: %s, %d worker(s), %d devices, %g s", backend, n, devices, duration)
                cases.append(run_case(backend, n, broker, pg, devices, duration, work, browser))
        history = []
        for backend in backends if history_days > 0 else ():
            log.info("bench dashboard: %s, %g days of history of %d device(s)", backend, history_days, history_devices)
            history.append(run_history(backend, broker, pg, work, history_days, history_devices, raw_days))
    return {"devices": devices, "duration_s": duration, "cases": cases, "history": history, "cpus": os.cpu_count(),
            "machine": platform.machine(), "logs": str(work)}


def format_dashboard(result: dict) -> str:
    """The Markdown table of a ``run_dashboard_bench`` result."""
    rows = []
    for c in result["cases"]:
        page = "n/a" if c["page_load_ms"] is None else f"{c['page_load_ms']:.0f}"
        rows.append([c["backend"], str(c["workers"]), f"{c['msgs_per_s']:.0f}", f"{c['lag_p50_ms']:.0f}",
                     f"{c['lag_p95_ms']:.0f}", f"{c['lag_max_ms']:.0f}", f"{c['stored']:,}", str(c["lost"]),
                     f"{c['db_mb_per_device_day']:.1f}", page, f"{c['api_devices_ms']:.0f}"])
    head = ["DB", "ingest workers", "msgs/s", "lag p50 ms", "lag p95 ms", "lag max ms", "stored", "lost",
            "DB MB / device-day", "page load ms", "/api/devices ms"]
    text = (f"### Dashboard ingest: {result['devices']} simulated devices, {result['duration_s']:.0f} s per case, "
            f"{result['cpus']} CPUs\n\n" + markdown_table(head, rows) + "\n\nLag: stored (batch written) minus "
            "published (payload ts); page load: `/` in headless chromium until every device is listed.\n")
    return text + format_history(result.get("history") or [])


def format_history(history: list[dict]) -> str:
    """The storage-tier table of ``run_history`` results ("" when there are none)."""
    if not history:
        return ""
    h0 = history[0]
    head = ["DB", "msgs/s per device", "raw MB / device-day", "minute rows / device-day",
            f"DB MB after {h0['days']:g} days", "kept MB / device-day after the raw window",
            f"classroom {h0['days']:g} days ms (median / max)", "CSV ms", "tier, points", "upgrade s / device-day"]
    rows = [[h["backend"], f"{h['msgs_per_device_s']:.2f}", f"{h['raw_mb_per_device_day']:.1f}",
             f"{h['minute_rows_per_device_day']:.0f}", f"{h['db_mb_at_end']:.1f}", f"{h['kept_mb_per_device_day']:.3f}",
             f"{h['classroom_ms_median']:.0f} / {h['classroom_ms_max']:.0f}", f"{h['csv_ms_median']:.0f}",
             f"{h['classroom_tier']}, {h['classroom_points']}",
             f"{h['upgrade_s_per_device_day']:.2f}" + ("" if h["upgrade_rollups_equal"] else " (rollups differ!)")]
            for h in history]
    return (f"\n### Storage tiers: {h0['days']:g} days of {h0['devices']} device(s), raw kept {h0['raw_days']:g} days\n\n"
            + markdown_table(head, rows) + "\n\nWritten through the ingest's store path (simulated time, pruned "
            "daily); raw: growth over the first day; kept: after every raw row is pruned and the database compacted; "
            "classroom: `GET /api/classroom` of one device over the whole history, a real `fer-edge dashboard`; "
            "upgrade: rollups rebuilt from the first day's raw rows, as for a schema-1 database.\n")
