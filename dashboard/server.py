"""Assemble and run the dashboard process from its config: store, MQTT feeds, alert engine, web server."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading

from dashboard.config import DashboardConfig, check_security, resolve_db
from dashboard.ingest import Feed
from dashboard.live import Live
from dashboard.store import open_store
from edge.errors import ConfigError

log = logging.getLogger(__name__)


def build(cfg: DashboardConfig):
    """(store, feeds, live) for ``cfg``, not started. ``live`` is None for an ingest-only worker."""
    check_security(cfg)
    if cfg.share_group and not cfg.is_postgres and cfg.ingest:
        log.warning("dashboard: several ingest workers on one SQLite file contend for its single writer lock; "
                    "use --db postgresql://... for shared-subscription scale-out")
    store = open_store(resolve_db(cfg))
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


def listen_socket(cfg: DashboardConfig) -> socket.socket:
    """The web server's socket, bound to ``cfg.listen`` (handed to uvicorn). A ConfigError names an address
    that is taken or not this host's, before anything else starts."""
    try:
        infos = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"dashboard.listen {cfg.listen!r}: cannot resolve {cfg.host!r} ({exc.strerror}): "
                          "give an address of this host, e.g. 127.0.0.1:8080") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart reuses its TIME_WAIT port
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"dashboard.listen {cfg.listen}: the address is already in use (another dashboard?): "
                              "stop that process or choose another --listen HOST:PORT") from None
        raise ConfigError(f"dashboard.listen {cfg.listen}: cannot listen there ({exc.strerror}): "
                          "give an address of this host and a port above 1023, e.g. 127.0.0.1:8080") from None
    # Listen now, not when uvicorn starts: a browser or health check that connects while the store opens and the
    # app is built waits in the backlog instead of being refused.
    sock.listen(2048)
    return sock


def run_dashboard(cfg: DashboardConfig) -> int:
    check_security(cfg)
    # The web address first: a port that is taken stops the start before the database is opened or a
    # message is stored.
    sock = listen_socket(cfg) if cfg.web else None
    try:
        store, feeds, live = build(cfg)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    for f in feeds:
        f.start()
    log.info("dashboard: db %s, %d feed(s), raw events %g days, per-minute rollups %g days",
             "postgresql" if cfg.is_postgres else store.url, len(feeds), cfg.raw_days, cfg.retention_days)
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
            server.run(sockets=[sock])
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
