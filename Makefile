# g2u-serve: `make install`, `make test` (CI), `make serve` / `make stop` (TorchServe).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1

.PHONY: install test lint demo clean

install: $(STAMP)

# torch is installed FIRST and pinned: a bare `torch` pulled in by another package would resolve to a
# multi-GB CUDA build. Re-runs are no-ops until pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q torch==2.13.0
	$(PIP) install --disable-pip-version-check -q -e ".[serve,eval,load,dev]"
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/g2u demo build demo_checkpoints

clean:
	rm -rf demo_checkpoints outputs .pytest_cache
