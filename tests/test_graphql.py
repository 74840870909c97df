"""The GraphQL API: queries, telemetry, mutations and their typed errors, auth, scalars.

State is set up through the REST shim (the helpers) and read back through GraphQL, so every test
also checks that both surfaces use the same integer ids.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from runwatch.resolvers import connections as connections_api
from tests.helpers import create_connection, graphql, iso, report, start_run

# ----------------------------------------------------------------------------------------------
# helpers


def when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


async def ok(client, tenant, query: str, scopes: str = "admin", **variables: Any) -> dict:
    """The `data` of a request that must not produce any error."""
    body = await graphql(client, tenant, query, scopes, **variables)
    assert "errors" not in body, body
    return body["data"]


async def error_codes(client, tenant, query: str, scopes: str = "admin", **variables) -> list:
    body = await graphql(client, tenant, query, scopes, **variables)
    assert body.get("errors"), body
    return [e.get("extensions", {}).get("code") for e in body["errors"]]


async def finished_run(
    client, tenant, connection_id: int, *, started: datetime, completed: datetime,
    events: int = 0, **extra: Any,
) -> int:
    run_id = await start_run(client, tenant, connection_id, started)
    r = await report(client, tenant, connection_id, run_id, completed_at=iso(completed),
                     events_delivered=events, **extra)
    assert r.status_code == 204, r.text
    return run_id


async def delivery_pipeline_id(client, tenant, connection_id: int) -> int:
    data = await ok(client, tenant,
                    "query($c: ID!) { pipelines(connectionId: $c) { nodes { id } } }",
                    c=str(connection_id))
    (node,) = data["pipelines"]["nodes"]
    return int(node["id"])


RUN_FIELDS = """id status createdAt updatedAt startedAt finishedAt eventsDelivered
  eventsByType { evaluations customEvents total } dlqBatches error
  pipeline { id kind connection { id } }"""

TELEMETRY_FIELDS = """status statusReason lastDeliveryAt
  eventsLast24h { evaluations customEvents total }
  eventsLast7d { evaluations customEvents total }
  failedDeliveriesLast24h dlqBatchesLast24h
  recentErrors { occurredAt message runId }"""

CONNECTION_TELEMETRY = (
    "query($id: ID!) { connection(id: $id) { telemetry { " + TELEMETRY_FIELDS + " } "
    "pipelines { telemetry { " + TELEMETRY_FIELDS + " } } } }"
)


async def telemetry(client, tenant, connection_id: int) -> dict:
    """The connection's telemetry; for a one-pipeline connection the pipeline's must agree."""
    data = await ok(client, tenant, CONNECTION_TELEMETRY, "read", id=str(connection_id))
    connection = data["connection"]
    (pipeline,) = connection["pipelines"]
    assert pipeline["telemetry"] == connection["telemetry"]
    return connection["telemetry"]


REPORT_RUN = """mutation($input: ReportRunInput!) { reportRun(input: $input) {
  __typename
  ... on ReportRunSuccess { changed run { id status finishedAt eventsDelivered dlqBatches error
        eventsByType { evaluations customEvents total } } }
  ... on NotFoundError { message kind id }
  ... on InvalidInputError { message fieldErrors { field messages } }
  ... on Error { message } } }"""

START_RUN = """mutation($input: StartRunInput!) { startRun(input: $input) {
  __typename
  ... on StartRunSuccess { run { id status startedAt finishedAt } }
  ... on NotFoundError { message kind id }
  ... on InvalidInputError { message fieldErrors { field messages } }
  ... on Error { message } } }"""

CREATE_CONNECTION = """mutation($input: CreateConnectionInput!) { createConnection(input: $input) {
  __typename
  ... on ConnectionSuccess { connection { id name warehouseType settings createdAt updatedAt } }
  ... on InvalidInputError { message fieldErrors { field messages } }
  ... on Error { message } } }"""

UPDATE_CONNECTION = """mutation($input: UpdateConnectionInput!) { updateConnection(input: $input) {
  __typename
  ... on ConnectionSuccess { connection { id name warehouseType settings updatedAt } }
  ... on NotFoundError { message kind id }
  ... on InvalidInputError { message fieldErrors { field messages } }
  ... on Error { message } } }"""


def fields_of(result: dict) -> set[str]:
    return {e["field"] for e in result["fieldErrors"]}


# ----------------------------------------------------------------------------------------------
# connection(id) and connections


async def test_connection_by_the_id_its_rest_url_uses(client, tenant):
    cid = await create_connection(client, tenant, "sales", account="acme", region="eu-west-1")
    rest = (await client.get(f"{tenant.prefix}/{cid}/", headers=tenant.headers("read"))).json()
    data = await ok(client, tenant, """query($id: ID!) { connection(id: $id) {
        id name warehouseType settings createdAt updatedAt } }""", "read", id=str(cid))
    c = data["connection"]
    assert c["id"] == str(cid) == str(rest["id"])
    assert c["name"] == rest["name"] == "sales"
    assert c["warehouseType"] == rest["type"] == "snowflake"
    assert c["settings"] == {"account": "acme", "region": "eu-west-1"}
    assert when(c["createdAt"]) == when(rest["created_at"])
    assert when(c["updatedAt"]) == when(rest["updated_at"])


async def test_connection_id_may_be_sent_as_an_integer(client, tenant):
    cid = await create_connection(client, tenant)
    data = await ok(client, tenant, "query($id: ID!) { connection(id: $id) { id } }", id=cid)
    assert data["connection"]["id"] == str(cid)
    data = await ok(client, tenant, f"{{ connection(id: {cid}) {{ id }} }}")
    assert data["connection"]["id"] == str(cid)


@pytest.mark.parametrize("raw", ["424242", "0", "-1", "abc", "1.5", ""])
async def test_unknown_connection_is_null(client, tenant, raw):
    await create_connection(client, tenant)
    data = await ok(client, tenant, "query($id: ID!) { connection(id: $id) { id } }", id=raw)
    assert data["connection"] is None


@pytest.mark.parametrize("field", ["connection", "pipeline", "run"])
async def test_ids_beyond_the_column_range_are_null_not_an_error(client, tenant, field):
    # Connection and pipeline ids are 32-bit columns, run ids 64-bit: an id no row can have is
    # simply not found.
    data = await ok(client, tenant, f'{{ {field}(id: "99999999999") {{ id }} }}')
    assert data[field] is None
    data = await ok(client, tenant, f'{{ {field}(id: "999999999999999999") {{ id }} }}')
    assert data[field] is None


async def test_connections_oldest_first_with_filters(client, tenant):
    alpha = await create_connection(client, tenant, "alpha-sales")
    beta = await create_connection(client, tenant, "beta-Sales", type="bigquery")
    gamma = await create_connection(client, tenant, "gamma")
    query = """query($t: String, $n: String) { connections(warehouseType: $t, nameContains: $n) {
        nodes { id name warehouseType } } }"""

    async def ids(**filters) -> list[int]:
        data = await ok(client, tenant, query, "read", **filters)
        return [int(n["id"]) for n in data["connections"]["nodes"]]

    assert await ids() == [alpha, beta, gamma]
    assert await ids(t="snowflake") == [alpha, gamma]
    assert await ids(t="SNOWFLAKE") == [alpha, gamma]
    assert await ids(t="bigquery") == [beta]
    assert await ids(t="redshift") == []
    assert await ids(n="sales") == [alpha, beta]
    assert await ids(n="SALES") == [alpha, beta]
    assert await ids(n="sales", t="snowflake") == [alpha]
    assert await ids(n="nothing-like-this") == []


async def test_connections_walk_every_page(client, tenant):
    created = [await create_connection(client, tenant, f"conn-{i:02d}") for i in range(8)]
    query = """query($first: Int, $after: String) { connections(first: $first, after: $after) {
        edges { cursor node { id } } nodes { id } pageInfo { hasNextPage endCursor } } }"""
    seen: list[int] = []
    pages: list[int] = []
    after = None
    for _ in range(10):
        page = (await ok(client, tenant, query, "read", first=3, after=after))["connections"]
        ids = [int(n["id"]) for n in page["nodes"]]
        assert ids == [int(e["node"]["id"]) for e in page["edges"]]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        seen += ids
        pages.append(len(ids))
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == [3, 3, 2]
    assert len(seen) == len(set(seen))
    assert seen == created


async def test_connections_last_full_page_has_no_next_page(client, tenant):
    for i in range(4):
        await create_connection(client, tenant, f"c{i}")
    page = (await ok(client, tenant, """{ connections(first: 4) {
        nodes { id } pageInfo { hasNextPage endCursor } } }"""))["connections"]
    assert len(page["nodes"]) == 4
    assert page["pageInfo"]["hasNextPage"] is False
    after = page["pageInfo"]["endCursor"]
    page = (await ok(client, tenant, """query($after: String) {
        connections(first: 4, after: $after) { nodes { id } pageInfo { hasNextPage endCursor } }
        }""", after=after))["connections"]
    assert page == {"nodes": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}


@pytest.mark.parametrize("first", [0, 201, -1])
async def test_page_size_out_of_range_is_bad_user_input(client, tenant, first):
    for field in ("connections", "pipelines", "runs"):
        body = await graphql(client, tenant, f"query($first: Int) {{ {field}(first: $first) "
                             "{ nodes { id } } }", first=first)
        assert body["data"] is None, body
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], body


async def test_page_size_200_is_accepted(client, tenant):
    await create_connection(client, tenant)
    data = await ok(client, tenant, "{ connections(first: 200) { nodes { id } } }")
    assert len(data["connections"]["nodes"]) == 1


async def test_a_cursor_that_is_not_ours_is_bad_user_input(client, tenant):
    codes = await error_codes(client, tenant,
                              '{ connections(after: "not-a-cursor") { nodes { id } } }')
    assert codes == ["BAD_USER_INPUT"]


# ----------------------------------------------------------------------------------------------
# pipeline(id) and pipelines


async def test_pipeline_by_id_and_pipelines_of_a_connection(client, tenant):
    first = await create_connection(client, tenant, "first")
    second = await create_connection(client, tenant, "second")
    query = """query($c: ID) { pipelines(connectionId: $c) {
        nodes { id name kind createdAt connection { id name } } } }"""
    nodes = (await ok(client, tenant, query, "read", c=str(second)))["pipelines"]["nodes"]
    assert len(nodes) == 1
    (p,) = nodes
    assert p["kind"] == "delivery"
    assert p["name"] == "second delivery"
    assert p["connection"] == {"id": str(second), "name": "second"}

    one = (await ok(client, tenant, """query($id: ID!) { pipeline(id: $id) {
        id name kind createdAt connection { id name } } }""", "read", id=p["id"]))["pipeline"]
    assert one == p

    everything = (await ok(client, tenant, query, "read"))["pipelines"]["nodes"]
    assert [n["connection"]["id"] for n in everything] == [str(first), str(second)]
    assert [int(n["id"]) for n in everything] == sorted(int(n["id"]) for n in everything)
    kind = await ok(client, tenant, '{ pipelines(kind: "delivery") { nodes { id } } }')
    assert len(kind["pipelines"]["nodes"]) == 2
    none = await ok(client, tenant, '{ pipelines(kind: "batch") { nodes { id } } }')
    assert none["pipelines"]["nodes"] == []
    data = await ok(client, tenant,
                    "query($c: ID) { pipelines(connectionId: $c) { nodes { id } } }", c="424242")
    assert data["pipelines"]["nodes"] == []


async def test_connection_pipelines_field(client, tenant):
    cid = await create_connection(client, tenant, "wh")
    pid = await delivery_pipeline_id(client, tenant, cid)
    data = await ok(client, tenant,
                    "query($id: ID!) { connection(id: $id) { pipelines { id kind } } }",
                    id=str(cid))
    assert data["connection"]["pipelines"] == [{"id": str(pid), "kind": "delivery"}]


async def test_unknown_pipeline_is_null(client, tenant):
    data = await ok(client, tenant, '{ pipeline(id: "424242") { id } }')
    assert data["pipeline"] is None


# ----------------------------------------------------------------------------------------------
# run(id) and runs


async def test_run_by_the_id_the_rest_shim_returned(client, tenant):
    cid = await create_connection(client, tenant)
    pid = await delivery_pipeline_id(client, tenant, cid)
    now = datetime.now(UTC)
    started, completed = now - timedelta(minutes=30), now - timedelta(minutes=5)
    rid = await finished_run(client, tenant, cid, started=started, completed=completed,
                             events=100, evaluations=70, custom_events=30)
    run = (await ok(client, tenant, "query($id: ID!) { run(id: $id) { " + RUN_FIELDS + " } }",
                    "read", id=str(rid)))["run"]
    assert run["id"] == str(rid)
    assert run["status"] == "SUCCEEDED"
    assert when(run["startedAt"]) == started
    assert when(run["finishedAt"]) == completed
    assert run["eventsDelivered"] == 100
    assert run["eventsByType"] == {"evaluations": 70, "customEvents": 30, "total": 100}
    assert run["dlqBatches"] == 0
    assert run["error"] is None
    assert run["pipeline"] == {"id": str(pid), "kind": "delivery", "connection": {"id": str(cid)}}


async def test_run_statuses_and_metrics(client, tenant):
    cid = await create_connection(client, tenant)
    now = datetime.now(UTC)
    failed = await finished_run(client, tenant, cid, started=now - timedelta(minutes=50),
                                completed=now - timedelta(minutes=40), events=3, error="disk full")
    dlq = await finished_run(client, tenant, cid, started=now - timedelta(minutes=30),
                             completed=now - timedelta(minutes=20), events=5, batches_dlq=2)
    running = await start_run(client, tenant, cid, now - timedelta(minutes=10))
    query = "query($id: ID!) { run(id: $id) { " + RUN_FIELDS + " } }"

    run = (await ok(client, tenant, query, id=str(failed)))["run"]
    assert (run["status"], run["error"], run["eventsDelivered"]) == ("FAILED", "disk full", 3)
    assert run["eventsByType"] is None  # no per-type counts were reported
    run = (await ok(client, tenant, query, id=str(dlq)))["run"]
    assert (run["status"], run["dlqBatches"], run["error"]) == ("FAILED", 2, None)
    run = (await ok(client, tenant, query, id=str(running)))["run"]
    assert run["status"] == "RUNNING"
    assert run["finishedAt"] is None
    assert run["eventsDelivered"] is None
    assert when(run["startedAt"]) == now - timedelta(minutes=10)


async def test_unknown_run_is_null(client, tenant):
    data = await ok(client, tenant, '{ run(id: "424242") { id } }')
    assert data["run"] is None


async def test_runs_newest_first_with_filters(client, tenant):
    now = datetime.now(UTC)
    c1 = await create_connection(client, tenant, "one")
    c2 = await create_connection(client, tenant, "two")
    p2 = await delivery_pipeline_id(client, tenant, c2)
    old_ok = await finished_run(client, tenant, c1, started=now - timedelta(days=3),
                                completed=now - timedelta(days=3) + timedelta(minutes=5), events=1)
    mid_failed = await finished_run(client, tenant, c1, started=now - timedelta(days=2),
                                    completed=now - timedelta(days=2) + timedelta(minutes=5),
                                    events=1, error="boom")
    new_running = await start_run(client, tenant, c1, now - timedelta(minutes=5))
    other = await finished_run(client, tenant, c2, started=now - timedelta(hours=1),
                               completed=now - timedelta(minutes=30), events=1)
    query = """query($p: ID, $c: ID, $s: [RunStatus!], $a: DateTime, $b: DateTime) {
        runs(pipelineId: $p, connectionId: $c, status: $s, startedAfter: $a, startedBefore: $b) {
        nodes { id status pipeline { id } } } }"""

    async def ids(**filters) -> list[int]:
        data = await ok(client, tenant, query, "read", **filters)
        return [int(n["id"]) for n in data["runs"]["nodes"]]

    assert await ids() == [other, new_running, mid_failed, old_ok]
    assert await ids(c=str(c1)) == [new_running, mid_failed, old_ok]
    assert await ids(c=str(c2)) == [other]
    assert await ids(p=str(p2)) == [other]
    assert await ids(s=["FAILED"]) == [mid_failed]
    assert await ids(s=["SUCCEEDED", "RUNNING"]) == [other, new_running, old_ok]
    assert await ids(s=["CANCELLED"]) == []
    assert await ids(c=str(c1), s=["SUCCEEDED"]) == [old_ok]
    cut = iso(now - timedelta(days=2, hours=12))
    assert await ids(a=cut) == [other, new_running, mid_failed]
    assert await ids(b=cut) == [old_ok]
    assert await ids(a=cut, b=iso(now - timedelta(days=1))) == [mid_failed]
    # the bounds: startedAfter is inclusive, startedBefore exclusive
    exact = iso(now - timedelta(days=2))
    assert await ids(a=exact, b=iso(now - timedelta(days=1))) == [mid_failed]
    assert await ids(b=exact) == [old_ok]


async def test_runs_walk_every_page_newest_first(client, tenant):
    cid = await create_connection(client, tenant)
    now = datetime.now(UTC)
    created = [await start_run(client, tenant, cid, now - timedelta(minutes=30 - i))
               for i in range(7)]
    query = """query($after: String) { runs(first: 2, after: $after) {
        nodes { id } pageInfo { hasNextPage endCursor } } }"""
    seen: list[int] = []
    after = None
    for _ in range(10):
        page = (await ok(client, tenant, query, after=after))["runs"]
        seen += [int(n["id"]) for n in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == list(reversed(created))
    assert len(set(seen)) == len(seen)


async def test_connection_and_pipeline_runs_fields(client, tenant):
    now = datetime.now(UTC)
    c1 = await create_connection(client, tenant, "one")
    c2 = await create_connection(client, tenant, "two")
    r1 = await finished_run(client, tenant, c1, started=now - timedelta(hours=2),
                            completed=now - timedelta(hours=1), events=1)
    r2 = await start_run(client, tenant, c1, now - timedelta(minutes=10))
    await start_run(client, tenant, c2, now - timedelta(minutes=10))
    data = await ok(client, tenant, """query($id: ID!) { connection(id: $id) {
        runs { nodes { id } pageInfo { hasNextPage } }
        running: runs(status: [RUNNING]) { nodes { id } }
        page: runs(first: 1) { nodes { id } pageInfo { hasNextPage } }
        pipelines { runs { nodes { id } } done: runs(status: [SUCCEEDED]) { nodes { id } } } } }""",
                    id=str(c1))
    c = data["connection"]
    assert [int(n["id"]) for n in c["runs"]["nodes"]] == [r2, r1]
    assert c["runs"]["pageInfo"]["hasNextPage"] is False
    assert [int(n["id"]) for n in c["running"]["nodes"]] == [r2]
    assert [int(n["id"]) for n in c["page"]["nodes"]] == [r2]
    assert c["page"]["pageInfo"]["hasNextPage"] is True
    (p,) = c["pipelines"]
    assert [int(n["id"]) for n in p["runs"]["nodes"]] == [r2, r1]
    assert [int(n["id"]) for n in p["done"]["nodes"]] == [r1]


# ----------------------------------------------------------------------------------------------
# telemetry


async def test_telemetry_of_a_new_connection_is_idle(client, tenant):
    cid = await create_connection(client, tenant)
    t = await telemetry(client, tenant, cid)
    assert t["status"] == "IDLE"
    assert "no runs" in t["statusReason"]
    assert t["lastDeliveryAt"] is None
    zero = {"evaluations": 0, "customEvents": 0, "total": 0}
    assert t["eventsLast24h"] == zero
    assert t["eventsLast7d"] == zero
    assert t["failedDeliveriesLast24h"] == 0
    assert t["recentErrors"] == []


async def test_telemetry_active_counts_both_windows(client, tenant):
    cid = await create_connection(client, tenant)
    now = datetime.now(UTC)
    ten_days = now - timedelta(days=10)
    await finished_run(client, tenant, cid, started=ten_days,
                       completed=ten_days + timedelta(minutes=5), events=100_000,
                       evaluations=100_000)
    two_days = now - timedelta(days=2)
    await finished_run(client, tenant, cid, started=two_days,
                       completed=two_days + timedelta(minutes=5), events=1000,
                       evaluations=900, custom_events=100)
    latest = now - timedelta(minutes=20)
    await finished_run(client, tenant, cid, started=now - timedelta(minutes=30), completed=latest,
                       events=100, evaluations=60, custom_events=40)
    t = await telemetry(client, tenant, cid)
    assert t["status"] == "ACTIVE"
    assert "100 events" in t["statusReason"]
    assert when(t["lastDeliveryAt"]) == latest
    assert t["eventsLast24h"] == {"evaluations": 60, "customEvents": 40, "total": 100}
    assert t["eventsLast7d"] == {"evaluations": 960, "customEvents": 140, "total": 1100}
    assert t["failedDeliveriesLast24h"] == 0
    assert t["recentErrors"] == []


async def test_telemetry_idle_when_nothing_delivered_in_24h(client, tenant):
    cid = await create_connection(client, tenant)
    now = datetime.now(UTC)
    done = now - timedelta(days=2)
    await finished_run(client, tenant, cid, started=done - timedelta(minutes=5), completed=done,
                       events=42)
    t = await telemetry(client, tenant, cid)
    assert t["status"] == "IDLE"
    assert t["statusReason"]
    assert when(t["lastDeliveryAt"]) == done
    assert t["eventsLast24h"]["total"] == 0
    assert t["eventsLast7d"]["total"] == 42


async def test_telemetry_degraded_after_a_failure_then_a_success(client, tenant):
    cid = await create_connection(client, tenant)
    now = datetime.now(UTC)
    failed_at = now - timedelta(minutes=50)
    failed = await finished_run(client, tenant, cid, started=now - timedelta(minutes=55),
                                completed=failed_at, events=0, error="disk full")
    await finished_run(client, tenant, cid, started=now - timedelta(minutes=15),
                       completed=now - timedelta(minutes=10), events=10)
    t = await telemetry(client, tenant, cid)
    assert t["status"] == "DEGRADED"
    assert "1 failed run" in t["statusReason"]
    assert t["failedDeliveriesLast24h"] == 1
    assert t["eventsLast24h"]["total"] == 10
    assert len(t["recentErrors"]) == 1
    error = t["recentErrors"][0]
    assert error["message"] == "disk full"
    assert error["runId"] == str(failed)
    assert when(error["occurredAt"]) == failed_at


async def test_telemetry_error_after_consecutive_failures(client, tenant):
    cid = await create_connection(client, tenant)
    now = datetime.now(UTC)
    await finished_run(client, tenant, cid, started=now - timedelta(hours=5),
                       completed=now - timedelta(hours=4, minutes=50), events=7)
    first = await finished_run(client, tenant, cid, started=now - timedelta(hours=3),
                               completed=now - timedelta(hours=2, minutes=50), error="e1")
    second = await finished_run(client, tenant, cid, started=now - timedelta(hours=2),
                                completed=now - timedelta(hours=1, minutes=50), batches_dlq=2)
    third_at = now - timedelta(minutes=50)
    third = await finished_run(client, tenant, cid, started=now - timedelta(hours=1),
                               completed=third_at, error="e3", batches_dlq=1)
    t = await telemetry(client, tenant, cid)
    assert t["status"] == "ERROR"
    assert "e3" in t["statusReason"]  # names the latest error
    assert t["failedDeliveriesLast24h"] == 3
    assert t["dlqBatchesLast24h"] == 3
    assert [(e["runId"], e["message"]) for e in t["recentErrors"]] == [
        (str(third), "e3"),
        (str(second), "2 batches sent to the dead-letter queue"),
        (str(first), "e1"),
    ]
    assert when(t["recentErrors"][0]["occurredAt"]) == third_at


async def test_telemetry_error_when_runs_fail_and_none_succeeds(client, tenant):
    cid = await create_connection(client, tenant)
    now = datetime.now(UTC)
    await finished_run(client, tenant, cid, started=now - timedelta(minutes=20),
                       completed=now - timedelta(minutes=10), error="auth failed")
    t = await telemetry(client, tenant, cid)
    assert t["status"] == "ERROR"
    assert t["failedDeliveriesLast24h"] == 1
    assert [e["message"] for e in t["recentErrors"]] == ["auth failed"]


async def test_telemetry_counts_an_orphaned_run_as_failed(client, tenant):
    cid = await create_connection(client, tenant)
    now = datetime.now(UTC)
    orphan = await start_run(client, tenant, cid, now - timedelta(hours=3))
    t = await telemetry(client, tenant, cid)
    assert t["status"] == "ERROR"
    assert t["failedDeliveriesLast24h"] == 1
    (error,) = t["recentErrors"]
    assert error["runId"] == str(orphan)
    assert "orphaned" in error["message"]


async def test_pipeline_telemetry_by_pipeline_id(client, tenant):
    cid = await create_connection(client, tenant)
    pid = await delivery_pipeline_id(client, tenant, cid)
    now = datetime.now(UTC)
    await finished_run(client, tenant, cid, started=now - timedelta(minutes=20),
                       completed=now - timedelta(minutes=10), events=5)
    data = await ok(client, tenant, "query($id: ID!) { pipeline(id: $id) { telemetry { "
                    + TELEMETRY_FIELDS + " } } }", "read", id=str(pid))
    assert data["pipeline"]["telemetry"]["status"] == "ACTIVE"
    assert data["pipeline"]["telemetry"] == await telemetry(client, tenant, cid)


async def test_graphql_telemetry_agrees_with_rest(client, tenant):
    cid = await create_connection(client, tenant)
    now = datetime.now(UTC)
    await finished_run(client, tenant, cid, started=now - timedelta(minutes=50),
                       completed=now - timedelta(minutes=40), error="boom")
    await finished_run(client, tenant, cid, started=now - timedelta(minutes=20),
                       completed=now - timedelta(minutes=10), events=9, evaluations=9)
    r = await client.get(f"{tenant.prefix}/{cid}/telemetry/", headers=tenant.headers("read"))
    rest = r.json()
    t = await telemetry(client, tenant, cid)
    assert t["status"].lower() == rest["status"]
    assert when(t["lastDeliveryAt"]) == when(rest["last_delivery_at"])
    assert t["eventsLast24h"]["total"] == rest["events_last_24h"]["total"]
    assert t["eventsLast24h"]["evaluations"] == rest["events_last_24h"]["evaluations"]
    assert t["eventsLast7d"]["customEvents"] == rest["events_last_7d"]["custom_events"]
    assert t["failedDeliveriesLast24h"] == rest["failed_deliveries_last_24h"]
    assert [e["message"] for e in t["recentErrors"]] == [
        e["message"] for e in rest["recent_errors"]]


# ----------------------------------------------------------------------------------------------
# createConnection / updateConnection


async def test_create_connection_success(client, tenant):
    result = (await ok(client, tenant, CREATE_CONNECTION, "write", input={
        "name": "  warehouse-eu ", "warehouseType": "BigQuery", "settings": {"project": "p1"},
    }))["createConnection"]
    assert result["__typename"] == "ConnectionSuccess"
    c = result["connection"]
    assert (c["name"], c["warehouseType"], c["settings"]) == ("warehouse-eu", "bigquery",
                                                              {"project": "p1"})
    # its delivery pipeline was created with it
    data = await ok(client, tenant,
                    "query($id: ID!) { connection(id: $id) { pipelines { kind name } } }",
                    "read", id=c["id"])
    assert data["connection"]["pipelines"] == [
        {"kind": "delivery", "name": "warehouse-eu delivery"}]
    rest = await client.get(f"{tenant.prefix}/{c['id']}/", headers=tenant.headers("read"))
    assert rest.status_code == 200
    assert rest.json()["name"] == "warehouse-eu"
    assert rest.json()["project"] == "p1"


async def test_create_connection_without_settings(client, tenant):
    result = (await ok(client, tenant, CREATE_CONNECTION, input={
        "name": "bare", "warehouseType": "postgres"}))["createConnection"]
    assert result["__typename"] == "ConnectionSuccess"
    assert result["connection"]["settings"] == {}


@pytest.mark.parametrize(("given", "field"), [
    ({"name": "  ", "warehouseType": "snowflake"}, "name"),
    ({"name": "x" * 201, "warehouseType": "snowflake"}, "name"),
    ({"name": "ok", "warehouseType": "Not A Type!"}, None),
    ({"name": "ok", "warehouseType": "snowflake", "settings": {"password": "hunter2"}},
     "settings.password"),
    ({"name": "ok", "warehouseType": "snowflake", "settings": {"auth": {"private_key": "k"}}},
     "settings.auth.private_key"),
    ({"name": "ok", "warehouseType": "snowflake", "settings": ["not", "an", "object"]}, "settings"),
])
async def test_create_connection_invalid_input(client, tenant, given, field):
    result = (await ok(client, tenant, CREATE_CONNECTION, input=given))["createConnection"]
    assert result["__typename"] == "InvalidInputError", result
    assert result["message"]
    assert result["fieldErrors"] and all(e["messages"] for e in result["fieldErrors"])
    if field is not None:
        assert field in fields_of(result)
    assert "hunter2" not in str(result)
    data = await ok(client, tenant, "{ connections { nodes { id } } }")
    assert data["connections"]["nodes"] == []


async def test_create_connection_duplicate_name(client, tenant):
    await create_connection(client, tenant, "dup")
    result = (await ok(client, tenant, CREATE_CONNECTION, input={
        "name": "dup", "warehouseType": "snowflake"}))["createConnection"]
    assert result["__typename"] == "InvalidInputError"
    assert fields_of(result) == {"name"}
    data = await ok(client, tenant, "{ connections { nodes { id } } pipelines { nodes { id } } }")
    assert len(data["connections"]["nodes"]) == 1
    assert len(data["pipelines"]["nodes"]) == 1  # the refused create left no pipeline behind


@pytest.mark.parametrize("scopes", ["read", "report"])
async def test_create_connection_needs_write(client, tenant, scopes):
    result = (await ok(client, tenant, CREATE_CONNECTION, scopes, input={
        "name": "x", "warehouseType": "snowflake"}))["createConnection"]
    assert result["__typename"] == "PermissionDeniedError"
    assert "write" in result["message"]
    data = await ok(client, tenant, "{ connections { nodes { id } } }")
    assert data["connections"]["nodes"] == []


async def test_update_connection_success(client, tenant):
    cid = await create_connection(client, tenant, "old", account="a1", region="eu")
    result = (await ok(client, tenant, UPDATE_CONNECTION, "write", input={
        "id": str(cid), "name": "new", "settings": {"account": "a2"},
    }))["updateConnection"]
    assert result["__typename"] == "ConnectionSuccess"
    assert result["connection"]["name"] == "new"
    assert result["connection"]["settings"] == {"account": "a2"}  # replaced, not merged
    assert result["connection"]["warehouseType"] == "snowflake"
    rest = (await client.get(f"{tenant.prefix}/{cid}/", headers=tenant.headers("read"))).json()
    assert rest["name"] == "new" and rest["account"] == "a2" and "region" not in rest

    # only what is given changes
    result = (await ok(client, tenant, UPDATE_CONNECTION, input={
        "id": cid, "warehouseType": "redshift"}))["updateConnection"]
    c = result["connection"]
    assert (c["name"], c["warehouseType"], c["settings"]) == ("new", "redshift", {"account": "a2"})


@pytest.mark.parametrize("raw", ["424242", "abc", "-3"])
async def test_update_connection_unknown_id(client, tenant, raw):
    result = (await ok(client, tenant, UPDATE_CONNECTION, input={
        "id": raw, "name": "x"}))["updateConnection"]
    assert result["__typename"] == "NotFoundError"
    assert result["kind"] == "connection"
    assert result["id"] == raw


async def test_update_connection_foreign_id(client, tenant, other_tenant):
    foreign = await create_connection(client, other_tenant, "theirs")
    result = (await ok(client, tenant, UPDATE_CONNECTION, input={
        "id": str(foreign), "name": "mine-now"}))["updateConnection"]
    assert result["__typename"] == "NotFoundError"
    r = await client.get(f"{other_tenant.prefix}/{foreign}/", headers=other_tenant.headers())
    rest = r.json()
    assert rest["name"] == "theirs"


@pytest.mark.parametrize(("change", "field"), [
    ({"name": ""}, "name"),
    ({"settings": {"api_key": "abc"}}, "settings.api_key"),
    ({"settings": None}, "settings"),
    ({"name": "taken"}, "name"),
])
async def test_update_connection_invalid_input(client, tenant, change, field):
    await create_connection(client, tenant, "taken")
    cid = await create_connection(client, tenant, "mine", account="a1")
    result = (await ok(client, tenant, UPDATE_CONNECTION, input={"id": str(cid), **change}
                       ))["updateConnection"]
    assert result["__typename"] == "InvalidInputError", result
    assert field in fields_of(result)
    rest = (await client.get(f"{tenant.prefix}/{cid}/", headers=tenant.headers("read"))).json()
    assert rest["name"] == "mine" and rest["account"] == "a1" and "api_key" not in rest


async def test_update_connection_needs_write(client, tenant):
    cid = await create_connection(client, tenant, "mine")
    result = (await ok(client, tenant, UPDATE_CONNECTION, "read", input={
        "id": str(cid), "name": "x"}))["updateConnection"]
    assert result["__typename"] == "PermissionDeniedError"


# ----------------------------------------------------------------------------------------------
# startRun / reportRun


async def test_start_run_by_connection_and_by_pipeline(client, tenant):
    cid = await create_connection(client, tenant)
    pid = await delivery_pipeline_id(client, tenant, cid)
    started = datetime.now(UTC) - timedelta(minutes=3)
    result = (await ok(client, tenant, START_RUN, "report", input={
        "connectionId": str(cid), "startedAt": iso(started)}))["startRun"]
    assert result["__typename"] == "StartRunSuccess"
    run = result["run"]
    assert run["status"] == "RUNNING"
    assert when(run["startedAt"]) == started
    assert run["finishedAt"] is None

    result = (await ok(client, tenant, START_RUN, "report", input={"pipelineId": str(pid)}
                       ))["startRun"]
    assert result["__typename"] == "StartRunSuccess"
    second = result["run"]
    assert when(second["startedAt"]) is not None

    # the GraphQL run id is the REST one: the loader can report it over REST
    r = await report(client, tenant, cid, int(run["id"]), completed_at=iso(datetime.now(UTC)),
                     events_delivered=1)
    assert r.status_code == 204, r.text
    data = await ok(client, tenant, "query($c: ID) { runs(connectionId: $c) { nodes { id status "
                    "pipeline { id } } } }", c=str(cid))
    assert data["runs"]["nodes"] == [
        {"id": second["id"], "status": "RUNNING", "pipeline": {"id": str(pid)}},
        {"id": run["id"], "status": "SUCCEEDED", "pipeline": {"id": str(pid)}},
    ]


@pytest.mark.parametrize(("given", "kind"), [
    ({"connectionId": "424242"}, "connection"),
    ({"pipelineId": "424242"}, "pipeline"),
    ({"connectionId": "abc"}, "connection"),
])
async def test_start_run_unknown_ids(client, tenant, given, kind):
    await create_connection(client, tenant)
    result = (await ok(client, tenant, START_RUN, input=given))["startRun"]
    assert result["__typename"] == "NotFoundError"
    assert result["kind"] == kind


async def test_start_run_foreign_ids(client, tenant, other_tenant):
    theirs = await create_connection(client, other_tenant)
    their_pipeline = await delivery_pipeline_id(client, other_tenant, theirs)
    for given in ({"connectionId": str(theirs)}, {"pipelineId": str(their_pipeline)}):
        result = (await ok(client, tenant, START_RUN, input=given))["startRun"]
        assert result["__typename"] == "NotFoundError", result
    data = await ok(client, other_tenant, "{ runs { nodes { id } } }")
    assert data["runs"]["nodes"] == []


@pytest.mark.parametrize("given", [
    {},
    {"connectionId": "CID", "pipelineId": "PID"},
    {"connectionId": "CID", "startedAt": "FUTURE"},
])
async def test_start_run_invalid_input(client, tenant, given):
    cid = await create_connection(client, tenant)
    pid = await delivery_pipeline_id(client, tenant, cid)
    future = iso(datetime.now(UTC) + timedelta(hours=1))
    values = {"CID": str(cid), "PID": str(pid), "FUTURE": future}
    result = (await ok(client, tenant, START_RUN, input={
        k: values.get(v, v) for k, v in given.items()}))["startRun"]
    assert result["__typename"] == "InvalidInputError", result
    assert result["fieldErrors"]
    data = await ok(client, tenant, "{ runs { nodes { id } } }")
    assert data["runs"]["nodes"] == []


@pytest.mark.parametrize("scopes", ["read", "write"])
async def test_start_run_needs_report(client, tenant, scopes):
    cid = await create_connection(client, tenant)
    result = (await ok(client, tenant, START_RUN, scopes, input={"connectionId": str(cid)}
                       ))["startRun"]
    assert result["__typename"] == "PermissionDeniedError"
    assert "report" in result["message"]


async def _running(client, tenant, minutes_ago: int = 10) -> tuple[int, int, datetime]:
    cid = await create_connection(client, tenant)
    started = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return cid, await start_run(client, tenant, cid, started), started


async def test_report_run_success_then_identical_replay(client, tenant):
    cid, rid, started = await _running(client, tenant)
    completed = started + timedelta(minutes=4, microseconds=123456)
    given = {"runId": str(rid), "completedAt": iso(completed), "eventsDelivered": 100,
             "evaluations": 80, "customEvents": 20}
    first = (await ok(client, tenant, REPORT_RUN, "report", input=given))["reportRun"]
    assert first["__typename"] == "ReportRunSuccess", first
    assert first["changed"] is True
    run = first["run"]
    assert run["id"] == str(rid)
    assert run["status"] == "SUCCEEDED"
    assert when(run["finishedAt"]) == completed
    assert run["eventsDelivered"] == 100
    assert run["eventsByType"] == {"evaluations": 80, "customEvents": 20, "total": 100}

    replay = (await ok(client, tenant, REPORT_RUN, "report", input=given))["reportRun"]
    assert replay["__typename"] == "ReportRunSuccess", replay
    assert replay["changed"] is False
    assert replay["run"] == run

    # the same instant written with another offset is the same report
    offset = completed.astimezone(timezone(timedelta(hours=2))).isoformat()
    same = (await ok(client, tenant, REPORT_RUN, "report", input={**given, "completedAt": offset}
                     ))["reportRun"]
    assert same["__typename"] == "ReportRunSuccess" and same["changed"] is False

    # replays do not count twice
    t = await telemetry(client, tenant, cid)
    assert t["eventsLast24h"]["total"] == 100


async def test_report_run_failure_and_replay(client, tenant):
    _, rid, started = await _running(client, tenant)
    given = {"runId": str(rid), "completedAt": iso(started + timedelta(minutes=1)),
             "eventsDelivered": 3, "batchesDlq": 1, "error": "schema mismatch"}
    first = (await ok(client, tenant, REPORT_RUN, "report", input=given))["reportRun"]
    assert first["__typename"] == "ReportRunSuccess"
    assert first["changed"] is True
    assert (first["run"]["status"], first["run"]["error"], first["run"]["dlqBatches"]) == (
        "FAILED", "schema mismatch", 1)
    replay = (await ok(client, tenant, REPORT_RUN, "report", input=given))["reportRun"]
    assert replay["__typename"] == "ReportRunSuccess" and replay["changed"] is False


@pytest.mark.parametrize("change", [
    {"eventsDelivered": 101},
    {"error": "late failure"},
    {"batchesDlq": 1},
    {"completedAt": "LATER"},
    {"evaluations": 50},
])
async def test_report_run_different_report_conflicts(client, tenant, change):
    _, rid, started = await _running(client, tenant)
    completed = started + timedelta(minutes=2)
    given = {"runId": str(rid), "completedAt": iso(completed), "eventsDelivered": 100}
    first = (await ok(client, tenant, REPORT_RUN, "report", input=given))["reportRun"]
    assert first["__typename"] == "ReportRunSuccess"
    if change.get("completedAt") == "LATER":
        change = {"completedAt": iso(completed + timedelta(minutes=1))}
    result = (await ok(client, tenant, REPORT_RUN, "report", input={**given, **change}
                       ))["reportRun"]
    assert result["__typename"] == "ConflictError", result
    assert str(rid) in result["message"]
    run = (await ok(client, tenant, "query($id: ID!) { run(id: $id) { status eventsDelivered "
                    "error finishedAt } }", id=str(rid)))["run"]
    assert run["status"] == "SUCCEEDED"
    assert run["eventsDelivered"] == 100
    assert run["error"] is None
    assert when(run["finishedAt"]) == completed


async def test_report_run_unknown_and_foreign_ids(client, tenant, other_tenant):
    _, theirs, _ = await _running(client, other_tenant)
    for raw in ("424242", "abc", str(theirs)):
        result = (await ok(client, tenant, REPORT_RUN, "report", input={
            "runId": raw, "completedAt": iso(datetime.now(UTC)), "eventsDelivered": 1,
        }))["reportRun"]
        assert result["__typename"] == "NotFoundError", result
        assert result["kind"] == "run"
        assert result["id"] == raw
    run = (await ok(client, other_tenant, "query($id: ID!) { run(id: $id) { status } }",
                    id=str(theirs)))["run"]
    assert run["status"] == "RUNNING"


@pytest.mark.parametrize(("change", "field"), [
    ({"eventsDelivered": -1}, "events_delivered"),
    ({"batchesDlq": -2}, "batches_dlq"),
    ({"evaluations": -5}, "evaluations"),
    ({"completedAt": "BEFORE_START"}, "completed_at"),
    ({"completedAt": "FUTURE"}, "completed_at"),
    ({"evaluations": 80, "customEvents": 30}, "events_delivered"),
])
async def test_report_run_invalid_input(client, tenant, change, field):
    _, rid, started = await _running(client, tenant)
    dates = {"BEFORE_START": iso(started - timedelta(seconds=1)),
             "FUTURE": iso(datetime.now(UTC) + timedelta(hours=1))}
    given = {"runId": str(rid), "completedAt": iso(started + timedelta(minutes=1)),
             "eventsDelivered": 100}
    given.update({k: dates.get(v, v) for k, v in change.items()})
    result = (await ok(client, tenant, REPORT_RUN, "report", input=given))["reportRun"]
    assert result["__typename"] == "InvalidInputError", result
    assert result["fieldErrors"]
    # the field is named (in the resolver's vocabulary or in GraphQL's)
    camel = "".join(w.capitalize() if i else w for i, w in enumerate(field.split("_")))
    assert fields_of(result) & {field, camel}, result
    run = (await ok(client, tenant, "query($id: ID!) { run(id: $id) { status } }", id=str(rid)))
    assert run["run"]["status"] == "RUNNING"


@pytest.mark.parametrize(("mutation", "given", "field"), [
    ("reportRun", {"eventsDelivered": -1}, "eventsDelivered"),
    ("reportRun", {"batchesDlq": -1}, "batchesDlq"),
    ("reportRun", {"completedAt": "BEFORE_START"}, "completedAt"),
    ("createConnection", {"warehouseType": "Not A Type!"}, "warehouseType"),
    ("updateConnection", {"warehouseType": "Not A Type!"}, "warehouseType"),
    ("startRun", {"startedAt": "FUTURE"}, "startedAt"),
])
async def test_field_errors_name_the_graphql_input_fields(client, tenant, mutation, given, field):
    """A GraphQL client maps fieldErrors onto the input it sent, so the names must be the
    GraphQL input's (startRun already says `connectionId`), not the REST wire names."""
    cid, rid, started = await _running(client, tenant)
    dates = {"BEFORE_START": iso(started - timedelta(minutes=1)),
             "FUTURE": iso(datetime.now(UTC) + timedelta(hours=1))}
    base = {
        "reportRun": {"runId": str(rid), "completedAt": iso(started + timedelta(minutes=1)),
                      "eventsDelivered": 1},
        "createConnection": {"name": "new", "warehouseType": "snowflake"},
        "updateConnection": {"id": str(cid)},
        "startRun": {"connectionId": str(cid)},
    }[mutation]
    input_type = mutation[0].upper() + mutation[1:] + "Input"
    body = await ok(client, tenant, f"""mutation($input: {input_type}!) {{
        result: {mutation}(input: $input) {{ __typename
        ... on InvalidInputError {{ fieldErrors {{ field messages }} }} }} }}""",
                    input={**base, **{k: dates.get(v, v) for k, v in given.items()}})
    result = body["result"]
    assert result["__typename"] == "InvalidInputError", result
    assert fields_of(result) == {field}


@pytest.mark.parametrize("scopes", ["read", "write"])
async def test_report_run_needs_report(client, tenant, scopes):
    _, rid, started = await _running(client, tenant)
    result = (await ok(client, tenant, REPORT_RUN, scopes, input={
        "runId": str(rid), "completedAt": iso(started + timedelta(minutes=1)),
        "eventsDelivered": 1}))["reportRun"]
    assert result["__typename"] == "PermissionDeniedError"
    assert "report" in result["message"]
    run = (await ok(client, tenant, "query($id: ID!) { run(id: $id) { status } }", id=str(rid)))
    assert run["run"]["status"] == "RUNNING"


@pytest.mark.parametrize("scopes", ["admin", "read,write,report"])
async def test_admin_and_combined_scopes_can_do_everything(client, tenant, scopes):
    created = (await ok(client, tenant, CREATE_CONNECTION, scopes, input={
        "name": f"c-{scopes}", "warehouseType": "snowflake"}))["createConnection"]
    assert created["__typename"] == "ConnectionSuccess"
    cid = created["connection"]["id"]
    updated = (await ok(client, tenant, UPDATE_CONNECTION, scopes, input={
        "id": cid, "name": "renamed"}))["updateConnection"]
    assert updated["__typename"] == "ConnectionSuccess"
    started = (await ok(client, tenant, START_RUN, scopes, input={"connectionId": cid}
                        ))["startRun"]
    assert started["__typename"] == "StartRunSuccess"
    reported = (await ok(client, tenant, REPORT_RUN, scopes, input={
        "runId": started["run"]["id"], "completedAt": iso(datetime.now(UTC)),
        "eventsDelivered": 1}))["reportRun"]
    assert reported["__typename"] == "ReportRunSuccess"
    data = await ok(client, tenant, "{ connections { nodes { name telemetry { status } } } }",
                    scopes)
    assert data["connections"]["nodes"] == [{"name": "renamed", "telemetry": {"status": "ACTIVE"}}]


# ----------------------------------------------------------------------------------------------
# BigInt


async def test_bigint_values_beyond_32_bits(client, tenant):
    cid, rid, started = await _running(client, tenant)
    big = 5_000_000_000
    result = (await ok(client, tenant, REPORT_RUN, "report", input={
        "runId": str(rid), "completedAt": iso(started + timedelta(minutes=1)),
        "eventsDelivered": big, "evaluations": 3_000_000_000, "customEvents": 2_000_000_000,
    }))["reportRun"]
    assert result["__typename"] == "ReportRunSuccess", result
    assert result["run"]["eventsDelivered"] == big
    assert result["run"]["eventsByType"] == {"evaluations": 3_000_000_000,
                                             "customEvents": 2_000_000_000, "total": big}
    t = await telemetry(client, tenant, cid)
    assert t["eventsLast24h"] == {"evaluations": 3_000_000_000, "customEvents": 2_000_000_000,
                                  "total": big}
    assert t["eventsLast7d"]["total"] == big


async def test_bigint_as_a_literal_in_the_document(client, tenant):
    _, rid, started = await _running(client, tenant)
    completed = iso(started + timedelta(minutes=1))
    data = await ok(client, tenant, f"""mutation {{ reportRun(input: {{runId: "{rid}",
        completedAt: "{completed}", eventsDelivered: 1000000000000}}) {{
        __typename ... on ReportRunSuccess {{ run {{ eventsDelivered }} }} }} }}""")
    assert data["reportRun"] == {"__typename": "ReportRunSuccess",
                                 "run": {"eventsDelivered": 10**12}}


async def test_counts_beyond_a_trillion_are_invalid_input(client, tenant):
    """A 64-bit scalar, but one run's counts stop at 10**12 so that sums cannot overflow."""
    _, rid, started = await _running(client, tenant)
    result = (await ok(client, tenant, REPORT_RUN, "report", input={
        "runId": str(rid), "completedAt": iso(started + timedelta(minutes=1)),
        "eventsDelivered": 10**12 + 1}))["reportRun"]
    assert result["__typename"] == "InvalidInputError", result
    assert [e["field"] for e in result["fieldErrors"]] == ["eventsDelivered"]


@pytest.mark.parametrize("value", [2**63, "12x", 1.5, True])
async def test_bigint_rejects_what_is_not_a_64_bit_integer(client, tenant, value):
    _, rid, started = await _running(client, tenant)
    body = await graphql(client, tenant, REPORT_RUN, "report", input={
        "runId": str(rid), "completedAt": iso(started + timedelta(minutes=1)),
        "eventsDelivered": value})
    assert body.get("data") is None
    assert body["errors"], body


# ----------------------------------------------------------------------------------------------
# authentication, masking, GraphiQL

UNAUTHENTICATED_QUERIES = [
    '{ connection(id: "CID") { id } }',
    "{ connections { nodes { id } } }",
    '{ pipeline(id: "PID") { id } }',
    "{ pipelines { nodes { id } } }",
    '{ run(id: "RID") { id } }',
    "{ runs { nodes { id } } }",
    'mutation { createConnection(input: {name: "x", warehouseType: "snowflake"}) { __typename } }',
    'mutation { updateConnection(input: {id: "CID", name: "x"}) { __typename } }',
    'mutation { startRun(input: {connectionId: "CID"}) { __typename } }',
    'mutation { reportRun(input: {runId: "RID", completedAt: "NOW", eventsDelivered: 1}) '
    "{ __typename } }",
]


@pytest.mark.parametrize("query", UNAUTHENTICATED_QUERIES)
async def test_without_a_token_every_operation_is_unauthenticated(client, tenant, query):
    # real ids, so that a missing caller check would show as data
    cid = await create_connection(client, tenant)
    rid = await start_run(client, tenant, cid)
    pid = await delivery_pipeline_id(client, tenant, cid)
    for name, value in {"CID": cid, "PID": pid, "RID": rid, "NOW": iso(datetime.now(UTC))}.items():
        query = query.replace(name, str(value))
    r = await client.post("/graphql", json={"query": query})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not any((body.get("data") or {}).values()), body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    data = await ok(client, tenant, "query($id: ID!) { run(id: $id) { status } "
                    "connection(id: $c) { name } }".replace("$c", f'"{cid}"'), id=str(rid))
    assert data == {"run": {"status": "RUNNING"}, "connection": {"name": "warehouse"}}
    data = await ok(client, tenant, "{ connections { nodes { id } } }")
    assert len(data["connections"]["nodes"]) == 1


@pytest.mark.parametrize("authorization", ["Bearer rw_000000000000_nope", "Bearer garbage",
                                           "Basic dXNlcjpwYXNz"])
async def test_a_bad_token_is_unauthenticated(client, tenant, authorization):
    r = await client.post("/graphql", json={"query": "{ connections { nodes { id } } }"},
                          headers={"Authorization": authorization})
    assert r.status_code == 200
    assert [e["extensions"]["code"] for e in r.json()["errors"]] == ["UNAUTHENTICATED"]


async def test_unexpected_errors_are_masked(client, tenant, monkeypatch):
    cid = await create_connection(client, tenant)

    async def broken(**kwargs):
        raise RuntimeError("connection to db-internal.example:5432 failed, password=hunter2")

    monkeypatch.setattr(connections_api, "get_connection", broken)
    r = await client.post("/graphql", json={"query": "query($id: ID!) { connection(id: $id) "
                                            "{ id } }", "variables": {"id": str(cid)}},
                          headers=tenant.headers())
    assert r.status_code == 200
    body = r.json()
    assert body["data"] == {"connection": None}
    (error,) = body["errors"]
    assert error["message"] == "Unexpected error."
    assert "hunter2" not in r.text and "db-internal" not in r.text
    assert "RuntimeError" not in r.text and "Traceback" not in r.text


async def test_graphiql_page(client):
    r = await client.get("/graphql", headers={"Accept": "text/html"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "graphiql" in r.text.lower()
