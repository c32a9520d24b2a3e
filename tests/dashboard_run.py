"""Helpers to run ``fer-edge dashboard`` as a subprocess and to drive Debian's chromium with Playwright."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.daemon_run import ROOT, cli, cli_env
from tests.mqtt_broker import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class Dashboard:
    """``fer-edge dashboard`` on a free loopback port; logs under ``workdir``."""

    def __init__(self, workdir: Path, broker, db: str | None = None, *extra: str, web: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = db or str(self.workdir / "dashboard.sqlite")
        n = len(list(self.workdir.glob("dashboard*.err")))
        self.err_path = self.workdir / f"dashboard{n}.err"
        argv = cli("dashboard", "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
                   "--listen", f"127.0.0.1:{self.port}", "--db", self.db, *extra)
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL,
                                     stderr=open(self.err_path, "w"), text=True)
        self.web = web

    def wait_ready(self, timeout: float = 30.0) -> "Dashboard":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited {self.proc.returncode}: {self.stderr()[-3000:]}")
            if not self.web:
                if "subscribed to" in self.stderr():
                    return self
            else:
                try:
                    if self.get("/healthz").get("mqtt_connected"):
                        return self
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"dashboard not ready within {timeout}s: {self.stderr()[-3000:]}")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def get_known(self, path: str, default):
        """GET ``path``; ``default`` while its device is unknown (404), as it is until its first message is
        stored: for polling a device's rows as they arrive."""
        try:
            return self.get(path)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            return default

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.read().decode()

    def stderr(self) -> str:
        return self.err_path.read_text() if self.err_path.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def launch_chromium(playwright):
    """Debian's chromium, headless, driven by Playwright (no browser download)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
