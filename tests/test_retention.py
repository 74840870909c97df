"""Log cleanup: what goes, what stays, the six counters, batches, tenancy and roll-ups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runwatch.models import (
    AnomalyResult,
    FreshnessLog,
    Pipeline,
    PipelineHourlyStats,
    Run,
    RunLogLine,
    RunStatus,
    RunTelemetrySample,
    TimelinessLog,
)
from runwatch.resolvers import retention
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.errors import InvalidInput
from runwatch.resolvers.retention import CleanupCounts, clean_up, clean_up_all, parse_cleanup
from runwatch.resolvers.telemetry import TelemetryOptions, telemetry_of_pipelines
from tests.watcher_wire import end_execution, get_or_create_pipeline, start_execution

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
COUNTERS = ("total_pipeline_executions_deleted",
            "total_timeliness_pipeline_execution_logs_deleted",
            "total_anomaly_detection_results_deleted",
            "total_pipeline_execution_closure_parent_deleted",
            "total_pipeline_execution_closure_child_deleted",
            "total_freshness_pipeline_logs_deleted")


async def make_pipeline(caller: Caller, name: str = "load") -> Pipeline:
    pipeline, _ = await get_or_create_pipeline(
        caller=caller, raw={"name": name, "pipeline_type_name": "etl"})
    return pipeline


async def run(caller: Caller, pipeline: Pipeline, days_ago: float | timedelta, *,
              ok: bool | None = True, parent: Run | None = None, **counts: int) -> Run:
    """An execution started `days_ago` and ended an hour later (ok=None: still running)."""
    started = NOW - (days_ago if isinstance(days_ago, timedelta) else days_ago * DAY)
    raw: dict[str, Any] = {"pipeline_id": pipeline.id, "start_date": started}
    if parent is not None:
        raw["parent_id"] = parent.id
    row = await start_execution(caller=caller, raw=raw, now=started)
    if ok is None:
        return row
    ended, _ = await end_execution(caller=caller, raw={
        "id": row.id, "end_date": started + HOUR, "completed_successfully": ok, **counts},
        now=started + HOUR)
    return ended


async def attach(run_: Run, *, lines: int = 2, samples: int = 2, timeliness: bool = True,
                 anomaly: bool = True) -> None:
    """Log lines, samples, a timeliness log and an anomaly result of a run."""
    at = run_.started_at
    for seq in range(1, lines + 1):
        await RunLogLine.create(run_id=run_.id, seq=seq, at=at, level="info", message="line")
    for seq in range(1, samples + 1):
        await RunTelemetrySample.create(run_id=run_.id, seq=seq, at=at, rows=seq)
    org, pipeline = run_.organisation_id, run_.pipeline_id  # type: ignore[attr-defined]
    if timeliness:
        await TimelinessLog.create(organisation_id=org, pipeline_id=pipeline, run_id=run_.id,
                                   run_status="succeeded", deadline_at=at)
    if anomaly:
        await AnomalyResult.create(
            organisation_id=org, pipeline_id=pipeline, run_id=run_.id,
            metric_field="total_rows", value=1.0, mean=10.0, std_dev=1.0, z_threshold=3.0,
            lower_bound=7.0, upper_bound=13.0, points=30)


async def ids(model: Any, **filters: Any) -> list[int]:
    return sorted(await model.filter(**filters).values_list("id", flat=True))


async def rollups() -> tuple[list[dict], list[dict]]:
    stats = await PipelineHourlyStats.all().order_by("id").values()
    pipelines = await Pipeline.all().order_by("id").values(
        "id", "last_success_at", "last_delivery_at", "revision", "last_target_insert",
        "last_target_update", "last_target_soft_delete", "watermark")
    return stats, pipelines


def counts(**values: int) -> dict[str, int]:
    return {name: values.get(name.removeprefix("total_").removesuffix("_deleted"), 0)
            for name in COUNTERS}


def caller_of(organisation_id: int) -> Caller:
    return Caller(organisation_id=organisation_id, scopes=frozenset({Scope.ADMIN}))


async def test_old_runs_and_their_logs_go_recent_latest_and_open_runs_stay(caller, tenant):
    a = await make_pipeline(caller, "a")
    b = await make_pipeline(caller, "b")
    open_old = await run(caller, a, 200, ok=None)  # still running: never deleted
    old_ok = await run(caller, a, 100, inserts=1)
    old_failed = await run(caller, a, 95, ok=False)  # followed by a success: not a streak
    at_cutoff = await run(caller, a, 90 * DAY + HOUR)  # ended exactly 90 days ago: not older
    started_before = await run(caller, a, 90 * DAY + HOUR / 2)  # ended after the cutoff
    recent = await run(caller, a, 10)
    b_old = await run(caller, b, 300)
    b_latest = await run(caller, b, 200)  # the latest run of b: kept although old
    for r in (open_old, old_ok, old_failed, at_cutoff, started_before, recent, b_old, b_latest):
        await attach(r)

    result = await clean_up(organisation_id=tenant.org_id, retention_days=90, now=NOW)
    assert isinstance(result, CleanupCounts)
    assert result.as_dict() == counts(pipeline_executions=3,
                                      timeliness_pipeline_execution_logs=3,
                                      anomaly_detection_results=3)
    assert list(result.as_dict()) == list(COUNTERS)
    kept = [open_old.id, at_cutoff.id, started_before.id, recent.id, b_latest.id]
    assert await ids(Run) == sorted(kept)
    assert sorted(await RunLogLine.all().distinct().values_list("run_id", flat=True)) == \
        sorted(kept)
    assert await RunLogLine.all().count() == 2 * len(kept)
    assert await RunTelemetrySample.all().count() == 2 * len(kept)
    assert sorted(await TimelinessLog.all().values_list("run_id", flat=True)) == sorted(kept)
    assert sorted(await AnomalyResult.all().values_list("run_id", flat=True)) == sorted(kept)
    assert (await Run.get(id=open_old.id)).status == RunStatus.RUNNING

    # Nothing more to do: a second cleanup deletes nothing.
    again = await clean_up(organisation_id=tenant.org_id, retention_days=90, now=NOW)
    assert again.as_dict() == counts()


async def test_roll_ups_and_telemetry_read_the_same(caller, tenant):
    a = await make_pipeline(caller, "a")
    failing = await make_pipeline(caller, "failing")
    for days in (150, 120, 100):
        await run(caller, a, days, inserts=5)
    await run(caller, a, 95, ok=False)
    await run(caller, a, 91, ok=False)
    await run(caller, a, 3, updates=1)
    await run(caller, a, 0.5, ok=False)
    # A failure streak: telemetry counts these failed runs, so they stay although old.
    for days in (130, 120, 110, 100):
        await run(caller, failing, days, ok=False)
    options = TelemetryOptions()
    pipelines = [a.id, failing.id]
    telemetry_before = await telemetry_of_pipelines(caller=caller, pipelines=pipelines,
                                                    options=options, now=NOW)
    assert telemetry_before[failing.id].streak == 4
    before = await rollups()

    result = await clean_up(organisation_id=tenant.org_id, retention_days=90, now=NOW)
    assert result.total_pipeline_executions_deleted == 5
    assert await Run.filter(pipeline_id=failing.id).count() == 4
    assert await rollups() == before
    assert await telemetry_of_pipelines(caller=caller, pipelines=pipelines, options=options,
                                        now=NOW) == telemetry_before

    # Once the pipeline succeeds again, its old failures are history like any other.
    await run(caller, failing, 1)
    result = await clean_up(organisation_id=tenant.org_id, retention_days=90, now=NOW)
    assert result.total_pipeline_executions_deleted == 4


async def test_streak_keeps_only_what_telemetry_counts(caller, tenant, monkeypatch):
    monkeypatch.setattr(retention, "STREAK_CAP", 3)
    failing = await make_pipeline(caller, "failing")
    streak = [await run(caller, failing, days, ok=False) for days in (140, 130, 120, 110, 100)]
    result = await clean_up(organisation_id=tenant.org_id, retention_days=90, now=NOW)
    assert result.total_pipeline_executions_deleted == 2
    assert await ids(Run) == sorted(r.id for r in streak[2:])


async def test_parents_and_children(caller, tenant):
    a = await make_pipeline(caller, "a")
    parent = await run(caller, a, 100)
    old_child = await run(caller, a, 100, parent=parent)
    grandchild = await run(caller, a, 99, parent=old_child)
    recent_child = await run(caller, a, 100, ok=None, parent=parent)  # still open
    lone = await run(caller, a, 98)
    other_parent = await run(caller, a, 97)
    kept_child = await run(caller, a, 5, parent=other_parent)

    result = await clean_up(organisation_id=tenant.org_id, retention_days=90, now=NOW)
    assert result.as_dict() == counts(pipeline_executions=5, pipeline_execution_closure_parent=3,
                                      pipeline_execution_closure_child=2)
    assert await ids(Run) == sorted([recent_child.id, kept_child.id])
    assert (await Run.get(id=recent_child.id)).parent_id is None  # type: ignore[attr-defined]
    assert (await Run.get(id=kept_child.id)).parent_id is None  # type: ignore[attr-defined]
    assert lone.id and grandchild.id


async def test_parents_and_children_across_batches(caller, tenant):
    a = await make_pipeline(caller, "a")
    parent = await run(caller, a, 100)
    child = await run(caller, a, 100, parent=parent)
    grandchild = await run(caller, a, 100, parent=child)
    await run(caller, a, 1)
    result = await clean_up(organisation_id=tenant.org_id, retention_days=90, batch_size=1,
                            now=NOW)
    assert result.as_dict() == counts(pipeline_executions=3, pipeline_execution_closure_parent=2,
                                      pipeline_execution_closure_child=2)
    assert not await Run.filter(id__in=[parent.id, child.id, grandchild.id]).exists()


async def test_batches_commit_and_delete_everything(caller, tenant, monkeypatch):
    a = await make_pipeline(caller, "a")
    old = [await run(caller, a, 100 + i) for i in range(5)]
    recent = await run(caller, a, 1)
    for r in old:
        await attach(r, lines=1, samples=1)
    batches: list[int] = []
    real = retention._delete_run_batch

    async def counting(**kwargs: Any) -> Any:
        batch = await real(**kwargs)
        batches.append(batch.counts.total_pipeline_executions_deleted)
        return batch

    monkeypatch.setattr(retention, "_delete_run_batch", counting)
    result = await clean_up(organisation_id=tenant.org_id, retention_days=90, batch_size=2,
                            now=NOW)
    assert batches == [2, 2, 1]
    assert result.as_dict() == counts(pipeline_executions=5,
                                      timeliness_pipeline_execution_logs=5,
                                      anomaly_detection_results=5)
    assert await ids(Run) == [recent.id]
    assert await RunLogLine.all().count() == 0


async def test_freshness_logs(caller, tenant):
    a = await make_pipeline(caller, "a")
    b = await make_pipeline(caller, "b")
    await Pipeline.filter(id=a.id).update(last_target_insert=NOW - DAY)
    await Pipeline.filter(id=b.id).update(last_target_update=NOW - 150 * DAY)
    for days in (300, 200, 120):
        await FreshnessLog.create(organisation_id=tenant.org_id, pipeline_id=a.id,
                                  last_dml_at=NOW - days * DAY, deadline_at=NOW - days * DAY)
    recent = await FreshnessLog.create(organisation_id=tenant.org_id, pipeline_id=a.id,
                                       last_dml_at=NOW - 30 * DAY, deadline_at=NOW)
    # b is still stale since this timestamp: its log stays (or it would be alerted again).
    current = await FreshnessLog.create(organisation_id=tenant.org_id, pipeline_id=b.id,
                                        last_dml_at=NOW - 150 * DAY, deadline_at=NOW)
    result = await clean_up(organisation_id=tenant.org_id, retention_days=90, batch_size=2,
                            now=NOW)
    assert result.as_dict() == counts(freshness_pipeline_logs=3)
    assert await ids(FreshnessLog) == sorted([recent.id, current.id])


def test_parse_cleanup():
    assert parse_cleanup({"retention_days": 90}) == (90, 10_000)
    assert parse_cleanup({"retention_days": 365, "batch_size": 1}) == (365, 1)
    assert parse_cleanup({"retention_days": 90, "batch_size": None}) == (90, 10_000)
    for raw, bad in (({}, {"retention_days"}), ({"retention_days": 89}, {"retention_days"}),
                     ({"retention_days": "90"}, {"retention_days"}),
                     ({"retention_days": True}, {"retention_days"}),
                     ({"retention_days": 90, "batch_size": 0}, {"batch_size"}),
                     ({"retention_days": 90, "batch_size": 2.5}, {"batch_size"}),
                     ({"retention_days": 10, "batch_size": -1},
                      {"retention_days", "batch_size"})):
        with pytest.raises(InvalidInput) as caught:
            parse_cleanup(raw)
        assert set(caught.value.fields) == bad, raw
    with pytest.raises(InvalidInput):
        parse_cleanup(None)  # type: ignore[arg-type]


async def test_clean_up_validates(tenant):
    with pytest.raises(InvalidInput) as caught:
        await clean_up(organisation_id=tenant.org_id, retention_days=89, now=NOW)
    assert set(caught.value.fields) == {"retention_days"}
    with pytest.raises(InvalidInput) as caught:
        await clean_up(organisation_id=tenant.org_id, retention_days=90, batch_size=0, now=NOW)
    assert set(caught.value.fields) == {"batch_size"}
    # A retention reaching before any date deletes nothing (and does not overflow).
    assert (await clean_up(organisation_id=tenant.org_id, retention_days=10**9,
                           now=NOW)).as_dict() == counts()


async def test_tenancy_and_the_schedule(caller, tenant, other_tenant):
    other = caller_of(other_tenant.org_id)
    mine, theirs = await make_pipeline(caller, "a"), await make_pipeline(other, "a")
    my_old = [await run(caller, mine, 100), await run(caller, mine, 1)]
    their_old = [await run(other, theirs, 100), await run(other, theirs, 1)]
    for r in (*my_old, *their_old):
        await attach(r)
    for org, pipeline in ((tenant.org_id, mine), (other_tenant.org_id, theirs)):
        await FreshnessLog.create(organisation_id=org, pipeline_id=pipeline.id,
                                  last_dml_at=NOW - 100 * DAY, deadline_at=NOW - 99 * DAY)

    result = await clean_up(organisation_id=tenant.org_id, retention_days=90, now=NOW)
    assert result.as_dict() == counts(pipeline_executions=1,
                                      timeliness_pipeline_execution_logs=1,
                                      anomaly_detection_results=1, freshness_pipeline_logs=1)
    assert await ids(Run, organisation_id=other_tenant.org_id) == sorted(r.id for r in their_old)
    assert await TimelinessLog.filter(organisation_id=other_tenant.org_id).count() == 2
    assert await AnomalyResult.filter(organisation_id=other_tenant.org_id).count() == 2
    assert await FreshnessLog.filter(organisation_id=other_tenant.org_id).count() == 1

    total = await clean_up_all(retention_days=90, now=NOW)
    assert total.as_dict() == counts(pipeline_executions=1,
                                     timeliness_pipeline_execution_logs=1,
                                     anomaly_detection_results=1, freshness_pipeline_logs=1)
    assert await ids(Run) == sorted([my_old[1].id, their_old[1].id])
