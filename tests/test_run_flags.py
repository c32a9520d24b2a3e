"""`fer-edge run --source/--mqtt-host/--mqtt-port/--device-id/--realtime`: the config's keys from the command line,
without a config file or over one, validated like the file; files published to a broker play in real time."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from edge.cli import camera_source
from edge.config import Config, load_config
from tests.daemon_run import exit_report, run_cli, write_config
from tests.mqtt_broker import Collector, free_port, mqtt_broker  # noqa: F401
from tests.test_cli_errors import one_line_error
from tests.test_outbox_isolation import state_env


def test_flags_publish_under_the_device_id_without_a_config(tmp_path, mqtt_broker):
    """The bar: `fer-edge run --source sample --mqtt-host 127.0.0.1 --mqtt-port P --device-id X --max-frames 50`."""
    col = Collector(mqtt_broker, "#")
    proc = run_cli("run", "--source", "sample", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(mqtt_broker.port),
                   "--device-id", "X", "--max-frames", "50", env=state_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # published, not printed
    report = exit_report(proc.stderr)
    assert report["frames"] == 50 and report["outbox_left"] == 0
    assert col.wait_for(lambda c: (c.on("fer/X/status") or [(0, b"")])[-1][1] == b"offline")
    topics = {t for t, _, _ in col.messages}
    assert topics == {"fer/X/status", "fer/X/expression", "fer/X/summary", "fer/X/stats"}, topics
    assert len(col.on("fer/X/expression")) == report["events"]["expression"] > 0
    assert {s["role"] for s in col.json_on("fer/X/stats")} == {"general"}  # the default role, stated in stats
    col.close()


def test_flags_override_the_config_file(tmp_path, mqtt_broker):
    cfg = write_config(tmp_path / "c.toml", {"device": {"id": "from-file", "role": "driver"},
                                             "camera": {"source": "/nonexistent.mp4"},
                                             "mqtt": {"host": "127.0.0.1", "port": free_port()}})
    col = Collector(mqtt_broker, "#")
    proc = run_cli("run", "--config", str(cfg), "--source", "sample", "--mqtt-port", str(mqtt_broker.port),
                   "--device-id", "from-flag", "--max-frames", "5", "--no-realtime", env=state_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert col.wait_for(lambda c: (c.on("fer/from-flag/status") or [(0, b"")])[-1][1] == b"offline")
    assert {t.split("/")[1] for t, _, _ in col.messages} == {"from-flag"}
    stats = col.json_on("fer/from-flag/stats")
    assert stats and {s["role"] for s in stats} == {"driver"}  # the file's other keys still apply
    col.close()


@pytest.mark.parametrize("args, needles", [
    (["--device-id", "a/b"], ["--device-id: device.id = 'a/b'", "letters, digits"]),
    (["--mqtt-port", "abc"], ["--mqtt-port: mqtt.port = 'abc'", "integer"]),
    (["--mqtt-port", "70000"], ["--mqtt-port: mqtt.port = '70000'", "65535"]),
    (["--source", "/nonexistent.mp4"], ["/nonexistent.mp4 not found", "--source"]),
    (["--workers", "0"], ["--workers: pipeline.workers = '0'", "greater than or equal to 1"]),
    (["--role", "pilot"], ["--role: device.role = 'pilot'", "'general', 'driver' or 'classroom'"]),
])
def test_bad_flag_values_are_one_line_errors(tmp_path, args, needles):
    proc = run_cli("run", *args, "--max-frames", "1", env=state_env(tmp_path))
    assert proc.returncode == 2
    one_line_error(proc, *needles)


def arrival_leads(tmp_path, broker, *flags: str) -> tuple[int, list[float]]:
    """Run the sample clip to ``broker`` with an expression event per face on nearly every frame: the number of
    events and, for each, seconds between its frame's time in the clip (``ts``) and its arrival at a subscriber."""
    cfg = write_config(tmp_path / "events.toml", {"events": {"interval_s": 0.05}})
    col = Collector(broker, "fer/+/expression")
    arrivals: list[tuple[float, bytes]] = []
    record = col.client.on_message

    def stamped(client, userdata, msg):
        arrivals.append((time.time(), msg.payload))
        record(client, userdata, msg)

    col.client.on_message = stamped
    proc = run_cli("run", "--config", str(cfg), "--source", "sample", "--mqtt-host", "127.0.0.1", "--mqtt-port",
                   str(broker.port), "--device-id", "pace", "--max-frames", "45", *flags, env=state_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    n = exit_report(proc.stderr)["events"]["expression"]
    assert col.wait_for(lambda c: len(c.messages) >= n) and n > 10
    col.close()
    return n, [at - json.loads(payload)["ts"] for at, payload in arrivals]


def test_a_file_published_to_a_broker_plays_in_real_time(tmp_path, mqtt_broker):
    """Paced (the default with a broker): no frame is handled before its time in the clip (open + n / 15 fps),
    so no event arrives before the moment it stamps. --no-realtime reads as fast as it can: events of later
    frames arrive before their time (here, where the pipeline runs faster than the clip's 15 fps). Either way the
    events are due in the clip's time, so both runs send the same number (a fast machine used to send fewer)."""
    n_paced, paced = arrival_leads(tmp_path, mqtt_broker)
    assert min(paced) >= 0, min(paced)
    n_fast, fast = arrival_leads(tmp_path, mqtt_broker, "--no-realtime")
    assert n_fast == n_paced, (n_fast, n_paced)
    assert min(fast) < 0, min(fast)
    print(f"earliest arrival vs frame time: paced {min(paced):+.2f} s, --no-realtime {min(fast):+.2f} s")


def test_realtime_is_auto_paced_when_publishing():
    assert Config().camera.realtime is False  # stdout: as fast as read (benchmarks, tests, analysis)
    assert Config.model_validate({"mqtt": {"host": "b"}}).camera.realtime is True
    assert Config.model_validate({"mqtt": {"host": "b"}, "camera": {"realtime": False}}).camera.realtime is False
    assert Config.model_validate({"camera": {"realtime": True}}).camera.realtime is True
    assert load_config(None, [("--mqtt-host", "mqtt.host", "b"), ("--realtime", "camera.realtime", False)]).camera.realtime is False
    assert load_config(None, [("--mqtt-host", "mqtt.host", "b")]).camera.realtime is True


def test_paced_file_plays_at_its_frame_rate(tmp_path):
    from edge.camera import open_source
    from edge.frames import CameraConfig
    from tests.conftest import write_test_video

    video = write_test_video(tmp_path / "v.mp4", frames=12, fps=10.0)
    src = open_source(CameraConfig(source=str(video), realtime=True))
    start = time.monotonic()
    n = 0
    while src.read() is not None:
        n += 1
    src.close()
    assert n == 12 and time.monotonic() - start >= 11 / 10.0  # frame 11 is not handed out before 1.1 s


def test_camera_source_names():
    assert camera_source("camera") == ("picamera2" if importlib.util.find_spec("picamera2") else 0)
    assert camera_source("2") == 2 and camera_source("sample") == "sample"
    assert camera_source("rtsp://cam/1") == "rtsp://cam/1" and camera_source("clip.mp4") == "clip.mp4"


def test_run_help_lists_the_flags():
    text = " ".join(run_cli("run", "--help").stdout.split())
    for flag in ("--source", "--mqtt-host", "--mqtt-port", "--device-id", "--realtime, --no-realtime"):
        assert flag in text
    assert "camera (the Raspberry Pi camera where picamera2 is installed, else the first USB camera)" in text


def test_role_and_workers_flags(tmp_path):
    """`--role classroom --workers 1` without a config: the classroom preset (no expression model, attention on)
    on the plain one-worker loop, as stats and the summaries on stdout say."""
    import json

    proc = run_cli("run", "--role", "classroom", "--workers", "1", "--max-frames", "20", env=state_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    msgs = [json.loads(line) for line in proc.stdout.splitlines()]
    stats = [m["payload"] for m in msgs if m["topic"].endswith("/stats")]
    assert stats[-1]["role"] == "classroom" and stats[-1]["detector"]["workers"] == 1
    assert not [m for m in msgs if m["topic"].endswith("/expression")]
    assert all("attention" in m["payload"] and "counts" not in m["payload"]
               for m in msgs if m["topic"].endswith("/summary"))
