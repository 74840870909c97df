"""Watcher timeliness and freshness checks, with constructed clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runwatch.models import (
    AlertChannel,
    FreshnessLog,
    Pipeline,
    Run,
    Task,
    TimelinessLog,
    WebhookDelivery,
)
from runwatch.resolvers import tasks
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.checks import (
    check_all,
    check_freshness,
    check_timeliness,
    list_freshness_logs,
    list_timeliness_logs,
    request_freshness,
)
from runwatch.resolvers.errors import InvalidInput, PermissionDenied
from tests.watcher_wire import (
    end_execution,
    get_or_create_pipeline,
    get_or_create_type,
    patch_pipeline,
    request_timeliness,
    start_execution,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


async def make_type(caller: Caller, name: str, **config: Any) -> int:
    row, _ = await get_or_create_type(caller=caller, raw={"name": name, **config})
    return row.id


async def make_pipeline(caller: Caller, name: str = "load", type_name: str = "etl",
                        **config: Any) -> Pipeline:
    pipeline, _ = await get_or_create_pipeline(
        caller=caller, raw={"name": name, "pipeline_type_name": type_name, **config})
    return pipeline


async def start(caller: Caller, pipeline: Pipeline, at: datetime) -> Run:
    return await start_execution(caller=caller, raw={"pipeline_id": pipeline.id,
                                                     "start_date": at}, now=at)


async def end(caller: Caller, run: Run, at: datetime, ok: bool = True, **counts: int) -> Run:
    ended, _ = await end_execution(caller=caller, raw={
        "id": run.id, "end_date": at, "completed_successfully": ok, **counts}, now=at)
    return ended


async def channel(organisation_id: int) -> AlertChannel:
    return await AlertChannel.create(organisation_id=organisation_id, name="ops", kind="slack",
                                     url="http://127.0.0.1:9/x")


async def alerts_sent(ch: AlertChannel, alert: str) -> int:
    return await WebhookDelivery.filter(channel_id=ch.id, event_type=f"alert.{alert}").count()


def caller_of(organisation_id: int, *scopes: Scope) -> Caller:
    return Caller(organisation_id=organisation_id, scopes=frozenset(scopes or {Scope.ADMIN}))


# --- timeliness ----------------------------------------------------------------------------


async def test_running_past_its_deadline_is_logged(caller, tenant):
    pipeline = await make_pipeline(caller, timeliness_number=30, timeliness_datepart="minute")
    late = await start(caller, pipeline, NOW - 40 * MINUTE)
    await start(caller, pipeline, NOW - 20 * MINUTE)  # deadline still ahead

    logs = await check_timeliness(organisation_id=tenant.org_id, now=NOW)
    assert [(entry.run_id, entry.run_status) for entry in logs] == [(late.id, "running")]
    assert logs[0].deadline_at == NOW - 10 * MINUTE
    assert logs[0].pipeline_id == pipeline.id
    assert logs[0].organisation_id == tenant.org_id
    assert await TimelinessLog.all().count() == 1


async def test_config_from_the_pipeline_else_its_type(caller, tenant):
    await make_type(caller, "typed", timeliness_number=30, timeliness_datepart="minute")
    from_type = await make_pipeline(caller, "from-type", "typed")
    overridden = await make_pipeline(caller, "overridden", "typed", timeliness_number=2,
                                     timeliness_datepart="hour")
    unconfigured = await make_pipeline(caller, "unconfigured", "plain")
    runs = {p.name: await start(caller, p, NOW - 50 * MINUTE)
            for p in (from_type, overridden, unconfigured)}

    logs = await check_timeliness(organisation_id=tenant.org_id, now=NOW)
    assert [entry.run_id for entry in logs] == [runs["from-type"].id]
    assert logs[0].deadline_at == NOW - 20 * MINUTE


async def test_muted_pipeline_or_muted_type_is_skipped(caller, tenant):
    await make_type(caller, "muted", timeliness_number=5, timeliness_datepart="minute",
                    mute_timeliness_check=True)
    muted_type = await make_pipeline(caller, "in-muted-type", "muted")
    muted_type_own_config = await make_pipeline(
        caller, "in-muted-type-with-config", "muted", timeliness_number=5,
        timeliness_datepart="minute")
    muted = await make_pipeline(caller, "muted", timeliness_number=5,
                                timeliness_datepart="minute")
    await patch_pipeline(caller=caller, raw={"id": muted.id, "mute_timeliness_check": True})
    loud = await make_pipeline(caller, "loud", timeliness_number=5, timeliness_datepart="minute")
    for p in (muted_type, muted_type_own_config, muted):
        await start(caller, p, NOW - 30 * MINUTE)
    late = await start(caller, loud, NOW - 30 * MINUTE)

    logs = await check_timeliness(organisation_id=tenant.org_id, now=NOW)
    assert [entry.run_id for entry in logs] == [late.id]

    # A muted freshness check does not mute timeliness.
    await patch_pipeline(caller=caller, raw={"id": loud.id, "mute_freshness_check": True})
    again = await start(caller, loud, NOW - 20 * MINUTE)
    assert [e.run_id for e in await check_timeliness(organisation_id=tenant.org_id,
                                                     now=NOW)] == [again.id]


async def test_succeeded_after_the_deadline_is_logged_in_time_not_failed_skipped(
    caller, tenant
):
    pipeline = await make_pipeline(caller, timeliness_number=10, timeliness_datepart="minute")
    late = await end(caller, await start(caller, pipeline, NOW - 50 * MINUTE),
                     NOW - 35 * MINUTE)
    await end(caller, await start(caller, pipeline, NOW - 45 * MINUTE), NOW - 36 * MINUTE)
    on_the_dot = await start(caller, pipeline, NOW - 30 * MINUTE)
    await end(caller, on_the_dot, NOW - 20 * MINUTE)  # finished at its deadline: in time
    await end(caller, await start(caller, pipeline, NOW - 40 * MINUTE), NOW - 5 * MINUTE,
              ok=False)  # failed, and late: skipped

    logs = await check_timeliness(organisation_id=tenant.org_id, now=NOW)
    assert [(e.run_id, e.run_status) for e in logs] == [(late.id, "succeeded")]
    assert logs[0].deadline_at == NOW - 40 * MINUTE


async def test_only_executions_started_in_the_lookback_window(caller, tenant):
    pipeline = await make_pipeline(caller, timeliness_number=5, timeliness_datepart="minute")
    edge = await start(caller, pipeline, NOW - 60 * MINUTE)  # (now - lookback, now]: out
    inside = await start(caller, pipeline, NOW - 59 * MINUTE)
    older = await start(caller, pipeline, NOW - 90 * MINUTE)
    await start(caller, pipeline, NOW + MINUTE)  # after now: not yet

    logs = await check_timeliness(organisation_id=tenant.org_id, now=NOW)
    assert [e.run_id for e in logs] == [inside.id]
    logs = await check_timeliness(organisation_id=tenant.org_id, lookback_minutes=120, now=NOW)
    assert sorted(e.run_id for e in logs) == sorted([edge.id, older.id])
    # A lookback reaching before any date reads from the beginning, without overflowing.
    assert await check_timeliness(organisation_id=tenant.org_id, lookback_minutes=10**12,
                                  now=NOW) == []


async def test_logged_once_and_alerted_once(caller, tenant):
    ch = await channel(tenant.org_id)
    pipeline = await make_pipeline(caller, timeliness_number=5, timeliness_datepart="minute")
    run = await start(caller, pipeline, NOW - 30 * MINUTE)

    assert len(await check_timeliness(organisation_id=tenant.org_id, now=NOW)) == 1
    assert await check_timeliness(organisation_id=tenant.org_id, now=NOW + MINUTE) == []
    # Ending late afterwards does not log it again either.
    await end(caller, run, NOW + 2 * MINUTE)
    assert await check_timeliness(organisation_id=tenant.org_id, now=NOW + 3 * MINUTE) == []

    assert await TimelinessLog.filter(run_id=run.id).count() == 1
    assert await alerts_sent(ch, "timeliness") == 1
    delivery = await WebhookDelivery.get(channel_id=ch.id)
    assert "late" in delivery.payload["text"] and "[WARNING]" in delivery.payload["text"]


async def test_concurrent_checks_log_and_alert_once(caller, tenant):
    import asyncio

    ch = await channel(tenant.org_id)
    pipeline = await make_pipeline(caller, timeliness_number=5, timeliness_datepart="minute")
    for i in range(3):
        await start(caller, pipeline, NOW - (30 + i) * MINUTE)
    results = await asyncio.gather(
        *(check_timeliness(organisation_id=tenant.org_id, now=NOW) for _ in range(3)))
    assert sum(len(r) for r in results) == 3
    assert await TimelinessLog.all().count() == 3
    assert await alerts_sent(ch, "timeliness") == 3


async def test_minute_and_calendar_month_arithmetic(caller, tenant):
    minutes = await make_pipeline(caller, "minutes", timeliness_number=7,
                                  timeliness_datepart="minute")
    late = await start(caller, minutes, NOW - 8 * MINUTE)
    await start(caller, minutes, NOW - 6 * MINUTE)
    assert [e.run_id for e in await check_timeliness(
        organisation_id=tenant.org_id, now=NOW)] == [late.id]

    monthly = await make_pipeline(caller, "monthly", timeliness_number=1,
                                  timeliness_datepart="month")
    jan31 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    run = await start(caller, monthly, jan31)
    lookback = 60 * 24 * 60  # 60 days
    # Jan 31 + 1 month = Feb 28 (not Mar 2 or Mar 3, as 30 or 31 days would give).
    before = datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
    assert await check_timeliness(organisation_id=tenant.org_id, lookback_minutes=lookback,
                                  now=before) == []
    logs = await check_timeliness(organisation_id=tenant.org_id, lookback_minutes=lookback,
                                  now=before + MINUTE)
    assert [(e.run_id, e.deadline_at) for e in logs] == [(run.id, before)]


async def test_tenancy_and_listing(caller, tenant, other_tenant):
    other = caller_of(other_tenant.org_id)
    mine = await make_pipeline(caller, timeliness_number=5, timeliness_datepart="minute")
    theirs = await make_pipeline(other, timeliness_number=5, timeliness_datepart="minute")
    first = await start(caller, mine, NOW - 30 * MINUTE)
    second = await start(caller, mine, NOW - 20 * MINUTE)
    foreign = await start(other, theirs, NOW - 30 * MINUTE)

    logs = await check_timeliness(organisation_id=tenant.org_id, now=NOW)
    assert sorted(e.run_id for e in logs) == sorted([first.id, second.id])
    page = await list_timeliness_logs(caller=caller)
    assert [e.run_id for e in page.items] == [second.id, first.id]  # newest first
    page = await list_timeliness_logs(caller=caller, first=1)
    assert page.has_next_page and [e.run_id for e in page.items] == [second.id]
    page = await list_timeliness_logs(caller=caller, first=1, after=page.end_cursor)
    assert not page.has_next_page and [e.run_id for e in page.items] == [first.id]
    assert (await list_timeliness_logs(caller=other)).items == []

    assert await check_all(kind=tasks.TIMELINESS, now=NOW) == 1
    assert [e.run_id for e in (await list_timeliness_logs(caller=other)).items] == [foreign.id]
    assert await check_all(kind=tasks.TIMELINESS, now=NOW) == 0
    with pytest.raises(ValueError):
        await check_all(kind="nonsense", now=NOW)


async def test_request_timeliness_validates_and_enqueues(caller, tenant):
    await request_timeliness(caller=caller, raw={"lookback_minutes": 15})
    await request_timeliness(caller=caller, raw={})
    await request_timeliness(caller=caller, raw={"lookback_minutes": None})
    rows = await Task.filter(kind=tasks.TIMELINESS).order_by("id")
    assert [(t.organisation_id, t.payload) for t in rows] == [
        (tenant.org_id, {"lookback_minutes": 15}), (tenant.org_id, {"lookback_minutes": 60}),
        (tenant.org_id, {"lookback_minutes": 60})]

    for bad in (4, 0, -5, "sixty", 60.5, True, [60], "4"):  # lax: "60" is 60, True is 1
        with pytest.raises(InvalidInput) as caught:
            await request_timeliness(caller=caller, raw={"lookback_minutes": bad})
        assert set(caught.value.fields) == {"lookback_minutes"}, bad
    await request_timeliness(caller=caller, raw={"lookback_minutes": 5})  # the minimum
    with pytest.raises(InvalidInput) as caught:
        await request_timeliness(caller=caller, raw=None)  # type: ignore[arg-type]
    assert set(caught.value.fields) == {"body"}
    with pytest.raises(PermissionDenied):
        await request_timeliness(caller=caller_of(tenant.org_id, Scope.READ), raw={})
    await request_timeliness(caller=caller_of(tenant.org_id, Scope.REPORT), raw={})
    assert await Task.filter(kind=tasks.TIMELINESS).count() == 5


async def test_request_freshness_enqueues(caller, tenant):
    await request_freshness(caller=caller)
    task = await Task.get(kind=tasks.FRESHNESS)
    assert task.organisation_id == tenant.org_id and task.payload == {}
    with pytest.raises(PermissionDenied):
        await request_freshness(caller=caller_of(tenant.org_id, Scope.READ))


# --- freshness -----------------------------------------------------------------------------


async def set_targets(pipeline: Pipeline, **moments: datetime | None) -> None:
    await Pipeline.filter(id=pipeline.id).update(
        **{f"last_target_{k}": v for k, v in moments.items()})


async def test_stale_vs_fresh(caller, tenant):
    stale = await make_pipeline(caller, "stale", freshness_number=1, freshness_datepart="day")
    fresh = await make_pipeline(caller, "fresh", freshness_number=1, freshness_datepart="day")
    # The end of a successful execution with inserts sets last_target_insert.
    await end(caller, await start(caller, stale, NOW - 26 * HOUR), NOW - 25 * HOUR, inserts=3)
    await end(caller, await start(caller, fresh, NOW - 24 * HOUR), NOW - 23 * HOUR, updates=1)

    logs = await check_freshness(organisation_id=tenant.org_id, now=NOW)
    assert [(e.pipeline_id, e.last_dml_at, e.deadline_at) for e in logs] == [
        (stale.id, NOW - 25 * HOUR, NOW - HOUR)]
    assert logs[0].organisation_id == tenant.org_id


async def test_due_exactly_now_is_stale(caller, tenant):
    pipeline = await make_pipeline(caller, freshness_number=2, freshness_datepart="hour")
    await set_targets(pipeline, update=NOW - 2 * HOUR)
    logs = await check_freshness(organisation_id=tenant.org_id, now=NOW)
    assert [e.deadline_at for e in logs] == [NOW]
    assert await check_freshness(organisation_id=tenant.org_id, now=NOW - MINUTE) == []


async def test_the_latest_of_the_three_timestamps_counts(caller, tenant):
    pipeline = await make_pipeline(caller, freshness_number=1, freshness_datepart="day")
    await set_targets(pipeline, insert=NOW - 5 * DAY, update=NOW - 3 * DAY,
                      soft_delete=NOW - 2 * HOUR)
    assert await check_freshness(organisation_id=tenant.org_id, now=NOW) == []
    await set_targets(pipeline, insert=NOW - 5 * DAY, update=NOW - 3 * DAY, soft_delete=None)
    logs = await check_freshness(organisation_id=tenant.org_id, now=NOW)
    assert [e.last_dml_at for e in logs] == [NOW - 3 * DAY]
    await set_targets(pipeline, insert=NOW - 30 * HOUR, update=None)
    logs = await check_freshness(organisation_id=tenant.org_id, now=NOW)
    assert [e.last_dml_at for e in logs] == [NOW - 30 * HOUR]


async def test_each_stale_timestamp_is_logged_and_alerted_once(caller, tenant):
    ch = await channel(tenant.org_id)
    pipeline = await make_pipeline(caller, freshness_number=12, freshness_datepart="hour")
    await end(caller, await start(caller, pipeline, NOW - 51 * HOUR), NOW - 50 * HOUR,
              inserts=1)
    assert len(await check_freshness(organisation_id=tenant.org_id, now=NOW)) == 1
    assert await check_freshness(organisation_id=tenant.org_id, now=NOW + HOUR) == []
    assert await alerts_sent(ch, "freshness") == 1

    # New data that went stale in turn: a new finding.
    await end(caller, await start(caller, pipeline, NOW - 21 * HOUR), NOW - 20 * HOUR,
              soft_deletes=2)
    logs = await check_freshness(organisation_id=tenant.org_id, now=NOW)
    assert [e.last_dml_at for e in logs] == [NOW - 20 * HOUR]
    assert await check_freshness(organisation_id=tenant.org_id, now=NOW) == []
    assert await FreshnessLog.filter(pipeline_id=pipeline.id).count() == 2
    assert await alerts_sent(ch, "freshness") == 2
    # A failed end changes nothing: still no new finding.
    await end(caller, await start(caller, pipeline, NOW - 2 * HOUR), NOW - HOUR, ok=False,
              inserts=5)
    assert await check_freshness(organisation_id=tenant.org_id, now=NOW) == []

    page = await list_freshness_logs(caller=caller)
    assert [e.last_dml_at for e in page.items] == [NOW - 20 * HOUR, NOW - 50 * HOUR]


async def test_muted_or_unconfigured_pipelines_are_skipped(caller, tenant):
    await make_type(caller, "muted", freshness_number=1, freshness_datepart="hour",
                    mute_freshness_check=True)
    await make_type(caller, "typed", freshness_number=1, freshness_datepart="hour")
    in_muted_type = await make_pipeline(caller, "in-muted-type", "muted",
                                        freshness_number=1, freshness_datepart="hour")
    muted = await make_pipeline(caller, "muted", freshness_number=1, freshness_datepart="hour")
    await patch_pipeline(caller=caller, raw={"id": muted.id, "mute_freshness_check": True})
    unconfigured = await make_pipeline(caller, "unconfigured", "plain")
    never_loaded = await make_pipeline(caller, "never-loaded", freshness_number=1,
                                       freshness_datepart="hour")
    from_type = await make_pipeline(caller, "from-type", "typed")
    overridden = await make_pipeline(caller, "overridden", "typed", freshness_number=1,
                                     freshness_datepart="week")
    muted_timeliness = await make_pipeline(caller, "muted-timeliness", freshness_number=1,
                                           freshness_datepart="hour")
    await patch_pipeline(caller=caller, raw={"id": muted_timeliness.id,
                                             "mute_timeliness_check": True})
    for p in (in_muted_type, muted, unconfigured, from_type, overridden, muted_timeliness):
        await set_targets(p, insert=NOW - 3 * HOUR)

    logs = await check_freshness(organisation_id=tenant.org_id, now=NOW)
    assert sorted(e.pipeline_id for e in logs) == sorted([from_type.id, muted_timeliness.id])
    assert never_loaded.id not in {e.pipeline_id for e in logs}


async def test_freshness_tenancy_and_schedule(caller, tenant, other_tenant):
    ch = await channel(tenant.org_id)
    other = caller_of(other_tenant.org_id)
    theirs_channel = await channel(other_tenant.org_id)
    mine = await make_pipeline(caller, freshness_number=1, freshness_datepart="hour")
    theirs = await make_pipeline(other, freshness_number=1, freshness_datepart="hour")
    await set_targets(mine, insert=NOW - 2 * HOUR)
    await set_targets(theirs, update=NOW - 3 * HOUR)

    assert [e.pipeline_id for e in await check_freshness(
        organisation_id=tenant.org_id, now=NOW)] == [mine.id]
    assert (await list_freshness_logs(caller=other)).items == []
    assert await check_all(kind=tasks.FRESHNESS, now=NOW) == 1
    assert [e.pipeline_id for e in (await list_freshness_logs(caller=other)).items] == [
        theirs.id]
    assert await check_all(kind="freshness", now=NOW) == 0
    assert await alerts_sent(ch, "freshness") == 1
    assert await alerts_sent(theirs_channel, "freshness") == 1
    with pytest.raises(PermissionDenied):
        await list_freshness_logs(caller=Caller(organisation_id=tenant.org_id,
                                                scopes=frozenset({Scope.REPORT})))


# --- bounded queries -------------------------------------------------------------------------

SQL_LOGGER = "tortoise.db_client"
NOT_STATEMENTS = ("Created connection", "Closed connection")
# a token's last-used stamp (its first use, then at most once a minute): not a screen's cost
LAST_USED = 'UPDATE "service_token" SET "last_used_at"'


async def statements(caplog, check: Any) -> int:
    import logging

    with caplog.at_level(logging.DEBUG, logger=SQL_LOGGER):
        start = len(caplog.records)
        await check()
        records = caplog.records[start:]
    return sum(1 for r in records if r.name == SQL_LOGGER and r.levelno == logging.DEBUG
               and not r.getMessage().startswith(NOT_STATEMENTS)
               and LAST_USED not in r.getMessage())


async def test_one_statement_reads_every_candidate(caller, tenant, caplog):
    async def grow(first: int, count: int) -> None:
        for i in range(first, first + count):
            p = await make_pipeline(caller, f"p{i:03d}", f"type{i % 3}",
                                    timeliness_number=2, timeliness_datepart="hour",
                                    freshness_number=1, freshness_datepart="day")
            await end(caller, await start(caller, p, NOW - 30 * MINUTE), NOW - 10 * MINUTE,
                      inserts=1)  # in time, and fresh
            late = await start(caller, p, NOW - 50 * MINUTE)
            await Pipeline.filter(id=p.id).update(timeliness_number=40,
                                                  timeliness_datepart="minute")
            await TimelinessLog.create(organisation_id=tenant.org_id, pipeline_id=p.id,
                                       run_id=late.id, run_status="running",
                                       deadline_at=NOW)  # late, but already logged

    async def timeliness() -> None:
        assert await check_timeliness(organisation_id=tenant.org_id, now=NOW) == []

    async def freshness() -> None:
        assert await check_freshness(organisation_id=tenant.org_id, now=NOW) == []

    await grow(0, 5)
    small = (await statements(caplog, timeliness), await statements(caplog, freshness))
    await grow(5, 45)
    assert (await statements(caplog, timeliness), await statements(caplog, freshness)) == small
    assert small == (1, 1)
