"""Deployment checks: the systemd units of the daemon and the dashboard (systemd-analyze verify /
security) and the Ansible playbook (syntax check, ansible-lint production profile, config.toml and
dashboard.toml templates).

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
DASH_UNIT = REPO / "systemd" / "fer-edge-dashboard.service"
DASH_DROPINS = REPO / "systemd" / "fer-edge-dashboard.service.d"
DASH_EXEC_START = "/opt/fer-edge-dashboard/venv/bin/fer-edge dashboard --config /etc/fer-edge/dashboard.toml"
# No devices, no udev: the dashboard's unit is held to a tighter bar than the daemon's (measured: 1.1).
MAX_DASH_EXPOSURE = 1.5


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


def make_unit_root(root: Path, unit: Path, dropins: Path, exec_start: str) -> Path:
    """A root directory where ``unit`` can be verified: the host's stock units (targets the unit
    refers to), the unit and all its drop-in examples, and an executable at the ExecStart path
    (what Ansible installs there is covered by tests/deploy/real_target.sh)."""
    stock = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)
    if stock is None:
        pytest.skip("no /usr/lib/systemd/system on this machine to resolve the unit's dependencies")
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    unit_dir = root / "etc/systemd/system"
    (unit_dir / f"{unit.name}.d").mkdir(parents=True)
    shutil.copy(unit, unit_dir / unit.name)
    for example in dropins.glob("*.conf.example"):
        shutil.copy(example, unit_dir / f"{unit.name}.d" / example.name.removesuffix(".example"))
    exe = root / exec_start.split()[0].lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return root


# Per unit: (file, drop-ins folder, ExecStart, highest `systemd-analyze security` exposure).
UNITS = {
    "fer-edge": (UNIT, DROPINS, EXEC_START, MAX_EXPOSURE),
    "fer-edge-dashboard": (DASH_UNIT, DASH_DROPINS, DASH_EXEC_START, MAX_DASH_EXPOSURE),
}


def verify_unit(systemd_analyze: str, root: Path, name: str) -> subprocess.CompletedProcess:
    """``systemd-analyze verify`` of ``name``.service under ``root`` (a make_unit_root tree)."""
    return run([systemd_analyze, "verify", f"--root={root}", f"{name}.service"])


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


@pytest.mark.parametrize("name", UNITS)
def test_unit_and_dropins_pass_systemd_analyze_verify(systemd_analyze: str, tmp_path: Path, name: str):
    unit, dropins, exec_start, _ = UNITS[name]
    result = verify_unit(systemd_analyze, make_unit_root(tmp_path, unit, dropins, exec_start), name)
    assert result.returncode == 0, result.stderr
    # verify only warns (exit 0) about e.g. unknown keys: treat any message about our unit as failure.
    ours = [line for line in result.stderr.splitlines() if name in line]
    assert not ours, "\n".join(ours)


@pytest.mark.parametrize("name, edits, also", [
    ("fer-edge", {"WatchdogSec=30": "WatchdogSec=thirty"}, []),
    # %d (the credentials directory) is resolved in Environment=; a wrong specifier is reported.
    ("fer-edge-dashboard", {"RestartSec=5": "RestartSec=five",
                            "Environment=PGPASSFILE=%d/pgpass": "Environment=PGPASSFILE=%Q/pgpass"},
     ["Failed to resolve specifiers in PGPASSFILE=%Q/pgpass"]),
])
def test_verify_catches_a_broken_unit(systemd_analyze: str, tmp_path: Path, name: str, edits: dict, also: list):
    """The verify check above can fail: a missing ExecStart binary and a bad value are reported."""
    unit, dropins, exec_start, _ = UNITS[name]
    root = make_unit_root(tmp_path, unit, dropins, exec_start)
    (root / exec_start.split()[0].lstrip("/")).unlink()
    result = verify_unit(systemd_analyze, root, name)
    assert result.returncode != 0 and "is not executable" in result.stderr
    lines = unit.read_text().splitlines()
    for good, bad in edits.items():
        lines[lines.index(good)] = bad
    (root / f"etc/systemd/system/{name}.service").write_text("\n".join(lines) + "\n")
    result = verify_unit(systemd_analyze, root, name)
    bad_line = lines.index(next(iter(edits.values()))) + 1
    assert f"{name}.service:{bad_line}: Failed to parse" in result.stderr, result.stderr
    for text in also:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize("name", UNITS)
def test_unit_exposure_score_is_within_its_limit(systemd_analyze: str, name: str):
    """fer-edge.service at most 2.5 (it needs devices), fer-edge-dashboard.service at most 1.5."""
    unit, *_, limit = UNITS[name]
    result = run([systemd_analyze, "security", "--offline=true", "--no-pager", str(unit)])
    match = re.search(rf"Overall exposure level for {re.escape(name)}\.service: (\d+\.\d+)", result.stdout)
    if match is None and "--offline" in result.stderr:
        pytest.skip(f"this systemd-analyze has no offline security mode: {result.stderr.strip()}")
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= limit, result.stdout


# ---- dashboard unit ----------------------------------------------------------------------------

def test_dashboard_unit_keeps_the_service_contract():
    """ExecStart with the config, user, directories, credentials and no device access."""
    e = unit_entries(DASH_UNIT)
    svc = lambda key: e.get(("Service", key), [])  # noqa: E731
    assert svc("ExecStart") == [DASH_EXEC_START]
    assert svc("Type") == ["exec"] and svc("Restart") == ["on-failure"]
    assert svc("User") == ["fer-edge-dashboard"] and svc("Group") == ["fer-edge-dashboard"]
    assert not svc("SupplementaryGroups") and not svc("DeviceAllow")
    assert svc("PrivateDevices") == ["yes"] and svc("DevicePolicy") == ["closed"]
    assert svc("StateDirectory") == ["fer-edge-dashboard"] and svc("StateDirectoryMode") == ["0700"]
    assert svc("WorkingDirectory") == ["/var/lib/fer-edge-dashboard"]
    # Shared with fer-edge.service on a host that runs both: same directory, same mode.
    assert svc("ConfigurationDirectory") == ["fer-edge"] and svc("ConfigurationDirectoryMode") == ["0755"]
    assert svc("LoadCredential") == ["mqtt_password:/etc/fer-edge/dashboard-mqtt_password",
                                     "pgpass:/etc/fer-edge/dashboard-pgpass"]
    assert "PGPASSFILE=%d/pgpass" in svc("Environment")
    assert e[("Unit", "StartLimitBurst")] and e[("Unit", "StartLimitIntervalSec")]
    assert set(svc("RestrictAddressFamilies")[0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # Every hardening switch of the daemon's unit that does not concern devices is set here too.
    daemon = unit_entries(UNIT)
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateMounts", "ProtectProc",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                "ProtectClock", "ProtectHostname", "RestrictSUIDSGID", "RemoveIPC", "CapabilityBoundingSet",
                "AmbientCapabilities", "RestrictNamespaces", "LockPersonality", "RestrictRealtime",
                "MemoryDenyWriteExecute", "SystemCallArchitectures", "KeyringMode", "UMask"):
        assert svc(key) == daemon[("Service", key)], key
    assert svc("SystemCallFilter")[0] == "@system-service" and "~@privileged" in svc("SystemCallFilter")[1]
    # Secrets never on the command line.
    assert not re.search(r"--(token|users)-file|password", svc("ExecStart")[0])


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


def render_templates(ansible_bin: Path, tmp_path: Path, role: str, templates: list[str], extra_vars: dict) -> list[str]:
    """Render roles/<role>/templates/<name> for each name with the role defaults plus extra_vars
    (through ansible itself, on localhost) and return the texts."""
    playbook = tmp_path / "render.yml"
    tasks = "".join(textwrap.indent(textwrap.dedent(f"""\
        - name: Template {name}
          ansible.builtin.template:
            src: {ANSIBLE_DIR / 'roles' / role / 'templates' / name}
            dest: {tmp_path / name.removesuffix('.j2')}
            mode: "0600"
        """), "    ") for name in templates)
    playbook.write_text(textwrap.dedent(f"""\
        - name: Render templates
          hosts: localhost
          gather_facts: false
          connection: local
          vars_files:
            - {ANSIBLE_DIR / 'roles' / role / 'defaults/main.yml'}
          tasks:
        """) + tasks)
    vars_file = tmp_path / "vars.json"
    # The venv's own Python on localhost (interpreter discovery may find a broken shim).
    vars_file.write_text(json.dumps({"ansible_python_interpreter": str(ansible_bin / "python"), **extra_vars}))
    result = run([str(ansible_bin / "ansible-playbook"), "-i", "localhost,", str(playbook),
                  "-e", f"@{vars_file}"], cwd=ANSIBLE_DIR, env=ansible_env(ansible_bin))
    assert result.returncode == 0, result.stdout + result.stderr
    return [(tmp_path / name.removesuffix(".j2")).read_text() for name in templates]


def render_config(ansible_bin: Path, tmp_path: Path, extra_vars: dict) -> dict:
    """roles/fer_edge/templates/config.toml.j2 rendered with the role defaults plus extra_vars, parsed."""
    return tomllib.loads(render_templates(ansible_bin, tmp_path, "fer_edge", ["config.toml.j2"], extra_vars)[0])


def test_config_template_writes_the_contract_keys(ansible_bin: Path, tmp_path: Path):
    cfg = render_config(ansible_bin, tmp_path, {
        "fer_edge_device_id": "classroom-3", "fer_edge_mqtt_host": "10.0.0.5",
        "fer_edge_model_src": "/srv/models/my_model.tflite", "fer_edge_detector_min_score": 0.6})
    expected = {
        "device": {"id", "role"}, "camera": {"source"}, "detector": {"min_score"}, "pipeline": set(),
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


def test_config_template_leaves_detector_and_workers_to_the_role(ansible_bin: Path, tmp_path: Path):
    """By default the file sets no detector key and no workers: the role and the core count decide, as in
    `fer-edge run` without a file (a written min_score would turn auto's second look off)."""
    from edge.config import load_config

    cfg = render_config(ansible_bin, tmp_path, {"fer_edge_device_role": "driver", "fer_edge_pipeline_workers": 3})
    assert cfg["device"]["role"] == "driver" and cfg["detector"] == {} and cfg["pipeline"] == {"workers": 3}
    loaded = load_config(tmp_path / "config.toml")
    assert loaded.detector.type == "driver" and loaded.attention.alerts and loaded.pipeline.workers == 3
    cfg = render_config(ansible_bin, tmp_path, {"fer_edge_detector_type": "classroom"})
    assert cfg["device"]["role"] == "general" and cfg["detector"] == {"type": "classroom"} and cfg["pipeline"] == {}


def test_config_template_types_usb_index_and_default_model(ansible_bin: Path, tmp_path: Path):
    """A USB camera index stays a TOML integer; no custom model: no model.path key."""
    cfg = render_config(ansible_bin, tmp_path, {"fer_edge_camera_source": 0,
                                                "fer_edge_mqtt_tls_enabled": True})
    assert cfg["camera"]["source"] == 0 and "path" not in cfg["model"]
    assert cfg["mqtt"]["tls"]["enabled"] is True


def render_dashboard(ansible_bin: Path, tmp_path: Path, extra_vars: dict):
    """(dashboard.toml parsed by the dashboard's own loader, its TOML dict, the pgpass text)."""
    toml_text, pgpass = render_templates(ansible_bin, tmp_path, "dashboard", ["dashboard.toml.j2", "pgpass.j2"],
                                         {"inventory_hostname": "dash-1", **extra_vars})
    pytest.importorskip("pydantic")
    from dashboard.config import load_dashboard_config

    return load_dashboard_config(tmp_path / "dashboard.toml"), tomllib.loads(toml_text), pgpass


def test_dashboard_config_template_defaults(ansible_bin: Path, tmp_path: Path):
    """Role defaults: loopback, SQLite in the StateDirectory, no auth, no secret in the file, empty pgpass."""
    cfg, doc, pgpass = render_dashboard(ansible_bin, tmp_path, {"dashboard_mqtt_password": "s3cret"})
    assert set(doc) == {"mqtt", "dashboard"}
    assert cfg.listen == "127.0.0.1:8080" and cfg.db == "/var/lib/fer-edge-dashboard/dashboard.sqlite"
    assert cfg.mqtt.host == "127.0.0.1" and cfg.mqtt.username == "dashboard" and cfg.mqtt.prefix == "fer"
    assert cfg.mqtt.password_file == ""  # systemd credential, never the password itself
    assert cfg.worker_name == "dash-1" and (cfg.retention_days, cfg.raw_days) == (365, 7) and cfg.groups == {}
    assert cfg.auth.token_file == "" and cfg.auth.users_file == "" and not cfg.is_postgres
    assert "s3cret" not in (tmp_path / "dashboard.toml").read_text() and pgpass == ""
    from dashboard.config import check_security

    check_security(cfg)  # loopback without auth is allowed


def test_dashboard_config_template_postgres_auth_and_groups(ansible_bin: Path, tmp_path: Path):
    """PostgreSQL URL without the password, pgpass with libpq's escaping, auth files, groups, alerts, TLS."""
    cfg, doc, pgpass = render_dashboard(ansible_bin, tmp_path, {
        "dashboard_listen": "0.0.0.0:8443", "dashboard_auth_token": "tok", "dashboard_auth_users": [
            {"name": "alice", "password": "pw"}],
        "dashboard_pg_host": "db.lan", "dashboard_pg_user": "fer@x", "dashboard_pg_password": "p:a\\ss",
        "dashboard_pg_sslmode": "verify-full", "dashboard_groups": {"building-a": ["room-1", "room-2"]},
        "dashboard_alerts_devices": ["bus-1"], "dashboard_alerts_negative_s": 7, "dashboard_mqtt_tls_enabled": True,
        "dashboard_mqtt_port": 8883, "dashboard_mqtt_tls_ca_file": "/etc/fer-edge/ca.pem"})
    assert cfg.is_postgres and cfg.db == "postgresql://fer%40x@db.lan:5432/fer?sslmode=verify-full"
    assert "p:a" not in (tmp_path / "dashboard.toml").read_text()
    assert pgpass == "*:5432:fer:fer@x:p\\:a\\\\ss\n"
    assert cfg.listen == "0.0.0.0:8443" and cfg.host == "0.0.0.0"
    assert cfg.auth.token_file == "/etc/fer-edge/dashboard-token" and cfg.auth.users_file == "/etc/fer-edge/dashboard-users"
    assert cfg.groups == {"building-a": ["room-1", "room-2"]}
    assert cfg.alerts.devices == ["bus-1"] and cfg.alerts.negative_s == 7
    assert cfg.mqtt.tls.enabled is True and cfg.mqtt.port == 8883 and cfg.mqtt.tls.ca_file == "/etc/fer-edge/ca.pem"
    assert doc["dashboard"]["auth"] == {"token_file": "/etc/fer-edge/dashboard-token",
                                        "users_file": "/etc/fer-edge/dashboard-users"}


def test_dashboard_role_refuses_an_open_non_loopback_listen(ansible_bin: Path, tmp_path: Path):
    """The role's assert: 0.0.0.0 without a token or users (or with a blank token) stops the run before
    anything is installed; 127.0.0.1, [::1] and a token pass."""
    tasks = ANSIBLE_DIR / "roles/dashboard/tasks/main.yml"
    playbook = tmp_path / "assert.yml"
    # Only the role's first two tasks (the asserts), run against localhost; PyYAML comes with
    # ansible in the deploy venv (JSON is YAML, so the playbook is written as JSON).
    cut = run([str(ansible_bin / "python"), "-c", "import json, sys, yaml; "
               "print(json.dumps(yaml.safe_load(open(sys.argv[1]))[:2]))", str(tasks)])
    assert cut.returncode == 0, cut.stderr
    asserts = json.loads(cut.stdout)
    assert all("ansible.builtin.assert" in t for t in asserts)
    playbook.write_text(json.dumps([{
        "name": "Asserts", "hosts": "localhost", "gather_facts": False, "connection": "local",
        "vars_files": [str(ANSIBLE_DIR / "roles/dashboard/defaults/main.yml")], "tasks": asserts}]))
    outcomes = {}
    for listen, token in (("0.0.0.0:8080", ""), ("0.0.0.0:8080", "  "), ("127.0.0.1:8080", ""), ("[::1]:8080", ""),
                          ("0.0.0.0:8080", "t")):
        vars_file = tmp_path / "vars.json"
        vars_file.write_text(json.dumps({"ansible_python_interpreter": str(ansible_bin / "python"),
                                         "inventory_hostname": "dash-1", "dashboard_listen": listen,
                                         "dashboard_auth_token": token}))
        result = run([str(ansible_bin / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", f"@{vars_file}"],
                     cwd=ANSIBLE_DIR, env=ansible_env(ansible_bin))
        outcomes[(listen, token)] = result.returncode
        if result.returncode:
            assert "is not a loopback address" in result.stdout, result.stdout
    # A blank token would be read as no token, i.e. no auth: refused like none.
    assert outcomes == {("0.0.0.0:8080", ""): 2, ("0.0.0.0:8080", "  "): 2, ("127.0.0.1:8080", ""): 0,
                        ("[::1]:8080", ""): 0, ("0.0.0.0:8080", "t"): 0}, outcomes


# ---- real target ---------------------------------------------------------------------------

@pytest.mark.slow
def test_real_target_provisioning_is_idempotent():
    """Provision a debootstrapped Debian 12 through the chroot connection, twice (second run
    changed=0), upgrade it from a changed tree, then check the installed result, the daemon's and
    the dashboard's (tests/deploy/real_target.sh)."""
    if os.environ.get("FER_DEPLOY_REAL_TARGET") != "1":
        pytest.skip("set FER_DEPLOY_REAL_TARGET=1 to provision a real chroot target (root, minutes)")
    if os.geteuid() != 0:
        pytest.skip("tests/deploy/real_target.sh needs root (debootstrap, chroot, mount)")
    result = run(["bash", str(REPO / "tests" / "deploy" / "real_target.sh")], cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    recaps = re.findall(r"^fer-target\s+:.*$", result.stdout, flags=re.M)
    assert len(recaps) == 3 and " changed=0 " in recaps[1] and " failed=0 " in recaps[1], recaps
    assert "ok: upgrade reinstalled the changed code" in result.stdout
    assert "ok: with the token /api/devices lists fer-target online" in result.stdout
