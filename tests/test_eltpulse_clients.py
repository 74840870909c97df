"""eltPulse's real clients, replayed: each call with the exact body the client sends, and on
each answer exactly the fields the client reads.

- The stock gateway (eltpulsehq/integrations, `gateway/src/index.mjs`): manifest, heartbeat,
  poll (`?status=pending&limit=5`), the cancel pre-check, the claim, batched log flushes, the
  final status, the error summary after a failed exit; `cancel` on every answer.
- Its per-run worker (`worker/src/index.mjs`): `GET /api/agent/runs/:id` -> `{run, cancel}`
  and `run.pipeline.{tool, pipelineCode, configYaml, workspaceYaml, sourceConfiguration}`.
- datapulse's web app: pipelines created with its body, runs created with
  `targetAgentTokenId`, the Runs page's fields, the webhook settings page, backfills.

A client throws on any non-2xx answer (`if (!res.ok) throw`), so every call here asserts a
2xx before reading the fields.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from runwatch.models import Run
from runwatch.resolvers import gateways as gateways_api
from runwatch.resolvers.caller import Caller
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.webhooks import SUMMARY_GRACE
from runwatch.services.reaper import reap_stuck_runs
from runwatch.services.webhooks import Sender
from runwatch.settings import Settings
from tests.conftest import Tenant, app_client
from tests.elt_helpers import Agent, make_gateway, when
from tests.webhook_receiver import Receiver

ELT = "/api/elt"
AGENT = "/api/agent"
HOOK = "http://127.0.0.1:8999/hooks/eltpulse"

# A pipeline definition with its code, as a gateway runs it (eltPulse's own server generates
# the code from `tool: "auto"`; runwatch does not: see test_the_web_apps_new_pipeline_bodies).
DATAPULSE_PIPELINE = {
    "name": "github-issues",
    "sourceType": "github",
    "destinationType": "duckdb",
    "tool": "dlt",
    "sourceConfiguration": {"GITHUB_OWNER": "acme", "GITHUB_REPO": "api", "per_page": 100,
                            # what the builder saves for a date-sliced pipeline
                            "_partitionConfig": {"type": "date", "column": "created_day"}},
    "pipelineCode": "import dlt\nprint('loading issues')\n",
    "configYaml": "source:\n  github:\n    owner: acme\n",
    "workspaceYaml": "[runtime]\nlog_level = 'INFO'\n",
    "groupName": "product",
    "enabled": True,
}
# What the gateway sends (gateway/src/index.mjs).
GATEWAY_HEARTBEAT = {"version": "eltpulse-gateway/0.2.0",
                     "labels": {"runtime": "node", "package": "integrations/gateway"}}
CLAIM = {"status": "running",
         "appendLog": {"level": "info",
                       "message": "eltpulse-gateway: run claimed, starting execution"}}


async def ok(r: httpx.Response) -> dict[str, Any]:
    """What a client does with an answer: throw unless 2xx, else parse the JSON."""
    assert 200 <= r.status_code < 300, (r.request.method, r.request.url.path, r.text)
    return r.json()


@pytest.fixture
async def gateway(tenant: Tenant) -> Agent:
    return await make_gateway(tenant, "gw-1")


@pytest.fixture
async def pipeline(client, tenant) -> dict[str, Any]:
    body = await ok(await client.post(f"{ELT}/pipelines", json=DATAPULSE_PIPELINE,
                                      headers=tenant.headers("read,write,report")))
    return body["pipeline"]


async def new_run(client, tenant, pipeline, **extra: Any) -> dict[str, Any]:
    """The web app's "Run" (datapulse `trigger-pipeline-run.ts`): `status: "pending"`, the
    environment, `triggeredBy: "manual"` unless a `partitionValue` is sent (then none), and
    `targetAgentTokenId` (null: any gateway). `extra` adds to or overrides it."""
    body: dict[str, Any] = {"pipelineId": pipeline["id"], "environment": "default",
                            "status": "pending", "targetAgentTokenId": None}
    if "partitionValue" not in extra:
        body["triggeredBy"] = "manual"
    body.update(extra)
    r = await client.post(f"{ELT}/runs", json=body, headers=tenant.headers("read,write,report"))
    assert r.status_code == 201, r.text
    return r.json()["run"]


def gateway_caller(agent: Agent) -> Caller:
    return Caller(organisation_id=agent.org_id, scopes=frozenset(), gateway_id=agent.id)


# ----------------------------------------------------------------------------------------------
# the stock gateway


async def test_manifest_as_the_gateway_reads_it(client, gateway, pipeline):
    m = await ok(await client.get(f"{AGENT}/manifest", headers=gateway.headers()))
    billing = m["billing"]
    assert isinstance(m["version"], int)
    assert (billing["runsPollIntervalSeconds"], billing["heartbeatIntervalSeconds"]) == (5, 30)
    # datapulse's copy also reads these
    assert m["workloads"]["monitors"] == [] and isinstance(m["executorHints"], dict)
    assert m["organization"]["id"] == str(gateway.org_id)
    [p] = m["pipelines"]
    assert {k: p[k] for k in ("id", "name", "tool", "enabled", "sourceType",
                              "destinationType", "groupName")} == {
        "id": pipeline["id"], "name": "github-issues", "tool": "dlt", "enabled": True,
        "sourceType": "github", "destinationType": "duckdb", "groupName": "product"}
    when(p["updatedAt"])
    # the heartbeat the gateway sends right after
    await ok(await client.post(f"{AGENT}/heartbeat", json=GATEWAY_HEARTBEAT,
                               headers=gateway.headers()))


async def test_the_gateway_runs_a_pending_run_to_success(client, tenant, gateway, pipeline):
    run = await new_run(client, tenant, pipeline, partitionColumn="day",
                        partitionValue="2026-01-31")
    # pollRunsOnce
    data = await ok(await client.get(f"{AGENT}/runs?status=pending&limit=5",
                                     headers=gateway.headers()))
    [polled] = data["runs"]
    assert polled["id"] == run["id"]
    p = polled["pipeline"]  # executeRun reads exactly these
    assert p == {"id": pipeline["id"], "name": "github-issues", "tool": "dlt",
                 "sourceType": "github", "destinationType": "duckdb",
                 "sourceConfiguration": DATAPULSE_PIPELINE["sourceConfiguration"],
                 "pipelineCode": DATAPULSE_PIPELINE["pipelineCode"],
                 "configYaml": DATAPULSE_PIPELINE["configYaml"],
                 "workspaceYaml": DATAPULSE_PIPELINE["workspaceYaml"]}
    assert (polled["partitionValue"], polled["partitionColumn"]) == ("2026-01-31", "day")
    # the cancel pre-check, then the claim
    check = await ok(await client.get(f"{AGENT}/runs/{run['id']}", headers=gateway.headers()))
    assert check["cancel"] is False
    claimed = await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                          headers=gateway.headers()))
    assert claimed["cancel"] is False
    # batched log flushes (lines joined with "\n"), then the final status with the last batch
    for batch in (["Extracting issues", "page 1"], ["page 2"]):
        resp = await ok(await client.patch(
            f"{AGENT}/runs/{run['id']}",
            json={"appendLog": {"level": "info", "message": "\n".join(batch)}},
            headers=gateway.headers()))
        assert resp["cancel"] is False
    resp = await ok(await client.patch(
        f"{AGENT}/runs/{run['id']}",
        json={"appendLog": {"level": "info", "message": "done"}, "status": "succeeded"},
        headers=gateway.headers()))
    assert resp["cancel"] is False
    final = await ok(await client.get(f"{ELT}/runs/{run['id']}", headers=tenant.headers("read")))
    assert final["run"]["status"] == "succeeded"
    assert [e["message"] for e in final["run"]["logEntries"]] == [
        CLAIM["appendLog"]["message"], "Extracting issues\npage 1", "page 2", "done"]


async def test_a_failed_exit_then_its_error_summary(client, tenant, gateway, pipeline):
    run = await new_run(client, tenant, pipeline)
    await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                headers=gateway.headers()))
    await ok(await client.patch(
        f"{AGENT}/runs/{run['id']}",
        json={"appendLog": {"level": "info", "message": "[stderr] Traceback"},
              "status": "failed"}, headers=gateway.headers()))
    await ok(await client.patch(f"{AGENT}/runs/{run['id']}",
                                json={"errorSummary": "Process exited with code 1"},
                                headers=gateway.headers()))
    body = (await ok(await client.get(f"{ELT}/runs/{run['id']}",
                                      headers=tenant.headers("read"))))["run"]
    assert (body["status"], body["errorSummary"]) == ("failed", "Process exited with code 1")


async def test_the_gateways_execution_error_path(client, tenant, gateway, pipeline):
    run = await new_run(client, tenant, pipeline)
    await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                headers=gateway.headers()))
    await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json={
        "status": "failed",
        "appendLog": {"level": "error", "message": "Gateway execution error: spawn ENOENT"},
        "errorSummary": "spawn ENOENT"}, headers=gateway.headers()))


async def test_cancel_mid_run_stops_the_gateway_and_keeps_its_lines(client, tenant, gateway,
                                                                    pipeline):
    run = await new_run(client, tenant, pipeline)
    await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                headers=gateway.headers()))
    await ok(await client.patch(f"{ELT}/runs/{run['id']}", json={"status": "cancelled"},
                                headers=tenant.headers("write")))
    resp = await ok(await client.patch(
        f"{AGENT}/runs/{run['id']}", json={"appendLog": {"level": "info", "message": "row 9"}},
        headers=gateway.headers()))
    assert resp["cancel"] is True  # the gateway kills its process
    # its final flush: the remaining lines with status "cancelled" (a stray "succeeded" or
    # "failed" from a process that exited meanwhile answers the same way)
    for status in ("cancelled", "failed"):
        resp = await ok(await client.patch(
            f"{AGENT}/runs/{run['id']}",
            json={"appendLog": {"level": "info", "message": f"[stderr] killed ({status})"},
                  "status": status}, headers=gateway.headers()))
        assert resp["cancel"] is True
    body = (await ok(await client.get(f"{ELT}/runs/{run['id']}",
                                      headers=tenant.headers("read"))))["run"]
    assert body["status"] == "cancelled"
    assert [e["message"] for e in body["logEntries"]][1:] == [
        "row 9", "[stderr] killed (cancelled)", "[stderr] killed (failed)"]


async def test_a_run_cancelled_while_pending_is_skipped(client, tenant, gateway, pipeline):
    run = await new_run(client, tenant, pipeline)
    polled = (await ok(await client.get(f"{AGENT}/runs?status=pending&limit=5",
                                        headers=gateway.headers())))["runs"]
    await ok(await client.patch(f"{ELT}/runs/{run['id']}", json={"status": "cancelled"},
                                headers=tenant.headers("write")))
    check = await ok(await client.get(f"{AGENT}/runs/{polled[0]['id']}",
                                      headers=gateway.headers()))
    assert check["cancel"] is True
    # a claim racing the cancel: 200 with cancel, nothing claimed
    claimed = await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                          headers=gateway.headers()))
    assert claimed["cancel"] is True and claimed["run"]["status"] == "cancelled"
    assert claimed["run"]["gatewayId"] is None


async def test_a_timed_out_run_tells_its_gateway(client, tenant, gateway, pipeline):
    run = await new_run(client, tenant, pipeline)
    await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                headers=gateway.headers()))
    row = await Run.get(id=int(run["id"]))
    assert await reap_stuck_runs(now=row.started_at + timedelta(hours=3)) == 1
    resp = await ok(await client.patch(
        f"{AGENT}/runs/{run['id']}", json={"appendLog": {"level": "info", "message": "late"}},
        headers=gateway.headers()))
    assert resp["cancel"] is True
    resp = await ok(await client.patch(
        f"{AGENT}/runs/{run['id']}",
        json={"appendLog": {"level": "info", "message": "last"}, "status": "succeeded"},
        headers=gateway.headers()))
    # eltPulse's five statuses: a timed-out run is failed on this wire, saying why
    assert resp["cancel"] is True and resp["run"]["status"] == "failed"
    assert resp["run"]["timedOut"] is True and resp["run"]["errorSummary"]
    body = (await ok(await client.get(f"{ELT}/runs/{run['id']}",
                                      headers=tenant.headers("read"))))["run"]
    assert [e["message"] for e in body["logEntries"]][1:] == ["late", "last"]


async def test_the_web_app_sees_a_timed_out_run_as_failed(client, tenant, gateway, pipeline):
    """The web app knows five statuses: its run panel polls every status but succeeded,
    failed and cancelled as active (a `timed_out` run polled forever and kept "Run now"
    disabled), and its filter offers only the five. The Runs page's `status=failed` finds
    a timed-out run, as do the gateway's lists; `timed_out` alone still names only those."""
    timed_out = await new_run(client, tenant, pipeline)
    await ok(await client.patch(f"{AGENT}/runs/{timed_out['id']}", json=CLAIM,
                                headers=gateway.headers()))
    row = await Run.get(id=int(timed_out["id"]))
    assert await reap_stuck_runs(now=row.started_at + timedelta(hours=25)) == 1
    failed, running = await new_run(client, tenant, pipeline), await new_run(
        client, tenant, pipeline)
    for run in (failed, running):
        await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                    headers=gateway.headers()))
    await ok(await client.patch(f"{AGENT}/runs/{failed['id']}", json={
        "status": "failed", "errorSummary": "boom"}, headers=gateway.headers()))
    read = tenant.headers("read")

    async def listed(query: str) -> dict[str, dict[str, Any]]:
        body = await ok(await client.get(f"{ELT}/runs?{query}", headers=read))
        return {r["id"]: r for r in body["runs"]}

    everything = await listed("limit=50")
    assert {r["status"] for r in everything.values()} <= {
        "pending", "running", "succeeded", "failed", "cancelled"}
    shown = everything[timed_out["id"]]
    assert (shown["status"], shown["timedOut"]) == ("failed", True)
    assert shown["finishedAt"] and shown["errorSummary"]
    assert everything[failed["id"]]["timedOut"] is False
    assert set(await listed("status=failed")) == {timed_out["id"], failed["id"]}
    assert set(await listed("status=succeeded,failed")) == {timed_out["id"], failed["id"]}
    assert set(await listed("status=timed_out")) == {timed_out["id"]}
    assert running["id"] in await listed("status=running")
    one = await ok(await client.get(f"{ELT}/runs/{timed_out['id']}", headers=read))
    assert one["run"]["status"] == "failed"


async def test_another_gateway_loses_the_claim(client, tenant, gateway, pipeline):
    other = await make_gateway(tenant, "gw-2")
    run = await new_run(client, tenant, pipeline)
    await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                headers=gateway.headers()))
    r = await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM, headers=other.headers())
    assert r.status_code == 409 and "Already claimed" in r.json()["error"]


async def replica_poll_and_claim(client, gateway: Agent) -> httpx.Response | None:
    """One replica's pollRunsOnce for one run: poll, the cancel pre-check, the claim (the
    gateway's `api()` throws on a non-2xx; the caller reads `err.detail.error`)."""
    polled = (await ok(await client.get(f"{AGENT}/runs?status=pending&limit=5",
                                        headers=gateway.headers())))["runs"]
    if not polled:
        return None
    run_id = polled[0]["id"]
    if (await ok(await client.get(f"{AGENT}/runs/{run_id}",
                                  headers=gateway.headers())))["cancel"]:
        return None
    return await client.patch(f"{AGENT}/runs/{run_id}", json=CLAIM, headers=gateway.headers())


def one_replica_won(responses: list[httpx.Response]) -> dict[str, Any]:
    """Exactly one claim answered 2xx; every other one is the 409 the gateway recognises."""
    won = [r for r in responses if 200 <= r.status_code < 300]
    assert len(won) == 1, [(r.status_code, r.text) for r in responses]
    for r in responses:
        if r is not won[0]:
            detail = r.json()
            assert r.status_code == 409 and isinstance(detail["error"], str), r.text
            assert "Already claimed" in detail["error"]
            assert detail == {"error": "Already claimed by another gateway"}
    assert won[0].json()["cancel"] is False
    return won[0].json()


async def claim_lines(client, tenant, run_id: str) -> list[str]:
    body = (await ok(await client.get(f"{ELT}/runs/{run_id}",
                                      headers=tenant.headers("read"))))["run"]
    return [e["message"] for e in body["logEntries"] if e["message"] == CLAIM["appendLog"][
        "message"]]


async def test_replicas_of_one_gateway_claim_a_run_once(client, tenant, gateway, pipeline):
    """Replicas share one token (gateways/kubernetes/deployment.yaml's Secret, a rolling
    update's two pods): both poll the run before either claims it; the second claim is 409,
    not a second 200, so the pipeline runs once."""
    run = await new_run(client, tenant, pipeline)
    first = await replica_poll_and_claim(client, gateway)
    polled = (await ok(await client.get(f"{AGENT}/runs?status=pending&limit=5",
                                        headers=gateway.headers())))["runs"]
    assert polled == []  # a later poll no longer offers it
    # the other replica polled before the claim: it still claims the run it was offered
    second = await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                headers=gateway.headers())
    assert first is not None
    won = one_replica_won([first, second])
    assert won["run"]["gatewayId"] == str(gateway.id)
    assert await claim_lines(client, tenant, run["id"]) == [CLAIM["appendLog"]["message"]]


@pytest.mark.parametrize("replicas", [2, 4])
async def test_replicas_racing_for_one_run_one_runs_it(client, tenant, gateway, pipeline,
                                                      replicas):
    """The same, concurrently (on PostgreSQL: concurrent transactions on the run's row)."""
    for _ in range(3):
        run = await new_run(client, tenant, pipeline)
        responses = await asyncio.gather(*(
            client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM, headers=gateway.headers())
            for _ in range(replicas)))
        one_replica_won(list(responses))
        assert await claim_lines(client, tenant, run["id"]) == [CLAIM["appendLog"]["message"]]
        status = (await ok(await client.get(f"{ELT}/runs/{run['id']}",
                                            headers=tenant.headers("read"))))["run"]["status"]
        assert status == "running"


async def test_replicas_polling_together_claim_every_run_once(client, tenant, gateway,
                                                             pipeline):
    runs = {(await new_run(client, tenant, pipeline))["id"] for _ in range(3)}

    async def replica() -> list[str]:
        """pollRunsOnce: every run of the page, claimed in order; a 409 skips it."""
        polled = (await ok(await client.get(f"{AGENT}/runs?status=pending&limit=5",
                                            headers=gateway.headers())))["runs"]
        got = []
        for item in polled:
            r = await client.patch(f"{AGENT}/runs/{item['id']}", json=CLAIM,
                                   headers=gateway.headers())
            if r.status_code == 200:
                got.append(item["id"])
            else:
                assert r.status_code == 409 and "Already claimed" in r.json()["error"], r.text
        return got

    results = await asyncio.gather(*(replica() for _ in range(3)))
    claimed = [run_id for got in results for run_id in got]
    assert sorted(claimed) == sorted(runs)  # each run executed by exactly one replica


@pytest.mark.parametrize("heartbeat,lease", [(30, 15), (5, 15), (2, 10), (600, 120)])
async def test_a_healthy_gateway_is_never_timed_out(settings: Settings, tenant, gateway,
                                                    pipeline, heartbeat, lease):
    """With a short heartbeat and lease configured, the manifest tells the gateway an
    interval it accepts (it clamps to 5..300 s) that fits twice into the lease; a gateway
    heartbeating at it keeps its run. A silent one loses it (the test can fail)."""
    async with app_client(settings, gateway_heartbeat_seconds=heartbeat,
                          gateway_lease_seconds=lease) as c:
        m = await ok(await c.get(f"{AGENT}/manifest", headers=gateway.headers()))
        advertised = m["billing"]["heartbeatIntervalSeconds"]
        # what the stock gateway does with it
        interval = max(5, min(300, advertised))
        assert interval == advertised and 2 * interval <= lease
        run = await new_run(c, tenant, pipeline)
        await ok(await c.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                               headers=gateway.headers()))
    start = (await Run.get(id=int(run["id"]))).started_at
    lease_delta = timedelta(seconds=lease)
    for beat in range(1, 30):
        at = start + timedelta(seconds=interval * beat)
        # just before each heartbeat, and with a second of lateness
        assert await reap_stuck_runs(now=at + timedelta(seconds=1),
                                     gateway_lease=lease_delta) == 0, beat
        await gateways_api.heartbeat(caller=gateway_caller(gateway), now=at)
    silent = start + timedelta(seconds=interval * 29) + lease_delta + timedelta(seconds=1)
    assert await reap_stuck_runs(now=silent, gateway_lease=lease_delta) == 1


# ----------------------------------------------------------------------------------------------
# the per-run worker


async def test_the_per_run_worker_reads_its_run(client, tenant, gateway, pipeline):
    run = await new_run(client, tenant, pipeline, partitionValue="2026-02-01")
    body = await ok(await client.get(f"{AGENT}/runs/{run['id']}", headers=gateway.headers()))
    assert body["cancel"] is False
    p = body["run"]["pipeline"]
    assert (p["tool"], p["pipelineCode"], p["configYaml"], p["workspaceYaml"]) == (
        "dlt", DATAPULSE_PIPELINE["pipelineCode"], DATAPULSE_PIPELINE["configYaml"],
        DATAPULSE_PIPELINE["workspaceYaml"])
    assert p["sourceConfiguration"] == DATAPULSE_PIPELINE["sourceConfiguration"]
    # the column the pipeline saved (trigger-pipeline-run sends the value alone)
    assert (body["run"]["partitionValue"], body["run"]["partitionColumn"]) == (
        "2026-02-01", "created_day")
    # and the pipeline on its own
    one = await ok(await client.get(f"{AGENT}/pipelines/{pipeline['id']}",
                                    headers=gateway.headers()))
    assert one["pipeline"]["configYaml"] == DATAPULSE_PIPELINE["configYaml"]
    assert one["pipeline"]["secrets"] == {}  # no connection


# ----------------------------------------------------------------------------------------------
# datapulse's web app


async def test_the_runs_page(client, tenant, gateway, pipeline):
    targeted = await new_run(client, tenant, pipeline, targetAgentTokenId=str(gateway.id))
    anyone = await new_run(client, tenant, pipeline)
    blank = await new_run(client, tenant, pipeline, correlationId="  ")
    page = (await ok(await client.get(f"{ELT}/runs", headers=tenant.headers("read"))))["runs"]
    assert [r["id"] for r in page] == [blank["id"], anyone["id"], targeted["id"]]
    for r in page:
        assert r["pipeline"]["name"] == "github-issues"
        assert r["pipeline"]["id"] == pipeline["id"]
        assert r["webhookStatus"] is None
        when(r["startedAt"])  # set at creation (never 1970)
        assert str(uuid.UUID(r["correlationId"])) == r["correlationId"]
        assert r["status"] == "pending"
    by_id = {r["id"]: r for r in page}
    assert by_id[targeted["id"]]["targetAgentToken"] == {"id": str(gateway.id), "name": "gw-1"}
    assert by_id[targeted["id"]]["targetGatewayId"] == str(gateway.id)
    assert by_id[targeted["id"]]["ingestionExecutor"] == "customer_agent"
    assert by_id[anyone["id"]]["targetAgentToken"] is None
    assert by_id[anyone["id"]]["ingestionExecutor"] == "unspecified"
    detail = (await ok(await client.get(f"{ELT}/runs/{targeted['id']}",
                                        headers=tenant.headers("read"))))["run"]
    assert detail["pipeline"] == {"id": pipeline["id"], "name": "github-issues"}
    assert detail["targetAgentToken"]["name"] == "gw-1"


# runs-client.tsx telemetrySourceLabel: the values the Runs page labels
RUNS_PAGE_EXECUTORS = {"customer_agent": "Your gateway", "eltpulse_managed": "eltPulse",
                       "customer_control_plane": "App / API", "unspecified": "—"}


async def test_the_runs_page_labels_who_executes_each_run(client, tenant, gateway, pipeline):
    claimed = await new_run(client, tenant, pipeline)
    await ok(await client.patch(f"{AGENT}/runs/{claimed['id']}", json=CLAIM,
                                headers=gateway.headers()))
    targeted = await new_run(client, tenant, pipeline, targetAgentTokenId=str(gateway.id))
    waiting = await new_run(client, tenant, pipeline)
    # a worker or service that reports its own run through the API (the demo's body)
    reported = await new_run(client, tenant, pipeline, status="running")
    cancelled = await new_run(client, tenant, pipeline)
    await ok(await client.patch(f"{ELT}/runs/{cancelled['id']}", json={"status": "cancelled"},
                                headers=tenant.headers("write")))
    page = (await ok(await client.get(f"{ELT}/runs", headers=tenant.headers("read"))))["runs"]
    by_id = {r["id"]: r["ingestionExecutor"] for r in page}
    assert set(by_id.values()) <= set(RUNS_PAGE_EXECUTORS)
    assert {k: RUNS_PAGE_EXECUTORS[by_id[r["id"]]] for k, r in (
        ("claimed", claimed), ("targeted", targeted), ("waiting", waiting),
        ("reported", reported), ("cancelled", cancelled))} == {
        "claimed": "Your gateway", "targeted": "Your gateway", "waiting": "—",
        "reported": "App / API", "cancelled": "—"}
    detail = (await ok(await client.get(f"{ELT}/runs/{claimed['id']}",
                                        headers=tenant.headers("read"))))["run"]
    assert detail["ingestionExecutor"] == "customer_agent"


async def test_the_status_of_a_new_run(client, tenant, gateway, pipeline):
    """The web app's bodies keep their status; without one the run is created running (the
    reference's default), its creator runs it, and no gateway is offered it."""
    bodies = {
        # trigger-pipeline-run.ts (Runs page, slices, webhooks)
        "trigger": {"environment": "default", "status": "pending", "triggeredBy": "manual"},
        # quick-start-wizard.tsx createAndRun
        "quick start": {"environment": "default", "status": "pending",
                        "triggeredBy": "quick_start"},
        # the demo: a run it reports itself
        "demo": {"environment": "default", "status": "running", "triggeredBy": "demo"},
        # a third-party reporter that sends no status
        "no status": {"triggeredBy": "ci"},
    }
    made = {}
    for name, body in bodies.items():
        r = await client.post(f"{ELT}/runs", json={"pipelineId": pipeline["id"], **body},
                              headers=tenant.headers("write"))
        made[name] = (await ok(r))["run"]
    assert {k: v["status"] for k, v in made.items()} == {
        "trigger": "pending", "quick start": "pending", "demo": "running",
        "no status": "running"}
    polled = (await ok(await client.get(f"{AGENT}/runs?status=pending&limit=5",
                                        headers=gateway.headers())))["runs"]
    assert [r["id"] for r in polled] == [made["trigger"]["id"], made["quick start"]["id"]]
    # the reporter PATCHes its own run to the end; a gateway cannot take it
    r = await client.patch(f"{AGENT}/runs/{made['no status']['id']}", json=CLAIM,
                           headers=gateway.headers())
    assert (r.status_code, r.json()) == (409, {"error": "Already claimed by a managed worker"})
    await ok(await client.patch(f"{ELT}/runs/{made['no status']['id']}",
                                json={"appendLog": {"level": "info", "message": "done"},
                                      "status": "succeeded"},
                                headers=tenant.headers("write")))


async def test_an_unknown_target_gateway_is_refused(client, tenant, pipeline):
    for target in ("999", "49387980547", "99999999999999999999"):
        r = await client.post(f"{ELT}/runs", json={"pipelineId": pipeline["id"],
                                                  "targetAgentTokenId": target},
                              headers=tenant.headers("write"))
        assert r.status_code == 400 and "targetGatewayId" in r.json()["error"], r.text


async def test_webhook_status_on_the_runs_page(client, tenant, gateway, pipeline):
    await ok(await client.put(f"{ELT}/runs/webhook", json={"url": HOOK},
                              headers=tenant.headers("write")))
    run = await new_run(client, tenant, pipeline)
    await ok(await client.patch(f"{ELT}/runs/{run['id']}", json={"status": "cancelled"},
                                headers=tenant.headers("write")))
    [r] = (await ok(await client.get(f"{ELT}/runs", headers=tenant.headers("read"))))["runs"]
    assert r["webhookStatus"] == "pending"  # queued for the sender


async def test_a_backfill(client, tenant, gateway, pipeline):
    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    for day in days:
        await new_run(client, tenant, pipeline, partitionColumn="day", partitionValue=day,
                      triggeredBy="backfill")
    polled = (await ok(await client.get(f"{AGENT}/runs?status=pending&limit=5",
                                        headers=gateway.headers())))["runs"]
    assert [r["partitionValue"] for r in polled] == days  # oldest first


async def test_texts_up_to_the_references_limits(client, tenant, gateway, pipeline):
    """datapulse run-types.ts: triggeredBy and partitionColumn 256, partitionValue 2048,
    currentPhase 256, currentResource and a sample's resource 512. The Run slices page builds
    `backfill:partition:<column>:<value>`; a label the reference accepts must not refuse the
    whole PATCH (and the status it carries)."""
    column, value = "c" * 256, "v" * 2048
    triggered = f"backfill:partition:{column}"[:256]
    run = await new_run(client, tenant, pipeline, status="pending", partitionColumn=column,
                        partitionValue=value, triggeredBy=triggered)
    assert (run["partitionColumn"], run["partitionValue"], run["triggeredBy"]) == (
        column, value, triggered)
    polled = (await ok(await client.get(f"{AGENT}/runs?status=pending&limit=5",
                                        headers=gateway.headers())))["runs"]
    assert (polled[0]["partitionColumn"], polled[0]["partitionValue"]) == (column, value)
    await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                headers=gateway.headers()))
    phase, resource = "p" * 256, "r" * 512
    await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json={
        "appendTelemetrySample": {"rows": 5, "phase": "load", "resource": resource}},
        headers=gateway.headers()))
    resp = await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json={
        "telemetrySummary": {"currentPhase": phase, "currentResource": resource},
        "status": "succeeded"}, headers=gateway.headers()))
    assert resp["run"]["status"] == "succeeded"
    body = (await ok(await client.get(f"{ELT}/runs/{run['id']}",
                                      headers=tenant.headers("read"))))["run"]
    summary = body["telemetry"]["summary"]
    assert (summary["currentPhase"], summary["currentResource"]) == (phase, resource)
    assert body["telemetry"]["samples"][0]["resource"] == resource
    # one character more is refused, naming the field
    for extra, field in (({"triggeredBy": "t" * 257}, "triggeredBy"),
                         ({"partitionColumn": "c" * 257}, "partitionColumn"),
                         ({"partitionValue": "v" * 2049}, "partitionValue")):
        r = await client.post(f"{ELT}/runs", json={"pipelineId": pipeline["id"],
                                                  "status": "pending", **extra},
                              headers=tenant.headers("write"))
        assert r.status_code == 400 and field in r.json()["error"], r.text


async def test_a_slice_value_alone_takes_the_pipelines_partition_column(client, tenant,
                                                                         gateway, pipeline):
    """trigger-pipeline-run.ts sends `partitionValue` with no column and no triggeredBy: the
    column comes from the pipeline's `_partitionConfig`, and triggeredBy is the Run slices
    key `backfill:partition:<column>:<value>` (run-partition-resolution.ts)."""
    run = await new_run(client, tenant, pipeline, partitionValue="2026-01-01")
    assert (run["partitionColumn"], run["partitionValue"], run["triggeredBy"]) == (
        "created_day", "2026-01-01", "backfill:partition:created_day:2026-01-01")
    [polled] = (await ok(await client.get(f"{AGENT}/runs?status=pending&limit=5",
                                          headers=gateway.headers())))["runs"]
    # what the gateway exports as ELT_PARTITION_COLUMN / ELT_PARTITION_VALUE
    assert (polled["partitionColumn"], polled["partitionValue"]) == ("created_day",
                                                                     "2026-01-01")
    # a column or a trigger sent wins; a value with a column and no trigger gets the key too
    sent = await new_run(client, tenant, pipeline, partitionValue="k1",
                         partitionColumn="region", triggeredBy="monitor:x")
    assert (sent["partitionColumn"], sent["triggeredBy"]) == ("region", "monitor:x")
    keyed = await new_run(client, tenant, pipeline, partitionValue="eu",
                          partitionColumn="region")
    assert keyed["triggeredBy"] == "backfill:partition:region:eu"
    # the longest slice the reference accepts fits its key
    long = await new_run(client, tenant, pipeline, partitionValue="v" * 2048,
                         partitionColumn="c" * 256)
    assert long["triggeredBy"] == "backfill:partition:" + "c" * 256 + ":" + "v" * 2048


async def test_a_slice_value_without_any_column_is_refused(client, tenant):
    write = tenant.headers("write")
    for config in (None, {"_partitionConfig": {"type": "none", "column": "day"}},
                   {"_partitionConfig": {"type": "date", "column": "  "}}, {"x": 1}):
        p = (await ok(await client.post(f"{ELT}/pipelines", headers=write, json={
            "name": f"p{uuid.uuid4().hex[:6]}", "sourceConfiguration": config})))["pipeline"]
        r = await client.post(f"{ELT}/runs", headers=write, json={
            "pipelineId": p["id"], "environment": "default", "status": "pending",
            "partitionValue": "2026-01-01"})
        assert r.status_code == 400, (config, r.text)
        [message] = r.json()["error"]["partitionColumn"]
        assert "partitionColumn is required" in message
        # without a value nothing is needed
        r = await client.post(f"{ELT}/runs", headers=write, json={
            "pipelineId": p["id"], "status": "pending", "triggeredBy": "manual"})
        assert r.status_code == 201 and r.json()["run"]["partitionColumn"] is None, r.text


async def test_the_webhook_settings_page(client, tenant, pipeline):
    read = tenant.headers("read")
    page = await ok(await client.get(f"{ELT}/runs/webhook", headers=read))
    assert (page.get("globalUrl") or page.get("url")) is None
    assert page["pipelines"] == [{"id": pipeline["id"], "name": "github-issues",
                                  "webhookUrl": None}]
    write = tenant.headers("write")
    await ok(await client.put(f"{ELT}/runs/webhook", json={"url": HOOK}, headers=write))
    await ok(await client.put(f"{ELT}/pipelines/{pipeline['id']}/webhook",
                              json={"url": HOOK + "/p"}, headers=write))
    page = await ok(await client.get(f"{ELT}/runs/webhook", headers=read))
    assert page["globalUrl"] == HOOK
    assert page["pipelines"][0]["webhookUrl"] == HOOK + "/p"
    assert page["webhook"]["secret"] is None  # the signing secret: `write` only
    one = await ok(await client.get(f"{ELT}/pipelines/{pipeline['id']}/webhook", headers=read))
    assert {k: one[k] for k in ("pipelineId", "name", "url")} == {
        "pipelineId": pipeline["id"], "name": "github-issues", "url": HOOK + "/p"}
    # the page clears a URL with an empty string (or by sending nothing)
    await ok(await client.put(f"{ELT}/pipelines/{pipeline['id']}/webhook", json={"url": ""},
                              headers=write))
    await ok(await client.put(f"{ELT}/runs/webhook", json={}, headers=write))
    page = await ok(await client.get(f"{ELT}/runs/webhook", headers=read))
    assert page["globalUrl"] is None and page["pipelines"][0]["webhookUrl"] is None


async def test_pipelines_with_datapulses_bodies(client, tenant, pipeline):
    assert {k: pipeline[k] for k in DATAPULSE_PIPELINE} == DATAPULSE_PIPELINE
    r = await client.patch(f"{ELT}/pipelines/{pipeline['id']}",
                           json={"enabled": False, "configYaml": "source: {}\n"},
                           headers=tenant.headers("write"))
    body = (await ok(r))["pipeline"]
    assert (body["enabled"], body["configYaml"], body["tool"]) == (False, "source: {}\n", "dlt")
    # limits, and credentials stay out of a definition every read returns
    for bad, field in (({"pipelineCode": "x" * 262_145}, "pipelineCode"),
                       ({"sourceConfiguration": {"GITHUB_TOKEN": "ghp_x"}},
                        "sourceConfiguration.GITHUB_TOKEN"),
                       ({"sourceConfiguration": ["a"]}, "sourceConfiguration"),
                       ({"enabled": "yes"}, "enabled"), ({"tool": "t" * 51}, "tool")):
        r = await client.patch(f"{ELT}/pipelines/{pipeline['id']}", json=bad,
                               headers=tenant.headers("write"))
        assert r.status_code == 400 and field in r.json()["error"], (bad, r.text)


# datapulse quick-start-wizard.tsx createAndRun (no credentials needed: both ids null) and
# create-pipeline-client.ts createEltPipeline (a destination connection when one is set).
QUICK_START_PIPELINE = {
    "name": "github_to_snowflake", "sourceType": "github", "destinationType": "snowflake",
    "tool": "auto", "description": "Quick-start pipeline: github → snowflake",
    "sourceConfiguration": {"repo_owner": "acme", "repo_name": "api"},
    "sourceConnectionId": None, "destinationConnectionId": None,
}


async def test_the_web_apps_new_pipeline_bodies(client, tenant, cid, gateway):
    """`tool: "auto"` without code asks the server to generate the pipeline; runwatch does not,
    and a gateway given no code would run an empty script and report success: refused, in
    the contract's validation shape, with a message the web app shows as it is."""
    write = tenant.headers("write")
    r = await client.post(f"{ELT}/pipelines", json=QUICK_START_PIPELINE, headers=write)
    assert r.status_code == 400, r.text
    [message] = r.json()["error"]["tool"]
    assert "does not generate pipeline code" in message
    r = await client.post(f"{ELT}/pipelines", headers=write, json={
        "name": "gh", "sourceType": "github", "destinationType": "snowflake", "tool": "auto",
        "sourceConfiguration": {}, "destinationConnectionId": str(cid)})
    assert r.status_code == 400 and "tool" in r.json()["error"], r.text
    # with its code, "auto" is the tool that code is for
    created = await ok(await client.post(f"{ELT}/pipelines", headers=write, json={
        **QUICK_START_PIPELINE, "pipelineCode": "import dlt\n",
        "destinationConnectionId": str(cid)}))
    p = created["pipeline"]
    assert created["created"] is True and isinstance(p["id"], str)
    assert (p["tool"], p["connectionId"], p["destinationConnectionId"],
            p["sourceConnectionId"]) == ("dlt", str(cid), str(cid), None)
    sling = (await ok(await client.post(f"{ELT}/pipelines", headers=write, json={
        **QUICK_START_PIPELINE, "name": "pg_to_snowflake", "configYaml": "streams: {}\n"})))
    assert sling["pipeline"]["tool"] == "sling"
    # what the gateway polls: a tool it runs and the code it runs
    run = await new_run(client, tenant, p)
    [polled] = (await ok(await client.get(f"{AGENT}/runs?status=pending&limit=5",
                                          headers=gateway.headers())))["runs"]
    assert polled["id"] == run["id"]
    assert (polled["pipeline"]["tool"], polled["pipeline"]["pipelineCode"]) == (
        "dlt", "import dlt\n")
    # a PATCH back to "auto" keeps the stored code's tool; clearing the code with it is refused
    body = (await ok(await client.patch(f"{ELT}/pipelines/{p['id']}", json={"tool": "auto"},
                                        headers=write)))["pipeline"]
    assert body["tool"] == "dlt"
    r = await client.patch(f"{ELT}/pipelines/{p['id']}",
                           json={"tool": "auto", "pipelineCode": None}, headers=write)
    assert r.status_code == 400 and "tool" in r.json()["error"], r.text


async def test_pipeline_connections_as_the_reference_checks_them(client, tenant, other_tenant,
                                                                 cid):
    write = tenant.headers("write")
    body = {**QUICK_START_PIPELINE, "pipelineCode": "import dlt\n"}
    theirs = (await ok(await client.post(
        f"{ELT}/pipelines", headers=other_tenant.headers("write"),
        json={"name": "x"})))["pipeline"]["connectionId"]
    assert theirs is None
    for extra, field in (
        ({"destinationConnectionId": "999"}, "destinationConnectionId"),  # not here
        ({"destinationConnectionId": str(cid), "destinationType": "duckdb"},
         "destinationConnectionId"),  # a snowflake connection, a duckdb destination
        ({"destinationConnectionId": str(cid), "connectionId": "999"},
         "destinationConnectionId"),
        ({"sourceConnectionId": str(cid)}, "sourceConnectionId"),  # not a source profile
        ({"sourceConnectionId": "abc"}, "sourceConnectionId"),
    ):
        r = await client.post(f"{ELT}/pipelines", json={**body, **extra}, headers=write)
        assert r.status_code == 400 and field in r.json()["error"], (extra, r.text)
    # null clears the destination
    p = (await ok(await client.post(f"{ELT}/pipelines", headers=write, json={
        **body, "destinationConnectionId": str(cid)})))["pipeline"]
    assert p["connectionId"] == str(cid)
    p = (await ok(await client.patch(f"{ELT}/pipelines/{p['id']}", headers=write,
                                     json={"destinationConnectionId": None})))["pipeline"]
    assert (p["connectionId"], p["destinationConnectionId"]) == (None, None)


async def test_upsert_updates_the_pipeline_of_the_same_name(client, tenant, cid):
    write = tenant.headers("write")
    body = {**QUICK_START_PIPELINE, "pipelineCode": "print(1)\n", "upsert": True}
    first = await client.post(f"{ELT}/pipelines", json=body, headers=write)
    assert first.status_code == 201 and first.json()["created"] is True, first.text
    pid = first.json()["pipeline"]["id"]
    await ok(await client.patch(f"{ELT}/pipelines/{pid}", json={"maxRuntimeSeconds": 600},
                                headers=write))
    again = await client.post(f"{ELT}/pipelines", headers=write, json={
        **body, "pipelineCode": "print(2)\n", "description": "second",
        "destinationConnectionId": str(cid)})
    assert again.status_code == 200 and again.json()["created"] is False, again.text
    p = again.json()["pipeline"]
    assert (p["id"], p["pipelineCode"], p["description"], p["connectionId"]) == (
        pid, "print(2)\n", "second", str(cid))
    assert p["maxRuntimeSeconds"] == 600  # what the body leaves out stays
    # without upsert a same-name create is still 409; upsert must be a boolean
    r = await client.post(f"{ELT}/pipelines", json={**body, "upsert": False}, headers=write)
    assert r.status_code == 409, r.text
    r = await client.post(f"{ELT}/pipelines", json={**body, "upsert": "yes"}, headers=write)
    assert r.status_code == 400 and "upsert" in r.json()["error"], r.text
    # the refusal of "auto" without code holds on the update too
    r = await client.post(f"{ELT}/pipelines", headers=write, json={
        **QUICK_START_PIPELINE, "upsert": True, "name": "fresh"})
    assert r.status_code == 400 and "tool" in r.json()["error"], r.text
    # a connection's delivery pipeline is not an ELT definition to overwrite
    r = await client.post(f"{ELT}/pipelines", headers=write, json={
        **body, "name": "warehouse delivery"})
    assert r.status_code == 409 and "delivery" in r.json()["error"], r.text
    listed = (await ok(await client.get(f"{ELT}/pipelines", headers=tenant.headers("read"))))
    assert [p["name"] for p in listed["pipelines"]].count(QUICK_START_PIPELINE["name"]) == 1


async def test_pipeline_definitions_in_graphql(client, tenant):
    create = """mutation($input: CreatePipelineInput!) { createPipeline(input: $input) {
        __typename ... on PipelineSuccess { pipeline { id tool sourceType destinationType
        sourceConfiguration pipelineCode configYaml workspaceYaml groupName enabled } } } }"""
    r = await client.post("/graphql", headers=tenant.headers("read,write,report"), json={
        "query": create, "variables": {"input": {
            "name": "gql", "tool": "sling", "sourceType": "postgres",
            "destinationType": "snowflake", "sourceConfiguration": {"schema": "public"},
            "configYaml": "streams: {}", "enabled": False}}})
    p = r.json()["data"]["createPipeline"]["pipeline"]
    assert (p["tool"], p["sourceConfiguration"], p["configYaml"], p["enabled"]) == (
        "sling", {"schema": "public"}, "streams: {}", False)
    update = """mutation($input: UpdatePipelineInput!) { updatePipeline(input: $input) {
        __typename ... on PipelineSuccess { pipeline { tool groupName } }
        ... on InvalidInputError { message } } }"""
    r = await client.post("/graphql", headers=tenant.headers("read,write,report"), json={
        "query": update, "variables": {"input": {"id": p["id"], "groupName": "ops"}}})
    assert r.json()["data"]["updatePipeline"]["pipeline"] == {"tool": "sling",
                                                              "groupName": "ops"}, r.text
    r = await client.post("/graphql", headers=tenant.headers("read,write,report"), json={
        "query": update, "variables": {"input": {
            "id": p["id"], "sourceConfiguration": {"password": "x"}}}})
    assert r.json()["data"]["updatePipeline"]["__typename"] == "InvalidInputError"


def test_the_public_url_setting():
    assert Settings.from_env({"RUNWATCH_PUBLIC_URL": "https://rw.example.com/"}).public_url \
        == "https://rw.example.com"
    assert Settings.from_env({}).public_url == ""
    with pytest.raises(ValueError, match="RUNWATCH_PUBLIC_URL"):
        Settings.from_env({"RUNWATCH_PUBLIC_URL": "rw.example.com"})


# ----------------------------------------------------------------------------------------------
# connection secrets


SET_SECRETS = """mutation($input: SetConnectionSecretsInput!) {
  setConnectionSecrets(input: $input) {
    __typename ... on ConnectionSecretsSuccess { secrets { name set updatedAt } }
    ... on InvalidInputError { message } ... on NotFoundError { message } } }"""


async def set_secrets(client, tenant, cid: int, secrets: dict[str, Any]) -> dict[str, Any]:
    r = await client.post("/graphql", headers=tenant.headers("read,write,report"), json={
        "query": SET_SECRETS, "variables": {"input": {"connectionId": str(cid),
                                                      "secrets": secrets}}})
    assert r.status_code == 200, r.text
    return r.json()["data"]["setConnectionSecrets"]


@pytest.fixture
def keys() -> tuple[str, ...]:
    from cryptography.fernet import Fernet
    return (Fernet.generate_key().decode(), Fernet.generate_key().decode())


async def test_the_gateway_receives_connection_secrets(settings, tenant, other_tenant, cid,
                                                       gateway, keys):
    from runwatch.models import ConnectionSecret, SecretRead

    async with app_client(settings, secrets_keys=keys[:1]) as c:
        done = await set_secrets(c, tenant, cid, {"SNOWFLAKE_PASSWORD": "s3cret-value",
                                                  "GITHUB_TOKEN": "ghp_abc"})
        assert [s["name"] for s in done["secrets"]] == ["GITHUB_TOKEN", "SNOWFLAKE_PASSWORD"]
        assert all(s["set"] for s in done["secrets"])
        # at rest: encrypted
        rows = await ConnectionSecret.all()
        assert all("s3cret" not in r.ciphertext and "ghp_" not in r.ciphertext for r in rows)
        # reads by people never carry a value
        r = await c.post("/graphql", headers=tenant.headers("read"), json={"query": (
            f'{{ connectionSecrets(connectionId: "{cid}") {{ name set }} connection(id: '
            f'"{cid}") {{ settings }} }}')})
        assert "s3cret" not in r.text and "ghp_abc" not in r.text
        assert r.json()["data"]["connectionSecrets"] == [
            {"name": "GITHUB_TOKEN", "set": True}, {"name": "SNOWFLAKE_PASSWORD", "set": True}]
        # the gateway's read (fetchConnectionEnv), with the key rotated: a new first key
        # writes, the old one still reads
    async with app_client(settings, secrets_keys=(keys[1], keys[0])) as c:
        data = await ok(await c.get(f"{AGENT}/connections", headers=gateway.headers()))
        [conn] = data["connections"]
        assert conn["secrets"] == {"SNOWFLAKE_PASSWORD": "s3cret-value",
                                   "GITHUB_TOKEN": "ghp_abc"}
        assert set(conn) == {"id", "name", "connectionType", "connector", "config", "secrets"}
        assert conn["id"] == str(cid)
        [read] = await SecretRead.all()
        assert (read.gateway_id, read.names) == (gateway.id, ["GITHUB_TOKEN",
                                                              "SNOWFLAKE_PASSWORD"])
        # a person's token is refused; another organisation's gateway sees none of them
        r = await c.get(f"{AGENT}/connections", headers=tenant.headers("admin"))
        assert r.status_code == 403
        theirs = await make_gateway(other_tenant, "theirs")
        data = await ok(await c.get(f"{AGENT}/connections", headers=theirs.headers()))
        assert data == {"connections": []}
        # the pipeline detail carries its connection's secrets too (recorded as well)
        r = await c.post(f"{ELT}/pipelines", json={"name": "warehouse-load",
                                                   "connectionId": str(cid)},
                         headers=tenant.headers("write"))
        pid = (await ok(r))["pipeline"]["id"]
        one = await ok(await c.get(f"{AGENT}/pipelines/{pid}", headers=gateway.headers()))
        assert one["pipeline"]["secrets"]["GITHUB_TOKEN"] == "ghp_abc"
        assert await SecretRead.all().count() == 2
        # null removes one
        done = await set_secrets(c, tenant, cid, {"GITHUB_TOKEN": None})
        assert [s["name"] for s in done["secrets"]] == ["SNOWFLAKE_PASSWORD"]


async def test_without_a_key_storing_a_secret_is_refused(client, tenant, cid):
    done = await set_secrets(client, tenant, cid, {"API_KEY": "x"})
    assert done["__typename"] == "InvalidInputError"
    assert "RUNWATCH_SECRETS_KEYS" in done["message"]
    bad = await set_secrets(client, tenant, cid, {"not a name": "x"})
    assert bad["__typename"] == "InvalidInputError"


def test_the_secrets_keys_setting():
    from cryptography.fernet import Fernet
    key = Fernet.generate_key().decode()
    assert Settings.from_env({"RUNWATCH_SECRETS_KEYS": f" {key}, {key}"}).secrets_keys == (
        key, key)
    with pytest.raises(ValueError, match="RUNWATCH_SECRETS_KEYS"):
        Settings.from_env({"RUNWATCH_SECRETS_KEYS": "nope"})


# ----------------------------------------------------------------------------------------------
# the gateway page (agent-status) and monitor reports


async def test_the_agent_status_page(client, tenant, gateway):
    page = await ok(await client.get(f"{ELT}/agent-status", headers=tenant.headers("read")))
    assert page["connectors"] == [] and page["heartbeat"] is None
    [c] = page["organization"]["connectors"]
    assert (c["id"], c["name"], c["heartbeat"]) == (str(gateway.id), "gw-1", None)
    assert page["organization"]["id"] == str(tenant.org_id)
    assert page["hasAnyToken"] is True
    await ok(await client.post(f"{AGENT}/heartbeat", json=GATEWAY_HEARTBEAT,
                               headers=gateway.headers()))
    page = await ok(await client.get(f"{ELT}/agent-status", headers=tenant.headers("read")))
    beat = page["organization"]["connectors"][0]["heartbeat"]
    assert (beat["version"], beat["labels"]) == ("eltpulse-gateway/0.2.0",
                                                 GATEWAY_HEARTBEAT["labels"])
    when(beat["seenAt"])
    assert page["heartbeat"] == beat


async def test_monitor_reports_name_no_monitor(client, gateway):
    """runwatch runs no monitors (the manifest's `workloads.monitors` is empty): a report is
    404 in the contract's shape, never a 500."""
    r = await client.post(f"{AGENT}/monitors/7/report", json={"ok": True},
                          headers=gateway.headers())
    assert (r.status_code, r.json()) == (404, {"error": "Monitor not found"})


# The end of a failed run as eltPulse's runners send it (gateway `executors/local.mjs` and the
# per-run worker): the final PATCH (`status` with the buffered lines), then, for a non-zero
# exit, the summary on its own; an executor's exception path sends all three at once. Every
# one of them ends in `.catch(() => {})`: a refused PATCH is lost, its lines with it.
FINAL = {"appendLog": {"level": "info", "message": "loaded 0 rows"}, "status": "failed"}
EXIT = {"errorSummary": "Process exited with code 1"}
EXCEPTION = {"status": "failed", "errorSummary": "RunTask failed: timeout",
             "appendLog": {"level": "error", "message": "Gateway executor error: timeout"}}
NOTE = "errorSummary not applied (the run keeps its first one): "


async def claimed_run(client, tenant, gateway, pipeline) -> str:
    run = await new_run(client, tenant, pipeline)
    await ok(await client.patch(f"{AGENT}/runs/{run['id']}", json=CLAIM,
                                headers=gateway.headers()))
    return run["id"]


async def lines_of(client, tenant, run_id: str) -> list[tuple[str, str]]:
    body = (await ok(await client.get(f"{ELT}/runs/{run_id}",
                                      headers=tenant.headers("read"))))["run"]
    return [(e["level"], e["message"]) for e in body["logEntries"]]


async def test_a_second_summary_keeps_the_first_and_loses_no_line(client, tenant, gateway,
                                                                  pipeline):
    """The executor's exception PATCH failed the run first (a RunTask whose answer was lost),
    then the worker it had started reports its own end: every PATCH is a 200, the first
    summary stays, the worker's lines and its summary (as an error line) are kept."""
    run_id = await claimed_run(client, tenant, gateway, pipeline)
    for body in (EXCEPTION, FINAL, EXIT):
        answer = await ok(await client.patch(f"{AGENT}/runs/{run_id}", json=body,
                                             headers=gateway.headers()))
        assert answer["cancel"] is False
    assert answer["run"]["errorSummary"] == "RunTask failed: timeout"
    assert (await lines_of(client, tenant, run_id))[1:] == [
        ("error", "Gateway executor error: timeout"), ("info", "loaded 0 rows"),
        ("error", NOTE + "Process exited with code 1")]


async def test_the_exception_patch_after_the_worker_keeps_its_line(client, tenant, gateway,
                                                                   pipeline):
    """The other order: the worker finished the run with its summary; the exception PATCH
    that arrives after it was a 409, and its error line was lost."""
    run_id = await claimed_run(client, tenant, gateway, pipeline)
    for body in (FINAL, EXIT, EXCEPTION):
        await ok(await client.patch(f"{AGENT}/runs/{run_id}", json=body,
                                    headers=gateway.headers()))
    run = (await ok(await client.get(f"{ELT}/runs/{run_id}", headers=tenant.headers("read"))))
    assert run["run"]["errorSummary"] == "Process exited with code 1"
    assert (await lines_of(client, tenant, run_id))[-2:] == [
        ("error", "Gateway executor error: timeout"), ("error", NOTE + "RunTask failed: timeout")]


async def test_a_timed_out_run_keeps_the_reapers_summary(client, tenant, gateway, pipeline):
    """Timed out before the runner's end: its PATCHes answer `cancel: true` and keep their
    lines; the runner's summary does not replace the reaper's reason but is kept as a line."""
    run_id = await claimed_run(client, tenant, gateway, pipeline)
    row = await Run.get(id=int(run_id))
    assert await reap_stuck_runs(now=row.started_at + timedelta(hours=25)) == 1
    reason = (await Run.get(id=int(run_id))).error
    answer = await ok(await client.patch(f"{AGENT}/runs/{run_id}", json=EXCEPTION,
                                         headers=gateway.headers()))
    assert answer["cancel"] is True and answer["run"]["errorSummary"] == reason
    assert (await lines_of(client, tenant, run_id))[-2:] == [
        ("error", "Gateway executor error: timeout"), ("error", NOTE + "RunTask failed: timeout")]


async def test_the_failure_webhook_carries_the_summary_the_runner_sends_after_it(
        client, tenant, gateway, pipeline):
    """The runners' end of a failed run (the final status, then the summary alone): the
    receiver set with the web app's `PUT …/webhook {url}` gets `run.failed` with that
    summary, not the null the status PATCH alone would have frozen into it."""
    async with Receiver.running() as receiver:
        await ok(await client.put(f"{ELT}/runs/webhook", json={"url": receiver.url},
                                  headers=tenant.headers("write")))
        run_id = await claimed_run(client, tenant, gateway, pipeline)
        for body in (FINAL, EXIT):
            await ok(await client.patch(f"{AGENT}/runs/{run_id}", json=body,
                                        headers=gateway.headers()))
        sender = Sender(timeout=5, allow_private=True, concurrency=4)
        try:
            assert await sender.deliver_due(now=utcnow() + SUMMARY_GRACE) == 1
        finally:
            await sender.aclose()
        [request] = receiver.requests
    body = json.loads(request.body)
    assert (body["event"], body["status"], body["timedOut"]) == ("run.failed", "failed", False)
    assert (body["runId"], body["errorSummary"]) == (run_id, EXIT["errorSummary"])
