"""Anomaly detection: rules, the detection job after a successful run, unflagging, alerts and
the cost of detection (`runwatch/resolvers/anomalies.py`).

Histories are built with the real start / end resolvers (Watcher executions), the ELT-run
resolvers and the warehouse REST routes, at fixed UTC times, and detection is called the way
the task worker calls it (`detect_for_run(organisation_id=, run_id=)`)."""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runwatch.models import (
    AlertChannel,
    AnomalyResult,
    AnomalyRule,
    Pipeline,
    Run,
    RunStatus,
    Task,
    TaskStatus,
    WebhookDelivery,
)
from runwatch.resolvers import anomalies
from runwatch.resolvers.anomalies import METRICS, detect_for_run, get_rule, list_results, list_rules
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.elt_runs import NewRun, create_run, update_run
from runwatch.resolvers.errors import InvalidInput, NotFound, PermissionDenied
from runwatch.resolvers.pipelines import PipelineFields, create_pipeline
from runwatch.resolvers.run_input import parse_change
from runwatch.services.tasks import TaskRunner
from tests.conftest import Tenant
from tests.helpers import iso, report, start_run
from tests.watcher_wire import (
    end_execution,
    get_or_create_pipeline,
    get_or_create_rule,
    patch_rule,
    start_execution,
    unflag,
)

# The new executions of the tests start at 10:15 UTC on this day; history is on the days
# before, in the same hour of day unless a test says otherwise.
BASE = datetime(2025, 6, 15, 10, 15, tzinfo=UTC)
DAY = timedelta(days=1)
SQL_LOGGER = "tortoise.db_client"
NOT_STATEMENTS = ("Created connection", "Closed connection")
# a token's last-used stamp (its first use, then at most once a minute): not a screen's cost
LAST_USED = 'UPDATE "service_token" SET "last_used_at"'


# ----------------------------------------------------------------------------------------------
# helpers


def caller_of(tenant: Tenant, *scopes: Scope) -> Caller:
    return Caller(organisation_id=tenant.org_id, scopes=frozenset(scopes or {Scope.ADMIN}))


async def watcher_pipeline(caller: Caller, name: str = "nightly load") -> int:
    pipeline, created = await get_or_create_pipeline(
        caller=caller, raw={"name": name, "pipeline_type_name": "extraction"})
    assert created
    return pipeline.id


async def execution(
    caller: Caller, pipeline_id: int, start: datetime, seconds: int = 60, *,
    ok: bool = True, **counts: Any,
) -> Run:
    """A Watcher execution started at `start` and ended `seconds` later."""
    run = await start_execution(caller=caller, raw={"pipeline_id": pipeline_id,
                                                    "start_date": start})
    ended, changed = await end_execution(caller=caller, raw={
        "id": run.id, "end_date": start + timedelta(seconds=seconds),
        "completed_successfully": ok, **counts})
    assert changed
    return ended


async def history(caller: Caller, pipeline_id: int, durations: list[int], *,
                  first_day: int = 1, at: datetime = BASE, **counts: Any) -> list[Run]:
    """One execution a day, on the days before `at` (the last value is the most recent)."""
    runs = []
    for i, seconds in enumerate(reversed(durations)):
        start = at - (first_day + i) * DAY - timedelta(minutes=i % 10)
        runs.append(await execution(caller, pipeline_id, start, seconds, **counts))
    return runs


async def rule(caller: Caller, pipeline_id: int, metric: str = "duration_seconds",
               **settings: Any) -> AnomalyRule:
    found, created = await get_or_create_rule(caller=caller, raw={
        "pipeline_id": pipeline_id, "metric_field": metric,
        **{"z_threshold": 1.0, "minimum_executions": 5, **settings}})
    assert created
    return found


async def detect(caller: Caller, run: Run) -> list[AnomalyResult]:
    return await detect_for_run(organisation_id=caller.organisation_id, run_id=run.id)


async def flags_of(run: Run) -> dict[str, bool] | None:
    return (await Run.get(id=run.id)).anomaly_flags


def std(values: list[float]) -> float:
    return statistics.stdev(values)


# ----------------------------------------------------------------------------------------------
# the constructed history of the issue


async def test_constructed_history_flags_150_seconds_with_the_band_that_explains_it(caller):
    pipeline_id = await watcher_pipeline(caller)
    duration_rule = await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])

    slow = await execution(caller, pipeline_id, BASE, 150)
    assert slow.duration_seconds == 150 and slow.hour_recorded == 10
    results = await detect(caller, slow)

    assert len(results) == 1
    result = results[0]
    assert result.metric_field == "duration_seconds"
    assert result.value == 150
    assert result.mean == pytest.approx(120)
    assert round(result.std_dev, 2) == 15.81
    assert result.std_dev == pytest.approx(math.sqrt(250))
    assert result.z_threshold == 1.0
    assert round(result.lower_bound, 2) == 104.19
    assert round(result.upper_bound, 2) == 135.81
    assert result.points == 5
    assert result.rule_id == duration_rule.id  # type: ignore[attr-defined]
    assert result.pipeline_id == pipeline_id  # type: ignore[attr-defined]
    assert result.run_id == slow.id  # type: ignore[attr-defined]
    assert result.organisation_id == caller.organisation_id  # type: ignore[attr-defined]
    assert result.detected_at is not None
    assert await flags_of(slow) == {"duration_seconds": True}

    # stored as returned
    stored = await AnomalyResult.get(id=result.id)
    for field in ("metric_field", "value", "mean", "std_dev", "z_threshold", "lower_bound",
                  "upper_bound", "points"):
        assert getattr(stored, field) == pytest.approx(getattr(result, field)), field

    # 120 s is inside the band (the flagged 150 s is not part of its baseline)
    usual = await execution(caller, pipeline_id, BASE + DAY, 120)
    assert await detect(caller, usual) == []
    assert await flags_of(usual) is None
    page = await list_results(caller=caller, pipeline_id=pipeline_id)
    assert [r.id for r in page.items] == [result.id]


async def test_detection_is_idempotent(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])
    slow = await execution(caller, pipeline_id, BASE, 150)

    assert len(await detect(caller, slow)) == 1
    assert await detect(caller, slow) == []
    assert await AnomalyResult.filter(run_id=slow.id).count() == 1
    assert await flags_of(slow) == {"duration_seconds": True}


async def test_concurrent_detections_of_a_run_record_it_once(caller, tenant):
    await AlertChannel.create(organisation_id=tenant.org_id, name="ops", kind="slack",
                              url="http://127.0.0.1:9/x")
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])
    slow = await execution(caller, pipeline_id, BASE, 150)

    outcomes = await asyncio.gather(*(detect(caller, slow) for _ in range(4)))
    assert sorted(len(results) for results in outcomes) == [0, 0, 0, 1]
    assert await AnomalyResult.filter(run_id=slow.id).count() == 1
    assert await WebhookDelivery.filter(event_type="alert.anomaly").count() == 1
    assert await flags_of(slow) == {"duration_seconds": True}


async def test_below_the_band_is_flagged_too(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])
    fast = await execution(caller, pipeline_id, BASE, 90)
    [result] = await detect(caller, fast)
    assert result.value == 90 and result.value < result.lower_bound
    # exactly on a bound is inside
    edge = await execution(caller, pipeline_id, BASE + timedelta(minutes=5), 120)
    assert await detect(caller, edge) == []


# ----------------------------------------------------------------------------------------------
# flagged points and unflagging


async def test_flagged_points_stay_out_of_baselines_until_unflagged(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140], first_day=3)

    a = await execution(caller, pipeline_id, BASE - 2 * DAY, 150)
    [flag_a] = await detect(caller, a)
    assert flag_a.points == 5

    b = await execution(caller, pipeline_id, BASE - DAY, 200)
    [flag_b] = await detect(caller, b)
    assert flag_b.points == 5  # a is flagged: not in b's baseline
    assert flag_b.mean == pytest.approx(120)

    assert await unflag(caller=caller, raw={
        "pipeline_id": pipeline_id, "pipeline_execution_id": a.id,
        "metric_field": ["duration_seconds"]}) == 1
    assert await flags_of(a) == {"duration_seconds": False}
    assert not await AnomalyResult.filter(run_id=a.id).exists()

    c = await execution(caller, pipeline_id, BASE, 1000)
    [flag_c] = await detect(caller, c)
    baseline = [100, 110, 120, 130, 140, 150]  # a counts again, b is still flagged
    assert flag_c.points == 6
    assert flag_c.mean == pytest.approx(statistics.mean(baseline))
    assert flag_c.std_dev == pytest.approx(std(baseline))

    # nothing flagged any more on a: NotFound; b still is
    with pytest.raises(NotFound) as exc:
        await unflag(caller=caller, raw={"pipeline_id": pipeline_id,
                                         "pipeline_execution_id": a.id,
                                         "metric_field": ["duration_seconds"]})
    assert exc.value.kind == "anomaly"
    page = await list_results(caller=caller, pipeline_id=pipeline_id)
    assert [r.run_id for r in page.items] == [c.id, b.id]  # type: ignore[attr-defined]


async def test_unflag_counts_only_the_flagged_metrics_and_keeps_other_flags(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await rule(caller, pipeline_id, "total_rows")
    await history(caller, pipeline_id, [100, 110, 120, 130, 140], total_rows=1000)
    await Run.filter(pipeline_id=pipeline_id).update(rows_total=None)
    for i, rows in enumerate([1000, 1100, 1200, 1300, 1400]):
        await execution(caller, pipeline_id, BASE - (10 + i) * DAY, 60, total_rows=rows)
    run = await execution(caller, pipeline_id, BASE, 500, total_rows=5000)
    await Run.filter(id=run.id).update(anomaly_flags={"inserts": False})
    results = await detect(caller, run)
    assert {r.metric_field for r in results} == {"duration_seconds", "total_rows"}
    assert await flags_of(run) == {"inserts": False, "duration_seconds": True,
                                   "total_rows": True}

    # total_rows and a metric that is not flagged: one unflagged
    assert await unflag(caller=caller, raw={
        "pipeline_id": pipeline_id, "pipeline_execution_id": run.id,
        "metric_field": ["total_rows", "throughput", "total_rows"]}) == 1
    assert await flags_of(run) == {"inserts": False, "duration_seconds": True,
                                   "total_rows": False}
    remaining = await AnomalyResult.filter(run_id=run.id).values_list("metric_field", flat=True)
    assert remaining == ["duration_seconds"]

    for metrics in (["total_rows"], ["throughput", "inserts"]):
        with pytest.raises(NotFound):
            await unflag(caller=caller, raw={"pipeline_id": pipeline_id,
                                             "pipeline_execution_id": run.id,
                                             "metric_field": metrics})


async def test_unflag_needs_the_execution_of_that_pipeline(caller):
    pipeline_id = await watcher_pipeline(caller)
    other_pipeline = await watcher_pipeline(caller, "other")
    await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])
    run = await execution(caller, pipeline_id, BASE, 150)
    assert await detect(caller, run)
    for pipeline, run_id in ((other_pipeline, run.id), (pipeline_id, run.id + 1000),
                             (pipeline_id, 2**63), (0, run.id)):
        with pytest.raises(NotFound) as exc:
            await unflag(caller=caller, raw={"pipeline_id": pipeline,
                                             "pipeline_execution_id": run_id,
                                             "metric_field": ["duration_seconds"]})
        assert exc.value.kind == "pipeline execution"
    assert await flags_of(run) == {"duration_seconds": True}


async def test_unflag_validation_names_its_fields(caller):
    with pytest.raises(InvalidInput) as exc:
        await unflag(caller=caller, raw={})
    assert set(exc.value.fields) == {"pipeline_id", "pipeline_execution_id", "metric_field"}
    for bad in ("duration_seconds", [], ["duration"], [1], None):
        with pytest.raises(InvalidInput) as exc:
            await unflag(caller=caller, raw={"pipeline_id": 1, "pipeline_execution_id": 1,
                                             "metric_field": bad})
        # a refused item is named by its place: `metric_field.0`
        assert {name.split(".")[0] for name in exc.value.fields} == {"metric_field"}
    with pytest.raises(InvalidInput) as exc:
        await unflag(caller=caller, raw={"pipeline_id": "one", "pipeline_execution_id": 1.5,
                                         "metric_field": ["bytes"]})
    assert set(exc.value.fields) == {"pipeline_id", "pipeline_execution_id"}


# ----------------------------------------------------------------------------------------------
# what detection skips


async def test_skips_with_fewer_points_than_minimum_executions(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130])
    run = await execution(caller, pipeline_id, BASE, 10_000)
    assert await detect(caller, run) == []
    assert await flags_of(run) is None

    # a fifth point makes it count (for a run that started before the unflagged 10 000 s)
    await execution(caller, pipeline_id, BASE - 8 * DAY, 140)
    earlier = await execution(caller, pipeline_id, BASE - timedelta(minutes=5), 10_000)
    [result] = await detect(caller, earlier)
    assert (result.points, result.mean) == (5, pytest.approx(120))


async def test_skips_when_the_standard_deviation_is_zero(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await rule(caller, pipeline_id, "throughput")
    await history(caller, pipeline_id, [100] * 6, total_rows=333)
    run = await execution(caller, pipeline_id, BASE, 500, total_rows=333)
    assert await detect(caller, run) == []


async def test_baseline_is_the_same_hour_of_day(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])  # 10:xx
    await history(caller, pipeline_id, [1000, 1010, 1020, 1030, 1040],
                  at=BASE + timedelta(hours=1))  # 11:xx

    ten = await execution(caller, pipeline_id, BASE, 150)
    [at_ten] = await detect(caller, ten)
    assert (at_ten.points, at_ten.mean) == (5, pytest.approx(120))

    eleven = await execution(caller, pipeline_id, BASE + timedelta(hours=1), 150)
    [at_eleven] = await detect(caller, eleven)
    assert (at_eleven.points, at_eleven.mean) == (5, pytest.approx(1020))
    assert at_eleven.value < at_eleven.lower_bound

    midnight = await execution(caller, pipeline_id, BASE.replace(hour=0), 5000)
    assert await detect(caller, midnight) == []  # no history at 00:xx


async def test_failed_runs_are_not_in_the_baseline_and_are_not_checked(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])
    for i in range(3):
        await execution(caller, pipeline_id, BASE - (i + 1) * DAY + timedelta(minutes=30),
                        5000, ok=False)
    failed = await execution(caller, pipeline_id, BASE - timedelta(minutes=10), 9000, ok=False)
    assert failed.status == RunStatus.FAILED
    assert await detect(caller, failed) == []

    run = await execution(caller, pipeline_id, BASE, 150)
    [result] = await detect(caller, run)
    assert (result.points, result.mean) == (5, pytest.approx(120))


async def test_runs_outside_the_lookback_are_not_in_the_baseline(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id, lookback_days=7)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])  # days -1..-5
    await history(caller, pipeline_id, [5000, 5100, 5200], first_day=8)  # days -8..-10
    # runs that started after this one are not its history either
    await execution(caller, pipeline_id, BASE + DAY, 7000)

    run = await execution(caller, pipeline_id, BASE, 150)
    [result] = await detect(caller, run)
    assert (result.points, result.mean) == (5, pytest.approx(120))

    # a longer lookback takes them in
    wide = await get_rule(caller=caller, rule_id=result.rule_id)  # type: ignore[attr-defined]
    await patch_rule(caller=caller, raw={"id": wide.id, "lookback_days": 30})
    later = await execution(caller, pipeline_id, BASE + timedelta(minutes=1), 100_000)
    [wider] = await detect(caller, later)
    # 5 + the 3 older ones; `run` is flagged and the 7000 s one started after `later`
    assert wider.points == 8


async def test_null_metrics_are_skipped(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id, "total_rows")
    await rule(caller, pipeline_id, "inserts")
    for i, rows in enumerate([1000, 1100, 1200, 1300, 1400]):
        await execution(caller, pipeline_id, BASE - (i + 1) * DAY, 60, total_rows=rows)
    for i in range(3):  # no counts reported
        await execution(caller, pipeline_id, BASE - (i + 6) * DAY, 60)

    missing = await execution(caller, pipeline_id, BASE, 60)  # total_rows null: skipped
    assert missing.rows_total is None
    assert await detect(caller, missing) == []

    run = await execution(caller, pipeline_id, BASE + timedelta(minutes=1), 60,
                          total_rows=9000, inserts=5)
    [result] = await detect(caller, run)  # inserts: no baseline points at all
    assert result.metric_field == "total_rows"
    assert (result.points, result.mean) == (5, pytest.approx(1200))


async def test_inactive_rules_do_nothing(caller):
    pipeline_id = await watcher_pipeline(caller)
    inactive = await rule(caller, pipeline_id, active=False)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])
    run = await execution(caller, pipeline_id, BASE, 150)
    assert await detect(caller, run) == []
    assert not await Task.filter(kind="anomaly_detection").exists()

    await patch_rule(caller=caller, raw={"id": inactive.id, "active": True})
    assert len(await detect(caller, run)) == 1


async def test_detection_of_a_run_that_is_not_there_or_not_a_success(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    running = await start_execution(caller=caller, raw={"pipeline_id": pipeline_id,
                                                        "start_date": BASE})
    assert await detect(caller, running) == []
    for run_id in (0, -1, 10**6, 2**63):
        assert await detect_for_run(organisation_id=caller.organisation_id,
                                    run_id=run_id) == []


# ----------------------------------------------------------------------------------------------
# metrics


async def test_lower_bound_is_clamped_at_zero(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id, "total_rows")
    for i, rows in enumerate([0, 0, 0, 10, 100]):
        await execution(caller, pipeline_id, BASE - (i + 1) * DAY, 60, total_rows=rows)
    assert statistics.mean([0, 0, 0, 10, 100]) - std([0, 0, 0, 10, 100]) < 0

    zero = await execution(caller, pipeline_id, BASE, 60, total_rows=0)
    assert await detect(caller, zero) == []  # 0 is on the (clamped) lower bound

    big = await execution(caller, pipeline_id, BASE + timedelta(minutes=1), 60,
                          total_rows=200)
    [result] = await detect(caller, big)
    assert result.lower_bound == 0.0
    baseline = [0, 0, 0, 0, 10, 100]  # the zero run counts
    assert result.points == 6
    assert result.upper_bound == pytest.approx(statistics.mean(baseline) + std(baseline))


async def test_throughput_and_total_rows_rules(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id, "throughput", z_threshold=2.0)
    await rule(caller, pipeline_id, "total_rows", z_threshold=2.0)
    rows = [1000, 1200, 1100, 1400, 1300]
    seconds = [100, 110, 120, 130, 140]
    for i, (r, s) in enumerate(zip(rows, seconds, strict=True)):
        await execution(caller, pipeline_id, BASE - (i + 1) * DAY, s, total_rows=r)
    throughputs = [round(r / s, 4) for r, s in zip(rows, seconds, strict=True)]

    run = await execution(caller, pipeline_id, BASE, 50, total_rows=5000)
    assert run.throughput == 100.0
    results = {r.metric_field: r for r in await detect(caller, run)}
    assert set(results) == {"throughput", "total_rows"}
    tp = results["throughput"]
    assert tp.value == 100.0
    assert tp.mean == pytest.approx(statistics.mean(throughputs))
    assert tp.std_dev == pytest.approx(std(throughputs))
    assert tp.upper_bound == pytest.approx(tp.mean + 2 * tp.std_dev)
    assert tp.z_threshold == 2.0
    total = results["total_rows"]
    assert (total.value, total.mean, total.points) == (5000, pytest.approx(1200), 5)
    assert await flags_of(run) == {"throughput": True, "total_rows": True}


async def test_bytes_rule_on_elt_runs(caller):
    """ELT runs have no `hour_recorded`: the hour of `started_at` stands in for it."""
    pipeline = await create_pipeline(caller=caller, fields=PipelineFields(name="elt sync"))
    await rule(caller, pipeline.id, "bytes")

    async def elt_run(start: datetime, loaded: int) -> Run:
        run = await create_run(caller=caller, now=start, new=NewRun(
            pipeline_id=pipeline.id, status=RunStatus.RUNNING))
        end = start + timedelta(minutes=3)
        change = parse_change({"status": "succeeded", "finished_at": end,
                               "telemetry_summary": {"bytesLoaded": loaded}}, now=end)
        return await update_run(caller=caller, run_id=run.id, change=change, now=end)

    loads = [10_000, 11_000, 12_000, 13_000, 14_000]
    for i, loaded in enumerate(loads):
        await elt_run(BASE - (i + 1) * DAY, loaded)
    await elt_run(BASE - DAY + timedelta(hours=2), 900_000)  # 12:xx: another hour of day

    run = await elt_run(BASE, 50_000)
    assert run.hour_recorded is None and run.bytes == 50_000
    [result] = await detect(caller, run)
    assert result.metric_field == "bytes"
    assert (result.points, result.mean) == (5, pytest.approx(12_000))
    assert result.std_dev == pytest.approx(std(loads))
    assert await flags_of(run) == {"bytes": True}

    usual = await elt_run(BASE + DAY, 12_500)
    assert await detect(caller, usual) == []


async def test_events_delivered_rule_on_warehouse_runs(client, tenant, caller, cid):
    pipeline = await Pipeline.get(connection_id=cid)
    await rule(caller, pipeline.id, "events_delivered")
    now = datetime.now(UTC).replace(minute=20, second=0, microsecond=0)
    if now > datetime.now(UTC):
        now -= timedelta(hours=1)

    async def warehouse_run(start: datetime, events: int) -> int:
        run_id = await start_run(client, tenant, cid, start)
        r = await report(client, tenant, cid, run_id,
                         completed_at=iso(start + timedelta(minutes=5)),
                         events_delivered=events)
        assert r.status_code == 204, r.text
        return run_id

    counts = [500, 520, 540, 560, 580]
    for i, events in enumerate(counts):
        await warehouse_run(now - (i + 1) * DAY, events)
    run_id = await warehouse_run(now - timedelta(minutes=10), 5)
    run = await Run.get(id=run_id)
    assert run.events_delivered == 5
    [result] = await detect(caller, run)
    assert result.metric_field == "events_delivered"
    assert (result.value, result.points) == (5, 5)
    assert result.mean == pytest.approx(540)


# ----------------------------------------------------------------------------------------------
# the task after a successful end


async def anomaly_tasks() -> list[Task]:
    return await Task.filter(kind="anomaly_detection").order_by("id")


async def test_a_successful_end_enqueues_detection_only_with_an_active_rule(caller):
    pipeline_id = await watcher_pipeline(caller)
    await execution(caller, pipeline_id, BASE - 3 * DAY, 60)
    assert await anomaly_tasks() == []  # no rule

    inactive = await rule(caller, pipeline_id, active=False)
    await execution(caller, pipeline_id, BASE - 2 * DAY, 60)
    assert await anomaly_tasks() == []  # only an inactive rule

    await patch_rule(caller=caller, raw={"id": inactive.id, "active": True})
    await execution(caller, pipeline_id, BASE - DAY, 60, ok=False)
    assert await anomaly_tasks() == []  # a failure

    run = await execution(caller, pipeline_id, BASE, 60)
    [task] = await anomaly_tasks()
    assert task.payload == {"run_id": run.id}
    assert task.organisation_id == caller.organisation_id  # type: ignore[attr-defined]

    # another pipeline's rule does not count
    other = await watcher_pipeline(caller, "other")
    await execution(caller, other, BASE, 60)
    assert len(await anomaly_tasks()) == 1


async def test_the_task_worker_runs_detection_after_the_end(settings, caller):
    pipeline_id = await watcher_pipeline(caller)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])  # before the rule: no tasks
    await rule(caller, pipeline_id)
    slow = await execution(caller, pipeline_id, BASE, 150)
    [task] = await anomaly_tasks()

    assert await TaskRunner(settings).run_due(now=utcnow()) == 1
    assert (await Task.get(id=task.id)).status == TaskStatus.DONE
    assert await flags_of(slow) == {"duration_seconds": True}
    [result] = await AnomalyResult.filter(run_id=slow.id)
    assert (result.points, round(result.upper_bound, 2)) == (5, 135.81)


# ----------------------------------------------------------------------------------------------
# alerts


async def test_an_alert_per_flagged_metric_and_never_twice(caller, tenant, other_tenant):
    channel = await AlertChannel.create(organisation_id=tenant.org_id, name="ops", kind="slack",
                                        url="http://127.0.0.1:9/x")
    await AlertChannel.create(organisation_id=other_tenant.org_id, name="ops", kind="slack",
                              url="http://127.0.0.1:9/y")
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await rule(caller, pipeline_id, "total_rows")
    await rule(caller, pipeline_id, "inserts")  # not flagged (no baseline)
    for i, (s, r) in enumerate([(100, 1000), (110, 1100), (120, 1200), (130, 1300),
                                (140, 1400)]):
        await execution(caller, pipeline_id, BASE - (i + 1) * DAY, s, total_rows=r)

    usual = await execution(caller, pipeline_id, BASE + timedelta(minutes=5), 120,
                            total_rows=1200)  # after `run`: not in its baseline
    assert await detect(caller, usual) == []
    assert not await WebhookDelivery.filter(event_type="alert.anomaly").exists()

    run = await execution(caller, pipeline_id, BASE, 150, total_rows=9000, inserts=3)
    results = await detect(caller, run)
    assert len(results) == 2
    deliveries = await WebhookDelivery.filter(event_type="alert.anomaly").order_by("id")
    assert len(deliveries) == 2
    assert {d.channel_id for d in deliveries} == {channel.id}  # type: ignore[attr-defined]
    assert all(d.organisation_id == tenant.org_id for d in deliveries)  # type: ignore[attr-defined]
    texts = [d.payload["text"] for d in deliveries]
    duration_text = next(t for t in texts if "duration_seconds" in t)
    assert "nightly load" in duration_text
    for part in ("150", "104.19", "135.81", "mean 120.00", "std dev 15.81", "1 x", "from 5 "):
        assert part in duration_text, (part, duration_text)
    assert any("9000" in t and "total_rows" in t for t in texts)

    # again: nothing new
    assert await detect(caller, run) == []
    assert await WebhookDelivery.filter(event_type="alert.anomaly").count() == 2


async def test_a_webhook_channel_gets_the_numbers_as_details(caller, tenant):
    await AlertChannel.create(organisation_id=tenant.org_id, name="hook", kind="webhook",
                              url="http://127.0.0.1:9/x", secret="whsec_dGVzdA==")
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])
    run = await execution(caller, pipeline_id, BASE, 150)
    [result] = await detect(caller, run)
    [delivery] = await WebhookDelivery.filter(event_type="alert.anomaly")
    body = delivery.payload
    assert body["type"] == "alert.anomaly" and body["severity"] == "warning"
    details = body["details"]
    assert details["runId"] == str(run.id) and details["pipelineId"] == str(pipeline_id)
    assert details["metricField"] == "duration_seconds"
    assert details["value"] == 150 and details["points"] == 5
    assert round(details["lowerBound"], 2) == 104.19
    assert round(details["upperBound"], 2) == 135.81
    assert details["mean"] == pytest.approx(120)
    assert round(details["stdDev"], 2) == 15.81
    assert details["zThreshold"] == 1.0
    assert details["resultId"] == str(result.id)


# ----------------------------------------------------------------------------------------------
# rules


async def test_get_or_create_rule_defaults_and_found_unchanged(caller):
    pipeline_id = await watcher_pipeline(caller)
    created, was_created = await get_or_create_rule(caller=caller, raw={
        "pipeline_id": pipeline_id, "metric_field": "total_rows"})
    assert was_created
    assert (created.z_threshold, created.lookback_days, created.minimum_executions,
            created.active) == (3.0, 30, 30, True)
    assert created.updated_at is None and created.created_at is not None

    found, was_created = await get_or_create_rule(caller=caller, raw={
        "pipeline_id": pipeline_id, "metric_field": " Total_Rows ", "z_threshold": 9.0,
        "active": False})
    assert not was_created and found.id == created.id
    assert (found.z_threshold, found.active) == (3.0, True)

    other, was_created = await get_or_create_rule(caller=caller, raw={
        "pipeline_id": pipeline_id, "metric_field": "updates", "z_threshold": 1,
        "lookback_days": 365, "minimum_executions": 1000, "active": False})
    assert was_created
    assert (other.z_threshold, other.lookback_days, other.minimum_executions,
            other.active) == (1.0, 365, 1000, False)
    assert [r.id for r in await list_rules(caller=caller)] == [created.id, other.id]
    assert [r.id for r in await list_rules(caller=caller, pipeline_id=pipeline_id)] == [
        created.id, other.id]
    assert await list_rules(caller=caller, pipeline_id=pipeline_id + 1) == []
    assert (await get_rule(caller=caller, rule_id=other.id)).metric_field == "updates"


async def test_every_metric_can_be_watched(caller):
    pipeline_id = await watcher_pipeline(caller)
    for metric in METRICS:
        await rule(caller, pipeline_id, metric)
    assert sorted(r.metric_field for r in await list_rules(caller=caller)) == sorted(METRICS)
    assert set(METRICS) == {"duration_seconds", "inserts", "updates", "soft_deletes",
                            "total_rows", "throughput", "events_delivered", "bytes"}
    assert anomalies.METRICS["soft_deletes"] == "rows_deleted"


@pytest.mark.parametrize(("raw", "fields"), [
    ({}, {"pipeline_id", "metric_field"}),
    ({"pipeline_id": "one", "metric_field": "rows"}, {"pipeline_id", "metric_field"}),
    ({"pipeline_id": 1.5, "metric_field": None}, {"pipeline_id", "metric_field"}),
    ({"z_threshold": 0.99}, {"z_threshold"}),
    ({"z_threshold": 10.01}, {"z_threshold"}),
    ({"z_threshold": float("nan")}, {"z_threshold"}),
    ({"z_threshold": "three"}, {"z_threshold"}),
    ({"lookback_days": 0}, {"lookback_days"}),
    ({"lookback_days": 366}, {"lookback_days"}),
    ({"lookback_days": 1.5}, {"lookback_days"}),
    ({"minimum_executions": 4}, {"minimum_executions"}),
    ({"minimum_executions": 1001}, {"minimum_executions"}),
    ({"active": "maybe"}, {"active"}),
    ({"z_threshold": 0, "lookback_days": -1, "minimum_executions": True, "active": 2},
     {"z_threshold", "lookback_days", "minimum_executions", "active"}),
])
async def test_rule_validation_names_its_fields(caller, raw, fields):
    pipeline_id = await watcher_pipeline(caller)
    body = raw if raw == {} or "pipeline_id" in raw else {
        "pipeline_id": pipeline_id, "metric_field": "duration_seconds", **raw}
    with pytest.raises(InvalidInput) as exc:
        await get_or_create_rule(caller=caller, raw=body)
    assert set(exc.value.fields) == fields
    assert not await AnomalyRule.exists()


async def test_patch_rule_changes_only_what_is_sent(caller):
    pipeline_id = await watcher_pipeline(caller)
    other_pipeline = await watcher_pipeline(caller, "other")
    target = await rule(caller, pipeline_id, lookback_days=10)
    await rule(caller, pipeline_id, "total_rows")

    patched = await patch_rule(caller=caller, raw={"id": target.id, "z_threshold": 2.5,
                                                   "minimum_executions": None})
    assert (patched.z_threshold, patched.lookback_days, patched.minimum_executions,
            patched.metric_field, patched.active) == (2.5, 10, 5, "duration_seconds", True)
    assert patched.updated_at is not None
    stored = await AnomalyRule.get(id=target.id)
    assert (stored.z_threshold, stored.lookback_days, stored.minimum_executions) == (2.5, 10, 5)
    assert stored.updated_at is not None

    moved = await patch_rule(caller=caller, raw={"id": target.id, "metric_field": "updates",
                                                 "pipeline_id": other_pipeline,
                                                 "active": False})
    assert (moved.metric_field, moved.pipeline_id, moved.active) == (  # type: ignore[attr-defined]
        "updates", other_pipeline, False)

    # a second rule of the same pipeline and metric
    with pytest.raises(InvalidInput) as exc:
        await patch_rule(caller=caller, raw={"id": target.id, "metric_field": "total_rows",
                                             "pipeline_id": pipeline_id})
    assert set(exc.value.fields) == {"metric_field"}

    with pytest.raises(InvalidInput) as exc:
        await patch_rule(caller=caller, raw={"z_threshold": 11, "lookback_days": 0,
                                             "metric_field": "x", "pipeline_id": "p"})
    assert set(exc.value.fields) == {"id", "z_threshold", "lookback_days", "metric_field",
                                     "pipeline_id"}
    with pytest.raises(InvalidInput) as exc:
        await patch_rule(caller=caller, raw={"metric_field": "x", "pipeline_id": "2"})
    assert set(exc.value.fields) == {"id", "metric_field"}
    with pytest.raises(NotFound) as exc:
        await patch_rule(caller=caller, raw={"id": target.id, "pipeline_id": 10**6})
    assert exc.value.kind == "pipeline"
    with pytest.raises(NotFound) as exc:
        await patch_rule(caller=caller, raw={"id": 10**9, "active": True})
    assert exc.value.kind == "anomaly detection rule"


async def test_rule_of_a_missing_pipeline_is_not_found(caller):
    for pipeline_id in (10**6, 0, -3, 2**40):
        with pytest.raises(NotFound) as exc:
            await get_or_create_rule(caller=caller, raw={"pipeline_id": pipeline_id,
                                                         "metric_field": "bytes"})
        assert exc.value.kind == "pipeline"
    for rule_id in (10**6, 0, 2**40):
        with pytest.raises(NotFound) as exc:
            await get_rule(caller=caller, rule_id=rule_id)
        assert exc.value.kind == "anomaly detection rule"


async def test_scopes(tenant, caller):
    pipeline_id = await watcher_pipeline(caller)
    created = await rule(caller, pipeline_id)
    reader = caller_of(tenant, Scope.READ)
    reporter = caller_of(tenant, Scope.REPORT)
    for call in (
        get_or_create_rule(caller=reader, raw={"pipeline_id": pipeline_id,
                                               "metric_field": "bytes"}),
        patch_rule(caller=reader, raw={"id": created.id, "active": False}),
        unflag(caller=reader, raw={"pipeline_id": pipeline_id, "pipeline_execution_id": 1,
                                   "metric_field": ["bytes"]}),
        list_rules(caller=reporter),
        list_results(caller=reporter),
    ):
        with pytest.raises(PermissionDenied):
            await call
    # a Watcher job's report token writes rules; a reader reads them
    made, _ = await get_or_create_rule(caller=reporter, raw={"pipeline_id": pipeline_id,
                                                             "metric_field": "bytes"})
    assert [r.id for r in await list_rules(caller=reader)] == [created.id, made.id]


# ----------------------------------------------------------------------------------------------
# tenancy


async def test_another_organisations_rules_results_and_runs(caller, other_tenant):
    pipeline_id = await watcher_pipeline(caller)
    own_rule = await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140])
    run = await execution(caller, pipeline_id, BASE, 150)

    other = caller_of(other_tenant)
    # detection as the wrong organisation does nothing
    assert await detect_for_run(organisation_id=other_tenant.org_id, run_id=run.id) == []
    assert not await AnomalyResult.exists()
    assert await flags_of(run) is None
    [result] = await detect(caller, run)

    with pytest.raises(NotFound):
        await get_rule(caller=other, rule_id=own_rule.id)
    with pytest.raises(NotFound):
        await patch_rule(caller=other, raw={"id": own_rule.id, "active": False})
    with pytest.raises(NotFound) as exc:
        await get_or_create_rule(caller=other, raw={"pipeline_id": pipeline_id,
                                                    "metric_field": "duration_seconds"})
    assert exc.value.kind == "pipeline"
    with pytest.raises(NotFound):
        await unflag(caller=other, raw={"pipeline_id": pipeline_id,
                                        "pipeline_execution_id": run.id,
                                        "metric_field": ["duration_seconds"]})
    assert await list_rules(caller=other) == []
    assert await list_rules(caller=other, pipeline_id=pipeline_id) == []
    assert (await list_results(caller=other)).items == []
    assert (await list_results(caller=other, run_id=run.id)).items == []
    assert (await list_results(caller=other, pipeline_id=pipeline_id)).items == []

    # untouched
    assert (await get_rule(caller=caller, rule_id=own_rule.id)).active is True
    assert await flags_of(run) == {"duration_seconds": True}
    assert [r.id for r in (await list_results(caller=caller, run_id=run.id)).items] == [
        result.id]

    # the other organisation's rule on its own pipeline of the same name is its own
    theirs = await watcher_pipeline(other)
    their_rule = await rule(other, theirs)
    assert [r.id for r in await list_rules(caller=other)] == [their_rule.id]
    assert [r.id for r in await list_rules(caller=caller)] == [own_rule.id]


async def test_list_results_pages_newest_first(caller):
    pipeline_id = await watcher_pipeline(caller)
    await rule(caller, pipeline_id)
    await history(caller, pipeline_id, [100, 110, 120, 130, 140], first_day=4)
    flagged = []
    for i, seconds in enumerate([500, 600, 700]):
        run = await execution(caller, pipeline_id, BASE - (2 - i) * DAY, seconds)
        [result] = await detect(caller, run)
        flagged.append(result.id)
    first = await list_results(caller=caller, first=2)
    assert [r.id for r in first.items] == flagged[::-1][:2] and first.has_next_page
    rest = await list_results(caller=caller, first=2, after=first.end_cursor)
    assert [r.id for r in rest.items] == flagged[:1] and not rest.has_next_page
    assert [r.id for r in (await list_results(caller=caller, run_id=10**12)).items] == []
    with pytest.raises(InvalidInput):
        await list_results(caller=caller, first=0)


# ----------------------------------------------------------------------------------------------
# cost


async def counted_detection(caplog, caller: Caller, run: Run) -> tuple[int, list]:
    with caplog.at_level(logging.DEBUG, logger=SQL_LOGGER):
        start = len(caplog.records)
        results = await detect(caller, run)
        records = caplog.records[start:]
    statements = [r for r in records if r.name == SQL_LOGGER and r.levelno == logging.DEBUG
                  and not r.getMessage().startswith(NOT_STATEMENTS)
                  and LAST_USED not in r.getMessage()]
    return len(statements), results


async def bulk_history(caller: Caller, pipeline_id: int, size: int) -> None:
    """`size` successful executions, one a day before BASE at 10:xx (as the resolvers store
    them), written in one statement."""
    runs = []
    for i in range(size):
        start = BASE - (i + 1) * DAY - timedelta(minutes=i % 15)
        seconds = 100 + 10 * (i % 5)
        rows = 1000 + 100 * (i % 3)
        runs.append(Run(
            organisation_id=caller.organisation_id, pipeline_id=pipeline_id,
            status=RunStatus.SUCCEEDED, started_at=start,
            finished_at=start + timedelta(seconds=seconds), hour_recorded=start.hour,
            date_recorded=start.date(), duration_seconds=seconds, rows_total=rows,
            throughput=round(rows / seconds, 4)))
    await Run.bulk_create(runs)


async def test_detection_costs_the_same_for_10_and_200_runs_of_history(caplog, caller, tenant):
    await AlertChannel.create(organisation_id=tenant.org_id, name="ops", kind="slack",
                              url="http://127.0.0.1:9/x")
    counts = {}
    for size in (10, 200):
        pipeline_id = await watcher_pipeline(caller, f"pipeline-{size}")
        for metric in ("duration_seconds", "total_rows", "throughput"):
            await rule(caller, pipeline_id, metric, lookback_days=365)
        await bulk_history(caller, pipeline_id, size)
        run = await execution(caller, pipeline_id, BASE, 1000, total_rows=50_000)
        counts[size], results = await counted_detection(caplog, caller, run)
        assert {r.metric_field for r in results} == {"duration_seconds", "total_rows",
                                                    "throughput"}
        assert {r.points for r in results} == {size}
        assert await WebhookDelivery.filter(event_type="alert.anomaly").count() == (
            3 if size == 10 else 6)
    assert counts[10] == counts[200], counts
    assert counts[200] <= 20, counts
