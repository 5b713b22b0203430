# pushrelay developer entry points. Everything installs what it needs first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
ARGS ?=

.PHONY: install demo test test-testcontainers unit integration image lint bench faults audit devstack-up devstack-down clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,docker]'
	@touch $@

## The main job: real devstack, all three services, a sample push, the refresh.
demo: install
	$(BIN)/pushrelay demo $(ARGS)

## Everything CI checks: lint, types, dependency audit, unit and integration tests on real
## services (the image, Compose and testcontainers tests install and start a Docker engine).
test: install lint audit
	$(BIN)/pushrelay devstack exec -- $(BIN)/python -m pytest -q $(PYTEST_ARGS)
	$(MAKE) test-testcontainers

## The pipeline's end-to-end tests once more, Kafka from testcontainers' provider.
test-testcontainers: install
	PUSHRELAY_TEST_KAFKA=testcontainers $(BIN)/pushrelay devstack exec -- \
		$(BIN)/python -m pytest -q tests/integration/test_e2e.py $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

integration: install
	$(BIN)/pushrelay devstack exec -- $(BIN)/python -m pytest -q -m integration $(PYTEST_ARGS)

## The production image pushrelay:<version>/latest (and pushrelay-kafka), with size and start time.
image: install
	$(BIN)/pushrelay devstack images --measure

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench $(ARGS)

faults: install
	$(BIN)/python -m pytest -q tests/faults $(PYTEST_ARGS)

## Known vulnerabilities in the installed dependency set (policy: docs/reliability.md).
audit: install
	$(BIN)/python -m pip install -q pip-audit
	$(BIN)/python tests/audit/pip_audit_policy.py $(ARGS)

devstack-up: install
	$(BIN)/pushrelay devstack up

devstack-down: install
	$(BIN)/pushrelay devstack down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
