"""Runs: starting them, reporting their outcome, reading them back.

One state machine for every surface: `pending -> running -> succeeded | failed | cancelled |
timed_out`. A terminal run never changes again; replaying the report that made it terminal is a
no-op, a different report is a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from runwatch.models import INT32_MAX, Pipeline, Run, RunStatus
from runwatch.resolvers import inputs, lifecycle
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import SECOND, floor_second, to_utc, utcnow
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.lifecycle import DEFAULT_MAX_RUNTIME
from runwatch.resolvers.pagination import Page, paginate
from runwatch.resolvers.scrub import clean_text

# Largest count one run may report. Far beyond any real run (a trillion events), and small
# enough that the roll-ups' 64-bit sums cannot overflow and stay exact in JSON clients
# (JavaScript numbers are exact up to 2**53).
MAX_COUNT = 10**12
# A run's error as stored, whoever reports it (`clean_error`).
MAX_ERROR_CHARS = 8000


@dataclass(frozen=True)
class RunReport:
    """What a loader reports when a run completes."""

    completed_at: datetime
    events_delivered: int
    batches_dlq: int = 0
    error: str | None = None
    evaluations: int | None = None
    custom_events: int | None = None

    @property
    def status(self) -> RunStatus:
        return RunStatus.FAILED if self.error or self.batches_dlq > 0 else RunStatus.SUCCEEDED


def clean_error(text: str | None) -> str | None:
    """A run's error as it is stored, on every path that writes one (the warehouse report,
    an ELT or GraphQL `errorSummary`, an OpenLineage `errorMessage`, the reaper): secrets
    scrubbed, NUL (which PostgreSQL cannot store) made U+FFFD, over `MAX_ERROR_CHARS`
    truncated with a visible marker rather than refused; blank is None."""
    if not text:
        return None
    return clean_text(text, MAX_ERROR_CHARS).strip() or None


def _check_count(errors: dict[str, list[str]], name: str, value: int | None, maximum: int) -> None:
    if value is None:
        return
    if value < 0:
        errors.setdefault(name, []).append("Ensure this value is greater than or equal to 0.")
    elif value > maximum:
        errors.setdefault(name, []).append(f"Ensure this value is less than or equal to {maximum}.")


def completes_before(started_at: datetime, completed_at: datetime) -> bool:
    """A run cannot complete before it started, compared to the second: a loader that reports
    whole seconds (as the contract's example does) may complete a quick run "before" a start
    stamped with microseconds."""
    return floor_second(started_at) > completed_at


def check_started(report: RunReport, started_at: datetime | None) -> None:
    if started_at is not None and completes_before(started_at, report.completed_at):
        raise InvalidInput.one(
            "completed_at",
            f"The run started at {started_at.isoformat()}; it cannot complete before that.",
        )


def normalise_report(report: RunReport) -> RunReport:
    """Validate a report on its own; returns the report as it will be stored. (A completion
    in the future is the lifecycle's clock rule, checked by the move.)"""
    errors: dict[str, list[str]] = {}
    _check_count(errors, "events_delivered", report.events_delivered, MAX_COUNT)
    _check_count(errors, "batches_dlq", report.batches_dlq, INT32_MAX)
    _check_count(errors, "evaluations", report.evaluations, MAX_COUNT)
    _check_count(errors, "custom_events", report.custom_events, MAX_COUNT)
    completed_at = to_utc(report.completed_at, "completed_at")
    if not errors and (report.evaluations is not None or report.custom_events is not None):
        typed = (report.evaluations or 0) + (report.custom_events or 0)
        if typed > report.events_delivered:
            errors["events_delivered"] = [
                f"evaluations + custom_events ({typed}) exceed events_delivered "
                f"({report.events_delivered}); per-type counts must add up to at most the total."
            ]
    if errors:
        raise InvalidInput(errors)
    error = clean_error(report.error)
    return RunReport(
        completed_at=completed_at,
        events_delivered=report.events_delivered,
        batches_dlq=report.batches_dlq,
        error=error,
        evaluations=report.evaluations,
        custom_events=report.custom_events,
    )


def _stored_report(run: Run) -> RunReport:
    return RunReport(
        completed_at=run.finished_at,  # type: ignore[arg-type]
        events_delivered=run.events_delivered or 0,
        batches_dlq=run.dlq_batches or 0,
        error=run.error,
        evaluations=run.events_evaluations,
        custom_events=run.events_custom,
    )


def _same_report(run: Run, report: RunReport) -> bool:
    if run.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED) or run.finished_at is None:
        return False
    stored = _stored_report(run)
    return all(getattr(stored, f.name) == getattr(report, f.name) for f in fields(RunReport))


async def _find_run(caller: Caller, run_id: int, connection_id: int | None) -> Run:
    query = Run.filter(id=run_id, organisation_id=caller.organisation_id)
    if connection_id is not None:
        query = query.filter(pipeline__connection_id=connection_id)
    run = await query.first()
    if run is None:
        raise NotFound("run", run_id)
    return run


def _completion(report: RunReport) -> dict[str, object]:
    return {
        "finished_at": report.completed_at, "events_delivered": report.events_delivered,
        "events_evaluations": report.evaluations, "events_custom": report.custom_events,
        "dlq_batches": report.batches_dlq, "error": report.error,
    }


_OF_CONNECTION = " AND pipeline_id IN (SELECT id FROM pipeline WHERE connection_id = ?)"
# started_at < the next whole second after completion: `completes_before`, in SQL
_STARTED_BEFORE = " AND (started_at IS NULL OR started_at < ?)"


async def report_run(
    *, caller: Caller, run_id: int, report: RunReport, connection_id: int | None = None,
    now: datetime | None = None,
) -> tuple[Run, bool]:
    """Record a run's completion. Returns the run and whether this call changed it.

    Idempotent: the identical report again returns (run, False); a different report for a
    completed run raises Conflict. Concurrent reports race on the lifecycle's one
    conditional UPDATE, so exactly one of them changes the run and adds to the roll-ups.
    Only when that UPDATE changes nothing is the run read, to say why.
    """
    caller.require_scope(Scope.REPORT)
    now = now or utcnow()
    report = normalise_report(report)
    where = _STARTED_BEFORE + (_OF_CONNECTION if connection_id is not None else "")
    params: list[object] = [floor_second(report.completed_at) + SECOND]
    if connection_id is not None:
        params.append(connection_id)
    async with lifecycle.transaction() as (conn, effects):
        completed = await lifecycle.move(
            conn, effects, run_id=run_id, organisation_id=caller.organisation_id,
            target=report.status, columns=_completion(report),
            from_statuses=(RunStatus.RUNNING,), caller=caller, now=now,
            where=where, params=params, clock_field="completed_at")
    if completed is not None:
        return completed, True
    run = await _find_run(caller, run_id, connection_id)
    check_started(report, run.started_at)
    if _same_report(run, report):
        return run, False
    raise lifecycle.refusal(caller, run, report.status)


async def start_run(
    *, caller: Caller, connection_id: int | None = None, pipeline_id: int | None = None,
    started_at: datetime | None = None, now: datetime | None = None,
    default_max_runtime: timedelta = DEFAULT_MAX_RUNTIME,
) -> Run:
    """Pre-create a running run (what the recurring task does before invoking the loader).
    It times out at its deadline: the start plus the pipeline's maximum runtime, or
    `default_max_runtime` (the deployment's orphan window)."""
    caller.require_scope(Scope.REPORT)
    if (connection_id is None) == (pipeline_id is None):
        raise InvalidInput.one("connection_id", "Give exactly one of a connection or a pipeline.")
    now = now or utcnow()
    started_at = to_utc(started_at, "started_at") if started_at else now
    query = Pipeline.filter(organisation_id=caller.organisation_id)
    if pipeline_id is not None:
        query = query.filter(id=pipeline_id)
    if connection_id is not None:
        query = query.filter(connection_id=connection_id, kind="delivery")
    pipeline = await query.order_by("id").first()
    if pipeline is None:
        kind, ident = ("pipeline", pipeline_id) if pipeline_id is not None else (
            "connection", connection_id)
        raise NotFound(kind, ident)
    async with lifecycle.transaction() as (conn, effects):
        run = await lifecycle.open_run(
            conn, effects, caller=caller, pipeline=pipeline, status=RunStatus.RUNNING,
            started_at=started_at, default_max_runtime=default_max_runtime, now=now)
    return run


async def get_run(*, caller: Caller, run_id: int) -> Run:
    caller.require_scope(Scope.READ)
    return await _find_run(caller, run_id, None)


async def list_runs(
    *, caller: Caller, first: int | None = None, after: str | None = None,
    pipeline_id: int | None = None, connection_id: int | None = None,
    statuses: list[RunStatus] | None = None, started_after: datetime | None = None,
    started_before: datetime | None = None, environment: str | None = None,
    correlation_id: str | None = None, gateway_id: int | None = None,
) -> Page[Run]:
    """Runs newest first, filtered; keyset pagination keeps deep pages cheap."""
    caller.require_scope(Scope.READ)
    environment = inputs.filter_text(environment, "environment", 100)
    correlation_id = inputs.filter_text(correlation_id, "correlation_id", 200)
    query = Run.filter(organisation_id=caller.organisation_id)
    if environment is not None:
        query = query.filter(environment=environment)
    if correlation_id is not None:
        query = query.filter(correlation_id=correlation_id)
    if gateway_id is not None:
        query = query.filter(gateway_id=gateway_id)
    if pipeline_id is not None:
        query = query.filter(pipeline_id=pipeline_id)
    if connection_id is not None:
        query = query.filter(pipeline__connection_id=connection_id)
    if statuses:
        query = query.filter(status__in=statuses)
    if started_after is not None:
        query = query.filter(started_at__gte=to_utc(started_after, "started_after"))
    if started_before is not None:
        query = query.filter(started_at__lt=to_utc(started_before, "started_before"))
    return await paginate(query, first=first, after=after, newest_first=True)

