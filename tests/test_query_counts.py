"""The N+1 invariant: a list screen costs a fixed number of SQL queries, whatever its length.

Queries are counted from the DEBUG records of the `tortoise.db_client` logger, which Tortoise
emits once per statement (pool set-up and tear-down messages are not statements). The count
includes the token look-up (the token cache is off in tests). Each test measures a screen with
5 items, grows it to 50, measures again, and asserts the two counts are equal and small.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from runwatch.models import Pipeline
from tests.conftest import Tenant
from tests.helpers import create_connection, graphql, iso, report, start_run

SQL_LOGGER = "tortoise.db_client"
NOT_STATEMENTS = ("Created connection", "Closed connection")
# A token's last-used stamp, written on its first use and then at most once a minute: not part
# of what a screen costs.
LAST_USED = 'UPDATE "service_token" SET "last_used_at"'
MAX_QUERIES = 10


async def counted(caplog, client, tenant: Tenant, query: str, *, scopes: str = "read",
                  **variables) -> tuple[int, dict]:
    """Run one GraphQL request; returns (SQL statements it executed, its data)."""
    with caplog.at_level(logging.DEBUG, logger=SQL_LOGGER):
        start = len(caplog.records)
        body = await graphql(client, tenant, query, scopes, **variables)
        records = caplog.records[start:]
    assert "errors" not in body, body
    statements = [
        r for r in records
        if r.name == SQL_LOGGER and r.levelno == logging.DEBUG
        and not r.getMessage().startswith(NOT_STATEMENTS) and LAST_USED not in r.getMessage()
    ]
    return len(statements), body["data"]


async def add_connections(client, tenant: Tenant, first: int, count: int) -> list[int]:
    """Connections numbered first.., each with a succeeded, a failed and a running run."""
    now = datetime.now(UTC)
    ids = []
    for i in range(first, first + count):
        cid = await create_connection(client, tenant, f"conn-{i:03d}")
        ok = await start_run(client, tenant, cid, now - timedelta(minutes=60))
        r = await report(client, tenant, cid, ok, completed_at=iso(now - timedelta(minutes=50)),
                         events_delivered=100 + i)
        assert r.status_code == 204, r.text
        bad = await start_run(client, tenant, cid, now - timedelta(minutes=40))
        r = await report(client, tenant, cid, bad, completed_at=iso(now - timedelta(minutes=30)),
                         events_delivered=1, error=f"failure {i}")
        assert r.status_code == 204, r.text
        await start_run(client, tenant, cid, now - timedelta(minutes=5))
        ids.append(cid)
    return ids


CONNECTIONS_WITH_TELEMETRY = """{ connections(first: 50) { nodes {
    telemetry { status lastDeliveryAt eventsLast24h { total } } } } }"""


async def test_connections_with_telemetry_cost_a_fixed_number_of_queries(client, tenant, caplog):
    await add_connections(client, tenant, 0, 5)
    small, data = await counted(caplog, client, tenant, CONNECTIONS_WITH_TELEMETRY)
    assert len(data["connections"]["nodes"]) == 5

    await add_connections(client, tenant, 5, 45)
    large, data = await counted(caplog, client, tenant, CONNECTIONS_WITH_TELEMETRY)
    nodes = data["connections"]["nodes"]
    assert len(nodes) == 50
    # the answer is right, not just cheap: one success and one failure each, latest failed
    assert [n["telemetry"]["eventsLast24h"]["total"] for n in nodes] == [
        100 + i + 1 for i in range(50)]
    assert {n["telemetry"]["status"] for n in nodes} == {"DEGRADED"}
    assert all(n["telemetry"]["lastDeliveryAt"] for n in nodes)

    assert large == small, f"{small} queries for 5 connections, {large} for 50"
    assert large <= MAX_QUERIES


RUNS_WITH_PIPELINE = """{ runs(first: 50) { nodes {
    id status pipeline { id name connection { id name } } } } }"""


async def test_runs_with_pipeline_and_connection_cost_a_fixed_number_of_queries(
    client, tenant, caplog
):
    await add_connections(client, tenant, 0, 5)
    small, data = await counted(caplog, client, tenant, RUNS_WITH_PIPELINE)
    assert len(data["runs"]["nodes"]) == 15

    await add_connections(client, tenant, 5, 45)
    large, data = await counted(caplog, client, tenant, RUNS_WITH_PIPELINE)
    nodes = data["runs"]["nodes"]
    assert len(nodes) == 50
    assert len({n["pipeline"]["connection"]["id"] for n in nodes}) >= 16  # many parents
    for n in nodes:
        connection = n["pipeline"]["connection"]
        assert n["pipeline"]["name"] == f"{connection['name']} delivery"

    assert large == small, f"{small} queries for 5 connections' runs, {large} for 50"
    assert large <= MAX_QUERIES


PIPELINES_WITH_TELEMETRY = """{ pipelines(first: 50) { nodes {
    id connection { id } telemetry { status eventsLast24h { total } } } } }"""


async def test_pipelines_with_telemetry_cost_a_fixed_number_of_queries(client, tenant, caplog):
    await add_connections(client, tenant, 0, 5)
    small, data = await counted(caplog, client, tenant, PIPELINES_WITH_TELEMETRY)
    assert len(data["pipelines"]["nodes"]) == 5

    await add_connections(client, tenant, 5, 45)
    large, data = await counted(caplog, client, tenant, PIPELINES_WITH_TELEMETRY)
    nodes = data["pipelines"]["nodes"]
    assert len(nodes) == 50
    assert [n["telemetry"]["eventsLast24h"]["total"] for n in nodes] == [
        100 + i + 1 for i in range(50)]

    assert large == small, f"{small} queries for 5 pipelines, {large} for 50"
    assert large <= MAX_QUERIES


START = """mutation($input: StartRunInput!) { startRun(input: $input) {
  __typename ... on StartRunSuccess { run { id } } } }"""
REPORT = """mutation($input: ReportRunInput!) { reportRun(input: $input) { __typename } }"""


async def add_pipelines(client, tenant: Tenant, connection_id: int, first: int, count: int) -> None:
    """Extra pipelines delivering into one connection, each with a reported run.

    No API creates a second pipeline for a connection yet (the ELT-runs and Watcher contracts
    will), so they are inserted through the ORM; their runs go through the API.
    """
    now = datetime.now(UTC)
    for i in range(first, first + count):
        pipeline = await Pipeline.create(
            organisation_id=tenant.org_id, connection_id=connection_id,
            name=f"extra-{i:03d}", kind="batch",
        )
        body = await graphql(client, tenant, START, "report", input={
            "pipelineId": str(pipeline.id), "startedAt": iso(now - timedelta(minutes=20))})
        run_id = body["data"]["startRun"]["run"]["id"]
        body = await graphql(client, tenant, REPORT, "report", input={
            "runId": run_id, "completedAt": iso(now - timedelta(minutes=10)),
            "eventsDelivered": i + 1, **({"error": "boom"} if i % 2 else {})})
        assert body["data"]["reportRun"]["__typename"] == "ReportRunSuccess", body


CONNECTION_PIPELINES_TELEMETRY = """query($id: ID!) { connection(id: $id) {
    pipelines { telemetry { status } } } }"""


async def test_a_connection_pipelines_telemetry_costs_a_fixed_number_of_queries(
    client, tenant, caplog
):
    cid = await create_connection(client, tenant, "many-pipelines")
    await add_pipelines(client, tenant, cid, 0, 4)  # with the delivery pipeline: 5
    small, data = await counted(caplog, client, tenant, CONNECTION_PIPELINES_TELEMETRY,
                                id=str(cid))
    assert len(data["connection"]["pipelines"]) == 5

    await add_pipelines(client, tenant, cid, 4, 45)
    large, data = await counted(caplog, client, tenant, CONNECTION_PIPELINES_TELEMETRY,
                                id=str(cid))
    statuses = [p["telemetry"]["status"] for p in data["connection"]["pipelines"]]
    assert len(statuses) == 50
    # the delivery pipeline never ran; the extra ones alternate success and failure
    assert statuses == ["IDLE"] + ["ACTIVE" if i % 2 == 0 else "ERROR" for i in range(49)]

    assert large == small, f"{small} queries for 5 pipelines, {large} for 50"
    assert large <= MAX_QUERIES


async def test_the_count_is_of_statements(client, tenant, caplog):
    """Guards the counter itself: a request known to need queries is seen to make some."""
    cid = await create_connection(client, tenant)
    count, data = await counted(caplog, client, tenant,
                                "query($id: ID!) { connection(id: $id) { id } }", id=str(cid))
    assert data["connection"]["id"] == str(cid)
    assert count == 2  # the token, then the connection


ELT_PIPELINE = """mutation($name: String!) { createPipeline(input: {name: $name}) {
  ... on PipelineSuccess { pipeline { id } } } }"""
ELT_RUN = """mutation($p: ID!) { createRun(input: {pipelineId: $p, status: RUNNING}) {
  ... on RunSuccess { run { id } } } }"""
GATEWAY = """mutation($name: String!) { createGateway(input: {name: $name}) {
  ... on GatewayTokenSuccess { gateway { id } token } } }"""


async def add_elt_runs(client, tenant: Tenant, first: int, count: int) -> None:
    """ELT runs, each of its own pipeline and gateway, claimed, with a log line, a summary and
    a sample, finished: one webhook delivery each (to the organisation's endpoint)."""
    for i in range(first, first + count):
        body = await graphql(client, tenant, ELT_PIPELINE, name=f"elt-{i:03d}")
        pid = body["data"]["createPipeline"]["pipeline"]["id"]
        body = await graphql(client, tenant, GATEWAY, name=f"gw-{i:03d}")
        gateway = body["data"]["createGateway"]
        r = await client.post("/api/elt/runs", json={
            "pipelineId": pid, "targetGatewayId": gateway["gateway"]["id"],
            "status": "pending"},
            headers=tenant.headers("write"))
        run_id = r.json()["run"]["id"]
        r = await client.patch(f"/api/agent/runs/{run_id}", json={
            "status": "running", "appendLog": {"message": f"start {i}"},
            "telemetrySummary": {"rowsLoaded": i, "progress": 50},
            "appendTelemetrySample": {"rows": i}},
            headers={"Authorization": f"Bearer {gateway['token']}"})
        assert r.status_code == 200, r.text
        r = await client.patch(f"/api/agent/runs/{run_id}", json={"status": "succeeded"},
                               headers={"Authorization": f"Bearer {gateway['token']}"})
        assert r.status_code == 200, r.text  # the claimant finishes it


ELT_RUNS_SCREEN = """{ runs(first: 50) { nodes {
    id status environment telemetrySummary { rowsLoaded progress } logLinesDropped
    pipeline { name } gateway { name online } targetGateway { name } } } }"""


async def _set_default_webhook(client, tenant: Tenant) -> None:
    r = await client.put("/api/elt/runs/webhook", json={"url": "http://127.0.0.1:9/hook"},
                         headers=tenant.headers("write"))
    assert r.status_code == 200, r.text


async def test_elt_runs_screen_costs_a_fixed_number_of_queries(client, tenant, caplog):
    await add_elt_runs(client, tenant, 0, 5)
    small, data = await counted(caplog, client, tenant, ELT_RUNS_SCREEN)
    assert len(data["runs"]["nodes"]) == 5

    await add_elt_runs(client, tenant, 5, 45)
    large, data = await counted(caplog, client, tenant, ELT_RUNS_SCREEN)
    nodes = data["runs"]["nodes"]
    assert len(nodes) == 50
    assert [n["telemetrySummary"]["rowsLoaded"] for n in nodes] == list(range(49, -1, -1))
    assert all(n["gateway"]["name"] == n["targetGateway"]["name"] for n in nodes)

    assert large == small, f"{small} queries for 5 runs, {large} for 50"
    assert large <= MAX_QUERIES


DELIVERIES_SCREEN = """{ webhookDeliveries(first: 50) { nodes {
    id status eventType attempts { statusCode } endpoint { url } run { id status } } } }"""


async def test_webhook_deliveries_screen_costs_a_fixed_number_of_queries(client, tenant, caplog):
    await _set_default_webhook(client, tenant)
    await add_elt_runs(client, tenant, 0, 5)
    small, data = await counted(caplog, client, tenant, DELIVERIES_SCREEN)
    assert len(data["webhookDeliveries"]["nodes"]) == 5

    await add_elt_runs(client, tenant, 5, 45)
    large, data = await counted(caplog, client, tenant, DELIVERIES_SCREEN)
    nodes = data["webhookDeliveries"]["nodes"]
    assert len(nodes) == 50 and {n["run"]["status"] for n in nodes} == {"SUCCEEDED"}

    assert large == small, f"{small} queries for 5 deliveries, {large} for 50"
    assert large <= MAX_QUERIES


async def counted_rest(caplog, client, path: str, headers: dict) -> tuple[int, dict]:
    with caplog.at_level(logging.DEBUG, logger=SQL_LOGGER):
        start = len(caplog.records)
        r = await client.get(path, headers=headers)
        records = caplog.records[start:]
    assert r.status_code == 200, r.text
    statements = [x for x in records if x.name == SQL_LOGGER and x.levelno == logging.DEBUG
                  and not x.getMessage().startswith(NOT_STATEMENTS)
                  and LAST_USED not in x.getMessage()]
    return len(statements), r.json()


async def test_rest_elt_run_list_costs_a_fixed_number_of_queries(client, tenant, caplog):
    """`GET /api/elt/runs` returns every run with its logs and samples and what eltPulse's
    Runs page reads beside them: a fixed number of statements (the token, the page, the lines,
    the samples, the pipelines, the target gateways and the webhook deliveries of the whole
    page), whatever the page size."""
    await add_elt_runs(client, tenant, 0, 5)
    small, body = await counted_rest(caplog, client, "/api/elt/runs", tenant.headers("read"))
    assert len(body["runs"]) == 5
    await add_elt_runs(client, tenant, 5, 45)
    large, body = await counted_rest(caplog, client, "/api/elt/runs", tenant.headers("read"))
    assert len(body["runs"]) == 50
    assert all(len(run["logEntries"]) == 1 and len(run["telemetry"]["samples"]) == 1
               for run in body["runs"])
    assert large == small == ELT_LIST_STATEMENTS


ELT_LIST_STATEMENTS = 7
PIPELINES_WITH_ENDPOINT = """{ pipelines(first: 60) { nodes { name webhookEndpoint { url } } } }"""


async def add_pipelines_with_endpoints(client, tenant: Tenant, first: int, count: int) -> None:
    """ELT pipelines, every other one with a webhook endpoint of its own."""
    for i in range(first, first + count):
        r = await client.post("/api/elt/pipelines", json={"name": f"hooked-{i:03d}"},
                              headers=tenant.headers("write"))
        assert r.status_code == 201, r.text
        if i % 2 == 0:
            pid = r.json()["pipeline"]["id"]
            r = await client.put(f"/api/elt/pipelines/{pid}/webhook",
                                 json={"url": f"http://127.0.0.1:9/hook-{i:03d}"},
                                 headers=tenant.headers("write"))
            assert r.status_code == 200, r.text


async def test_pipelines_with_their_webhook_endpoint_cost_a_fixed_number_of_queries(
    client, tenant, caplog
):
    """Issue 9: `Pipeline.webhookEndpoint` was one query per pipeline (12 for 5, 82 for 40)."""
    await add_pipelines_with_endpoints(client, tenant, 0, 5)
    small, data = await counted(caplog, client, tenant, PIPELINES_WITH_ENDPOINT)
    assert len(data["pipelines"]["nodes"]) == 5

    await add_pipelines_with_endpoints(client, tenant, 5, 45)
    large, data = await counted(caplog, client, tenant, PIPELINES_WITH_ENDPOINT)
    nodes = data["pipelines"]["nodes"]
    assert [(n["name"], n["webhookEndpoint"]) for n in nodes] == [
        (f"hooked-{i:03d}", {"url": f"http://127.0.0.1:9/hook-{i:03d}"} if i % 2 == 0 else None)
        for i in range(50)]

    assert large == small, f"{small} queries for 5 pipelines, {large} for 50"
    assert large <= MAX_QUERIES
