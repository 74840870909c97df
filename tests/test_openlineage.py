"""OpenLineage ingestion with the real client (openlineage-python's HttpTransport) against a
real runwatch server on loopback, read back through GraphQL, the Watcher routes and
`GET /api/v1/lineage`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    error_message_run,
    nominal_time_run,
    output_statistics_output_dataset,
    parent_run,
)
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport

from runwatch.models import Address, AddressLineage, Pipeline, RunStatus
from runwatch.models import Run as RunModel
from runwatch.resolvers.openlineage import MAX_FACET_BYTES
from tests.conftest import Tenant, app_client
from tests.helpers import graphql

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python"
NS = "airflow"
PG = "postgres://db:5432"
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def ol_client(live_url: str, key: str) -> OpenLineageClient:
    base = live_url.replace("ws://", "http://").removesuffix("/graphql")
    config = HttpConfig(url=base, endpoint="api/v1/lineage", timeout=10,
                        auth=ApiKeyTokenProvider({"apiKey": key}),
                        retry={"total": 0})
    return OpenLineageClient(transport=HttpTransport(config))


async def emit(client: OpenLineageClient, event: RunEvent) -> None:
    # The transport is synchronous; the server runs on this event loop.
    await asyncio.to_thread(client.transport.emit, event)


def event(state: RunState, run_id: str, job: str, at: datetime, *, inputs=(), outputs=(),
          facets: dict[str, Any] | None = None) -> RunEvent:
    return RunEvent(eventType=state, eventTime=at.isoformat(),
                    run=Run(runId=run_id, facets=facets or {}),
                    job=Job(namespace=NS, name=job), producer=PRODUCER,
                    inputs=list(inputs), outputs=list(outputs))


async def run_of(run_id: str) -> RunModel:
    return await RunModel.get(openlineage_run_id=run_id)


async def test_job_with_inputs_and_outputs(live_url, client, tenant: Tenant):
    ol = ol_client(live_url, tenant.tokens["report"])
    rid = str(uuid.uuid4())
    src = InputDataset(namespace=PG, name="shop.public.orders")
    out = OutputDataset(namespace=PG, name="shop.mart.daily", outputFacets={
        "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=1234, size=56789)})
    nominal = nominal_time_run.NominalTimeRunFacet(nominalStartTime=T0.isoformat())
    await emit(ol, event(RunState.START, rid, "daily_orders", T0, inputs=[src],
                         outputs=[out], facets={"nominalTime": nominal}))
    run = await run_of(rid)
    assert run.status == RunStatus.RUNNING and run.scheduled_at == T0
    await emit(ol, event(RunState.COMPLETE, rid, "daily_orders", T0 + timedelta(minutes=5),
                         inputs=[src], outputs=[out]))
    run = await run_of(rid)
    assert run.status == RunStatus.SUCCEEDED
    assert (run.rows_total, run.bytes, run.duration_seconds) == (1234, 56789, 300)
    pipeline = await Pipeline.get(id=run.pipeline_id)
    assert (pipeline.name, pipeline.namespace, pipeline.kind) == ("daily_orders", NS,
                                                                  "openlineage")
    # GraphQL: the run, and the dataset graph (the Watcher's lineage and OpenLineage's are one)
    data = await graphql(client, tenant, "query($id: ID!) { run(id: $id) { status rowsTotal "
                         "scheduledAt openlineageRunId pipeline { name } } }", id=str(run.id))
    assert data["data"]["run"] == {
        "status": "SUCCEEDED", "rowsTotal": 1234, "scheduledAt": "2026-12-01T10:00:00Z",
        "openlineageRunId": rid, "pipeline": {"name": "daily_orders"}}
    orders = await Address.get(name="shop.public.orders")
    assert orders.namespace == PG
    data = await graphql(client, tenant, "query($id: ID!) { lineage(addressId: $id) { nodes "
                         "{ name } edges { pipeline { name } } } }", id=str(orders.id))
    assert [n["name"] for n in data["data"]["lineage"]["nodes"]] == [
        "shop.public.orders", "shop.mart.daily"]
    assert data["data"]["lineage"]["edges"] == [{"pipeline": {"name": "daily_orders"}}]
    data = await graphql(client, tenant, "query($n: String!) { lineageGraph(nodeId: $n) "
                         "{ id type inEdges { origin } outEdges { destination } } }",
                         n=f"dataset:{PG}:shop.public.orders")
    ids = {n["id"]: n for n in data["data"]["lineageGraph"]}
    assert set(ids) == {f"dataset:{PG}:shop.public.orders", f"job:{NS}:daily_orders",
                        f"dataset:{PG}:shop.mart.daily"}
    assert ids[f"job:{NS}:daily_orders"]["outEdges"] == [
        {"destination": f"dataset:{PG}:shop.mart.daily"}]
    # the Watcher routes see the same addresses; Marquez's read sees the same graph
    r = await client.get("/address", headers=tenant.headers("read"))
    assert {a["name"] for a in r.json()} >= {"shop.public.orders", "shop.mart.daily"}
    r = await client.get("/api/v1/lineage", params={"nodeId": f"job:{NS}:daily_orders",
                                                    "depth": 1},
                         headers=tenant.headers("read"))
    assert r.status_code == 200, r.text
    graph = {n["id"]: n for n in r.json()["graph"]}
    assert graph[f"job:{NS}:daily_orders"]["inEdges"] == [
        {"origin": f"dataset:{PG}:shop.public.orders", "destination": f"job:{NS}:daily_orders"}]
    assert graph[f"job:{NS}:daily_orders"]["type"] == "JOB"


async def test_failure_parent_out_of_order_and_duplicates(live_url, client, tenant: Tenant):
    ol = ol_client(live_url, tenant.tokens["report"])
    parent, child, late = (str(uuid.uuid4()) for _ in range(3))
    await emit(ol, event(RunState.START, parent, "dag", T0))
    facet = parent_run.ParentRunFacet(run=parent_run.Run(runId=parent),
                                      job=parent_run.Job(namespace=NS, name="dag"))
    await emit(ol, event(RunState.START, child, "dag.task", T0, facets={"parent": facet}))
    boom = error_message_run.ErrorMessageRunFacet(message="division by zero",
                                                  programmingLanguage="python")
    fail = event(RunState.FAIL, child, "dag.task", T0 + timedelta(seconds=30),
                 facets={"errorMessage": boom})
    await emit(ol, fail)
    await emit(ol, fail)  # a duplicate: a no-op, still 201
    stored = await run_of(child)
    assert stored.status == RunStatus.FAILED and stored.error == "division by zero"
    assert stored.parent_id == (await run_of(parent)).id
    data = await graphql(client, tenant, "query($id: ID!) { run(id: $id) { error parent "
                         "{ id } } }", id=str(stored.id))
    assert data["data"]["run"] == {"error": "division by zero",
                                   "parent": {"id": str((await run_of(parent)).id)}}
    # a different end of a finished run is the lifecycle's conflict (409, not retried)
    r = await client.post("/api/v1/lineage", headers=tenant.headers("report"), json={
        "eventType": "COMPLETE", "eventTime": T0.isoformat(), "producer": PRODUCER,
        "run": {"runId": child}, "job": {"namespace": NS, "name": "dag.task"}})
    assert r.status_code == 409 and r.json()["code"] == 409
    # COMPLETE before START: opened and finished at once; the late START only fills the start
    await emit(ol, event(RunState.COMPLETE, late, "dag.other", T0 + timedelta(minutes=2)))
    assert (await run_of(late)).status == RunStatus.SUCCEEDED
    await emit(ol, event(RunState.START, late, "dag.other", T0))
    stored = await run_of(late)
    assert stored.status == RunStatus.SUCCEEDED and stored.started_at == T0
    assert await RunModel.filter(openlineage_run_id=late).count() == 1


def raw_event(version: str, run_id: str, **more: Any) -> dict[str, Any]:
    return {"eventType": "START", "eventTime": T0.isoformat(), "producer": PRODUCER,
            "schemaURL": f"https://openlineage.io/spec/{version}/OpenLineage.json"
                         "#/definitions/RunEvent",
            "run": {"runId": run_id, "facets": more.pop("facets", {})},
            "job": {"namespace": NS, "name": "raw"},
            "inputs": [], "outputs": [], **more}


@pytest.mark.parametrize("version", ["2-0-2", "1-0-5"])
async def test_both_spec_versions(client, tenant: Tenant, version):
    rid = str(uuid.uuid4())
    r = await client.post("/api/v1/lineage", json=raw_event(version, rid),
                          headers=tenant.headers("report"))
    assert r.status_code == 201 and r.content == b""
    assert (await run_of(rid)).status == RunStatus.RUNNING


async def test_error_shapes(client, tenant: Tenant):
    h = tenant.headers("report")
    r = await client.post("/api/v1/lineage", content=b"{not json", headers=h)
    assert (r.status_code, r.json()) == (400, {"code": 400, "message": "Unable to process JSON"})
    r = await client.post("/api/v1/lineage", json={"eventType": "START"}, headers=h)
    assert r.status_code == 422
    assert "eventTime must not be null" in r.json()["errors"]
    assert "run must not be null" in r.json()["errors"]
    r = await client.post("/api/v1/lineage", json=raw_event("2-0-2", "not-a-uuid"), headers=h)
    assert (r.status_code, r.json()) == (422, {"errors": ["run.runId must be a UUID"]})
    r = await client.post("/api/v1/lineage", json=raw_event("2-0-2", str(uuid.uuid4())))
    assert r.status_code == 401 and r.json()["code"] == 401
    r = await client.post("/api/v1/lineage", json=raw_event("2-0-2", str(uuid.uuid4())),
                          headers=tenant.headers("read"))
    assert r.status_code == 403 and r.json()["code"] == 403
    r = await client.get("/api/v1/lineage", params={"nodeId": "nonsense"},
                         headers=tenant.headers("read"))
    assert r.status_code == 422 and r.json()["errors"]
    r = await client.get("/api/v1/lineage", params={"nodeId": "job:x:y"},
                         headers=tenant.headers("read"))
    assert r.status_code == 404 and r.json()["code"] == 404


async def test_tenancy(live_url, client, tenant: Tenant, other_tenant: Tenant):
    ol = ol_client(live_url, tenant.tokens["report"])
    rid = str(uuid.uuid4())
    await emit(ol, event(RunState.START, rid, "secret_job", T0,
                         inputs=[InputDataset(namespace=PG, name="a.b.c")],
                         outputs=[OutputDataset(namespace=PG, name="a.b.d")]))
    r = await client.get("/api/v1/lineage", params={"nodeId": f"job:{NS}:secret_job"},
                         headers=other_tenant.headers("read"))
    assert r.status_code == 404
    data = await graphql(client, other_tenant, "query($n: String!) { lineageGraph(nodeId: $n) "
                         "{ id } }", n=f"dataset:{PG}:a.b.c")
    assert data["data"]["lineageGraph"] is None
    # the same run id from another organisation is another run
    other = ol_client(live_url, other_tenant.tokens["report"])
    await emit(other, event(RunState.START, rid, "secret_job", T0))
    assert await RunModel.filter(openlineage_run_id=rid).count() == 2
    assert await AddressLineage.filter(organisation_id=other_tenant.org_id).count() == 0


async def test_unknown_facets_are_kept_up_to_the_cap(client, tenant: Tenant):
    rid = str(uuid.uuid4())
    facets = {"spark_version": {"_producer": PRODUCER, "version": "3.5.1"},
              "huge": {"blob": "x" * (MAX_FACET_BYTES + 10)}}
    r = await client.post("/api/v1/lineage", json=raw_event("2-0-2", rid, facets=facets),
                          headers=tenant.headers("report"))
    assert r.status_code == 201, r.text
    kept = (await run_of(rid)).openlineage_facets
    assert kept["run.spark_version"]["version"] == "3.5.1"
    assert "run.huge" not in kept and kept["_dropped"] == ["run.huge"]


async def test_limits_answer_in_marquez_shape(settings, tenant: Tenant):
    body = raw_event("2-0-2", str(uuid.uuid4()))
    async with app_client(settings, rate_limit_per_minute=1, max_body_bytes=2048) as c:
        h = tenant.headers("report")
        r = await c.post("/api/v1/lineage", json={**body, "pad": "x" * 4096}, headers=h)
        assert r.status_code == 413 and r.json()["code"] == 413, r.text
        r = await c.post("/api/v1/lineage", json=body, headers=h)
        assert r.status_code == 429 and r.json()["code"] == 429 and "Retry-After" in r.headers


async def test_concurrent_replays_make_one_run(client, tenant: Tenant):
    rid = str(uuid.uuid4())
    body = raw_event("2-0-2", rid, inputs=[{"namespace": PG, "name": "c.d.in"}],
                     outputs=[{"namespace": PG, "name": "c.d.out"}])
    answers = await asyncio.gather(*(client.post(
        "/api/v1/lineage", json=body, headers=tenant.headers("report")) for _ in range(6)))
    assert [r.status_code for r in answers] == [201] * 6, [r.text for r in answers]
    assert await RunModel.filter(openlineage_run_id=rid).count() == 1
    assert await AddressLineage.all().count() == 1


async def test_other_events_draw_lineage_without_a_run(client, tenant: Tenant):
    rid = str(uuid.uuid4())
    body = {**raw_event("1-0-5", rid, inputs=[{"namespace": "s3://bucket", "name": "raw/x"}],
                        outputs=[{"namespace": "s3://bucket", "name": "clean/x"}]),
            "eventType": "OTHER"}
    r = await client.post("/api/v1/lineage", json=body, headers=tenant.headers("report"))
    assert r.status_code == 201, r.text
    assert await RunModel.filter(openlineage_run_id=rid).count() == 0
    r = await client.get("/api/v1/lineage", params={"nodeId": "dataset:s3://bucket:raw/x",
                                                    "depth": 2},
                         headers=tenant.headers("read"))
    assert {n["id"] for n in r.json()["graph"]} == {
        "dataset:s3://bucket:raw/x", f"job:{NS}:raw", "dataset:s3://bucket:clean/x"}
    assert (await Address.get(name="raw/x")).namespace == "s3://bucket"
