"""Background tasks: rows with a due time, claimed by workers, retried, scheduled; queue
monitoring and its thresholds."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import asyncpg

from runwatch.models import AlertChannel, ChannelKind, Task, TaskStatus, WebhookDelivery
from runwatch.resolvers import dbfaults
from runwatch.resolvers import tasks as tasks_api
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.tasks import monitor_queue, queue_level
from runwatch.services import tasks as runner_module
from runwatch.services.tasks import MAX_ATTEMPTS, TaskRunner, claim


async def test_claims_are_exclusive_and_expire(tenant):
    for _ in range(5):
        await tasks_api.enqueue(kind="nothing", organisation_id=tenant.org_id)
    now = utcnow()
    first, second = await asyncio.gather(claim(3, now), claim(3, now))
    ids = [t.id for t in first] + [t.id for t in second]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 5
    assert await claim(10, now) == []  # all held
    later = await claim(10, now + runner_module.HOLD + timedelta(seconds=1))
    assert len(later) == 5  # a dead worker's claims expire


async def test_a_failing_task_is_retried_then_failed(settings, tenant):
    runner = TaskRunner(settings)
    task = await tasks_api.enqueue(kind="no-such-kind", organisation_id=tenant.org_id)
    now = utcnow()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert await runner.run_due(now=now) == 1
        row = await Task.get(id=task.id)
        assert row.attempts == attempt and "unknown task kind" in row.last_error
        now = row.due_at + timedelta(seconds=1)
    assert row.status == TaskStatus.FAILED and row.finished_at is not None
    assert await runner.run_due(now=now + timedelta(days=1)) == 0


async def test_a_task_the_database_failed_is_given_back_without_an_attempt(
    settings, tenant, monkeypatch
):
    monkeypatch.setattr(dbfaults, "RETRY_DELAY", 0.01)
    runner = TaskRunner(settings)
    task = await tasks_api.enqueue(kind="anything", organisation_id=tenant.org_id)
    handled = []

    async def lost(claimed):
        handled.append(claimed.id)
        raise asyncpg.ConnectionDoesNotExistError("connection was closed mid-operation")

    monkeypatch.setattr(runner, "handle", lost)
    before = utcnow()
    assert await runner.run_due() == 1
    row = await Task.get(id=task.id)
    assert handled == [task.id]
    assert row.status == TaskStatus.PENDING and row.claim is None and row.attempts == 0
    assert row.last_error is None
    # due again after the short pause, not after the 5-minute hold or a counted retry's backoff
    assert before + runner_module.UNAVAILABLE_DELAY <= row.due_at
    assert row.due_at <= utcnow() + runner_module.UNAVAILABLE_DELAY
    assert await runner.run_due() == 0
    assert await runner.run_due(now=row.due_at + timedelta(milliseconds=1)) == 1
    assert handled == [task.id, task.id]


async def test_schedules_are_one_row_each_and_come_back(settings, tenant):
    runner = TaskRunner(replace(settings, check_interval_seconds=0,
                                queue_monitor_interval_seconds=60))
    await asyncio.gather(runner.ensure_schedules(), runner.ensure_schedules())
    rows = await Task.filter(key__not_isnull=True)
    assert [r.key for r in rows] == [runner_module.SCHEDULE_QUEUE]
    now = utcnow()
    assert await runner.run_due(now=now + timedelta(seconds=1)) == 1
    row = await Task.get(key=runner_module.SCHEDULE_QUEUE)
    assert row.status == TaskStatus.PENDING and row.due_at > now + timedelta(seconds=50)
    assert row.last_error is None and row.attempts == 1


async def test_queue_levels():
    assert queue_level(49) is None
    assert queue_level(50) == "warning"
    assert queue_level(99) == "warning"
    assert queue_level(100) == "critical"


async def test_queue_monitor_counts_pending_work_by_kind_and_alerts(tenant, other_tenant):
    channel = await AlertChannel.create(organisation_id=tenant.org_id, name="ops",
                                        kind=ChannelKind.SLACK, url="http://127.0.0.1:9/x")
    for _ in range(30):
        await tasks_api.enqueue(kind=tasks_api.FRESHNESS, organisation_id=tenant.org_id)
    quiet = await monitor_queue(alert_organisation_id=tenant.org_id)
    assert quiet == {"pending": {tasks_api.FRESHNESS: 30}, "total": 30, "level": None}
    assert await WebhookDelivery.filter(channel_id=channel.id).count() == 0

    for _ in range(25):
        await tasks_api.enqueue(kind=tasks_api.TIMELINESS, organisation_id=tenant.org_id)
    warning = await monitor_queue(alert_organisation_id=tenant.org_id)
    assert warning["level"] == "warning" and warning["total"] == 55
    delivery = await WebhookDelivery.get(channel_id=channel.id)
    assert delivery.event_type == "alert.queue_depth"
    assert "WARNING" in delivery.payload["text"] and "55" in delivery.payload["text"]

    for _ in range(50):
        await tasks_api.enqueue(kind=tasks_api.TIMELINESS, organisation_id=tenant.org_id)
    critical = await monitor_queue()  # the schedule: every organisation with channels
    assert critical["level"] == "critical"
    texts = [d.payload["text"] for d in await WebhookDelivery.filter(channel_id=channel.id)]
    assert any("CRITICAL" in t for t in texts)
    # other organisations without channels get nothing; schedules are not backlog
    assert await WebhookDelivery.filter(organisation_id=other_tenant.org_id).count() == 0
