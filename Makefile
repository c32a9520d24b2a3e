# fer-edge developer entry points. `make run` and `make test` are the two commands in the README.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Stamp files: the venv is (re)installed only when pyproject.toml changed since the last install.
EDGE_STAMP := $(VENV)/.installed-edge
DEV_STAMP := $(VENV)/.installed-dev
# PyTorch for the torch trainer and its tests (optional: those tests skip without it). First the CPU build
# that this workplace's machines carry on disk, else the CPU build from PyTorch's own index; never the
# multi-GB CUDA build an unpinned `pip install torch` pulls from PyPI.
TORCH ?= torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup setup-dev torch run test deploy-target clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Device half only (no TensorFlow): what a Pi needs.
$(EDGE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[edge]'
	touch $@

setup: $(EDGE_STAMP)

# Everything: device half, workstation half (TensorFlow), test tools, PyTorch where it can be had; plus
# mosquitto (MQTT tests), openssl (TLS test certificates), postgresql + chromium (dashboard tests) and the deployment checkers (ansible-core,
# ansible-lint, systemd-analyze, in build/deploy-venv). DEPLOY_TARGET=1 also gets debootstrap for the
# real-target run.
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[edge,convert,dev,dashboard]'
	$(MAKE) --no-print-directory torch
	touch $@ $(EDGE_STAMP)

torch: | $(BIN)/python
	@$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/pip install -q '$(TORCH)' 2>/dev/null || \
	  $(BIN)/pip install -q --index-url $(TORCH_INDEX) torch || \
	  echo "make: PyTorch not installed; the torch trainer's tests will be skipped" >&2

setup-dev: $(DEV_STAMP)
	@command -v mosquitto >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto openssl >/dev/null)
	@# the dashboard tests: a real PostgreSQL server (initdb/pg_ctl) and Debian's headless chromium (Playwright drives it)
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium >/dev/null)
	@PY=$(PY) bash tests/deploy/setup.sh $(if $(DEPLOY_TARGET),--target,)

# The main job on built-in defaults: the daemon on the bundled sample clip, events to stdout.
run: setup
	$(BIN)/fer-edge run

# Provision a throwaway Debian 12 chroot with ansible/site.yml twice (second run: changed=0), then
# check it. Needs root and the package mirrors; ~6 min.
deploy-target:
	DEPLOY_TARGET=1 $(MAKE) setup-dev
	tests/deploy/real_target.sh

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
test: setup-dev
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
