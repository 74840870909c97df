"""One path per behaviour: each rule here is enforced once, in the domain, and every surface
that has the case (warehouse REST, ELT REST, GraphQL, the Watcher REST, OpenLineage, the
WebSocket, the workers) is driven through the same case and must answer the same way, each in
its own error shape."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from websockets.asyncio.client import connect

from runwatch.app import create_app
from runwatch.models import Address, AddressLineage, Run, RunStatus
from runwatch.resolvers.runs import MAX_ERROR_CHARS, clean_error
from runwatch.services.reaper import reap_stuck_runs
from tests.conftest import Tenant, uvicorn_on_loopback
from tests.elt_helpers import create_pipeline, patch_run
from tests.helpers import create_connection, graphql, iso, report, start_run

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python"
LINEAGE = "/api/v1/lineage"
SECRET_ERROR = ("connect failed: password=hunter2hunter2 key AKIAIOSFODNN7EXAMPLE \x00 "
                + "x" * (MAX_ERROR_CHARS + 500))

CREATE_RUN = """mutation($p: ID!) { createRun(input: {pipelineId: $p, status: RUNNING}) {
  __typename ... on RunSuccess { run { id } } ... on Error { message } } }"""
UPDATE_RUN = """mutation($i: UpdateRunInput!) { updateRun(input: $i) {
  __typename ... on RunSuccess { run { id status error } }
  ... on InvalidInputError { message fieldErrors { field messages } }
  ... on Error { message } } }"""
REPORT_RUN = """mutation($i: ReportRunInput!) { reportRun(input: $i) {
  __typename ... on ReportRunSuccess { run { id status error } }
  ... on InvalidInputError { message fieldErrors { field messages } }
  ... on Error { message } } }"""
START_RUN = """mutation($i: StartRunInput!) { startRun(input: $i) {
  __typename ... on StartRunSuccess { run { id } }
  ... on InvalidInputError { message fieldErrors { field messages } }
  ... on Error { message } } }"""


def now() -> datetime:
    return datetime.now(UTC)


def ol_event(event_type: str, run_id: str, at: datetime, *, job: str = "job",
             facets: dict[str, Any] | None = None, inputs: list[dict] | None = None,
             outputs: list[dict] | None = None) -> dict[str, Any]:
    return {"eventType": event_type, "eventTime": iso(at), "producer": PRODUCER,
            "run": {"runId": run_id, "facets": facets or {}},
            "job": {"namespace": "airflow", "name": job},
            "inputs": inputs or [], "outputs": outputs or []}


async def post_event(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]
                     ) -> httpx.Response:
    return await client.post(LINEAGE, json=body, headers=tenant.headers("report"))


async def elt_running(client: httpx.AsyncClient, tenant: Tenant, name: str = "orders") -> str:
    pipeline = await create_pipeline(client, tenant, name)
    r = await client.post("/api/elt/runs", json={"pipelineId": pipeline["id"],
                                                 "status": "running"},
                          headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    return r.json()["run"]["id"]


async def graphql_running(client: httpx.AsyncClient, tenant: Tenant, name: str) -> str:
    pipeline = await create_pipeline(client, tenant, name)
    data = await graphql(client, tenant, CREATE_RUN, p=pipeline["id"])
    assert data["data"]["createRun"]["__typename"] == "RunSuccess", data
    return data["data"]["createRun"]["run"]["id"]


# --- 1. a run's error: one cleaning on every path ----------------------------------------------


async def test_a_run_error_is_cleaned_the_same_on_every_path(client, tenant):
    expected = clean_error(SECRET_ERROR)
    assert expected is not None
    assert "hunter2" not in expected and "AKIAIOSFODNN7EXAMPLE" not in expected
    assert "\x00" not in expected and "\ufffd" in expected
    kept, marker = expected.split(" …[truncated ")
    assert len(kept) == MAX_ERROR_CHARS and marker.endswith(" characters]")
    stored: dict[str, int] = {}

    # warehouse PATCH …/metrics/{run}/
    cid = await create_connection(client, tenant)
    rid = await start_run(client, tenant, cid, now() - timedelta(minutes=5))
    r = await report(client, tenant, cid, rid, completed_at=iso(now()), events_delivered=0,
                     error=SECRET_ERROR)
    assert r.status_code == 204, r.text
    stored["warehouse"] = rid

    # GraphQL reportRun (the same report)
    rid = await start_run(client, tenant, cid, now() - timedelta(minutes=5))
    data = await graphql(client, tenant, REPORT_RUN, i={
        "runId": str(rid), "completedAt": iso(now()), "eventsDelivered": 0,
        "error": SECRET_ERROR})
    assert data["data"]["reportRun"]["__typename"] == "ReportRunSuccess", data
    stored["graphql reportRun"] = rid

    # ELT PATCH /api/elt/runs/{id}
    run_id = await elt_running(client, tenant)
    r = await patch_run(client, tenant, run_id, {"status": "failed",
                                                 "errorSummary": SECRET_ERROR})
    assert r.status_code == 200, r.text
    stored["elt"] = int(run_id)

    # GraphQL updateRun
    run_id = await graphql_running(client, tenant, "gql")
    data = await graphql(client, tenant, UPDATE_RUN, i={
        "id": run_id, "status": "FAILED", "errorSummary": SECRET_ERROR})
    assert data["data"]["updateRun"]["__typename"] == "RunSuccess", data
    assert data["data"]["updateRun"]["run"]["error"] == expected
    stored["graphql updateRun"] = int(run_id)

    # OpenLineage FAIL with an errorMessage facet (and a RUNNING one before it)
    ol_id = str(uuid.uuid4())
    facet = {"errorMessage": {"message": SECRET_ERROR, "programmingLanguage": "python"}}
    r = await post_event(client, tenant, ol_event("START", ol_id, now() - timedelta(minutes=1)))
    assert r.status_code == 201, r.text
    r = await post_event(client, tenant, ol_event("RUNNING", ol_id, now(), facets=facet))
    assert r.status_code == 201, r.text
    running = await Run.get(openlineage_run_id=ol_id)
    assert running.status == RunStatus.RUNNING and running.error == expected
    r = await post_event(client, tenant, ol_event("FAIL", ol_id, now(), facets=facet))
    assert r.status_code == 201, r.text
    stored["openlineage"] = running.id

    for surface, run_pk in stored.items():
        run = await Run.get(id=run_pk)
        assert run.status == RunStatus.FAILED, surface
        assert run.error == expected, surface

    # the reaper: a stuck run's last reported error goes through the same cleaning
    rid = await start_run(client, tenant, cid, now() - timedelta(minutes=5))
    await Run.filter(id=rid).update(error="password=hunter2hunter2 " + "y" * MAX_ERROR_CHARS,
                                    deadline_at=now() - timedelta(seconds=1))
    assert await reap_stuck_runs() == 1
    run = await Run.get(id=rid)
    assert run.status == RunStatus.TIMED_OUT
    assert "hunter2" not in run.error and run.error.endswith("characters]")
    assert "Last reported error: password=[REDACTED]" in run.error


async def test_a_nul_anywhere_in_an_openlineage_event_is_never_a_500(client, tenant):
    ol_id = str(uuid.uuid4())
    facets = {"errorMessage": {"message": "bad\x00byte", "programmingLanguage": "python"},
              "spark\x00Version": {"v": 1}, "custom": {"note": "a\x00b"}, "kept": {"v": 2}}
    r = await post_event(client, tenant, ol_event("START", ol_id, now(), facets=facets))
    assert r.status_code == 201, r.text
    run = await Run.get(openlineage_run_id=ol_id)
    assert run.error == "bad\ufffdbyte"
    assert run.openlineage_facets == {"run.kept": {"v": 2},
                                      "_dropped": ["run.custom", "run.spark\ufffdVersion"]}
    # in a name runwatch stores as it is (a job's, a dataset's): refused, as Marquez does
    body = ol_event("START", str(uuid.uuid4()), now(), job="job\x00name")
    r = await post_event(client, tenant, body)
    assert r.status_code == 422, r.text
    body = ol_event("START", str(uuid.uuid4()), now(),
                    outputs=[{"namespace": "s3://b", "name": "out\x00put"}])
    r = await post_event(client, tenant, body)
    assert r.status_code == 422, r.text


# --- 2. the clock rule: no start and no end more than 5 minutes ahead ------------------------

FUTURE = "is in the future (more than 5 minutes ahead of the server's clock)."


def field_errors(data: dict[str, Any], mutation: str) -> dict[str, list[str]]:
    result = data["data"][mutation]
    assert result["__typename"] == "InvalidInputError", data
    return {e["field"]: e["messages"] for e in result["fieldErrors"]}


async def watcher_pipeline(client: httpx.AsyncClient, tenant: Tenant, name: str) -> int:
    r = await client.post("/pipeline", json={"name": name, "pipeline_type_name": "extraction"},
                          headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_a_start_ahead_of_the_clock_is_refused_on_every_surface(client, tenant):
    ahead = now() + timedelta(days=1)
    cid = await create_connection(client, tenant)

    # warehouse POST …/metrics/ (DRF shape)
    r = await client.post(f"{tenant.prefix}/{cid}/metrics/", json={"started_at": iso(ahead)},
                          headers=tenant.headers("report"))
    assert r.status_code == 400, r.text
    assert r.json() == {"started_at": [f"started_at {FUTURE}"]}

    # GraphQL startRun
    data = await graphql(client, tenant, START_RUN, i={"connectionId": str(cid),
                                                       "startedAt": iso(ahead)})
    assert any(FUTURE in m for m in field_errors(data, "startRun")["startedAt"]), data

    # Watcher POST /start_pipeline_execution: 422, pydantic's shape
    pid = await watcher_pipeline(client, tenant, "load")
    r = await client.post("/start_pipeline_execution",
                          json={"pipeline_id": pid, "start_date": iso(ahead)},
                          headers=tenant.headers("write"))
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": [{"loc": ["body", "start_date"],
                                    "msg": f"start_date {FUTURE}", "type": "value_error"}]}

    # OpenLineage START (and a COMPLETE of a run never started): 422, Marquez's shape
    for event_type in ("START", "COMPLETE"):
        r = await post_event(client, tenant, ol_event(event_type, str(uuid.uuid4()), ahead))
        assert r.status_code == 422, r.text
        assert r.json() == {"errors": [f"eventTime {FUTURE}"]}

    assert await Run.all().count() == 0

    # within the skew is fine everywhere
    soon = now() + timedelta(minutes=4)
    r = await client.post(f"{tenant.prefix}/{cid}/metrics/", json={"started_at": iso(soon)},
                          headers=tenant.headers("report"))
    assert r.status_code == 201, r.text
    r = await client.post("/start_pipeline_execution",
                          json={"pipeline_id": pid, "start_date": iso(soon)},
                          headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    r = await post_event(client, tenant, ol_event("START", str(uuid.uuid4()), soon))
    assert r.status_code == 201, r.text
    assert await Run.all().count() == 3


async def test_an_end_ahead_of_the_clock_is_refused_on_every_surface(client, tenant):
    ahead = now() + timedelta(days=1)
    started = now() - timedelta(minutes=10)
    open_runs: dict[str, int] = {}
    cid = await create_connection(client, tenant)

    # warehouse PATCH …/metrics/{run}/
    rid = await start_run(client, tenant, cid, started)
    r = await report(client, tenant, cid, rid, completed_at=iso(ahead), events_delivered=1)
    assert r.status_code == 400, r.text
    assert r.json() == {"completed_at": [f"completed_at {FUTURE}"]}
    open_runs["warehouse"] = rid

    # GraphQL reportRun
    data = await graphql(client, tenant, REPORT_RUN, i={
        "runId": str(rid), "completedAt": iso(ahead), "eventsDelivered": 1})
    assert any(FUTURE in m for m in field_errors(data, "reportRun")["completedAt"]), data

    # ELT PATCH /api/elt/runs/{id}
    run_id = await elt_running(client, tenant)
    r = await patch_run(client, tenant, run_id, {"status": "succeeded",
                                                 "finishedAt": iso(ahead)})
    assert r.status_code == 400, r.text
    assert f"finishedAt {FUTURE}" in r.text
    open_runs["elt"] = int(run_id)

    # GraphQL updateRun
    run_id = await graphql_running(client, tenant, "gql")
    data = await graphql(client, tenant, UPDATE_RUN, i={
        "id": run_id, "status": "SUCCEEDED", "finishedAt": iso(ahead)})
    assert any(FUTURE in m for m in field_errors(data, "updateRun")["finishedAt"]), data
    open_runs["graphql"] = int(run_id)

    # Watcher POST /end_pipeline_execution: 422, pydantic's shape; freshness does not move
    pid = await watcher_pipeline(client, tenant, "load")
    r = await client.post("/start_pipeline_execution",
                          json={"pipeline_id": pid, "start_date": iso(started)},
                          headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    execution_id = r.json()["id"]
    r = await client.post("/end_pipeline_execution", json={
        "id": execution_id, "end_date": iso(ahead), "completed_successfully": True,
        "inserts": 5}, headers=tenant.headers("write"))
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": [{"loc": ["body", "end_date"],
                                    "msg": f"end_date {FUTURE}", "type": "value_error"}]}
    r = await client.get(f"/pipeline/{pid}", headers=tenant.headers("read"))
    assert r.status_code == 200 and r.json()["last_target_insert"] is None, r.text
    open_runs["watcher"] = execution_id

    # OpenLineage COMPLETE (and FAIL) of a started run: 422, Marquez's shape
    ol_id = str(uuid.uuid4())
    r = await post_event(client, tenant, ol_event("START", ol_id, started))
    assert r.status_code == 201, r.text
    for event_type in ("COMPLETE", "FAIL"):
        r = await post_event(client, tenant, ol_event(event_type, ol_id, ahead))
        assert r.status_code == 422, r.text
        assert r.json() == {"errors": [f"eventTime {FUTURE}"]}
    open_runs["openlineage"] = (await Run.get(openlineage_run_id=ol_id)).id

    for surface, run_pk in open_runs.items():
        run = await Run.get(id=run_pk)
        assert (run.status, run.finished_at) == (RunStatus.RUNNING, None), surface


# --- 4. the lineage pair cap: one per call, on every path that draws lineage ---------------


async def test_the_lineage_pair_cap_holds_for_openlineage_events_too(client, tenant):
    cap = "at most 10000 source x target pairs may be sent at once"

    def datasets(side: str, n: int) -> list[dict[str, str]]:
        return [{"namespace": "postgres://db:5432", "name": f"{side}{i}"} for i in range(n)]

    # OpenLineage: 101 inputs x 100 outputs is refused whole (no run, address or edge)
    body = ol_event("START", str(uuid.uuid4()), now(), inputs=datasets("in", 101),
                    outputs=datasets("out", 100))
    r = await post_event(client, tenant, body)
    assert r.status_code == 422, r.text
    assert r.json() == {"errors": [f"inputs x outputs: {cap}"]}
    assert await Run.all().count() == 0
    assert await Address.all().count() == 0 and await AddressLineage.all().count() == 0

    # the Watcher's POST /address_lineage: the same sizes, the same cap
    pid = await watcher_pipeline(client, tenant, "load")

    def addresses(side: str, n: int) -> list[dict[str, str]]:
        return [{"name": f"{side}{i}", "address_type_name": "postgres",
                 "address_type_group_name": "database"} for i in range(n)]

    r = await client.post("/address_lineage", json={
        "pipeline_id": pid, "source_addresses": addresses("in", 101),
        "target_addresses": addresses("out", 100)}, headers=tenant.headers("write"))
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [{"loc": ["body", "target_addresses"], "msg": cap,
                                   "type": "value_error"}]
    assert await AddressLineage.all().count() == 0

    # at the cap an event is fine
    body["inputs"] = datasets("in", 100)
    r = await post_event(client, tenant, body)
    assert r.status_code == 201, r.text
    assert await AddressLineage.all().count() == 10_000


# --- 7. OpenLineage's changes of a run's data reach live subscribers -----------------------

LIVE = """subscription($id: ID!) { runUpdates(id: $id) { run { status rowsTotal error } } }"""


@contextlib.asynccontextmanager
async def socket(url: str, tenant: Tenant, scopes: str = "read") -> AsyncIterator[Any]:
    async with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=5) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {
            "Authorization": f"Bearer {tenant.tokens[scopes]}"}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack["type"] == "connection_ack", ack
        yield ws


async def receive(ws: Any, operation: str) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "next" and message["id"] == operation, message
    assert "errors" not in message["payload"], message
    return message["payload"]["data"]


async def test_an_openlineage_event_leaves_a_described_address_as_it_is(client, tenant):
    """A Watcher lineage updates the addresses it names (how Watcher jobs send their
    metadata and types); an OpenLineage event names datasets by namespace only, so it uses a
    found address as it is instead of retyping it after its namespace."""
    r = await client.post("/address", json={
        "name": "db.sch.orders", "address_type_name": "snowflake",
        "address_type_group_name": "database", "primary_key": "id"},
        headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    before = await Address.get(name="db.sch.orders")
    event = ol_event("START", str(uuid.uuid4()), now(),
                     inputs=[{"namespace": "postgres://h:5432", "name": "db.sch.orders"}],
                     outputs=[{"namespace": "s3://bucket", "name": "out"}])
    r = await post_event(client, tenant, event)
    assert r.status_code < 300, r.text
    after = await Address.get(name="db.sch.orders")
    assert (after.address_type_id, after.namespace, after.primary_key) == (
        before.address_type_id, before.namespace, "id")
    assert await AddressLineage.all().count() == 1  # the edge is drawn all the same


async def test_openlineage_changes_stamp_updated_at_and_reach_run_updates(
        client, tenant, live_url):
    ol_id = str(uuid.uuid4())
    r = await post_event(client, tenant, ol_event("START", ol_id, now() - timedelta(minutes=1)))
    assert r.status_code == 201, r.text
    run = await Run.get(openlineage_run_id=ol_id)
    async with socket(live_url, tenant) as ws:
        await ws.send(json.dumps({"id": "live", "type": "subscribe", "payload": {
            "query": LIVE, "variables": {"id": str(run.id)}}}))
        first = (await receive(ws, "live"))["runUpdates"]["run"]
        assert first == {"status": "RUNNING", "rowsTotal": None, "error": None}
        stats = {"outputStatistics": {"rowCount": 42, "size": 1000}}
        r = await post_event(client, tenant, ol_event(
            "RUNNING", ol_id, now(), outputs=[{"namespace": "s3://b", "name": "out",
                                              "outputFacets": stats}],
            facets={"errorMessage": {"message": "boom", "programmingLanguage": "python"}}))
        assert r.status_code == 201, r.text
        second = (await receive(ws, "live"))["runUpdates"]["run"]
        assert second == {"status": "RUNNING", "rowsTotal": 42, "error": "boom"}
    changed = await Run.get(id=run.id)
    assert changed.updated_at > run.updated_at


# --- 8. reading webhook endpoints: one scope rule on REST and GraphQL ------------------------

ENDPOINTS = """query($id: ID!) {
  webhookEndpoints { nodes { id url } }
  webhookEndpoint(id: $id) { id url } }"""


async def test_webhook_endpoints_are_read_with_the_same_scopes_on_rest_and_graphql(
        client, tenant):
    pipeline = await create_pipeline(client, tenant, "orders")
    r = await client.put("/api/elt/runs/webhook", json={"url": "https://hooks.example.com/a"},
                         headers=tenant.headers("write"))
    assert r.status_code == 200, r.text
    r = await client.put(f"/api/elt/pipelines/{pipeline['id']}/webhook",
                         json={"url": "https://hooks.example.com/b"},
                         headers=tenant.headers("write"))
    assert r.status_code == 200, r.text
    own = r.json()["webhook"]["id"]
    for scopes, allowed in (("read", True), ("write", True), ("admin", True),
                            ("report", False)):
        r1 = await client.get("/api/elt/runs/webhook", headers=tenant.headers(scopes))
        r2 = await client.get(f"/api/elt/pipelines/{pipeline['id']}/webhook",
                              headers=tenant.headers(scopes))
        assert [r1.status_code, r2.status_code] == ([200, 200] if allowed else [403, 403]), (
            scopes, r1.text, r2.text)
        data = await graphql(client, tenant, ENDPOINTS, scopes, id=own)
        if allowed:
            assert "errors" not in data, (scopes, data)
            assert len(data["data"]["webhookEndpoints"]["nodes"]) == 2, scopes
            assert data["data"]["webhookEndpoint"]["url"] == "https://hooks.example.com/b"
        else:
            codes = {e["extensions"]["code"] for e in data["errors"]}
            assert codes == {"FORBIDDEN"}, (scopes, data)
            assert data["data"] is None or data["data"].get("webhookEndpoints") is None


# --- 5. the rate limit counts every operation: a socket's, and a batch's -------------------


def outcome(answer: dict[str, Any]) -> str:
    """An operation's answer: "ran", or its error code (with the limit's own checks)."""
    if not answer.get("errors"):
        return "ran"
    [error] = answer["errors"]
    code = error["extensions"]["code"]
    if code == "RATE_LIMITED":
        assert 1 <= error["extensions"]["retryAfter"] <= 60, error
        assert error["message"].startswith("Rate limit exceeded (3 requests per minute)"), error
    return code


async def test_every_operation_counts_against_the_rate_limit_in_a_batch_as_on_a_socket(
        settings, tenant):
    queries = [f"{{ a{i}: __typename }}" for i in range(10)]
    expected = ["ran"] * 3 + ["RATE_LIMITED"] * 7
    app = create_app(replace(settings, graphql_batching=True, rate_limit_per_minute=3))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://runwatch.test") as c:
        # HTTP, batching on: one request of ten operations (the `read` token's budget)
        r = await c.post("/graphql", json=[{"query": q} for q in queries],
                         headers=tenant.headers("read"))
        assert r.status_code == 200, r.text
        assert [outcome(a) for a in r.json()] == expected, r.json()
        assert r.json()[0]["data"] == {"a0": "Query"}
        # the budget is spent: the next request is refused whole
        r = await c.post("/graphql", json=[{"query": q} for q in queries[:2]],
                         headers=tenant.headers("read"))
        assert r.status_code == 429, r.text
    # the WebSocket: ten operations on one socket (the `admin` token's budget; the handshake
    # carries no token here, so it is not one of them)
    async with uvicorn_on_loopback(app) as server, socket(
            f"ws://127.0.0.1:{server.config.port}/graphql", tenant, "admin") as ws:
        answers = []
        for i, query in enumerate(queries):
            await ws.send(json.dumps({"id": str(i), "type": "subscribe",
                                      "payload": {"query": query}}))
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["id"] == str(i), message
            if message["type"] == "next":
                done = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert done == {"id": str(i), "type": "complete"}, done
                answers.append(message["payload"])
            else:
                assert message["type"] == "error", message
                answers.append({"errors": message["payload"]})
        assert [outcome(a) for a in answers] == expected, answers


# --- 6. DataLoaders per operation, on a socket as over HTTP --------------------------------

TELEMETRY = "{ connections { nodes { id telemetry { eventsLast24h { total } } } } }"
FOLLOW = """subscription($id: ID!) { runUpdates(id: $id) {
  run { pipeline { name } } newLogLines { message } } }"""


async def query_on(ws: Any, operation: str, query: str) -> dict[str, Any]:
    await ws.send(json.dumps({"id": operation, "type": "subscribe",
                              "payload": {"query": query}}))
    data = await receive(ws, operation)
    done = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert done == {"id": operation, "type": "complete"}, done
    return data


async def test_each_socket_operation_and_event_reads_afresh(client, tenant, live_url):
    cid = await create_connection(client, tenant)
    async with socket(live_url, tenant) as ws:
        first = await query_on(ws, "q1", TELEMETRY)
        assert first["connections"]["nodes"] == [
            {"id": str(cid), "telemetry": {"eventsLast24h": {"total": 0}}}]
        # a report over HTTP, then the same query on the same socket
        rid = await start_run(client, tenant, cid, now() - timedelta(minutes=5))
        r = await report(client, tenant, cid, rid, completed_at=iso(now()),
                         events_delivered=42)
        assert r.status_code == 204, r.text
        second = await query_on(ws, "q2", TELEMETRY)
        assert second["connections"]["nodes"][0]["telemetry"] == {
            "eventsLast24h": {"total": 42}}

        # a subscription's events: a nested field read again for each one
        run_id = await elt_running(client, tenant, "before")
        await ws.send(json.dumps({"id": "s", "type": "subscribe", "payload": {
            "query": FOLLOW, "variables": {"id": run_id}}}))
        update = (await receive(ws, "s"))["runUpdates"]
        assert update["run"]["pipeline"] == {"name": "before"}
        pipeline_id = (await Run.get(id=int(run_id))).pipeline_id  # type: ignore[attr-defined]
        r = await client.patch(f"/api/elt/pipelines/{pipeline_id}", json={"name": "after"},
                               headers=tenant.headers("write"))
        assert r.status_code == 200, r.text
        r = await patch_run(client, tenant, run_id, {"appendLog": {"message": "one"}})
        assert r.status_code == 200, r.text
        update = (await receive(ws, "s"))["runUpdates"]
        assert update == {"run": {"pipeline": {"name": "after"}},
                          "newLogLines": [{"message": "one"}]}
