"""Bad input through the real CLI: one-line error, non-zero exit, no traceback; doctor's bitmask;
an unreachable broker is not an error (the daemon runs and buffers)."""

from __future__ import annotations

import shutil

import pytest

from edge.camera import sample_video_path
from tests.conftest import build_int8_model
from tests.daemon_run import exit_report, outbox_rows, run_cli, write_config
from tests.mqtt_broker import free_port, mqtt_broker  # noqa: F401


def one_line_error(proc, *needles: str) -> str:
    """Assert the CLI failed with exactly one ``fer-edge: error:`` line mentioning ``needles``."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fer-edge: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def config(tmp_path, model_path, **sections):
    base = {
        "camera": {"source": str(sample_video_path())},
        "model": {"path": str(model_path), "accelerator": "cpu"},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
    }
    for name, keys in sections.items():
        base[name] = {**base.get(name, {}), **keys}
    return write_config(tmp_path / "config.toml", base)


@pytest.mark.parametrize("text, needles", [
    ('[mqtt]\nhost = "x"\nport = \n', ["config.toml:3:", "invalid TOML"]),
    ('[mqtt]\nhots = "x"\n', ["mqtt.hots", "unknown key"]),
    ('[mqtt]\nport = "abc"\n', ["mqtt.port = 'abc'", "integer"]),
    ('[camera]\nsource = 1.5\n', ["camera.source = 1.5"]),
])
def test_config_errors(tmp_path, text, needles):
    path = tmp_path / "config.toml"
    path.write_text(text)
    proc = run_cli("run", "--config", str(path))
    assert proc.returncode == 2
    one_line_error(proc, *needles)


def test_missing_config_file(tmp_path):
    one_line_error(run_cli("run", "--config", str(tmp_path / "nope.toml")), "not found")


def test_corrupt_model_files(tmp_path, standin_model):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64)
    one_line_error(run_cli("run", "--config", str(config(tmp_path, garbage))), "not a TFLite file")
    # A real model truncated in transit: its manifest's sha256 no longer matches.
    shutil.copy(standin_model.with_suffix(".json"), tmp_path / "standin.json")
    truncated = tmp_path / "standin.tflite"
    truncated.write_bytes(standin_model.read_bytes()[: standin_model.stat().st_size // 2])
    one_line_error(run_cli("run", "--config", str(config(tmp_path, truncated))), "corrupt")


def test_model_with_wrong_input_shape(tmp_path):
    model = build_int8_model(tmp_path, name="wide", input_shape=(64, 64, 1))
    one_line_error(run_cli("run", "--config", str(config(tmp_path, model))), "input shape", "[1, 48, 48, 1]")


# A camera index or stream that is not there is retried instead (tests/test_faults.py); a missing file is final.
@pytest.mark.parametrize("source, needle", [("/nonexistent.mp4", "/nonexistent.mp4"), ("/nonexistent/face.jpg", "face.jpg")])
def test_missing_camera(tmp_path, standin_model, source, needle):
    proc = run_cli("run", "--config", str(config(tmp_path, standin_model, camera={"source": source})))
    one_line_error(proc, needle)


def test_max_frames_must_be_positive():
    proc = run_cli("run", "--max-frames", "0")
    assert proc.returncode == 2 and "positive" in proc.stderr


def test_unreachable_broker_keeps_running_and_buffers(tmp_path, standin_model):
    port = free_port()  # nothing listens there
    cfg = config(tmp_path, standin_model, mqtt={"host": "127.0.0.1", "port": port, "reconnect_max_s": 1},
                 events={"interval_s": 0.1})
    proc = run_cli("run", "--config", str(cfg), "--max-frames", "40")
    assert proc.returncode == 0, proc.stderr
    report = exit_report(proc.stderr)
    assert report["frames"] == 40 and report["outbox_left"] > 0
    assert proc.stderr.count("mqtt: nothing listens on") == 1  # warned once with its cause, not per event
    rows = outbox_rows(tmp_path / "outbox.sqlite")
    assert len(rows) == report["outbox_left"]  # nothing lost: all of it waits for the broker


def test_doctor_all_ok(tmp_path, standin_model):
    proc = run_cli("doctor", "--config", str(config(tmp_path, standin_model)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [line.split()[:2] for line in proc.stdout.splitlines()[:4]] == [
        ["camera", "OK"], ["model", "OK"], ["accelerator", "OK"], ["broker", "OK"]]


def test_doctor_bitmask_of_failures(tmp_path, standin_model):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"junk" * 10)
    # The int8 detector follows [model] accelerator = "tpu" and fails too: the model bit counts once.
    cfg = config(tmp_path, garbage, camera={"source": "/nonexistent.mp4"}, detector={"precision": "int8"},
                 model={"accelerator": "tpu"}, mqtt={"host": "127.0.0.1", "port": free_port()})
    proc = run_cli("doctor", "--config", str(cfg))
    assert proc.returncode == 1 + 2 + 4 + 8, proc.stdout + proc.stderr
    assert "detector     FAIL" in proc.stdout, proc.stdout
    assert [line.split()[1] for line in proc.stdout.splitlines()[:4]] == ["FAIL"] * 4
    # accelerator = auto without a TPU is fine (CPU fallback), so only the camera bit remains.
    cfg = config(tmp_path, standin_model, camera={"source": "/nonexistent.mp4"}, model={"accelerator": "auto"})
    assert run_cli("doctor", "--config", str(cfg)).returncode == 1


def test_doctor_broker_ok_and_bad_config(tmp_path, standin_model, mqtt_broker):
    cfg = config(tmp_path, standin_model, mqtt={"host": mqtt_broker.host, "port": mqtt_broker.port})
    proc = run_cli("doctor", "--config", str(cfg))
    assert proc.returncode == 0 and "connected" in proc.stdout, proc.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nport = -1\n")
    proc = run_cli("doctor", "--config", str(bad))
    assert proc.returncode == 16
    one_line_error(proc, "mqtt.port")


def test_monitor_shows_devices(tmp_path, standin_model, mqtt_broker):
    cfg = config(tmp_path, standin_model, device={"id": "room-9"},
                 mqtt={"host": mqtt_broker.host, "port": mqtt_broker.port})
    assert run_cli("run", "--config", str(cfg), "--max-frames", "20").returncode == 0
    proc = run_cli("monitor", "--host", mqtt_broker.host, "--port", str(mqtt_broker.port), "--once", "--duration", "1.5")
    assert proc.returncode == 0, proc.stderr
    assert "room-9" in proc.stdout and "offline" in proc.stdout and "summary:" in proc.stdout, proc.stdout


def test_monitor_unreachable_broker():
    proc = run_cli("monitor", "--host", "127.0.0.1", "--port", str(free_port()), "--once")
    assert proc.returncode == 8
    one_line_error(proc, "nothing listens on")


def test_monitor_silent_host_did_not_answer():
    """A host that accepts the TCP connection but never answers MQTT did not answer: it did not refuse."""
    import socket

    from edge.config import MqttConfig
    from edge.errors import FerEdgeError
    from edge.monitor import run_monitor

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with pytest.raises(FerEdgeError) as err:
            run_monitor(MqttConfig(host="127.0.0.1", port=srv.getsockname()[1]), once=True, answer_timeout_s=0.5)
    assert "did not answer within 0.5 s" in str(err.value) and "refused" not in str(err.value)
    assert err.value.exit_code == 8


def test_analyze_help_says_boxes_are_pixels():
    text = " ".join(run_cli("analyze", "--help").stdout.split())
    assert "pixels" in text and "0..1" in text


def test_help_is_complete():
    for cmd in ("run", "doctor", "monitor"):
        proc = run_cli(cmd, "--help")
        assert proc.returncode == 0 and "usage: fer-edge " + cmd in proc.stdout
    assert "--max-frames" in run_cli("run", "--help").stdout
    assert "8 broker" in run_cli("doctor", "--help").stdout


@pytest.mark.parametrize("command", ["convert", "convert-detector", "drift", "edgetpu"])
def test_workstation_help_is_plain_text(command, capsys):
    """`--help` is for users: no reStructuredText markup, no internal function or module names."""
    from fer_edge.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert "usage: fer-edge " + command in text
    for smell in ("``", ":func:", "compile_for_edgetpu", "check_edgetpu_compat", "edgetpu_report", ".py"):
        assert smell not in text, f"`fer-edge {command} --help` shows {smell!r}"


def _env_without_tensorflow(tmp_path) -> dict:
    """Environment for ``python -S`` whose site-packages lacks TensorFlow and Keras, like a device venv
    (``make run``): a folder of symlinks to every other installed package, on PYTHONPATH after the repo."""
    import os
    import sysconfig

    site = tmp_path / "site-packages"
    site.mkdir()
    for folder in dict.fromkeys((sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])):
        for entry in os.scandir(folder):
            if not entry.name.lower().startswith(("tensorflow", "keras", "tf_keras")) and not (site / entry.name).exists():
                (site / entry.name).symlink_to(entry.path)
    from tests.daemon_run import ROOT

    return {"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}


def test_convert_commands_without_tensorflow_name_the_extra(tmp_path):
    """`fer-edge train|convert|drift` where TensorFlow/Keras are not installed: exit 2 and one line naming the
    [convert] extra and its pip command (whatever the arguments), no traceback; edgetpu still works."""
    import subprocess
    import sys

    from tests.daemon_run import ROOT, cli_env

    env = cli_env(_env_without_tensorflow(tmp_path))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-S", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)

    probe = run("-c", "import importlib.util as u; import pydantic, numpy, cv2; "
                      "print(u.find_spec('tensorflow'), u.find_spec('keras'))")
    assert probe.returncode == 0 and probe.stdout.split() == ["None", "None"], probe.stderr  # really absent
    for argv in (["train"], ["train", "--data", "fer2013.csv"], ["convert", "--keras", "m.keras"], ["drift"]):
        proc = run("-m", "fer_edge", *argv)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line
        line = one_line_error(proc, f"fer-edge {argv[0]} needs the [convert] extra", "tensorflow is not installed",
                              "pip install 'fer-edge[convert]'")
        print(" ".join(argv), "->", line)
    assert "[needs the convert extra" in run("-m", "fer_edge", "--help").stdout
    assert run("-m", "fer_edge", "edgetpu", "--help").returncode == 0  # the device runtime is enough for it
    # With TensorFlow installed (this venv) the same command parses its arguments as usual.
    normal = run_cli("train")
    assert normal.returncode == 2 and "--data" in normal.stderr and "[convert] extra" not in normal.stderr
