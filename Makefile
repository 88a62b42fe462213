# One entry point for people and CI alike.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench conformance image-test clean venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The examples start with ${INTERLOCK_PYTHON}, the gateway's own interpreter: no PATH needed.
run: $(STAMP)
	$(BIN)/interlock serve --config servers.toml

test: $(STAMP)
	bash scripts/ensure-redis.sh
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff format --check gateway tests examples bench
	$(BIN)/ruff check gateway tests examples bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

conformance: $(STAMP)
	bash scripts/conformance.sh

# Builds the Docker image on a Debian bootstrapped here (no image registry needed), runs it and
# checks /healthz, its health check and a tool call. Needs root, docker and debootstrap; not in CI.
image-test: $(STAMP)
	bash scripts/image-test.sh

clean:
	rm -rf $(VENV) build *.egg-info
