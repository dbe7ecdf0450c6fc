# Quarry. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
QUARRY := $(BIN)/quarry
SOURCE ?= data/demo-drop
FILE ?=
FORMAT ?= table
COMPANIES ?= 20000
CONTACTS ?= 200000
SEED ?= 42
HOST ?= 127.0.0.1
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help install run test lint data refresh sql snapshots bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv with quarry and the dev tools

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "make: Python 3.11 or newer is needed (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

run: install ## demo data and key on first use, then serve on $(HOST):$(PORT)
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m service.demo
	$(QUARRY) serve --host $(HOST) --port $(PORT)

test: install ## run every test
	$(BIN)/pytest -q

lint: install ## ruff
	$(BIN)/ruff check service tests

data: install ## write a synthetic drop to SOURCE (COMPANIES, CONTACTS, SEED)
	$(QUARRY) generate --out $(SOURCE) --companies $(COMPANIES) --contacts $(CONTACTS) --seed $(SEED)

refresh: install ## build a snapshot from the drop in SOURCE and switch to it
	$(QUARRY) refresh --source $(SOURCE)

sql: install ## run FILE=path.sql against the current snapshot (FORMAT=table|csv|json)
	@test -n "$(FILE)" || { echo "make: give the file, e.g. make sql FILE=sql/analytics/coverage_by_seniority.sql"; exit 2; }
	@$(QUARRY) sql $(FILE) --format $(FORMAT)

snapshots: install ## list the kept snapshots
	@$(QUARRY) snapshots list

SCALE ?= 10
bench: install ## search latency, throughput, memory, exports at SCALE million contacts (default 10)
	$(BIN)/python bench/bench.py --scale $(SCALE)
