"""Concurrent PATCHes of one ELT run lose nothing, and a claim race has exactly one winner.

The original service's appends were read-modify-write and lost lines under concurrent PATCHes;
here every change of a run locks its row first. These tests fire the PATCHes together
(`asyncio.gather` over the ASGI client, on the one event loop) and check what was stored, on
SQLite and on PostgreSQL. Each runs a few times: a race that is lost only sometimes is still a
race.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runwatch.models import (
    Run,
    RunLogLine,
    RunTelemetrySample,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.elt_helpers import (
    AGENT,
    ELT,
    Agent,
    agent_patch,
    assert_error,
    claim,
    create_pipeline,
    create_run,
    get_run,
    make_gateway,
    patch_run,
)

N = 50
ATTEMPTS = range(3)
ALREADY_CLAIMED = {"error": "Already claimed by another gateway"}


@pytest.fixture
async def pipeline(client, tenant) -> dict[str, Any]:
    return await create_pipeline(client, tenant, "orders")


@pytest.fixture
async def gateways(tenant) -> list[Agent]:
    return [await make_gateway(tenant, f"gw-{i}") for i in range(5)]


@pytest.fixture
async def run(client, tenant, pipeline) -> dict[str, Any]:
    return await create_run(client, tenant, pipeline["id"])


async def seqs(model: Any, run_id: str) -> list[int]:
    return [row.seq for row in await model.filter(run_id=int(run_id)).order_by("seq")]


def all_ok(responses: list[Any]) -> None:
    bad = [(r.status_code, r.text) for r in responses if r.status_code != 200]
    assert not bad, bad


# ----------------------------------------------------------------------------------------------
# appends


@pytest.mark.parametrize("attempt", ATTEMPTS)
async def test_concurrent_log_appends_lose_nothing(client, tenant, gateways, run, attempt):
    """Half from a person's token, half from a gateway (the run's claimant)."""
    gateway = gateways[0]
    await claim(client, gateway, run["id"])
    responses = await asyncio.gather(*(
        agent_patch(client, gateway, run["id"], {"appendLog": {"message": f"line {i}"}})
        if i % 2 else
        patch_run(client, tenant, run["id"], {"appendLog": {"level": "warn",
                                                            "message": f"line {i}"}})
        for i in range(N)
    ))
    all_ok(responses)
    body = await get_run(client, tenant, run["id"])
    messages = [line["message"] for line in body["logEntries"]]
    assert sorted(messages) == sorted(f"line {i}" for i in range(N))
    assert body["logEntriesDropped"] == 0
    assert await seqs(RunLogLine, run["id"]) == list(range(1, N + 1))
    row = await Run.get(id=int(run["id"]))
    assert (row.log_seq, row.log_base) == (N, 0)
    assert {line["level"] for line in body["logEntries"]} == {"info", "warn"}


@pytest.mark.parametrize("attempt", ATTEMPTS)
async def test_concurrent_sample_appends_lose_nothing(client, tenant, run, attempt):
    responses = await asyncio.gather(*(
        patch_run(client, tenant, run["id"], {"appendTelemetrySample": {"rows": i,
                                                                        "rowsDelta": 1}})
        for i in range(N)
    ))
    all_ok(responses)
    body = await get_run(client, tenant, run["id"])
    assert sorted(s["rows"] for s in body["telemetry"]["samples"]) == list(range(N))
    assert body["telemetrySamplesDropped"] == 0
    assert await seqs(RunTelemetrySample, run["id"]) == list(range(1, N + 1))


@pytest.mark.parametrize("attempt", ATTEMPTS)
async def test_concurrent_mixed_patches_lose_nothing(client, tenant, run, attempt):
    """Lines, samples and summary keys in the same concurrent PATCHes: every line and sample
    is there and the summary has every key some PATCH merged in."""
    keys = [("rowsLoaded", 7), ("bytesLoaded", 9), ("progress", 50), ("currentPhase", "load"),
            ("currentResource", "orders")]
    responses = await asyncio.gather(*(
        patch_run(client, tenant, run["id"], {
            "appendLog": {"message": f"m{i}"}, "appendTelemetrySample": {"rows": i},
            "telemetrySummary": {keys[i % len(keys)][0]: keys[i % len(keys)][1]}})
        for i in range(20)
    ))
    all_ok(responses)
    body = await get_run(client, tenant, run["id"])
    assert sorted(x["message"] for x in body["logEntries"]) == sorted(f"m{i}" for i in range(20))
    assert sorted(x["rows"] for x in body["telemetry"]["samples"]) == list(range(20))
    summary = body["telemetry"]["summary"]
    assert {k: summary.get(k) for k, _ in keys} == dict(keys)
    assert "updatedAt" in summary


@pytest.mark.parametrize("attempt", range(2))
async def test_concurrent_log_appends_past_the_cap_keep_exactly_500(client, tenant, run,
                                                                    attempt):
    r = await patch_run(client, tenant, run["id"],
                        {"logEntries": [{"message": f"old {i}"} for i in range(490)]})
    assert r.status_code == 200, r.text
    responses = await asyncio.gather(*(
        patch_run(client, tenant, run["id"], {"appendLog": {"message": f"new {i}"}})
        for i in range(30)
    ))
    all_ok(responses)
    body = await get_run(client, tenant, run["id"])
    messages = [x["message"] for x in body["logEntries"]]
    assert len(messages) == 500
    assert messages[:470] == [f"old {i}" for i in range(20, 490)]
    assert sorted(messages[470:]) == sorted(f"new {i}" for i in range(30))
    assert body["logEntriesDropped"] == 20
    assert await seqs(RunLogLine, run["id"]) == list(range(21, 521))
    # the answers report the drops as of each append: 0..20, the last one 20
    assert max(r.json()["run"]["logEntriesDropped"] for r in responses) == 20


@pytest.mark.parametrize("attempt", range(2))
async def test_concurrent_sample_appends_past_the_cap_keep_exactly_2000(client, tenant, run,
                                                                        attempt):
    r = await patch_run(client, tenant, run["id"],
                        {"telemetrySamples": [{"rows": i} for i in range(1990)]})
    assert r.status_code == 200, r.text
    responses = await asyncio.gather(*(
        patch_run(client, tenant, run["id"], {"appendTelemetrySample": {"rows": 10_000 + i}})
        for i in range(30)
    ))
    all_ok(responses)
    body = await get_run(client, tenant, run["id"])
    rows = [x["rows"] for x in body["telemetry"]["samples"]]
    assert len(rows) == 2000
    assert rows[:1970] == list(range(20, 1990))
    assert sorted(rows[1970:]) == [10_000 + i for i in range(30)]
    assert body["telemetrySamplesDropped"] == 20
    assert await RunTelemetrySample.filter(run_id=int(run["id"])).count() == 2000


async def test_concurrent_appends_of_many_runs_stay_apart(client, tenant, pipeline):
    runs = [(await create_run(client, tenant, pipeline["id"]))["id"] for _ in range(5)]
    responses = await asyncio.gather(*(
        patch_run(client, tenant, run_id, {"appendLog": {"message": f"{run_id}:{i}"}})
        for i in range(10) for run_id in runs
    ))
    all_ok(responses)
    for run_id in runs:
        body = await get_run(client, tenant, run_id)
        assert sorted(x["message"] for x in body["logEntries"]) == sorted(
            f"{run_id}:{i}" for i in range(10))
        assert await seqs(RunLogLine, run_id) == list(range(1, 11))


# ----------------------------------------------------------------------------------------------
# the claim race


@pytest.mark.parametrize("attempt", range(5))
async def test_two_gateways_race_to_claim_one_wins(client, tenant, gateways, run, attempt):
    first, second = gateways[0], gateways[1]
    responses = await asyncio.gather(
        agent_patch(client, first, run["id"], {"status": "running"}),
        agent_patch(client, second, run["id"], {"status": "running"}),
    )
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    (winner,) = [g for g, r in zip((first, second), responses, strict=True)
                 if r.status_code == 200]
    (lost,) = [r for r in responses if r.status_code == 409]
    assert lost.json() == ALREADY_CLAIMED
    body = await get_run(client, tenant, run["id"])
    assert (body["status"], body["gatewayId"]) == ("running", str(winner.id))
    won = next(r for r in responses if r.status_code == 200).json()["run"]
    assert (won["startedAt"], won["deadlineAt"]) == (body["startedAt"], body["deadlineAt"])


@pytest.mark.parametrize("attempt", range(3))
async def test_many_gateways_race_to_claim_one_wins(client, tenant, gateways, run, attempt):
    responses = await asyncio.gather(*(
        agent_patch(client, g, run["id"], {"status": "running",
                                           "appendLog": {"message": f"claimed by {g.name}"}})
        for g in gateways for _ in range(2)
    ))
    # each gateway claims twice (two replicas sharing its token): exactly one claim of all
    # wins, its twin included among the losers
    won = [(g, r) for g, r in zip([g for g in gateways for _ in range(2)], responses,
                                  strict=True) if r.status_code == 200]
    assert len(won) == 1, [r.text for r in responses]
    ((winner, _),) = won
    for r in responses:
        if r.status_code != 200:
            assert (r.status_code, r.json()) == (409, ALREADY_CLAIMED)
    body = await get_run(client, tenant, run["id"])
    assert body["gatewayId"] == str(winner.id)
    # only the winner's line went in: a refused PATCH applies nothing
    assert [x["message"] for x in body["logEntries"]] == [f"claimed by {winner.name}"]


@pytest.mark.parametrize("attempt", range(3))
async def test_pending_runs_polled_by_many_gateways_are_claimed_once_each(
    client, tenant, pipeline, gateways, attempt
):
    runs = [(await create_run(client, tenant, pipeline["id"]))["id"] for _ in range(4)]

    async def work(gateway: Agent) -> list[str]:
        r = await client.get(f"{AGENT}/runs", headers=gateway.headers())
        got = []
        for item in r.json()["runs"]:
            claimed = await agent_patch(client, gateway, item["id"], {"status": "running"})
            if claimed.status_code == 200:
                got.append(item["id"])
            else:
                assert (claimed.status_code, claimed.json()) == (409, ALREADY_CLAIMED)
        return got

    results = await asyncio.gather(*(work(g) for g in gateways))
    claimed = [run_id for got in results for run_id in got]
    assert sorted(claimed) == sorted(runs)  # every run once, by one gateway
    for gateway, got in zip(gateways, results, strict=True):
        for run_id in got:
            assert (await get_run(client, tenant, run_id))["gatewayId"] == str(gateway.id)


@pytest.mark.parametrize("attempt", range(3))
async def test_finish_and_cancel_race_one_terminal_status(client, tenant, gateways, run,
                                                          attempt):
    """The gateway reports success while a person cancels: one of them wins, the other is
    refused, and the terminal event is enqueued exactly once."""
    r = await client.put(f"{ELT}/runs/webhook", json={"url": "http://127.0.0.1:9/hook"},
                         headers=tenant.headers("write"))
    assert r.status_code == 200, r.text
    gateway = gateways[0]
    await claim(client, gateway, run["id"])
    finish, cancel = await asyncio.gather(
        agent_patch(client, gateway, run["id"], {"status": "succeeded"}),
        patch_run(client, tenant, run["id"], {"status": "cancelled"}),
    )
    # The cancel wins when the gateway's finish is answered `cancel: true` (with 200: the
    # eltPulse gateway throws on any non-2xx); else the cancel is refused.
    winner = "cancelled" if cancel.status_code == 200 else "succeeded"
    assert finish.status_code == 200, finish.text
    if winner == "succeeded":
        assert_error(cancel, 409)
        assert finish.json()["cancel"] is False
    else:  # the gateway learns it was cancelled
        assert finish.json()["cancel"] is True
        assert finish.json()["run"]["status"] == "cancelled"
    body = await get_run(client, tenant, run["id"])
    assert body["status"] == winner
    deliveries = await WebhookDelivery.filter(run_id=int(run["id"]))
    assert [d.event_type for d in deliveries] == [f"run.{winner}"]


# ----------------------------------------------------------------------------------------------
# other races


@pytest.mark.parametrize("attempt", range(2))
async def test_concurrent_creates_with_one_correlation_id_create_one_run(client, tenant,
                                                                        pipeline, attempt):
    responses = await asyncio.gather(*(
        client.post(f"{ELT}/runs", json={"pipelineId": pipeline["id"], "correlationId": "job-7"},
                    headers=tenant.headers("write"))
        for _ in range(10)
    ))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9, [
        r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert_error(r, 409)
    assert await Run.filter(organisation_id=tenant.org_id).count() == 1


async def test_concurrent_puts_of_the_default_webhook_make_one(client, tenant):
    responses = await asyncio.gather(*(
        client.put(f"{ELT}/runs/webhook", json={"url": f"http://127.0.0.1:9/hook/{i}"},
                   headers=tenant.headers("write"))
        for i in range(8)
    ))
    all_ok(responses)
    assert await WebhookEndpoint.filter(organisation_id=tenant.org_id).count() == 1
    assert len({r.json()["webhook"]["secret"] for r in responses}) == 1
