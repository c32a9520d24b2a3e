"""Assemble and run the dashboard process from its config: store, MQTT feeds, alert engine, web server."""

from __future__ import annotations

import logging
import signal
import threading

from dashboard.config import DashboardConfig, check_security
from dashboard.ingest import Feed
from dashboard.live import Live
from dashboard.store import open_store

log = logging.getLogger(__name__)


def build(cfg: DashboardConfig):
    """(store, feeds, live) for ``cfg``, not started. ``live`` is None for an ingest-only worker."""
    check_security(cfg)
    if cfg.share_group and not cfg.is_postgres and cfg.ingest:
        log.warning("dashboard: several ingest workers on one SQLite file contend for its single writer lock; "
                    "use --db postgresql://... for shared-subscription scale-out")
    store = open_store(cfg.db)
    feeds: list[Feed] = []
    live = None
    if cfg.web:
        live = Live(cfg, store)
        shared_ingest = cfg.ingest and bool(cfg.share_group)
        # The web process always has a plain subscription: it sees every message for alerts and live updates,
        # and the retained ones (which shared subscriptions never get).
        main = Feed(cfg, store, retained_only=not cfg.ingest or shared_ingest, listeners=[live.on_batch])
        feeds.append(main)
        live.publish = lambda topic, payload: main.publish(topic, payload)
        if shared_ingest:
            feeds.append(Feed(cfg, store, shared=True))
    elif cfg.ingest:
        feeds.append(Feed(cfg, store, shared=bool(cfg.share_group)))
    return store, feeds, live


def run_dashboard(cfg: DashboardConfig) -> int:
    store, feeds, live = build(cfg)
    for f in feeds:
        f.start()
    log.info("dashboard: db %s, %d feed(s), raw events %g days, per-minute rollups %g days",
             "postgresql" if cfg.is_postgres else cfg.db, len(feeds), cfg.raw_days, cfg.retention_days)
    try:
        if live is None:
            wait_for_signal()
        else:
            import uvicorn

            from dashboard.web import create_app

            live.start_ticker()
            app = create_app(cfg, store, live, feeds)
            log.info("dashboard: serving http://%s/", cfg.listen)
            # uvicorn stops on SIGTERM/SIGINT, then re-raises the signal to the handler it found: make that one
            # harmless, so the feeds below flush and close and the process exits 0.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *a: None)
            server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                                   access_log=False, timeout_graceful_shutdown=5))
            app.state.stopping = lambda: server.should_exit  # open event streams end, shutdown is not held
            server.run()
    finally:
        if live is not None:
            live.stop()
        for f in feeds:
            f.stop()
        for f in feeds:
            log.info("dashboard feed %s: received %d, stored %d, duplicates %d", f.filter, f.received, f.stored,
                     f.duplicates)
        store.close()
    return 0


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT (ingest-only workers)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    stop.wait()
