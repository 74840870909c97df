"""One path per behaviour: each rule here is enforced once, in the domain, and every surface
that has the case (warehouse REST, ELT REST, GraphQL, the Watcher REST, OpenLineage, the
WebSocket, the workers) is driven through the same case and must answer the same way, each in
its own error shape."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from runwatch.models import Run, RunStatus
from runwatch.resolvers.runs import MAX_ERROR_CHARS, clean_error
from runwatch.services.reaper import reap_stuck_runs
from tests.conftest import Tenant
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
