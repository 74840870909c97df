"""Telemetry of warehouse connections: rolling windows, failures, orphans, status, errors.

Two levels:

* through the resolvers with an explicit clock (`now=NOW`), on constructed run histories, asserting
  exact numbers and the documented status rule (module docstring of
  `runwatch.resolvers.telemetry`);
* through the REST shim (`GET …/telemetry/`, real clock), asserting the exact JSON contract of
  `warehouse-telemetry.txt`.

NOW has non-zero minutes and seconds, so each window starts inside an hour: the implementation
reads whole hours from the hourly roll-up and the partial hour at each window's start from the
runs themselves; the boundary tests cover both on each side of each boundary.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runwatch.models import Pipeline, Run, RunStatus
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.rollups import floor_hour
from runwatch.resolvers.runs import RunReport, report_run, start_run
from runwatch.resolvers.telemetry import (
    Telemetry,
    TelemetryOptions,
    connection_telemetry,
    telemetry_of_pipelines,
)
from runwatch.services.reaper import reap_stuck_runs
from tests import helpers

# In the past relative to the real clock (between ~23 and ~83 minutes ago), minutes != 0.
NOW = floor_hour(datetime.now(UTC)) - timedelta(hours=1) + timedelta(minutes=37, seconds=12)
B24 = NOW - timedelta(days=1)  # start of the 24 h window (inside an hour: hh:37:12)
B7 = NOW - timedelta(days=7)  # start of the 7 d window (inside an hour: hh:37:12)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
WINDOW = timedelta(hours=2)  # the default orphan window
DEFAULT = TelemetryOptions()

STATUSES = {"active", "degraded", "error", "idle"}


# ---------------------------------------------------------------------------------------------
# helpers


async def finished(
    caller: Caller, cid: int, completed_at: datetime, *, events: int = 0,
    evaluations: int | None = None, custom: int | None = None, dlq: int = 0,
    error: str | None = None, duration: timedelta = timedelta(minutes=5),
) -> Run:
    """A run pre-created `duration` before `completed_at` and reported at `completed_at`."""
    run = await start_run(
        caller=caller, connection_id=cid, started_at=completed_at - duration, now=NOW
    )
    run, changed = await report_run(
        caller=caller,
        run_id=run.id,
        report=RunReport(
            completed_at=completed_at, events_delivered=events, batches_dlq=dlq, error=error,
            evaluations=evaluations, custom_events=custom,
        ),
        now=NOW,
    )
    assert changed
    return run


async def succeeded(caller: Caller, cid: int, completed_at: datetime, events: int = 100, **kw):
    return await finished(caller, cid, completed_at, events=events, **kw)


async def failed(
    caller: Caller, cid: int, completed_at: datetime, error: str | None = "COPY failed", **kw
):
    return await finished(caller, cid, completed_at, error=error, **kw)


async def orphan(caller: Caller, cid: int, started_at: datetime) -> Run:
    """A run the recurring task pre-created and the loader never reported."""
    return await start_run(caller=caller, connection_id=cid, started_at=started_at, now=NOW)


async def telemetry(
    caller: Caller, cid: int, options: TelemetryOptions = DEFAULT, now: datetime = NOW
) -> Telemetry:
    return await connection_telemetry(caller=caller, connection_id=cid, options=options, now=now)


def counts(c) -> tuple[int, int, int]:
    """(evaluations, custom_events, total)."""
    return (c.evaluations, c.custom_events, c.total)


def public(t: Telemetry) -> dict[str, Any]:
    """What the surfaces show (the internal streak / ever_ran fields left out)."""
    shown = dataclasses.asdict(t)
    shown.pop("streak")
    shown.pop("ever_ran")
    return shown


def assert_reason(t: Telemetry) -> None:
    assert t.status in STATUSES
    assert isinstance(t.status_reason, str) and t.status_reason.strip(), t


# ---------------------------------------------------------------------------------------------
# (a) windows


async def test_events_24h_and_7d_window_boundaries(caller, cid):
    """Completions 1 minute inside / outside each window, in the partial edge hour and in whole
    hours; per-type counts given, partly given and not given (then: total only)."""
    assert floor_hour(B24) < B24 and floor_hour(B7) < B7  # windows start inside an hour
    # inside 24 h
    await succeeded(caller, cid, NOW - 10 * MIN, 1000, evaluations=600, custom=300)  # current hour
    await succeeded(caller, cid, B24 + HOUR, 2000)  # whole hour, no split: total only
    await succeeded(caller, cid, B24 + MIN, 40, evaluations=30, custom=10)  # partial edge hour
    # outside 24 h, inside 7 d
    await succeeded(caller, cid, B24 - MIN, 500, evaluations=500, custom=0)  # same edge hour
    await succeeded(caller, cid, B24 - HOUR, 7000)  # whole hour, no split
    await succeeded(caller, cid, B7 + HOUR, 300, custom=300)  # whole hour, only custom given
    await succeeded(caller, cid, B7 + MIN, 60, evaluations=20, custom=40)  # partial edge hour
    # outside 7 d
    await succeeded(caller, cid, B7 - MIN, 100_000, evaluations=1, custom=1)  # same edge hour
    await succeeded(caller, cid, B7 - HOUR, 900_000, evaluations=5, custom=5)  # whole hour

    t = await telemetry(caller, cid)
    assert counts(t.events_last_24h) == (600 + 30, 300 + 10, 1000 + 2000 + 40)
    assert counts(t.events_last_7d) == (
        600 + 30 + 500 + 20,
        300 + 10 + 300 + 40,
        1000 + 2000 + 40 + 500 + 7000 + 300 + 60,
    )
    assert t.failed_deliveries_last_24h == 0
    assert t.recent_errors == []
    assert t.last_delivery_at == NOW - 10 * MIN
    assert t.status == "active"
    assert_reason(t)


async def test_window_edges_move_with_now(caller, cid):
    """The same history read at a later `now`: the runs cross the boundaries."""
    await succeeded(caller, cid, B24 + MIN, 40, evaluations=40, custom=0)  # partial edge hour
    await succeeded(caller, cid, B24 + 30 * MIN, 2)  # first whole hour of the 24 h window
    t = await telemetry(caller, cid)
    assert counts(t.events_last_24h) == (40, 0, 42)
    later = NOW + 2 * MIN  # the first run is now 1 minute outside 24 h; the second still inside
    t = await telemetry(caller, cid, now=later)
    assert counts(t.events_last_24h) == (0, 0, 2)
    assert counts(t.events_last_7d) == (40, 0, 42)
    t = await telemetry(caller, cid, now=NOW + 31 * MIN)
    assert counts(t.events_last_24h) == (0, 0, 0)
    assert counts(t.events_last_7d) == (40, 0, 42)
    assert t.status == "idle"
    assert_reason(t)


async def test_failures_24h_boundaries_and_recent_errors_7d(caller, cid):
    await failed(caller, cid, B7 - MIN, error="too old")  # outside 7 d: not a recent error
    await failed(caller, cid, B7 + MIN, error="e-7d-inside")
    await failed(caller, cid, B24 - HOUR, error="e-whole-outside")
    await failed(caller, cid, B24 - MIN, error="e-edge-outside")
    await failed(caller, cid, B24 + MIN, error=None, dlq=1)  # partial edge hour, inside
    await succeeded(caller, cid, B24 + 2 * HOUR, 10)
    await failed(caller, cid, NOW - 3 * HOUR, error="e-whole-inside")
    await succeeded(caller, cid, NOW - HOUR, 5)

    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 2
    assert counts(t.events_last_24h) == (0, 0, 15)
    assert [e.message for e in t.recent_errors] == [
        "e-whole-inside",
        "1 batch sent to the dead-letter queue",
        "e-edge-outside",
        "e-whole-outside",
        "e-7d-inside",
    ]
    assert [e.occurred_at for e in t.recent_errors] == [
        NOW - 3 * HOUR, B24 + MIN, B24 - MIN, B24 - HOUR, B7 + MIN,
    ]
    assert t.status == "degraded"  # failures in 24 h, but the latest run succeeded
    assert_reason(t)


# ---------------------------------------------------------------------------------------------
# (a) orphans and the reaper


async def test_orphans_count_as_failures_and_reaping_changes_nothing(caller, cid):
    await succeeded(caller, cid, NOW - 30 * HOUR, 70)  # before every orphan, outside 24 h
    a = await orphan(caller, cid, NOW - 3 * HOUR)  # deadline NOW-1h: whole hour, in 24 h
    b = await orphan(caller, cid, B24 - WINDOW + 10 * MIN)  # deadline B24+10m: edge hour, in
    c = await orphan(caller, cid, B24 - WINDOW - 30 * MIN)  # deadline B24-30m: edge hour, out
    fresh = await orphan(caller, cid, NOW - WINDOW + MIN)  # younger than the window: not failed

    before = await telemetry(caller, cid)
    assert before.failed_deliveries_last_24h == 2
    assert [e.run_id for e in before.recent_errors] == [a.id, b.id, c.id]
    assert [e.occurred_at for e in before.recent_errors] == [
        a.started_at + WINDOW, b.started_at + WINDOW, c.started_at + WINDOW,
    ]
    for e in before.recent_errors:
        assert "loader did not report" in e.message
        assert "orphaned" in e.message
    assert fresh.id not in [e.run_id for e in before.recent_errors]
    assert counts(before.events_last_24h) == (0, 0, 0)
    assert counts(before.events_last_7d) == (0, 0, 70)
    assert before.last_delivery_at == NOW - 30 * HOUR
    # failures in 24 h and no success in 24 h (and the last 3 outcomes failed)
    assert before.status == "error"
    assert_reason(before)

    assert await reap_stuck_runs(now=NOW) == 3
    after = await telemetry(caller, cid)
    assert public(after) == public(before)  # no double counting, nothing lost

    for run in (a, b, c):
        await run.refresh_from_db()
        assert run.status == RunStatus.TIMED_OUT
        assert run.finished_at == run.started_at + WINDOW
    await fresh.refresh_from_db()
    assert fresh.status == RunStatus.RUNNING and fresh.finished_at is None

    assert await reap_stuck_runs(now=NOW) == 0
    assert public(await telemetry(caller, cid)) == public(before)


async def test_orphan_window_option(caller, cid):
    """The window (the default maximum runtime) is fixed when a run starts: a run started
    with a 30 min window is orphaned after 30 min, one started with the default 2 h is not."""
    window = timedelta(minutes=30)
    default = await orphan(caller, cid, NOW - 45 * MIN)
    t = await telemetry(caller, cid)  # default window 2 h: not orphaned yet
    assert t.failed_deliveries_last_24h == 0 and t.recent_errors == []
    assert t.status == "idle"
    assert_reason(t)

    run = await start_run(caller=caller, connection_id=cid, started_at=NOW - 45 * MIN, now=NOW,
                          default_max_runtime=window)
    assert run.deadline_at == run.started_at + window
    before = await telemetry(caller, cid)
    assert before.failed_deliveries_last_24h == 1
    assert len(before.recent_errors) == 1
    error = before.recent_errors[0]
    assert error.run_id == run.id
    assert error.occurred_at == run.started_at + window
    assert "loader did not report" in error.message and "30m" in error.message
    assert before.status == "error"
    assert_reason(before)

    assert await reap_stuck_runs(now=NOW) == 1
    assert public(await telemetry(caller, cid)) == public(before)
    await run.refresh_from_db()
    assert run.status == RunStatus.TIMED_OUT
    assert run.finished_at == run.started_at + window
    await default.refresh_from_db()
    assert default.status == RunStatus.RUNNING
    assert await reap_stuck_runs(now=NOW) == 0


async def test_pipeline_max_runtime_overrides_the_window(caller, cid):
    pipeline = await Pipeline.get(connection_id=cid)
    pipeline.max_runtime_seconds = 20 * 60
    await pipeline.save()
    run = await orphan(caller, cid, NOW - 45 * MIN)
    assert run.deadline_at == run.started_at + 20 * MIN
    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 1 and "20m" in t.recent_errors[0].message
    assert await reap_stuck_runs(now=NOW) == 1
    await run.refresh_from_db()
    assert run.status == RunStatus.TIMED_OUT and run.finished_at == run.started_at + 20 * MIN


async def test_orphan_older_than_latest_success_does_not_extend_the_streak(caller, cid):
    """The orphan's outcome (its deadline) precedes a success, so the last 3 outcomes are
    success, failure, failure: degraded, before and after reaping."""
    old = await orphan(caller, cid, NOW - 23 * HOUR)  # deadline NOW-21h
    await succeeded(caller, cid, NOW - 20 * HOUR, 10)
    await failed(caller, cid, NOW - 10 * HOUR)
    await failed(caller, cid, NOW - 5 * HOUR)

    before = await telemetry(caller, cid)
    assert before.failed_deliveries_last_24h == 3
    assert before.recent_errors[-1].run_id == old.id
    assert before.status == "degraded", before.status_reason
    assert_reason(before)

    assert await reap_stuck_runs(now=NOW) == 1
    after = await telemetry(caller, cid)
    assert after.status == "degraded", after.status_reason
    assert public(after) == public(before)


async def test_reaping_an_orphan_older_than_7_days_changes_nothing(caller, cid):
    """An orphan whose deadline is outside every window is invisible to telemetry; timing it
    out must not make it the latest outcome (it precedes the success below)."""
    ancient = await orphan(caller, cid, NOW - timedelta(days=9))
    await succeeded(caller, cid, NOW - 10 * HOUR, 10)
    await failed(caller, cid, NOW - 5 * HOUR)
    await failed(caller, cid, NOW - 3 * HOUR)

    before = await telemetry(caller, cid)
    assert before.failed_deliveries_last_24h == 2
    assert ancient.id not in [e.run_id for e in before.recent_errors]
    assert before.status == "degraded", before.status_reason
    assert_reason(before)

    assert await reap_stuck_runs(now=NOW) == 1
    await ancient.refresh_from_db()
    assert ancient.status == RunStatus.TIMED_OUT
    after = await telemetry(caller, cid)
    assert after.status == "degraded", after.status_reason
    assert public(after) == public(before)


async def test_late_report_of_an_old_failure_does_not_extend_the_streak(caller, cid):
    """Outcomes are ordered by completion time, not by when the loader's report arrived."""
    late = await start_run(caller=caller, connection_id=cid, started_at=NOW - 22 * HOUR, now=NOW)
    await succeeded(caller, cid, NOW - 20 * HOUR, 10)
    await failed(caller, cid, NOW - 10 * HOUR)
    await failed(caller, cid, NOW - 5 * HOUR)
    # the loader's report for the oldest run arrives last (a retried PATCH)
    await report_run(
        caller=caller, run_id=late.id, now=NOW,
        report=RunReport(completed_at=NOW - 21 * HOUR, events_delivered=0, error="late"),
    )
    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 3
    assert [e.message for e in t.recent_errors] == ["COPY failed", "COPY failed", "late"]
    assert t.status == "degraded", t.status_reason  # last 3 outcomes: success, failed, failed
    assert_reason(t)


# ---------------------------------------------------------------------------------------------
# (a) DLQ, empty ticks, never ran


async def test_dlq_batches_without_error_are_a_failure(caller, cid):
    run = await finished(caller, cid, NOW - HOUR, events=100, evaluations=100, dlq=3)
    assert run.status == RunStatus.FAILED
    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 1
    assert len(t.recent_errors) == 1
    assert t.recent_errors[0].occurred_at == NOW - HOUR
    assert "dead-letter queue" in t.recent_errors[0].message
    assert "3" in t.recent_errors[0].message
    assert counts(t.events_last_24h) == (100, 0, 100)  # what it did deliver still counts
    assert t.last_delivery_at == NOW - HOUR
    assert t.status == "error"  # failed in 24 h, nothing succeeded
    assert_reason(t)

    await succeeded(caller, cid, NOW - 10 * MIN, 5)
    t = await telemetry(caller, cid)
    assert t.status == "degraded"
    assert_reason(t)


async def test_empty_ticks_are_idle(caller, cid):
    for hours in (5, 3, 1):
        await succeeded(caller, cid, NOW - hours * HOUR, 0)
    t = await telemetry(caller, cid)
    assert t.status == "idle"
    assert_reason(t)
    assert t.failed_deliveries_last_24h == 0
    assert counts(t.events_last_24h) == (0, 0, 0)
    assert counts(t.events_last_7d) == (0, 0, 0)
    assert t.last_delivery_at is None
    assert t.recent_errors == []


async def test_empty_ticks_after_older_deliveries_are_idle(caller, cid):
    await succeeded(caller, cid, NOW - 2 * timedelta(days=1), 77, evaluations=70, custom=7)
    await succeeded(caller, cid, NOW - 2 * HOUR, 0)
    t = await telemetry(caller, cid)
    assert t.status == "idle"
    assert_reason(t)
    assert counts(t.events_last_24h) == (0, 0, 0)
    assert counts(t.events_last_7d) == (70, 7, 77)
    assert t.last_delivery_at == NOW - 2 * timedelta(days=1)


async def test_never_ran_is_idle_with_the_no_data_shape(caller, cid):
    t = await telemetry(caller, cid)
    assert t.status == "idle"
    assert_reason(t)
    assert t.last_delivery_at is None
    assert counts(t.events_last_24h) == (0, 0, 0)
    assert counts(t.events_last_7d) == (0, 0, 0)
    assert t.failed_deliveries_last_24h == 0
    assert t.recent_errors == []


# ---------------------------------------------------------------------------------------------
# (a) the status rule


async def test_status_active(caller, cid):
    await succeeded(caller, cid, NOW - 2 * HOUR, 30, evaluations=20, custom=10)
    await succeeded(caller, cid, NOW - HOUR, 0)  # an empty tick does not make it idle
    t = await telemetry(caller, cid)
    assert t.status == "active"
    assert_reason(t)
    assert counts(t.events_last_24h) == (20, 10, 30)


async def test_status_degraded_failure_then_successes(caller, cid):
    await failed(caller, cid, NOW - 5 * HOUR)
    await succeeded(caller, cid, NOW - 3 * HOUR, 10)
    await succeeded(caller, cid, NOW - HOUR, 20)
    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 1
    assert counts(t.events_last_24h) == (0, 0, 30)
    assert t.status == "degraded"
    assert_reason(t)


async def test_status_two_failures_after_success_degraded_three_error(caller, cid):
    await succeeded(caller, cid, NOW - 6 * HOUR, 10)
    await failed(caller, cid, NOW - 4 * HOUR)
    await failed(caller, cid, NOW - 3 * HOUR, error=None, dlq=2)
    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 2
    assert t.status == "degraded"
    assert_reason(t)

    await failed(caller, cid, NOW - 2 * HOUR)
    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 3
    assert t.status == "error"
    assert_reason(t)

    # an error streak of 4 is configurable
    t = await telemetry(caller, cid, TelemetryOptions(error_streak=4))
    assert t.status == "degraded"
    assert_reason(t)


async def test_status_two_failures_and_an_orphan_after_success_is_error(caller, cid):
    await succeeded(caller, cid, NOW - 8 * HOUR, 10)
    await failed(caller, cid, NOW - 6 * HOUR)
    await failed(caller, cid, NOW - 5 * HOUR)
    await orphan(caller, cid, NOW - 4 * HOUR)  # deadline NOW-2h
    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 3
    assert t.status == "error"
    assert_reason(t)
    assert await reap_stuck_runs(now=NOW) == 1
    assert public(await telemetry(caller, cid)) == public(t)


async def test_status_error_failures_without_success_in_24h(caller, cid):
    await succeeded(caller, cid, NOW - 30 * HOUR, 10)
    await failed(caller, cid, NOW - 2 * HOUR)
    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 1
    assert t.status == "error"
    assert_reason(t)


async def test_status_error_last_three_failed_even_outside_24h(caller, cid):
    await succeeded(caller, cid, NOW - 40 * HOUR, 10)
    for hours in (30, 29, 28):
        await failed(caller, cid, NOW - hours * HOUR)
    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 0
    assert t.status == "error"
    assert_reason(t)


# ---------------------------------------------------------------------------------------------
# (a) recent errors, last delivery, pipelines


async def test_recent_errors_newest_first_and_capped(caller, cid):
    times = [NOW - h * HOUR for h in (20, 17, 11, 9)]
    for i, when in enumerate(times):
        await failed(caller, cid, when, error=f"e{i}")
    o1 = await orphan(caller, cid, NOW - 15 * HOUR)  # deadline NOW-13h
    o2 = await orphan(caller, cid, NOW - 9 * HOUR - 30 * MIN)  # deadline NOW-7h30m (newest)

    t = await telemetry(caller, cid, TelemetryOptions(recent_errors_limit=3))
    assert [e.occurred_at for e in t.recent_errors] == [
        o2.started_at + WINDOW, NOW - 9 * HOUR, NOW - 11 * HOUR,
    ]
    assert [e.message for e in t.recent_errors][1:] == ["e3", "e2"]
    assert t.recent_errors[0].run_id == o2.id

    t = await telemetry(caller, cid)
    assert [e.occurred_at for e in t.recent_errors] == [
        o2.started_at + WINDOW, NOW - 9 * HOUR, NOW - 11 * HOUR, o1.started_at + WINDOW,
        NOW - 17 * HOUR, NOW - 20 * HOUR,
    ]
    assert t.failed_deliveries_last_24h == 6


async def test_recent_errors_default_cap_is_10(caller, cid):
    for i in range(12):
        await failed(caller, cid, NOW - (12 - i) * 10 * MIN, error=f"e{i}")
    t = await telemetry(caller, cid)
    assert t.failed_deliveries_last_24h == 12
    assert [e.message for e in t.recent_errors] == [f"e{i}" for i in range(11, 1, -1)]
    occurred = [e.occurred_at for e in t.recent_errors]
    assert occurred == sorted(occurred, reverse=True)


async def test_last_delivery_at_is_the_latest_run_that_delivered(caller, cid):
    await succeeded(caller, cid, NOW - 3 * HOUR, 50)
    await succeeded(caller, cid, NOW - 5 * HOUR, 100)  # reported late: does not move it back
    await succeeded(caller, cid, NOW - HOUR, 0)  # empty tick
    await failed(caller, cid, NOW - 30 * MIN)  # delivered nothing
    t = await telemetry(caller, cid)
    assert t.last_delivery_at == NOW - 3 * HOUR
    assert counts(t.events_last_24h) == (0, 0, 150)


async def test_pipeline_telemetry_matches_connection_telemetry(caller, cid):
    await succeeded(caller, cid, B7 + MIN, 60, evaluations=20, custom=40)
    await succeeded(caller, cid, B24 - MIN, 500, evaluations=500, custom=0)
    await succeeded(caller, cid, B24 + MIN, 40, evaluations=30, custom=10)
    await failed(caller, cid, NOW - 6 * HOUR, dlq=2)
    await succeeded(caller, cid, NOW - 4 * HOUR, 1000)
    await orphan(caller, cid, NOW - 3 * HOUR)
    pipelines = await Pipeline.filter(connection_id=cid)
    assert len(pipelines) == 1
    for options in (DEFAULT, TelemetryOptions(recent_errors_limit=1)):
        by_connection = await telemetry(caller, cid, options)
        by_pipeline = await telemetry_of_pipelines(
            caller=caller, pipelines=pipelines, options=options, now=NOW
        )
        assert set(by_pipeline) == {pipelines[0].id}
        assert public(by_pipeline[pipelines[0].id]) == public(by_connection)
    assert by_connection.failed_deliveries_last_24h == 2
    assert counts(by_connection.events_last_24h) == (30, 10, 1040)
    assert counts(by_connection.events_last_7d) == (550, 50, 1600)
    assert by_connection.status == "degraded"


async def test_connection_of_another_organisation_is_not_found(caller, cid, other_tenant):
    from runwatch.resolvers.errors import NotFound

    other = Caller(organisation_id=other_tenant.org_id, scopes=frozenset({Scope.ADMIN}))
    with pytest.raises(NotFound):
        await telemetry(other, cid)


# ---------------------------------------------------------------------------------------------
# (b) REST: the exact JSON contract (real clock)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
TOP_KEYS = {"status", "last_delivery_at", "events_last_24h", "events_last_7d",
            "failed_deliveries_last_24h", "recent_errors"}
COUNT_KEYS = {"evaluations", "custom_events", "total"}
# `run_id` is runwatch's addition to the contract's example (GraphQL's RecentError has it too)
ERROR_KEYS = {"occurred_at", "message", "run_id"}
NO_DATA = {
    "status": "idle",
    "last_delivery_at": None,
    "events_last_24h": {"evaluations": 0, "custom_events": 0, "total": 0},
    "events_last_7d": {"evaluations": 0, "custom_events": 0, "total": 0},
    "failed_deliveries_last_24h": 0,
    "recent_errors": [],
}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_z(value: str) -> datetime:
    assert isinstance(value, str) and ISO_Z.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_contract(body: dict[str, Any]) -> None:
    assert set(body) == TOP_KEYS
    assert body["status"] in STATUSES
    assert body["last_delivery_at"] is None or parse_z(body["last_delivery_at"])
    for key in ("events_last_24h", "events_last_7d"):
        assert set(body[key]) == COUNT_KEYS
        assert all(is_int(v) and v >= 0 for v in body[key].values()), body[key]
    assert is_int(body["failed_deliveries_last_24h"])
    assert isinstance(body["recent_errors"], list)
    for error in body["recent_errors"]:
        assert set(error) == ERROR_KEYS
        parse_z(error["occurred_at"])
        assert isinstance(error["message"], str) and error["message"]
        assert is_int(error["run_id"])


def url(tenant, connection_id: Any, slash: bool) -> str:
    return f"{tenant.prefix}/{connection_id}/telemetry" + ("/" if slash else "")


@pytest.mark.parametrize("slash", [True, False])
async def test_rest_no_data_yet_shape(client, tenant, slash):
    connection_id = await helpers.create_connection(client, tenant)
    for scopes in ("read", "admin"):
        r = await client.get(url(tenant, connection_id, slash), headers=tenant.headers(scopes))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == NO_DATA
        assert_contract(r.json())


@pytest.mark.parametrize("slash", [True, False])
async def test_rest_telemetry_with_data(client, tenant, slash):
    connection_id = await helpers.create_connection(client, tenant)
    now = datetime.now(UTC).replace(microsecond=0)
    ok = await helpers.start_run(client, tenant, connection_id, now - timedelta(minutes=20))
    r = await helpers.report(
        client, tenant, connection_id, ok, completed_at=helpers.iso(now - timedelta(minutes=15)),
        events_delivered=150, evaluations=100, custom_events=40, batches_dlq=0, error=None,
    )
    assert r.status_code == 204, r.text
    bad = await helpers.start_run(client, tenant, connection_id, now - timedelta(minutes=12))
    r = await helpers.report(
        client, tenant, connection_id, bad, completed_at=helpers.iso(now - timedelta(minutes=10)),
        events_delivered=0, batches_dlq=0, error="COPY failed: permission denied",
    )
    assert r.status_code == 204, r.text

    r = await client.get(url(tenant, connection_id, slash), headers=tenant.headers("read"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert_contract(body)
    assert body == {
        "status": "degraded",
        "last_delivery_at": helpers.iso(now - timedelta(minutes=15)),
        "events_last_24h": {"evaluations": 100, "custom_events": 40, "total": 150},
        "events_last_7d": {"evaluations": 100, "custom_events": 40, "total": 150},
        "failed_deliveries_last_24h": 1,
        "recent_errors": [
            {"occurred_at": helpers.iso(now - timedelta(minutes=10)),
             "message": "COPY failed: permission denied", "run_id": bad},
        ],
    }


async def test_rest_orphaned_run(client, tenant):
    connection_id = await helpers.create_connection(client, tenant)
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    await helpers.start_run(client, tenant, connection_id, started)
    r = await client.get(url(tenant, connection_id, True), headers=tenant.headers("read"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert_contract(body)
    assert body["status"] == "error"
    assert body["failed_deliveries_last_24h"] == 1
    assert body["last_delivery_at"] is None
    assert len(body["recent_errors"]) == 1
    error = body["recent_errors"][0]
    assert error["occurred_at"] == helpers.iso(started + timedelta(hours=2))
    assert "loader did not report" in error["message"]
    assert f"run started at {helpers.iso(started)} " in error["message"]  # `Z`, as elsewhere


@pytest.mark.parametrize("slash", [True, False])
async def test_rest_unknown_or_foreign_connection_is_404(client, tenant, other_tenant, slash):
    mine = await helpers.create_connection(client, tenant)
    theirs = await helpers.create_connection(client, other_tenant)
    not_found = {"detail": "Not found."}
    cases = [
        (tenant, url(tenant, 999_999, slash)),
        (tenant, url(tenant, "abc", slash)),
        (tenant, url(tenant, theirs, slash)),  # another organisation's connection
        (other_tenant, url(other_tenant, mine, slash)),
        (tenant, url(other_tenant, theirs, slash)),  # another organisation's URL
    ]
    for who, path in cases:
        r = await client.get(path, headers=who.headers("read"))
        assert r.status_code == 404, (path, r.text)
        assert r.json() == not_found
    # the owner still sees it
    r = await client.get(url(other_tenant, theirs, slash), headers=other_tenant.headers("read"))
    assert r.status_code == 200 and r.json() == NO_DATA


@pytest.mark.parametrize("slash", [True, False])
async def test_rest_needs_a_token_with_read(client, tenant, slash):
    connection_id = await helpers.create_connection(client, tenant)
    path = url(tenant, connection_id, slash)

    r = await client.get(path)
    assert r.status_code == 401, r.text
    assert set(r.json()) == {"detail"} and r.json()["detail"]

    r = await client.get(path, headers={"Authorization": "Bearer rw_not-a-real-token"})
    assert r.status_code == 401, r.text
    assert set(r.json()) == {"detail"} and r.json()["detail"]

    for scopes in ("report", "write"):
        r = await client.get(path, headers=tenant.headers(scopes))
        assert r.status_code == 403, (scopes, r.text)
        assert set(r.json()) == {"detail"} and r.json()["detail"]

    for scopes in ("read", "admin", "read,write,report"):
        r = await client.get(path, headers=tenant.headers(scopes))
        assert r.status_code == 200, (scopes, r.text)
