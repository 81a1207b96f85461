# g2u-serve: `make install`, `make test` (CI, everything), `make test-fast` (unit tests), `make serve` / `make stop` (TorchServe).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1

.PHONY: install test test-fast lint demo clean

install: $(STAMP)

# torch is installed FIRST and pinned: a bare `torch` pulled in by another package would resolve to a
# multi-GB CUDA build. Re-runs are no-ops until pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q torch==2.13.0
	$(PIP) install --disable-pip-version-check -q -e ".[serve,eval,load,dev,fit,ray,postgres]"
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# lint-imports: the layering contract of pyproject.toml ([tool.importlinter]); no arrow runs back up.
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# Unit tests only: no TorchServe, no `mlflow run`, no locust (the e2e marker, pyproject.toml).
test-fast: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not e2e"

demo: install
	$(VENV)/bin/g2u demo build demo_checkpoints

clean:
	rm -rf demo_checkpoints outputs .pytest_cache

# ---------------------------------------------------------------- evaluation and load (MLflow, locust)
LOADTEST_HOST ?= http://127.0.0.1:8080
LOADTEST_USERS ?= 4
LOADTEST_DURATION ?= 60s

.PHONY: evaluate ablation register loadtest reliability test-postgres

evaluate: install
	$(VENV)/bin/mlflow run . --env-manager local -e evaluate $(MLFLOW_ARGS)

ablation: install
	$(VENV)/bin/mlflow run . --env-manager local -e ablation $(MLFLOW_ARGS)

register: install
	$(VENV)/bin/mlflow run . --env-manager local -e register $(MLFLOW_ARGS)

# MLflow on a real database: a throw-away PostgreSQL 15 (system package, loopback, free port, stopped
# afterwards) under `mlflow server`; evaluate, register and a models:/name@alias load against it.
test-postgres: install
	$(PY) -m pytest -q -m postgres tests/test_postgres_tracking.py

# Needs a running server (`make serve`); reads the token from TorchServe's key_file.json.
loadtest: install
	$(PY) load_tests/run_loadtest.py --host $(LOADTEST_HOST) --users $(LOADTEST_USERS) \
		--duration $(LOADTEST_DURATION) --key-file $${G2U_KEY_FILE:-key_file.json} --mlflow

# Starts its own TorchServe on free ports: sustained load, worker kill, hostile input, writer faults,
# security; writes outputs/reliability/report.{md,json} and logs them to MLflow.
RELIABILITY_DURATION ?= 180s
reliability: install
	$(PY) -m load_tests.reliability --users $(LOADTEST_USERS) --duration $(RELIABILITY_DURATION) --mlflow

# ---------------------------------------------------------------- serving (TorchServe)
# `make serve` serves the demo checkpoint packed in the .mar; a real checkpoint is referenced by path:
#   G2U_CHECKPOINT=/models/Qwen-Image-Edit make serve      (G2U_BACKEND picks the backend if needed)
# G2U_SERVE_TIMEOUT bounds the wait for the model READY (seconds, default 300).
.PHONY: archive serve stop rotate-keys

archive: install
	$(PY) -m handler.archive

serve: archive
	$(PY) -m handler.serve up

stop:
	$(PY) -m handler.serve stop

# TorchServe's inference and management keys expire (token_expiration_min in config.properties): rotate
# them before that, e.g. daily from cron. Clients re-read key_file.json when a key is refused.
rotate-keys:
	$(PY) -m handler.serve rotate
