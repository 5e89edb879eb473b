# The README's two commands are `make demo` and `make test`; both install what they need first.
SHELL := /bin/bash
PY := .venv/bin/python
DEV := PYTHONPATH=hack $(PY) -m transkube_dev
CLUSTER_DIR ?= .local/cluster

.PHONY: setup demo test unit integration lint up down env

setup:
	@bash hack/install.sh

demo: setup
	@bash hack/demo.sh

# Lint, type-check, then every test (unit tests first; integration tests start the local cluster once).
test: setup lint
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest -m "not integration"

integration: setup
	$(PY) -m pytest -m integration

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

up: setup
	$(DEV) up --dir $(CLUSTER_DIR)

down:
	$(DEV) down --dir $(CLUSTER_DIR)

env:
	@$(DEV) env --dir $(CLUSTER_DIR)
