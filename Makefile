# g2u-serve: `make install`, `make test` (CI, everything), `make test-fast` (unit tests), `make serve` / `make stop` (TorchServe),
# `make doctor` (what the machine lacks), `make ui` (a web page against the server), `make docs` (the documentation site).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1

.PHONY: install test test-fast lint demo clean docs docs-build doctor ui

install: $(STAMP)

# torch is installed FIRST and pinned: a bare `torch` pulled in by another package would resolve to a
# multi-GB CUDA build. Re-runs are no-ops until pyproject.toml changes.
# Byte-compiled once here, on every core (pip's own compile is serial: --no-compile): where
# PYTHONDONTWRITEBYTECODE is set (this machine, many CI images) Python never caches what it imports, so each
# process (a TorchServe worker, an `mlflow run`, a CLI call) would compile torch, diffusers and mlflow from
# source again: ~45 s → ~17 s for one demo evaluation here. `|| true`: a few vendored test files in
# third-party wheels are not valid Python 3 and are never imported.
PIP_INSTALL := $(PIP) install --disable-pip-version-check --no-compile -q
BYTE_COMPILE := $(PY) -m compileall -q -j 0
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[serve,eval,load,dev,fit,ray,postgres]"
	$(BYTE_COMPILE) "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
	touch $(STAMP)

# One pytest worker per core (pytest-xdist), a whole test file per worker (module fixtures such as a started
# TorchServe are built once); `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= auto
PYTEST_PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# lint-imports: the layering contract of pyproject.toml ([tool.importlinter]); no arrow runs back up.
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(MAKE) --no-print-directory docs-build
	$(BYTE_COMPILE) g2u handler mlflow_project scripts load_tests  # the tests' subprocesses import these
	$(PY) -m pytest -q $(PYTEST_PARALLEL)

# The documentation site (docs/, mkdocs.yml). --strict: a broken link or anchor, or a page left out of
# the nav, fails the build (and so `make test`). Not -q: mkdocs only counts the warnings it prints.
export NO_MKDOCS_2_WARNING ?= 1
docs-build: install
	$(VENV)/bin/mkdocs build --strict --site-dir site 2>&1 | grep -v '^INFO' ; test $${PIPESTATUS[0]} -eq 0

docs: install
	$(VENV)/bin/mkdocs serve

# What this machine lacks for serving (Java, TorchServe, torch vs GPU, ports, keys, caches; a checkpoint
# with G2U_CHECKPOINT): one line per check, exit 1 on a failure. `make serve` runs it first.
doctor: install
	$(PY) -m g2u.doctor

# A web page (http://127.0.0.1:7860) against the running server: image and question in; original,
# thought, answer and timings out.
ui: install
	$(VENV)/bin/g2u ui

# Unit tests only: no TorchServe, no `mlflow run`, no locust (the e2e marker, pyproject.toml).
test-fast: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not e2e" $(PYTEST_PARALLEL)

demo: install
	$(VENV)/bin/g2u demo build demo_checkpoints

# Retrain the shipped sandbox checkpoint (checkpoints/sandbox/) from its logged recipe on this CPU and check
# the logged held-out accuracies reproduce (g2u.sandbox.shipped.TOLERANCE); ~10 min on an idle 2-core CPU.
.PHONY: sandbox-retrain
sandbox-retrain: install
	nice -n 10 $(PY) -m g2u.sandbox.shipped

clean:
	rm -rf demo_checkpoints outputs site .pytest_cache

# ---------------------------------------------------------------- evaluation and load (MLflow, locust)
LOADTEST_HOST ?= http://127.0.0.1:8080
LOADTEST_USERS ?= 4
LOADTEST_DURATION ?= 60s

.PHONY: evaluate ablation register model-serve loadtest reliability test-postgres

evaluate: install
	$(VENV)/bin/mlflow run . --env-manager local -e evaluate $(MLFLOW_ARGS)

ablation: install
	$(VENV)/bin/mlflow run . --env-manager local -e ablation $(MLFLOW_ARGS)

register: install
	$(VENV)/bin/mlflow run . --env-manager local -e register $(MLFLOW_ARGS)

# MLflow's scoring server for a registered model (`make register` first): POST /invocations on
# MODEL_SERVE_PORT. `--env-manager local` runs `uvicorn` from PATH, so the venv's bin goes first on it.
MODEL_URI ?= models:/g2u@champion
MODEL_SERVE_PORT ?= 5001
model-serve: install
	PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
		$(VENV)/bin/mlflow models serve -m $(MODEL_URI) --env-manager local --host 127.0.0.1 -p $(MODEL_SERVE_PORT)

# MLflow on a real database: a throw-away PostgreSQL 15 (system package, loopback, free port, stopped
# afterwards) under `mlflow server`; evaluate, register and a models:/name@alias load against it.
test-postgres: install
	$(PY) -m pytest -q -m postgres tests/entry/test_postgres_tracking.py

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

serve: install
	$(PY) -m g2u.doctor
	$(PY) -m handler.archive
	$(PY) -m handler.serve up

stop:
	$(PY) -m handler.serve stop

# TorchServe's inference and management keys expire (token_expiration_min in config.properties): rotate
# them before that, e.g. daily from cron. Clients re-read key_file.json when a key is refused.
rotate-keys:
	$(PY) -m handler.serve rotate
