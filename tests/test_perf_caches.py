"""The per-request savings of the GraphQL path: lazy DataLoaders and the cache of the cost
checks. Each must change nothing a caller sees: a cache hit answers what a miss would."""

from __future__ import annotations

from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.telemetry import TelemetryOptions
from runwatch.schema import build_schema
from runwatch.schema.context import Loaders
from runwatch.schema.limits import CostBounds
from tests.conftest import app_client
from tests.helpers import graphql

NESTED = ("query($a: Int, $b: Int) { runs(first: $a) { nodes { children(first: $b) { id } } } }")


def test_loaders_are_built_only_when_used():
    caller = Caller(organisation_id=1, scopes=frozenset({Scope.READ}))
    loaders = Loaders(caller=caller, options=TelemetryOptions())
    assert "built=[]" in repr(loaders)
    first = loaders.run
    assert loaders.run is first  # one loader per request: batching and its cache hold
    assert "built=['run']" in repr(loaders)
    assert loaders.pipeline is not loaders.run


def _bounds(**changes) -> CostBounds:
    values = dict(max_depth=10, max_aliases=10, max_tokens=1000, max_page_size=200,
                  max_cost=5_000, default_page_size=50, cache_size=4)
    values.update(changes)
    return CostBounds(**values)


def _check(bounds: CostBounds, query: str, variables=None, operation=None):
    from graphql import parse

    schema = build_schema()._schema
    return bounds.checked(schema, parse(query), query, operation, variables)


def test_the_cost_cache_is_keyed_by_document_operation_and_page_size_variables():
    bounds = _bounds(cache_size=100)
    errors, small = _check(bounds, NESTED, {"a": 5, "b": 5})
    assert errors == [] and small == 5 + 25
    # Other values: another answer (the first one is not reused), over the budget here.
    errors, big = _check(bounds, NESTED, {"a": 100, "b": 100})
    assert errors == [] and big == 100 + 10_000
    # `true` is not `1` (a bool is no page size: the default applies).
    _, with_bool = _check(bounds, NESTED, {"a": True, "b": 1})
    _, with_int = _check(bounds, NESTED, {"a": 1, "b": 1})
    assert (with_bool, with_int) == (50 + 50, 1 + 1)
    # A variable that is not a page size is not part of the key: same answer, one entry.
    other = NESTED.replace("query($a: Int, $b: Int)", "query($a: Int, $b: Int, $c: String)")
    before = len(bounds._checks)
    assert _check(bounds, other, {"a": 5, "b": 5, "c": "x"})[1] == 30
    assert _check(bounds, other, {"a": 5, "b": 5, "c": "y"})[1] == 30
    assert len(bounds._checks) == before + 1
    # The same document, another operation: its own entry.
    two = NESTED.replace("query(", "query A(") + " query B { runs(first: 2) { nodes { id } } }"
    assert _check(bounds, two, {"a": 5, "b": 5}, "A")[1] == 30
    assert _check(bounds, two, {"a": 5, "b": 5}, "B")[1] == 2


def test_the_cost_cache_is_bounded():
    bounds = _bounds(cache_size=3)
    for n in range(10):
        _check(bounds, NESTED, {"a": n, "b": 1})
    assert len(bounds._checks) == 3
    assert len(bounds._page_variables) <= 3


def test_page_size_errors_come_back_on_every_hit():
    bounds = _bounds()
    for _ in range(3):
        errors, cost = _check(bounds, NESTED, {"a": 500, "b": 1})
        assert [e.extensions["code"] for e in errors] == ["BAD_USER_INPUT"]
        assert cost is None


def test_unhashable_page_size_variables_skip_the_cache():
    bounds = _bounds()
    errors, _ = _check(bounds, NESTED, {"a": [1], "b": 1})
    assert errors == [] and len(bounds._checks) == 0


async def test_the_budget_is_enforced_on_cache_hits(settings, tenant):
    query = "query($n: Int) { runs(first: $n) { nodes { children(first: $n) { id } } } }"
    async with app_client(settings, graphql_max_cost=1_000) as client:
        for _ in range(3):  # a miss, then hits
            body = await graphql(client, tenant, query, "read", n=100)
            assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY", body
            body = await graphql(client, tenant, query, "read", n=10)
            assert "errors" not in body, body
            assert body["extensions"]["cost"] == {"requested": 110, "budget": 1_000}



def test_serve_runs_on_uvloop_and_httptools():
    """`runwatch serve` leaves uvicorn's loop and http at "auto": with uvloop and httptools
    installed (runtime dependencies) that is what it runs on."""
    import uvloop
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    config = Config(app="runwatch.app:create_app", factory=True, ws="websockets-sansio")
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
