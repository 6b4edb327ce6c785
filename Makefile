# API keys for the Backoffice API. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMPS := tests/typescript/node_modules/.package-lock.json \
	examples/node-subscriber/node_modules/.package-lock.json

.DEFAULT_GOAL := help
.PHONY: help install packages run test lint docs bench secrets up down clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-9s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

install: $(STAMP) ## Make .venv and install the project with its test and dev tools

packages: $(NODE_STAMPS) ## Install the Debian and npm packages the tests drive, when missing
	@bash scripts/debian-packages.sh

# npm packages of the tests, exactly as their lock files say (only the npm registry is needed).
%/node_modules/.package-lock.json: %/package-lock.json %/package.json
	npm ci --prefix $* --no-audit --no-fund --loglevel=error

run: $(STAMP) ## Run the whole stack here: key_service, a 2-worker gateway, the demo backend
	$(PY) scripts/run_local.py

test: $(STAMP) packages ## Install what the suite needs, then run it against the real services
	$(VENV)/bin/pytest

lint: $(STAMP) ## ruff and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

docs: $(STAMP) ## Regenerate docs/configuration.md from the settings declared in code
	$(PY) scripts/configuration_docs.py

bench: $(STAMP) ## Benchmarks (gateway vs nginx, revocation propagation, key_service, key list); prints tables
	bash scripts/debian-packages.sh --bench
	$(PY) -m tests.bench

secrets: $(STAMP) ## Write a fresh .env with every deployment secret (refuses to overwrite)
	@$(PY) deploy/generate_env.py --output .env

up: ## compose up -d --build: Docker Compose, else podman-compose (needs .env from `make secrets`)
	@test -f .env || { echo "no .env: run make secrets" >&2; exit 1; }
	PATH="$(VENV)/bin:$$PATH" scripts/compose.sh up -d --build

down: ## compose down --remove-orphans (the replicas --scale added too), with `make up`'s engine
	PATH="$(VENV)/bin:$$PATH" scripts/compose.sh down --remove-orphans

clean: ## Remove the venv, caches and the local data directory
	rm -rf $(VENV) data .mypy_cache .ruff_cache .hypothesis artifacts *.egg-info
