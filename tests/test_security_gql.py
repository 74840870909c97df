"""Issue 10, the GraphQL findings: cost analysis before execution (2), no 500 from any input on
/graphql (7), no field suggestions with introspection off (8), no credentials in the access
log (12)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest
from graphql import parse

from runwatch.app import create_app
from runwatch.resolvers import executions, pipelines
from runwatch.resolvers import runs as runs_api
from runwatch.resolvers.caller import Caller, Scope
from runwatch.schema import build_schema
from tests.conftest import app_client
from tests.helpers import graphql

NESTED = ("{runs(first:200){nodes{pipeline{runs(first:200){nodes{pipeline{runs(first:200){nodes"
          "{pipeline{runs(first:200){nodes{id}}}}}}}}}}}}")


def cost_of(query: str, variables: dict[str, Any] | None = None) -> int:
    from runwatch.schema.cost import operation_cost

    schema = build_schema()._schema
    document = parse(query)
    return operation_cost(schema, document, document.definitions[0], variables,
                          default_page_size=50, max_page_size=200, unpaged=20)


# ------------------------------------------------------------------------- 2. cost analysis


def test_cost_is_the_sum_of_the_products_of_page_sizes():
    assert cost_of("{ runs(first: 10) { nodes { id } } }") == 10
    assert cost_of("{ runs { nodes { id } } }") == 50  # the default page size counted
    assert cost_of("{ runs(first: 10) { nodes { pipeline { runs(first: 3) { nodes { id } } } } } }"
                   ) == 10 + 30
    assert cost_of(NESTED) == 200 + 200 ** 2 + 200 ** 3 + 200 ** 4
    # nested logs and samples are lists like any other
    assert cost_of("{ pipelines(first: 5) { nodes { runs(first: 4) { nodes { "
                   "logEntries(first: 3) { nodes { seq } } telemetrySamples { nodes { rows } } "
                   "} } } } }") == 5 + 20 + 20 * 3 + 20 * 50
    # a short list counts at its `first`, the field's own default when not given
    assert cost_of("{ connection(id: 1) { pipelines { id } } }") == 50
    assert cost_of("{ connection(id: 1) { pipelines(first: 3) { id } } }") == 3
    assert cost_of("{ run(id: 1) { children { id } } }") == 20
    # an unpaged list of objects (bounded by construction) counts as 20 items
    assert cost_of("{ run(id: 1) { anomalyResults { id } } }") == 20
    # variables resolved (and their defaults)
    q = "query($n: Int = 7) { runs(first: $n) { nodes { id } } }"
    assert cost_of(q) == 7 and cost_of(q, {"n": 3}) == 3
    # fragments and inline fragments expanded, each spread counted
    assert cost_of("""{ a: runs(first: 2) { ...R } b: runs(first: 3) { ...R } }
        fragment R on RunPage { nodes { ... on Run { pipeline { runs(first: 5) { nodes { id }
        } } } } }""") == 2 + 10 + 3 + 15


async def test_the_issue_query_is_refused_quickly_with_cost_and_budget(client, tenant, monkeypatch):
    called = []
    original = runs_api.list_runs

    async def spy(**kwargs: Any) -> Any:
        called.append(kwargs)
        return await original(**kwargs)

    monkeypatch.setattr(runs_api, "list_runs", spy)
    started = time.perf_counter()
    body = await graphql(client, tenant, NESTED, "read")
    assert time.perf_counter() - started < 0.5
    assert body.get("data") is None, body
    [error] = body["errors"]
    extensions = error["extensions"]
    assert extensions["code"] == "QUERY_TOO_COSTLY"
    assert extensions["cost"] == 200 + 200 ** 2 + 200 ** 3 + 200 ** 4
    assert extensions["budget"] == 200_000
    assert "1,608,040,200" in error["message"] and "200,000" in error["message"]
    assert called == []


async def test_the_short_lists_that_nest_are_bounded_and_counted(client, tenant):
    """`Run.children` and `Connection.pipelines` nest (a tree, a connection's pipelines'
    connection…): they take `first`, are counted at it, and answer at most that many."""
    cycle = ("{ connections { nodes { pipelines { connection { pipelines { connection { "
             "pipelines { id } } } } } } } }")
    body = await graphql(client, tenant, cycle, "read")
    assert body["errors"][0]["extensions"] == {
        "code": "QUERY_TOO_COSTLY", "cost": 50 + 50 * 50 + 50 ** 3 + 50 ** 4,
        "budget": 200_000}, body
    tree = "{ runs(first: 1) { nodes { children { children { children { children { id } } } } } } }"
    body = await graphql(client, tenant, tree, "read")
    assert "errors" not in body, body
    assert body["extensions"]["cost"]["requested"] == 1 + 20 + 20 ** 2 + 20 ** 3 + 20 ** 4
    wide = ("{ runs(first: 1) { nodes { children(first: 200) { children(first: 200) { "
            "children(first: 200) { id } } } } } }")  # 1 + 200 + 200² + 200³
    assert (await graphql(client, tenant, wide, "read"))["errors"][0]["extensions"][
        "code"] == "QUERY_TOO_COSTLY"


async def watcher_pipeline_run(caller: Caller, parent: int | None = None) -> int:
    """An execution (of one pipeline), a child of `parent` when given."""
    found = await pipelines.list_pipelines(caller=caller)
    pipeline = found.items[0] if found.items else await pipelines.create_pipeline(
        caller=caller, fields=pipelines.PipelineFields(name="tree"))
    run = await executions.start_execution(caller=caller, start=executions.ExecutionStart(
        pipeline_id=pipeline.id, parent_id=parent))
    return run.id


async def test_a_short_list_longer_than_first_is_an_error_not_a_cut(client, tenant):
    caller = Caller(organisation_id=tenant.org_id, scopes=frozenset({Scope.ADMIN}))
    parent = await watcher_pipeline_run(caller)
    for _ in range(3):
        await watcher_pipeline_run(caller, parent=parent)
    query = "query($id: ID!, $n: Int!) { run(id: $id) { children(first: $n) { id } } }"
    body = await graphql(client, tenant, query, "read", id=str(parent), n=3)
    assert len(body["data"]["run"]["children"]) == 3, body
    body = await graphql(client, tenant, query, "read", id=str(parent), n=2)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", body
    assert "3 items, more than first: 2" in error["message"], body


async def test_accepted_operations_state_their_cost(client, tenant):
    r = await client.post("/graphql", json={"query": "{ runs(first: 20) { nodes { id } } }"},
                          headers=tenant.headers("read"))
    body = r.json()
    assert "errors" not in body, body
    assert body["extensions"]["cost"] == {"requested": 20, "budget": 200_000}


async def test_cost_uses_variables_and_the_budget_is_configurable(settings, tenant):
    query = ("query($n: Int) { runs(first: $n) { nodes { logEntries(first: $n) { nodes { seq } } }"
             " } }")
    async with app_client(settings, graphql_max_cost=1000) as c:
        body = await graphql(c, tenant, query, "read", n=30)  # 30 + 900
        assert "errors" not in body and body["extensions"]["cost"]["requested"] == 930, body
        body = await graphql(c, tenant, query, "read", n=40)  # 40 + 1600
        assert body["errors"][0]["extensions"] == {
            "code": "QUERY_TOO_COSTLY", "cost": 1640, "budget": 1000}
    async with app_client(settings, graphql_max_cost=0) as c:  # off
        body = await graphql(c, tenant, NESTED, "read")
        assert "errors" not in body, body


async def test_identical_costly_operations_are_still_validated_once(client, tenant, monkeypatch):
    import strawberry.schema.schema as strawberry_schema

    seen: list[str] = []
    original = strawberry_schema.validate_document

    def counting(schema, document, *args: Any, **kwargs: Any):
        seen.append("x")
        return original(schema, document, *args, **kwargs)

    monkeypatch.setattr(strawberry_schema, "validate_document", counting)
    query = ("{ runs { nodes { pipeline { runs { nodes { pipeline { runs { nodes { pipeline { "
             "runs { nodes { id } } } } } } } } } } } }")  # 50 + 2,500 + 125,000 + 6,250,000
    for _ in range(3):
        body = await graphql(client, tenant, query, "read")
        assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert len(seen) <= 1


async def test_cost_applies_over_the_websocket(app, tenant):
    from tests.tenancy_world import ws_subscribe

    messages = await ws_subscribe(app, token=tenant.tokens["read"], variables={}, query=(
        "subscription { runUpdates(id: 1) { newLogLines { seq } run { pipeline { "
        "runs(first: 200) { nodes { pipeline { runs(first: 200) { nodes { pipeline { "
        "runs(first: 200) { nodes { id } } } } } } } } } } } }"))
    assert messages[0]["type"] == "error", messages
    assert messages[0]["payload"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"


# ----------------------------------------------------------------- 7. no 500 from any input


async def test_a_deeply_nested_json_body_is_a_400(client, tenant):
    body = "[" * 5000 + "]" * 5000
    r = await client.post("/graphql", content=body,
                          headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    deep_variables = ('{"query": "{ __typename }", "variables": {"a": ' + "[" * 5000
                      + "]" * 5000 + "}}")
    r = await client.post("/graphql", content=deep_variables,
                          headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    # shallow enough for the parser, too deep for what comes after it (it was "Unexpected
    # error." from the resolver): refused at the door, past 100 levels
    for depth, status in ((95, 200), (101, 400), (910, 400)):  # (+3: the body, variables, {})
        value = '{"a":' * depth + "{}" + "}" * depth
        query = ('mutation($s: JSON!) { createConnection(input: {name: \\"n\\", '
                 'warehouseType: \\"snowflake\\", settings: $s}) { __typename } }')
        body = '{"query": "' + query + '", "variables": {"s": ' + value + "}}"
        r = await client.post("/graphql", content=body,
                              headers={"content-type": "application/json", **tenant.headers()})
        assert r.status_code == status, (depth, r.text)
        assert "Unexpected error." not in r.text


@pytest.mark.parametrize("body", [
    '{"query": "{ __typename }", "variables": {"a": NaN}}',
    '{"query": "{ __typename }", "variables": {"a": -Infinity}}',
    '{"query": "{ __typename }", "variables": {"a": "\\ud800"}}',
    b'{"query": "{ __typename }", "variables": {"a": "\xff"}}',
], ids=["nan", "infinity", "lone-surrogate", "not-utf8"])
async def test_non_json_values_are_a_400(client, body):
    r = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_a_huge_list_variable_is_refused(client, tenant):
    query = "query($s: [RunStatus!]) { runs(status: $s) { nodes { id } } }"
    body = await graphql(client, tenant, query, "read", s=["RUNNING"] * 40_000)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", body
    assert "40,000" in error["message"] and "1,000" in error["message"]
    body = await graphql(client, tenant, query, "read", s=["RUNNING"] * 1000)
    assert "errors" not in body, body


async def test_a_huge_int_literal_is_a_clear_error(client, tenant, caplog):
    digits = "9" * 5000
    with caplog.at_level(logging.ERROR):
        body = await graphql(client, tenant, f"{{ runs(first: {digits}) {{ nodes {{ id }} }} }}",
                             "read")
        [error] = body["errors"]
        assert error["message"] != "Unexpected error.", body
        assert "Int" in error["message"], body
        body = await graphql(client, tenant, f"{{ run(id: {digits}) {{ id }} }}", "read")
        assert "Unexpected error." not in str(body), body  # an id that exists nowhere
        r = await client.post("/graphql", content='{"query": "query($n: Int) { runs(first: $n) '
                              '{ nodes { id } } }", "variables": {"n": ' + digits + "}}",
                              headers={"content-type": "application/json", **tenant.headers()})
        assert r.status_code == 400, r.text
    assert "Traceback" not in caplog.text and not [
        r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_subscription_over_http_is_a_clear_400(client, tenant):
    r = await client.post("/graphql", json={"query": "subscription { runUpdates(id: 1) { "
                                                     "run { id } } }"},
                          headers=tenant.headers("read"))
    assert r.status_code == 400, r.text
    message = r.json()["errors"][0]["message"]
    assert "WebSocket" in message, message


# -------------------------------------------------- 8. no suggestions with introspection off


async def test_no_suggestions_when_introspection_is_off(settings, tenant):
    probes = ["{ webhookEndpoint(id: 1) { secre } }",
              "{ runs(firs: 1) { nodes { id } } }",
              "{ runs(status: [RUNNIN]) { nodes { id } } }",
              "query($s: [RunStatus!]) { runs(status: $s) { nodes { id } } }"]
    async with app_client(settings, graphql_introspection=True) as c:
        body = await graphql(c, None, probes[0])
        assert "Did you mean" in body["errors"][0]["message"]  # the finding, when on
    async with app_client(settings, graphql_introspection=False) as c:
        for auth in (None, tenant):
            for query in probes:
                body = await graphql(c, auth, query, s=["RUNNIN"])
                assert body["errors"], body
                text = str(body)
                assert "Did you mean" not in text and "secret" not in text, body


# ------------------------------------------------------ 12. no credentials in access logs


def test_the_access_log_redacts_query_strings(caplog):
    from runwatch.app import install_access_log_filter

    install_access_log_filter()
    logger = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                    '/graphql?headers={"Authorization":"Bearer rw_secret_token"}&x=1', "1.1",
                    200)
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                    "/api/elt/runs?token=rw_other_secret", "1.1", 200)
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/health", "1.1", 200)
    text = caplog.text
    assert "rw_secret_token" not in text and "rw_other_secret" not in text, text
    assert "/graphql?headers=[redacted]&x=[redacted]" in text, text
    assert "/health" in text


async def test_the_served_access_log_carries_no_token(settings, tenant, caplog):
    """Through a real uvicorn: the console URL with its headers is logged without them."""
    import asyncio
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(replace(settings, graphiql=True))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_config=None, access_log=True))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        with caplog.at_level(logging.INFO, logger="uvicorn.access"):
            async with httpx.AsyncClient() as c:
                secret = tenant.tokens["admin"]
                r = await c.get(f"http://127.0.0.1:{port}/graphql",
                                params={"headers": f'{{"Authorization":"Bearer {secret}"}}'},
                                headers={"accept": "text/html"})
                assert r.status_code == 200
            await asyncio.sleep(0.1)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/graphql?headers=" in line for line in access), access
    assert not any(tenant.tokens["admin"] in line for line in access), access
