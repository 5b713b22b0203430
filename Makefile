# pushrelay developer entry points. Everything installs what it needs first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages a target needs (root): bench-deps, node-deps.
APT_INSTALL := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	--no-install-recommends -o DPkg::Lock::Timeout=600
PYTEST_ARGS ?=
ARGS ?=

.PHONY: install demo test test-testcontainers unit integration image lint bench faults audit tools devstack-up devstack-down node-deps bench-deps node clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml devstack/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,docker]' -e ./devstack
	@touch $@

## The main job: real devstack, all three services, a sample push, the refresh.
demo: install
	$(BIN)/pushrelay demo $(ARGS)

## Everything CI checks: lint, types, the import contract, dependency audit, unit and integration tests on real
## services (the image, Compose, testcontainers and node tests install and start what they need).
test: install lint audit tools node-deps
	$(BIN)/pushrelay devstack exec -- $(BIN)/python -m pytest -q $(PYTEST_ARGS)
	$(MAKE) test-testcontainers

## The pipeline's end-to-end tests once more, Kafka from testcontainers' provider.
test-testcontainers: install
	PUSHRELAY_TEST_KAFKA=testcontainers $(BIN)/pushrelay devstack exec -- \
		$(BIN)/python -m pytest -q tests/integration/test_e2e.py $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

integration: install tools
	$(BIN)/pushrelay devstack exec -- $(BIN)/python -m pytest -q -m integration $(PYTEST_ARGS)

## The production image pushrelay:<version>/latest (and pushrelay-kafka), with size and start time.
image: install
	$(BIN)/pushrelay devstack images --measure

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install bench-deps
	$(BIN)/python -m bench $(ARGS)

## wrk, the saturating load generator of `bench --only ingress` (Debian's package); root only.
bench-deps:
	@command -v wrk >/dev/null 2>&1 || { $(APT_INSTALL) wrk; }

faults: install
	$(BIN)/python -m pytest -q tests/faults $(PYTEST_ARGS)

## Tools the tests run (helm, docker-compose), built once into the cache with visible progress.
tools: install
	@$(BIN)/pushrelay devstack tool helm >/dev/null
	@$(BIN)/pushrelay devstack tool docker-compose >/dev/null

## Known vulnerabilities in the installed dependency set (policy: docs/reliability.md).
audit: install
	$(BIN)/python -m pip install -q pip-audit
	$(BIN)/python tests/audit/pip_audit_policy.py $(ARGS)

## Debian packages the devstack's node needs (`pushrelay devstack up --node`); root only.
NODE_DEBS := containerd runc containernetworking-plugins iptables conntrack
node-deps:
	@dpkg -s $(NODE_DEBS) >/dev/null 2>&1 || { $(APT_INSTALL) $(NODE_DEBS); }

## deploy/ on a real node (own devstack state dir, brought down afterwards).
node: install node-deps
	$(BIN)/python -m pytest -q tests/node $(PYTEST_ARGS)

devstack-up: install
	$(BIN)/pushrelay devstack up

devstack-down: install
	$(BIN)/pushrelay devstack down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
