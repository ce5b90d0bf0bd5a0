# The two commands: `make demo` and `make test`. Both set up what they need themselves:
# the Python environment in .venv and the Kafka jars in ~/.cache/hl7bus (Maven, first run only).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test env jars postgres prometheus lint fmt clean

demo: env jars
	$(BIN)/hl7bus demo

test: env jars postgres prometheus lint
	$(BIN)/pytest $(PYTEST_ARGS)

env: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "hl7bus needs Python 3.11 or newer (set PYTHON=...)")'
	@command -v java >/dev/null || { echo "hl7bus needs Java 17+ for the local Kafka broker (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "hl7bus needs Maven to fetch the Kafka jars (apt-get install maven)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

jars: env
	$(BIN)/hl7bus kafka jars

# Debian's PostgreSQL server for the warehouse tests (tests/conftest.py starts a throwaway
# cluster from its binaries); installed only where no pg_ctl is found.
postgres:
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; \
	else echo "hl7bus tests need a PostgreSQL server (apt-get install postgresql)"; exit 1; fi

# Debian's Prometheus for the ops tests: promtool (check/test rules, check metrics) and a real
# server that scrapes a running bus (tests/prometheus_tools.py); installed only when missing.
prometheus:
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
	else echo "hl7bus tests need promtool and prometheus (apt-get install prometheus)"; exit 1; fi

# mypy and import-linter cannot read setuptools' package-dir mapping; a link tree gives them
# the real module names.
lint: env
	@mkdir -p .typecheck/hl7bus
	@for d in hl7v2 schemas streams connectors ops; do ln -sfn ../../$$d .typecheck/hl7bus/$$d; done
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONPATH=.typecheck $(BIN)/lint-imports --no-cache

fmt: env
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
