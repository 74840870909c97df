"""The stuck-run reaper: batches, concurrent passes, and the runs it must never touch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from runwatch.models import Pipeline, PipelineHourlyStats, Run, RunStatus
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.connections import create_connection
from runwatch.resolvers.rollups import floor_hour
from runwatch.resolvers.runs import RunReport, report_run, start_run
from runwatch.resolvers.telemetry import TelemetryOptions, connection_telemetry
from runwatch.services.reaper import reap_stuck_runs

NOW = floor_hour(datetime.now(UTC)) - timedelta(hours=1) + timedelta(minutes=37, seconds=12)
HOUR = timedelta(hours=1)
WINDOW = timedelta(hours=2)


async def orphans(caller: Caller, cid: int, n: int) -> list[Run]:
    """n runs started 3h, 4h, … ago (all past the 2 h window), never reported."""
    return [
        await start_run(
            caller=caller, connection_id=cid, started_at=NOW - (3 + i) * HOUR, now=NOW
        )
        for i in range(n)
    ]


async def assert_timed_out(runs: list[Run], window: timedelta = WINDOW) -> None:
    for run in runs:
        await run.refresh_from_db()
        assert run.status == RunStatus.TIMED_OUT, run.id
        assert run.finished_at == run.started_at + window
        assert run.error and "loader did not report" in run.error


async def failed_in_rollup(pipeline_id: int | None = None) -> int:
    query = PipelineHourlyStats.all()
    if pipeline_id is not None:
        query = query.filter(pipeline_id=pipeline_id)
    return sum(row.runs_failed for row in await query)


async def test_reaps_in_batches(caller, cid):
    runs = await orphans(caller, cid, 5)
    assert await reap_stuck_runs(now=NOW, batch=2) == 5
    await assert_timed_out(runs)
    assert await failed_in_rollup() == 5
    telemetry = await connection_telemetry(
        caller=caller, connection_id=cid, options=TelemetryOptions(), now=NOW
    )
    assert telemetry.streak == 5
    assert await reap_stuck_runs(now=NOW, batch=2) == 0
    assert await failed_in_rollup() == 5


@pytest.mark.parametrize("batch", [500, 2, 1])
async def test_concurrent_passes_reap_each_orphan_once(caller, cid, batch):
    runs = await orphans(caller, cid, 5)
    before = await connection_telemetry(
        caller=caller, connection_id=cid, options=TelemetryOptions(), now=NOW
    )
    assert before.failed_deliveries_last_24h == 5

    first, second = await asyncio.gather(
        reap_stuck_runs(now=NOW, batch=batch),
        reap_stuck_runs(now=NOW, batch=batch),
    )
    assert first + second == 5
    await assert_timed_out(runs)
    assert await failed_in_rollup() == 5

    after = await connection_telemetry(
        caller=caller, connection_id=cid, options=TelemetryOptions(), now=NOW
    )
    assert after.failed_deliveries_last_24h == 5
    assert after.recent_errors == before.recent_errors
    assert (after.status, after.status_reason) == (before.status, before.status_reason)
    assert after.streak == before.streak == 5
    assert await reap_stuck_runs(now=NOW, batch=batch) == 0


async def test_never_touches_unstarted_completed_or_young_runs(caller, cid, tenant):
    pipeline = await Pipeline.get(connection_id=cid)
    unstarted = [
        await Run.create(organisation_id=tenant.org_id, pipeline_id=pipeline.id, status=status,
                         started_at=None)
        for status in (RunStatus.PENDING, RunStatus.RUNNING)
    ]
    done = await start_run(caller=caller, connection_id=cid, started_at=NOW - 10 * HOUR, now=NOW)
    await report_run(
        caller=caller, run_id=done.id, now=NOW,
        report=RunReport(completed_at=NOW - 10 * HOUR + timedelta(minutes=5), events_delivered=9),
    )
    broken = await start_run(caller=caller, connection_id=cid, started_at=NOW - 9 * HOUR, now=NOW)
    await report_run(
        caller=caller, run_id=broken.id, now=NOW,
        report=RunReport(completed_at=NOW - 9 * HOUR + timedelta(minutes=5), events_delivered=0,
                         error="boom"),
    )
    young = await start_run(
        caller=caller, connection_id=cid, started_at=NOW - WINDOW + timedelta(seconds=1), now=NOW
    )
    old = await start_run(caller=caller, connection_id=cid, started_at=NOW - 5 * HOUR, now=NOW)

    snapshot = {
        run.id: (run.status, run.finished_at, run.error, run.updated_at)
        for run in await Run.all()
    }
    rollup_before = await failed_in_rollup()

    assert await reap_stuck_runs(now=NOW, batch=1) == 1
    await assert_timed_out([old])
    assert await failed_in_rollup() == rollup_before + 1
    for run in await Run.filter(id__not=old.id):
        assert (run.status, run.finished_at, run.error, run.updated_at) == snapshot[run.id]
    for run in unstarted:
        await run.refresh_from_db()
        assert run.status in (RunStatus.PENDING, RunStatus.RUNNING) and run.finished_at is None
    await done.refresh_from_db()
    assert done.status == RunStatus.SUCCEEDED and done.error is None
    await young.refresh_from_db()
    assert young.status == RunStatus.RUNNING

    # once the young run passes the window, it is reaped too; nothing else ever is
    later = NOW + timedelta(seconds=2)
    assert await reap_stuck_runs(now=later) == 1
    await assert_timed_out([young])
    assert await reap_stuck_runs(now=later + 100 * HOUR) == 0
    await done.refresh_from_db()
    assert done.status == RunStatus.SUCCEEDED


async def test_reaps_every_organisation(caller, cid, other_tenant):
    other = Caller(organisation_id=other_tenant.org_id, scopes=frozenset({Scope.ADMIN}))
    theirs = (await create_connection(caller=other, name="w", warehouse_type="bigquery")).id
    mine = await orphans(caller, cid, 2)
    foreign = await orphans(other, theirs, 3)
    assert await reap_stuck_runs(now=NOW, batch=2) == 5
    await assert_timed_out(mine + foreign)
    p_mine = await Pipeline.get(connection_id=cid)
    p_theirs = await Pipeline.get(connection_id=theirs)
    assert await failed_in_rollup(p_mine.id) == 2
    assert await failed_in_rollup(p_theirs.id) == 3
