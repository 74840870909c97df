# The two commands of the README: `make serve` (install the runtime, then start on the embedded
# SQLite default) and `make test` (install the test extras too, then the whole suite on SQLite
# and then on PostgreSQL).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install install-dev serve test test-sqlite test-postgres fuzz-long bench bench-10m soak schema migrations clean

# runtime only: what `runwatch serve` needs
$(BIN)/runwatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable .
	touch $@

# the test and benchmark extras on top
$(VENV)/.dev-installed: $(BIN)/runwatch
	$(BIN)/pip install --quiet --editable '.[test,bench]'
	# Watcher's own client (tests/test_watcher_sdk.py) declares Python >= 3.12 but runs on
	# 3.11; pip cannot take it as an extra of this 3.11 project, hence its own line.
	$(BIN)/pip install --quiet --ignore-requires-python 'etl-watcher-sdk>=0.1.43,<0.2'
	touch $@

install: $(BIN)/runwatch

install-dev: $(VENV)/.dev-installed

serve: install
	$(BIN)/runwatch serve

test: test-sqlite test-postgres

test-sqlite: install-dev
	RUNWATCH_TEST_DB=sqlite $(BIN)/python -m pytest

test-postgres: install-dev
	RUNWATCH_TEST_DB=postgres $(BIN)/python -m pytest

# The slow tier: the schemathesis and GraphQL fuzzers with ten times the cases (no 5xx allowed),
# on both databases.
fuzz-long: install-dev
	RUNWATCH_FUZZ_SCALE=10 RUNWATCH_TEST_DB=sqlite $(BIN)/python -m pytest tests/test_fuzz.py
	RUNWATCH_FUZZ_SCALE=10 RUNWATCH_TEST_DB=postgres $(BIN)/python -m pytest tests/test_fuzz.py

# the harness, then every other benchmark module present; one table (bench/results/all.md)
bench: install-dev
	$(BIN)/python -m bench.all

# telemetry latency at 10,000,000 runs vs 10,000 (its own database, dropped at the end)
bench-10m: install-dev
	$(BIN)/python -m bench.telemetry10m

# one hour of mode B (two API replicas + one runwatch worker; bench/soak.py has no --mode:
# mode B is --replicas 2)
soak: install-dev
	$(BIN)/python -m bench.soak --replicas 2 --minutes 60

schema: install
	$(BIN)/python -m runwatch.schema.export > schema.graphql

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

migrations: install-dev
	$(BIN)/tortoise -c runwatch.db.TORTOISE_ORM makemigrations
