"""The status UI's GraphQL: each screen's query is a committed `.graphql` file beside the UI
(runwatch/ui/static/queries/), valid against the schema the server serves and the committed
SDL, within the server's cost bounds, and used by the UI's code (no stale file)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from graphql import build_schema as build_sdl_schema
from graphql import parse, validate

from runwatch.schema import build_schema
from runwatch.settings import Settings
from runwatch.ui import STATIC

QUERIES = sorted((STATIC / "queries").glob("*.graphql"))
SDL = Path(__file__).resolve().parent.parent / "schema.graphql"
SCRIPTS = "\n".join(p.read_text() for p in (STATIC / "js").glob("*.js"))


def test_there_is_a_query_for_each_screen() -> None:
    names = {p.stem for p in QUERIES}
    assert {"board", "pipeline", "lineage", "run", "runUpdates", "webhooks", "redeliver",
            "alerts", "signIn"} <= names


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.name)
def test_each_query_is_valid_against_the_schema(path: Path) -> None:
    document = parse(path.read_text())
    served = build_schema(Settings())._schema
    assert validate(served, document) == []
    assert validate(build_sdl_schema(SDL.read_text()), document) == []
    operations = [d for d in document.definitions if d.kind == "operation_definition"]
    assert len(operations) == 1 and operations[0].name.value[0].isupper(), "one named operation"


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.name)
def test_each_query_is_used_by_the_ui(path: Path) -> None:
    assert re.search(rf"""["']{re.escape(path.stem)}["']""", SCRIPTS), (
        f"{path.name} is not loaded by any script in runwatch/ui/static/js/")


def test_a_broken_query_is_caught() -> None:
    served = build_schema(Settings())._schema
    errors = validate(served, parse("query Q { connections { nodes { zzz } } }"))
    assert [e.message for e in errors] == [
        "Cannot query field 'zzz' on type 'Connection'."]


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.name)
def test_page_sizes_are_within_the_maximum(path: Path) -> None:
    """`first` is at most 200 (the API's maximum page size), or the screen gets an error."""
    sizes = [int(n) for n in re.findall(r"\bfirst:\s*(\d+)", path.read_text())]
    assert all(size <= 200 for size in sizes), sizes
