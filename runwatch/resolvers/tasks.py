"""Background tasks: rows with a due time (`runwatch.models.Task`), claimed through
`queue.claim_due` and run by `runwatch/services/tasks.py`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from runwatch.models import DeliveryStatus as DeliveryState
from runwatch.models import Task, TaskStatus, WebhookDelivery
from runwatch.resolvers import alerts, signals, sql
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import utcnow

ANOMALY = "anomaly_detection"
TIMELINESS = "timeliness_check"
FRESHNESS = "freshness_check"


async def enqueue(
    *, kind: str, organisation_id: int | None, payload: dict[str, Any] | None = None,
    due_at: datetime | None = None, conn: BaseDBAsyncClient | None = None,
) -> Task:
    task = await Task.create(organisation_id=organisation_id, kind=kind, payload=payload or {},
                             status=TaskStatus.PENDING, due_at=due_at or utcnow(),
                             using_db=conn)
    signals.work_enqueued()
    return task


# The payload is a parameter (one prepared statement for every run); PostgreSQL needs to be
# told it is JSON, because INSERT ... SELECT does not type parameters from the columns.
_ANOMALY_IF_RULES = """
INSERT INTO task (organisation_id, kind, payload, status, due_at, attempts, created_at)
SELECT ?, ?, {payload}, ?, ?, 0, ?
WHERE EXISTS (SELECT 1 FROM anomaly_rule WHERE pipeline_id = ? AND active = ?)
"""


async def enqueue_anomaly_detection(
    conn: BaseDBAsyncClient, *, organisation_id: int, pipeline_id: int, run_id: int
) -> bool:
    """After a successful run: a detection task, only if its pipeline has an active rule (one
    statement either way)."""
    now = utcnow()
    payload = "CAST(? AS JSONB)" if sql.is_postgres(conn) else "?"
    inserted = await sql.execute(
        _ANOMALY_IF_RULES.format(payload=payload),
        [organisation_id, ANOMALY, sql.json_param({"run_id": int(run_id)}),
         TaskStatus.PENDING.value, now, now, pipeline_id, True], conn)
    return bool(inserted)


async def ensure_schedule(key: str, kind: str, due_at: datetime) -> None:
    """The one row of a recurring schedule (created once, whichever worker gets there)."""
    await sql.execute(
        "INSERT INTO task (kind, key, payload, status, due_at, attempts, created_at) "
        "VALUES (?, ?, '{}', ?, ?, 0, ?) ON CONFLICT (key) DO NOTHING",
        [kind, key, TaskStatus.PENDING.value, due_at, utcnow()])


async def pending_work() -> dict[str, int]:
    """Background work waiting, by kind (tasks by their kind, webhook deliveries as
    `webhook_delivery`); recurring schedules are not backlog and are left out."""
    rows = await sql.fetch(
        "SELECT kind, COUNT(*) AS n FROM task WHERE status = ? AND key IS NULL GROUP BY kind",
        [TaskStatus.PENDING.value])
    counts = {str(r["kind"]): int(r["n"]) for r in rows}
    deliveries = await WebhookDelivery.filter(status=DeliveryState.PENDING).count()
    if deliveries:
        counts["webhook_delivery"] = deliveries
    return counts


QUEUE_WARNING, QUEUE_CRITICAL = 50, 100


def queue_level(pending: int) -> str | None:
    if pending >= QUEUE_CRITICAL:
        return "critical"
    if pending >= QUEUE_WARNING:
        return "warning"
    return None


async def monitor_queue(*, alert_organisation_id: int | None = None) -> dict[str, Any]:
    """Pending background work by kind, and its level (WARNING at 50, CRITICAL at 100).
    Over a threshold, an alert goes to the channels of `alert_organisation_id` (the caller of
    the API route), or of every organisation that has channels (the schedule)."""
    pending = await pending_work()
    total = sum(pending.values())
    level = queue_level(total)
    if level:
        by_kind = ", ".join(f"{k}: {v}" for k, v in sorted(pending.items()))
        orgs = [alert_organisation_id] if alert_organisation_id is not None else [
            int(r["organisation_id"]) for r in await sql.fetch(
                "SELECT DISTINCT organisation_id FROM alert_channel WHERE enabled = ?", [True])]
        for org in orgs:
            await alerts.enqueue_alert(
                None, organisation_id=org, alert="queue_depth", severity=level,
                title=f"{total} background tasks pending",
                message=f"{level.upper()}: {total} pending ({by_kind}); thresholds "
                        f"{QUEUE_WARNING} / {QUEUE_CRITICAL}",
                details={"pending": pending, "total": total, "level": level})
    return {"pending": pending, "total": total, "level": level}


async def check_queue(*, caller: Caller) -> dict[str, Any]:
    """The queue monitor on request (Watcher's `POST /celery/monitor-queue`): over a
    threshold, the caller's organisation's channels are alerted."""
    caller.require_any(Scope.REPORT, Scope.WRITE)
    return await monitor_queue(alert_organisation_id=caller.organisation_id)
