"""Telemetry: rolling 24 h / 7 d windows, status and recent errors.

Reads a fixed number of queries for any number of connections or pipelines, and never scans run
history: full hours come from `pipeline_hourly_stats`; the partial hour at each window's start
comes from the runs that finished in it (an index range); orphaned runs the reaper has not
turned into `timed_out` yet, and the newest errors, come from index ranges too.

Status rule (also in the README), evaluated in order:

1. `error`: the last `error_streak` (default 3) outcomes of a pipeline all failed, or runs
   failed in the last 24 h and none succeeded ("not delivering").
2. `degraded`: some runs failed in the last 24 h, but not every recent one ("catching up").
3. `idle`: nothing was delivered in the last 24 h (also: never ran).
4. `active`: events were delivered in the last 24 h and nothing failed.

A run *failed* when it reported an error, sent batches to the dead-letter queue, or was
orphaned (started, never completed within the orphan window).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from runwatch.models import Connection, Pipeline, RunStatus
from runwatch.resolvers import sql
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.errors import NotFound
from runwatch.resolvers.rollups import floor_hour, utcnow

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
TERMINAL = tuple(s.value for s in (
    RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT))
FAILED = (RunStatus.FAILED.value, RunStatus.TIMED_OUT.value)
OPEN = (RunStatus.PENDING.value, RunStatus.RUNNING.value)


class Status:
    ACTIVE = "active"
    DEGRADED = "degraded"
    ERROR = "error"
    IDLE = "idle"


@dataclass
class EventCounts:
    evaluations: int = 0
    custom_events: int = 0
    total: int = 0

    def add(self, total: int, evaluations: int, custom: int) -> None:
        self.total += int(total or 0)
        self.evaluations += int(evaluations or 0)
        self.custom_events += int(custom or 0)


@dataclass(frozen=True)
class RecentError:
    occurred_at: datetime
    message: str
    run_id: int
    pipeline_id: int


@dataclass
class Telemetry:
    status: str = Status.IDLE
    status_reason: str = "no runs reported in the last 7 days"
    last_delivery_at: datetime | None = None
    events_last_24h: EventCounts = field(default_factory=EventCounts)
    events_last_7d: EventCounts = field(default_factory=EventCounts)
    failed_deliveries_last_24h: int = 0
    succeeded_runs_last_24h: int = 0
    dlq_batches_last_24h: int = 0
    recent_errors: list[RecentError] = field(default_factory=list)
    # internal, for the status rule
    streak: int = 0
    ever_ran: bool = False


@dataclass(frozen=True)
class TelemetryOptions:
    orphan_window: timedelta = timedelta(hours=2)
    error_streak: int = 3
    recent_errors_limit: int = 10


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + timedelta(hours=1)


def _error_message(row: dict) -> str:
    if row.get("error"):
        return str(row["error"])
    if row.get("dlq_batches"):
        n = int(row["dlq_batches"])
        return f"{n} batch{'es' if n != 1 else ''} sent to the dead-letter queue"
    return f"run {row['id']} failed"


def orphan_message(started_at: datetime, window: timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    span = f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
    return (
        f"loader did not report: run started at {started_at.isoformat()} and was not completed "
        f"within {span} (orphaned)"
    )


async def telemetry_for(
    groups: dict[Hashable, Sequence[Pipeline]], *, now: datetime, options: TelemetryOptions
) -> dict[Hashable, Telemetry]:
    """Telemetry for each group of pipelines (a connection's pipelines, or one pipeline)."""
    result = {key: Telemetry() for key in groups}
    owner: dict[int, list[Hashable]] = {}
    for key, pipelines in groups.items():
        for pipeline in pipelines:
            owner.setdefault(pipeline.id, []).append(key)
            t = result[key]
            t.streak = max(t.streak, pipeline.consecutive_failures)
            if pipeline.last_delivery_at and (
                t.last_delivery_at is None or pipeline.last_delivery_at > t.last_delivery_at
            ):
                t.last_delivery_at = pipeline.last_delivery_at
    ids = sorted(owner)
    if not ids:
        return result

    def each(pipeline_id: int):
        return (result[key] for key in owner.get(int(pipeline_id), ()))

    b24, b7 = now - DAY, now - WEEK
    s24, s7 = ceil_hour(b24), ceil_hour(b7)
    marks = sql.placeholders(len(ids))

    # 1. Whole hours of both windows from the roll-up.
    for row in await sql.fetch(
        f"""
        SELECT pipeline_id,
          SUM(events_total) AS e7, SUM(events_evaluations) AS v7, SUM(events_custom) AS c7,
          SUM(CASE WHEN hour >= ? THEN events_total ELSE 0 END) AS e24,
          SUM(CASE WHEN hour >= ? THEN events_evaluations ELSE 0 END) AS v24,
          SUM(CASE WHEN hour >= ? THEN events_custom ELSE 0 END) AS c24,
          SUM(CASE WHEN hour >= ? THEN runs_failed ELSE 0 END) AS f24,
          SUM(CASE WHEN hour >= ? THEN runs_succeeded ELSE 0 END) AS s24,
          SUM(CASE WHEN hour >= ? THEN dlq_batches ELSE 0 END) AS d24,
          SUM(runs_failed + runs_succeeded) AS n7
        FROM pipeline_hourly_stats
        WHERE pipeline_id IN ({marks}) AND hour >= ?
        GROUP BY pipeline_id
        """,
        [s24] * 6 + ids + [s7],
    ):
        for t in each(row["pipeline_id"]):
            t.events_last_7d.add(row["e7"], row["v7"], row["c7"])
            t.events_last_24h.add(row["e24"], row["v24"], row["c24"])
            t.failed_deliveries_last_24h += int(row["f24"] or 0)
            t.succeeded_runs_last_24h += int(row["s24"] or 0)
            t.dlq_batches_last_24h += int(row["d24"] or 0)
            t.ever_ran = t.ever_ran or bool(row["n7"])

    # 2. The partial hour at the start of each window, from the runs finished in it.
    if b24 < s24 or b7 < s7:
        for row in await sql.fetch(
            f"""
            SELECT pipeline_id, finished_at, status, events_delivered, events_evaluations,
                   events_custom, dlq_batches
            FROM run
            WHERE pipeline_id IN ({marks}) AND status IN ({sql.placeholders(len(TERMINAL))})
              AND ((finished_at >= ? AND finished_at < ?) OR (finished_at >= ? AND finished_at < ?))
            """,
            [*ids, *TERMINAL, b24, s24, b7, s7],
        ):
            finished_at = sql.as_datetime(row["finished_at"])
            for t in each(row["pipeline_id"]):
                counts = (row["events_delivered"], row["events_evaluations"], row["events_custom"])
                t.ever_ran = True
                if b7 <= finished_at < s7:
                    t.events_last_7d.add(*counts)
                if b24 <= finished_at < s24:
                    t.events_last_24h.add(*counts)
                    t.dlq_batches_last_24h += int(row["dlq_batches"] or 0)
                    if row["status"] in FAILED:
                        t.failed_deliveries_last_24h += 1
                    elif row["status"] == RunStatus.SUCCEEDED.value:
                        t.succeeded_runs_last_24h += 1

    # 3. Orphans the reaper has not timed out yet: open runs past the window.
    window = options.orphan_window
    errors: dict[Hashable, list[RecentError]] = {key: [] for key in groups}
    for row in await sql.fetch(
        f"""
        SELECT id, pipeline_id, started_at FROM run
        WHERE pipeline_id IN ({marks}) AND status IN (?, ?) AND started_at < ? AND started_at >= ?
        ORDER BY started_at DESC
        """,
        [*ids, *OPEN, now - window, b7 - window],
    ):
        started_at = sql.as_datetime(row["started_at"])
        deadline = started_at + window
        for key in owner[int(row["pipeline_id"])]:
            t = result[key]
            t.ever_ran = True
            t.streak += 1
            if deadline >= b24:
                t.failed_deliveries_last_24h += 1
            errors[key].append(RecentError(
                occurred_at=deadline,
                message=orphan_message(started_at, window),
                run_id=int(row["id"]),
                pipeline_id=int(row["pipeline_id"]),
            ))

    # 4. The newest failed runs of the last 7 days, per pipeline.
    limit = options.recent_errors_limit
    for row in await sql.fetch(
        f"""
        SELECT id, pipeline_id, finished_at, error, dlq_batches FROM (
          SELECT id, pipeline_id, finished_at, error, dlq_batches,
                 ROW_NUMBER() OVER (PARTITION BY pipeline_id ORDER BY finished_at DESC, id DESC)
                   AS position
          FROM run
          WHERE pipeline_id IN ({marks}) AND status IN (?, ?) AND finished_at >= ?
        ) ranked WHERE position <= ?
        """,
        [*ids, *FAILED, b7, limit],
    ):
        for key in owner[int(row["pipeline_id"])]:
            errors[key].append(RecentError(
                occurred_at=sql.as_datetime(row["finished_at"]),
                message=_error_message(row),
                run_id=int(row["id"]),
                pipeline_id=int(row["pipeline_id"]),
            ))

    for key, t in result.items():
        t.recent_errors = sorted(
            errors[key], key=lambda e: (e.occurred_at, e.run_id), reverse=True
        )[:limit]
        t.status, t.status_reason = decide_status(t, options)
    return result


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def decide_status(t: Telemetry, options: TelemetryOptions) -> tuple[str, str]:
    """The documented status rule; returns (status, human-readable reason)."""
    failed, succeeded = t.failed_deliveries_last_24h, t.succeeded_runs_last_24h
    latest = f" (latest: {t.recent_errors[0].message})" if t.recent_errors else ""
    if t.streak >= options.error_streak:
        return Status.ERROR, f"the last {_plural(t.streak, 'run')} all failed{latest}"
    if failed and not succeeded:
        return Status.ERROR, (
            f"not delivering: {_plural(failed, 'run')} failed in the last 24 hours "
            f"and none succeeded{latest}"
        )
    if failed:
        latest_outcome = (
            "the latest run succeeded" if t.streak == 0
            else f"the latest {_plural(t.streak, 'run')} failed"
        )
        return Status.DEGRADED, (
            f"{_plural(failed, 'failed run')} and {_plural(succeeded, 'successful run')} "
            f"in the last 24 hours; {latest_outcome}{latest}"
        )
    if t.events_last_24h.total == 0:
        if not t.ever_ran and t.last_delivery_at is None:
            return Status.IDLE, "no runs reported in the last 7 days"
        return Status.IDLE, "no events delivered in the last 24 hours"
    return Status.ACTIVE, (
        f"{t.events_last_24h.total:,} events delivered in the last 24 hours, no failures"
    )


async def telemetry_of_connections(
    *, caller: Caller, connection_ids: Sequence[int], options: TelemetryOptions,
    now: datetime | None = None,
) -> dict[int, Telemetry]:
    """Telemetry per connection of the caller's organisation; foreign ids are left out."""

    caller.require(Scope.READ)
    pipelines = await Pipeline.filter(
        organisation_id=caller.organisation_id, connection_id__in=list(connection_ids)
    )
    groups: dict[Hashable, list[Pipeline]] = {}
    for pipeline in pipelines:
        groups.setdefault(pipeline.connection_id, []).append(pipeline)  # type: ignore[attr-defined]
    missing = [cid for cid in connection_ids if cid not in groups]
    if missing:  # a connection without pipelines still has (empty) telemetry
        for cid in await Connection.filter(
            organisation_id=caller.organisation_id, id__in=missing
        ).values_list("id", flat=True):
            groups[cid] = []
    return await telemetry_for(groups, now=now or utcnow(), options=options)  # type: ignore[return-value]


async def telemetry_of_pipelines(
    *, caller: Caller, pipelines: Sequence[Pipeline], options: TelemetryOptions,
    now: datetime | None = None,
) -> dict[int, Telemetry]:
    """Telemetry per pipeline; the pipelines were already loaded for this caller."""

    caller.require(Scope.READ)
    groups: dict[Hashable, list[Pipeline]] = {
        p.id: [p] for p in pipelines if p.organisation_id == caller.organisation_id  # type: ignore[attr-defined]
    }
    return await telemetry_for(groups, now=now or utcnow(), options=options)  # type: ignore[return-value]


async def connection_telemetry(
    *, caller: Caller, connection_id: int, options: TelemetryOptions, now: datetime | None = None
) -> Telemetry:

    found = await telemetry_of_connections(
        caller=caller, connection_ids=[connection_id], options=options, now=now
    )
    if connection_id not in found:
        raise NotFound("connection", connection_id)
    return found[connection_id]
