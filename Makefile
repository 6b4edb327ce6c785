# API keys for the Backoffice API. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint bench secrets up down clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-9s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

install: $(STAMP) ## Make .venv and install the project with its test and dev tools

run: $(STAMP) ## Run the whole stack here: key_service, a 2-worker gateway, the demo backend
	$(PY) scripts/run_local.py

test: $(STAMP) ## Run the whole test suite against the real PostgreSQL, Redis, RabbitMQ, nginx, Chromium
	$(VENV)/bin/pytest

lint: $(STAMP) ## ruff and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP) ## Benchmarks (gateway vs nginx, revocation propagation, key_service); prints tables
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
