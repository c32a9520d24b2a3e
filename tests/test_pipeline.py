"""The pipelined daemon: ``edge.workers.run_in_order`` with real threads, and the real daemon at two workers on
the sample clip into a real mosquitto (frame order kept, nothing lost at a clean stop or on SIGTERM)."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from edge.config import validate_config
from edge.errors import ConfigError
from edge.workers import NOTHING_YET, default_workers, run_in_order
from tests.daemon_run import exit_report, start_daemon, stderr_of
from tests.mqtt_broker import Collector, mqtt_broker  # noqa: F401
from tests.test_daemon_e2e import daemon_config


def numbered(n: int, pause_every: int = 0):
    """A ``take`` giving 0 .. n-1 then None; NOTHING_YET after every ``pause_every``-th item (a camera gap)."""
    state = {"next": 0, "paused": False}

    def take():
        if pause_every and state["next"] and state["next"] % pause_every == 0 and not state["paused"]:
            state["paused"] = True
            return NOTHING_YET
        state["paused"] = False
        if state["next"] >= n:
            return None
        state["next"] += 1
        return state["next"] - 1
    return take


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_items_finish_in_the_order_they_were_taken(workers):
    rng = random.Random(workers)
    delays = [rng.uniform(0, 0.004) for _ in range(120)]
    busy, peak, lock = [0], [0], threading.Lock()
    finished, threads = [], set()

    def work(worker, item):
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        threads.add(threading.current_thread().name)
        time.sleep(delays[item])  # sleeping releases the GIL, as the TFLite interpreter does while it runs
        with lock:
            busy[0] -= 1
        return item * 10, worker

    run_in_order(workers, numbered(120), work, lambda item, res: finished.append((item, res[0])))
    assert finished == [(i, i * 10) for i in range(120)]
    if workers == 1:
        assert threads == {threading.current_thread().name} and peak[0] == 1
    else:
        assert peak[0] >= 2, "no two items were ever worked on at once"
        assert len(threads) == workers


def test_idle_runs_on_gaps_and_is_not_an_item():
    finished, idles = [], []
    run_in_order(2, numbered(10, pause_every=3), lambda w, i: i, lambda i, r: finished.append(i),
                 idle=lambda: idles.append(len(finished)))
    assert finished == list(range(10))
    assert len(idles) == 3  # after items 3, 6 and 9


def test_every_item_taken_is_finished_when_the_run_ends():
    """A stop while items are in flight: take says None, the slow ones still finish (no event lost)."""
    stop = threading.Event()
    taken, finished = [], []

    def take():
        if stop.is_set():
            return None
        taken.append(len(taken))
        if len(taken) == 7:
            stop.set()
        return taken[-1]

    run_in_order(3, take, lambda w, i: time.sleep(0.05 if i % 2 else 0.001) or i, lambda i, r: finished.append(i))
    assert finished == taken == list(range(7))


def test_a_failure_stops_the_run_and_reaches_the_caller():
    finished = []

    def work(worker, item):
        if item == 5:
            raise RuntimeError("detector broke on item 5")
        time.sleep(0.002)
        return item

    with pytest.raises(RuntimeError, match="item 5"):
        run_in_order(2, numbered(1000), work, lambda i, r: finished.append(i))
    assert finished == list(range(len(finished))) and 5 not in finished and len(finished) < 1000


def test_workers_setting_defaults_to_the_cores_and_is_validated():
    cfg = validate_config({})
    assert cfg.pipeline.workers is None and cfg.pipeline.worker_count() == default_workers() >= 1
    assert validate_config({"pipeline": {"workers": 3}}).pipeline.worker_count() == 3
    with pytest.raises(ConfigError, match=r"pipeline.workers = 0: expected greater than or equal to 1"):
        validate_config({"pipeline": {"workers": 0}})


def test_two_workers_publish_in_frame_order_and_lose_nothing(mqtt_broker, tmp_path, standin_model):
    """The real daemon with two workers: every frame processed, events in frame order with consecutive seq,
    all of them delivered, and stats saying two detectors ran."""
    col = Collector(mqtt_broker, "fer/#")
    cfg = daemon_config(tmp_path, mqtt_broker, standin_model, events={"interval_s": 0.05}, pipeline={"workers": 2})
    proc = start_daemon(cfg, "--max-frames", "90")
    assert proc.wait(120) == 0, stderr_of(proc)
    report = exit_report(stderr_of(proc))
    assert report["frames"] == 90 and report["outbox_left"] == 0
    assert col.wait_for(lambda c: c.on("/status") and c.on("/status")[-1][1] == b"offline")
    events = col.json_on("fer/e2e/expression")
    assert len(events) == report["events"]["expression"] > 10
    frames = [e["frame"] for e in events]
    assert frames == sorted(frames), "expression events out of frame order"
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    stats = col.json_on("fer/e2e/stats")
    assert stats[-1]["frames"] == 90 and stats[-1]["detector"]["workers"] == 2
    assert "x 2 worker(s)" in stderr_of(proc)
    col.close()


def test_sigterm_with_two_workers_delivers_every_event(mqtt_broker, tmp_path, standin_model):
    col = Collector(mqtt_broker, "fer/#")
    cfg = daemon_config(tmp_path, mqtt_broker, standin_model, camera={"loop": True}, events={"interval_s": 0.05},
                        pipeline={"workers": 2})
    proc = start_daemon(cfg)  # the clip looped as fast as it goes: both workers busy when the signal comes
    assert col.wait_for(lambda c: len(c.on("/expression")) >= 20, 60), stderr_of(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, stderr_of(proc)
    report = exit_report(stderr_of(proc))
    assert report["reason"] == "signal" and report["outbox_left"] == 0
    assert col.wait_for(lambda c: c.on("/status") and c.on("/status")[-1][1] == b"offline")
    events = col.json_on("fer/e2e/expression")
    assert len(events) == report["events"]["expression"]
    assert [e["frame"] for e in events] == sorted(e["frame"] for e in events)
    col.close()


def test_bench_pipeline_runs_the_daemon_at_each_workers_count(tmp_path):
    """`fer-edge bench pipeline` end to end on the sample clip (tiny: the figures are the bench's, not the test's)."""
    from edge.camera import sample_video_path
    from tests.daemon_run import run_cli

    proc = run_cli("bench", "pipeline", "--video", str(sample_video_path()), "--frames", "12", "--repeat", "1",
                   "--pipeline-workers", "1,2", "--no-broker", "--out", str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    result = json.loads((tmp_path / "pipeline.json").read_text())
    assert [r["workers"] for r in result["rows"]] == [1, 2]
    assert all(run["frames"] == 12 and run["fps"] > 0 for runs in result["runs"].values() for run in runs)
    table = (tmp_path / "pipeline.md").read_text()
    assert "| 1 |" in table and "| 2 |" in table and "1.00x" in table


def test_bench_pipeline_refuses_bad_counts(tmp_path):
    from tests.daemon_run import run_cli

    proc = run_cli("bench", "pipeline", "--pipeline-workers", "0,2", "--out", str(tmp_path))
    assert proc.returncode != 0 and "--pipeline-workers '0,2': give counts >= 1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
