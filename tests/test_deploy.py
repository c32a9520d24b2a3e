"""Deployment checks: the systemd unit (systemd-analyze verify / security) and the Ansible
playbook (syntax check, ansible-lint production profile, config.toml template).

The tools live in their own virtualenv made by tests/deploy/setup.sh (the Makefile runs it;
this module runs it too when the tools are missing). A test skips only when a tool cannot be
installed here, and says why. The end-to-end provisioning of a real Debian 12 root file system
(tests/deploy/real_target.sh, root and a few minutes) runs with FER_DEPLOY_REAL_TARGET=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project venv is 3.11+
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "fer-edge.service"
DROPINS = REPO / "systemd" / "fer-edge.service.d"
ANSIBLE_DIR = REPO / "ansible"
DEPLOY_VENV = Path(os.environ.get("FER_DEPLOY_VENV", REPO / "build" / "deploy-venv"))
EXEC_START = "/opt/fer-edge/venv/bin/fer-edge run --config /etc/fer-edge/config.toml"
MAX_EXPOSURE = 2.5


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run cmd (argv list), capture text output; kw goes to subprocess.run."""
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def unit_entries(path: Path) -> dict[tuple[str, str], list[str]]:
    """Parse a systemd unit file into {(section, key): [values in order]} (keys may repeat)."""
    entries: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault((section, key.strip()), []).append(value.strip())
    return entries


# ---- tools -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """Path of systemd-analyze; skips when it is not installed and cannot be."""
    path = shutil.which("systemd-analyze")
    if path is None:
        run(["bash", str(REPO / "tests" / "deploy" / "setup.sh")])
        path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze missing and `apt-get install systemd` failed (needs root + Debian apt)")
    return path


@pytest.fixture(scope="session")
def ansible_bin() -> Path:
    """bin/ folder of the deploy-tools venv (ansible-playbook, ansible-lint); installs it if missing."""
    bindir = DEPLOY_VENV / "bin"
    if not (bindir / "ansible-lint").exists() or not (bindir / "ansible-playbook").exists():
        setup = run(["bash", str(REPO / "tests" / "deploy" / "setup.sh")], cwd=REPO)
        if setup.returncode != 0 or not (bindir / "ansible-lint").exists():
            pytest.skip("ansible-core/ansible-lint could not be installed by tests/deploy/setup.sh: "
                        + (setup.stderr.strip().splitlines() or ["no output"])[-1])
    return bindir


def ansible_env(bindir: Path) -> dict[str, str]:
    """Environment for the Ansible tools: their venv first on PATH, our ansible.cfg, no colour."""
    env = dict(os.environ)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["NO_COLOR"] = "1"
    return env


@pytest.fixture()
def unit_root(tmp_path: Path, systemd_analyze: str) -> Path:
    """A root directory where the unit can be verified: the host's stock units (targets the unit
    refers to), the unit and all its drop-in examples, and an executable at the ExecStart path
    (what Ansible installs there is covered by tests/deploy/real_target.sh)."""
    stock = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)
    if stock is None:
        pytest.skip("no /usr/lib/systemd/system on this machine to resolve the unit's dependencies")
    shutil.copytree(stock, tmp_path / "usr/lib/systemd/system", symlinks=True)
    unit_dir = tmp_path / "etc/systemd/system"
    (unit_dir / "fer-edge.service.d").mkdir(parents=True)
    shutil.copy(UNIT, unit_dir / "fer-edge.service")
    for example in DROPINS.glob("*.conf.example"):
        shutil.copy(example, unit_dir / "fer-edge.service.d" / example.name.removesuffix(".example"))
    exe = tmp_path / EXEC_START.split()[0].lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return tmp_path


# ---- systemd unit ------------------------------------------------------------------------------

def test_unit_keeps_the_service_contract():
    """ExecStart, notify/watchdog, user, directories and credential are what the daemon expects."""
    e = unit_entries(UNIT)
    svc = lambda key: e.get(("Service", key), [])  # noqa: E731
    assert svc("ExecStart") == [EXEC_START]
    assert svc("Type") == ["notify"] and svc("NotifyAccess") == ["main"]
    assert svc("WatchdogSec") == ["30"] and svc("Restart") == ["on-failure"]
    assert svc("User") == ["fer-edge"] and svc("Group") == ["fer-edge"]
    assert set(" ".join(svc("SupplementaryGroups")).split()) >= {"video", "plugdev"}
    assert svc("StateDirectory") == ["fer-edge"] and svc("ConfigurationDirectory") == ["fer-edge"]
    assert svc("LoadCredential") == ["mqtt_password:/etc/fer-edge/mqtt_password"]
    assert e[("Unit", "StartLimitBurst")] and e[("Unit", "StartLimitIntervalSec")]
    allowed = {v.split()[0] for v in svc("DeviceAllow")}
    assert {"char-video4linux", "char-media", "char-dma_heap", "char-usb_device", "char-apex"} <= allowed
    assert svc("DevicePolicy") == ["closed"]
    # AF_NETLINK: libudev monitor for libusb/libcamera hotplug (Coral USB re-enumerates).
    assert set(svc("RestrictAddressFamilies")[0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


def test_unit_and_dropins_pass_systemd_analyze_verify(systemd_analyze: str, unit_root: Path):
    result = run([systemd_analyze, "verify", f"--root={unit_root}", "fer-edge.service"])
    assert result.returncode == 0, result.stderr
    # verify only warns (exit 0) about e.g. unknown keys: treat any message about our unit as failure.
    ours = [line for line in result.stderr.splitlines() if "fer-edge" in line]
    assert not ours, "\n".join(ours)


def test_verify_catches_a_broken_unit(systemd_analyze: str, unit_root: Path):
    """The verify check above can fail: a missing ExecStart binary and a bad value are reported."""
    (unit_root / EXEC_START.split()[0].lstrip("/")).unlink()
    result = run([systemd_analyze, "verify", f"--root={unit_root}", "fer-edge.service"])
    assert result.returncode != 0 and "is not executable" in result.stderr
    unit = unit_root / "etc/systemd/system/fer-edge.service"
    lines = UNIT.read_text().splitlines()
    lines[lines.index("WatchdogSec=30")] = "WatchdogSec=thirty"
    unit.write_text("\n".join(lines) + "\n")
    result = run([systemd_analyze, "verify", f"--root={unit_root}", "fer-edge.service"])
    bad_line = lines.index("WatchdogSec=thirty") + 1
    assert f"fer-edge.service:{bad_line}: Failed to parse" in result.stderr, result.stderr


def test_unit_exposure_score_is_at_most_2_5(systemd_analyze: str):
    result = run([systemd_analyze, "security", "--offline=true", "--no-pager", str(UNIT)])
    match = re.search(r"Overall exposure level for fer-edge\.service: (\d+\.\d+)", result.stdout)
    if match is None and "--offline" in result.stderr:
        pytest.skip(f"this systemd-analyze has no offline security mode: {result.stderr.strip()}")
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


# ---- Ansible -------------------------------------------------------------------------------

def test_playbook_syntax_check(ansible_bin: Path):
    result = run([str(ansible_bin / "ansible-playbook"), "--syntax-check", "site.yml"],
                 cwd=ANSIBLE_DIR, env=ansible_env(ansible_bin))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile(ansible_bin: Path):
    result = run([str(ansible_bin / "ansible-lint"), "--nocolor", "--profile", "production",
                  "--offline", "ansible/"], cwd=REPO, env=ansible_env(ansible_bin))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def render_config(ansible_bin: Path, tmp_path: Path, extra_vars: dict) -> dict:
    """Render roles/fer_edge/templates/config.toml.j2 with the role defaults plus extra_vars
    (through ansible itself, on localhost) and return the parsed TOML."""
    out = tmp_path / "config.toml"
    playbook = tmp_path / "render.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - name: Render config.toml
          hosts: localhost
          gather_facts: false
          connection: local
          vars_files:
            - {ANSIBLE_DIR / 'roles/fer_edge/defaults/main.yml'}
          tasks:
            - name: Template
              ansible.builtin.template:
                src: {ANSIBLE_DIR / 'roles/fer_edge/templates/config.toml.j2'}
                dest: {out}
                mode: "0600"
        """))
    vars_file = tmp_path / "vars.json"
    # The venv's own Python on localhost (interpreter discovery may find a broken shim).
    vars_file.write_text(json.dumps({"ansible_python_interpreter": str(ansible_bin / "python"), **extra_vars}))
    result = run([str(ansible_bin / "ansible-playbook"), "-i", "localhost,", str(playbook),
                  "-e", f"@{vars_file}"], cwd=ANSIBLE_DIR, env=ansible_env(ansible_bin))
    assert result.returncode == 0, result.stdout + result.stderr
    return tomllib.loads(out.read_text())


def test_config_template_writes_the_contract_keys(ansible_bin: Path, tmp_path: Path):
    cfg = render_config(ansible_bin, tmp_path, {
        "fer_edge_device_id": "classroom-3", "fer_edge_mqtt_host": "10.0.0.5",
        "fer_edge_model_src": "/srv/models/my_model.tflite", "fer_edge_detector_min_score": 0.6})
    expected = {
        "device": {"id"}, "camera": {"source"}, "detector": {"type", "min_score"},
        "model": {"path", "accelerator", "device"},
        "mqtt": {"host", "port", "prefix", "username", "password_file", "password_env", "tls"},
        "events": {"interval_s"}, "summary": {"interval_s"}, "stats": {"interval_s"},
        "privacy": {"publish_crops"}, "outbox": {"path", "max_events", "max_age_s"},
        "watchdog": {"stall_s"}}
    assert {k: set(v) for k, v in cfg.items()} == expected
    assert set(cfg["mqtt"]["tls"]) == {"enabled", "ca_file", "certfile", "keyfile"}
    assert cfg["device"]["id"] == "classroom-3" and cfg["mqtt"]["username"] == "classroom-3"
    assert cfg["mqtt"]["host"] == "10.0.0.5" and cfg["mqtt"]["port"] == 1883
    assert cfg["mqtt"]["password_file"] == ""  # systemd credential, never the password itself
    assert cfg["model"]["path"] == "/opt/fer-edge/models/my_model.tflite"
    assert cfg["detector"]["min_score"] == 0.6 and cfg["privacy"]["publish_crops"] is False
    assert cfg["camera"]["source"] == "picamera2"
    try:  # the daemon's own validation, once edge/config.py is merged
        from edge.config import load_config
    except ImportError:
        return
    load_config(tmp_path / "config.toml")


def test_config_template_types_usb_index_and_default_model(ansible_bin: Path, tmp_path: Path):
    """A USB camera index stays a TOML integer; no custom model: no model.path key."""
    cfg = render_config(ansible_bin, tmp_path, {"fer_edge_camera_source": 0,
                                                "fer_edge_mqtt_tls_enabled": True})
    assert cfg["camera"]["source"] == 0 and "path" not in cfg["model"]
    assert cfg["mqtt"]["tls"]["enabled"] is True


# ---- real target ---------------------------------------------------------------------------

@pytest.mark.slow
def test_real_target_provisioning_is_idempotent():
    """Provision a debootstrapped Debian 12 through the chroot connection, twice (second run
    changed=0), upgrade it from a changed tree, then check the installed result
    (tests/deploy/real_target.sh)."""
    if os.environ.get("FER_DEPLOY_REAL_TARGET") != "1":
        pytest.skip("set FER_DEPLOY_REAL_TARGET=1 to provision a real chroot target (root, minutes)")
    if os.geteuid() != 0:
        pytest.skip("tests/deploy/real_target.sh needs root (debootstrap, chroot, mount)")
    result = run(["bash", str(REPO / "tests" / "deploy" / "real_target.sh")], cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    recaps = re.findall(r"^fer-target\s+:.*$", result.stdout, flags=re.M)
    assert len(recaps) == 3 and " changed=0 " in recaps[1] and " failed=0 " in recaps[1], recaps
    assert "ok: upgrade reinstalled the changed code" in result.stdout
