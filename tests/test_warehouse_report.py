"""Contract of the loader's run report (`warehouse-metrics-report.txt`, NOTES "Warehouse
connections"):

    PATCH /api/v1/organisations/{organisation_pk}/integrations/warehouse-connections/{id}/
          metrics/{run_id}/
    {"completed_at", "events_delivered", "batches_dlq", "error"} (+ optional per-type counts)

204 with an empty body; 404 `{"detail": "Not found."}` for anything the caller cannot see; 400
`{"field": [...]}`; 401/403 `{"detail": ...}`; idempotent replays; 409 for a different report
of a completed run. Outcomes are read back through the ORM, GraphQL `run(id:)`, the telemetry
endpoint and the hourly roll-up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from runwatch.models import PipelineHourlyStats, Run, RunStatus
from runwatch.resolvers.runs import MAX_ERROR_CHARS
from runwatch.resolvers.tokens import revoke_token
from tests.conftest import Tenant
from tests.helpers import create_connection, graphql, iso, report, start_run
from tests.test_connections_rest import (
    assert_detail,
    assert_field_error,
    assert_not_found,
    assert_utc_timestamp,
    param_id,
)


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP = _Drop()  # a report_body() value that removes the key
MIN = timedelta(minutes=1)

# ----------------------------------------------------------------------------------------------
# helpers


@dataclass(frozen=True)
class Target:
    """A connection and a run the recurring task pre-created ten minutes ago."""

    cid: int
    run_id: int
    started_at: datetime


async def new_target(client: httpx.AsyncClient, tenant: Tenant, name: str = "warehouse") -> Target:
    cid = await create_connection(client, tenant, name)
    started = datetime.now(UTC) - 10 * MIN
    return Target(cid, await start_run(client, tenant, cid, started), started)


@pytest.fixture
async def target(client, tenant) -> Target:
    return await new_target(client, tenant)


def report_body(target: Target, **fields: Any) -> dict[str, Any]:
    """A valid report (completed five minutes after the start, 100 events) with `fields`
    replaced; DROP removes a key, a timedelta is a time relative to the run's start."""
    body = {"completed_at": 5 * MIN, "events_delivered": 100, "batches_dlq": 0, "error": None}
    body.update(fields)
    return {k: iso(target.started_at + v) if isinstance(v, timedelta) else v
            for k, v in body.items() if v is not DROP}


def run_url(tenant: Tenant, target: Target, slash: str = "/") -> str:
    return f"{tenant.prefix}/{target.cid}/metrics/{target.run_id}{slash}"


async def send(
    client: httpx.AsyncClient, tenant: Tenant, target: Target, body: Any = None, *,
    scopes: str = "report", headers: dict[str, str] | None = None, **kwargs: Any,
) -> httpx.Response:
    headers = tenant.headers(scopes) if headers is None else headers
    if body is not None:
        kwargs["json"] = body
    return await client.patch(run_url(tenant, target), headers=headers, **kwargs)


def assert_no_content(r: httpx.Response) -> None:
    assert (r.status_code, r.content) == (204, b""), r.text


async def snapshot(run_id: int) -> dict[str, Any]:
    run = await Run.get(id=run_id)
    return {f: getattr(run, f) for f in (
        "status", "started_at", "finished_at", "updated_at", "events_delivered",
        "events_evaluations", "events_custom", "dlq_batches", "error")}


async def assert_still_running(*run_ids: int) -> None:
    for run_id in run_ids:
        run = await Run.get(id=run_id)
        assert (run.status, run.finished_at, run.events_delivered) == (
            RunStatus.RUNNING, None, None), run_id


async def hourly_totals(cid: int) -> dict[str, int]:
    rows = await PipelineHourlyStats.filter(pipeline__connection_id=cid)
    return {f: sum(getattr(row, f) for row in rows)
            for f in ("runs_succeeded", "runs_failed", "events_total", "dlq_batches")}


async def telemetry(client: httpx.AsyncClient, tenant: Tenant, cid: int) -> dict[str, Any]:
    r = await client.get(f"{tenant.prefix}/{cid}/telemetry/", headers=tenant.headers("read"))
    assert r.status_code == 200, r.text
    return r.json()


async def graphql_status(client: httpx.AsyncClient, tenant: Tenant, run_id: int) -> str:
    body = await graphql(client, tenant, "query($id: ID!) { run(id: $id) { status } }", "read",
                         id=str(run_id))
    assert "errors" not in body, body
    return body["data"]["run"]["status"]


# ----------------------------------------------------------------------------------------------
# success


async def test_report_is_204_and_completes_the_run(client, tenant, target):
    body = report_body(target, events_delivered=148233)
    assert_no_content(await report(client, tenant, target.cid, target.run_id, **body))
    run = await snapshot(target.run_id)
    assert run["status"] == RunStatus.SUCCEEDED
    assert run["finished_at"] == assert_utc_timestamp(body["completed_at"])
    assert (run["events_delivered"], run["dlq_batches"], run["error"]) == (148233, 0, None)
    assert await graphql_status(client, tenant, target.run_id) == "SUCCEEDED"
    t = await telemetry(client, tenant, target.cid)
    assert (t["status"], t["events_last_24h"]["total"]) == ("active", 148233)
    assert t["last_delivery_at"] == body["completed_at"]


@pytest.mark.parametrize("fields, status", [
    ({}, "SUCCEEDED"),
    ({"events_delivered": 0}, "SUCCEEDED"),
    ({"batches_dlq": DROP, "error": DROP}, "SUCCEEDED"),
    ({"evaluations": 60, "custom_events": 40}, "SUCCEEDED"),
    ({"error": "COPY failed: permission denied"}, "FAILED"),
    ({"error": "timeout", "events_delivered": 0}, "FAILED"),
    ({"batches_dlq": 2}, "FAILED"),
    ({"batches_dlq": 1, "error": "throttled"}, "FAILED"),
], ids=param_id)
async def test_outcome_of_a_report(client, tenant, target, fields, status):
    body = report_body(target, **fields)
    assert_no_content(await report(client, tenant, target.cid, target.run_id, **body))
    assert await graphql_status(client, tenant, target.run_id) == status
    run = await snapshot(target.run_id)
    assert run["status"] == RunStatus(status.lower())
    assert run["error"] == body.get("error")
    assert run["dlq_batches"] == body.get("batches_dlq", 0)
    stats = await hourly_totals(target.cid)
    assert (stats["runs_succeeded"], stats["runs_failed"]) == (
        (1, 0) if status == "SUCCEEDED" else (0, 1))


@pytest.mark.parametrize("slash", ["/", ""])
async def test_start_and_report_with_or_without_trailing_slash(client, tenant, slash):
    cid = await create_connection(client, tenant)
    r = await client.post(f"{tenant.prefix}/{cid}/metrics{slash}", headers=tenant.headers("report"))
    assert r.status_code == 201, r.text
    target = Target(cid, r.json()["run_id"], assert_utc_timestamp(r.json()["started_at"]))
    r = await client.patch(run_url(tenant, target, slash),
                           json=report_body(target, completed_at=MIN),
                           headers=tenant.headers("report"))
    assert_no_content(r)
    assert (await Run.get(id=target.run_id)).status == RunStatus.SUCCEEDED


@pytest.mark.parametrize("completed_at", [
    timedelta(0),  # completes at the instant it started
    timedelta(microseconds=1),
    timedelta(minutes=12),  # two minutes ahead of the server's clock: within the skew allowed
])
async def test_completion_time_boundaries_that_are_accepted(client, tenant, target, completed_at):
    body = report_body(target, completed_at=completed_at)
    assert_no_content(await send(client, tenant, target, body))
    run = await snapshot(target.run_id)
    assert run["finished_at"] == target.started_at + completed_at


async def test_a_whole_second_report_in_the_start_second_is_accepted(client, tenant, target):
    """Loaders report whole seconds (the contract's example does); a quick run that completes
    in the second it started must not read as completing before its start."""
    started = target.started_at
    completed = started.replace(microsecond=0)
    body = report_body(target, completed_at=completed - started)
    assert_no_content(await send(client, tenant, target, body))
    assert (await snapshot(target.run_id))["finished_at"] == completed


@pytest.mark.parametrize("spelling", [
    lambda moment: moment.astimezone(timezone(timedelta(hours=2))).isoformat(),
    lambda moment: moment.replace(tzinfo=None).isoformat(),  # no offset: UTC
], ids=["offset", "naive"])
async def test_completion_time_with_an_offset_or_none_is_utc(client, tenant, target, spelling):
    moment = target.started_at + 5 * MIN
    assert_no_content(await send(client, tenant, target,
                                 report_body(target, completed_at=spelling(moment))))
    assert (await snapshot(target.run_id))["finished_at"] == moment


async def test_per_type_counts_feed_the_telemetry_split(client, tenant):
    first = await new_target(client, tenant)
    assert_no_content(await send(client, tenant, first, report_body(
        first, events_delivered=100, evaluations=60, custom_events=30)))  # 10 of unknown type
    second = Target(first.cid, await start_run(client, tenant, first.cid, first.started_at),
                    first.started_at)
    assert_no_content(await send(client, tenant, second, report_body(
        second, events_delivered=50)))  # no split at all: total only
    t = await telemetry(client, tenant, first.cid)
    assert t["events_last_24h"] == {"evaluations": 60, "custom_events": 30, "total": 150}
    assert t["events_last_7d"] == t["events_last_24h"]


@pytest.mark.parametrize("length", [MAX_ERROR_CHARS, MAX_ERROR_CHARS + 1, 20000])
async def test_long_error_is_stored_truncated_with_a_marker(client, tenant, target, length):
    error = "".join(chr(ord("a") + i % 26) for i in range(length))
    body = report_body(target, error=error)
    assert_no_content(await send(client, tenant, target, body))
    stored = (await snapshot(target.run_id))["error"]
    if length <= MAX_ERROR_CHARS:
        assert stored == error
    else:
        assert stored.startswith(error[:MAX_ERROR_CHARS])
        assert "[truncated" in stored[MAX_ERROR_CHARS:] and len(stored) < MAX_ERROR_CHARS + 100
    t = await telemetry(client, tenant, target.cid)
    assert t["recent_errors"][0]["message"] == stored
    assert_no_content(await send(client, tenant, target, body))  # the replay is identical


async def test_nul_character_in_error_is_never_a_500(client, tenant, target):
    """PostgreSQL text cannot hold U+0000: refusing the report (naming `error`) or storing the
    message with or without it are both fine; a 500 is not."""
    r = await send(client, tenant, target, report_body(target, error="disk\x00full"))
    if r.status_code == 400:
        assert_field_error(r, "error")
        await assert_still_running(target.run_id)
    else:
        assert_no_content(r)
        run = await snapshot(target.run_id)
        assert run["status"] == RunStatus.FAILED, run
        assert run["error"].replace("\x00", "").startswith("disk"), run


# ----------------------------------------------------------------------------------------------
# not found


@dataclass(frozen=True)
class World:
    ours: Tenant
    theirs: Tenant
    target: Target
    sibling: Target  # another connection of our organisation
    foreign: Target  # the other organisation's


NOT_FOUND = {  # case -> (organisation in the URL, connection, run, whose token)
    "unknown run": lambda w: (w.ours, w.target.cid, w.target.run_id + 1000, w.ours),
    "run of a sibling connection": lambda w: (w.ours, w.sibling.cid, w.target.run_id, w.ours),
    "sibling's run under ours": lambda w: (w.ours, w.target.cid, w.sibling.run_id, w.ours),
    "unknown connection": lambda w: (w.ours, w.sibling.cid + 1000, w.target.run_id, w.ours),
    "non-numeric run": lambda w: (w.ours, w.target.cid, "abc", w.ours),
    "run with exponent": lambda w: (w.ours, w.target.cid, "1e3", w.ours),
    "negative run": lambda w: (w.ours, w.target.cid, "-1", w.ours),
    "zero run": lambda w: (w.ours, w.target.cid, "0", w.ours),
    "run beyond bigint": lambda w: (w.ours, w.target.cid, "9223372036854775808", w.ours),
    "non-ascii digits": lambda w: (w.ours, w.target.cid, "\u0661\u0662", w.ours),
    "non-numeric connection": lambda w: (w.ours, "abc", w.target.run_id, w.ours),
    "connection beyond int": lambda w: (w.ours, "2147483648", w.target.run_id, w.ours),
    "non-numeric organisation": lambda w: ("abc", w.target.cid, w.target.run_id, w.ours),
    "their token on our url": lambda w: (w.ours, w.target.cid, w.target.run_id, w.theirs),
    "their url, their token, our ids": lambda w: (
        w.theirs, w.target.cid, w.target.run_id, w.theirs),
    "our token, their organisation in the url": lambda w: (
        w.theirs, w.target.cid, w.target.run_id, w.ours),
    "our url, their run": lambda w: (w.ours, w.target.cid, w.foreign.run_id, w.ours),
    "our url, their connection and run": lambda w: (
        w.ours, w.foreign.cid, w.foreign.run_id, w.ours),
}


@pytest.mark.parametrize("case", list(NOT_FOUND))
async def test_not_found(client, tenant, other_tenant, target, case):
    world = World(tenant, other_tenant, target, await new_target(client, tenant, "sibling"),
                  await new_target(client, other_tenant, "foreign"))
    org, cid, run_id, caller = NOT_FOUND[case](world)
    org_id = org.org_id if isinstance(org, Tenant) else org
    url = (f"/api/v1/organisations/{org_id}/integrations/warehouse-connections/{cid}/"
           f"metrics/{run_id}/")
    r = await client.patch(url, json=report_body(target), headers=caller.headers("report"))
    assert_not_found(r)
    await assert_still_running(target.run_id, world.sibling.run_id, world.foreign.run_id)


# ----------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("fields, names", [
    ({"events_delivered": -1}, ["events_delivered"]),
    ({"batches_dlq": -1}, ["batches_dlq"]),
    ({"evaluations": -5}, ["evaluations"]),
    ({"custom_events": -5}, ["custom_events"]),
    ({"events_delivered": 2**63}, ["events_delivered"]),
    ({"batches_dlq": 2**31}, ["batches_dlq"]),
    ({"events": 5}, ["events"]),
    ({"run_id": 1}, ["run_id"]),
    ({"completed_at": "yesterday"}, ["completed_at"]),
    ({"completed_at": "2026-04-20"}, ["completed_at"]),
    ({"completed_at": "2026-13-01T00:00:00Z"}, ["completed_at"]),
    ({"completed_at": "20/04/2026 11:00"}, ["completed_at"]),
    ({"completed_at": "0001-01-01T00:00:00+01:00"}, ["completed_at"]),  # before year 1 in UTC
    ({"completed_at": "9999-12-31T23:59:59-01:00"}, ["completed_at"]),  # after year 9999
    ({"completed_at": 1776682812}, ["completed_at"]),
    ({"completed_at": True}, ["completed_at"]),
    ({"completed_at": ["2026-04-20T11:00:12Z"]}, ["completed_at"]),
    ({"completed_at": {"at": "2026-04-20T11:00:12Z"}}, ["completed_at"]),
    ({"completed_at": -MIN}, ["completed_at"]),  # before the run started
    ({"completed_at": timedelta(seconds=-1)}, ["completed_at"]),  # a second before the start
    ({"completed_at": 30 * MIN}, ["completed_at"]),  # 20 minutes in the future
    ({"completed_at": timedelta(days=365)}, ["completed_at"]),
    ({"evaluations": 80, "custom_events": 30},
     ["events_delivered", "evaluations", "custom_events"]),
    ({"evaluations": 101}, ["events_delivered", "evaluations"]),
    ({"events_delivered": 0, "custom_events": 1}, ["events_delivered", "custom_events"]),
    ({"completed_at": DROP}, ["completed_at"]),
    ({"completed_at": None}, ["completed_at"]),
    ({"events_delivered": DROP}, ["events_delivered"]),
    ({"events_delivered": None}, ["events_delivered"]),
    ({"events_delivered": True}, ["events_delivered"]),
    ({"events_delivered": 100.0}, ["events_delivered"]),
    ({"events_delivered": 1.5}, ["events_delivered"]),
    ({"events_delivered": "100"}, ["events_delivered"]),
    ({"batches_dlq": False}, ["batches_dlq"]),
    ({"batches_dlq": "0"}, ["batches_dlq"]),
    ({"batches_dlq": 0.5}, ["batches_dlq"]),
    ({"evaluations": "1"}, ["evaluations"]),
    ({"custom_events": [1]}, ["custom_events"]),
    ({"error": 5}, ["error"]),
    ({"error": True}, ["error"]),
    ({"error": ["disk full"]}, ["error"]),
    ({"error": {"message": "disk full"}}, ["error"]),
], ids=param_id)
async def test_invalid_report_names_the_field(client, tenant, target, fields, names):
    r = await send(client, tenant, target, report_body(target, **fields))
    assert_field_error(r, *names)
    await assert_still_running(target.run_id)
    assert (await hourly_totals(target.cid))["runs_succeeded"] == 0


async def test_every_invalid_field_is_reported_at_once(client, tenant, target):
    r = await send(client, tenant, target, {"batches_dlq": "x", "error": 3, "extra": 1})
    body = assert_field_error(r, "completed_at")
    assert {"completed_at", "events_delivered", "batches_dlq", "error", "extra"} <= set(body)


@pytest.mark.parametrize("raw", [b"", b"   "])
async def test_empty_body_is_missing_fields(client, tenant, target, raw):
    r = await send(client, tenant, target, content=raw)
    body = assert_field_error(r, "completed_at")
    assert "events_delivered" in body


@pytest.mark.parametrize("raw", [
    b'{"completed_at": ', b"not json", b"{'a': 1}", b"\xff\xfe",
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,  # valid JSON nested beyond the parser's depth
], ids=["truncated", "text", "single-quotes", "bom", "deeply-nested"])
async def test_invalid_json_is_a_400_detail(client, tenant, target, raw):
    r = await send(client, tenant, target, content=raw,
                   headers={**tenant.headers("report"), "Content-Type": "application/json"})
    assert_detail(r, 400)
    await assert_still_running(target.run_id)


@pytest.mark.parametrize("raw", [b"[]", b'[{"events_delivered": 1}]', b'"done"', b"42", b"null"])
async def test_json_that_is_not_an_object_is_a_non_field_error(client, tenant, target, raw):
    r = await send(client, tenant, target, content=raw,
                   headers={**tenant.headers("report"), "Content-Type": "application/json"})
    assert_field_error(r, "non_field_errors")
    await assert_still_running(target.run_id)


# ----------------------------------------------------------------------------------------------
# authentication and scopes


async def test_without_authorization_is_401(client, tenant, target):
    r = await send(client, tenant, target, report_body(target), headers={})
    assert_detail(r, 401)
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    await assert_still_running(target.run_id)


@pytest.mark.parametrize("authorization", [
    "Bearer garbage", "Bearer rw_0123456789ab_not-the-secret", "Basic dXNlcjpwYXNz", "Bearer ",
    "revoked",
])
async def test_invalid_token_is_401(client, tenant, target, authorization):
    if authorization == "revoked":
        await revoke_token(token=tenant.tokens["report"])
        authorization = tenant.headers("report")["Authorization"]
    r = await send(client, tenant, target, report_body(target),
                   headers={"Authorization": authorization})
    assert_detail(r, 401)
    await assert_still_running(target.run_id)


@pytest.mark.parametrize("scopes, fields", [
    ("read", {}),
    ("write", {}),
    ("read", {"events_delivered": -1, "bogus": 1}),  # permission is checked before validation
], ids=param_id)
async def test_token_without_the_report_scope_is_403(client, tenant, target, scopes, fields):
    r = await send(client, tenant, target, report_body(target, **fields), scopes=scopes)
    assert_detail(r, 403)
    await assert_still_running(target.run_id)


@pytest.mark.parametrize("scopes", ["report", "admin", "read,write,report"])
async def test_tokens_with_the_report_scope_may_report(client, tenant, target, scopes):
    assert_no_content(await send(client, tenant, target, report_body(target), scopes=scopes))


# ----------------------------------------------------------------------------------------------
# idempotency and conflicts


@pytest.mark.parametrize("fields", [
    {},
    {"error": "disk full", "events_delivered": 0},
    {"batches_dlq": 3},
    {"evaluations": 70, "custom_events": 20},
    {"batches_dlq": DROP, "error": DROP},
], ids=param_id)
async def test_replaying_the_identical_report_changes_nothing(client, tenant, target, fields):
    body = report_body(target, **fields)
    assert_no_content(await send(client, tenant, target, body))
    before = (await snapshot(target.run_id), await hourly_totals(target.cid),
              await telemetry(client, tenant, target.cid))
    for _ in range(3):
        assert_no_content(await send(client, tenant, target, body))
    after = (await snapshot(target.run_id), await hourly_totals(target.cid),
             await telemetry(client, tenant, target.cid))
    assert after == before


async def test_replay_of_the_same_instant_in_another_offset_is_identical(client, tenant, target):
    body = report_body(target)
    assert_no_content(await send(client, tenant, target, body))
    before = await snapshot(target.run_id)
    moment = assert_utc_timestamp(body["completed_at"])
    body["completed_at"] = moment.astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert_no_content(await send(client, tenant, target, body))
    assert await snapshot(target.run_id) == before


@pytest.mark.parametrize("change", [
    {"events_delivered": 101},
    {"completed_at": 5 * MIN + timedelta(seconds=1)},
    {"error": "late failure"},
    {"batches_dlq": 1},
    {"evaluations": 10},
    {"events_delivered": 0, "error": "failed after all"},
], ids=param_id)
async def test_a_different_report_for_a_completed_run_is_409(client, tenant, target, change):
    assert_no_content(await send(client, tenant, target, report_body(target)))
    before = (await snapshot(target.run_id), await hourly_totals(target.cid))
    r = await send(client, tenant, target, report_body(target, **change))
    message = assert_detail(r, 409)
    assert str(target.run_id) in message and "completed" in message.lower(), message
    assert (await snapshot(target.run_id), await hourly_totals(target.cid)) == before


async def test_concurrent_identical_reports_change_the_run_once(client, tenant, target):
    body = report_body(target, events_delivered=1234, evaluations=1000, custom_events=200)
    responses = await asyncio.gather(*(send(client, tenant, target, body) for _ in range(20)))
    for r in responses:
        assert_no_content(r)
    t = await telemetry(client, tenant, target.cid)
    assert t["events_last_24h"] == {"evaluations": 1000, "custom_events": 200, "total": 1234}
    assert await hourly_totals(target.cid) == {
        "runs_succeeded": 1, "runs_failed": 0, "events_total": 1234, "dlq_batches": 0}


async def test_concurrent_different_reports_one_wins_the_rest_conflict(client, tenant, target):
    bodies = [report_body(target, events_delivered=100 + i) for i in range(20)]
    responses = await asyncio.gather(*(send(client, tenant, target, b) for b in bodies))
    codes = [r.status_code for r in responses]
    assert sorted(codes) == [204] + [409] * 19, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert_detail(r, 409)
    winner = bodies[codes.index(204)]["events_delivered"]
    assert (await snapshot(target.run_id))["events_delivered"] == winner
    totals = await hourly_totals(target.cid)
    assert (totals["runs_succeeded"], totals["events_total"]) == (1, winner)
