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

HELM = $$($(PY) -c 'import sys; sys.path.insert(0, "hack"); from transkube_dev import tools; print(tools.ensure_kubectl_helm()[1])')
CHART := charts/transkube
CHART_ALL_ON := --set shim.ingress.enabled=true --set shim.podDisruptionBudget.enabled=true \
	--set shim.networkPolicy.enabled=true --set serviceMonitor.enabled=true

# Python (ruff, mypy --strict), the chart (helm lint --strict) and YAML (yamllint: .yamllint.yaml, including the
# chart as rendered, since templates are not YAML). tests/unit/test_chart.py, test_yamllint.py and
# test_kubeconform.py check the same and more.
lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	set -o pipefail; helm="$(HELM)" && $$helm lint --strict $(CHART) $(CHART_ALL_ON) \
	  && .venv/bin/yamllint -s $(CHART)/values.yaml $(CHART)/Chart.yaml $(CHART)/crds $(CHART)/alerts crds examples .yamllint.yaml \
	  && $$helm template transkube $(CHART) $(CHART_ALL_ON) | .venv/bin/yamllint -s -

up: setup
	$(DEV) up --dir $(CLUSTER_DIR)

down:
	$(DEV) down --dir $(CLUSTER_DIR)

env:
	@$(DEV) env --dir $(CLUSTER_DIR)
