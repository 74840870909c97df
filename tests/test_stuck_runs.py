"""Stuck ELT runs: past their deadline, or claimed by a gateway that stopped heartbeating.
The warehouse orphan case is in `test_reaper.py`; this file covers the rest, including the
reaper inside the worker loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook
from tortoise.transactions import in_transaction

from runwatch.models import (
    Gateway,
    Pipeline,
    PipelineHourlyStats,
    Run,
    RunStatus,
    WebhookDelivery,
)
from runwatch.resolvers import elt_runs, gateways, lifecycle, pipelines, runs, webhooks
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.run_input import RunChange
from runwatch.services import workers
from runwatch.services.reaper import reap_stuck_runs
from tests.conftest import DIALECT
from tests.webhook_receiver import Receiver

# Five past a whole hour, a day ago: what finishes within 55 minutes lands in one hourly row.
T0 = utcnow().replace(minute=5, second=0, microsecond=0) - timedelta(days=1)
LEASE = timedelta(seconds=120)
S = timedelta(seconds=1)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver.running() as r:
        yield r


async def new_pipeline(caller: Caller, name: str = "orders", **raw) -> Pipeline:
    return await pipelines.create_pipeline(
        caller=caller, fields=pipelines.PipelineFields(name=name, **raw))


async def running_run(caller: Caller, pipeline: Pipeline, at: datetime = T0) -> Run:
    return await elt_runs.create_run(caller=caller, now=at, new=elt_runs.NewRun(
        pipeline_id=pipeline.id, status=RunStatus.RUNNING))


async def pending_run(caller: Caller, pipeline: Pipeline, at: datetime = T0, **raw) -> Run:
    return await elt_runs.create_run(caller=caller, now=at,
                                     new=elt_runs.NewRun(pipeline_id=pipeline.id, **raw))


async def new_gateway(caller: Caller, name: str = "gw-eu-1") -> tuple[Gateway, Caller]:
    gateway, _ = await gateways.create_gateway(caller=caller, name=name)
    return gateway, Caller(organisation_id=caller.organisation_id,
                           scopes=frozenset({Scope.GATEWAY}), gateway_id=gateway.id)


async def claimed_run(caller: Caller, gateway_caller: Caller, pipeline: Pipeline,
                      at: datetime = T0) -> Run:
    """A pending run the gateway claims at `at` (which counts as its heartbeat)."""
    run = await pending_run(caller, pipeline, at=at)
    return await elt_runs.update_gateway_run(caller=gateway_caller, run_id=run.id, now=at,
                                             change=RunChange(status=RunStatus.RUNNING))


async def failed_in_rollup() -> int:
    return sum(row.runs_failed for row in await PipelineHourlyStats.all())


async def reload(run: Run) -> Run:
    return await Run.get(id=run.id)


# ----------------------------------------------------------------------------------------------
# deadlines


async def test_a_run_past_its_pipelines_deadline_times_out(caller):
    pipeline = await new_pipeline(caller, max_runtime_seconds=600)
    run = await running_run(caller, pipeline)
    assert run.deadline_at == T0 + timedelta(seconds=600)
    assert await reap_stuck_runs(now=T0 + 599 * S) == 0
    assert (await reload(run)).status == RunStatus.RUNNING

    assert await reap_stuck_runs(now=T0 + 601 * S) == 1
    run = await reload(run)
    assert run.status == RunStatus.TIMED_OUT
    assert run.finished_at == T0 + timedelta(seconds=600)
    assert run.error and "10m" in run.error and "not completed" in run.error
    assert await reap_stuck_runs(now=T0 + timedelta(days=3)) == 0
    assert (await reload(run)).finished_at == T0 + timedelta(seconds=600)


async def test_without_a_maximum_the_default_of_two_hours_applies(caller):
    pipeline = await new_pipeline(caller)
    started = await running_run(caller, pipeline)
    claimed = await pending_run(caller, pipeline)
    claimed = await elt_runs.update_run(caller=caller, run_id=claimed.id, now=T0 + 600 * S,
                                        change=RunChange(status=RunStatus.RUNNING))
    assert started.deadline_at == T0 + timedelta(hours=2)
    assert claimed.deadline_at == T0 + timedelta(hours=2, minutes=10)

    assert await reap_stuck_runs(now=T0 + timedelta(hours=2) - S) == 0
    assert await reap_stuck_runs(now=T0 + timedelta(hours=2) + S) == 1
    started = await reload(started)
    assert started.status == RunStatus.TIMED_OUT
    assert started.finished_at == T0 + timedelta(hours=2)
    assert "2h00m" in started.error
    assert (await reload(claimed)).status == RunStatus.RUNNING

    assert await reap_stuck_runs(now=T0 + timedelta(hours=2, minutes=10) + S) == 1
    claimed = await reload(claimed)
    assert claimed.status == RunStatus.TIMED_OUT
    assert claimed.finished_at == T0 + timedelta(hours=2, minutes=10)


async def test_a_gateways_run_outlives_the_orphan_window(caller):
    """eltPulse never sets a maximum runtime: a sync of many hours on a gateway that keeps
    heartbeating is not killed at the orphan window (its lease watches it) but at the
    gateway ceiling (24 h: a restarted gateway heartbeats on without its runs); a pipeline's
    own `max_runtime_seconds` still bounds it."""
    pipeline = await new_pipeline(caller)
    bounded = await new_pipeline(caller, name="bounded", max_runtime_seconds=3 * 3600)
    _, gateway_caller = await new_gateway(caller)
    long_sync = await claimed_run(caller, gateway_caller, pipeline)
    capped = await claimed_run(caller, gateway_caller, bounded)
    assert long_sync.deadline_at == T0 + lifecycle.GATEWAY_MAX_RUNTIME
    assert capped.deadline_at == T0 + timedelta(hours=3)
    for minutes in range(1, 5 * 60, 1):  # heartbeats every minute for five hours
        await gateways.heartbeat(caller=gateway_caller, now=T0 + timedelta(minutes=minutes))
        if minutes % 30 == 0:
            expected = 1 if minutes == 3 * 60 + 30 else 0
            assert await reap_stuck_runs(now=T0 + timedelta(minutes=minutes),
                                         gateway_lease=LEASE) == expected, minutes
    assert (await reload(long_sync)).status == RunStatus.RUNNING
    capped = await reload(capped)
    assert capped.status == RunStatus.TIMED_OUT
    assert capped.finished_at == T0 + timedelta(hours=3)
    # the run ends as its gateway says, five hours in
    done = await elt_runs.update_gateway_run(
        caller=gateway_caller, run_id=long_sync.id, now=T0 + timedelta(hours=5),
        change=RunChange(status=RunStatus.SUCCEEDED))
    assert done.status == RunStatus.SUCCEEDED


async def test_a_gateways_forgotten_run_times_out_at_the_ceiling(caller):
    """A gateway that restarted heartbeats under the same token but no longer runs what it
    claimed: the run times out at the gateway ceiling, not never."""
    pipeline = await new_pipeline(caller)
    _, gateway_caller = await new_gateway(caller)
    run = await claimed_run(caller, gateway_caller, pipeline)
    ceiling = T0 + lifecycle.GATEWAY_MAX_RUNTIME
    await gateways.heartbeat(caller=gateway_caller, now=ceiling)
    assert await reap_stuck_runs(now=ceiling, gateway_lease=LEASE) == 0
    assert await reap_stuck_runs(now=ceiling + S, gateway_lease=LEASE) == 1
    run = await reload(run)
    assert run.status == RunStatus.TIMED_OUT and run.finished_at == ceiling


async def test_the_last_reported_error_is_kept(caller):
    pipeline = await new_pipeline(caller, max_runtime_seconds=60)
    run = await running_run(caller, pipeline)
    await elt_runs.update_run(caller=caller, run_id=run.id, now=T0 + 10 * S,
                              change=RunChange(error_summary="retrying: connection reset"))
    assert await reap_stuck_runs(now=T0 + 61 * S) == 1
    run = await reload(run)
    assert run.status == RunStatus.TIMED_OUT
    assert "not completed" in run.error
    assert "Last reported error: retrying: connection reset" in run.error


async def test_pending_runs_are_never_reaped(caller):
    pipeline = await new_pipeline(caller, max_runtime_seconds=60)
    gateway, _ = await new_gateway(caller)
    plain = await pending_run(caller, pipeline)
    targeted = await pending_run(caller, pipeline, target_gateway_id=gateway.id)
    assert plain.deadline_at is None
    assert await reap_stuck_runs(now=T0 + timedelta(days=100), gateway_lease=LEASE) == 0
    for run in (plain, targeted):
        run = await reload(run)
        assert run.status == RunStatus.PENDING and run.finished_at is None and run.error is None
    assert await failed_in_rollup() == 0


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED])
async def test_a_run_finished_before_the_reaper_ran_is_untouched(caller, status):
    pipeline = await new_pipeline(caller, max_runtime_seconds=60)
    _, gateway_caller = await new_gateway(caller)
    mine = await running_run(caller, pipeline)
    theirs = await claimed_run(caller, gateway_caller, pipeline)
    finished = [
        await update(caller=who, run_id=run.id, now=T0 + 30 * S, change=RunChange(status=status))
        for update, who, run in ((elt_runs.update_run, caller, mine),
                                 (elt_runs.update_gateway_run, gateway_caller, theirs))
    ]
    before = {r.id: (r.status, r.finished_at, r.error, r.updated_at) for r in await Run.all()}
    rollup = await failed_in_rollup()
    deliveries = await WebhookDelivery.all().count()

    assert await reap_stuck_runs(now=T0 + timedelta(days=2), gateway_lease=LEASE) == 0
    after = {r.id: (r.status, r.finished_at, r.error, r.updated_at) for r in await Run.all()}
    assert after == before
    assert all(r.status == status and r.finished_at == T0 + 30 * S for r in finished)
    assert await failed_in_rollup() == rollup
    assert await WebhookDelivery.all().count() == deliveries


# ----------------------------------------------------------------------------------------------
# gateway leases


async def test_a_silent_gateways_runs_time_out_after_the_lease(caller):
    pipeline = await new_pipeline(caller)
    gateway, gateway_caller = await new_gateway(caller)
    run = await claimed_run(caller, gateway_caller, pipeline)
    assert run.gateway_id == gateway.id
    assert (await Gateway.get(id=gateway.id)).last_seen_at == T0

    assert await reap_stuck_runs(now=T0 + LEASE, gateway_lease=LEASE) == 0
    assert await reap_stuck_runs(now=T0 + LEASE + S, gateway_lease=LEASE) == 1
    run = await reload(run)
    assert run.status == RunStatus.TIMED_OUT
    assert run.finished_at == T0 + LEASE
    assert "gw-eu-1" in run.error and "heartbeat" in run.error
    assert "2m00s" in run.error
    assert await reap_stuck_runs(now=T0 + timedelta(days=1), gateway_lease=LEASE) == 0

    # the gateway learns on its next call that the run is over
    r = await elt_runs.get_visible_run(caller=gateway_caller, run_id=run.id)
    assert r.status == RunStatus.TIMED_OUT


async def test_the_lease_is_the_one_given(caller):
    pipeline = await new_pipeline(caller)
    _, gateway_caller = await new_gateway(caller)
    run = await claimed_run(caller, gateway_caller, pipeline)
    lease = timedelta(minutes=10)
    assert await reap_stuck_runs(now=T0 + LEASE + S, gateway_lease=lease) == 0
    assert await reap_stuck_runs(now=T0 + lease + S, gateway_lease=lease) == 1
    assert (await reload(run)).finished_at == T0 + lease


async def test_a_heartbeating_gateway_keeps_its_runs(caller):
    pipeline = await new_pipeline(caller)
    alive, alive_caller = await new_gateway(caller, "alive")
    _, silent_caller = await new_gateway(caller, "silent")
    kept = await claimed_run(caller, alive_caller, pipeline)
    lost = await claimed_run(caller, silent_caller, pipeline)
    for seconds in (60, 150, 240):
        await gateways.heartbeat(caller=alive_caller, now=T0 + seconds * S)
    assert (await Gateway.get(id=alive.id)).last_seen_at == T0 + 240 * S

    assert await reap_stuck_runs(now=T0 + 300 * S, gateway_lease=LEASE) == 1
    assert (await reload(kept)).status == RunStatus.RUNNING
    lost = await reload(lost)
    assert lost.status == RunStatus.TIMED_OUT and "silent" in lost.error

    # once it stops too, its run goes the same way, at its last heartbeat plus the lease
    assert await reap_stuck_runs(now=T0 + 360 * S, gateway_lease=LEASE) == 0
    assert await reap_stuck_runs(now=T0 + 361 * S, gateway_lease=LEASE) == 1
    kept = await reload(kept)
    assert kept.status == RunStatus.TIMED_OUT and kept.finished_at == T0 + 360 * S
    assert "alive" in kept.error


async def test_a_revoked_gateways_runs_time_out_when_its_lease_runs_out(caller):
    pipeline = await new_pipeline(caller)
    gateway, gateway_caller = await new_gateway(caller)
    run = await claimed_run(caller, gateway_caller, pipeline)
    await gateways.heartbeat(caller=gateway_caller, now=T0 + 60 * S)
    await gateways.revoke_gateway(caller=caller, gateway_id=gateway.id)
    assert await reap_stuck_runs(now=T0 + 180 * S, gateway_lease=LEASE) == 0
    assert await reap_stuck_runs(now=T0 + 181 * S, gateway_lease=LEASE) == 1
    run = await reload(run)
    assert run.status == RunStatus.TIMED_OUT and run.finished_at == T0 + 180 * S


async def test_runs_without_a_gateway_are_not_on_a_lease(caller, cid):
    pipeline = await new_pipeline(caller)
    _, gateway_caller = await new_gateway(caller)
    managed = await running_run(caller, pipeline)  # a managed worker's own run
    loader = await runs.start_run(caller=caller, connection_id=cid, started_at=T0, now=T0)
    claimed = await claimed_run(caller, gateway_caller, pipeline)
    assert await reap_stuck_runs(now=T0 + timedelta(minutes=30), gateway_lease=LEASE) == 1
    assert (await reload(claimed)).status == RunStatus.TIMED_OUT
    assert (await reload(managed)).status == RunStatus.RUNNING
    assert (await reload(loader)).status == RunStatus.RUNNING
    # they time out at their deadlines instead
    assert await reap_stuck_runs(now=T0 + timedelta(hours=2) + S, gateway_lease=LEASE) == 2


async def test_a_gateway_run_past_its_deadline_times_out_at_the_deadline(caller):
    pipeline = await new_pipeline(caller, max_runtime_seconds=60)
    _, gateway_caller = await new_gateway(caller)
    run = await claimed_run(caller, gateway_caller, pipeline)
    await gateways.heartbeat(caller=gateway_caller, now=T0 + 100 * S)
    assert await reap_stuck_runs(now=T0 + 101 * S, gateway_lease=LEASE) == 1
    run = await reload(run)
    assert run.status == RunStatus.TIMED_OUT and run.finished_at == T0 + 60 * S


# ----------------------------------------------------------------------------------------------
# once: roll-ups, webhooks, concurrent passes


async def test_timed_out_runs_count_once_and_enqueue_one_webhook(caller):
    pipeline = await new_pipeline(caller, max_runtime_seconds=600)
    endpoint = await webhooks.set_endpoint(caller=caller, url="http://127.0.0.1:9/",
                                           allow_private=True)
    _, gateway_caller = await new_gateway(caller)
    late = await running_run(caller, pipeline)
    abandoned = await claimed_run(caller, gateway_caller, pipeline)
    for _ in range(3):
        await reap_stuck_runs(now=T0 + timedelta(hours=1), gateway_lease=LEASE)
    assert await failed_in_rollup() == 2
    [stats] = await PipelineHourlyStats.filter(pipeline_id=pipeline.id)
    assert stats.runs_failed == 2 and stats.runs_succeeded == 0
    assert stats.hour == T0.replace(minute=0, second=0)
    for run in (late, abandoned):
        run = await reload(run)
        [delivery] = await WebhookDelivery.filter(run_id=run.id)
        # eltPulse's event for an endpoint that named none (tests/test_webhooks.py)
        assert delivery.endpoint_id == endpoint.id and delivery.event_type == "run.failed"
        payload = delivery.payload if isinstance(delivery.payload, dict) else json.loads(
            delivery.payload)
        assert (payload["status"], payload["timedOut"]) == ("failed", True)
        assert payload["errorSummary"] == run.error
        assert payload["finishedAt"] == iso(run.finished_at)


@pytest.mark.parametrize("batch", [500, 2, 1])
async def test_concurrent_passes_time_each_run_out_once(caller, batch):
    pipeline = await new_pipeline(caller, max_runtime_seconds=600)
    await webhooks.set_endpoint(caller=caller, url="http://127.0.0.1:9/", allow_private=True)
    late = [await running_run(caller, pipeline) for _ in range(4)]
    abandoned = []
    for name in ("gw-a", "gw-b"):
        _, gateway_caller = await new_gateway(caller, name)
        abandoned += [await claimed_run(caller, gateway_caller, pipeline) for _ in range(2)]
    passes = await asyncio.wait_for(asyncio.gather(*(
        reap_stuck_runs(now=T0 + timedelta(minutes=5), gateway_lease=LEASE, batch=batch)
        for _ in range(2))), 20)
    assert sum(passes) == 4
    passes = await asyncio.wait_for(asyncio.gather(*(
        reap_stuck_runs(now=T0 + timedelta(hours=1), gateway_lease=LEASE, batch=batch)
        for _ in range(3))), 20)
    assert sum(passes) == 4
    for run in late + abandoned:
        run = await reload(run)
        assert run.status == RunStatus.TIMED_OUT
        assert await WebhookDelivery.filter(run_id=run.id).count() == 1
    for run in abandoned:
        assert (await reload(run)).finished_at == T0 + LEASE
    for run in late:
        assert (await reload(run)).finished_at == T0 + timedelta(seconds=600)
    assert await failed_in_rollup() == 8


async def test_a_terminal_patch_racing_the_reaper_wins_or_loses_whole(client, tenant, caller):
    """The reaper and a gateway's final PATCH race for one run: exactly one of them finishes
    it, and it is counted and announced once."""
    await webhooks.set_endpoint(caller=caller, url="http://127.0.0.1:9/", allow_private=True)
    pipeline = await new_pipeline(caller, max_runtime_seconds=60)
    for _ in range(4):
        run = await running_run(caller, pipeline, at=utcnow() - timedelta(minutes=5))
        reaped, patched = await asyncio.wait_for(asyncio.gather(
            reap_stuck_runs(),
            client.patch(f"/api/elt/runs/{run.id}", json={"status": "succeeded"},
                         headers=tenant.headers("write")),
        ), 20)
        run = await reload(run)
        if reaped:
            assert run.status == RunStatus.TIMED_OUT and patched.status_code == 409
        else:
            assert run.status == RunStatus.SUCCEEDED and patched.status_code == 200
        assert await WebhookDelivery.filter(run_id=run.id).count() == 1
    rows = await PipelineHourlyStats.filter(pipeline_id=pipeline.id)
    assert sum(r.runs_failed + r.runs_succeeded for r in rows) == 4


# ----------------------------------------------------------------------------------------------
# inside the app


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.05)


async def test_the_worker_loop_reaps_and_announces(settings, caller, receiver):
    pipeline = await new_pipeline(caller)
    endpoint = await webhooks.set_endpoint(caller=caller, url=receiver.url, allow_private=True)
    first = await running_run(caller, pipeline, at=utcnow() - timedelta(hours=3))
    quick = dataclasses.replace(settings, reaper_interval_seconds=1, webhook_poll_seconds=1,
                                webhook_timeout_seconds=5)
    stop = asyncio.Event()
    task = asyncio.create_task(workers.run_workers(quick, stop))
    try:
        async def timed_out(run: Run) -> bool:
            return (await reload(run)).status == RunStatus.TIMED_OUT

        await wait_until(lambda: timed_out(first), 5, "the first reaper pass")
        # later passes find runs that became stuck since
        second = await running_run(caller, pipeline, at=utcnow() - timedelta(hours=3))
        await wait_until(lambda: timed_out(second), 5, "a later reaper pass")
        await receiver.wait_for(2, timeout=5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert task.done() and task.exception() is None
    payloads = [Webhook(endpoint.secret).verify(r.body, r.headers) for r in receiver.requests]
    assert sorted(p["runId"] for p in payloads) == sorted([str(first.id), str(second.id)])
    assert {(p["event"], p["timedOut"]) for p in payloads} == {("run.failed", True)}
    assert len(receiver.requests) == 2


async def test_a_zero_interval_disables_the_reaper(settings, caller):
    pipeline = await new_pipeline(caller)
    run = await running_run(caller, pipeline, at=utcnow() - timedelta(hours=3))
    stop = asyncio.Event()
    off = dataclasses.replace(settings, reaper_interval_seconds=0)
    await asyncio.wait_for(workers.run_reaper(off, stop), 2)  # returns at once
    assert (await reload(run)).status == RunStatus.RUNNING


async def test_a_gateway_back_during_a_pass_keeps_the_run_it_just_claimed(caller, monkeypatch):
    """The reaper finds the gateway silent; before it times the gateway's runs out, the
    gateway comes back (a heartbeat) and claims a new run. That run was claimed by a live
    gateway a moment ago: it must not be timed out."""
    from runwatch.services import reaper

    pipeline = await new_pipeline(caller)
    _, gateway_caller = await new_gateway(caller)
    await claimed_run(caller, gateway_caller, pipeline, at=T0)
    back = T0 + timedelta(minutes=10)
    fresh = await pending_run(caller, pipeline, at=T0)
    real_past_deadline = reaper._past_deadline
    real_transaction = reaper.lifecycle.transaction
    state = {"deadlines_done": False, "interleaved": False}

    async def past_deadline(*args, **kwargs):
        reaped = await real_past_deadline(*args, **kwargs)
        state["deadlines_done"] = True  # next: the query of silent gateways
        return reaped

    @contextlib.asynccontextmanager
    async def transaction(*args, **kwargs):
        if state["deadlines_done"] and not state["interleaved"]:
            state["interleaved"] = True
            await gateways.heartbeat(caller=gateway_caller, now=back)
            await elt_runs.update_gateway_run(caller=gateway_caller, run_id=fresh.id, now=back,
                                      change=RunChange(status=RunStatus.RUNNING))
        async with real_transaction(*args, **kwargs) as opened:
            yield opened

    monkeypatch.setattr(reaper, "_past_deadline", past_deadline)
    monkeypatch.setattr(reaper.lifecycle, "transaction", transaction)
    await reap_stuck_runs(now=back + timedelta(seconds=1), gateway_lease=LEASE)
    assert state["interleaved"]
    fresh = await reload(fresh)
    assert fresh.status == RunStatus.RUNNING, fresh.error


@pytest.mark.skipif(DIALECT != "postgres", reason="row locks (SQLite serialises writers)")
@pytest.mark.parametrize("kind", ["deadline", "gateway"])
async def test_a_pass_skips_runs_another_transaction_holds(caller, kind):
    """What the reaper's docstring promises: on PostgreSQL a pass skips the runs another
    worker holds instead of waiting for them (they are that worker's to finish)."""
    pipeline = await new_pipeline(caller, max_runtime_seconds=600)
    if kind == "deadline":
        stuck = [await running_run(caller, pipeline) for _ in range(3)]
    else:
        _, gateway_caller = await new_gateway(caller)
        stuck = [await claimed_run(caller, gateway_caller, pipeline) for _ in range(3)]
    held, release = asyncio.Event(), asyncio.Event()

    async def other_worker() -> None:
        async with in_transaction() as conn:
            await Run.filter(id=stuck[0].id).select_for_update().using_db(conn).first()
            held.set()
            await asyncio.wait_for(release.wait(), 15)

    holder = asyncio.create_task(other_worker())
    await asyncio.wait_for(held.wait(), 5)
    now = T0 + (timedelta(hours=1) if kind == "deadline" else timedelta(minutes=5))
    reaper = asyncio.create_task(reap_stuck_runs(now=now, gateway_lease=LEASE))
    try:
        done, _ = await asyncio.wait({reaper}, timeout=3)
    finally:
        release.set()
        await asyncio.wait_for(holder, 5)
        await asyncio.wait_for(reaper, 10)
    assert reaper in done, "the pass waited for a run another transaction holds"
    assert reaper.result() == 2
    assert (await reload(stuck[0])).status == RunStatus.RUNNING
    assert await reap_stuck_runs(now=now, gateway_lease=LEASE) == 1
