"""The one run state machine, for every surface:

    pending -> running -> succeeded | failed | cancelled | timed_out
    pending -> cancelled

A terminal run never changes status again. Whatever makes a run terminal (a loader's report,
a gateway's or a person's PATCH, the reaper) does it with a conditional UPDATE and then calls
`on_terminal` in the same transaction, so that the roll-ups and the webhook deliveries happen
exactly once per run, together with the change or not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient

from runwatch.models import TERMINAL_STATUSES, Run, RunStatus
from runwatch.resolvers import alerts, tasks, webhooks
from runwatch.resolvers.clock import iso
from runwatch.resolvers.errors import Conflict
from runwatch.resolvers.rollups import Outcome, record_outcome

# Until a pipeline says otherwise, a run still open this long after its start has timed out.
DEFAULT_MAX_RUNTIME = timedelta(hours=2)

# What a client may ask for from each open status (`timed_out` is the reaper's alone).
_CLIENT_MOVES = {
    RunStatus.PENDING: {RunStatus.RUNNING, RunStatus.CANCELLED},
    RunStatus.RUNNING: {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED},
}


def is_terminal(status: RunStatus) -> bool:
    return status in TERMINAL_STATUSES


def check_move(run: Run, target: RunStatus) -> None:
    """Refuse a status change the state machine does not allow (a same-status request is
    not a change and is allowed: retries are no-ops)."""
    current = RunStatus(run.status)
    if target == current:
        return
    if is_terminal(current):
        when = f" at {iso(run.finished_at)}" if run.finished_at else ""
        raise Conflict(
            f"Run {run.id} already finished ({current.value}{when}); "
            "a finished run never changes status."
        )
    if target == RunStatus.TIMED_OUT:
        raise Conflict("timed_out is set by runwatch when a run is stuck; report failed instead.")
    if target not in _CLIENT_MOVES[current]:
        if current == RunStatus.RUNNING and target == RunStatus.PENDING:
            raise Conflict(f"Run {run.id} is running; it cannot go back to pending.")
        raise Conflict(
            f"Run {run.id} is pending: claim it (status running) before finishing it, "
            "or cancel it."
        )


def deadline_for(started_at: datetime, max_runtime_seconds: int | None,
                 default_max_runtime: timedelta) -> datetime:
    """When a run started at `started_at` times out if it is still open."""
    runtime = (timedelta(seconds=max_runtime_seconds) if max_runtime_seconds
               else default_max_runtime)
    try:
        return started_at + runtime
    except OverflowError:  # a start at the end of time: it never times out
        return datetime.max.replace(tzinfo=UTC)


def outcome_of(run: Run) -> Outcome:
    assert run.finished_at is not None
    return Outcome(
        pipeline_id=run.pipeline_id,  # type: ignore[attr-defined]
        status=RunStatus(run.status),
        finished_at=run.finished_at,
        events=run.events_delivered or 0,
        evaluations=run.events_evaluations or 0,
        custom_events=run.events_custom or 0,
        dlq_batches=run.dlq_batches or 0,
    )


async def on_terminal(conn: BaseDBAsyncClient, run: Run) -> bool:
    """What happens once when a run first becomes terminal, in the transaction that made it
    so: the roll-ups; a webhook delivery for the endpoint that wants the event; after a
    success, anomaly detection (a task, when the pipeline has active rules); after a
    timeout, an alert. Returns whether background work was enqueued: the caller wakes this
    process's workers after its commit only then (`signals.work_enqueued`)."""
    pipeline_name = await record_outcome(conn, outcome_of(run))
    enqueued = await webhooks.enqueue_run_event(conn, run, pipeline_name=pipeline_name)
    organisation_id = run.organisation_id  # type: ignore[attr-defined]
    if run.status == RunStatus.SUCCEEDED:
        enqueued |= await tasks.enqueue_anomaly_detection(
            conn, organisation_id=organisation_id,
            pipeline_id=run.pipeline_id, run_id=run.id)  # type: ignore[attr-defined]
    elif run.status == RunStatus.TIMED_OUT:
        enqueued |= bool(await alerts.enqueue_alert(
            conn, organisation_id=organisation_id, alert="stuck_run", severity="warning",
            title=f"Run {run.id} of {pipeline_name} timed out",
            message=run.error or "the run was stuck",
            details={"runId": str(run.id), "pipelineId": str(run.pipeline_id),  # type: ignore[attr-defined]
                     "pipelineName": pipeline_name}))
    return enqueued

