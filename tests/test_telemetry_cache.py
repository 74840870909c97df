"""The per-process telemetry cache: used only while nothing that telemetry reads has changed.

Every started run and every recorded outcome bumps its pipeline's revision in the same
transaction; an entry is valid for its fingerprint of revisions and its wall-clock second.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from runwatch.models import Pipeline
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.connections import create_connection
from runwatch.resolvers.rollups import floor_hour
from runwatch.resolvers.runs import RunReport, report_run, start_run
from runwatch.resolvers.telemetry import (
    Telemetry,
    TelemetryCache,
    TelemetryOptions,
    connection_telemetry,
    telemetry_of_pipelines,
)
from runwatch.services.reaper import reap_stuck_runs

NOW = floor_hour(datetime.now(UTC)) - timedelta(minutes=20, seconds=30)
WINDOW = timedelta(hours=2)


@pytest.fixture
def options() -> TelemetryOptions:
    return TelemetryOptions(cache=TelemetryCache())


async def new_connection(caller: Caller, name: str = "warehouse") -> int:
    return (await create_connection(caller=caller, name=name, warehouse_type="snowflake")).id


async def deliver(caller: Caller, cid: int, minutes_ago: int, events: int, error=None) -> int:
    run = await start_run(caller=caller, connection_id=cid,
                          started_at=NOW - timedelta(minutes=minutes_ago + 5), now=NOW)
    await report_run(caller=caller, run_id=run.id, now=NOW, report=RunReport(
        completed_at=NOW - timedelta(minutes=minutes_ago), events_delivered=events, error=error))
    return run.id


async def read(caller: Caller, cid: int, options: TelemetryOptions, now=NOW) -> Telemetry:
    return await connection_telemetry(caller=caller, connection_id=cid, options=options, now=now)


def statements(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tortoise.db_client"]


async def test_an_unchanged_pipeline_is_served_from_the_cache(caller, options, caplog):
    cid = await new_connection(caller)
    await deliver(caller, cid, 30, 100)
    first = await read(caller, cid, options)
    with caplog.at_level(logging.DEBUG, logger="tortoise.db_client"):
        second = await read(caller, cid, options)
    assert second is first
    assert len(statements(caplog)) == 1  # only the revision look-up


async def test_a_report_is_seen_at_once(caller, options):
    cid = await new_connection(caller)
    await deliver(caller, cid, 30, 100)
    assert (await read(caller, cid, options)).events_last_24h.total == 100
    await deliver(caller, cid, 10, 50)
    assert (await read(caller, cid, options)).events_last_24h.total == 150


async def test_a_started_run_that_is_already_orphaned_is_seen_at_once(caller, options):
    cid = await new_connection(caller)
    await deliver(caller, cid, 30, 100)
    assert (await read(caller, cid, options)).failed_deliveries_last_24h == 0
    await start_run(caller=caller, connection_id=cid, started_at=NOW - WINDOW - timedelta(hours=1),
                    now=NOW)
    assert (await read(caller, cid, options)).failed_deliveries_last_24h == 1


async def test_reaping_invalidates_and_changes_nothing_visible(caller, options):
    cid = await new_connection(caller)
    await start_run(caller=caller, connection_id=cid, started_at=NOW - WINDOW - timedelta(hours=1),
                    now=NOW)
    before = await read(caller, cid, options)
    assert await reap_stuck_runs(now=NOW) == 1
    after = await read(caller, cid, options)
    assert after is not before  # recomputed from the database
    uncached = await read(caller, cid, TelemetryOptions())
    assert after == uncached
    assert (after.failed_deliveries_last_24h, after.status) == (1, before.status)


async def test_the_windows_slide_with_the_clock(caller, options):
    cid = await new_connection(caller)
    await deliver(caller, cid, 30, 100)
    assert (await read(caller, cid, options)).events_last_24h.total == 100
    later = NOW + timedelta(days=1)
    assert (await read(caller, cid, options, now=later)).events_last_24h.total == 0


async def test_entries_are_per_organisation_and_per_kind(caller, options, other_tenant):
    cid = await new_connection(caller)
    await deliver(caller, cid, 30, 100)
    by_connection = await read(caller, cid, options)
    pipeline = await Pipeline.get(connection_id=cid)
    by_pipeline = await telemetry_of_pipelines(
        caller=caller, pipelines=[pipeline.id], options=options, now=NOW)
    assert by_pipeline[pipeline.id] is not by_connection
    assert by_pipeline[pipeline.id] == by_connection
    outsider = Caller(organisation_id=other_tenant.org_id, scopes=frozenset({Scope.ADMIN}))
    with pytest.raises(Exception, match="not found"):
        await read(outsider, cid, options)


def test_the_cache_is_bounded():
    cache = TelemetryCache(max_entries=2)
    for key in range(3):
        cache.put(("org", "connection_id", key), ((key, "t", 0),), 1, Telemetry())
    assert cache.get(("org", "connection_id", 0), ((0, "t", 0),), 1) is None
    assert cache.get(("org", "connection_id", 2), ((2, "t", 0),), 1) is not None
    assert cache.get(("org", "connection_id", 2), ((2, "t", 1),), 1) is None  # new revision
    assert cache.get(("org", "connection_id", 2), ((2, "t", 0),), 2) is None  # next second
