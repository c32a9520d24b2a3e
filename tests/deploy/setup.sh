#!/usr/bin/env bash
# Install the deployment check tools: ansible-core, ansible-lint and systemd-analyze; with
# --target also the ansible package (chroot connection) and debootstrap for real_target.sh.
# The tools go into their own virtualenv (default build/deploy-venv, ignored by git), never
# into the project's .venv: ansible pins its own dependency versions.
#   tests/deploy/setup.sh            # lint/verify tools
#   tests/deploy/setup.sh --target   # also debootstrap, for tests/deploy/real_target.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${FER_DEPLOY_VENV:-build/deploy-venv}"
PY="${PY:-python3}"

# ansible-core 2.19 needs Python >= 3.11 on the control machine.
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup.sh: $PY is $("$PY" -V 2>&1); ansible-core needs Python >= 3.11 (set PY=python3.11)" >&2; exit 1; }

if [ ! -x "$VENV/bin/ansible-lint" ] || [ ! -x "$VENV/bin/ansible-playbook" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q 'ansible-core>=2.18' 'ansible-lint>=24.0'
fi
# The real-target test reaches its chroot through community.general.chroot: the "ansible"
# package bundles that collection (Ansible Galaxy is not needed). The playbook itself uses
# ansible.builtin only, so lint and syntax checks do without it.
if [ "${1:-}" = "--target" ] && ! "$VENV/bin/python" -c 'import ansible_collections.community.general' 2>/dev/null; then
  "$VENV/bin/pip" install -q 'ansible>=11'
fi

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then echo "setup.sh: need root to apt-get install $*" >&2; return 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
if [ "${1:-}" = "--target" ]; then
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || apt_install debootstrap
fi
ansible_version="$("$VENV/bin/ansible" --version)"
lint_version="$("$VENV/bin/ansible-lint" --nocolor --version 2>/dev/null)"
echo "deploy tools: ${ansible_version%%$'\n'*}; ${lint_version%%$'\n'*}"
