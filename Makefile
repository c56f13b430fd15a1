# eva_ros developer entry points. `make demo` and `make test` set everything up first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# pip warns about each optional local index it skips; hide only those lines
QUIET := { grep -v 'is ignored' || true; }
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp

# Loopback-only DDS (this machine may not multicast), isolated domain, headless rendering.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 42
export MUJOCO_GL ?= egl
export MPLBACKEND := Agg
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup system-deps test test-fast demo train-demo bench clean help

help:
	@echo "make setup   - system packages (if missing) + .venv with pinned deps + editable install"
	@echo "make demo    - closed loop in simulation (tiny models, emulated hardware)"
	@echo "make train-demo - train IDM, VAE + SFT, GRPO and the distilled student on twin demos (toy EVA, CPU) into checkpoints/demo"
	@echo "make test    - full test suite (unit, ros, e2e tiers; slow included)"
	@echo "make test-fast - unit + ros tiers without slow tests, with its elapsed time"
	@echo "make bench   - benchmarks (ratios, printed)"

setup: system-deps $(STAMP)

system-deps:
	@bash tools/install_system_deps.sh

$(STAMP): requirements.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt 2>&1 | $(QUIET)
	$(PY) -m pip install -q --no-deps -e . 2>&1 | $(QUIET)
	$(PY) -c "import torch, diffusers, rclpy, pyrealsense2, piper_sdk, mujoco, rosbags, pyarrow, av" \
		|| { echo "setup: a dependency failed to import (see above)"; exit 1; }
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

# unit + ros tiers without the slow tests (pytest.ini); prints its elapsed time
test-fast: setup
	@start=$$(date +%s); rc=0; $(PY) -m pytest -q tests -m "not slow and not e2e" || rc=$$?; \
		echo "make test-fast: $$(( $$(date +%s) - start )) s"; exit $$rc

demo: setup
	$(VENV)/bin/eva-demo

train-demo: setup
	$(PY) tools/train_demo.py --overwrite

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache artifacts runs outputs
