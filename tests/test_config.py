"""Config: defaults, the provisioning contract keys, and one-line errors naming key, value, expectation."""

from __future__ import annotations

import textwrap

import pytest

from edge.config import Config, load_config
from edge.errors import ConfigError

CONTRACT_TOML = """
[device]
id = "classroom-3"
[camera]
source = "picamera2"
[detector]
type = "blazeface_full"
min_score = 0.5
[model]
path = "/opt/fer-edge/models/mini_xception.tflite"
accelerator = "auto"
device = "usb"
[mqtt]
host = "127.0.0.1"
port = 1883
prefix = "fer"
username = "classroom-3"
password_file = ""
password_env = "FER_EDGE_MQTT_PASSWORD"
[mqtt.tls]
enabled = false
ca_file = ""
certfile = ""
keyfile = ""
[events]
interval_s = 10
[summary]
interval_s = 30
[stats]
interval_s = 30
[privacy]
publish_crops = false
[outbox]
path = ""
max_events = 100000
max_age_s = 604800
[watchdog]
stall_s = 30
"""


def write(tmp_path, text: str):
    p = tmp_path / "config.toml"
    p.write_text(textwrap.dedent(text))
    return p


def error_of(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    msg = str(exc.value)
    assert "\n" not in msg  # one line
    return msg


def test_defaults_need_no_file():
    cfg = load_config(None)
    assert cfg.camera.source == "sample" and cfg.mqtt.host == "" and cfg.privacy.publish_crops is False
    assert cfg.device.id == "fer-edge-1" and cfg.model.accelerator == "auto"


def test_empty_file_is_all_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


def test_contract_keys_from_the_provisioning_templates(tmp_path):
    cfg = load_config(write(tmp_path, CONTRACT_TOML))
    assert cfg.device.id == "classroom-3" and cfg.camera.source == "picamera2"
    assert cfg.mqtt.host == "127.0.0.1" and cfg.mqtt.username == "classroom-3" and cfg.mqtt.tls.enabled is False
    assert cfg.model.device == "usb" and cfg.outbox.max_events == 100000 and cfg.watchdog.stall_s == 30


def test_camera_index_is_an_int(tmp_path):
    assert load_config(write(tmp_path, "[camera]\nsource = 0\n")).camera.source == 0


def test_malformed_toml_names_file_and_line(tmp_path):
    msg = error_of(tmp_path, '[mqtt]\nhost = "x"\nport = \n')
    assert f"{tmp_path / 'config.toml'}:3:" in msg and "invalid TOML" in msg


def test_unknown_key_names_path_and_valid_keys(tmp_path):
    msg = error_of(tmp_path, "[mqtt]\nhots = 'x'\n")
    assert "mqtt.hots: unknown key" in msg and "host" in msg and "port" in msg


def test_unknown_section(tmp_path):
    assert "camrea: unknown key" in error_of(tmp_path, "[camrea]\nsource = 0\n")


def test_wrong_type_names_key_value_and_expectation(tmp_path):
    msg = error_of(tmp_path, '[mqtt]\nport = "abc"\n')
    assert "mqtt.port = 'abc'" in msg and "integer" in msg


def test_out_of_range(tmp_path):
    msg = error_of(tmp_path, "[mqtt]\nport = 70000\n")
    assert "mqtt.port = 70000" in msg and "65535" in msg
    assert "events.interval_s = 0" in error_of(tmp_path, "[events]\ninterval_s = 0\n")


def test_bad_enum_from_another_helpers_section(tmp_path):
    msg = error_of(tmp_path, '[model]\naccelerator = "gpu"\n')
    assert "model.accelerator = 'gpu'" in msg and "tpu" in msg


def test_password_in_config_is_refused_with_the_alternatives(tmp_path):
    msg = error_of(tmp_path, '[mqtt]\npassword = "hunter2"\n')
    assert "mqtt.password" in msg and "password_file" in msg and "hunter2" not in msg


def test_bad_device_id_and_prefix(tmp_path):
    assert "device.id = 'a/b'" in error_of(tmp_path, '[device]\nid = "a/b"\n')
    assert "mqtt.prefix = 'fer/#'" in error_of(tmp_path, '[mqtt]\nprefix = "fer/#"\n')


def test_device_role(tmp_path):
    assert load_config(None).device.role == "general"
    (tmp_path / "c.toml").write_text('[device]\nrole = "driver"\n')
    assert load_config(tmp_path / "c.toml").device.role == "driver"
    msg = error_of(tmp_path, '[device]\nrole = "pilot"\n')
    assert "device.role = 'pilot'" in msg and "'general', 'driver' or 'classroom'" in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_loading_the_config_does_not_load_opencv():
    """`fer-edge monitor` loads the config only: OpenCV (and a TFLite runtime) must stay unloaded."""
    import subprocess
    import sys

    code = ("import sys; from edge.config import load_config; load_config(None); "
            "print(sorted(m for m in ('cv2', 'ai_edge_litert', 'tflite_runtime', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
