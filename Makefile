# fruitstream: `make run` starts the app on the embedded default, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
# Bytecode compiled at install: environments with PYTHONDONTWRITEBYTECODE set would otherwise
# compile streamlit, pandas and the rest from source at every start.
INSTALL := $(UV) pip install --quiet --compile-bytecode --python $(BIN)/python
# uv fetches pyspark's source distribution again at every install and keeps each build (1.4 GB)
# in its cache: forty CI runs filled a 250 GB disk until SeaweedFS refused every write. Pruning
# after each install drops the builds no environment uses; a failed prune only warns.
PRUNE := $(UV) cache prune --quiet || echo "warning: 'uv cache prune' failed; the uv cache may grow" >&2
DATA ?= ../shared/datasets/fruits15
MODEL_DIR := src/fruitstream/bundles/fruits15
AXE_VERSION := 4.14.1
AXE := .cache/axe/node_modules/axe-core/axe.min.js
.PHONY: help venv install install-dev system-deps run lint test fast unit integration e2e quality \
        stack-up stack-down distributed \
        train bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv

venv: $(BIN)/python  ## create the virtual environment (.venv) with uv in it

install: venv  ## install fruitstream with the UI and the HTTP API (inference only: no torch)
	$(INSTALL) -e '.[ui,api]'
	@$(BIN)/python -m compileall -q src >/dev/null

install-dev: venv $(AXE)  ## install everything the tests need (every extra, axe-core)
	$(INSTALL) -e '.[dev,train,ui,api,client,distributed,spark]'
	@$(PRUNE)
	@$(BIN)/python -m compileall -q src >/dev/null

# axe-core, the accessibility checker the browser tests run in the page (npm's package).
$(AXE):
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq npm >/dev/null; }
	npm install --silent --no-audit --no-fund --save-exact --prefix .cache/axe axe-core@$(AXE_VERSION)

run: install  ## set up and start the app on the embedded default (http://127.0.0.1:8501)
	$(BIN)/fruitstream ui

lint:  ## ruff lint, format check, mypy
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

# The fast tier is tests/unit: logic over the fakes, with no model file, no dataset and no
# server (tests/unit/conftest.py refuses a test marked otherwise); its time is printed.
# Hypothesis and schemathesis register pytest plugins that take seconds to import; the unit tier
# uses neither. Its tests mostly wait (threads, polls, timeouts): three processes (pytest-xdist)
# share the 2 cores well (serial: about 35 s, measured 2026-12-08).
FAST_OPTIONS := -n 3 -p no:schemathesis -p no:hypothesispytest

fast:  ## the fast tier: tests/unit, logic over tests/fakes.py (under 30 s)
	@start=$$(date +%s.%N); $(BIN)/pytest -q tests/unit --durations=5 $(FAST_OPTIONS); \
		status=$$?; \
		echo "fast tier: $$(awk "BEGIN {printf \"%.1f\", $$(date +%s.%N) - $$start}") s"; \
		exit $$status

unit:  ## unit tests
	$(BIN)/pytest tests/unit

integration:  ## integration tests (real model, real files, real processes)
	$(BIN)/pytest tests/integration

e2e:  ## browser tests: the running app in headless Chromium
	$(BIN)/pytest tests/e2e

# Each held-out set's gate (just under the shipped model's measured figures) is in the table
# of src/fruitstream/heldout.py, with the figures it was set from.
quality:  ## quality gate: evaluate the shipped model on every held-out set
	$(BIN)/fruitstream quality $(DATA)

system-deps:  ## Debian packages the tests need: chromium, chromium-driver, qemu-user (int8 on AVX2)
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || \
		[ ! -x /usr/bin/qemu-x86_64 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver qemu-user >/dev/null; \
	fi

test: system-deps install-dev  ## set up and run every check: lint, types, tests, quality gate
	$(MAKE) lint
	@# The browser tests first, on a quiet machine: they need no server of the stack. Some
	@# of them flake on this 2-core machine (an upload's or a shot's answer missing its 30 s,
	@# about one run in two for the Spanish page, measured 2026-12-08): a failed one is tried
	@# again, twice at most, and pytest reports each rerun. Finding the cause is open work
	@# (the stop note of 2026-12-08).
	$(BIN)/pytest tests/e2e --reruns 2
	scripts/stack up
	$(BIN)/pytest --ignore=tests/e2e; status=$$?; scripts/stack down; exit $$status
	$(MAKE) quality

stack-up:  ## start the local Kafka, SeaweedFS, PostgreSQL and Spark stack (settings in .stack/env)
	scripts/stack up

stack-down:  ## stop the local stack
	scripts/stack down

distributed:  ## distributed integration tests (needs `make stack-up`)
	$(BIN)/pytest -m distributed

# The shipped v3.2: the recipe before field/ photos and the not-none rule (both on by default
# since; `fruitstream train` alone runs the v4 recipe, see docs/MODEL.md).
train:  ## train the shipped model from scratch (extra 'train'; about 34 min on 2 CPU cores)
	$(BIN)/fruitstream train --data $(DATA) --out $(MODEL_DIR) --interpolation bilinear \
		--no-field --known-rule top-fruit --version 3.2
	$(BIN)/fruitstream train --data $(DATA) --requantize $(MODEL_DIR)

bench:  ## benchmark the shipped model (raw throughput, load time, end-to-end latency)
	$(BIN)/fruitstream bench $(DATA)/grocery/val

clean:  ## remove the virtual environment, caches and local data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts data test-artifacts
