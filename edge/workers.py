"""Frames in flight on several cores, finished in the order they were captured.

The daemon's stages split in three: ``take`` (read the next frame: one source, so one at a time),
``work`` (detection: the heavy, stateless-per-worker stage, run by ``workers`` threads at once) and
``finish`` (classify, track, publish: one classifier and one tracker, so one at a time, in capture order).
Each worker thread carries its frame through all three ("leader/follower"): frame N+1 is detected while
frame N is classified and published, at most ``workers`` frames are in flight (the bound on every queue),
and with ``workers = 1`` this is the plain loop on the calling thread, no thread started.

The TFLite interpreter and OpenCV release the GIL while they compute, which is what lets threads use
several cores here (docs/pipeline.md has the measurements).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable

# ``take`` returns this when no frame came within its timeout (a camera being retried): the loop calls
# ``idle`` (watchdog, stats) and asks again.
NOTHING_YET = object()

WAIT_S = 0.25  # bounded waits: a failure or a stop is noticed within this
# With several workers, how long a thread may hold the GIL while another wants it (Python's default: 5 ms). A worker
# whose model has just finished waits for the GIL up to this long before its NMS and crops; 1 ms measured better
# at 2 workers here (median 111 vs 104 FPS over 5 alternating runs each; docs/pipeline.md).
SWITCH_INTERVAL_S = 0.001


def default_workers() -> int:
    """The number of cores this process may run on (``os.sched_getaffinity`` where it exists)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (macOS, Windows)
        return max(1, os.cpu_count() or 1)


class _Turns:
    """Whose turn it is to finish: the frame taken ``n``-th finishes ``n``-th."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.next = 0

    def wait(self, n: int, aborted: Callable[[], bool]) -> bool:
        """Block until frame ``n`` may finish; False when the run was aborted meanwhile."""
        with self.cond:
            while self.next != n:
                if aborted():
                    return False
                self.cond.wait(WAIT_S)
            return True

    def done(self) -> None:
        with self.cond:
            self.next += 1
            self.cond.notify_all()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()


def run_in_order(workers: int, take: Callable[[], Any], work: Callable[[int, Any], Any],
                 finish: Callable[[Any, Any], None], idle: Callable[[], None] | None = None) -> None:
    """Run ``take -> work -> finish`` over every item until ``take`` returns None.

    workers: threads carrying an item each (1: the calling thread does everything, in turn).
    take(): the next item, None when there are no more (the source ended, a stop was asked, the frame
    budget is spent), or ``NOTHING_YET``; called by one thread at a time, in the order items are numbered.
    work(worker, item) -> result: in parallel; ``worker`` (0 .. workers-1) picks that thread's own models.
    finish(item, result): one at a time, in the order the items were taken; every item taken is finished
    (nothing in flight is lost when ``take`` ends the run).
    idle(): after ``NOTHING_YET``, one at a time with ``finish``.
    The first exception in any of them stops the others (items not yet finished are dropped) and is
    re-raised here.
    """
    take_lock, finish_lock = threading.Lock(), threading.Lock()
    turns = _Turns()
    state = {"taken": 0, "ended": False, "error": None}

    def aborted() -> bool:
        return state["error"] is not None

    def loop(worker: int) -> None:
        try:
            while not aborted():
                with take_lock:
                    if state["ended"]:
                        return
                    item = take()
                    if item is None:
                        state["ended"] = True
                        return
                    if item is not NOTHING_YET:
                        n = state["taken"]
                        state["taken"] += 1
                if item is NOTHING_YET:
                    if idle is not None:
                        with finish_lock:
                            idle()
                    continue
                result = work(worker, item)
                if not turns.wait(n, aborted):
                    return
                try:
                    with finish_lock:
                        finish(item, result)
                finally:
                    turns.done()
        except BaseException as exc:  # noqa: BLE001 (handed to the calling thread, re-raised there)
            if state["error"] is None:
                state["error"] = exc
            turns.wake()

    if workers <= 1:
        loop(0)
    else:
        threads = [threading.Thread(target=loop, args=(i,), name=f"fer-edge-worker-{i}", daemon=True)
                   for i in range(workers)]
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(WAIT_S)  # bounded: signal handlers run on this (the main) thread meanwhile
        except BaseException as exc:  # a second Ctrl-C: let the workers go, report it
            if state["error"] is None:
                state["error"] = exc
            turns.wake()
            raise
        finally:
            sys.setswitchinterval(switch)
    if state["error"] is not None:
        raise state["error"]
