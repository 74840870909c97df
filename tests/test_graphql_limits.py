"""GraphQL cost bounds (depth, aliases, tokens, page size), batching, the introspection and
GraphiQL switches, error masking, and the parser/validation caches with the bounds in place."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import strawberry
import strawberry.schema.schema as strawberry_schema
from graphql import get_introspection_query, parse, specified_rules, validate
from strawberry.extensions import QueryDepthLimiter, ValidationCache

from runwatch.models import Connection
from runwatch.resolvers import connections as connections_api
from runwatch.schema import build_schema
from runwatch.schema.limits import MAX_BATCH_OPERATIONS, CostBounds, measure
from runwatch.settings import Settings
from tests.conftest import Tenant, app_client
from tests.helpers import graphql

CREATE = 'createConnection(input: {name: "n", warehouseType: "snowflake"})'


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """Counts calls of the connection resolvers the queries below would reach."""
    counts = {"list": 0, "create": 0}
    originals = {"list": connections_api.list_connections,
                 "create": connections_api.create_connection}

    def spy(name: str):
        async def wrapper(**kwargs: Any) -> Any:
            counts[name] += 1
            return await originals[name](**kwargs)
        return wrapper

    monkeypatch.setattr(connections_api, "list_connections", spy("list"))
    monkeypatch.setattr(connections_api, "create_connection", spy("create"))
    return counts


def chain(depth: int) -> str:
    """A selection on Connection exactly `depth` fields deep: pipelines > connection >
    pipelines … > id."""
    inner = "id"
    for i in range(depth - 1):
        inner = f"{'pipelines' if i % 2 == (depth - 2) % 2 else 'connection'} {{ {inner} }}"
    return inner


def deep(depth: int) -> str:
    """A root field exactly `depth` fields deep: connections > nodes > pipelines > …"""
    return f"connections {{ nodes {{ {chain(depth - 2)} }} }}"


def deep_mutation(depth: int) -> str:
    """A createConnection exactly `depth` fields deep (the union's inline fragment adds no
    depth): createConnection > connection > pipelines > …"""
    return (f"mutation {{ {CREATE} {{ ... on ConnectionSuccess {{ connection {{ "
            f"{chain(depth - 2)} }} }} }} }}")


def codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors") or []]


def rejected(body: dict[str, Any], code: str, limit: str, maximum: int) -> str:
    """The one error of an operation refused before execution; returns its message."""
    assert body.get("data") is None, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code, body
    assert error["extensions"]["limit"] == limit, body
    assert error["extensions"]["maximum"] == maximum, body
    assert str(maximum) in error["message"], body
    return error["message"]


async def no_rows_created() -> bool:
    return await Connection.all().count() == 0


# Depth


def test_deep_builds_the_depth_it_says():
    bounds = CostBounds(max_depth=100, max_aliases=100, max_tokens=10_000, max_page_size=200)
    schema = build_schema()._schema
    for depth in (3, 4, 5, 15, 16):
        for text in (f"{{ {deep(depth)} }}", deep_mutation(depth)):
            document = parse(text)
            assert measure(document.definitions[0], {}, {}) == (depth, 0), text
            assert validate(schema, document,
                            (*specified_rules, *bounds.rules)) == []


async def test_depth_at_the_maximum_passes(settings, tenant, calls):
    # chains of `pipelines` (20 each in the cost estimate): the cost budget is off here
    async with app_client(settings, graphql_max_cost=0) as client:
        body = await graphql(client, tenant, f"{{ {deep(15)} }}")
        assert "errors" not in body, body
        assert calls["list"] == 1


async def test_depth_over_the_maximum_is_refused_before_any_resolver(settings, tenant, calls):
    # chains of `pipelines` (20 each in the cost estimate): the cost budget is off here
    async with app_client(settings, graphql_max_cost=0) as client:
        body = await graphql(client, tenant, f"query Deep {{ {deep(16)} }}")
        message = rejected(body, "QUERY_TOO_COMPLEX", "maxDepth", 15)
        assert message == ("Operation 'Deep' is nested 16 levels deep, more than the maximum depth "
                           "of 15.")
        body = await graphql(client, tenant, deep_mutation(16))
        rejected(body, "QUERY_TOO_COMPLEX", "maxDepth", 15)
        assert calls == {"list": 0, "create": 0}
        assert await no_rows_created()
        body = await graphql(client, tenant, deep_mutation(15))
        assert "errors" not in body, body
        assert calls["create"] == 1


async def test_depth_counts_through_fragments(settings, tenant, calls):
    # chains of `pipelines` (20 each in the cost estimate): the cost budget is off here
    async with app_client(settings, graphql_max_cost=0) as client:
        query = ("query { connections { ...Nodes } } fragment Nodes on ConnectionPage { nodes { "
                 "...Deep } } fragment Deep on Connection { %s }")
        body = await graphql(client, tenant, query % chain(13))  # connections > nodes > 13 more
        assert "errors" not in body, body
        body = await graphql(client, tenant, query % chain(14))
        assert "nested 16 levels" in rejected(body, "QUERY_TOO_COMPLEX", "maxDepth", 15)
        assert calls["list"] == 1


async def test_depth_is_configurable(settings, tenant, calls):
    async with app_client(settings, graphql_max_depth=4, graphql_max_cost=0) as c:
        body = await graphql(c, tenant, f"{{ {deep(4)} }}")
        assert "errors" not in body, body
        body = await graphql(c, tenant, f"{{ {deep(5)} }}")
        assert "maximum depth of 4" in rejected(body, "QUERY_TOO_COMPLEX", "maxDepth", 4)
    async with app_client(settings, graphql_max_depth=20, graphql_max_cost=0) as c:
        body = await graphql(c, tenant, f"{{ {deep(20)} }}")
        assert "errors" not in body, body
    assert calls["list"] == 2


# Aliases


def aliased(count: int, field: str = "__typename") -> str:
    return " ".join(f"a{i}: {field}" for i in range(count))


async def test_aliases_at_the_maximum_pass(client, tenant):
    body = await graphql(client, tenant, f"{{ {aliased(30)} }}")
    assert "errors" not in body and body["data"] == {f"a{i}": "Query" for i in range(30)}


async def test_aliases_over_the_maximum_are_refused_before_any_resolver(client, tenant, calls):
    page = "connections { nodes { id } }"
    body = await graphql(client, tenant, f"{{ {aliased(31, page)} }}")
    message = rejected(body, "QUERY_TOO_COMPLEX", "maxAliases", 30)
    assert message == "The operation uses 31 aliases, more than the maximum of 30 aliases."
    mutation = "mutation { " + " ".join(
        f"c{i}: {CREATE} {{ __typename }}" for i in range(31)) + " }"
    body = await graphql(client, tenant, mutation)
    rejected(body, "QUERY_TOO_COMPLEX", "maxAliases", 30)
    assert calls == {"list": 0, "create": 0}
    assert await no_rows_created()


async def test_aliases_multiply_through_fragments_and_cost_linear_time(client, tenant, calls):
    # F40 resolves `a: __typename` 2^40 times: counted without walking every path.
    fragments = ["fragment F0 on Query { a: __typename connections { nodes { id } } }"] + [
        f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 41)]
    body = await graphql(client, tenant, "query { ...F40 } " + " ".join(fragments))
    assert f"uses {2 ** 40} aliases" in rejected(body, "QUERY_TOO_COMPLEX", "maxAliases", 30)
    assert calls["list"] == 0


async def test_aliases_are_configurable(settings, tenant):
    async with app_client(settings, graphql_max_aliases=2) as c:
        assert "errors" not in await graphql(c, tenant, f"{{ {aliased(2)} }}")
        body = await graphql(c, tenant, f"{{ {aliased(3)} }}")
        rejected(body, "QUERY_TOO_COMPLEX", "maxAliases", 2)
    async with app_client(settings, graphql_max_aliases=50) as c:
        assert "errors" not in await graphql(c, tenant, f"{{ {aliased(50)} }}")


# Tokens


def padded(tokens: int) -> str:
    """A valid document of about `tokens` tokens: operation `Main` and tiny others (each of 5
    tokens; padding one selection instead would trip graphql-core's own overlap budget)."""
    main = "query Main { connections { nodes { id } } }"  # 10 tokens
    return main + "".join(f" query Q{i} {{ __typename }}" for i in range((tokens - 10) // 5))


async def main(client: httpx.AsyncClient, tenant: Tenant, document: str) -> dict[str, Any]:
    r = await client.post("/graphql", json={"query": document, "operationName": "Main"},
                          headers=tenant.headers())
    assert r.status_code == 200, r.text
    return r.json()


async def test_tokens_over_the_maximum_are_refused_before_any_resolver(client, tenant, calls):
    body = await main(client, tenant, padded(5010))
    message = rejected(body, "QUERY_TOO_COMPLEX", "maxTokens", 5000)
    assert message == "The document exceeds the maximum of 5000 tokens."
    body = await graphql(client, tenant, "mutation { " + CREATE + " { ... on ConnectionSuccess "
                         "{ connection { " + "id " * 5000 + "} } } }")
    rejected(body, "QUERY_TOO_COMPLEX", "maxTokens", 5000)
    assert calls == {"list": 0, "create": 0}
    assert await no_rows_created()
    body = await main(client, tenant, padded(4990))
    assert "errors" not in body and body["data"] == {"connections": {"nodes": []}}
    assert calls["list"] == 1


async def test_tokens_are_configurable(settings, tenant):
    async with app_client(settings, graphql_max_tokens=50) as c:
        assert "errors" not in await main(c, tenant, padded(40))
        rejected(await main(c, tenant, padded(60)), "QUERY_TOO_COMPLEX", "maxTokens", 50)
    async with app_client(settings, graphql_max_tokens=8000) as c:
        assert "errors" not in await main(c, tenant, padded(7000))


# Page size


async def test_page_size_over_the_maximum_is_refused_before_any_resolver(client, tenant, calls):
    body = await graphql(client, tenant, "{ connections(first: 201) { nodes { id } } }")
    message = rejected(body, "BAD_USER_INPUT", "maxPageSize", 200)
    assert message == "first: must be at most 200 (the maximum page size), got 201"
    assert body["errors"][0]["extensions"]["fieldErrors"] == {
        "first": ["must be at most 200 (the maximum page size), got 201"]}
    body = await graphql(client, tenant, "mutation { " + CREATE + " { ... on ConnectionSuccess "
                         "{ connection { runs(first: 1000) { nodes { id } } } } } }")
    rejected(body, "BAD_USER_INPUT", "maxPageSize", 200)
    assert calls == {"list": 0, "create": 0}
    assert await no_rows_created()


@pytest.mark.parametrize("query", [
    "query($n: Int) { connections(first: $n) { nodes { id } } }",
    "query($n: Int) { ...Page } fragment Page on Query { connections(first: $n) { nodes { id } } }",
    "query($n: Int = 300) { connections(first: $n) { nodes { id } } }",
])
async def test_page_size_variables_are_checked_on_every_request(client, tenant, calls, query):
    """The variable's value is not part of the validation cache key: a document validated
    (and cached) with `$n: 10` must still refuse `$n: 500`."""
    query = query.replace("query(", f"query P{uuid.uuid4().hex}(")
    body = await graphql(client, tenant, query, n=10)
    assert "errors" not in body, body
    body = await graphql(client, tenant, query, n=500)
    assert "got 500" in rejected(body, "BAD_USER_INPUT", "maxPageSize", 200)
    body = await graphql(client, tenant, query, n=200)
    assert "errors" not in body, body
    assert calls["list"] == 2
    if "= 300" in query:  # the default applies when the variable is not sent
        r = await client.post("/graphql", json={"query": query}, headers=tenant.headers())
        assert "got 300" in rejected(r.json(), "BAD_USER_INPUT", "maxPageSize", 200)
    assert calls["list"] == 2


async def test_page_size_variables_of_mutations(client, tenant, calls):
    mutation = ("mutation($n: Int) { " + CREATE + " { ... on ConnectionSuccess "
                "{ connection { runs(first: $n) { nodes { id } } } } } }")
    rejected(await graphql(client, tenant, mutation, n=201), "BAD_USER_INPUT", "maxPageSize", 200)
    assert calls["create"] == 0
    assert await no_rows_created()


def test_page_size_is_configurable():
    schema = build_schema(Settings(), max_page_size=10)
    result = schema.execute_sync("{ connections(first: 11) { nodes { id } } }")
    assert result.data is None
    (error,) = result.errors
    assert error.extensions["maximum"] == 10
    assert error.message == "first: must be at most 10 (the maximum page size), got 11"
    bounds = CostBounds(max_depth=15, max_aliases=30, max_tokens=5000, max_page_size=10)
    document = parse("{ connections(first: 10) { nodes { id } } }")
    assert validate(schema._schema, document, (*specified_rules, *bounds.rules)) == []
    document = parse("query($n: Int) { connections(first: $n) { nodes { id } } }")
    assert bounds.page_size_variable_errors(document, None, {"n": 10}) == []
    assert len(bounds.page_size_variable_errors(document, None, {"n": 11})) == 1


# Batching


BATCH = [{"query": "{ a: __typename }"}, {"query": "{ b: __typename }"}]


async def test_batching_is_off_by_default(client, tenant):
    r = await client.post("/graphql", json=BATCH, headers=tenant.headers())
    assert r.status_code == 400
    assert r.json() == {"errors": [{"message": "Batching is not enabled",
                                    "extensions": {"code": "BAD_REQUEST"}}]}


async def test_batching_can_be_enabled(settings, tenant, calls):
    async with app_client(settings, graphql_batching=True) as c:
        r = await c.post("/graphql", json=BATCH, headers=tenant.headers())
        assert r.status_code == 200, r.text
        assert [b["data"] for b in r.json()] == [{"a": "Query"}, {"b": "Query"}]
        # Each operation of a batch is bounded on its own.
        r = await c.post("/graphql", json=[{"query": f"{{ {deep(16)} }}"}, *BATCH],
                         headers=tenant.headers())
        assert r.status_code == 200, r.text
        assert codes(r.json()[0]) == ["QUERY_TOO_COMPLEX"]
        assert [b["data"] for b in r.json()[1:]] == [{"a": "Query"}, {"b": "Query"}]
        r = await c.post("/graphql", json=BATCH * MAX_BATCH_OPERATIONS,
                         headers=tenant.headers())
        assert r.status_code == 400
        assert r.json()["errors"][0]["message"] == "Too many operations"
    assert calls["list"] == 0


# Introspection and GraphiQL


async def test_introspection_is_on_by_default_and_within_the_bounds(client, tenant):
    # What GraphiQL sends, with every option, passes the default depth/alias/token bounds.
    query = get_introspection_query(descriptions=True, specified_by_url=True,
                                    directive_is_repeatable=True, schema_description=True,
                                    input_value_deprecation=True)
    body = await graphql(client, tenant, query)
    assert "errors" not in body, body
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_introspection_can_be_switched_off(settings, tenant):
    async with app_client(settings, graphql_introspection=False) as c:
        for query in ("{ __schema { queryType { name } } }",
                      '{ __type(name: "Query") { name } }',
                      get_introspection_query()):
            body = await graphql(c, tenant, query)
            assert body.get("data") is None, body
            assert set(codes(body)) == {"INTROSPECTION_DISABLED"}, body
            assert "introspection has been disabled" in body["errors"][0]["message"]
        body = await graphql(c, tenant, "{ __typename connections { nodes { id } } }")
        assert "errors" not in body
        assert body["data"] == {"__typename": "Query", "connections": {"nodes": []}}


async def test_graphiql_can_be_switched_off(settings):
    async with app_client(settings, graphiql=False) as c:
        r = await c.get("/graphql", headers={"Accept": "text/html"})
        assert r.status_code in {404, 405}
        assert "graphiql" not in r.text.lower()


# Errors


async def test_unexpected_errors_are_masked_domain_errors_are_not(client, tenant, monkeypatch):
    async def broken(**kwargs: Any) -> Any:
        raise ZeroDivisionError("secret internal detail /srv/runwatch/db.py line 42")

    monkeypatch.setattr(connections_api, "list_connections", broken)
    r = await client.post("/graphql", json={"query": "{ connections { nodes { id } } }"},
                          headers=tenant.headers())
    assert r.status_code == 200
    (error,) = r.json()["errors"]
    assert error["message"] == "Unexpected error."
    assert "extensions" not in error
    for leak in ("secret", "ZeroDivisionError", "Traceback", "db.py"):
        assert leak not in r.text
    monkeypatch.undo()

    body = await graphql(client, tenant, "{ connections(first: 0) { nodes { id } } }")
    (error,) = body["errors"]
    assert error["message"] == "first: must be between 1 and 200"
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    body = await graphql(client, None, "{ connections { nodes { id } } }")
    (error,) = body["errors"]
    assert error["message"].startswith("Authentication"), error  # its own words, not masked
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


# The validation cache, with the bounds in place


@pytest.fixture
def validations(monkeypatch) -> list[str]:
    """Each graphql-core `validate` call strawberry makes (through its validation cache too)."""
    seen: list[str] = []
    original = strawberry_schema.validate

    def counting(schema, document, *args: Any, **kwargs: Any):
        seen.append(document.definitions[0].name.value if document.definitions[0].name
                    else "")
        return original(schema, document, *args, **kwargs)

    monkeypatch.setattr(strawberry_schema, "validate", counting)
    return seen


async def test_identical_operations_are_validated_once(client, tenant: Tenant, validations):
    name = f"Cached{uuid.uuid4().hex}"
    query = f"query {name}($n: Int) {{ connections(first: $n) {{ nodes {{ id }} }} }}"
    for n in (5, 6, 7):
        body = await graphql(client, tenant, query, n=n)
        assert "errors" not in body, body
    assert validations.count(name) == 1
    # Refused by the per-request variable check, still without validating again.
    rejected(await graphql(client, tenant, query, n=999), "BAD_USER_INPUT", "maxPageSize", 200)
    # A refused document is cached as refused.
    refused = f"query Deep{name} {{ {deep(16)} }}"
    for _ in range(2):
        assert codes(await graphql(client, tenant, refused)) == ["QUERY_TOO_COMPLEX"]
    assert validations.count(name) == 1
    assert validations.count(f"Deep{name}") == 1


async def test_validated_once_with_bounds_from_other_settings(settings, tenant, validations):
    name = f"Other{uuid.uuid4().hex}"
    async with app_client(settings, graphql_max_depth=6, graphql_introspection=False) as c:
        for _ in range(3):
            assert "errors" not in await graphql(c, tenant, f"query {name} {{ {deep(6)} }}")
    assert validations.count(name) == 1


def test_the_upstream_trap_a_factory_depth_limiter_defeats_the_cache(validations):
    """Control for the count above (strawberry#4635): a `QueryDepthLimiter` passed as a
    factory builds a new rule class per request, so the validation cache never hits. If this
    starts failing, strawberry has fixed it."""

    @strawberry.type
    class Query:
        @strawberry.field
        def hello(self) -> str:
            return "hi"

    schema = strawberry.Schema(query=Query, extensions=[
        lambda: QueryDepthLimiter(max_depth=5), lambda: ValidationCache(maxsize=1024)])
    name = f"Trap{uuid.uuid4().hex}"
    for _ in range(2):
        assert schema.execute_sync(f"query {name} {{ hello }}").errors is None
    assert validations.count(name) == 2
