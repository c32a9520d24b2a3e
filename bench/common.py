"""Helpers shared by the benchmarks: formatting, worker processes, the machine.

Tables come from ``convert.report.markdown_table``; models run through ``edge.int8``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODELS = ("mini_xception", "tiny", "standard")


def progress(iterable, **kwargs):
    """``tqdm(iterable)``, drawn only when stderr is a terminal (no progress bars in logs); the plain
    iterable where tqdm is not installed (the device extra does not pull it)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, disable=not sys.stderr.isatty(), **kwargs)


def fmt_int(n) -> str:
    return "n/a" if n is None else f"{n:,}"


def fmt_macs(n) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e6:.1f} M"


def fmt_size(n) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def pct(v) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def detector_options(name: str) -> tuple[str, dict]:
    """A bench pipeline name -> (detector type, DetectorConfig overrides): ``auto+noalign`` / ``+align``
    turn aligned crops off / on, ``+everyN`` runs the pyramid on every N-th video frame (``+every1``: every
    frame, the schedule off), ``+int8`` / ``+float`` the short-range passes' precision."""
    det, *flags = name.split("+")
    opts: dict = {}
    for f in flags:
        if f in ("align", "noalign"):
            opts["align"] = f == "align"
        elif f.startswith("every") and f[5:].isdigit():
            opts["full_every"] = int(f[5:])
        elif f in ("int8", "float"):
            opts["precision"] = f
        else:
            raise ValueError(f"unknown detector flag +{f} in {name!r}: use +align, +noalign, +everyN, +int8 or +float")
    return det, opts


def run_worker(kind: str, params: dict, timeout: float = 900) -> dict:
    """Run ``_worker(kind, params)`` in a fresh Python and return its JSON result (last stdout line)."""
    cmd = [sys.executable, "-m", "bench", "--worker", kind, json.dumps(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), cwd=str(REPO_ROOT),
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        from edge.errors import FerEdgeError

        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise FerEdgeError(f"benchmark worker {kind} {params.get('model', '')} failed: {tail}")
    return json.loads(lines[-1])


def maxrss_kib() -> int:
    """Peak resident memory of this process in KiB.

    Linux: ``VmHWM`` from /proc/self/status, the high-water mark of this program's own memory.
    ``getrusage().ru_maxrss`` would be the same number except that, in a child started by
    fork+exec, it also keeps the parent's resident size at the moment of the fork (here the parent
    may hold TensorFlow: 1.5 GB), so it is only the fallback on other systems.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux, bytes on macOS


def machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs visible, Python {platform.python_version()}"


def cache_dir() -> Path:
    """Where generated inputs (the multi-face clip) are cached: ``$FER_EDGE_CACHE/bench``."""
    return Path(os.environ.get("FER_EDGE_CACHE", Path.home() / ".cache" / "fer-edge")) / "bench"
