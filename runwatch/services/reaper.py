"""The stuck-run reaper: open runs never stay open. A run times out (`timed_out`, with the
reason as its error) when

- it is still open at its deadline: its start plus its pipeline's maximum runtime, or the
  deployment's default (`RUNWATCH_ORPHAN_WINDOW_SECONDS`); a warehouse run whose loader never
  reported is the same case (an orphan), or
- it was claimed by a gateway whose heartbeats stopped for longer than the lease
  (`RUNWATCH_GATEWAY_LEASE_SECONDS`).

The run's `finished_at` is the moment it became stuck (its deadline, or the gateway's last
heartbeat plus the lease), so the result does not depend on when the reaper happened to run.
Safe with any number of workers: a pass claims a batch with `SELECT ... FOR UPDATE SKIP LOCKED`
on PostgreSQL, and each run moves through a conditional UPDATE and `lifecycle.on_terminal`,
so only one process times it out, adds it to the roll-ups and enqueues its webhook.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q

from runwatch.models import OPEN_STATUSES, Gateway, Run, RunStatus
from runwatch.resolvers import lifecycle
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.runs import clean_error
from runwatch.resolvers.telemetry import orphan_message

BATCH = 500


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


async def _time_out(
    conn: BaseDBAsyncClient, effects: lifecycle.Effects, run: Run, *, finished_at: datetime,
    reason: str, now: datetime,
) -> bool:
    """Time one claimed run out; False when another process got there first. The run is
    locked in the status it was read in (FOR UPDATE on PostgreSQL; SQLite serialises
    transactions), so the move starts from that status."""
    error = reason if not run.error else (
        clean_error(f"{reason}. Last reported error: {run.error}") or reason)
    return await lifecycle.time_out(
        conn, effects, run_id=run.id, organisation_id=run.organisation_id,  # type: ignore[attr-defined]
        finished_at=finished_at, error=error, now=now,
        from_status=RunStatus(run.status)) is not None


async def _past_deadline(now: datetime, batch: int) -> list[int]:
    reaped: list[int] = []
    while True:
        async with lifecycle.transaction() as (conn, effects):
            # Claim a batch: on PostgreSQL other workers skip these rows instead of waiting
            # for them (SQLite serialises transactions, so there is nothing to skip). A model
            # query, not `.values()`: the ORM leaves FOR UPDATE out of values queries.
            candidates = await (
                Run.filter(status__in=OPEN_STATUSES, deadline_at__lt=now)
                .order_by("deadline_at").limit(batch)
                .select_for_update(skip_locked=True)
                .only("id", "organisation_id", "pipeline_id", "status", "started_at",
                      "deadline_at", "error")
                .using_db(conn)
            )
            # Pipeline order: every transaction takes its roll-up rows in the same order, so
            # two passes (or a pass and a report) cannot deadlock on them.
            for run in sorted(candidates, key=lambda r: (r.pipeline_id, r.id)):  # type: ignore[attr-defined]
                started_at, deadline = run.started_at, run.deadline_at
                if await _time_out(conn, effects, run, finished_at=deadline, now=now,
                                   reason=orphan_message(started_at, deadline - started_at)):
                    reaped.append(run.id)
        if len(candidates) < batch:
            return reaped


async def _silent_gateways(now: datetime, lease: timedelta, batch: int) -> list[int]:
    silent_since = Q(last_seen_at=None) | Q(last_seen_at__lt=now - lease)
    silent = await Gateway.filter(
        silent_since, claimed_runs__status=RunStatus.RUNNING,
    ).distinct().values_list("id", flat=True)
    reaped = []
    for gateway_id in silent:
        while True:
            async with lifecycle.transaction() as (conn, effects):
                # Lock the gateway while its runs time out, and check its silence again: a
                # gateway that came back since the query above (a heartbeat, a new claim)
                # keeps its runs, the one it just claimed included; its heartbeats wait for
                # this transaction. Another worker holding it has its runs in hand.
                gateway = await (
                    Gateway.filter(silent_since, id=gateway_id)
                    .select_for_update(skip_locked=True)
                    .only("id", "name", "last_seen_at")
                    .using_db(conn).first()
                )
                if gateway is None:
                    break
                candidates = await (
                    Run.filter(gateway_id=gateway_id, status=RunStatus.RUNNING)
                    .order_by("id").limit(batch)
                    .select_for_update(skip_locked=True)
                    .only("id", "organisation_id", "status", "started_at", "error")
                    .using_db(conn)
                )
                seen = gateway.last_seen_at
                for run in candidates:
                    finished_at = max(run.started_at, (seen or run.started_at) + lease)
                    reason = (
                        f"gateway {gateway.name!r} stopped heartbeating (last seen at "
                        f"{iso(seen) if seen else 'never'}); timed out after a lease of "
                        f"{_span(lease)}")
                    if await _time_out(conn, effects, run, finished_at=finished_at,
                                       reason=reason, now=now):
                        reaped.append(run.id)
            if len(candidates) < batch:
                break
    return reaped


async def reap_stuck_runs(
    *, now: datetime | None = None, gateway_lease: timedelta = timedelta(seconds=120),
    batch: int = BATCH,
) -> int:
    """Time out every stuck run (in batches); returns how many this call timed out."""
    now = now or utcnow()
    reaped = await _past_deadline(now, batch) + await _silent_gateways(now, gateway_lease, batch)
    return len(reaped)
