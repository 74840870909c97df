"""REST contract of ELT runs: `/api/elt/` (people and services, `read`/`write` scopes) and
`/api/agent/` (gateways, with their own tokens).

Routes, auth, wire format (camelCase, string ids, `{"run": …}` envelopes, `{"error": …}`
errors), the run state machine and the gateway claim, capped logs and telemetry samples,
scrubbing, pipelines, webhook settings, gateway manifest and heartbeat, tenancy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from runwatch.models import Gateway, Pipeline, Run, RunLogLine, WebhookEndpoint
from runwatch.resolvers.gateways import revoke_gateway
from tests.conftest import Tenant
from tests.elt_helpers import (
    AGENT,
    ELT,
    GATEWAY_KEYS,
    PATCH_RUN_KEYS,
    PIPELINE_KEYS,
    RUN_KEYS,
    WEBHOOK_KEYS,
    Agent,
    admin_of,
    agent_get,
    agent_patch,
    assert_error,
    assert_field_error,
    assert_no_failures,
    claim,
    create_pipeline,
    create_run,
    field_error_problem,
    get_run,
    iso,
    make_gateway,
    now,
    patch_run,
    when,
)

RUN_NOT_FOUND = {"error": "Run not found"}
PIPELINE_NOT_FOUND = {"error": "Pipeline not found"}
ALREADY_CLAIMED = {"error": "Already claimed by another gateway"}
RW = "read,write,report"  # for calls that are not about scopes


@pytest.fixture
async def pipeline(client, tenant) -> dict[str, Any]:
    return await create_pipeline(client, tenant, "orders")


@pytest.fixture
async def gateway(tenant) -> Agent:
    return await make_gateway(tenant, "gw-1")


@pytest.fixture
async def gateway2(tenant) -> Agent:
    return await make_gateway(tenant, "gw-2")


@pytest.fixture
async def run(client, tenant, pipeline) -> dict[str, Any]:
    """A pending run of `pipeline`."""
    return await create_run(client, tenant, pipeline["id"])


@pytest.fixture
async def running(client, tenant, pipeline, gateway) -> dict[str, Any]:
    """A run of `pipeline` claimed by `gateway`."""
    created = await create_run(client, tenant, pipeline["id"])
    return await claim(client, gateway, created["id"])


async def stored_runs(tenant: Tenant) -> list[Run]:
    return await Run.filter(organisation_id=tenant.org_id).order_by("id")


def param_id(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={param_id(v)}" for k, v in value.items())[:60]
    if isinstance(value, list):
        return f"list{len(value)}"
    return repr(value)[:40] if not isinstance(value, str) else value[:40]


# ----------------------------------------------------------------------------------------------
# routes and auth

# (method, path template, body): every route of the contract. `{run}`, `{pipeline}` are filled
# in by `world`.
PERSON_ROUTES = [
    ("GET", "/api/elt/runs", None),
    ("POST", "/api/elt/runs", {"pipelineId": "{pipeline}"}),
    ("GET", "/api/elt/runs/{run}", None),
    ("PATCH", "/api/elt/runs/{run}", {"appendLog": {"message": "hi"}}),
    ("GET", "/api/elt/runs/webhook", None),
    ("PUT", "/api/elt/runs/webhook", {"url": "http://127.0.0.1:9/hook"}),
    ("GET", "/api/elt/pipelines", None),
    ("POST", "/api/elt/pipelines", {"name": "new-one"}),
    ("GET", "/api/elt/pipelines/{pipeline}", None),
    ("PATCH", "/api/elt/pipelines/{pipeline}", {"description": "d"}),
    ("GET", "/api/elt/pipelines/{pipeline}/webhook", None),
    ("PUT", "/api/elt/pipelines/{pipeline}/webhook", {"url": "http://127.0.0.1:9/hook"}),
]
AGENT_ROUTES = [
    ("GET", "/api/agent/runs", None),
    ("GET", "/api/agent/runs/{run}", None),
    ("PATCH", "/api/agent/runs/{run}", {"appendLog": {"message": "hi"}}),
    ("GET", "/api/agent/manifest", None),
    ("POST", "/api/agent/heartbeat", {"version": "1.0"}),
]


def success(route: tuple[str, str, Any]) -> int:
    return 201 if route[0] == "POST" and route[1].startswith(ELT) else 200


def route_id(route: tuple[str, str, Any]) -> str:
    return f"{route[0]} {route[1]}"


@dataclass
class World:
    pipeline: str
    run: str
    gateway: Agent

    def fill(self, template: Any) -> Any:
        if isinstance(template, str):
            return template.replace("{run}", self.run).replace("{pipeline}", self.pipeline)
        if isinstance(template, dict):
            return {k: self.fill(v) for k, v in template.items()}
        return template


@pytest.fixture
async def world(client, tenant, pipeline, gateway, run) -> World:
    return World(pipeline=pipeline["id"], run=run["id"], gateway=gateway)


async def call(client, world: World, route, headers: dict[str, str], slash: str = ""):
    method, path, body = route
    kwargs = {} if body is None else {"json": world.fill(body)}
    return await client.request(method, world.fill(path) + slash, headers=headers, **kwargs)


ALL_ROUTES = PERSON_ROUTES + AGENT_ROUTES


def right_token(world: World, tenant: Tenant, route) -> dict[str, str]:
    return world.gateway.headers() if route[1].startswith(AGENT) else tenant.headers(RW)


# The webhook GETs are readable with `read` (eltPulse's settings page; the secret is shown
# to `write` only) and with `write` alone (which sets them).
READ_ROUTES = [r for r in PERSON_ROUTES if r[0] == "GET"]
WRITE_ROUTES = [r for r in PERSON_ROUTES if r[0] != "GET" or r[1].endswith("webhook")]
BAD_TOKENS = ["rw_nope_nope", "garbage", "rw_0000_" + "x" * 40]


async def nothing_changed(world: World) -> None:
    """The world as the fixture made it: one pending run without lines, one pipeline, no
    webhook, a gateway never seen."""
    assert [(r.status, r.log_seq) for r in await Run.all()] == [("pending", 0)]
    assert await Pipeline.all().count() == 1 and await WebhookEndpoint.all().count() == 0
    assert (await Gateway.get(id=world.gateway.id)).last_seen_at is None


@pytest.mark.parametrize("route", ALL_ROUTES, ids=route_id)
async def test_auth_and_trailing_slash(client, tenant, world, route):
    """Missing or bad token: 401 with WWW-Authenticate. The wrong kind of token (a gateway's on
    /api/elt/, a person's or service's on /api/agent/) or a missing scope: 403. Nothing
    changes. Then the right token works, with and without the trailing slash: `read` for GETs,
    `write` for writes and for the webhook GETs too; `admin` implies both."""
    for headers in ({}, *({"Authorization": f"Bearer {t}"} for t in BAD_TOKENS)):
        r = await call(client, world, route, headers)
        assert_error(r, 401)
        assert r.headers["www-authenticate"].lower().startswith("bearer"), headers
    if route in AGENT_ROUTES:
        refused = ["read", "write", "admin", "read,write,report"]
        assert_error(await call(client, world, route, tenant.headers("report")), 403)
    else:
        assert_error(await call(client, world, route, world.gateway.headers()), 403)
        refused = ["report"] if route in READ_ROUTES else ["read", "report"]
    for scopes in refused:
        assert_error(await call(client, world, route, tenant.headers(scopes)), 403)
    await nothing_changed(world)
    if route in AGENT_ROUTES:
        allowed = [world.gateway.headers()]
    else:
        allowed = [tenant.headers(s) for s in ("admin", "read,write,report")
                   + (("read",) if route in READ_ROUTES else ())]
    for i, headers in enumerate(allowed):
        for slash in ("", "/"):
            method, path, body = route
            if path == "/api/elt/pipelines" and method == "POST":  # a name is unique
                body = {"name": f"new-{i}-{len(slash)}"}
            r = await call(client, world, (method, path, body), headers, slash)
            assert r.status_code == success(route), (slash, r.text)
            assert r.headers["content-type"].startswith("application/json")


# Routes where a write-only token is refused (a bug outside the shim).
async def test_writes_work_with_the_write_scope_alone(client, tenant, world):
    for route in WRITE_ROUTES:
        r = await call(client, world, route, tenant.headers("write"))
        assert r.status_code == success(route), (route, r.text)


async def test_unknown_paths_are_404(client, tenant, world):
    for path in ("/api/elt/nope", "/api/elt/", "/api/elt/runs/1/logs",
                 "/api/elt/pipelines/1/runs", "/api/elt/runs/webhook/x", "/api/agent/nope",
                 "/api/agent/runs/1/cancel", "/api/agent/"):
        for headers in (tenant.headers("admin"), world.gateway.headers(), {}):
            r = await client.get(path, headers=headers)
            assert (r.status_code, list(r.json())) == (404, ["error"]), path
            # no route: said so, unlike an unknown id's "Not found."
            assert r.json()["error"].startswith(f"No such route: GET {path}."), r.json()


async def test_wrong_method_is_405(client, tenant, world):
    failures = []
    for method, path in [
        ("DELETE", "/api/elt/runs"), ("PUT", "/api/elt/runs"), ("PATCH", "/api/elt/runs"),
        ("DELETE", "/api/elt/runs/{run}"), ("POST", "/api/elt/runs/{run}"),
        ("PUT", "/api/elt/runs/{run}"), ("PATCH", "/api/elt/runs/webhook"),
        ("POST", "/api/elt/runs/webhook"), ("DELETE", "/api/elt/runs/webhook/"),
        ("DELETE", "/api/elt/pipelines/{pipeline}"), ("PUT", "/api/elt/pipelines"),
        ("POST", "/api/elt/pipelines/{pipeline}/webhook"), ("POST", "/api/agent/runs"),
        ("PUT", "/api/agent/runs/{run}"), ("POST", "/api/agent/manifest"),
        ("GET", "/api/agent/heartbeat"),
    ]:
        r = await client.request(method, world.fill(path), headers=tenant.headers("admin"))
        body = r.json()
        if not (r.status_code == 405 and list(body) == ["error"] and body["error"]
                and "allow" in r.headers):
            failures.append(f"{method} {path}: {r.status_code} {body}")
    assert_no_failures(failures)


NOT_JSON = [b'{"pipelineId": ', b"{'a': 1}", b"\xff\xfe", b"{]",
            b"[" * 100_000 + b"]" * 100_000]  # nested beyond the parser's depth
NOT_AN_OBJECT = [b"[]", b'["a"]', b'"x"', b"42", b"null", b"true"]


async def test_a_body_that_is_not_a_json_object_is_400(client, tenant, world):
    failures = []
    for route in [r for r in ALL_ROUTES if r[0] != "GET"]:
        headers = {**right_token(world, tenant, route), "Content-Type": "application/json"}
        for raw in NOT_JSON + NOT_AN_OBJECT:
            r = await client.request(route[0], world.fill(route[1]), content=raw,
                                     headers=headers)
            body = r.json()
            error = body.get("error") if isinstance(body, dict) else None
            if not (r.status_code == 400 and list(body) == ["error"] and isinstance(error, str)
                    and error.startswith("Invalid JSON: ") == (raw in NOT_JSON)):
                failures.append(f"{route_id(route)} {raw[:20]!r}: {r.status_code} {body}")
    assert_no_failures(failures)
    await nothing_changed(world)


# ----------------------------------------------------------------------------------------------
# create a run


async def test_create_returns_the_whole_run(client, tenant, pipeline, gateway):
    """Without `status` the run is created running (the reference's default): its creator
    (this token) runs it."""
    before = now()
    r = await client.post(f"{ELT}/runs", json={"pipelineId": pipeline["id"]},
                          headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    assert list(r.json()) == ["run"]
    body = r.json()["run"]
    assert set(body) == RUN_KEYS
    assert isinstance(body["id"], str) and body["id"].isdigit()
    created = when(body["createdAt"])
    assert before - timedelta(seconds=1) <= created <= now()
    assert when(body["updatedAt"]) >= created
    # eltPulse's reference (its clients read them): a UUID correlationId when none is sent,
    # startedAt stamped at creation (the claim sets the real start)
    assert str(uuid.UUID(body["correlationId"])) == body["correlationId"]
    started = when(body["startedAt"])
    assert before - timedelta(seconds=1) <= started <= now()
    # a token's running run has the deployment's default deadline (2 h)
    assert when(body["deadlineAt"]) == started + timedelta(hours=2)
    assert body == {
        "id": body["id"], "pipelineId": pipeline["id"], "status": "running", "timedOut": False,
        "environment": "default", "correlationId": body["correlationId"], "triggeredBy": None,
        "partitionColumn": None, "partitionValue": None, "targetGatewayId": None,
        "gatewayId": None, "startedAt": body["startedAt"], "finishedAt": None,
        "deadlineAt": body["deadlineAt"],
        "errorSummary": None, "cancel": False, "logEntriesDropped": 0,
        "telemetrySamplesDropped": 0, "createdAt": body["createdAt"],
        "updatedAt": body["updatedAt"], "logEntries": [],
        "telemetry": {"summary": {}, "samples": []},
        "pipeline": {"id": pipeline["id"], "name": pipeline["name"]},
        "targetAgentToken": None, "webhookStatus": None,
        "ingestionExecutor": "customer_control_plane",
    }
    assert await get_run(client, tenant, body["id"]) == body
    # a gateway is never offered it
    assert (await client.get(f"{AGENT}/runs", headers=gateway.headers())).json()["runs"] == []


async def test_create_with_every_field(client, tenant, pipeline, gateway):
    fields = {"environment": "prod", "correlationId": "ci-123", "triggeredBy": "airflow",
              "partitionColumn": "day", "partitionValue": "2026-01-31",
              "targetGatewayId": str(gateway.id)}
    body = await create_run(client, tenant, pipeline["id"], **fields)
    assert {k: body[k] for k in fields} == fields
    assert body["status"] == "pending" and body["gatewayId"] is None
    (row,) = await stored_runs(tenant)
    assert (row.environment, row.correlation_id, row.target_gateway_id) == (  # type: ignore
        "prod", "ci-123", gateway.id)


@pytest.mark.parametrize("as_type", [str, int], ids=["string", "int"])
async def test_ids_in_bodies_are_strings_or_integers(client, tenant, pipeline, gateway, as_type):
    body = await create_run(client, tenant, as_type(pipeline["id"]),
                            targetGatewayId=as_type(gateway.id))
    assert (body["pipelineId"], body["targetGatewayId"]) == (pipeline["id"], str(gateway.id))


async def test_create_running_starts_the_run(client, tenant):
    p = await create_pipeline(client, tenant, "short", maxRuntimeSeconds=600)
    before = now()
    body = await create_run(client, tenant, p["id"], status="running")
    assert body["status"] == "running"
    started = when(body["startedAt"])
    assert before - timedelta(seconds=1) <= started <= now()
    assert when(body["deadlineAt"]) == started + timedelta(seconds=600)
    assert body["gatewayId"] is None and body["finishedAt"] is None


INVALID_NEW_RUNS = [
    ({}, "pipelineId"),
    ({"pipelineId": None}, "pipelineId"),
    ({"pipelineId": "abc"}, "pipelineId"),
    ({"pipelineId": True}, "pipelineId"),
    ({"pipelineId": 1.5}, "pipelineId"),
    ({"pipelineId": "999999"}, "pipelineId"),
    ({"pipelineId": 0}, "pipelineId"),
    ({"pipelineId": "{pipeline}", "status": "succeeded"}, "status"),
    ({"pipelineId": "{pipeline}", "status": "cancelled"}, "status"),
    ({"pipelineId": "{pipeline}", "status": "timed_out"}, "status"),
    ({"pipelineId": "{pipeline}", "status": "bogus"}, "status"),
    ({"pipelineId": "{pipeline}", "environment": 5}, "environment"),
    ({"pipelineId": "{pipeline}", "environment": "e" * 101}, "environment"),
    ({"pipelineId": "{pipeline}", "correlationId": "c" * 201}, "correlationId"),
    ({"pipelineId": "{pipeline}", "correlationId": ["x"]}, "correlationId"),
    ({"pipelineId": "{pipeline}", "triggeredBy": {"a": 1}}, "triggeredBy"),
    ({"pipelineId": "{pipeline}", "triggeredBy": "t" * 257}, "triggeredBy"),
    ({"pipelineId": "{pipeline}", "partitionColumn": "p" * 257}, "partitionColumn"),
    ({"pipelineId": "{pipeline}", "partitionValue": "v" * 2049}, "partitionValue"),
    ({"pipelineId": "{pipeline}", "targetGatewayId": "abc"}, "targetGatewayId"),
    ({"pipelineId": "{pipeline}", "targetGatewayId": "999999"}, "targetGatewayId"),
    ({"pipelineId": "{pipeline}", "id": "5"}, "id"),
    ({"pipelineId": "{pipeline}", "logEntries": []}, "logEntries"),
    ({"pipelineId": "{pipeline}", "startedAt": "2026-01-01T00:00:00Z"}, "startedAt"),
    ({"pipelineId": "{pipeline}", "foo_bar": 1}, "foo_bar"),
    # snake_case spellings are not the wire's names: unknown keys, named as sent
    ({"pipeline_id": "{pipeline}"}, "pipeline_id"),
    ({"pipelineId": "{pipeline}", "correlation_id": "c"}, "correlation_id"),
]


async def test_invalid_new_run_is_400_naming_the_field(client, tenant, pipeline):
    failures = []
    for body, field in INVALID_NEW_RUNS:
        body = {k: (pipeline["id"] if v == "{pipeline}" else v) for k, v in body.items()}
        r = await client.post(f"{ELT}/runs", json=body, headers=tenant.headers("write"))
        if problem := field_error_problem(r, field):
            failures.append(f"{param_id(body)}: {problem}")
    assert_no_failures(failures)
    assert await stored_runs(tenant) == []


async def test_foreign_pipeline_or_gateway_is_400(client, tenant, other_tenant, pipeline):
    theirs = await create_pipeline(client, other_tenant, "orders")
    their_gateway = await make_gateway(other_tenant, "gw-1")
    r = await client.post(f"{ELT}/runs", json={"pipelineId": theirs["id"]},
                          headers=tenant.headers("write"))
    assert_field_error(r, "pipelineId")
    r = await client.post(f"{ELT}/runs", json={"pipelineId": pipeline["id"],
                                               "targetGatewayId": str(their_gateway.id)},
                          headers=tenant.headers("write"))
    assert_field_error(r, "targetGatewayId")
    assert await stored_runs(tenant) == [] and await stored_runs(other_tenant) == []


async def test_a_revoked_gateway_cannot_be_targeted(client, tenant, pipeline, gateway):
    await revoke_gateway(caller=admin_of(tenant), gateway_id=gateway.id)
    r = await client.post(f"{ELT}/runs", json={"pipelineId": pipeline["id"],
                                               "targetGatewayId": gateway.id},
                          headers=tenant.headers("write"))
    assert_field_error(r, "targetGatewayId")


async def test_duplicate_correlation_id_is_409(client, tenant, other_tenant, pipeline):
    first = await create_run(client, tenant, pipeline["id"], correlationId="job-1")
    r = await client.post(f"{ELT}/runs", json={"pipelineId": pipeline["id"],
                                               "correlationId": "job-1"},
                          headers=tenant.headers("write"))
    assert_error(r, 409)
    assert [str(r.id) for r in await stored_runs(tenant)] == [first["id"]]
    # unique per organisation only
    theirs = await create_pipeline(client, other_tenant, "orders")
    other = await create_run(client, other_tenant, theirs["id"], correlationId="job-1")
    assert other["correlationId"] == "job-1"
    # runs without a correlationId do not collide
    await create_run(client, tenant, pipeline["id"])
    await create_run(client, tenant, pipeline["id"])


# ----------------------------------------------------------------------------------------------
# read one


async def test_unknown_run_ids_are_404(client, tenant, run, gateway):
    failures = []
    for ident in ("999999", "0", "abc", "-1", "1.0", "99999999999999999999", "1%20"):
        for what, r in (
            ("GET", await client.get(f"{ELT}/runs/{ident}", headers=tenant.headers("read"))),
            ("PATCH", await patch_run(client, tenant, ident, {"appendLog": {"message": "x"}})),
            ("agent GET", await agent_get(client, gateway, ident)),
            ("agent PATCH", await agent_patch(client, gateway, ident, {"status": "running"})),
        ):
            if (r.status_code, r.json()) != (404, RUN_NOT_FOUND):
                failures.append(f"{what} {ident}: {r.status_code} {r.text}")
    assert_no_failures(failures)
    assert (await get_run(client, tenant, run["id"])) == run


async def test_get_shows_logs_and_samples(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {
        "appendLog": {"level": "warn", "message": "slow"},
        "appendTelemetrySample": {"at": "2026-01-31T12:00:00Z", "rows": 10},
        "telemetrySummary": {"rowsLoaded": 10, "progress": 12.5},
    })
    assert r.status_code == 200, r.text
    body = await get_run(client, tenant, run["id"])
    assert set(body) == RUN_KEYS
    (line,) = body["logEntries"]
    assert (line["level"], line["message"]) == ("warn", "slow")
    assert set(line) == {"at", "level", "message"}
    assert body["telemetry"]["samples"] == [{"at": "2026-01-31T12:00:00Z", "rows": 10}]
    summary = body["telemetry"]["summary"]
    assert set(summary) == {"rowsLoaded", "progress", "updatedAt"}
    assert (summary["rowsLoaded"], summary["progress"]) == (10, 12.5)


# ----------------------------------------------------------------------------------------------
# list


async def test_list_is_newest_first_with_logs_and_samples(client, tenant, pipeline):
    ids = [(await create_run(client, tenant, pipeline["id"]))["id"] for _ in range(3)]
    await patch_run(client, tenant, ids[0], {"appendLog": {"message": "first"}})
    r = await client.get(f"{ELT}/runs", headers=tenant.headers("read"))
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["runs"]
    runs = r.json()["runs"]
    assert [x["id"] for x in runs] == ids[::-1]
    assert all(set(x) == RUN_KEYS for x in runs)
    assert [line["message"] for line in runs[2]["logEntries"]] == ["first"]
    assert runs[2] == await get_run(client, tenant, ids[0])


async def test_list_is_empty_for_a_new_organisation(client, tenant):
    r = await client.get(f"{ELT}/runs", headers=tenant.headers("read"))
    assert (r.status_code, r.json()) == (200, {"runs": []})


async def bulk_runs(tenant: Tenant, pipeline_id: str, n: int, **fields: Any) -> list[str]:
    await Run.bulk_create([
        Run(organisation_id=tenant.org_id, pipeline_id=int(pipeline_id), **fields)
        for _ in range(n)
    ])
    return [str(r.id) for r in await stored_runs(tenant)]


async def test_list_limit_is_clamped(client, tenant, pipeline):
    ids = (await bulk_runs(tenant, pipeline["id"], 205))[::-1]
    for query, expected in (
        ("", 50), ("limit=10", 10), ("limit=1", 1), ("limit=0", 1), ("limit=-5", 1),
        ("limit=200", 200), ("limit=201", 200), ("limit=100000", 200), ("limit=", 50),
    ):
        r = await client.get(f"{ELT}/runs?{query}", headers=tenant.headers("read"))
        assert r.status_code == 200, (query, r.text)
        assert [x["id"] for x in r.json()["runs"]] == ids[:expected], query


async def test_a_limit_that_is_not_an_integer_is_ignored(client, tenant, pipeline, gateway):
    """eltPulse's reference ignores a `limit` that is not an integer (its default applies);
    its clients rely on it, so runwatch does the same (it was a 400)."""
    await bulk_runs(tenant, pipeline["id"], 7)
    failures = []
    for value in ("abc", "1.5", "--5", "-", "1e3", "10abc", " ", "٣", "99999999999"):
        for path, headers, key, expected in (
                (f"{ELT}/runs", tenant.headers("read"), "runs", 7),
                (f"{ELT}/pipelines", tenant.headers("read"), "pipelines", 1),
                (f"{AGENT}/runs", gateway.headers(), "runs", 5)):
            r = await client.get(path, params={"limit": value}, headers=headers)
            if r.status_code != 200 or len(r.json()[key]) != expected:
                failures.append(f"{path}?limit={value!r}: {r.status_code} {r.text[:200]}")
    assert_no_failures(failures)


async def test_before_pages_to_older_runs(client, tenant, pipeline):
    ids = (await bulk_runs(tenant, pipeline["id"], 5))[::-1]  # newest first
    seen: list[str] = []
    query = "limit=2"
    while True:
        r = await client.get(f"{ELT}/runs?{query}", headers=tenant.headers("read"))
        assert r.status_code == 200, r.text
        page = [x["id"] for x in r.json()["runs"]]
        if not page:
            break
        seen += page
        query = f"limit=2&before={page[-1]}"
    assert seen == ids
    for before in (ids[-1], "0", "abc", "-1", "99999999999999999999"):
        r = await client.get(f"{ELT}/runs?before={before}", headers=tenant.headers("read"))
        assert (r.status_code, r.json()) == (200, {"runs": []}), before
    r = await client.get(f"{ELT}/runs?before={int(ids[0]) + 100}&limit=2",
                         headers=tenant.headers("read"))
    assert [x["id"] for x in r.json()["runs"]] == ids[:2]
    r = await client.get(f"{ELT}/runs?before=", headers=tenant.headers("read"))
    assert [x["id"] for x in r.json()["runs"]] == ids


async def test_list_filters(client, tenant, pipeline, gateway):
    other = await create_pipeline(client, tenant, "customers")
    a = await create_run(client, tenant, pipeline["id"], environment="prod")
    b = await create_run(client, tenant, other["id"])
    c = await claim(client, gateway, (await create_run(client, tenant, pipeline["id"]))["id"])
    d = await create_run(client, tenant, other["id"], environment="prod")
    assert (await patch_run(client, tenant, d["id"], {"status": "cancelled"})).status_code == 200

    async def ids(query: str) -> list[str]:
        r = await client.get(f"{ELT}/runs?{query}", headers=tenant.headers("read"))
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["runs"]]

    assert await ids(f"pipelineId={pipeline['id']}") == [c["id"], a["id"]]
    assert await ids(f"pipelineId={other['id']}") == [d["id"], b["id"]]
    assert await ids("pipelineId=999999") == []
    assert await ids("pipelineId=abc") == []
    assert await ids("status=pending") == [b["id"], a["id"]]
    assert await ids("status=running") == [c["id"]]
    assert await ids("status=running,cancelled") == [d["id"], c["id"]]
    assert await ids("status=succeeded") == []
    assert await ids("environment=prod") == [d["id"], a["id"]]
    assert await ids("environment=default") == [c["id"], b["id"]]
    assert await ids(f"environment=prod&pipelineId={pipeline['id']}") == [a["id"]]
    assert await ids(f"status=pending&pipelineId={other['id']}&limit=1") == [b["id"]]


async def test_unknown_status_filters_are_ignored(client, tenant, pipeline, gateway):
    """The reference ignores unknown statuses in `status=` (it was a 400)."""
    run = await create_run(client, tenant, pipeline["id"])
    for path in (f"{ELT}/runs", f"{AGENT}/runs"):
        headers = gateway.headers() if path.startswith(AGENT) else tenant.headers("read")
        for status in ("bogus", "pending,nope", "PENDINGX"):
            r = await client.get(path, params={"status": status}, headers=headers)
            assert r.status_code == 200, (path, status, r.text)
            assert [x["id"] for x in r.json()["runs"]] == [run["id"]], (path, status)


async def test_lists_never_show_another_organisations_runs(client, tenant, other_tenant,
                                                           pipeline):
    mine = await create_run(client, tenant, pipeline["id"])
    theirs_pipeline = await create_pipeline(client, other_tenant, "orders")
    theirs = await create_run(client, other_tenant, theirs_pipeline["id"])
    for query in ("", f"pipelineId={theirs_pipeline['id']}", f"before={int(theirs['id']) + 1}"):
        r = await client.get(f"{ELT}/runs?{query}", headers=tenant.headers("read"))
        assert theirs["id"] not in [x["id"] for x in r.json()["runs"]], query
    r = await client.get(f"{ELT}/runs", headers=tenant.headers("read"))
    assert [x["id"] for x in r.json()["runs"]] == [mine["id"]]


# ----------------------------------------------------------------------------------------------
# PATCH: wire shape


async def test_patch_answers_without_logs_and_samples(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {
        "appendLog": {"message": "one"},
        "appendTelemetrySample": {"rows": 1},
        "telemetrySummary": {"rowsLoaded": 1},
    })
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["run"]
    body = r.json()["run"]
    assert set(body) == PATCH_RUN_KEYS
    assert set(body["telemetry"]) == {"summary"}
    assert body["telemetry"]["summary"]["rowsLoaded"] == 1
    full = await get_run(client, tenant, run["id"])
    assert {k: v for k, v in full.items() if k in PATCH_RUN_KEYS - {"telemetry"}} == {
        k: v for k, v in body.items() if k != "telemetry"}
    assert full["telemetry"]["summary"] == body["telemetry"]["summary"]


async def test_agent_answers_carry_cancel(client, gateway, run):
    r = await agent_get(client, gateway, run["id"])
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"run", "cancel"} and r.json()["cancel"] is False
    assert set(r.json()["run"]) == RUN_KEYS
    r = await agent_patch(client, gateway, run["id"], {"status": "running"})
    assert set(r.json()) == {"run", "cancel"} and r.json()["cancel"] is False
    assert set(r.json()["run"]) == PATCH_RUN_KEYS
    assert set(r.json()["run"]["telemetry"]) == {"summary"}


async def test_patch_updates_updated_at(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {"appendLog": {"message": "x"}})
    assert when(r.json()["run"]["updatedAt"]) >= when(run["updatedAt"])
    assert r.json()["run"]["createdAt"] == run["createdAt"]


async def test_an_empty_patch_changes_nothing(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {})
    assert r.status_code == 200, r.text
    body = await get_run(client, tenant, run["id"])
    assert {k: v for k, v in body.items() if k != "updatedAt"} == {
        k: v for k, v in run.items() if k != "updatedAt"}


INVALID_PATCHES = [
    ({"foo": 1}, "foo"),
    ({"foo_bar": 1}, "foo_bar"),
    ({"id": "1"}, "id"),
    ({"environment": "prod"}, "environment"),
    ({"cancel": True}, "cancel"),
    # snake_case spellings are not the wire's names
    ({"append_log": {"message": "x"}}, "append_log"),
    ({"error_summary": "boom"}, "error_summary"),
    ({"status": "bogus"}, "status"),
    ({"status": 3}, "status"),
    ({"appendLog": "text"}, "appendLog"),
    ({"appendLog": {"message": "x", "foo": 1}}, "appendLog.foo"),
    ({"appendLog": {"message": "x", "at": "2026-01-01T00:00:00Z"}}, "appendLog.at"),
    ({"appendLog": {"message": "x", "level": "debug"}}, "appendLog.level"),
    ({"appendLog": {"message": "x", "level": 1}}, "appendLog.level"),
    ({"appendLog": {"level": "info"}}, "appendLog.message"),
    ({"appendLog": {"message": 5}}, "appendLog.message"),
    ({"logEntries": "x"}, "logEntries"),
    ({"logEntries": {"message": "x"}}, "logEntries"),
    ({"logEntries": [{"message": "a"}, {"message": "b"}, {"message": "c"}, {"level": "info"}]},
     "logEntries[3].message"),
    ({"logEntries": [{"message": "a", "at": "yesterday"}]}, "logEntries[0].at"),
    ({"logEntries": [{"message": "a", "level": "loud"}]}, "logEntries[0].level"),
    ({"logEntries": [{"message": "a", "extra": 1}]}, "logEntries[0].extra"),
    ({"logEntries": ["a"]}, "logEntries[0]"),
    ({"logEntries": [{"message": "x"}] * 501}, "logEntries"),
    ({"errorSummary": 5}, "errorSummary"),
    ({"errorSummary": ["a"]}, "errorSummary"),
    ({"finishedAt": "soon", "status": "cancelled"}, "finishedAt"),
    ({"finishedAt": 5, "status": "cancelled"}, "finishedAt"),
    ({"telemetrySummary": "x"}, "telemetrySummary"),
    ({"telemetrySummary": {"rows": 1}}, "telemetrySummary.rows"),
    ({"telemetrySummary": {"rowsLoaded": -1}}, "telemetrySummary.rowsLoaded"),
    ({"telemetrySummary": {"rowsLoaded": "10"}}, "telemetrySummary.rowsLoaded"),
    ({"telemetrySummary": {"rowsLoaded": True}}, "telemetrySummary.rowsLoaded"),
    ({"telemetrySummary": {"bytesLoaded": -1}}, "telemetrySummary.bytesLoaded"),
    ({"telemetrySummary": {"progress": 101}}, "telemetrySummary.progress"),
    ({"telemetrySummary": {"progress": -0.5}}, "telemetrySummary.progress"),
    ({"telemetrySummary": {"progress": "50"}}, "telemetrySummary.progress"),
    ({"telemetrySummary": {"currentPhase": 5}}, "telemetrySummary.currentPhase"),
    ({"telemetrySummary": {"currentPhase": "p" * 257}}, "telemetrySummary.currentPhase"),
    ({"telemetrySummary": {"currentResource": ["a"]}}, "telemetrySummary.currentResource"),
    ({"telemetrySummary": {"currentResource": "r" * 513}}, "telemetrySummary.currentResource"),
    ({"appendTelemetrySample": []}, "appendTelemetrySample"),
    ({"appendTelemetrySample": {"foo": 1}}, "appendTelemetrySample.foo"),
    ({"appendTelemetrySample": {"rows": -1}}, "appendTelemetrySample.rows"),
    ({"appendTelemetrySample": {"bytes": "1"}}, "appendTelemetrySample.bytes"),
    ({"appendTelemetrySample": {"bytesDelta": "x"}}, "appendTelemetrySample.bytesDelta"),
    ({"appendTelemetrySample": {"progress": 100.1}}, "appendTelemetrySample.progress"),
    ({"appendTelemetrySample": {"at": "noon"}}, "appendTelemetrySample.at"),
    ({"appendTelemetrySample": {"phase": 1}}, "appendTelemetrySample.phase"),
    ({"appendTelemetrySample": {"resource": "r" * 513}}, "appendTelemetrySample.resource"),
    ({"telemetrySamples": {}}, "telemetrySamples"),
    ({"telemetrySamples": [{"rows": 1}, {"rows": -1}]}, "telemetrySamples[1].rows"),
    ({"telemetrySamples": [{"rows": 1}] * 2001}, "telemetrySamples"),
]


async def test_what_eltpulse_clients_send_back_is_accepted(client, tenant, run, gateway):
    """`telemetrySummary.updatedAt` (GET returns it) is ignored; numbers where counts are
    expected are rounded down (JavaScript clients send 12.0 or a computed 12.5)."""
    r = await patch_run(client, tenant, run["id"], {
        "telemetrySummary": {"rowsLoaded": 12.5, "bytesLoaded": 7.0,
                             "updatedAt": "2020-01-01T00:00:00Z"},
        "appendTelemetrySample": {"rows": 12.9, "rowsDelta": -0.5}})
    assert r.status_code == 200, r.text
    summary = r.json()["run"]["telemetry"]["summary"]
    assert (summary["rowsLoaded"], summary["bytesLoaded"]) == (12, 7)
    assert when(summary["updatedAt"]) > when("2026-01-01T00:00:00Z")
    [sample] = (await get_run(client, tenant, run["id"]))["telemetry"]["samples"]
    assert (sample["rows"], sample["rowsDelta"]) == (12, -1)


WIRE_PATCH_FIELDS = ("status", "appendLog", "logEntries", "errorSummary", "finishedAt",
                     "telemetrySummary", "appendTelemetrySample", "telemetrySamples")


def patch_group(body: dict[str, Any]) -> str:
    return next((k for k in body if k in WIRE_PATCH_FIELDS), "unknown keys")


@pytest.mark.parametrize("group", ["unknown keys", *WIRE_PATCH_FIELDS])
async def test_invalid_patch_is_400_naming_the_field_and_changes_nothing(
    client, tenant, run, gateway, group
):
    await patch_run(client, tenant, run["id"], {"appendLog": {"message": "kept"}})
    before = await get_run(client, tenant, run["id"])
    failures = []
    cases = [(b, f) for b, f in INVALID_PATCHES if patch_group(b) == group]
    assert cases
    for body, field in cases:
        for who, r in (("person", await patch_run(client, tenant, run["id"], body)),
                       ("gateway", await agent_patch(client, gateway, run["id"], body))):
            if problem := field_error_problem(r, field):
                failures.append(f"{who} {param_id(body)}: {problem}")
    assert_no_failures(failures)
    assert await get_run(client, tenant, run["id"]) == before


async def test_every_invalid_field_is_reported(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {
        "status": "bogus", "appendLog": {"level": "x", "message": "m"},
        "telemetrySummary": {"progress": 500},
    })
    assert_field_error(r, "status", "appendLog.level", "telemetrySummary.progress")


# ----------------------------------------------------------------------------------------------
# PATCH: the state machine


async def run_in(client, tenant, pipeline, gateway, status: str) -> dict[str, Any]:
    """A run in `status`: pending, running (claimed by `gateway`) or terminal (from running)."""
    created = await create_run(client, tenant, pipeline["id"])
    if status == "pending":
        return created
    body = await claim(client, gateway, created["id"])
    if status == "running":
        return body
    r = await agent_patch(client, gateway, created["id"], {"status": status})  # the runner
    assert r.status_code == 200, r.text
    return r.json()["run"]


ALLOWED_MOVES = {
    "pending": ["running", "cancelled", "pending"],
    # (a gateway's `running` on a running run is a claim of a run no longer pending: 409,
    # test_claiming_again_is_refused_for_the_claimant_too)
    "running": ["succeeded", "failed", "cancelled"],
    # a terminal run: the same status again is a no-op
    "succeeded": ["succeeded"], "failed": ["failed"], "cancelled": ["cancelled"],
}
REFUSED_MOVES = {
    "pending": ["succeeded", "failed", "timed_out"],
    "running": ["pending", "timed_out"],
    "succeeded": ["running", "failed", "pending", "cancelled", "timed_out"],
    "failed": ["running", "succeeded", "pending", "cancelled"],
    "cancelled": ["running", "succeeded", "failed", "pending"],
}


@pytest.mark.parametrize("start", list(ALLOWED_MOVES))
async def test_allowed_moves(client, tenant, pipeline, gateway, start):
    for target in ALLOWED_MOVES[start]:
        current = await run_in(client, tenant, pipeline, gateway, start)
        if start == "running":  # the runner (the claiming gateway) moves a running run
            r = await agent_patch(client, gateway, current["id"], {"status": target})
        else:
            r = await patch_run(client, tenant, current["id"], {"status": target})
        assert r.status_code == 200, (target, r.text)
        body = r.json()["run"]
        assert body["status"] == target
        if start == target:  # nothing changes
            assert {k: v for k, v in body.items() if k not in ("updatedAt", "telemetry")} == {
                k: v for k, v in current.items()
                if k in PATCH_RUN_KEYS - {"updatedAt", "telemetry"}}, target


@pytest.mark.parametrize("start", list(REFUSED_MOVES))
async def test_refused_moves_are_409_and_change_nothing(client, tenant, pipeline, gateway,
                                                        start):
    current = await run_in(client, tenant, pipeline, gateway, start)
    before = await get_run(client, tenant, current["id"])
    for target in REFUSED_MOVES[start]:
        for who, r in (
            ("person", await patch_run(client, tenant, current["id"],
                                       {"status": target, "appendLog": {"message": "no"}})),
            ("gateway", await agent_patch(client, gateway, current["id"],
                                          {"status": target, "appendLog": {"message": "no"}})),
        ):
            if who == "gateway" and start == "cancelled":
                # eltPulse's gateways throw on any non-2xx: a cancelled run answers 200
                # `cancel: true` (its lines kept; its status never changes)
                assert r.status_code == 200, (who, target, r.text)
                assert r.json()["cancel"] is True and r.json()["run"]["status"] == "cancelled"
                continue
            assert r.status_code == 409, (who, target, r.text)
            assert_error(r, 409)
    after = await get_run(client, tenant, current["id"])
    if start == "cancelled":
        assert [e["message"] for e in after["logEntries"]] == ["no"] * len(REFUSED_MOVES[start])
        after = {**after, "logEntries": before["logEntries"], "updatedAt": before["updatedAt"]}
    assert after == before


async def test_a_terminal_status_without_finished_at_gets_now(client, tenant, pipeline, gateway):
    current = await run_in(client, tenant, pipeline, gateway, "running")
    before = now()
    r = await agent_patch(client, gateway, current["id"], {"status": "succeeded"})
    finished = when(r.json()["run"]["finishedAt"])
    assert before - timedelta(seconds=1) <= finished <= now()
    # the same status again keeps it
    r = await agent_patch(client, gateway, current["id"], {"status": "succeeded"})
    assert when(r.json()["run"]["finishedAt"]) == finished


async def test_cancelling_a_pending_run(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {"status": "cancelled"})
    body = r.json()["run"]
    # never claimed: it started when it was created (eltPulse's rule)
    assert (body["status"], body["cancel"], body["startedAt"]) == (
        "cancelled", True, body["createdAt"])
    assert body["finishedAt"] is not None


async def test_finished_at_may_not_be_far_in_the_future(client, tenant, pipeline, gateway):
    for offset, ok in ((timedelta(minutes=-10), True), (timedelta(0), True),
                       (timedelta(minutes=4), True), (timedelta(minutes=6), False),
                       (timedelta(days=1), False)):
        created = await create_run(client, tenant, pipeline["id"])
        await claim(client, gateway, created["id"])
        # it started a while ago
        await Run.filter(id=int(created["id"])).update(started_at=now() - timedelta(hours=1))
        finished = now() + offset
        r = await agent_patch(client, gateway, created["id"],
                            {"status": "succeeded", "finishedAt": iso(finished)})
        if ok:
            assert r.status_code == 200, (offset, r.text)
            assert when(r.json()["run"]["finishedAt"]) == finished
        else:
            assert field_error_problem(r, "finishedAt") is None, (offset, r.text)
            assert (await get_run(client, tenant, created["id"]))["status"] == "running"


async def test_finished_at_may_not_precede_the_start(client, tenant, running, gateway):
    started = when(running["startedAt"])
    r = await agent_patch(client, gateway, running["id"],
                        {"status": "failed", "finishedAt": iso(started - timedelta(seconds=2))})
    assert_field_error(r, "finishedAt")
    # to the second: the start's own second is fine
    same_second = started.replace(microsecond=0)
    r = await agent_patch(client, gateway, running["id"],
                        {"status": "failed", "finishedAt": iso(same_second)})
    assert r.status_code == 200, r.text
    assert when(r.json()["run"]["finishedAt"]) == same_second


async def test_finished_at_without_a_terminal_status_is_400(client, tenant, pipeline, gateway):
    for start, status in (("pending", None), ("running", None), ("pending", "pending"),
                          ("running", "running"), ("pending", "running")):
        current = await run_in(client, tenant, pipeline, gateway, start)
        before = await get_run(client, tenant, current["id"])
        body: dict[str, Any] = {"finishedAt": iso(now())}
        if status:
            body["status"] = status
        r = await agent_patch(client, gateway, current["id"], body)
        assert field_error_problem(r, "finishedAt") is None, (start, status, r.text)
        assert await get_run(client, tenant, current["id"]) == before, (start, status)


async def test_finished_at_of_a_finished_run_cannot_change(client, tenant, running, gateway):
    r = await agent_patch(client, gateway, running["id"], {"status": "succeeded"})
    finished = r.json()["run"]["finishedAt"]
    r = await agent_patch(client, gateway, running["id"],
                        {"finishedAt": iso(when(finished) - timedelta(seconds=5))})
    assert_error(r, 409)
    r = await agent_patch(client, gateway, running["id"],
                        {"status": "succeeded", "finishedAt": iso(when(finished) +
                                                                  timedelta(seconds=5))})
    assert_error(r, 409)
    # the same finishedAt again is fine (a retry)
    r = await agent_patch(client, gateway, running["id"], {"status": "succeeded",
                                                        "finishedAt": finished})
    assert r.status_code == 200, r.text
    assert (await get_run(client, tenant, running["id"]))["finishedAt"] == finished


async def test_error_summary_while_running_and_after(client, tenant, running, gateway):
    r = await agent_patch(client, gateway, running["id"], {"errorSummary": "retrying"})
    assert r.json()["run"]["errorSummary"] == "retrying"
    r = await agent_patch(client, gateway, running["id"], {"errorSummary": "disk full"})
    assert r.json()["run"]["errorSummary"] == "disk full"
    r = await agent_patch(client, gateway, running["id"], {"errorSummary": None})
    assert r.json()["run"]["errorSummary"] is None
    r = await agent_patch(client, gateway, running["id"], {"status": "failed"})
    assert r.status_code == 200
    # added to a finished run that has none
    r = await agent_patch(client, gateway, running["id"], {"errorSummary": "exit 1"})
    assert r.status_code == 200, r.text
    assert r.json()["run"]["errorSummary"] == "exit 1"
    # the same again is a no-op; clearing it is refused
    assert (await agent_patch(client, gateway, running["id"],
                            {"errorSummary": "exit 1"})).status_code == 200
    assert_error(await agent_patch(client, gateway, running["id"], {"errorSummary": None}), 409)
    # another is not lost: the first stays, the other becomes an error line, with the
    # change's own line (eltPulse's gateway sends its summary again on its error path)
    r = await agent_patch(client, gateway, running["id"], {
        "errorSummary": "something else", "appendLog": {"level": "warn", "message": "flush"}})
    assert r.status_code == 200, r.text
    run = await get_run(client, tenant, running["id"])
    assert run["errorSummary"] == "exit 1"
    assert [(e["level"], e["message"]) for e in run["logEntries"]][-2:] == [
        ("warn", "flush"),
        ("error", "errorSummary not applied (the run keeps its first one): something else")]


async def test_error_summary_with_the_terminal_status(client, tenant, running, gateway):
    r = await agent_patch(client, gateway, running["id"],
                        {"status": "failed", "errorSummary": "boom"})
    assert (r.json()["run"]["status"], r.json()["run"]["errorSummary"]) == ("failed", "boom")


async def test_error_summary_is_truncated_past_8000_characters(client, tenant, running):
    r = await patch_run(client, tenant, running["id"], {"errorSummary": "e" * 8100})
    assert r.status_code == 200, r.text
    text = r.json()["run"]["errorSummary"]
    assert text.startswith("e" * 8000) and "e" * 8001 not in text
    assert text.endswith("…[truncated 100 characters]")
    r = await patch_run(client, tenant, running["id"], {"errorSummary": "f" * 8000})
    assert r.json()["run"]["errorSummary"] == "f" * 8000


async def test_a_refused_patch_applies_nothing(client, tenant, run):
    await patch_run(client, tenant, run["id"], {"appendLog": {"message": "one"},
                                                "appendTelemetrySample": {"rows": 1}})
    before = await get_run(client, tenant, run["id"])
    for bad, status in (({"status": "bogus"}, 400), ({"status": "succeeded"}, 409),
                        ({"telemetrySummary": {"progress": 200}}, 400),
                        ({"finishedAt": "2026-01-01T00:00:00Z"}, 400)):
        r = await patch_run(client, tenant, run["id"], {
            "appendLog": {"message": "two"}, "logEntries": [{"message": "replaced"}],
            "appendTelemetrySample": {"rows": 2}, "telemetrySummary": {"rowsLoaded": 5},
            "telemetrySamples": [{"rows": 3}], "errorSummary": "nope", **bad,
        })
        assert r.status_code == status, (bad, r.text)
        assert await get_run(client, tenant, run["id"]) == before, bad
        (row,) = await stored_runs(tenant)
        assert (row.log_seq, row.log_base, row.sample_seq, row.rows_total, row.error) == (
            1, 0, 1, None, None), bad


# ----------------------------------------------------------------------------------------------
# the claim


async def test_a_gateway_claims_a_pending_run(client, tenant, gateway, run):
    before = now()
    r = await agent_patch(client, gateway, run["id"], {"status": "running"})
    assert r.status_code == 200, r.text
    body = r.json()["run"]
    assert (body["status"], body["gatewayId"]) == ("running", str(gateway.id))
    started = when(body["startedAt"])
    assert before - timedelta(seconds=1) <= started <= now()
    # a gateway's run is bounded by the gateway ceiling, not the orphan window
    assert when(body["deadlineAt"]) == started + timedelta(hours=24)
    assert body["finishedAt"] is None
    row = await Gateway.get(id=gateway.id)
    assert row.last_seen_at is not None and row.last_seen_at >= before - timedelta(seconds=1)
    assert await get_run(client, tenant, run["id"]) == {
        **body, "logEntries": [], "telemetry": {"summary": {}, "samples": []},
        "pipeline": {"id": run["pipelineId"], "name": "orders"}, "targetAgentToken": None,
        "webhookStatus": None, "ingestionExecutor": "customer_agent"}


async def test_the_deadline_follows_the_pipelines_max_runtime(client, tenant, gateway):
    p = await create_pipeline(client, tenant, "quick", maxRuntimeSeconds=300)
    body = await claim(client, gateway, (await create_run(client, tenant, p["id"]))["id"])
    assert when(body["deadlineAt"]) == when(body["startedAt"]) + timedelta(seconds=300)


async def test_claiming_again_is_refused_for_the_claimant_too(client, tenant, gateway,
                                                              running):
    """Replicas of one gateway share its token: a claim of a run that is no longer pending is
    409 for every gateway, the claimant included, and changes nothing."""
    before = await get_run(client, tenant, running["id"])
    r = await agent_patch(client, gateway, running["id"],
                          {"status": "running", "appendLog": {"message": "claimed"}})
    assert (r.status_code, r.json()) == (409, ALREADY_CLAIMED)
    assert await get_run(client, tenant, running["id"]) == before
    # the claimant's other PATCHes are unaffected, and so is its finish
    r = await agent_patch(client, gateway, running["id"], {"appendLog": {"message": "row 1"}})
    assert r.status_code == 200, r.text
    r = await agent_patch(client, gateway, running["id"], {"status": "succeeded"})
    assert r.status_code == 200, r.text
    # a claim of a finished run is the same 409 (the replica that lost skips it)
    r = await agent_patch(client, gateway, running["id"], {"status": "running"})
    assert (r.status_code, r.json()) == (409, ALREADY_CLAIMED)


async def test_a_second_gateway_cannot_claim_or_touch_a_claimed_run(client, tenant, gateway2,
                                                                    running):
    before = await get_run(client, tenant, running["id"])
    for body in ({"status": "running"}, {"appendLog": {"message": "mine?"}},
                 {"status": "succeeded"}, {"telemetrySummary": {"progress": 5}},
                 {"appendTelemetrySample": {"rows": 1}}, {"errorSummary": "x"}):
        r = await agent_patch(client, gateway2, running["id"], body)
        assert (r.status_code, r.json()) == (409, ALREADY_CLAIMED), body
    assert await get_run(client, tenant, running["id"]) == before


async def test_a_second_gateway_cannot_touch_a_finished_claimed_run(client, tenant, gateway,
                                                                   gateway2, running):
    assert (await agent_patch(client, gateway, running["id"],
                              {"status": "succeeded"})).status_code == 200
    r = await agent_patch(client, gateway2, running["id"], {"appendLog": {"message": "x"}})
    assert (r.status_code, r.json()) == (409, ALREADY_CLAIMED)


async def test_the_claiming_gateway_finishes_its_run(client, tenant, gateway, running):
    r = await agent_patch(client, gateway, running["id"], {
        "status": "succeeded", "telemetrySummary": {"rowsLoaded": 100, "progress": 100},
        "appendLog": {"message": "done"},
    })
    assert r.status_code == 200, r.text
    body = r.json()["run"]
    assert (body["status"], body["cancel"], r.json()["cancel"]) == ("succeeded", False, False)
    assert body["telemetry"]["summary"]["rowsLoaded"] == 100


async def test_cancel_reaches_the_gateway(client, tenant, gateway, running):
    r = await patch_run(client, tenant, running["id"], {"status": "cancelled"})
    assert r.status_code == 200, r.text
    assert (r.json()["run"]["status"], r.json()["run"]["cancel"]) == ("cancelled", True)
    r = await agent_get(client, gateway, running["id"])
    assert r.status_code == 200, r.text
    assert r.json()["cancel"] is True and r.json()["run"]["cancel"] is True
    # a status change is not applied; the answer is 200 `cancel: true` (eltPulse's gateways
    # throw on any non-2xx and would never see the signal)
    for status in ("succeeded", "failed", "running"):
        r = await agent_patch(client, gateway, running["id"], {"status": status})
        assert r.status_code == 200, r.text
        assert r.json()["cancel"] is True and r.json()["run"]["status"] == "cancelled"
    # logs still go in (the gateway reports how it stopped)
    r = await agent_patch(client, gateway, running["id"], {"appendLog": {"message": "stopped"}})
    assert r.status_code == 200, r.text
    assert r.json()["cancel"] is True
    assert (await get_run(client, tenant, running["id"]))["status"] == "cancelled"


async def test_a_cancelled_pending_run_is_refused_to_a_claiming_gateway(client, tenant, gateway,
                                                                      run):
    assert (await patch_run(client, tenant, run["id"], {"status": "cancelled"})).status_code == 200
    r = await client.get(f"{AGENT}/runs", headers=gateway.headers())
    assert r.json() == {"runs": []}
    r = await agent_patch(client, gateway, run["id"], {"status": "running"})
    assert r.status_code == 200, r.text
    assert r.json()["cancel"] is True
    body = await get_run(client, tenant, run["id"])
    assert (body["status"], body["gatewayId"], body["deadlineAt"]) == ("cancelled", None, None)


async def test_a_refused_move_of_a_finished_run_is_not_a_cancel(client, tenant, gateway,
                                                                running):
    await agent_patch(client, gateway, running["id"], {"status": "failed"})
    r = await agent_patch(client, gateway, running["id"], {"status": "succeeded"})
    assert_error(r, 409)
    assert r.json().get("cancel", False) is False


# ----------------------------------------------------------------------------------------------
# agent list and visibility


async def test_agent_list_is_oldest_first_pending_by_default(client, tenant, pipeline, gateway,
                                                             gateway2):
    ids = [(await create_run(client, tenant, pipeline["id"]))["id"] for _ in range(4)]
    await claim(client, gateway2, ids[1])
    assert (await patch_run(client, tenant, ids[2], {"status": "cancelled"})).status_code == 200
    r = await client.get(f"{AGENT}/runs", headers=gateway.headers())
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["runs"]
    assert [x["id"] for x in r.json()["runs"]] == [ids[0], ids[3]]
    assert all(set(x) == RUN_KEYS for x in r.json()["runs"])
    r = await client.get(f"{AGENT}/runs?status=running,cancelled", headers=gateway.headers())
    assert [x["id"] for x in r.json()["runs"]] == [ids[1], ids[2]]


async def test_agent_list_limit_is_clamped(client, tenant, pipeline, gateway):
    ids = await bulk_runs(tenant, pipeline["id"], 25)
    # the reference's default page is 5 (at most 20)
    for query, expected in (("", 5), ("limit=5", 5), ("limit=0", 1), ("limit=-3", 1),
                            ("limit=21", 20), ("limit=200", 20), ("limit=", 5),
                            ("limit=x", 5)):
        r = await client.get(f"{AGENT}/runs?{query}", headers=gateway.headers())
        assert r.status_code == 200, (query, r.text)
        assert [x["id"] for x in r.json()["runs"]] == ids[:expected], query


async def test_a_gateway_sees_untargeted_runs_and_its_own(client, tenant, pipeline, gateway,
                                                          gateway2):
    untargeted = await create_run(client, tenant, pipeline["id"])
    mine = await create_run(client, tenant, pipeline["id"], targetGatewayId=str(gateway.id))
    theirs = await create_run(client, tenant, pipeline["id"], targetGatewayId=str(gateway2.id))
    r = await client.get(f"{AGENT}/runs", headers=gateway.headers())
    assert [x["id"] for x in r.json()["runs"]] == [untargeted["id"], mine["id"]]
    r = await client.get(f"{AGENT}/runs", headers=gateway2.headers())
    assert [x["id"] for x in r.json()["runs"]] == [untargeted["id"], theirs["id"]]
    # another gateway's run is not found for this one, and stays as it was
    assert (r := await agent_get(client, gateway, theirs["id"])).json() == RUN_NOT_FOUND
    assert r.status_code == 404
    for body in ({"status": "running"}, {"appendLog": {"message": "x"}}):
        r = await agent_patch(client, gateway, theirs["id"], body)
        assert (r.status_code, r.json()) == (404, RUN_NOT_FOUND)
    assert await get_run(client, tenant, theirs["id"]) == theirs
    # its own targeted run it may claim
    assert (await claim(client, gateway, mine["id"]))["gatewayId"] == str(gateway.id)


async def test_a_gateway_never_sees_another_organisations_runs(client, tenant, other_tenant,
                                                               pipeline, gateway):
    theirs_pipeline = await create_pipeline(client, other_tenant, "orders")
    theirs = await create_run(client, other_tenant, theirs_pipeline["id"])
    their_gateway = await make_gateway(other_tenant, "gw-1")
    mine = await create_run(client, tenant, pipeline["id"])
    r = await client.get(f"{AGENT}/runs", headers=gateway.headers())
    assert [x["id"] for x in r.json()["runs"]] == [mine["id"]]
    r = await client.get(f"{AGENT}/runs", headers=their_gateway.headers())
    assert [x["id"] for x in r.json()["runs"]] == [theirs["id"]]
    assert (await agent_get(client, gateway, theirs["id"])).json() == RUN_NOT_FOUND
    r = await agent_patch(client, gateway, theirs["id"], {"status": "running"})
    assert (r.status_code, r.json()) == (404, RUN_NOT_FOUND)
    assert await get_run(client, other_tenant, theirs["id"]) == theirs


# ----------------------------------------------------------------------------------------------
# logs


async def test_append_log_stamps_at_and_defaults_to_info(client, tenant, run):
    before = now()
    for body in ({"message": "plain"}, {"level": "warn", "message": "w"},
                 {"level": "warning", "message": "w2"}, {"level": "ERROR", "message": "e"},
                 {"level": "info", "message": ""}):
        r = await patch_run(client, tenant, run["id"], {"appendLog": body})
        assert r.status_code == 200, r.text
    lines = (await get_run(client, tenant, run["id"]))["logEntries"]
    assert [(x["level"], x["message"]) for x in lines] == [
        ("info", "plain"), ("warn", "w"), ("warn", "w2"), ("error", "e"), ("info", "")]
    for line in lines:
        assert set(line) == {"at", "level", "message"}
        assert before - timedelta(seconds=1) <= when(line["at"]) <= now()


async def test_log_entries_replace_the_log(client, tenant, run):
    await patch_run(client, tenant, run["id"], {"appendLog": {"message": "old"}})
    entries = [{"at": "2026-01-31T12:00:00Z", "level": "info", "message": "a"},
               {"at": "2026-01-31T12:00:01.500000Z", "level": "error", "message": "b"}]
    r = await patch_run(client, tenant, run["id"], {"logEntries": entries})
    assert r.status_code == 200, r.text
    assert (await get_run(client, tenant, run["id"]))["logEntries"] == entries
    # an offset is kept as the instant it names, in UTC
    r = await patch_run(client, tenant, run["id"], {"logEntries": [
        {"at": "2026-01-31T13:00:00+01:00", "level": "info", "message": "a"}]})
    assert (await get_run(client, tenant, run["id"]))["logEntries"][0]["at"] == (
        "2026-01-31T12:00:00Z")
    # `at` is optional (now), the level defaults to info, "warning" is warn
    before = now()
    r = await patch_run(client, tenant, run["id"],
                        {"logEntries": [{"message": "x"}, {"level": "warning", "message": "y"}]})
    lines = (await get_run(client, tenant, run["id"]))["logEntries"]
    assert [(x["level"], x["message"]) for x in lines] == [("info", "x"), ("warn", "y")]
    assert all(when(x["at"]) >= before - timedelta(seconds=1) for x in lines)
    # an empty list empties it; what GET returned can be sent back as is
    assert (await patch_run(client, tenant, run["id"], {"logEntries": []})).status_code == 200
    assert (await get_run(client, tenant, run["id"]))["logEntries"] == []
    await patch_run(client, tenant, run["id"], {"logEntries": entries})
    again = (await get_run(client, tenant, run["id"]))["logEntries"]
    await patch_run(client, tenant, run["id"], {"logEntries": again})
    assert (await get_run(client, tenant, run["id"]))["logEntries"] == entries


async def test_log_entries_and_append_log_together(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {
        "logEntries": [{"message": "a"}, {"message": "b"}], "appendLog": {"message": "c"}})
    assert r.status_code == 200, r.text
    lines = (await get_run(client, tenant, run["id"]))["logEntries"]
    assert [x["message"] for x in lines] == ["a", "b", "c"]


async def test_505_appends_keep_the_newest_500(client, tenant, run):
    for i in range(505):
        r = await patch_run(client, tenant, run["id"], {"appendLog": {"message": f"line {i}"}})
        assert r.status_code == 200, r.text
    assert r.json()["run"]["logEntriesDropped"] == 5
    body = await get_run(client, tenant, run["id"])
    assert [x["message"] for x in body["logEntries"]] == [f"line {i}" for i in range(5, 505)]
    assert body["logEntriesDropped"] == 5
    assert await RunLogLine.filter(run_id=int(run["id"])).count() == 500


async def test_appends_after_a_full_replacement_drop_the_oldest(client, tenant, run):
    full = [{"message": f"r{i}"} for i in range(500)]
    r = await patch_run(client, tenant, run["id"], {"logEntries": full})
    assert (r.status_code, r.json()["run"]["logEntriesDropped"]) == (200, 0)
    for i in range(3):
        r = await patch_run(client, tenant, run["id"], {"appendLog": {"message": f"a{i}"}})
    assert r.json()["run"]["logEntriesDropped"] == 3
    body = await get_run(client, tenant, run["id"])
    assert [x["message"] for x in body["logEntries"]] == (
        [f"r{i}" for i in range(3, 500)] + ["a0", "a1", "a2"])
    # a replacement starts over: nothing dropped
    r = await patch_run(client, tenant, run["id"], {"logEntries": [{"message": "fresh"}]})
    assert r.json()["run"]["logEntriesDropped"] == 0
    body = await get_run(client, tenant, run["id"])
    assert ([x["message"] for x in body["logEntries"]], body["logEntriesDropped"]) == (
        ["fresh"], 0)


async def test_a_replacement_of_500_plus_an_append_keeps_500(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {
        "logEntries": [{"message": f"r{i}"} for i in range(500)],
        "appendLog": {"message": "extra"}})
    assert r.status_code == 200, r.text
    body = await get_run(client, tenant, run["id"])
    assert len(body["logEntries"]) == 500 and body["logEntriesDropped"] == 1
    assert body["logEntries"][0]["message"] == "r1"
    assert body["logEntries"][-1]["message"] == "extra"


async def test_long_messages_are_truncated_visibly(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {"appendLog": {"message": "m" * 5000}})
    assert r.status_code == 200, r.text
    r = await patch_run(client, tenant, run["id"], {"logEntries": [
        {"message": "n" * 4000}, {"message": "o" * 4001}]})
    assert r.status_code == 200, r.text
    r = await patch_run(client, tenant, run["id"], {"appendLog": {"message": "m" * 5000}})
    lines = [x["message"] for x in (await get_run(client, tenant, run["id"]))["logEntries"]]
    assert lines[0] == "n" * 4000
    assert lines[1].startswith("o" * 4000) and lines[1].endswith("…[truncated 1 characters]")
    assert lines[2].startswith("m" * 4000) and "m" * 4001 not in lines[2]
    assert lines[2].endswith("…[truncated 1000 characters]")


async def test_nul_characters_become_replacement_characters(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {"appendLog": {"message": "a\x00b"},
                                                    "errorSummary": "x\x00y"})
    assert r.status_code == 200, r.text
    assert r.json()["run"]["errorSummary"] == "x\ufffdy"
    r = await patch_run(client, tenant, run["id"], {"logEntries": [{"message": "\x00"}]})
    assert r.status_code == 200, r.text
    r = await patch_run(client, tenant, run["id"], {"appendLog": {"message": "c\x00"}})
    lines = [x["message"] for x in (await get_run(client, tenant, run["id"]))["logEntries"]]
    assert lines == ["\ufffd", "c\ufffd"]


SECRETS = [
    ("login password=hunter2 ok", "login password=[REDACTED] ok"),
    ("key sk_live_abcdefgh12345678 used", "key [REDACTED] used"),
    ("aws AKIAABCDEFGHIJKLMNOP here", "aws [REDACTED] here"),
    ("gh ghp_abcdefghijklmnopqrstuvwxyz0123 token", "gh [REDACTED] token"),
    ("slack xoxb-1234567890-abcdef", "slack [REDACTED]"),
    ("dsn postgres://u:pw@h/db", "dsn postgres://u:[REDACTED]@h/db"),
    ("token: abc123def", "token: [REDACTED]"),
    ('{"api_key": "k-123"}', '{"api_key": "[REDACTED]"}'),
    ("nothing to see", "nothing to see"),
]


async def test_secrets_are_scrubbed_before_storage(client, tenant, pipeline):
    failures = []
    for text, expected in SECRETS:
        run = await create_run(client, tenant, pipeline["id"])
        r = await patch_run(client, tenant, run["id"], {"appendLog": {"message": text},
                                                        "errorSummary": text})
        assert r.status_code == 200, r.text
        r = await patch_run(client, tenant, run["id"], {"logEntries": [{"message": text}],
                                                        "appendLog": {"message": text}})
        assert r.status_code == 200, r.text
        body = await get_run(client, tenant, run["id"])
        stored = [x.message for x in await RunLogLine.filter(run_id=int(run["id"]))]
        seen = ([x["message"] for x in body["logEntries"]], body["errorSummary"], stored,
                (await Run.get(id=int(run["id"]))).error)
        if seen != ([expected] * 2, expected, [expected] * 2, expected):
            failures.append(f"{text!r}: {seen}")
    assert_no_failures(failures)


async def test_logs_may_be_appended_to_a_finished_run(client, tenant, gateway, running):
    assert (await agent_patch(client, gateway, running["id"],
                              {"status": "succeeded"})).status_code == 200
    r = await agent_patch(client, gateway, running["id"],
                          {"appendLog": {"message": "cleanup done"}})
    assert r.status_code == 200, r.text
    r = await patch_run(client, tenant, running["id"], {"appendLog": {"message": "by a person"}})
    assert r.status_code == 200, r.text
    body = await get_run(client, tenant, running["id"])
    assert [x["message"] for x in body["logEntries"]] == ["cleanup done", "by a person"]
    assert body["status"] == "succeeded"


# ----------------------------------------------------------------------------------------------
# telemetry


async def test_telemetry_summary_is_a_shallow_merge(client, tenant, run):
    before = now()
    r = await patch_run(client, tenant, run["id"], {"telemetrySummary": {
        "rowsLoaded": 10, "bytesLoaded": 2048, "progress": 10, "currentPhase": "extract",
        "currentResource": "orders"}})
    assert r.status_code == 200, r.text
    summary = r.json()["run"]["telemetry"]["summary"]
    assert before - timedelta(seconds=1) <= when(summary.pop("updatedAt")) <= now()
    assert summary == {"rowsLoaded": 10, "bytesLoaded": 2048, "progress": 10,
                       "currentPhase": "extract", "currentResource": "orders"}
    r = await patch_run(client, tenant, run["id"], {"telemetrySummary": {
        "rowsLoaded": 25, "progress": 55.5, "currentPhase": "load"}})
    summary = r.json()["run"]["telemetry"]["summary"]
    summary.pop("updatedAt")
    assert summary == {"rowsLoaded": 25, "bytesLoaded": 2048, "progress": 55.5,
                       "currentPhase": "load", "currentResource": "orders"}
    # a key sent as null is removed
    r = await patch_run(client, tenant, run["id"], {"telemetrySummary": {
        "currentResource": None, "bytesLoaded": None}})
    summary = r.json()["run"]["telemetry"]["summary"]
    summary.pop("updatedAt")
    assert summary == {"rowsLoaded": 25, "progress": 55.5, "currentPhase": "load"}
    body = await get_run(client, tenant, run["id"])
    assert {k: v for k, v in body["telemetry"]["summary"].items() if k != "updatedAt"} == summary
    # an empty merge only stamps updatedAt
    r = await patch_run(client, tenant, run["id"], {"telemetrySummary": {}})
    assert r.status_code == 200, r.text
    assert set(r.json()["run"]["telemetry"]["summary"]) == {"rowsLoaded", "progress",
                                                            "currentPhase", "updatedAt"}


async def test_telemetry_summary_edges(client, tenant, run):
    r = await patch_run(client, tenant, run["id"], {"telemetrySummary": {
        "rowsLoaded": 0, "bytesLoaded": 0, "progress": 0}})
    assert r.status_code == 200, r.text
    r = await patch_run(client, tenant, run["id"], {"telemetrySummary": {"progress": 100,
                                                                         "rowsLoaded": 10.0}})
    assert r.status_code == 200, r.text
    summary = r.json()["run"]["telemetry"]["summary"]
    assert (summary["progress"], summary["rowsLoaded"], summary["bytesLoaded"]) == (100, 10, 0)


async def test_append_telemetry_sample(client, tenant, run):
    before = now()
    r = await patch_run(client, tenant, run["id"], {"appendTelemetrySample": {}})
    assert r.status_code == 200, r.text
    full = {"at": "2026-01-31T12:00:00Z", "rows": 100, "bytes": 2048, "rowsDelta": 10,
            "bytesDelta": -5, "progress": 42.5, "phase": "load", "resource": "orders"}
    r = await patch_run(client, tenant, run["id"], {"appendTelemetrySample": full})
    assert r.status_code == 200, r.text
    r = await patch_run(client, tenant, run["id"], {"appendTelemetrySample": {
        "rows": 5, "phase": None}})
    samples = (await get_run(client, tenant, run["id"]))["telemetry"]["samples"]
    assert len(samples) == 3
    (first_at,) = samples[0].values()
    assert list(samples[0]) == ["at"]
    assert before - timedelta(seconds=1) <= when(first_at) <= now()
    assert samples[1] == full
    assert set(samples[2]) == {"at", "rows"} and samples[2]["rows"] == 5


async def test_telemetry_samples_replace(client, tenant, run):
    await patch_run(client, tenant, run["id"], {"appendTelemetrySample": {"rows": 1}})
    points = [{"at": f"2026-01-31T12:00:0{i}Z", "rows": i} for i in range(3)]
    r = await patch_run(client, tenant, run["id"], {"telemetrySamples": points})
    assert r.status_code == 200, r.text
    assert (await get_run(client, tenant, run["id"]))["telemetry"]["samples"] == points
    assert (await patch_run(client, tenant, run["id"],
                            {"telemetrySamples": []})).status_code == 200
    assert (await get_run(client, tenant, run["id"]))["telemetry"]["samples"] == []


async def test_samples_keep_the_newest_2000(client, tenant, run):
    points = [{"at": "2026-01-31T12:00:00Z", "rows": i} for i in range(2000)]
    r = await patch_run(client, tenant, run["id"], {"telemetrySamples": points})
    assert (r.status_code, r.json()["run"]["telemetrySamplesDropped"]) == (200, 0), r.text
    for i in range(3):
        r = await patch_run(client, tenant, run["id"],
                            {"appendTelemetrySample": {"rows": 2000 + i}})
    assert r.json()["run"]["telemetrySamplesDropped"] == 3
    body = await get_run(client, tenant, run["id"])
    assert [x["rows"] for x in body["telemetry"]["samples"]] == list(range(3, 2003))
    assert body["telemetrySamplesDropped"] == 3


# ----------------------------------------------------------------------------------------------
# pipelines


async def test_create_pipeline(client, tenant):
    r = await client.post(f"{ELT}/pipelines", json={"name": "orders"},
                          headers=tenant.headers(RW))
    assert r.status_code == 201, r.text
    assert list(r.json()) == ["pipeline", "created"] and r.json()["created"] is True
    body = r.json()["pipeline"]
    assert set(body) == PIPELINE_KEYS
    when(body["createdAt"])
    assert body == {"id": body["id"], "name": "orders", "kind": "elt", "description": None,
                    "maxRuntimeSeconds": None, "connectionId": None,
                    "destinationConnectionId": None, "sourceConnectionId": None,
                    "createdAt": body["createdAt"], "tool": None, "sourceType": None,
                    "destinationType": None, "sourceConfiguration": None,
                    "pipelineCode": None, "configYaml": None, "workspaceYaml": None,
                    "groupName": None, "enabled": True, "updatedAt": body["createdAt"]}
    assert isinstance(body["id"], str)
    r = await client.get(f"{ELT}/pipelines/{body['id']}", headers=tenant.headers("read"))
    assert r.json() == {"pipeline": body}


async def test_create_pipeline_with_every_field(client, tenant, cid):
    body = await create_pipeline(client, tenant, "full", description="nightly load",
                                 maxRuntimeSeconds=60, connectionId=str(cid))
    assert (body["description"], body["maxRuntimeSeconds"], body["connectionId"]) == (
        "nightly load", 60, str(cid))
    body = await create_pipeline(client, tenant, "full2", maxRuntimeSeconds=None,
                                 connectionId=cid)
    assert (body["maxRuntimeSeconds"], body["connectionId"]) == (None, str(cid))


INVALID_PIPELINES = [
    ({}, "name"), ({"name": ""}, "name"), ({"name": "  "}, "name"), ({"name": 5}, "name"),
    ({"name": "n" * 201}, "name"),
    ({"name": "p", "maxRuntimeSeconds": 59}, "maxRuntimeSeconds"),
    ({"name": "p", "maxRuntimeSeconds": 0}, "maxRuntimeSeconds"),
    ({"name": "p", "maxRuntimeSeconds": "600"}, "maxRuntimeSeconds"),
    ({"name": "p", "maxRuntimeSeconds": 600.5}, "maxRuntimeSeconds"),
    ({"name": "p", "description": 5}, "description"),
    ({"name": "p", "connectionId": "999999"}, "connectionId"),
    ({"name": "p", "connectionId": "abc"}, "connectionId"),
    ({"name": "p", "kind": "delivery"}, "kind"),
    ({"name": "p", "id": "1"}, "id"),
    ({"name": "p", "max_runtime_seconds": 600}, "max_runtime_seconds"),
]


async def test_invalid_pipeline_is_400(client, tenant):
    failures = []
    for body, field in INVALID_PIPELINES:
        r = await client.post(f"{ELT}/pipelines", json=body, headers=tenant.headers(RW))
        if problem := field_error_problem(r, field):
            failures.append(f"{param_id(body)}: {problem}")
    assert_no_failures(failures)
    assert await Pipeline.filter(organisation_id=tenant.org_id).count() == 0


async def test_foreign_connection_is_400(client, tenant, other_tenant):
    from tests.helpers import create_connection
    theirs = await create_connection(client, other_tenant)
    r = await client.post(f"{ELT}/pipelines", json={"name": "p", "connectionId": theirs},
                          headers=tenant.headers(RW))
    assert_field_error(r, "connectionId")


async def test_duplicate_pipeline_name_is_409(client, tenant, other_tenant, pipeline):
    r = await client.post(f"{ELT}/pipelines", json={"name": "orders"},
                          headers=tenant.headers(RW))
    assert_error(r, 409)
    assert await Pipeline.filter(organisation_id=tenant.org_id).count() == 1
    await create_pipeline(client, other_tenant, "orders")  # per organisation


async def test_patch_pipeline(client, tenant, pipeline, cid):
    r = await client.patch(f"{ELT}/pipelines/{pipeline['id']}", json={
        "name": "orders-v2", "description": "d", "maxRuntimeSeconds": 900,
        "connectionId": str(cid)}, headers=tenant.headers(RW))
    assert r.status_code == 200, r.text
    expected = {**pipeline, "name": "orders-v2", "description": "d",
                "maxRuntimeSeconds": 900, "connectionId": str(cid),
                "destinationConnectionId": str(cid),
                "updatedAt": r.json()["pipeline"]["updatedAt"]}
    assert when(expected["updatedAt"]) >= when(pipeline["createdAt"])
    assert r.json() == {"pipeline": expected}
    r = await client.get(f"{ELT}/pipelines/{pipeline['id']}", headers=tenant.headers("read"))
    assert r.json() == {"pipeline": expected}
    # only what is sent changes; null clears
    r = await client.patch(f"{ELT}/pipelines/{pipeline['id']}", json={
        "maxRuntimeSeconds": None, "description": None, "connectionId": None},
        headers=tenant.headers(RW))
    assert r.json() == {"pipeline": {**expected, "maxRuntimeSeconds": None,
                                     "description": None, "connectionId": None,
                                     "destinationConnectionId": None,
                                     "updatedAt": r.json()["pipeline"]["updatedAt"]}}
    # an empty PATCH changes nothing
    r = await client.patch(f"{ELT}/pipelines/{pipeline['id']}", json={},
                           headers=tenant.headers(RW))
    assert r.status_code == 200 and r.json()["pipeline"]["name"] == "orders-v2"


async def test_invalid_pipeline_patch_is_400(client, tenant, pipeline):
    for body, field in (
        ({"name": ""}, "name"), ({"name": None}, "name"),
        ({"maxRuntimeSeconds": 30}, "maxRuntimeSeconds"),
        ({"connectionId": "999999"}, "connectionId"), ({"kind": "x"}, "kind"),
        ({"description": "ok", "createdAt": "2026-01-01T00:00:00Z"}, "createdAt"),
    ):
        r = await client.patch(f"{ELT}/pipelines/{pipeline['id']}", json=body,
                               headers=tenant.headers(RW))
        assert field_error_problem(r, field) is None, (body, r.text)
    r = await client.get(f"{ELT}/pipelines/{pipeline['id']}", headers=tenant.headers("read"))
    assert r.json() == {"pipeline": pipeline}


async def test_renaming_a_pipeline_to_a_taken_name_is_409(client, tenant, pipeline):
    other = await create_pipeline(client, tenant, "customers")
    r = await client.patch(f"{ELT}/pipelines/{other['id']}", json={"name": "orders"},
                           headers=tenant.headers(RW))
    assert_error(r, 409)
    r = await client.get(f"{ELT}/pipelines/{other['id']}", headers=tenant.headers("read"))
    assert r.json()["pipeline"]["name"] == "customers"


async def test_list_pipelines(client, tenant, other_tenant):
    mine = [await create_pipeline(client, tenant, f"p{i}") for i in range(3)]
    await create_pipeline(client, other_tenant, "theirs")
    r = await client.get(f"{ELT}/pipelines", headers=tenant.headers("read"))
    assert r.status_code == 200, r.text
    assert r.json() == {"pipelines": mine}


async def test_unknown_pipeline_is_404(client, tenant, pipeline):
    failures = []
    for ident in ("999999", "0", "abc", "99999999999"):
        for method, path, body in (("GET", "", None), ("PATCH", "", {"description": "x"}),
                                   ("GET", "/webhook", None),
                                   ("PUT", "/webhook", {"url": "http://127.0.0.1:9/h"}),
                                   ("PUT", "/webhook", {"url": None})):
            kwargs = {} if body is None else {"json": body}
            r = await client.request(method, f"{ELT}/pipelines/{ident}{path}",
                                     headers=tenant.headers(RW), **kwargs)
            if (r.status_code, r.json()) != (404, PIPELINE_NOT_FOUND):
                failures.append(f"{method} {ident}{path}: {r.status_code} {r.text}")
    assert_no_failures(failures)
    assert await WebhookEndpoint.all().count() == 0


# ----------------------------------------------------------------------------------------------
# webhook settings

HOOK = "http://127.0.0.1:8999/hooks/runs"


@pytest.fixture(params=["default", "pipeline"])
async def hook_path(request, pipeline) -> str:
    return (f"{ELT}/runs/webhook" if request.param == "default"
            else f"{ELT}/pipelines/{pipeline['id']}/webhook")


async def test_no_webhook_at_first(client, tenant, hook_path):
    r = await client.get(hook_path, headers=tenant.headers(RW))
    assert (r.status_code, r.json()["webhook"]) == (200, None)


async def test_put_webhook_creates_it(client, tenant, pipeline, hook_path):
    r = await client.put(hook_path, json={"url": HOOK}, headers=tenant.headers(RW))
    assert r.status_code == 200, r.text
    assert "webhook" in r.json()
    hook = r.json()["webhook"]
    assert set(hook) == WEBHOOK_KEYS
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 20
    assert isinstance(hook["id"], str)
    assert hook["url"] == HOOK and hook["enabled"] is True
    # eltPulse's three; a timed-out run is sent as run.failed with timedOut: true
    assert hook["eventTypes"] == ["run.succeeded", "run.failed", "run.cancelled"]
    assert hook["pipelineId"] == (None if hook_path.endswith("runs/webhook")
                                  else pipeline["id"])
    assert when(hook["updatedAt"]) >= when(hook["createdAt"])
    r = await client.get(hook_path, headers=tenant.headers(RW))
    assert r.json()["webhook"] == hook


async def test_put_webhook_again_keeps_the_secret(client, tenant, hook_path):
    first = (await client.put(hook_path, json={"url": HOOK},
                              headers=tenant.headers(RW))).json()["webhook"]
    r = await client.put(hook_path, json={"url": HOOK + "/v2", "eventTypes": ["run.failed"],
                                          "enabled": False}, headers=tenant.headers(RW))
    assert r.status_code == 200, r.text
    hook = r.json()["webhook"]
    assert (hook["id"], hook["secret"], hook["createdAt"]) == (
        first["id"], first["secret"], first["createdAt"])
    assert (hook["url"], hook["eventTypes"], hook["enabled"]) == (
        HOOK + "/v2", ["run.failed"], False)
    assert when(hook["updatedAt"]) >= when(first["updatedAt"])
    assert (await client.get(hook_path, headers=tenant.headers(RW))).json()["webhook"] == hook
    assert await WebhookEndpoint.all().count() == 1


async def test_put_null_url_removes_the_webhook(client, tenant, hook_path):
    await client.put(hook_path, json={"url": HOOK}, headers=tenant.headers(RW))
    r = await client.put(hook_path, json={"url": None}, headers=tenant.headers(RW))
    assert (r.status_code, r.json()["webhook"]) == (200, None)
    assert (await client.get(hook_path, headers=tenant.headers(RW))).json()["webhook"] is None
    assert await WebhookEndpoint.all().count() == 0
    # removing nothing is fine; eltPulse's page clears with `{"url": ""}` or `{}`
    for body in ({"url": None}, {"url": ""}, {}):
        r = await client.put(hook_path, json=body, headers=tenant.headers(RW))
        assert (r.status_code, r.json()["webhook"]) == (200, None)
        await client.put(hook_path, json={"url": HOOK}, headers=tenant.headers(RW))
        r = await client.put(hook_path, json=body, headers=tenant.headers(RW))
        assert (r.status_code, r.json()["webhook"]) == (200, None), body
        assert await WebhookEndpoint.all().count() == 0
    # a new one gets a new secret
    again = await client.put(hook_path, json={"url": HOOK}, headers=tenant.headers(RW))
    assert again.json()["webhook"]["secret"].startswith("whsec_")


INVALID_WEBHOOKS = [
    ({"url": 5}, "url"), ({"url": "ftp://example.com/hook"}, "url"),
    ({"url": "http://user:pw@127.0.0.1/hook"}, "url"), ({"url": "not a url"}, "url"),
    ({"url": "http://127.0.0.1/" + "x" * 2001}, "url"),
    ({"url": HOOK, "eventTypes": ["run.exploded"]}, "eventTypes"),
    ({"url": HOOK, "eventTypes": []}, "eventTypes"),
    ({"url": HOOK, "eventTypes": "run.failed"}, "eventTypes"),
    ({"url": HOOK, "enabled": "yes"}, "enabled"),
    ({"url": HOOK, "secret": "whsec_mine"}, "secret"),
    ({"url": HOOK, "event_types": ["run.failed"]}, "event_types"),
]


async def test_invalid_webhook_is_400(client, tenant, hook_path):
    failures = []
    for body, field in INVALID_WEBHOOKS:
        r = await client.put(hook_path, json=body, headers=tenant.headers(RW))
        if problem := field_error_problem(r, field):
            failures.append(f"{param_id(body)}: {problem}")
    assert_no_failures(failures)
    assert await WebhookEndpoint.all().count() == 0


async def test_default_and_pipeline_webhooks_are_separate(client, tenant, pipeline):
    default = (await client.put(f"{ELT}/runs/webhook", json={"url": HOOK},
                                headers=tenant.headers(RW))).json()["webhook"]
    own = (await client.put(f"{ELT}/pipelines/{pipeline['id']}/webhook",
                            json={"url": HOOK + "/p"},
                            headers=tenant.headers(RW))).json()["webhook"]
    assert default["id"] != own["id"] and default["secret"] != own["secret"]
    assert (default["pipelineId"], own["pipelineId"]) == (None, pipeline["id"])
    await client.put(f"{ELT}/pipelines/{pipeline['id']}/webhook", json={"url": None},
                     headers=tenant.headers(RW))
    r = await client.get(f"{ELT}/runs/webhook", headers=tenant.headers(RW))
    assert r.json() == {"webhook": default, "globalUrl": HOOK, "url": HOOK, "pipelines": [
        {"id": pipeline["id"], "name": pipeline["name"], "webhookUrl": None}]}


async def test_webhooks_are_per_organisation(client, tenant, other_tenant, pipeline):
    mine = (await client.put(f"{ELT}/runs/webhook", json={"url": HOOK},
                             headers=tenant.headers(RW))).json()["webhook"]
    r = await client.get(f"{ELT}/runs/webhook", headers=other_tenant.headers(RW))
    assert r.json() == {"webhook": None, "globalUrl": None, "url": None, "pipelines": []}
    r = await client.put(f"{ELT}/runs/webhook", json={"url": None},
                         headers=other_tenant.headers(RW))
    assert r.status_code == 200
    # another organisation's pipeline: not found, and nothing changes
    await client.put(f"{ELT}/pipelines/{pipeline['id']}/webhook", json={"url": HOOK},
                     headers=tenant.headers(RW))
    for method, body in (("GET", None), ("PUT", {"url": HOOK + "/x"}), ("PUT", {"url": None})):
        kwargs = {} if body is None else {"json": body}
        r = await client.request(method, f"{ELT}/pipelines/{pipeline['id']}/webhook",
                                 headers=other_tenant.headers(RW), **kwargs)
        assert (r.status_code, r.json()) == (404, PIPELINE_NOT_FOUND), (method, body)
    assert (await client.get(f"{ELT}/runs/webhook",
                             headers=tenant.headers(RW))).json()["webhook"] == mine
    r = await client.get(f"{ELT}/pipelines/{pipeline['id']}/webhook",
                         headers=tenant.headers(RW))
    assert r.json()["webhook"]["url"] == HOOK
    assert await WebhookEndpoint.all().count() == 2


# ----------------------------------------------------------------------------------------------
# gateways: manifest and heartbeat


async def test_manifest(client, gateway):
    before = now()
    r = await client.get(f"{AGENT}/manifest", headers=gateway.headers())
    assert r.status_code == 200, r.text
    body = r.json()
    assert before - timedelta(seconds=1) <= when(body.pop("serverTime")) <= now()
    assert body == {
        "gateway": {"id": str(gateway.id), "name": "gw-1", "lastSeenAt": None,
                    "version": None, "labels": {}},
        "pollIntervalSeconds": 5, "heartbeatIntervalSeconds": 30, "leaseSeconds": 120,
        # what eltPulse's gateway reads
        "version": 1,
        "billing": {"runsPollIntervalSeconds": 5, "heartbeatIntervalSeconds": 30},
        "organization": {"id": str(gateway.org_id), "name": body["organization"]["name"]},
        "pipelines": [], "workloads": {"monitors": []},
        "executorHints": {"mode": "gateway", "leaseSeconds": 120},
    }


@pytest.mark.parametrize("labels", [
    {"region": "eu", "cpus": 4, "gpu": False, "load": 0.5, "zone": None},
    ["docker", "linux"],
], ids=["object", "list"])
async def test_heartbeat_records_version_and_labels(client, gateway, labels):
    before = now()
    r = await client.post(f"{AGENT}/heartbeat", json={"version": "1.2.3", "labels": labels},
                          headers=gateway.headers())
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"ok", "gateway"} and r.json()["ok"] is True
    g = r.json()["gateway"]
    assert set(g) == GATEWAY_KEYS
    assert before - timedelta(seconds=1) <= when(g.pop("lastSeenAt")) <= now()
    assert g == {"id": str(gateway.id), "name": "gw-1", "version": "1.2.3", "labels": labels}
    manifest = (await client.get(f"{AGENT}/manifest", headers=gateway.headers())).json()
    assert manifest["gateway"] == r.json()["gateway"] | {"lastSeenAt": manifest["gateway"][
        "lastSeenAt"]}
    assert manifest["gateway"]["lastSeenAt"] is not None


async def test_an_empty_heartbeat_only_records_last_seen(client, gateway):
    await client.post(f"{AGENT}/heartbeat", json={"version": "1.0", "labels": ["a"]},
                      headers=gateway.headers())
    for kwargs in ({"json": {}}, {}):
        r = await client.post(f"{AGENT}/heartbeat", headers=gateway.headers(), **kwargs)
        assert r.status_code == 200, r.text
        g = r.json()["gateway"]
        assert (g["version"], g["labels"], g["lastSeenAt"] is not None) == ("1.0", ["a"], True)


INVALID_HEARTBEATS = [
    ({"name": "x"}, "name"), ({"version": "1", "extra": 1}, "extra"),
    ({"labels": "linux"}, "labels"), ({"labels": 5}, "labels"),
    ({"labels": [1, 2]}, "labels"), ({"labels": ["a", {"b": 1}]}, "labels"),
    ({"labels": {"a": {"b": 1}}}, "labels"), ({"labels": {"a": ["x"]}}, "labels"),
    ({"version": 5}, "version"), ({"version": "v" * 101}, "version"),
]


async def test_invalid_heartbeat_is_400(client, gateway):
    failures = []
    for body, field in INVALID_HEARTBEATS:
        r = await client.post(f"{AGENT}/heartbeat", json=body, headers=gateway.headers())
        if problem := field_error_problem(r, field):
            failures.append(f"{param_id(body)}: {problem}")
    assert_no_failures(failures)
    row = await Gateway.get(id=gateway.id)
    assert (row.last_seen_at, row.version, row.labels) == (None, None, {})


async def test_a_revoked_gateways_token_is_401(client, tenant, gateway, run):
    await revoke_gateway(caller=admin_of(tenant), gateway_id=gateway.id)
    for method, path in (("GET", f"{AGENT}/manifest"), ("GET", f"{AGENT}/runs"),
                         ("GET", f"{AGENT}/runs/{run['id']}"),
                         ("PATCH", f"{AGENT}/runs/{run['id']}"),
                         ("POST", f"{AGENT}/heartbeat")):
        kwargs = {"json": {"status": "running"}} if method == "PATCH" else {}
        r = await client.request(method, path, headers=gateway.headers(), **kwargs)
        assert_error(r, 401)
        assert "www-authenticate" in r.headers
    assert (await get_run(client, tenant, run["id"]))["status"] == "pending"


# ----------------------------------------------------------------------------------------------
# tenancy


async def test_another_organisation_cannot_read_or_change_runs(client, tenant, other_tenant,
                                                               pipeline, gateway, running):
    their_gateway = await make_gateway(other_tenant, "gw-1")
    before = await get_run(client, tenant, running["id"])
    for scopes in ("read", "admin"):
        r = await client.get(f"{ELT}/runs/{running['id']}", headers=other_tenant.headers(scopes))
        assert (r.status_code, r.json()) == (404, RUN_NOT_FOUND)
    for body in ({"status": "cancelled"}, {"appendLog": {"message": "x"}},
                 {"telemetrySummary": {"progress": 1}}, {"errorSummary": "x"},
                 {"logEntries": []}, {"telemetrySamples": []}):
        r = await patch_run(client, other_tenant, running["id"], body, scopes="admin")
        assert (r.status_code, r.json()) == (404, RUN_NOT_FOUND), body
        r = await agent_patch(client, their_gateway, running["id"], body)
        assert (r.status_code, r.json()) == (404, RUN_NOT_FOUND), body
    r = await agent_get(client, their_gateway, running["id"])
    assert (r.status_code, r.json()) == (404, RUN_NOT_FOUND)
    assert await get_run(client, tenant, running["id"]) == before


async def test_another_organisation_cannot_read_or_change_pipelines(client, tenant,
                                                                    other_tenant, pipeline):
    r = await client.get(f"{ELT}/pipelines/{pipeline['id']}",
                         headers=other_tenant.headers("read"))
    assert (r.status_code, r.json()) == (404, PIPELINE_NOT_FOUND)
    r = await client.patch(f"{ELT}/pipelines/{pipeline['id']}", json={"name": "stolen"},
                           headers=other_tenant.headers(RW))
    assert (r.status_code, r.json()) == (404, PIPELINE_NOT_FOUND)
    r = await client.get(f"{ELT}/pipelines", headers=other_tenant.headers("read"))
    assert r.json() == {"pipelines": []}
    r = await client.get(f"{ELT}/pipelines/{pipeline['id']}", headers=tenant.headers("read"))
    assert r.json() == {"pipeline": pipeline}


async def test_foreign_and_missing_runs_answer_alike(client, tenant, other_tenant, run):
    missing = str(int(run["id"]) + 1000)
    answers = []
    for ident in (run["id"], missing):
        r = await client.get(f"{ELT}/runs/{ident}", headers=other_tenant.headers("read"))
        answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1] == (404, RUN_NOT_FOUND)

