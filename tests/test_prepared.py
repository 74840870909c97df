"""The prepared path (`runwatch.schema.prepared`) answers what strawberry's path answers.

Each case is sent twice to a fresh app: the first request goes through strawberry's
`Schema.execute` (the document is new), which remembers the document once it validates; the
second runs on the prepared path. Status, body and `Retry-After` must be the same, and the
second must really have taken the prepared path (counted)."""

from __future__ import annotations

import gc
from typing import Any

import httpx
import pytest
import starlette.requests
from graphql.execution.executor import Executor
from strawberry.extensions import SchemaExtension
from tortoise.exceptions import DBConnectionError

from runwatch.app import RunwatchGraphQL
from runwatch.resolvers.caller import Caller
from runwatch.schema import build_schema
from runwatch.schema.context import Context, Loaders
from runwatch.schema.prepared import PreparedOperations
from tests.conftest import Tenant, app_client

PAGE = "query($n: Int) { runs(first: $n) { nodes { id } pageInfo { hasNextPage } } }"
REPORT = ("mutation($i: ReportRunInput!) { reportRun(input: $i) { __typename "
          "... on NotFoundError { message } } }")


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The queries executed on the prepared path, in order; and the requests strawberry's
    view took (`RunwatchGraphQL.run`), as `"run"` entries: a POST of a prepared document
    must not reach it (the lane, `RunwatchGraphQL.prepared_post`, answers it)."""
    seen: list[str] = []
    original = PreparedOperations.execute
    original_run = RunwatchGraphQL.run

    async def execute(self: PreparedOperations, prepared: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["query"])
        return await original(self, prepared, **kwargs)

    async def run(self: RunwatchGraphQL, *args: Any, **kwargs: Any) -> Any:
        seen.append("run")
        return await original_run(self, *args, **kwargs)

    monkeypatch.setattr(PreparedOperations, "execute", execute)
    monkeypatch.setattr(RunwatchGraphQL, "run", run)
    return seen


async def twice(client: httpx.AsyncClient, counted: list[str], body: dict[str, Any],
                headers: dict[str, str] | None = None, method: str = "POST",
                prepared: bool = True) -> httpx.Response:
    """The same request twice: the answers must be the same; returns the second."""
    answers = []
    before = counted.count(body["query"])
    for _ in range(2):
        mark = len(counted)
        if method == "POST":
            r = await client.post("/graphql", json=body, headers=headers or {})
        else:
            r = await client.get("/graphql", params=body, headers=headers or {})
        answers.append(r)
    first, second = answers
    assert (first.status_code, first.json()) == (second.status_code, second.json())
    assert first.headers.get("retry-after") == second.headers.get("retry-after")
    assert counted.count(body["query"]) - before == (1 if prepared else 0), counted
    # A prepared document POSTed is answered by the lane alone; anything else by
    # strawberry's view (`RunwatchGraphQL.run`).
    took_the_view = "run" in counted[mark:]
    assert took_the_view == (not prepared or method != "POST"), counted[mark:]
    return second


async def test_data_and_cost_extension(settings, tenant: Tenant, counted):
    async with app_client(settings) as client:
        r = await twice(client, counted, {"query": PAGE, "variables": {"n": 5}},
                        tenant.headers("read"))
    body = r.json()
    assert r.status_code == 200 and body["data"]["runs"]["nodes"] == []
    assert body["extensions"]["cost"]["budget"] == settings.graphql_max_cost


async def test_variable_checks_run_on_every_request(settings, tenant: Tenant, counted):
    """The document is prepared by a request within the bounds; a later page size or cost
    over them is still refused before any resolver runs, with the same error."""
    async with app_client(settings, graphql_max_cost=1_000) as client:
        ok = await client.post("/graphql", json={"query": PAGE, "variables": {"n": 5}},
                               headers=tenant.headers("read"))
        assert ok.status_code == 200 and "errors" not in ok.json()
        over = await client.post("/graphql", json={"query": PAGE, "variables": {"n": 100_000}},
                                 headers=tenant.headers("read"))
    assert [q for q in counted if q != "run"] == [PAGE]
    error = over.json()["errors"][0]
    assert over.json()["data"] is None
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    # the same refusal from strawberry's path (a fresh app: the document is new there)
    async with app_client(settings, graphql_max_cost=1_000) as client:
        reference = await client.post("/graphql", json={
            "query": PAGE, "variables": {"n": 100_000}}, headers=tenant.headers("read"))
    assert reference.json() == over.json()


async def test_union_member_and_domain_codes(settings, tenant: Tenant, counted):
    async with app_client(settings) as client:
        r = await twice(client, counted, {"query": REPORT, "variables": {"i": {
            "runId": "999999", "completedAt": "2026-01-01T00:00:00Z", "eventsDelivered": 1}}},
            tenant.headers("report"))
        assert r.json()["data"]["reportRun"]["__typename"] == "NotFoundError"
        # A top-level domain failure keeps its code and the hint of what to do.
        anonymous = await twice(client, counted, {"query": PAGE, "variables": {"n": 1}})
    error = anonymous.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED", error
    assert "token" in error["message"].lower()
    async with app_client(settings) as client:  # a token without the `report` scope
        r = await twice(client, counted, {"query": REPORT, "variables": {"i": {
            "runId": "1", "completedAt": "2026-01-01T00:00:00Z", "eventsDelivered": 1}}},
            tenant.headers("read"))
    assert r.json()["data"]["reportRun"]["__typename"] == "PermissionDeniedError"


async def test_variable_errors_lose_suggestions_with_introspection_off(settings, tenant, counted):
    """graphql-core's variable coercion says "Did you mean …?": an execution error on the
    prepared path, a pre-execution one on strawberry's, worded the same on both."""
    query = REPORT
    body = {"query": query, "variables": {"i": {"runid": "1", "completedAt": "2026-01-01"}}}
    async with app_client(settings, graphql_introspection=False) as client:
        # prepared by a valid request first
        await client.post("/graphql", json={"query": query, "variables": {"i": {
            "runId": "5", "completedAt": "2026-01-01T00:00:00Z",
                                     "eventsDelivered": 1}}},
            headers=tenant.headers("report"))
        prepared = await client.post("/graphql", json=body, headers=tenant.headers("report"))
    async with app_client(settings, graphql_introspection=False) as client:
        reference = await client.post("/graphql", json=body, headers=tenant.headers("report"))
    assert counted.count(query) == 1  # the request with the misspelt field
    assert prepared.json() == reference.json()
    assert "Did you mean" not in prepared.text and prepared.json()["errors"]


async def test_unexpected_errors_are_masked_and_faults_are_503(settings, tenant, counted,
                                                              monkeypatch):
    from runwatch.resolvers import runs as runs_api

    async def broken(**_: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(runs_api, "report_run", broken)
    variables = {"i": {"runId": "1", "completedAt": "2026-01-01T00:00:00Z",
                                     "eventsDelivered": 1}}
    async with app_client(settings) as client:
        r = await twice(client, counted, {"query": REPORT, "variables": variables},
                        tenant.headers("report"))
    assert r.json()["errors"][0]["message"] == "Unexpected error."
    assert "secret" not in r.text

    async def unavailable(**_: Any) -> Any:
        raise DBConnectionError("the database is down")

    monkeypatch.setattr(runs_api, "report_run", unavailable)
    async with app_client(settings) as client:
        r = await twice(client, counted, {"query": REPORT + " ", "variables": variables},
                        tenant.headers("report"))
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"


async def test_what_is_never_prepared(settings, tenant: Tenant, counted):
    async with app_client(settings) as client:
        # invalid documents: strawberry's path every time
        await twice(client, counted, {"query": "{ runs { nodes { nope } } }"},
                    tenant.headers("read"), prepared=False)
        # a mutation over GET stays strawberry's 400, even once prepared by a POST
        variables = {"i": {"runId": "1", "completedAt": "2026-01-01T00:00:00Z",
                                     "eventsDelivered": 1}}
        await client.post("/graphql", json={"query": REPORT, "variables": variables},
                          headers=tenant.headers("report"))
        r = await client.get("/graphql", params={"query": REPORT},
                             headers=tenant.headers("report"))
        assert r.status_code == 400
        # a query over GET may use it
        await twice(client, counted, {"query": "{ runs(first: 1) { pageInfo { hasNextPage } } }"},
                    tenant.headers("read"), method="GET")


@pytest.mark.parametrize("body", [
    {"variables": [1]}, {"variables": "x"}, {"extensions": []}, {"query": 5},
])
async def test_bodies_strawberry_refuses_are_refused_the_same_once_prepared(
        settings, tenant: Tenant, counted, body):
    """The prepared lane (`runwatch.app.RunwatchGraphQL.prepared_post`) leaves a body it would
    not take as strawberry would to strawberry's `run`: the same 400 whether the document is
    prepared or new."""
    query = "{ runs(first: 1) { pageInfo { hasNextPage } } }"
    answers = []
    for prepare in (True, False):
        async with app_client(settings) as client:
            if prepare:
                await client.post("/graphql", json={"query": query},
                                  headers=tenant.headers("read"))
            r = await client.post("/graphql", json={"query": query, **body},
                                  headers=tenant.headers("read"))
            answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1] and answers[0][0] == 400, answers
    assert "run" in counted and [q for q in counted if q != "run"] == []


@pytest.mark.parametrize("body", [
    b'{"query": "{ runs(first: 2) { pageInfo { hasNextPage } } }"}',  # a new document
    b'{"query": ',  # not JSON: strawberry's 400
])
async def test_a_body_the_lane_declines_is_decoded_once(settings, tenant: Tenant, monkeypatch,
                                                        body):
    import runwatch.app as app_module

    decoded: list[bytes] = []
    original = app_module.strict_json

    def strict_json(data: str | bytes) -> Any:
        decoded.append(bytes(data) if isinstance(data, bytes) else data.encode())
        return original(data)

    monkeypatch.setattr(app_module, "strict_json", strict_json)
    async with app_client(settings) as client:
        r = await client.post("/graphql", content=body, headers={
            **tenant.headers("read"), "content-type": "application/json"})
    assert r.status_code == (200 if body.endswith(b"}") else 400), r.text
    assert decoded == [body]


async def test_a_batch_of_prepared_documents_takes_strawberrys_path(settings, tenant: Tenant,
                                                                     counted):
    query = "{ runs(first: 1) { pageInfo { hasNextPage } } }"
    async with app_client(settings, graphql_batching=True) as client:
        await client.post("/graphql", json={"query": query}, headers=tenant.headers("read"))
        r = await client.post("/graphql", json=[{"query": query}, {"query": query}],
                              headers=tenant.headers("read"))
    assert r.status_code == 200 and len(r.json()) == 2, r.text
    assert all(item["data"]["runs"]["pageInfo"] == {"hasNextPage": False}
               for item in r.json())


def test_the_prepared_cache_is_bounded_and_keyed_by_operation_name():
    from graphql import parse
    from strawberry.types.graphql import OperationType

    schema = build_schema()
    operations = schema.prepared
    operations.maxsize = 3
    document = parse("{ __typename }")
    for n in range(5):
        operations.remember(f"q{n}", None, document, OperationType.QUERY, None)
    assert len(operations) == 3
    assert operations.get("q0", None, {OperationType.QUERY}) is None
    assert operations.get("q4", None, {OperationType.QUERY}) is not None
    assert operations.get("q4", "Other", {OperationType.QUERY}) is None
    assert operations.get("q4", None, {OperationType.MUTATION}) is None
    operations.remember("s", None, document, OperationType.SUBSCRIPTION, None)
    assert operations.get("s", None, set(OperationType)) is None


def test_no_extension_acts_on_resolvers():
    """The prepared path calls graphql-core without strawberry's middleware manager: that is
    only the same while no schema extension has a `resolve` hook."""
    schema = build_schema()
    for factory in schema.extensions:
        extension = factory() if not isinstance(factory, SchemaExtension) else factory
        assert not extension._implements_resolve(), type(extension).__name__


async def test_every_caller_of_the_schema_takes_it(counted):
    """Not only HTTP: `Schema.execute` itself chooses the path, so WebSocket queries and
    mutations (strawberry's handlers call it) use the prepared path too."""
    schema = build_schema()
    answers = [await schema.execute("{ __typename }") for _ in range(2)]
    assert [a.data for a in answers] == [{"__typename": "Query"}] * 2
    assert answers[0].extensions == answers[1].extensions
    assert counted == ["{ __typename }"]


@pytest.mark.parametrize("query", [PAGE, REPORT])
async def test_a_request_leaves_no_cycle_behind(settings, tenant: Tenant, query):
    """Prepared GraphQL requests (what a busy client sends) leave nothing of the server's that
    only the cyclic collector can free. graphql-core's executor held bound methods of itself:
    a cycle that kept each request's executor, context and Request alive until a collection,
    about 0.1 ms of CPU a request under load. (The test's own httpx client leaves cycles of
    its own; only the server's objects are looked at.)"""
    variables = {"n": 5} if query == PAGE else {"i": {
        "runId": "999999", "completedAt": "2026-01-01T00:00:00Z", "eventsDelivered": 1}}
    server_types = (Executor, Context, Loaders, Caller, starlette.requests.Request)
    async with app_client(settings) as client:
        async def send() -> None:
            r = await client.post("/graphql", json={"query": query, "variables": variables},
                                  headers=tenant.headers("read,write,report"))
            assert r.status_code == 200 and "errors" not in r.json(), r.text

        await send()  # strawberry's path, which prepares the document
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds stays in gc.garbage
        try:
            for _ in range(5):
                await send()
            gc.collect()
            left = [type(o).__qualname__ for o in gc.garbage if isinstance(o, server_types)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == []


def test_answers_are_encoded_as_strawberry_encodes_them():
    # The view encodes with one compact encoder built once (`runwatch.app._COMPACT_JSON`):
    # the same text as strawberry's `json.dumps(data, separators=(",", ":"))`.
    import json

    from strawberry.http.base import BaseView

    view = RunwatchGraphQL.__new__(RunwatchGraphQL)
    for data in ({"data": {"reportRun": {"__typename": "ReportRunSuccess"}}},
                 {"data": None, "errors": [{"message": "é \u2028 😀 \"q\"", "path": ["a", 0],
                                            "extensions": {"code": "NOT_FOUND"}}]},
                 [1.5, 1e300, -0.0, float("nan"), None, True, "\x00"], {"a": {"b": []}}, []):
        expected = BaseView.encode_json(view, data)
        assert expected == json.dumps(data, separators=(",", ":"))
        assert view.encode_json(data) == expected
