# dwsim: every target creates .venv and installs the project on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: help demo test lint format up down status schemas docs bench chaos chaos-quick soak clean

help:  ## List the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/ —/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## The whole flow end to end, with a report (starts and stops what it needs)
	$(BIN)/dwsim demo

test: $(STAMP)  ## All tests; starts the embedded broker and PostgreSQL unless configured
	$(BIN)/pytest
	# The example's own tests, from its folder: only the installed pytest plugin (entry point
	# pytest11) gives them the stack, never tests/conftest.py.
	cd examples/invoice_notifier && ../../$(BIN)/pytest -p no:cacheprovider

lint: $(STAMP)  ## ruff (format + lint) and mypy
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy services schemas infra

format: $(STAMP)  ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

up: $(STAMP)  ## Start the local broker and PostgreSQL, create roles, databases, topics
	$(BIN)/python -m infra up

down: $(STAMP)  ## Stop what `make up` started
	$(BIN)/python -m infra down

status: $(STAMP)  ## Is the local infrastructure up, and where
	$(BIN)/python -m infra status

bench: $(STAMP)  ## Throughput, latency, scaling vs. the raw broker: bench/results/<time>.json
	$(BIN)/dwsim bench

chaos: $(STAMP)  ## Every fault under load, judged by an independent checker: chaos/results/<time>.json
	$(BIN)/dwsim chaos

soak: $(STAMP)  ## Rounds of the whole cycle under short retention: do pruned tables level off? soak/results/<time>.json
	$(BIN)/dwsim soak

# The same quick run is a test of `make test` (tests/e2e/test_chaos_quick.py).
chaos-quick: $(STAMP)  ## Three faults, a few dozen invoices: bridge killed, broker restarted empty, duplicates
	$(BIN)/dwsim chaos --fault bridge-kill --fault broker-restart-empty --fault duplicates --invoices 24 --lines 3

schemas: $(STAMP)  ## Export JSON Schema of every topic to schemas/json/
	$(BIN)/python -m schemas.compatibility

docs: $(STAMP)  ## Regenerate docs/configuration.md from the settings (services/common/settings.py)
	$(BIN)/python -m services.common.configuration_page

clean: $(STAMP)  ## Stop everything (what `dwsim up` started too) and remove .dwsim/
	-$(BIN)/dwsim down
	$(BIN)/python -m infra down
	rm -rf .dwsim
