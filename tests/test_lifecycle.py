"""The one run lifecycle, driven through every surface that can finish a run: the warehouse
report (REST), GraphQL `reportRun`, an ELT PATCH by a person or service, an ELT PATCH by the
claiming gateway, and the Watcher end. Each must give the same stored outcome for the same
transition: the state machine's answer, the claim rule, the roll-ups and the webhook written
exactly once, and the live signal."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from runwatch.models import Pipeline, PipelineHourlyStats, Run, RunStatus, WebhookDelivery
from runwatch.resolvers.webhooks import set_endpoint
from runwatch.settings import Settings
from tests.conftest import Tenant
from tests.elt_helpers import Agent, admin_of, agent_patch, claim, make_gateway

Finish = Callable[[httpx.AsyncClient, Tenant, Agent, int], Awaitable[httpx.Response]]


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _warehouse(client: httpx.AsyncClient, tenant: Tenant, gateway: Agent,
                     run_id: int) -> httpx.Response:
    run = await Run.get(id=run_id).prefetch_related("pipeline")
    return await client.patch(
        f"{tenant.prefix}/{run.pipeline.connection_id}/metrics/{run_id}/",  # type: ignore[attr-defined]
        json={"completed_at": _now(), "events_delivered": 10}, headers=tenant.headers("report"))


REPORT = """mutation($i: ReportRunInput!) { reportRun(input: $i) {
  __typename ... on Error { message } ... on ReportRunSuccess { changed run { status } } } }"""


async def _graphql(client: httpx.AsyncClient, tenant: Tenant, gateway: Agent,
                   run_id: int) -> httpx.Response:
    return await client.post("/graphql", headers=tenant.headers("report"), json={
        "query": REPORT, "variables": {"i": {
            "runId": str(run_id), "completedAt": _now(), "eventsDelivered": 10}}})


async def _elt(client: httpx.AsyncClient, tenant: Tenant, gateway: Agent,
               run_id: int) -> httpx.Response:
    return await client.patch(f"/api/elt/runs/{run_id}", json={"status": "succeeded"},
                              headers=tenant.headers("write"))


async def _agent(client: httpx.AsyncClient, tenant: Tenant, gateway: Agent,
                 run_id: int) -> httpx.Response:
    return await agent_patch(client, gateway, str(run_id), {"status": "succeeded"})


async def _watcher(client: httpx.AsyncClient, tenant: Tenant, gateway: Agent,
                   run_id: int) -> httpx.Response:
    return await client.post("/end_pipeline_execution", headers=tenant.headers("write"), json={
        "id": run_id, "end_date": _now(), "completed_successfully": True})


SURFACES: dict[str, Finish] = {
    "warehouse": _warehouse, "graphql": _graphql, "elt": _elt, "agent": _agent,
    "watcher": _watcher,
}


def outcome(r: httpx.Response) -> str:
    """What a surface answered, in the lifecycle's words: done, or conflict."""
    if r.status_code in (200, 201, 204):
        if r.headers.get("content-type", "").startswith("application/json") and r.content:
            data = r.json().get("data")
            if data is not None:
                result = data["reportRun"]
                return "done" if result["__typename"] == "ReportRunSuccess" else (
                    "conflict" if result["__typename"] == "ConflictError" else result["__typename"])
        return "done"
    return "conflict" if r.status_code == 409 else f"HTTP {r.status_code}: {r.text}"


@pytest.fixture
async def world(tenant: Tenant, cid: int) -> dict[str, Any]:
    """The connection's delivery pipeline (every surface can reach its runs), a gateway, and
    an organisation webhook endpoint (so that `on_terminal` writes one delivery per run)."""
    pipeline = await Pipeline.get(connection_id=cid, kind="delivery")
    await set_endpoint(caller=admin_of(tenant), url="http://127.0.0.1:9/hook",
                       allow_private=True)
    return {"pipeline": pipeline, "gateway": await make_gateway(tenant)}


async def pending_run(client: httpx.AsyncClient, tenant: Tenant, pipeline: Pipeline) -> int:
    r = await client.post("/api/elt/runs", json={"pipelineId": str(pipeline.id),
                                                 "status": "pending"},
                          headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    return int(r.json()["run"]["id"])


async def token_run(client: httpx.AsyncClient, tenant: Tenant, cid: int) -> int:
    """A running run started by a loader's recurring task (claimed by its token)."""
    r = await client.post(f"{tenant.prefix}/{cid}/metrics/", json={},
                          headers=tenant.headers("report"))
    assert r.status_code == 201, r.text
    return int(r.json()["run_id"])


async def gateway_run(client: httpx.AsyncClient, tenant: Tenant, pipeline: Pipeline,
                      gateway: Agent) -> int:
    run_id = await pending_run(client, tenant, pipeline)
    await claim(client, gateway, str(run_id))
    return run_id


async def stored(run_id: int) -> tuple[str, bool, int, int]:
    """Status, whether it has finished, its webhook deliveries, its pipeline's roll-ups."""
    run = await Run.get(id=run_id)
    deliveries = await WebhookDelivery.filter(run_id=run_id).count()
    rolled = sum(s.runs_succeeded + s.runs_failed for s in
                 await PipelineHourlyStats.filter(pipeline_id=run.pipeline_id))  # type: ignore[attr-defined]
    return run.status.value, run.finished_at is not None, deliveries, rolled


@pytest.mark.parametrize("surface", list(SURFACES))
async def test_a_pending_run_cannot_be_finished_on_any_surface(client, tenant, world, surface):
    """The state machine: pending -> running | cancelled. The same answer everywhere (the
    warehouse report and GraphQL `reportRun` used to finish a pending run directly)."""
    run_id = await pending_run(client, tenant, world["pipeline"])
    r = await SURFACES[surface](client, tenant, world["gateway"], run_id)
    assert outcome(r) == "conflict", (surface, r.text)
    assert await stored(run_id) == ("pending", False, 0, 0)


@pytest.mark.parametrize("surface", list(SURFACES))
async def test_finishing_a_running_run_stores_the_same_outcome_on_every_surface(
        client, tenant, cid, world, surface):
    runner = ("gateway" if surface == "agent" else "token")
    run_id = (await gateway_run(client, tenant, world["pipeline"], world["gateway"])
              if runner == "gateway" else await token_run(client, tenant, cid))
    finish = SURFACES[surface]
    r = await finish(client, tenant, world["gateway"], run_id)
    assert outcome(r) == "done", (surface, r.text)
    assert await stored(run_id) == ("succeeded", True, 1, 1)
    # A replay changes nothing (no second roll-up, no second webhook).
    if surface not in ("warehouse", "graphql", "watcher"):  # their replay is the same body
        r = await finish(client, tenant, world["gateway"], run_id)
        assert outcome(r) == "done", (surface, r.text)
    assert await stored(run_id) == ("succeeded", True, 1, 1)


@pytest.mark.parametrize("surface", ["warehouse", "graphql", "elt", "watcher"])
async def test_a_gateway_claimed_run_moves_only_through_its_gateway(
        client, tenant, world, surface):
    """Issue "Security II" #11: a `report` token could end a gateway's run through the
    Watcher end, a person through an ELT PATCH."""
    run_id = await gateway_run(client, tenant, world["pipeline"], world["gateway"])
    r = await SURFACES[surface](client, tenant, world["gateway"], run_id)
    assert outcome(r) == "conflict", (surface, r.text)
    if r.status_code == 409 and surface == "elt":
        assert r.json() == {"error": "Already claimed by another gateway"}
    assert await stored(run_id) == ("running", False, 0, 0)
    # the claimant finishes it
    assert outcome(await _agent(client, tenant, world["gateway"], run_id)) == "done"
    assert await stored(run_id) == ("succeeded", True, 1, 1)


async def test_an_operator_may_cancel_a_claimed_run(client, tenant, world):
    run_id = await gateway_run(client, tenant, world["pipeline"], world["gateway"])
    r = await client.patch(f"/api/elt/runs/{run_id}", json={"status": "cancelled"},
                           headers=tenant.headers("write"))
    assert r.status_code == 200, r.text
    assert r.json()["run"]["cancel"] is True
    assert await stored(run_id) == ("cancelled", True, 1, 0)  # roll-ups count outcomes
    # and the gateway is told to stop on its next call
    r = await agent_patch(client, world["gateway"], str(run_id), {"appendLog": {"message": "x"}})
    assert r.json()["cancel"] is True


async def test_a_gateway_cannot_finish_a_run_a_managed_worker_claimed(client, tenant, cid, world):
    """Issue "Security II" #11: a gateway's `failed` on a worker's run answered 200."""
    run_id = await token_run(client, tenant, cid)
    r = await agent_patch(client, world["gateway"], str(run_id), {"status": "failed"})
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "Already claimed by a managed worker"}
    assert await stored(run_id) == ("running", False, 0, 0)


async def test_a_second_gateway_cannot_claim_or_finish(client, tenant, world):
    run_id = await gateway_run(client, tenant, world["pipeline"], world["gateway"])
    other = await make_gateway(tenant, "gw-2")
    for body in ({"status": "running"}, {"status": "failed"}):
        r = await agent_patch(client, other, str(run_id), body)
        assert (r.status_code, r.json()) == (409, {"error": "Already claimed by another gateway"})
    assert await stored(run_id) == ("running", False, 0, 0)


# ----------------------------------------------------------------------------------------------
# the live signal: a change reaches a subscription at once, not at the next poll


@contextlib.contextmanager
def slow_poll(settings: Settings, seconds: float):
    """The subscriptions' safety poll, made slower than the test's patience (Settings is
    frozen: the one shared instance is changed in place and restored)."""
    before = settings.live_poll_seconds
    object.__setattr__(settings, "live_poll_seconds", seconds)
    try:
        yield
    finally:
        object.__setattr__(settings, "live_poll_seconds", before)


@pytest.mark.parametrize("surface", ["warehouse", "graphql", "watcher", "elt"])
async def test_every_finish_reaches_a_live_subscription_without_a_poll(
        client, tenant, cid, settings, live_url, world, surface):
    run_id = await token_run(client, tenant, cid)
    query = "subscription($id: ID!) { runUpdates(id: $id) { run { status } } }"
    with slow_poll(settings, 60.0):
        async with connect(live_url, subprotocols=["graphql-transport-ws"],
                           open_timeout=5) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {
                "Authorization": f"Bearer {tenant.tokens['read']}"}}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": query, "variables": {"id": str(run_id)}}}))
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert first["payload"]["data"]["runUpdates"]["run"]["status"] == "RUNNING"
            r = await SURFACES[surface](client, tenant, world["gateway"], run_id)
            assert outcome(r) == "done", r.text
            update = json.loads(await asyncio.wait_for(ws.recv(), 5))  # the poll is 60 s
            assert update["payload"]["data"]["runUpdates"]["run"]["status"] == "SUCCEEDED"
    assert (await Run.get(id=run_id)).status == RunStatus.SUCCEEDED
