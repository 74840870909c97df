"""ELT runs over GraphQL: the mutations the REST PATCH expresses, gateways, webhook endpoints
and deliveries, tenancy of every new field, and the live subscription over a real WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from runwatch.models import Run, RunStatus, WebhookDelivery
from runwatch.services import notify
from tests.conftest import Tenant
from tests.helpers import graphql

PIPELINE = """mutation($name: String!) { createPipeline(input: {name: $name}) {
  __typename ... on PipelineSuccess { pipeline { id name kind } } ... on Error { message } } }"""
CREATE_RUN = """mutation($p: ID!, $s: RunStatus) { createRun(input: {pipelineId: $p, status: $s}) {
  __typename ... on RunSuccess { run { id status } } ... on Error { message } } }"""
UPDATE_RUN = """mutation($i: UpdateRunInput!) { updateRun(input: $i) {
  __typename
  ... on RunSuccess { run { id status error finishedAt logLinesDropped
      telemetrySummary { rowsLoaded bytesLoaded progress currentPhase updatedAt }
      logEntries(first: 200) { nodes { seq level message } pageInfo { hasNextPage } }
      telemetrySamples { nodes { seq rows progress } } } }
  ... on InvalidInputError { message fieldErrors { field messages } }
  ... on Error { message } } }"""


async def make_pipeline(client, tenant: Tenant, name: str = "elt") -> str:
    data = await graphql(client, tenant, PIPELINE, name=name)
    assert data["data"]["createPipeline"]["__typename"] == "PipelineSuccess", data
    return data["data"]["createPipeline"]["pipeline"]["id"]


async def make_run(client, tenant: Tenant, pipeline_id: str, status: str = "RUNNING") -> str:
    data = await graphql(client, tenant, CREATE_RUN, p=pipeline_id, s=status)
    assert data["data"]["createRun"]["__typename"] == "RunSuccess", data
    return data["data"]["createRun"]["run"]["id"]


async def update(client, tenant: Tenant, scopes: str = "admin", **fields: Any) -> dict:
    data = await graphql(client, tenant, UPDATE_RUN, scopes=scopes, i=fields)
    assert "errors" not in data, data
    return data["data"]["updateRun"]


async def test_create_pipeline_and_run(client, tenant):
    pid = await make_pipeline(client, tenant)
    data = await graphql(client, tenant, PIPELINE, name="elt")
    assert data["data"]["createPipeline"]["__typename"] == "ConflictError"
    rid = await make_run(client, tenant, pid, "PENDING")
    run = await Run.get(id=int(rid))
    assert run.status == RunStatus.PENDING and run.deadline_at is None


async def test_update_run_logs_summary_and_samples(client, tenant):
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    result = await update(
        client, tenant, id=rid, appendLog={"message": "connect password=hunter2", "level": "WARN"},
        telemetrySummary={"rowsLoaded": 10, "progress": 25, "currentPhase": "extract"},
        appendTelemetrySample={"rows": 10, "progress": 25})
    run = result["run"]
    assert run["logEntries"]["nodes"] == [
        {"seq": 1, "level": "WARN", "message": "connect password=[REDACTED]"}]
    assert run["telemetrySummary"]["rowsLoaded"] == 10
    assert run["telemetrySummary"]["currentPhase"] == "extract"
    assert run["telemetrySummary"]["updatedAt"] is not None
    assert run["telemetrySamples"]["nodes"] == [{"seq": 1, "rows": 10, "progress": 25.0}]

    # a field set to null is removed from the summary; the others stay
    run = (await update(client, tenant, id=rid, telemetrySummary={"currentPhase": None}))["run"]
    assert run["telemetrySummary"]["currentPhase"] is None
    assert run["telemetrySummary"]["rowsLoaded"] == 10

    done = (await update(client, tenant, id=rid, status="SUCCEEDED"))["run"]
    assert done["status"] == "SUCCEEDED" and done["finishedAt"]
    again = await update(client, tenant, id=rid, status="FAILED")
    assert again["__typename"] == "ConflictError"


async def test_update_run_validation_names_graphql_fields(client, tenant):
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    result = await update(client, tenant, id=rid, telemetrySummary={"progress": 120},
                          appendTelemetrySample={"rows": -1})
    assert result["__typename"] == "InvalidInputError"
    fields = {e["field"] for e in result["fieldErrors"]}
    assert fields == {"telemetrySummary.progress", "appendTelemetrySample.rows"}
    run = await Run.get(id=int(rid))
    assert run.sample_seq == 0 and run.telemetry_summary is None  # nothing was applied


async def test_log_pages_follow_the_cap(client, tenant):
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    entries = [{"message": f"line {i}"} for i in range(500)]
    await update(client, tenant, id=rid, logEntries=entries)
    run = (await update(client, tenant, id=rid, appendLog={"message": "newest"}))["run"]
    assert run["logLinesDropped"] == 1
    nodes = run["logEntries"]["nodes"]
    assert nodes[0]["message"] == "line 1" and run["logEntries"]["pageInfo"]["hasNextPage"]
    query = """query($id: ID!, $after: String) { run(id: $id) {
      logEntries(first: 200, after: $after) {
        nodes { message } pageInfo { endCursor hasNextPage } } } }"""
    seen, after = [], None
    while True:
        page = (await graphql(client, tenant, query, id=rid, after=after))["data"]["run"]
        seen += [n["message"] for n in page["logEntries"]["nodes"]]
        if not page["logEntries"]["pageInfo"]["hasNextPage"]:
            break
        after = page["logEntries"]["pageInfo"]["endCursor"]
    assert len(seen) == 500 and seen[0] == "line 1" and seen[-1] == "newest"


async def test_cancel_run_and_state_machine_errors(client, tenant):
    pid = await make_pipeline(client, tenant)
    pending = await make_run(client, tenant, pid, "PENDING")
    result = await update(client, tenant, id=pending, status="SUCCEEDED")
    assert result["__typename"] == "ConflictError" and "claim it" in result["message"]
    cancel = """mutation($id: ID!) { cancelRun(id: $id) { __typename
      ... on RunSuccess { run { status finishedAt } } ... on Error { message } } }"""
    data = (await graphql(client, tenant, cancel, id=pending))["data"]["cancelRun"]
    assert data["run"]["status"] == "CANCELLED" and data["run"]["finishedAt"]
    assert (await graphql(client, tenant, cancel, id=pending))["data"]["cancelRun"][
        "__typename"] == "RunSuccess"  # cancelling again is a no-op
    result = await update(client, tenant, id=pending, status="TIMED_OUT")
    assert result["__typename"] == "ConflictError"


async def test_read_scope_cannot_write(client, tenant):
    pid = await make_pipeline(client, tenant)
    rid = await make_run(client, tenant, pid)
    result = await update(client, tenant, scopes="read", id=rid, appendLog={"message": "x"})
    assert result["__typename"] == "PermissionDeniedError"
    data = await graphql(client, tenant, CREATE_RUN, scopes="read", p=pid, s="RUNNING")
    assert data["data"]["createRun"]["__typename"] == "PermissionDeniedError"


GATEWAYS = """mutation($name: String!) { createGateway(input: {name: $name}) { __typename
  ... on GatewayTokenSuccess { token gateway { id name online } } ... on Error { message } } }"""


async def test_gateway_lifecycle(client, tenant):
    data = (await graphql(client, tenant, GATEWAYS, name="gw-1"))["data"]["createGateway"]
    token, gid = data["token"], data["gateway"]["id"]
    assert data["gateway"]["online"] is False
    headers = {"Authorization": f"Bearer {token}"}
    r = await client.post("/api/agent/heartbeat", json={"version": "2.1"}, headers=headers)
    assert r.status_code == 200
    query = "{ gateways { nodes { id name version online lastSeenAt } } }"
    nodes = (await graphql(client, tenant, query))["data"]["gateways"]["nodes"]
    assert nodes == [{"id": gid, "name": "gw-1", "version": "2.1", "online": True,
                      "lastSeenAt": nodes[0]["lastSeenAt"]}]
    # non-admins cannot create gateways; duplicate names are refused
    denied = await graphql(client, tenant, GATEWAYS, scopes="read,write,report", name="gw-2")
    assert denied["data"]["createGateway"]["__typename"] == "PermissionDeniedError"
    dup = await graphql(client, tenant, GATEWAYS, name="gw-1")
    assert dup["data"]["createGateway"]["__typename"] == "InvalidInputError"

    rotate = """mutation($g: ID!) { issueGatewayToken(input: {gatewayId: $g, revokeOthers: true}) {
      __typename ... on GatewayTokenSuccess { token } } }"""
    new_token = (await graphql(client, tenant, rotate, g=gid))["data"]["issueGatewayToken"]["token"]
    assert (await client.get("/api/agent/manifest", headers=headers)).status_code == 401
    new_headers = {"Authorization": f"Bearer {new_token}"}
    assert (await client.get("/api/agent/manifest", headers=new_headers)).status_code == 200

    revoke = """mutation($g: ID!) { revokeGateway(id: $g) { __typename
      ... on GatewaySuccess { gateway { revokedAt online } } } }"""
    result = (await graphql(client, tenant, revoke, g=gid))["data"]["revokeGateway"]
    assert result["gateway"]["revokedAt"] and result["gateway"]["online"] is False
    assert (await client.get("/api/agent/manifest", headers=new_headers)).status_code == 401
    assert (await graphql(client, tenant, query))["data"]["gateways"]["nodes"] == []


async def test_run_gateway_fields(client, tenant):
    data = (await graphql(client, tenant, GATEWAYS, name="gw-1"))["data"]["createGateway"]
    headers = {"Authorization": f"Bearer {data['token']}"}
    pid = await make_pipeline(client, tenant)
    r = await client.post("/api/elt/runs", json={"pipelineId": pid, "status": "pending",
                                                 "targetGatewayId": data["gateway"]["id"]},
                          headers=tenant.headers("write"))
    rid = r.json()["run"]["id"]
    r = await client.patch(f"/api/agent/runs/{rid}", json={"status": "running"}, headers=headers)
    assert r.status_code == 200, r.text
    query = """query($id: ID!) { run(id: $id) { status gateway { name } targetGateway { name }
      deadlineAt } }"""
    run = (await graphql(client, tenant, query, id=rid))["data"]["run"]
    # a gateway's run is bounded by the gateway ceiling (24 h), not the orphan window
    assert run["status"] == "RUNNING" and run["deadlineAt"] is not None
    assert run["gateway"] == {"name": "gw-1"} and run["targetGateway"] == {"name": "gw-1"}


WEBHOOK = """mutation($i: SetWebhookEndpointInput!) { setWebhookEndpoint(input: $i) { __typename
  ... on WebhookEndpointSuccess { endpoint { id url secret eventTypes enabled pipeline { id } } }
  ... on InvalidInputError { fieldErrors { field messages } } ... on Error { message } } }"""


async def test_webhook_endpoints_and_deliveries(client, tenant):
    pid = await make_pipeline(client, tenant)
    default = (await graphql(client, tenant, WEBHOOK, i={"url": "http://127.0.0.1:9/org"}))[
        "data"]["setWebhookEndpoint"]["endpoint"]
    assert default["secret"].startswith("whsec_") and default["pipeline"] is None
    own = (await graphql(client, tenant, WEBHOOK, i={
        "url": "http://127.0.0.1:9/own", "pipelineId": pid, "eventTypes": ["run.failed"]}))[
        "data"]["setWebhookEndpoint"]["endpoint"]
    assert own["eventTypes"] == ["run.failed"] and own["pipeline"] == {"id": pid}
    bad = (await graphql(client, tenant, WEBHOOK, i={"url": "ftp://example.com/"}))["data"][
        "setWebhookEndpoint"]
    assert bad["__typename"] == "InvalidInputError" and bad["fieldErrors"][0]["field"] == "url"

    # a read token sees endpoints but not their secrets
    secret = await graphql(client, tenant, "{ webhookEndpoints { nodes { id secret } } }",
                           scopes="read")
    assert secret["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    rid = await make_run(client, tenant, pid)
    await update(client, tenant, id=rid, status="FAILED", errorSummary="boom")
    query = """{ webhookDeliveries { nodes { id status eventType attemptCount messageId
      endpoint { url } run { id } payload } } }"""
    nodes = (await graphql(client, tenant, query))["data"]["webhookDeliveries"]["nodes"]
    assert len(nodes) == 1
    delivery = nodes[0]
    assert delivery["endpoint"] == {"url": "http://127.0.0.1:9/own"}  # the pipeline's wins
    assert delivery["eventType"] == "run.failed" and delivery["status"] == "PENDING"
    assert delivery["payload"]["errorSummary"] == "boom" and delivery["run"] == {"id": rid}

    redeliver = """mutation($id: ID!) { redeliverWebhook(id: $id) { __typename
      ... on WebhookDeliverySuccess { delivery { status nextAttemptAt } } } }"""
    result = (await graphql(client, tenant, redeliver, id=delivery["id"]))["data"]
    assert result["redeliverWebhook"]["delivery"]["status"] == "PENDING"

    rotate = """mutation($id: ID!) { rotateWebhookSecret(id: $id) { __typename
      ... on WebhookEndpointSuccess { endpoint { secret } } } }"""
    rotated = (await graphql(client, tenant, rotate, id=own["id"]))["data"][
        "rotateWebhookSecret"]["endpoint"]["secret"]
    assert rotated != own["secret"]
    delete = """mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { __typename
      ... on DeleteWebhookEndpointSuccess { id } } }"""
    assert (await graphql(client, tenant, delete, id=own["id"]))["data"][
        "deleteWebhookEndpoint"]["id"] == own["id"]
    assert await WebhookDelivery.all().count() == 0  # its history went with it


async def test_tenancy_of_elt_graphql(client, tenant, other_tenant):
    pid = await make_pipeline(client, tenant)
    rid = await make_run(client, tenant, pid)
    gw = (await graphql(client, tenant, GATEWAYS, name="gw"))["data"]["createGateway"]
    endpoint = (await graphql(client, tenant, WEBHOOK, i={"url": "http://127.0.0.1:9/x"}))[
        "data"]["setWebhookEndpoint"]["endpoint"]
    await update(client, tenant, id=rid, status="SUCCEEDED")
    delivery = await WebhookDelivery.get()

    reads = {
        "run": (f'{{ run(id: "{rid}") {{ id }} }}', None),
        "gateway": (f'{{ gateway(id: "{gw["gateway"]["id"]}") {{ id }} }}', None),
        "webhookEndpoint": (f'{{ webhookEndpoint(id: "{endpoint["id"]}") {{ id }} }}', None),
        "webhookDelivery": (f'{{ webhookDelivery(id: "{delivery.id}") {{ id }} }}', None),
    }
    for name, (query, _) in reads.items():
        data = await graphql(client, other_tenant, query)
        assert data["data"][name] is None, (name, data)
    lists = ("{ gateways { nodes { id } } }", "{ webhookEndpoints { nodes { id } } }",
             "{ webhookDeliveries { nodes { id } } }",
             f'{{ webhookDeliveries(runId: "{rid}") {{ nodes {{ id }} }} }}')
    for query in lists:
        data = await graphql(client, other_tenant, query)
        assert next(iter(data["data"].values()))["nodes"] == [], query

    writes = [
        (UPDATE_RUN, {"i": {"id": rid, "appendLog": {"message": "x"}}}, "updateRun"),
        ('mutation($id: ID!) { cancelRun(id: $id) { __typename } }', {"id": rid}, "cancelRun"),
        (CREATE_RUN, {"p": pid, "s": "RUNNING"}, "createRun"),
        ('mutation($g: ID!) { revokeGateway(id: $g) { __typename } }',
         {"g": gw["gateway"]["id"]}, "revokeGateway"),
        ('mutation($g: ID!) { issueGatewayToken(input: {gatewayId: $g}) { __typename } }',
         {"g": gw["gateway"]["id"]}, "issueGatewayToken"),
        ('mutation($id: ID!) { rotateWebhookSecret(id: $id) { __typename } }',
         {"id": endpoint["id"]}, "rotateWebhookSecret"),
        ('mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { __typename } }',
         {"id": endpoint["id"]}, "deleteWebhookEndpoint"),
        ('mutation($id: ID!) { redeliverWebhook(id: $id) { __typename } }',
         {"id": str(delivery.id)}, "redeliverWebhook"),
        (WEBHOOK, {"i": {"url": "http://127.0.0.1:9/y", "pipelineId": pid}},
         "setWebhookEndpoint"),
    ]
    for query, variables, name in writes:
        data = await graphql(client, other_tenant, query, **variables)
        typename = data["data"][name]["__typename"]
        assert typename in {"NotFoundError", "InvalidInputError"}, (name, data)
    run = await Run.get(id=int(rid))
    assert run.status == RunStatus.SUCCEEDED and run.log_seq == 0
    assert (await WebhookDelivery.get()).attempts == 0


# ----------------------------------------------------------------- live subscription (WebSocket)


SUBSCRIBE = """subscription($id: ID!) { runUpdates(id: $id) {
  run { status telemetrySummary { progress } }
  newLogLines { seq message } newSamples { rows } } }"""


@contextlib.asynccontextmanager
async def subscription(url: str, payload: dict, run_id: str) -> AsyncIterator[Any]:
    async with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=5) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack["type"] == "connection_ack", ack
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": SUBSCRIBE, "variables": {"id": run_id}}}))
        yield ws


async def next_update(ws) -> dict:
    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "next", message
    assert "errors" not in message["payload"], message
    return message["payload"]["data"]["runUpdates"]


async def test_subscription_follows_a_run_live(client, tenant, live_url):
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    auth = {"Authorization": f"Bearer {tenant.tokens['read']}"}
    async with subscription(live_url, auth, rid) as ws:
        first = await next_update(ws)
        assert first["run"]["status"] == "RUNNING" and first["newLogLines"] == []
        await update(client, tenant, id=rid, appendLog={"message": "one"},
                     appendTelemetrySample={"rows": 5}, telemetrySummary={"progress": 40})
        second = await next_update(ws)
        assert second["newLogLines"] == [{"seq": 1, "message": "one"}]
        assert second["newSamples"] == [{"rows": 5}]
        assert second["run"]["telemetrySummary"]["progress"] == 40
        r = await client.patch(f"/api/elt/runs/{rid}", json={
            "appendLog": {"message": "two"}}, headers=tenant.headers("write"))
        assert r.status_code == 200
        third = await next_update(ws)
        assert third["newLogLines"] == [{"seq": 2, "message": "two"}]
        await update(client, tenant, id=rid, status="SUCCEEDED")
        last = await next_update(ws)
        assert last["run"]["status"] == "SUCCEEDED"
        done = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert done == {"id": "1", "type": "complete"}


async def test_subscription_sees_changes_made_elsewhere(client, tenant, live_url, settings):
    """A change that does not go through this process's signals (another replica, a worker)
    still arrives: on PostgreSQL through its notification (sent here as another process
    would), on SQLite through the periodic re-read of each watched run."""
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    auth = {"Authorization": f"Bearer {tenant.tokens['read']}"}
    async with subscription(live_url, auth, rid) as ws:
        await next_update(ws)
        await Run.filter(id=int(rid)).update(status=RunStatus.FAILED, error="elsewhere")
        if settings.database_url.startswith("asyncpg"):
            other = await asyncpg.connect(
                settings.database_url.replace("asyncpg://", "postgresql://").split("?")[0])
            try:
                await other.execute("SELECT pg_notify($1, $2)", notify.CHANNEL,
                                    f"{tenant.org_id}:{rid}")
            finally:
                await other.close()
        update_ = await asyncio.wait_for(next_update(ws), settings.live_poll_seconds + 5)
        assert update_["run"]["status"] == "FAILED"


async def test_subscription_authentication(client, tenant, other_tenant, live_url):
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    # a foreign run is not found
    async with subscription(live_url, {"Authorization": f"Bearer {other_tenant.tokens['read']}"},
                            rid) as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert message["type"] == "error" or message["payload"].get("errors"), message
    # an invalid token is refused at connection_init
    async with connect(live_url, subprotocols=["graphql-transport-ws"], open_timeout=5) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": "Bearer rw_nope_nope"}}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 4403
    # no token: the subscription is an UNAUTHENTICATED error
    async with subscription(live_url, {}, rid) as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED", message
