"""Shared helpers of the ELT-runs contract tests (`test_elt_rest.py`, `test_elt_concurrency.py`):
gateways with their tokens, REST calls that set up pipelines and runs, and the contract's
response-shape assertions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.gateways import create_gateway
from tests.conftest import Tenant

ELT = "/api/elt"
AGENT = "/api/agent"

# Every key of a run body (GET and POST answers); PATCH answers leave out `logEntries` and
# `telemetry.samples`.
RUN_KEYS = {
    "id", "pipelineId", "status", "timedOut", "environment", "correlationId", "triggeredBy",
    "partitionColumn", "partitionValue", "targetGatewayId", "gatewayId", "startedAt",
    "finishedAt", "deadlineAt", "errorSummary", "cancel", "logEntriesDropped",
    "telemetrySamplesDropped", "createdAt", "updatedAt", "logEntries", "telemetry",
    # what eltPulse's Runs page and gateways read beside the run (not in PATCH answers)
    "pipeline", "targetAgentToken", "webhookStatus", "ingestionExecutor",
}
PATCH_RUN_KEYS = RUN_KEYS - {"logEntries", "pipeline", "targetAgentToken", "webhookStatus",
                             "ingestionExecutor"}
PIPELINE_KEYS = {"id", "name", "kind", "description", "maxRuntimeSeconds", "connectionId",
                 "destinationConnectionId", "sourceConnectionId", "createdAt", "tool",
                 "sourceType", "destinationType", "sourceConfiguration", "pipelineCode",
                 "configYaml", "workspaceYaml", "groupName", "enabled", "updatedAt"}
WEBHOOK_KEYS = {"id", "url", "secret", "eventTypes", "enabled", "pipelineId", "createdAt",
                "updatedAt"}
GATEWAY_KEYS = {"id", "name", "lastSeenAt", "version", "labels"}


@dataclass
class Agent:
    """A gateway of an organisation and its bearer token (for the /api/agent/ routes)."""

    id: int
    name: str
    token: str
    org_id: int

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def admin_of(tenant: Tenant) -> Caller:
    return Caller(organisation_id=tenant.org_id, scopes=frozenset({Scope.ADMIN}))


async def make_gateway(tenant: Tenant, name: str = "gw-1") -> Agent:
    gateway, issued = await create_gateway(caller=admin_of(tenant), name=name)
    return Agent(id=gateway.id, name=name, token=issued.token, org_id=tenant.org_id)


# ----------------------------------------------------------------------------------------------
# time


def when(text: Any) -> datetime:
    """A contract timestamp: ISO 8601 in UTC with a `Z`."""
    assert isinstance(text, str) and text.endswith("Z"), text
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0), text
    return moment


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------------------------
# calls


async def create_pipeline(
    client: httpx.AsyncClient, tenant: Tenant, name: str = "orders", **fields: Any
) -> dict[str, Any]:
    r = await client.post(f"{ELT}/pipelines", json={"name": name, **fields},
                          headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    return r.json()["pipeline"]


async def create_run(
    client: httpx.AsyncClient, tenant: Tenant, pipeline_id: str | int, **fields: Any
) -> dict[str, Any]:
    """A new run, pending (for a gateway to claim) unless `status` says otherwise (the
    contract's default, without `status`, is running)."""
    r = await client.post(f"{ELT}/runs", json={"pipelineId": pipeline_id, "status": "pending",
                                               **fields},
                          headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    return r.json()["run"]


async def get_run(client: httpx.AsyncClient, tenant: Tenant, run_id: str) -> dict[str, Any]:
    r = await client.get(f"{ELT}/runs/{run_id}", headers=tenant.headers("read"))
    assert r.status_code == 200, r.text
    return r.json()["run"]


async def patch_run(
    client: httpx.AsyncClient, tenant: Tenant, run_id: str, body: Any, scopes: str = "write"
) -> httpx.Response:
    return await client.patch(f"{ELT}/runs/{run_id}", json=body, headers=tenant.headers(scopes))


async def agent_patch(
    client: httpx.AsyncClient, agent: Agent, run_id: str, body: Any
) -> httpx.Response:
    return await client.patch(f"{AGENT}/runs/{run_id}", json=body, headers=agent.headers())


async def agent_get(client: httpx.AsyncClient, agent: Agent, run_id: str) -> httpx.Response:
    return await client.get(f"{AGENT}/runs/{run_id}", headers=agent.headers())


async def claim(client: httpx.AsyncClient, agent: Agent, run_id: str) -> dict[str, Any]:
    r = await agent_patch(client, agent, run_id, {"status": "running"})
    assert r.status_code == 200, r.text
    return r.json()["run"]


# ----------------------------------------------------------------------------------------------
# assertions


def assert_error(r: httpx.Response, status: int, message: str | None = None) -> str:
    """`{"error": "<non-empty message>"}` (perhaps with `cancel`) with this status."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) <= {"error", "cancel"} and "error" in body, body
    assert isinstance(body["error"], str) and body["error"], body
    if message is not None:
        assert body["error"] == message, body
    return body["error"]


def field_error_problem(r: httpx.Response, *fields: str) -> str | None:
    """What is wrong with `r` as a 400 `{"error": {"field": ["message", ...]}}` naming every
    one of `fields` (None: nothing). For table-driven tests that report every failing case."""
    if r.status_code != 400:
        return f"status {r.status_code}: {r.text[:300]}"
    body = r.json()
    errors = body.get("error") if isinstance(body, dict) else None
    if list(body) != ["error"] or not isinstance(errors, dict) or not errors:
        return f"not a field-error body: {body}"
    missing = [name for name in fields if name not in errors]
    if missing:
        return f"{missing} not named in {errors}"
    for messages in errors.values():
        if not (isinstance(messages, list) and messages
                and all(isinstance(m, str) and m for m in messages)):
            return f"messages are not a list of strings: {errors}"
    return None


def assert_field_error(r: httpx.Response, *fields: str) -> dict[str, list[str]]:
    """400 `{"error": {"field": ["message", ...]}}` naming every one of `fields`."""
    problem = field_error_problem(r, *fields)
    assert problem is None, problem
    return r.json()["error"]


def assert_no_failures(failures: list[str]) -> None:
    assert not failures, f"{len(failures)} case(s) failed:\n" + "\n".join(failures)
