"""The stuck-run reaper: runs started and never completed within the orphan window become
`timed_out`, and count as failures in the roll-ups.

Safe with any number of workers: a pass claims a batch with `SELECT ... FOR UPDATE SKIP LOCKED`
on PostgreSQL, and each run still moves through a conditional UPDATE, so only one process can
time it out and add it to the roll-ups.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from runwatch.models import OPEN_STATUSES, Run, RunStatus
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.rollups import Outcome, record_outcome
from runwatch.resolvers.telemetry import orphan_message

BATCH = 500


async def reap_orphaned_runs(
    *, orphan_window: timedelta, now: datetime | None = None, batch: int = BATCH
) -> int:
    """Time out every run past the window (in batches); returns how many this call reaped.

    The run's `finished_at` is its deadline (start + window), the moment it became orphaned, so
    the result does not depend on when the reaper happened to run.
    """
    now = now or utcnow()
    reaped = 0
    while True:
        async with in_transaction() as conn:
            # Claim a batch: on PostgreSQL other workers skip these rows instead of waiting for
            # them (SQLite serialises transactions, so there is nothing to skip).
            candidates = await (
                Run.filter(status__in=OPEN_STATUSES, started_at__lt=now - orphan_window)
                .order_by("started_at")
                .limit(batch)
                .select_for_update(skip_locked=True)
                .values("id", "pipeline_id", "started_at")
            )
            for row in candidates:
                deadline = row["started_at"] + orphan_window
                changed = await Run.filter(id=row["id"], status__in=OPEN_STATUSES).update(
                    status=RunStatus.TIMED_OUT,
                    finished_at=deadline,
                    error=orphan_message(row["started_at"], orphan_window),
                    updated_at=now,
                )
                if changed:
                    await record_outcome(conn, Outcome(
                        pipeline_id=row["pipeline_id"],
                        status=RunStatus.TIMED_OUT,
                        finished_at=deadline,
                    ))
                    reaped += changed
        if len(candidates) < batch:
            return reaped
