"""One device's events never leave through another (issue 23): real daemons (`fer-edge run` with flags and
no config, so default outbox paths under a temporary state folder), real mosquitto brokers.

lab-a runs against a dead broker port and leaves events; lab-b runs against a live broker and delivers
none of them; lab-a's rows are still on disk and go when lab-a runs again with its own broker up.
Also the migration of the one shared ``outbox.sqlite`` that older versions wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemon_run import exit_report, outbox_rows, run_cli
from tests.mqtt_broker import Collector, MosquittoBroker, free_port, mqtt_broker  # noqa: F401
from tests.test_outbox import old_layout_outbox


def state_env(tmp_path: Path) -> dict:
    """HOME and XDG_STATE_HOME in the test's folder, no systemd StateDirectory: default paths land there."""
    return {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state"), "STATE_DIRECTORY": ""}


def run_device(tmp_path: Path, device: str, port: int, frames: int):
    """`fer-edge run --source sample --mqtt-host 127.0.0.1 --mqtt-port <port> --device-id <device>`, no config."""
    proc = run_cli("run", "--source", "sample", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port),
                   "--device-id", device, "--max-frames", str(frames), "--no-realtime", env=state_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    return proc, exit_report(proc.stderr)


def seqs_of(messages: list, device: str, kind: str) -> list[int]:
    return [json.loads(p)["seq"] for t, p, _ in messages if t == f"fer/{device}/{kind}"]


def test_lab_a_events_never_leave_through_lab_b(tmp_path, mqtt_broker):
    dead = free_port()  # lab-a's broker, down for now
    _, first = run_device(tmp_path, "lab-a", dead, 30)
    a_file = tmp_path / "state" / "fer-edge" / "outbox" / f"lab-a@127.0.0.1_{dead}.sqlite"
    stranded = outbox_rows(a_file)
    assert first["outbox_left"] == len(stranded) > 0

    heard_by_b = Collector(mqtt_broker, "#")
    _, second = run_device(tmp_path, "lab-b", mqtt_broker.port, 20)
    assert second["outbox_left"] == 0
    assert heard_by_b.wait_for(lambda c: (c.on("fer/lab-b/status") or [(0, b"")])[-1][1] == b"offline")
    assert seqs_of(heard_by_b.messages, "lab-b", "expression")  # lab-b itself was heard
    assert not [t for t, _, _ in heard_by_b.messages if "lab-a" in t]  # nothing of lab-a's reached lab-b's broker
    assert outbox_rows(a_file) == stranded  # still on disk, untouched
    assert not (tmp_path / "state" / "fer-edge" / "outbox.sqlite").exists()  # no shared file any more

    broker_a = MosquittoBroker(tmp_path / "broker-a", port=dead)  # lab-a's own broker comes up
    broker_a.start()
    try:
        heard_by_a = Collector(broker_a, "fer/#")
        _, third = run_device(tmp_path, "lab-a", dead, 5)
        assert third["outbox_left"] == 0 and outbox_rows(a_file) == []
        assert heard_by_a.wait_for(lambda c: (c.on("fer/lab-a/status") or [(0, b"")])[-1][1] == b"offline")
        want = {(t.rsplit("/", 1)[1], json.loads(p)["seq"]) for _, t, p in stranded}
        got = {(kind, s) for kind in ("expression", "summary") for s in seqs_of(heard_by_a.messages, "lab-a", kind)}
        assert want <= got  # every stranded row delivered to lab-a's broker
        assert not [t for t, _, _ in heard_by_b.messages if "lab-a" in t]
        heard_by_a.close()
    finally:
        broker_a.stop()
    heard_by_b.close()
    print(f"lab-a left {len(stranded)} events against the dead port {dead}; lab-b delivered "
          f"{len(seqs_of(heard_by_b.messages, 'lab-b', 'expression'))} expression events of its own and 0 of lab-a's; "
          f"lab-a's {len(stranded)} delivered to its own broker on the next run")


def test_the_old_shared_outbox_is_migrated_per_device(tmp_path, mqtt_broker):
    """A shared outbox.sqlite of older versions (no owners recorded): lab-b takes over only the rows whose topic
    names lab-b, warns once about lab-a's, which stay there until lab-a runs."""
    legacy = tmp_path / "state" / "fer-edge" / "outbox.sqlite"
    old_layout_outbox(legacy, ["fer/lab-a/expression", "fer/lab-b/expression", "fer/lab-a/expression"], seq=3)
    heard = Collector(mqtt_broker, "#")
    proc, _ = run_device(tmp_path, "lab-b", mqtt_broker.port, 10)
    assert heard.wait_for(lambda c: (c.on("fer/lab-b/status") or [(0, b"")])[-1][1] == b"offline")
    lab_b = seqs_of(heard.messages, "lab-b", "expression")
    assert lab_b[0] == 2 and all(s > 3 for s in lab_b[1:])  # its old row first, then new ones after the shared counter
    assert not [t for t, _, _ in heard.messages if "lab-a" in t]
    warned = [ln for ln in proc.stderr.splitlines() if "left in place" in ln]
    assert len(warned) == 1 and "2 of lab-a (broker not recorded)" in warned[0] and str(legacy) in warned[0]
    assert [t for _, t, _ in outbox_rows(legacy)] == ["fer/lab-a/expression"] * 2

    _, report = run_device(tmp_path, "lab-a", mqtt_broker.port, 5)
    assert report["outbox_left"] == 0 and outbox_rows(legacy) == []
    assert heard.wait_for(lambda c: {1, 3} <= set(seqs_of(c.messages, "lab-a", "expression")))
    heard.close()
