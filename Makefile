# The two commands of the README: `make serve` (install, then start on the embedded SQLite
# default) and `make test` (the whole suite on SQLite, then on PostgreSQL).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install serve test test-sqlite test-postgres bench schema migrations clean

$(BIN)/runwatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[test,bench]'
	touch $@

install: $(BIN)/runwatch

serve: install
	$(BIN)/runwatch serve

test: test-sqlite test-postgres

test-sqlite: install
	RUNWATCH_TEST_DB=sqlite $(BIN)/python -m pytest

test-postgres: install
	RUNWATCH_TEST_DB=postgres $(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench

schema: install
	$(BIN)/python -m runwatch.schema.export > schema.graphql

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

migrations: install
	$(BIN)/tortoise -c runwatch.db.TORTOISE_ORM makemigrations
