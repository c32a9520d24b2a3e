#!/usr/bin/env bash
# Provision a REAL throwaway Debian 12 (bookworm) system with ansible/site.yml, twice (it is
# device, broker and dashboard host at once):
#  1. debootstrap bookworm into /var/tmp/fer-target-base once (cached), copy it to a fresh
#     /var/tmp/fer-target for every run;
#  2. run the playbook through the chroot connection (no SSH, no Docker), for real;
#  3. run it again: the second PLAY RECAP must say changed=0; a third run from a changed
#     source tree (same version) must reinstall the new code through the handler;
#  4. check the result inside the target: fer-edge --help, systemd-analyze verify of the
#     installed unit, unit enabled, service user and groups, secrets' modes, config.toml
#     parses, and the mosquitto ACL with a real broker started from the installed files; the
#     same for fer-edge-dashboard.service, and the installed dashboard run as its service user
#     against that broker (MQTT login, alert ACL, token auth, a device seen).
# Needs root (chroot, mounts). Takes a few minutes (pip downloads the [edge] and [dashboard] wheels).
#   tests/deploy/real_target.sh            # FER_TARGET=/var/tmp/fer-target by default
#   FER_TARGET_CHECK_ONLY=1 tests/deploy/real_target.sh   # only step 4, on the existing target
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT_DIR="$PWD"
BASE="${FER_TARGET_BASE:-/var/tmp/fer-target-base}"
export FER_TARGET="${FER_TARGET:-/var/tmp/fer-target}"
LOGS="${FER_TARGET_LOGS:-build/deploy-logs}"
VENV="${FER_DEPLOY_VENV:-build/deploy-venv}"

[ "$(id -u)" -eq 0 ] || { echo "real_target.sh: needs root (debootstrap, chroot, mount)" >&2; exit 1; }
tests/deploy/setup.sh --target
export PATH="$ROOT_DIR/$VENV/bin:$PATH"
mkdir -p "$LOGS"

# The Debian mirror this machine's apt uses (deb822 or one-line format).
mirror="$(grep -hoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
[ -n "$mirror" ] || mirror="$(grep -hoE '^deb +\S+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

if [ ! -x "$BASE/usr/bin/python3" ]; then
  # Raspberry Pi OS Lite ships python3, sudo and systemd: include them to start from the same point.
  echo "== debootstrap bookworm from $mirror into $BASE"
  rm -rf "$BASE.partial"
  debootstrap --include=python3,python3-venv,ca-certificates,sudo,systemd-sysv \
    bookworm "$BASE.partial" "$mirror" > "$LOGS/debootstrap.log"
  mv "$BASE.partial" "$BASE"
fi

unmount_target() {
  for m in dev/pts proc sys; do
    if mountpoint -q "$FER_TARGET/$m" 2>/dev/null; then umount -l "$FER_TARGET/$m"; fi
  done
}
mount_target() {
  mount -t proc proc "$FER_TARGET/proc"
  mount -t sysfs sysfs "$FER_TARGET/sys"
  mount -t devpts devpts "$FER_TARGET/dev/pts"
}
trap unmount_target EXIT
unmount_target
if [ "${FER_TARGET_CHECK_ONLY:-0}" = 1 ]; then
  echo "== FER_TARGET_CHECK_ONLY=1: checking the existing $FER_TARGET without provisioning it"
  [ -x "$FER_TARGET/opt/fer-edge/venv/bin/fer-edge" ] || { echo "real_target.sh: $FER_TARGET is not provisioned" >&2; exit 1; }
  mount_target
else
  echo "== fresh target $FER_TARGET (copy of $BASE)"
  rm -rf "$FER_TARGET"
  cp -a "$BASE" "$FER_TARGET"
  cp /etc/resolv.conf "$FER_TARGET/etc/resolv.conf"
  # No init system runs here: package scripts must not try to start services (101 = action forbidden).
  printf '#!/bin/sh\nexit 101\n' > "$FER_TARGET/usr/sbin/policy-rc.d"
  chmod 0755 "$FER_TARGET/usr/sbin/policy-rc.d"
  # Local CAs this machine trusts (a TLS-intercepting egress proxy, a site CA): the target needs
  # them too, or pip cannot reach PyPI from inside it. A Pi on an open network needs nothing.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$FER_TARGET/usr/local/share/ca-certificates/"
    chroot "$FER_TARGET" update-ca-certificates > /dev/null 2>&1
  fi
  mount_target

  # Coral's repository is outside the reachable networks in some sandboxes: use it when it answers.
  if curl -fsS -m 15 -o /dev/null https://packages.cloud.google.com/apt/doc/apt-key.gpg; then
    export FER_CORAL_REPO=true
  else
    export FER_CORAL_REPO=false
    echo "== packages.cloud.google.com unreachable: skipping Coral's apt repo and libedgetpu (edgetpu_repo_enabled=false)"
  fi

  cd ansible
  export ANSIBLE_NOCOLOR=1
  for run in 1 2; do
    echo "== ansible-playbook run $run"
    # Modules run in the target with this process's environment: drop the host's pip settings
    # (find-links to a host-only folder); CA variables point at the same path in the target.
    if ! env -u PIP_FIND_LINKS -u PIP_CONSTRAINT ansible-playbook -i ../tests/deploy/inventory-chroot.yml site.yml > "../$LOGS/run$run.log" 2>&1; then
      tail -n 60 "../$LOGS/run$run.log"; echo "real_target.sh: run $run failed (log: $LOGS/run$run.log)" >&2; exit 1
    fi
    grep -A3 '^PLAY RECAP' "../$LOGS/run$run.log"
  done
  cd ..
  recap2="$(grep -A2 '^PLAY RECAP' "$LOGS/run2.log" | grep -E '^fer-target ')"
  echo "$recap2" | grep -q ' changed=0 ' || { echo "real_target.sh: second run changed something (not idempotent)" >&2
    grep -E '^(changed|TASK)' "$LOGS/run2.log" | grep -B1 '^changed' >&2; exit 1; }
  echo "$recap2" | grep -q ' failed=0 ' || { echo "real_target.sh: second run failed" >&2; exit 1; }

  # Upgrade path: a changed source tree gives a new wheel; the copy notifies the reinstall
  # handler (same version number, so plain `pip install` would keep the old code).
  echo "== ansible-playbook run 3 (upgrade: changed source tree, same version)"
  upgrade_src="$(mktemp -d)"
  tar --exclude=./build --exclude=./.git --exclude='./.venv*' -cf - . | tar -xf - -C "$upgrade_src"
  marker="upgrade-$(date +%s)"
  echo "DEPLOY_UPGRADE_MARKER = '$marker'  # written by tests/deploy/real_target.sh" >> "$upgrade_src/fer_edge/__init__.py"
  (cd ansible && env -u PIP_FIND_LINKS -u PIP_CONSTRAINT ansible-playbook -i ../tests/deploy/inventory-chroot.yml site.yml \
     -e "fer_edge_source_dir=$upgrade_src" -e "fer_edge_wheel_build_dir=$upgrade_src/build/ansible-wheel" \
     > "../$LOGS/run3.log" 2>&1) || { tail -n 40 "$LOGS/run3.log"; echo "real_target.sh: run 3 failed" >&2; exit 1; }
  grep -A2 '^PLAY RECAP' "$LOGS/run3.log" | grep -E '^fer-target '
  grep -A1 'RUNNING HANDLER \[fer_edge : Reinstall fer-edge\]' "$LOGS/run3.log" | grep -q '^changed' \
    || { echo "real_target.sh: the new wheel did not trigger the reinstall handler" >&2; exit 1; }
  got="$(chroot "$FER_TARGET" /opt/fer-edge/venv/bin/python -c 'import fer_edge; print(fer_edge.DEPLOY_UPGRADE_MARKER)')"
  [ "$got" = "$marker" ] || { echo "real_target.sh: upgraded code not installed ($got != $marker)" >&2; exit 1; }
  grep -A1 'RUNNING HANDLER \[dashboard : Reinstall the fer-edge dashboard\]' "$LOGS/run3.log" | grep -q '^changed' \
    || { echo "real_target.sh: the new wheel did not trigger the dashboard's reinstall handler" >&2; exit 1; }
  got="$(chroot "$FER_TARGET" /opt/fer-edge-dashboard/venv/bin/python -c 'import fer_edge; print(fer_edge.DEPLOY_UPGRADE_MARKER)')"
  [ "$got" = "$marker" ] || { echo "real_target.sh: upgraded code not in the dashboard venv ($got != $marker)" >&2; exit 1; }
  echo "ok: upgrade reinstalled the changed code"
  rm -rf "$upgrade_src"
fi

echo "== checks inside the target"
in_target() { chroot "$FER_TARGET" "$@"; }
fail() { echo "real_target.sh: FAILED: $*" >&2; exit 1; }
check() {  # check "what" command...: print ok, or stop the script
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else fail "$what"; fi
}
check "/opt/fer-edge/venv/bin/fer-edge --help" in_target sh -c "/opt/fer-edge/venv/bin/fer-edge --help > /dev/null"
check "systemd-analyze verify (the target's systemd, inside the chroot)" \
  in_target systemd-analyze verify /etc/systemd/system/fer-edge.service
check "systemd-analyze verify --root=$FER_TARGET" systemd-analyze verify --root="$FER_TARGET" fer-edge.service
systemd-analyze security --root="$FER_TARGET" --offline=true fer-edge.service 2>/dev/null | tail -n1
check "fer-edge.service enabled" test "$(systemctl --root="$FER_TARGET" is-enabled fer-edge.service)" = enabled
check "mosquitto.service enabled" test "$(systemctl --root="$FER_TARGET" is-enabled mosquitto.service)" = enabled
check "/opt/fer-edge-dashboard/venv/bin/fer-edge dashboard --help" \
  in_target sh -c "/opt/fer-edge-dashboard/venv/bin/fer-edge dashboard --help > /dev/null"
check "dashboard unit: systemd-analyze verify (the target's systemd, inside the chroot)" \
  in_target systemd-analyze verify /etc/systemd/system/fer-edge-dashboard.service
check "dashboard unit: systemd-analyze verify --root=$FER_TARGET" systemd-analyze verify --root="$FER_TARGET" fer-edge-dashboard.service
systemd-analyze security --root="$FER_TARGET" --offline=true fer-edge-dashboard.service 2>/dev/null | tail -n1
check "fer-edge-dashboard.service enabled" test "$(systemctl --root="$FER_TARGET" is-enabled fer-edge-dashboard.service)" = enabled
check "user fer-edge-dashboard only in its own group" test "$(in_target id -nG fer-edge-dashboard)" = fer-edge-dashboard
check "fer-edge-dashboard: nologin shell" test "$(in_target getent passwd fer-edge-dashboard | cut -d: -f7)" = /usr/sbin/nologin
check "dashboard.toml 640 root:fer-edge-dashboard" \
  test "$(in_target stat -c '%a %U %G' /etc/fer-edge/dashboard.toml)" = "640 root fer-edge-dashboard"
check "dashboard-mqtt_password 600 root:root, the vault value" \
  test "$(in_target stat -c '%a %U %G' /etc/fer-edge/dashboard-mqtt_password)|$(cat "$FER_TARGET/etc/fer-edge/dashboard-mqtt_password")" = "600 root root|chroot-dashboard-password"
check "dashboard-pgpass 600 root:root, empty (SQLite)" \
  test "$(in_target stat -c '%a %U %G %s' /etc/fer-edge/dashboard-pgpass)" = "600 root root 0"
check "dashboard-token 640 root:fer-edge-dashboard" \
  test "$(in_target stat -c '%a %U %G' /etc/fer-edge/dashboard-token)" = "640 root fer-edge-dashboard"
check "no users file (none configured)" test ! -e "$FER_TARGET/etc/fer-edge/dashboard-users"
! grep -q chroot-dashboard-password "$FER_TARGET/etc/fer-edge/dashboard.toml" || fail "broker password in dashboard.toml"
in_target /opt/fer-edge-dashboard/venv/bin/python - <<'PY'
from dashboard.config import check_security, load_dashboard_config
cfg = load_dashboard_config("/etc/fer-edge/dashboard.toml")
check_security(cfg)
assert cfg.listen == "0.0.0.0:8080" and cfg.db == "/var/lib/fer-edge-dashboard/dashboard.sqlite", cfg
assert cfg.mqtt.username == "dashboard" and cfg.mqtt.password_file == "" and cfg.groups == {"room-a": ["fer-target"]}
assert cfg.auth.token_file == "/etc/fer-edge/dashboard-token" and cfg.auth.users_file == ""
print("ok: dashboard.toml passes dashboard.config (load_dashboard_config, check_security)")
PY
groups="$(in_target id -nG fer-edge)"
for g in fer-edge video plugdev; do check "user fer-edge in group $g" test -n "$(echo " $groups " | grep " $g ")"; done
check "nologin shell" test "$(in_target getent passwd fer-edge | cut -d: -f7)" = /usr/sbin/nologin
check "mqtt_password 600 root:root" test "$(in_target stat -c '%a %U %G' /etc/fer-edge/mqtt_password)" = "600 root root"
check "mqtt_password holds the vault value" test "$(cat "$FER_TARGET/etc/fer-edge/mqtt_password")" = chroot-test-password
check "/etc/fer-edge 755 root:root (as ConfigurationDirectoryMode)" test "$(in_target stat -c '%a %U %G' /etc/fer-edge)" = "755 root root"
check "config.toml 640 root:fer-edge" test "$(in_target stat -c '%a %U %G' /etc/fer-edge/config.toml)" = "640 root fer-edge"
check "mosquitto password file hashed, 640 root:mosquitto" \
  test "$(in_target stat -c '%a %U %G' /etc/mosquitto/fer-edge.passwd)" = "640 root mosquitto"
! grep -q chroot-test-password "$FER_TARGET/etc/mosquitto/fer-edge.passwd" || fail "plain-text password in fer-edge.passwd"
check "venv sees system site-packages" grep -qx 'include-system-site-packages = true' "$FER_TARGET/opt/fer-edge/venv/pyvenv.cfg"
in_target /opt/fer-edge/venv/bin/python - <<'PY'
import tomllib
cfg = tomllib.load(open("/etc/fer-edge/config.toml", "rb"))
assert cfg["device"]["id"] == "fer-target", cfg["device"]
assert cfg["mqtt"]["host"] == "127.0.0.1" and cfg["mqtt"]["username"] == "fer-target", cfg["mqtt"]
assert cfg["camera"]["source"] == "sample"
try:  # the daemon's own validation, once edge/config.py exists in the installed package
    from edge.config import load_config
except ImportError:
    print("ok: config.toml parses (edge.config not in this build: pydantic validation skipped)")
else:
    load_config("/etc/fer-edge/config.toml")
    print("ok: config.toml passes edge.config.load_config")
PY

echo "== mosquitto ACL with the installed password and ACL files"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat > "$FER_TARGET/tmp/acl-test.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous false
password_file /etc/mosquitto/fer-edge.passwd
acl_file /etc/mosquitto/fer-edge.acl
CONF
chroot "$FER_TARGET" mosquitto -c /tmp/acl-test.conf > "$LOGS/mosquitto.log" 2>&1 &
broker_pid=$!
# Ready when a subscriber can connect (-W 1 then times out: exit code 27).
for _ in $(seq 50); do
  rc=0; in_target mosquitto_sub -p "$port" -u dashboard -P chroot-dashboard-password -t x -W 1 -C 1 >/dev/null 2>&1 || rc=$?
  [ "$rc" -eq 27 ] && break; sleep 0.2
done
[ "$rc" -eq 27 ] || fail "test broker did not come up (see $LOGS/mosquitto.log)"
chroot "$FER_TARGET" mosquitto_sub -p "$port" -u dashboard -P chroot-dashboard-password -t 'fer/#' -v -W 6 > "$LOGS/acl-sub.txt" 2>/dev/null &
sub_pid=$!
sleep 1
in_target mosquitto_pub -p "$port" -u fer-target -P chroot-test-password -q 1 -t fer/fer-target/status -m own-topic
in_target mosquitto_pub -p "$port" -u fer-target -P chroot-test-password -q 1 -t fer/classroom-9/status -m foreign-topic || true
if in_target mosquitto_pub -p "$port" -u fer-target -P wrong-password -t fer/fer-target/status -m bad-password 2>/dev/null; then
  fail "broker accepted a wrong password"; fi
wait "$sub_pid" || true
grep -qx 'fer/fer-target/status own-topic' "$LOGS/acl-sub.txt" || { cat "$LOGS/acl-sub.txt" >&2; fail "own-topic message not delivered"; }
! grep -q foreign-topic "$LOGS/acl-sub.txt" || fail "ACL let a device write another device's topic"
echo "ok: device writes fer/fer-target/#, cannot write fer/classroom-9/#, wrong password refused"

echo "== installed dashboard, as its service user, against that broker"
# What the unit does, by hand (no init system here): the user, the config, the broker password
# as a credential ($CREDENTIALS_DIRECTORY/mqtt_password, owner-only like systemd's copy), the
# StateDirectory (0700, the service user's) for the SQLite file the config names. Part of the
# sandbox is emulated too: ProcSubset=pid + ProtectProc=invisible (procfs options), PrivateDevices=
# (a /dev with the pseudo devices only), NoNewPrivileges=, CapabilityBoundingSet= (setpriv) and
# MemoryDenyWriteExecute= (prctl PR_SET_MDWE, Linux >= 6.3; noted when the kernel lacks it). Not
# emulated: PrivateUsers=, the system call filter. Only the broker and listen ports differ.
creds="$FER_TARGET/run/fer-dash-creds"
mkdir -p "$creds" && install -m 0400 "$FER_TARGET/etc/fer-edge/dashboard-mqtt_password" "$creds/mqtt_password"
install -m 0400 /dev/null "$creds/pgpass"
chroot "$FER_TARGET" chown -R fer-edge-dashboard:fer-edge-dashboard /run/fer-dash-creds
chmod 0500 "$creds"
install -d -m 0700 "$FER_TARGET/var/lib/fer-edge-dashboard"
chroot "$FER_TARGET" chown fer-edge-dashboard:fer-edge-dashboard /var/lib/fer-edge-dashboard
web_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# shellcheck disable=SC2016  # expanded by the sh inside the chroot
unshare --mount --propagation private chroot "$FER_TARGET" /bin/sh -c '
  mqtt_port="$0" web_port="$1"
  mount -t proc -o subset=pid,hidepid=invisible proc /proc || { echo "sandbox: procfs subset=pid not supported" >&2; exit 90; }
  mount -t tmpfs -o mode=0755 tmpfs /dev
  for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9"; do set -- $n; mknod -m 0666 "/dev/$1" c "$2" "$3"; done
  cd /var/lib/fer-edge-dashboard
  exec setpriv --reuid=fer-edge-dashboard --regid=fer-edge-dashboard --clear-groups --no-new-privs \
    --bounding-set=-all --inh-caps=-all \
    env -i CREDENTIALS_DIRECTORY=/run/fer-dash-creds PGPASSFILE=/run/fer-dash-creds/pgpass \
      HOME=/var/lib/fer-edge-dashboard PYTHONUNBUFFERED=1 \
    /usr/bin/python3 -c "import ctypes, os, sys
ok = ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) == 0  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
print(\"sandbox: MemoryDenyWriteExecute\", \"emulated (PR_SET_MDWE)\" if ok else \"not emulated (no PR_SET_MDWE)\", file=sys.stderr)
os.execv(sys.argv[1], sys.argv[1:])" \
    /opt/fer-edge-dashboard/venv/bin/fer-edge dashboard --config /etc/fer-edge/dashboard.toml \
      --mqtt-port "$mqtt_port" --listen "127.0.0.1:$web_port"' "$port" "$web_port" > "$LOGS/dashboard.log" 2>&1 &
dash_pid=$!
python3 - "$web_port" "$port" "$FER_TARGET" <<'PY' || { kill "$dash_pid" "$broker_pid" 2>/dev/null; tail -n 30 "$LOGS/dashboard.log" >&2; fail "installed dashboard"; }
import json, subprocess, sys, time, urllib.error, urllib.request
web, broker, root = sys.argv[1:4]
base = f"http://127.0.0.1:{web}"
def get(path, token=None):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
deadline = time.monotonic() + 60
health = None
while time.monotonic() < deadline:
    try:
        status, health = get("/healthz")
        if status == 200 and health.get("mqtt_connected"):
            break
    except OSError:
        pass
    time.sleep(0.5)
assert health and health.get("mqtt_connected"), f"dashboard not up or not connected to the broker: {health}"
print("ok: dashboard up, logged in to the broker as 'dashboard' (/healthz)")
assert get("/api/devices")[0] == 401, "no token: expected 401"
pub = ["chroot", root, "mosquitto_pub", "-p", broker, "-q", "1"]
subprocess.run([*pub, "-u", "fer-target", "-P", "chroot-test-password", "-t", "fer/fer-target/status", "-m", "online", "-r"], check=True)
# The alert ACL: the dashboard's account may write fer/<device>/alert, not a device's other topics.
sub = subprocess.Popen(["chroot", root, "mosquitto_sub", "-p", broker, "-u", "dashboard", "-P", "chroot-dashboard-password",
                        "-t", "fer/+/alert", "-t", "fer/+/summary", "-v", "-W", "4"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)  # -W 4 ends it: "Timed out"
time.sleep(1)
for topic in ("fer/fer-target/alert", "fer/fer-target/summary"):
    subprocess.run([*pub, "-u", "dashboard", "-P", "chroot-dashboard-password", "-t", topic, "-m", "from-dashboard"], check=True)
got = sub.communicate()[0].split("\n")
assert "fer/fer-target/alert from-dashboard" in got and not any("summary" in g for g in got), got
print("ok: dashboard account writes fer/+/alert, cannot write a device's summary")
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    status, devices = get("/api/devices", token="chroot-dashboard-token")
    assert status == 200, status
    if any(d["device"] == "fer-target" and d["status"] == "online" for d in devices):
        break
    time.sleep(0.5)
else:
    raise AssertionError(f"fer-target not listed online: {devices}")
print("ok: with the token /api/devices lists fer-target online (stored from MQTT)")
PY
kill "$dash_pid" 2>/dev/null || true
wait "$dash_pid" 2>/dev/null || true
kill "$broker_pid" 2>/dev/null || true
wait "$broker_pid" 2>/dev/null || true
grep -h '^sandbox:' "$LOGS/dashboard.log" || true
# Back to the provisioned state: systemd creates the StateDirectory at the first start.
rm -rf "$creds" "$FER_TARGET/var/lib/fer-edge-dashboard" "$FER_TARGET/tmp/acl-test.conf"
echo "== real target OK"
