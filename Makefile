# Two commands matter: `make serve` and `make test`. Both create .venv when it is missing.
# `make test` is the fast tier (in-process and unit tests, a couple of minutes); `make test-all`
# adds the real parts: server processes, PostgreSQL, HAProxy, Chromium (what CI runs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: serve test test-all lint typecheck check bench bench-http screenshots proto clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras, redone when pyproject.toml changes.
# The service and the client (a distribution of its own, client/) together.
$(VENV)/.installed-run: pyproject.toml client/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . -e ./client
	@touch $@

$(VENV)/.installed-test: pyproject.toml client/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]' -e './client[numpy]'
	@touch $@ $(VENV)/.installed-run

$(VENV)/.installed-docs: pyproject.toml client/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[docs]' -e ./client
	@touch $@ $(VENV)/.installed-run

$(VENV)/.installed-bench: pyproject.toml client/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]' -e './client[numpy]'
	@touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

serve: $(VENV)/.installed-run
	$(BIN)/iris-serve

FAST_TIER := not slow and not postgres and not haproxy and not browser

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "$(FAST_TIER)" $(PYTEST_ARGS)

# The docs extra too: tests/test_docs.py builds the site (and fails without mkdocs under CI).
test-all: $(VENV)/.installed-test $(VENV)/.installed-docs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

check: lint typecheck test-all

# The documentation site (mkdocs.yml, docs/) into site/; strict: a broken link or anchor fails.
# Offline: no plugin that downloads. NO_MKDOCS_2_WARNING silences Material's end-of-life banner.
.PHONY: docs
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

BENCH_ARGS ?=
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/bench_train.py $(BENCH_ARGS)

BENCH_HTTP_ARGS ?=
# HTTP and gRPC benchmark, about 16 minutes (BENCH_HTTP_ARGS=--quick: about 3; "--only grpc":
# the gRPC and binary-tensor section alone, about 5). Needs wrk (apt-get install wrk); its grpc
# section needs h2load (apt-get install nghttp2-client) and is skipped without it; uses PyTorch
# only if it is already importable. The first run installs the peers (MLServer, KServe) into
# bench/.scratch/ (a few minutes; --no-peers leaves them out).
bench-http: $(VENV)/.installed-bench
	@command -v wrk >/dev/null || { echo "bench-http needs wrk: apt-get install wrk" >&2; exit 2; }
	$(BIN)/python bench/bench_http.py $(BENCH_HTTP_ARGS)

# PNGs of every dashboard panel at desktop and phone widths into docs/screenshots/ (needs
# Debian's chromium and chromium-driver).
# The Python modules of the gRPC protocol's messages and service, from service/rpc/inference.proto
# (tests/test_grpc.py checks that they are what this writes).
proto: $(VENV)/.installed-test
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. \
		service/rpc/inference.proto
	cd client && ../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
		iris_client/oip.proto

screenshots: $(VENV)/.installed-bench
	$(BIN)/python bench/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info

# ---- container image ------------------------------------------------------------------------
# `make image` builds with docker where an engine answers (`docker info`), else with podman.
# On machines without Docker Hub: `bash .ci/podman-setup.sh` once, then
# `make image BASE_IMAGE=localhost/debian-python:bookworm`.
IMAGE      ?= iris-service:latest
BASE_IMAGE ?= python:3.12-slim
# podman: --format docker keeps the HEALTHCHECK; pip inside the build trusts the host's CAs
CA_BUNDLE  ?= /etc/ssl/certs/ca-certificates.crt
PODMAN_BUILD_FLAGS ?= --format docker $(if $(wildcard $(CA_BUNDLE)),--volume $(CA_BUNDLE):/etc/ssl/certs/ca-certificates.crt:ro)

.PHONY: image container-test

image:
	@if docker info >/dev/null 2>&1; then \
		echo "docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) --tag $(IMAGE) ."; \
		docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) --tag $(IMAGE) .; \
	else \
		echo "podman build $(PODMAN_BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) --tag $(IMAGE) ."; \
		podman build $(PODMAN_BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) --tag $(IMAGE) .; \
	fi

# Builds and runs the image with podman on a debootstrapped Debian base (shared/CONTAINERS.md);
# installs podman first where it is missing. Needs root.
container-test:
	bash .ci/container-test.sh

# ---- reliability ----------------------------------------------------------------------------
.PHONY: soak
SOAK_ARGS ?=
# Bounded soak: 60 s, 32 keep-alive connections, 10 retrains and 10 activations, at
# IRIS_WORKERS=1 and 2; every answer checked against its version's math. Exit 1 on FAIL.
soak: $(VENV)/.installed-test
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# A longer schemathesis campaign against iris-serve as a real process: every phase and check,
# with the token, bounded by FUZZ_SECONDS; no check is left out.
FUZZ_SECONDS ?= 300
FUZZ_ARGS    ?=

.PHONY: fuzz
fuzz: $(VENV)/.installed-test
	$(BIN)/python bench/fuzz_live.py --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)
