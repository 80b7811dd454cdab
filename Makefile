# rasa-sparkcentral: `make test` (what CI runs) and `make demo` are the two entry points.
# Works without a TTY; repeated runs skip what is up to date (stamp files under .build/).
#
# Two environments: $(VENV) (Python 3.8-3.10, Rasa Open Source 3.6: the default, where the
# example bot is trained and the end-to-end suite runs) and $(VENV_PRO) (Python 3.11, the
# newest Rasa Pro 3.x and rasa-sdk: the Pro tier, tests_pro/, which never needs a licence).

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

VENV_PRO := .venv-pro
PY_PRO   := $(VENV_PRO)/bin/python
PRO_PYTHON_VERSION := 3.11
# The one package of rasa-pro[nlu] the example bot's pipeline needs (LogisticRegressionClassifier
# stores its model with skops); the rest of [nlu] (TensorFlow, spaCy) it does not.
PRO_PIPELINE_DEPS := skops>=0.14,<0.15

# Rasa and its dependencies: quiet, no telemetry, never waiting for input.
export PYTHONUNBUFFERED := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export RASA_TELEMETRY_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export SQLALCHEMY_SILENCE_UBER_WARNING := 1

.PHONY: help venv install redis chromium train lint test test-pro install-pro demo demo-ui bench clean distclean

help:
	@echo "make test    install, train, lint, then unit and end-to-end tests, then the Rasa Pro tier (what CI runs)"
	@echo "make test-pro  the Rasa Pro tier only: $(VENV_PRO) (Python $(PRO_PYTHON_VERSION), newest rasa-pro), tests_pro/"
	@echo "make demo    a scripted Sparkcentral conversation against the example bot"
	@echo "make demo-ui the demo, then the web inbox stays up until Ctrl-C"
	@echo "make bench   benchmarks (benchmarks/run.py)"
	@echo "make install virtualenv in $(VENV) with the package, Rasa, Redis client, dev tools"
	@echo "make install-pro  virtualenv in $(VENV_PRO) with the package, Rasa Pro, dev tools"
	@echo "make redis   install redis-server (apt) when it is missing"
	@echo "make train   train example_bot when its config, domain or data changed"
	@echo "make lint    ruff check, ruff format --check, mypy"
	@echo "make clean   remove build stamps, caches and the trained model (keeps $(VENV))"
	@echo "make distclean  clean, and remove $(VENV) and $(VENV_PRO)"

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

# Rasa Pro: its own Python 3.11 env (scripts/find-python 3.11; PYTHON_PRO=... overrides).
$(STAMPS)/venv-pro:
	@mkdir -p $(STAMPS)
	@if [ ! -x $(PY_PRO) ]; then \
		python="$$(scripts/find-python $(PRO_PYTHON_VERSION))"; \
		echo "creating $(VENV_PRO) with $$python"; \
		"$$python" -m venv $(VENV_PRO); \
	fi
	@$(PY_PRO) -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
		|| { echo "$(VENV_PRO) is not Python $(PRO_PYTHON_VERSION): remove it and try again" >&2; exit 1; }
	@touch $@

install-pro: $(STAMPS)/install-pro

$(STAMPS)/install-pro: $(STAMPS)/venv-pro setup.cfg pyproject.toml
	@start=$$SECONDS; \
	$(PY_PRO) -m pip install -q 'pip>=21.3' && \
	$(PY_PRO) -m pip install -q --upgrade --upgrade-strategy only-if-needed -e '.[rasa-pro,dev]' \
		'$(PRO_PIPELINE_DEPS)' && \
	$(PY_PRO) -m pip check && \
	echo "Rasa Pro tier installed in $$((SECONDS - start)) s"
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
	@$(MAKE) --no-print-directory test-pro

# The Rasa Pro tier: what needs no licence (imports, the channel on Rasa Pro's Sanic, the
# actions on the newest rasa-sdk, the emulator on aiohttp 3.14, domain and flows through
# Rasa Pro's loaders). Rasa Pro's engine (rasa train / rasa run) needs RASA_LICENSE: only
# where it is set does the end-to-end suite run against Rasa Pro too.
test-pro: install-pro
	@start=$$SECONDS; \
	LITELLM_LOCAL_MODEL_COST_MAP=True $(PY_PRO) -m pytest tests_pro -q -ra -p no:cacheprovider $(PYTEST_ARGS); \
	echo "Rasa Pro tier ran in $$((SECONDS - start)) s"
	@if [ -z "$${RASA_LICENSE:-}" ]; then \
		echo "Rasa Pro end-to-end suite not run: RASA_LICENSE is not set (Rasa Pro needs a licence to train and serve)"; \
	else \
		LITELLM_LOCAL_MODEL_COST_MAP=True $(PY_PRO) -m pytest tests -q -ra -p no:cacheprovider -m e2e $(PYTEST_ARGS); \
	fi

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
	find . \( -path ./$(VENV) -o -path ./$(VENV_PRO) \) -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) $(VENV_PRO)
