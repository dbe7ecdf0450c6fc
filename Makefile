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
.PHONY: help install run test lint data refresh sql snapshots snapshots-use bench bench-refresh soak

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

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

test: install chromium ## run every test
	$(BIN)/pytest -q

# The browser test drives Debian's chromium; install it when missing (needs root and apt-get,
# elsewhere the test says why it is skipped).
.PHONY: chromium
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "make: installing Debian's chromium for the browser test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
			>/tmp/quarry-chromium-install.log 2>&1 || \
			{ tail -20 /tmp/quarry-chromium-install.log; exit 1; }; \
	fi

lint: install ## ruff
	$(BIN)/ruff check service tests bench

data: install ## write a synthetic drop to SOURCE (COMPANIES, CONTACTS, SEED)
	$(QUARRY) generate --out $(SOURCE) --companies $(COMPANIES) --contacts $(CONTACTS) --seed $(SEED)

refresh: install ## build a snapshot from the drop in SOURCE and switch to it
	$(QUARRY) refresh --source $(SOURCE)

sql: install ## run FILE=path.sql against the current snapshot (FORMAT=table|csv|json)
	@test -n "$(FILE)" || { echo "make: give the file, e.g. make sql FILE=sql/analytics/coverage_by_seniority.sql"; exit 2; }
	@$(QUARRY) sql $(FILE) --format $(FORMAT)

snapshots: install ## list the kept snapshots
	@$(QUARRY) snapshots list

VERSION ?=
snapshots-use: install ## switch the service to a kept snapshot: VERSION=... (see make snapshots)
	@test -n "$(VERSION)" || { echo "make: give the version, e.g. make snapshots-use VERSION=20260101T000000Z-000000 (make snapshots lists them)"; exit 2; }
	@$(QUARRY) snapshots use $(VERSION)

SCALE ?= 10
bench: install ## search latency, throughput, memory, exports at SCALE million contacts (default 10)
	$(BIN)/python bench/bench.py --scale $(SCALE)

bench-refresh: install ## time a refresh of the SCALE million contacts drop: stages, memory, disk
	$(BIN)/python bench/refresh_bench.py --scale $(SCALE)

soak: install ## 8 clients, 60 s of mixed traffic on 1M contacts: errors, p50/p99, server memory
	$(BIN)/python bench/soak.py
