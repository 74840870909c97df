"""Tenancy and scopes, on both surfaces.

Organisation A is `tenant`, organisation B is `other_tenant`. B must never see or change A's
objects: another organisation's object is "not found" (REST 404 `{"detail": "Not found."}`,
GraphQL null / absent / NotFoundError), never "forbidden", so existence does not leak.
Scopes: `read` for reads, `write` for connections, `report` for startRun/reportRun; `admin`
implies all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Tenant
from tests.helpers import create_connection, graphql, iso, report, start_run

NOT_FOUND = {"detail": "Not found."}


@dataclass
class World:
    """A's objects (a finished run and a running one) and B's own connection and run."""

    a: Tenant
    b: Tenant
    a_connection: int
    a_pipeline: int
    a_done_run: int
    a_open_run: int
    a_open_started: datetime
    b_connection: int
    b_pipeline: int
    b_run: int


async def _pipeline_of(client, tenant: Tenant, connection_id: int) -> int:
    body = await graphql(client, tenant, "query($c: ID) { pipelines(connectionId: $c) "
                         "{ nodes { id } } }", c=str(connection_id))
    (node,) = body["data"]["pipelines"]["nodes"]
    return int(node["id"])


@pytest.fixture
async def world(client, tenant, other_tenant) -> World:
    now = datetime.now(UTC)
    a_connection = await create_connection(client, tenant, "shared-name", account="a-secret-acct")
    done = await start_run(client, tenant, a_connection, now - timedelta(minutes=30))
    r = await report(client, tenant, a_connection, done,
                     completed_at=iso(now - timedelta(minutes=20)), events_delivered=10)
    assert r.status_code == 204, r.text
    a_open_started = now - timedelta(minutes=5)
    a_open = await start_run(client, tenant, a_connection, a_open_started)
    # the same connection name in B: names are unique per organisation only
    b_connection = await create_connection(client, other_tenant, "shared-name")
    b_run = await start_run(client, other_tenant, b_connection, now - timedelta(minutes=5))
    return World(
        a=tenant, b=other_tenant,
        a_connection=a_connection, a_pipeline=await _pipeline_of(client, tenant, a_connection),
        a_done_run=done, a_open_run=a_open, a_open_started=a_open_started,
        b_connection=b_connection,
        b_pipeline=await _pipeline_of(client, other_tenant, b_connection),
        b_run=b_run,
    )


async def assert_a_untouched(client, w: World) -> None:
    """A's objects are exactly as the fixture left them."""
    r = await client.get(f"{w.a.prefix}/{w.a_connection}/", headers=w.a.headers("read"))
    assert r.status_code == 200
    assert r.json()["name"] == "shared-name"
    assert r.json()["account"] == "a-secret-acct"
    assert r.json()["type"] == "snowflake"
    body = await graphql(client, w.a, "{ runs { nodes { id status } } }")
    assert body["data"]["runs"]["nodes"] == [
        {"id": str(w.a_open_run), "status": "RUNNING"},
        {"id": str(w.a_done_run), "status": "SUCCEEDED"},
    ]


def b_urls(w: World) -> list[str]:
    """Prefixes B might try: A's organisation in the URL, and B's own organisation."""
    return [w.a.prefix, w.b.prefix]


# ----------------------------------------------------------------------------------------------
# REST


async def test_rest_b_cannot_read_a_connection(client, world):
    w = world
    for prefix in b_urls(w):
        r = await client.get(f"{prefix}/{w.a_connection}/", headers=w.b.headers("admin"))
        assert (r.status_code, r.json()) == (404, NOT_FOUND), prefix
        r = await client.get(f"{prefix}/{w.a_connection}", headers=w.b.headers("read"))
        assert (r.status_code, r.json()) == (404, NOT_FOUND), prefix


async def test_rest_b_cannot_read_a_telemetry(client, world):
    w = world
    for prefix in b_urls(w):
        for scopes in ("admin", "read"):
            r = await client.get(f"{prefix}/{w.a_connection}/telemetry/",
                                 headers=w.b.headers(scopes))
            assert (r.status_code, r.json()) == (404, NOT_FOUND), (prefix, scopes)


async def test_rest_b_cannot_list_a_connections(client, world):
    w = world
    r = await client.get(f"{w.a.prefix}/", headers=w.b.headers("admin"))
    assert (r.status_code, r.json()) == (404, NOT_FOUND)
    r = await client.get(f"{w.b.prefix}/", headers=w.b.headers("read"))
    assert r.status_code == 200
    assert [c["id"] for c in r.json()["results"]] == [w.b_connection]


async def test_rest_b_cannot_report_a_run(client, world):
    w = world
    body = {"completed_at": iso(datetime.now(UTC)), "events_delivered": 999}
    targets = [
        f"{w.a.prefix}/{w.a_connection}/metrics/{w.a_open_run}/",  # A's org in the URL
        f"{w.b.prefix}/{w.a_connection}/metrics/{w.a_open_run}/",  # B's org, A's ids
        f"{w.b.prefix}/{w.b_connection}/metrics/{w.a_open_run}/",  # B's connection, A's run
        f"{w.a.prefix}/{w.b_connection}/metrics/{w.b_run}/",  # B's ids under A's org
        f"{w.b.prefix}/{w.a_connection}/metrics/{w.b_run}/",  # B's run under A's connection
    ]
    for url in targets:
        for scopes in ("report", "admin"):
            r = await client.patch(url, json=body, headers=w.b.headers(scopes))
            assert (r.status_code, r.json()) == (404, NOT_FOUND), (url, scopes)
    await assert_a_untouched(client, w)
    # B's own run was not completed through A's URLs either
    run = await graphql(client, w.b, "query($id: ID!) { run(id: $id) { status } }", id=str(w.b_run))
    assert run["data"]["run"]["status"] == "RUNNING"


async def test_rest_b_cannot_replay_a_completed_report(client, world):
    """Even a byte-identical replay of A's report is not found for B (no existence oracle)."""
    w = world
    r = await client.patch(f"{w.b.prefix}/{w.a_connection}/metrics/{w.a_done_run}/",
                           json={"completed_at": iso(datetime.now(UTC)), "events_delivered": 10},
                           headers=w.b.headers("report"))
    assert (r.status_code, r.json()) == (404, NOT_FOUND)


async def test_rest_b_cannot_start_a_run_on_a_connection(client, world):
    w = world
    for prefix in b_urls(w):
        for scopes in ("report", "admin"):
            r = await client.post(f"{prefix}/{w.a_connection}/metrics/", json={},
                                  headers=w.b.headers(scopes))
            assert (r.status_code, r.json()) == (404, NOT_FOUND), (prefix, scopes)
    await assert_a_untouched(client, w)


async def test_rest_b_cannot_patch_a_connection(client, world):
    w = world
    for prefix in b_urls(w):
        for scopes in ("write", "admin"):
            r = await client.patch(f"{prefix}/{w.a_connection}/",
                                   json={"name": "hijacked", "account": "b-acct"},
                                   headers=w.b.headers(scopes))
            assert (r.status_code, r.json()) == (404, NOT_FOUND), (prefix, scopes)
    await assert_a_untouched(client, w)


async def test_rest_b_cannot_create_in_a_organisation(client, world):
    w = world
    r = await client.post(f"{w.a.prefix}/", json={"name": "planted", "type": "snowflake"},
                          headers=w.b.headers("admin"))
    assert (r.status_code, r.json()) == (404, NOT_FOUND)
    r = await client.get(f"{w.a.prefix}/", headers=w.a.headers("read"))
    assert [c["name"] for c in r.json()["results"]] == ["shared-name"]


async def test_rest_foreign_and_missing_objects_answer_alike(client, world):
    """B cannot tell A's existing ids from ids that exist nowhere."""
    w = world
    for scopes in ("admin", "read"):
        foreign = await client.get(f"{w.b.prefix}/{w.a_connection}/", headers=w.b.headers(scopes))
        missing = await client.get(f"{w.b.prefix}/424242/", headers=w.b.headers(scopes))
        assert (foreign.status_code, foreign.json()) == (missing.status_code, missing.json())
    foreign = await client.patch(f"{w.b.prefix}/{w.b_connection}/metrics/{w.a_open_run}/",
                                 json={"completed_at": iso(datetime.now(UTC)),
                                       "events_delivered": 1}, headers=w.b.headers("report"))
    missing = await client.patch(f"{w.b.prefix}/{w.b_connection}/metrics/424242/",
                                 json={"completed_at": iso(datetime.now(UTC)),
                                       "events_delivered": 1}, headers=w.b.headers("report"))
    assert (foreign.status_code, foreign.json()) == (missing.status_code, missing.json())


@pytest.mark.parametrize("raw", ["99999999999", "9223372036854775808", "0", "１２"])
async def test_rest_ids_no_row_can_have_are_not_found(client, tenant, raw):
    cid = await create_connection(client, tenant)
    r = await client.get(f"{tenant.prefix}/{raw}/", headers=tenant.headers())
    assert (r.status_code, r.json()) == (404, NOT_FOUND)
    r = await client.patch(f"{tenant.prefix}/{cid}/metrics/{raw}/",
                           json={"completed_at": iso(datetime.now(UTC)), "events_delivered": 1},
                           headers=tenant.headers("report"))
    assert (r.status_code, r.json()) == (404, NOT_FOUND)
    r = await client.get(f"/api/v1/organisations/{raw}/integrations/warehouse-connections/",
                         headers=tenant.headers())
    assert (r.status_code, r.json()) == (404, NOT_FOUND)


# ----------------------------------------------------------------------------------------------
# GraphQL: reads


async def test_graphql_b_gets_null_for_a_objects(client, world):
    w = world
    body = await graphql(client, w.b, """query($c: ID!, $p: ID!, $r: ID!, $d: ID!) {
        connection(id: $c) { id name settings telemetry { status } }
        pipeline(id: $p) { id telemetry { status } }
        run(id: $r) { id status }
        done: run(id: $d) { id status } }""", "read",
                         c=str(w.a_connection), p=str(w.a_pipeline), r=str(w.a_open_run),
                         d=str(w.a_done_run))
    assert "errors" not in body, body
    assert body["data"] == {"connection": None, "pipeline": None, "run": None, "done": None}


async def test_graphql_foreign_and_missing_ids_answer_alike(client, world):
    w = world
    query = "query($c: ID!) { connection(id: $c) { id } }"
    foreign = await graphql(client, w.b, query, c=str(w.a_connection))
    missing = await graphql(client, w.b, query, c="424242")
    assert foreign == missing  # the cost in `extensions` too
    assert foreign["data"] == {"connection": None} and "errors" not in foreign


async def test_graphql_b_lists_only_its_own_objects(client, world):
    w = world
    body = await graphql(client, w.b, """{ connections { nodes { id } }
        pipelines { nodes { id connection { id } } }
        runs { nodes { id pipeline { id } } } }""", "read")
    assert "errors" not in body, body
    data = body["data"]
    assert data["connections"]["nodes"] == [{"id": str(w.b_connection)}]
    assert data["pipelines"]["nodes"] == [
        {"id": str(w.b_pipeline), "connection": {"id": str(w.b_connection)}}]
    assert data["runs"]["nodes"] == [{"id": str(w.b_run), "pipeline": {"id": str(w.b_pipeline)}}]


async def test_graphql_filters_by_a_ids_are_empty_for_b(client, world):
    w = world
    body = await graphql(client, w.b, """query($c: ID, $p: ID) {
        byConnection: runs(connectionId: $c) { nodes { id } }
        byPipeline: runs(pipelineId: $p) { nodes { id } }
        pipelines(connectionId: $c) { nodes { id } }
        named: connections(nameContains: "shared") { nodes { id } } }""", "read",
                         c=str(w.a_connection), p=str(w.a_pipeline))
    assert "errors" not in body, body
    assert body["data"] == {
        "byConnection": {"nodes": []},
        "byPipeline": {"nodes": []},
        "pipelines": {"nodes": []},
        "named": {"nodes": [{"id": str(w.b_connection)}]},
    }


async def test_graphql_nested_fields_show_only_own_objects(client, world):
    w = world
    for tenant, connection, pipeline, runs in (
        (w.b, w.b_connection, w.b_pipeline, [w.b_run]),
        (w.a, w.a_connection, w.a_pipeline, [w.a_open_run, w.a_done_run]),
    ):
        body = await graphql(client, tenant, """query($c: ID!) { connection(id: $c) {
            runs { nodes { id } }
            pipelines { id runs { nodes { id } } telemetry { eventsLast24h { total } } }
            telemetry { eventsLast24h { total } } } }""", "read", c=str(connection))
        assert "errors" not in body, body
        c = body["data"]["connection"]
        assert [int(n["id"]) for n in c["runs"]["nodes"]] == runs
        assert [int(p["id"]) for p in c["pipelines"]] == [pipeline]
        assert [int(n["id"]) for n in c["pipelines"][0]["runs"]["nodes"]] == runs
    # B's telemetry does not include A's delivered events
    body = await graphql(client, w.b, "query($c: ID!) { connection(id: $c) { telemetry { "
                         "eventsLast24h { total } } } }", c=str(w.b_connection))
    assert body["data"]["connection"]["telemetry"]["eventsLast24h"]["total"] == 0
    body = await graphql(client, w.a, "query($c: ID!) { connection(id: $c) { telemetry { "
                         "eventsLast24h { total } } } }", c=str(w.a_connection))
    assert body["data"]["connection"]["telemetry"]["eventsLast24h"]["total"] == 10


async def test_graphql_pages_of_b_never_reach_a_objects(client, world):
    """Cursors are plain ids: a cursor taken from A's list must not open A's rows to B."""
    w = world
    a_page = await graphql(client, w.a, "{ connections(first: 1) { pageInfo { endCursor } } "
                           "runs(first: 1) { pageInfo { endCursor } } }")
    a_conn_cursor = a_page["data"]["connections"]["pageInfo"]["endCursor"]
    a_run_cursor = a_page["data"]["runs"]["pageInfo"]["endCursor"]
    body = await graphql(client, w.b, """query($cc: String, $rc: String) {
        connections(after: $cc) { nodes { id } } runs(after: $rc) { nodes { id } } }""",
                         cc=a_conn_cursor, rc=a_run_cursor)
    assert "errors" not in body, body
    conn_ids = {int(n["id"]) for n in body["data"]["connections"]["nodes"]}
    run_ids = {int(n["id"]) for n in body["data"]["runs"]["nodes"]}
    assert conn_ids <= {w.b_connection}
    assert run_ids <= {w.b_run}


# ----------------------------------------------------------------------------------------------
# GraphQL: mutations

UPDATE = """mutation($input: UpdateConnectionInput!) { updateConnection(input: $input) {
  __typename ... on NotFoundError { kind id } ... on Error { message } } }"""
START = """mutation($input: StartRunInput!) { startRun(input: $input) {
  __typename ... on NotFoundError { kind id } ... on Error { message } } }"""
REPORT = """mutation($input: ReportRunInput!) { reportRun(input: $input) {
  __typename ... on NotFoundError { kind id } ... on Error { message } } }"""


async def test_graphql_b_cannot_update_a_connection(client, world):
    w = world
    for scopes in ("write", "admin"):
        for change in ({"name": "hijacked"}, {"settings": {"account": "b"}},
                       {"warehouseType": "bigquery"}):
            body = await graphql(client, w.b, UPDATE, scopes,
                                 input={"id": str(w.a_connection), **change})
            result = body["data"]["updateConnection"]
            assert result["__typename"] == "NotFoundError", result
            assert (result["kind"], result["id"]) == ("connection", str(w.a_connection))
    await assert_a_untouched(client, w)


async def test_graphql_b_cannot_start_runs_on_a_objects(client, world):
    w = world
    for scopes in ("report", "admin"):
        for given in ({"connectionId": str(w.a_connection)}, {"pipelineId": str(w.a_pipeline)}):
            body = await graphql(client, w.b, START, scopes, input=given)
            assert body["data"]["startRun"]["__typename"] == "NotFoundError", body
    await assert_a_untouched(client, w)


async def test_graphql_b_cannot_report_a_runs(client, world):
    w = world
    now = datetime.now(UTC)
    for scopes in ("report", "admin"):
        for run_id in (w.a_open_run, w.a_done_run):
            body = await graphql(client, w.b, REPORT, scopes, input={
                "runId": str(run_id), "completedAt": iso(now), "eventsDelivered": 10})
            result = body["data"]["reportRun"]
            assert result["__typename"] == "NotFoundError", result
            assert (result["kind"], result["id"]) == ("run", str(run_id))
    # even an invalid report about A's run says "not found" rather than describing the run
    body = await graphql(client, w.b, REPORT, "report", input={
        "runId": str(w.a_open_run), "completedAt": iso(w.a_open_started - timedelta(hours=1)),
        "eventsDelivered": 1})
    assert body["data"]["reportRun"]["__typename"] == "NotFoundError", body
    await assert_a_untouched(client, w)


async def test_graphql_b_creates_its_own_connections_only(client, world):
    w = world
    body = await graphql(client, w.b, """mutation { createConnection(input: {name: "b-only",
        warehouseType: "snowflake"}) { __typename } }""", "write")
    assert body["data"]["createConnection"]["__typename"] == "ConnectionSuccess"
    a = await graphql(client, w.a, "{ connections { nodes { name } } }")
    assert a["data"]["connections"]["nodes"] == [{"name": "shared-name"}]
    b = await graphql(client, w.b, "{ connections { nodes { name } } }")
    assert b["data"]["connections"]["nodes"] == [{"name": "shared-name"}, {"name": "b-only"}]


# ----------------------------------------------------------------------------------------------
# scopes

READ_QUERIES = [
    "query($c: ID!) { connection(id: $c) { id } }",
    "{ connections { nodes { id } } }",
    "query($p: ID!) { pipeline(id: $p) { id } }",
    "{ pipelines { nodes { id } } }",
    "query($r: ID!) { run(id: $r) { id } }",
    "{ runs { nodes { id } } }",
]


def _variables(query: str, w: World) -> dict[str, str]:
    given = {"c": str(w.a_connection), "p": str(w.a_pipeline), "r": str(w.a_done_run)}
    return {k: v for k, v in given.items() if f"${k}" in query}


@pytest.mark.parametrize("query", READ_QUERIES)
@pytest.mark.parametrize("scopes", ["write", "report"])
async def test_reads_need_the_read_scope(client, world, query, scopes):
    w = world
    body = await graphql(client, w.a, query, scopes, **_variables(query, w))
    assert not any((body.get("data") or {}).values()), body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"], body
    assert "read" in body["errors"][0]["message"]


@pytest.mark.parametrize("query", READ_QUERIES)
@pytest.mark.parametrize("scopes", ["read", "admin", "read,write,report"])
async def test_reads_with_a_reading_scope(client, world, query, scopes):
    w = world
    body = await graphql(client, w.a, query, scopes, **_variables(query, w))
    assert "errors" not in body, body
    assert all(body["data"].values()), body


async def test_rest_reads_need_the_read_scope(client, world):
    w = world
    for scopes in ("write", "report"):
        for url in (f"{w.a.prefix}/", f"{w.a.prefix}/{w.a_connection}/",
                    f"{w.a.prefix}/{w.a_connection}/telemetry/"):
            r = await client.get(url, headers=w.a.headers(scopes))
            assert r.status_code == 403, (url, scopes, r.text)
            assert "read" in r.json()["detail"]
    for scopes in ("read", "admin", "read,write,report"):
        r = await client.get(f"{w.a.prefix}/{w.a_connection}/telemetry/",
                             headers=w.a.headers(scopes))
        assert r.status_code == 200, (scopes, r.text)


async def test_rest_writes_need_their_scopes(client, world):
    w = world
    for scopes in ("read", "report"):
        r = await client.post(f"{w.a.prefix}/", json={"name": "n", "type": "snowflake"},
                              headers=w.a.headers(scopes))
        assert r.status_code == 403, (scopes, r.text)
        r = await client.patch(f"{w.a.prefix}/{w.a_connection}/", json={"name": "n"},
                               headers=w.a.headers(scopes))
        assert r.status_code == 403, (scopes, r.text)
    for scopes in ("read", "write"):
        r = await client.post(f"{w.a.prefix}/{w.a_connection}/metrics/", json={},
                              headers=w.a.headers(scopes))
        assert r.status_code == 403, (scopes, r.text)
        r = await client.patch(f"{w.a.prefix}/{w.a_connection}/metrics/{w.a_open_run}/",
                               json={"completed_at": iso(datetime.now(UTC)),
                                     "events_delivered": 1}, headers=w.a.headers(scopes))
        assert r.status_code == 403, (scopes, r.text)
    await assert_a_untouched(client, w)


MUTATIONS = {
    "createConnection": ("write", """mutation { m: createConnection(input: {name: "new",
        warehouseType: "snowflake"}) { __typename ... on Error { message } } }"""),
    "updateConnection": ("write", """mutation($c: ID!) { m: updateConnection(input: {id: $c,
        name: "renamed"}) { __typename ... on Error { message } } }"""),
    "startRun": ("report", """mutation($c: ID!) { m: startRun(input: {connectionId: $c}) {
        __typename ... on Error { message } } }"""),
    "reportRun": ("report", """mutation($r: ID!, $at: DateTime!) { m: reportRun(input: {
        runId: $r, completedAt: $at, eventsDelivered: 1}) {
        __typename ... on Error { message } } }"""),
}
SCOPE_SETS = ["read", "write", "report", "admin", "read,write,report"]


@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("scopes", SCOPE_SETS)
async def test_mutation_scopes(client, world, mutation, scopes):
    w = world
    needed, document = MUTATIONS[mutation]
    variables = {"c": str(w.a_connection), "r": str(w.a_open_run),
                 "at": iso(datetime.now(UTC))}
    variables = {k: v for k, v in variables.items() if f"${k}" in document}
    body = await graphql(client, w.a, document, scopes, **variables)
    assert "errors" not in body, body
    result = body["data"]["m"]
    allowed = scopes == "admin" or needed in scopes.split(",")
    if allowed:
        assert result["__typename"] in {"ConnectionSuccess", "StartRunSuccess",
                                        "ReportRunSuccess"}, result
    else:
        assert result == {"__typename": "PermissionDeniedError",
                          "message": f"This action needs the {needed!r} scope."}
        await assert_a_untouched(client, w)


async def test_scope_is_checked_before_existence(client, world):
    """A token without the scope learns nothing about ids: refused alike, found or not."""
    w = world
    for document, variables in (
        (UPDATE, {"input": {"id": str(w.a_connection), "name": "x"}}),
        (UPDATE, {"input": {"id": "424242", "name": "x"}}),
        (START, {"input": {"connectionId": str(w.a_connection)}}),
        (START, {"input": {"connectionId": "424242"}}),
        (REPORT, {"input": {"runId": str(w.a_open_run), "completedAt": iso(datetime.now(UTC)),
                            "eventsDelivered": 1}}),
        (REPORT, {"input": {"runId": "424242", "completedAt": iso(datetime.now(UTC)),
                            "eventsDelivered": 1}}),
    ):
        body = await graphql(client, w.b, document, "read", **variables)
        (result,) = body["data"].values()
        assert result["__typename"] == "PermissionDeniedError", (document, variables, body)
