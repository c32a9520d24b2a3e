"""Keep the one-line banners that native runtimes print on stderr out of the logs.

TFLite prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` from C++ when the first
interpreter of a process is built, and no environment variable or API turns it off. ``quiet()``
sends file descriptor 2 to a temporary file while the interpreter is built, then writes back
everything that was not a known banner (errors and warnings stay visible, in order).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

BANNERS = (re.compile(r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.?"),)


def _is_banner(line: str) -> bool:
    return any(b.fullmatch(line.strip()) for b in BANNERS)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Drop the known banners written to file descriptor 2 inside the block; write the rest back to it."""
    fd = 2  # native code writes there whatever sys.stderr is
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no descriptor 2 (a daemon started with it closed)
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            kept = "".join(ln for ln in text.splitlines(keepends=True) if not _is_banner(ln))
            if kept:
                os.write(fd, kept.encode("utf-8"))
