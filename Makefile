# rasa-sparkcentral: `make test` (what CI runs) and `make demo` are the two entry points.
# Works without a TTY; repeated runs skip what is up to date (stamp files under .build/).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV     := .venv
PY       := $(VENV)/bin/python
STAMPS   := .build
BOT      := example_bot
MODEL    := $(BOT)/models/example_bot.tar.gz
BOT_SRC  := $(BOT)/config.yml $(BOT)/domain.yml $(shell find $(BOT)/data -type f 2>/dev/null)
PYTEST_ARGS ?=

# Rasa and its dependencies: quiet, no telemetry, never waiting for input.
export PYTHONUNBUFFERED := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export RASA_TELEMETRY_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export SQLALCHEMY_SILENCE_UBER_WARNING := 1

.PHONY: help venv install redis chromium train lint test demo demo-ui bench clean distclean

help:
	@echo "make test    install, train, lint, then unit and end-to-end tests (what CI runs)"
	@echo "make demo    a scripted Sparkcentral conversation against the example bot"
	@echo "make demo-ui the demo, then the web inbox stays up until Ctrl-C"
	@echo "make bench   benchmarks (benchmarks/run.py)"
	@echo "make install virtualenv in $(VENV) with the package, Rasa, Redis client, dev tools"
	@echo "make redis   install redis-server (apt) when it is missing"
	@echo "make train   train example_bot when its config, domain or data changed"
	@echo "make lint    ruff check, ruff format --check, mypy"
	@echo "make clean   remove build stamps, caches and the trained model (keeps $(VENV))"
	@echo "make distclean  clean, and remove $(VENV)"

# ----------------------------------------------------------------------------- environment

venv: $(STAMPS)/venv

# A Python 3.8-3.10 found by scripts/find-python (PATH, pyenv, uv); PYTHON=... overrides.
$(STAMPS)/venv:
	@mkdir -p $(STAMPS)
	@if [ ! -x $(PY) ]; then \
		python="$$(scripts/find-python)"; \
		echo "creating $(VENV) with $$python"; \
		"$$python" -m venv $(VENV); \
	fi
	@$(PY) -c 'import sys; assert (3, 8) <= sys.version_info[:2] <= (3, 10), sys.version' \
		|| { echo "$(VENV) is not Python 3.8-3.10: run 'make distclean' and try again" >&2; exit 1; }
	@touch $@

install: $(STAMPS)/install

$(STAMPS)/install: $(STAMPS)/venv setup.cfg pyproject.toml scripts/constraints.txt
	$(PY) -m pip install -q 'pip>=21.3'
	$(PY) -m pip install -q -c scripts/constraints.txt -e '.[rasa,redis,dev]'
	$(PY) -m pip check
	@touch $@

redis:
	@scripts/ensure-redis

chromium:
	@scripts/ensure-chromium

# ----------------------------------------------------------------------------- bot

train: $(MODEL)

$(MODEL): $(BOT_SRC) | $(STAMPS)/install
	cd $(BOT) && ../$(PY) -m rasa train --fixed-model-name example_bot --out models
	@touch $@

# ----------------------------------------------------------------------------- checks

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy rasa_sparkcentral

test: install redis chromium train lint
	$(PY) -m pytest tests -q -ra -p no:cacheprovider $(PYTEST_ARGS)

# ----------------------------------------------------------------------------- demo, bench

demo: install train
	$(PY) scripts/demo.py

demo-ui: install train
	$(PY) scripts/demo.py --keep-open

bench: install redis train
	@if [ ! -f benchmarks/run.py ]; then \
		echo "make bench: benchmarks/run.py is missing (the benchmarks are not in this checkout)" >&2; \
		exit 1; \
	fi
	$(PY) benchmarks/run.py

# ----------------------------------------------------------------------------- cleaning

clean:
	rm -rf $(STAMPS) $(BOT)/models $(BOT)/.rasa .rasa .mypy_cache .ruff_cache .pytest_cache \
		.hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
