# fer-edge developer entry points. `make run` and `make test` are the two commands in the README.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-dev run test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Device half only (no TensorFlow): what a Pi needs.
setup: $(BIN)/python
	$(BIN)/pip install -q -e '.[edge]'

# Everything: device half, workstation half (TensorFlow), test tools; plus mosquitto and the
# systemd tools that the integration tests use.
setup-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[edge,convert,dev]'
	@command -v mosquitto >/dev/null 2>&1 || command -v /usr/sbin/mosquitto >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null)

# The main job on built-in defaults: the daemon on the bundled sample clip, events to stdout.
run: setup
	$(BIN)/fer-edge run --max-frames 150

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
test: setup-dev
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
