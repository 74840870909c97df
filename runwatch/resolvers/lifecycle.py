"""The one run lifecycle, for every surface:

    pending -> running -> succeeded | failed | cancelled | timed_out
    pending -> cancelled

Every change of a run's status goes through this module, whoever asks for it: the warehouse
report, an ELT PATCH or cancel, a Watcher start or end, GraphQL mutations, the reaper. Here and
only here are

- the state machine (`check_move`) and the claim rules (`claim_conflict`, `reclaim_conflict`):
  a claimed run changes status only through its claimant, or by an operator's cancel, and a
  gateway claims a run only while it is pending;
- the clock rule (`check_clock`): a start (`open_run`) or an end (a terminal `move`) more
  than `CLOCK_SKEW` ahead of the server's clock is refused, whatever surface sends it (each
  names the field as its wire does), so that no run gets a deadline or a freshness stamp in
  the future;
- the one conditional `UPDATE … RETURNING` that moves a run (`move`), so that of two
  concurrent requests exactly one changes it;
- what happens once when a run first becomes terminal (`on_terminal`: roll-ups, the webhook
  delivery, anomaly detection, the stuck-run alert), in the same transaction as the move;
- the live signal and the workers' wake-up, sent only after that transaction commits
  (`transaction` and `Effects`); a change of a run's data that is not a status change (its
  counts, error, facets) goes through `change_data`, which stamps `updated_at` (how live
  subscribers tell a change) and signals it the same way.

A terminal run never changes status again. What a replayed request answers (the same answer,
or a conflict) is decided by `refusal` from the stored run; the contracts differ only in how
they word that answer (409 here, 200 with `cancel: true` there), which is the shims' business.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from runwatch import metrics
from runwatch.models import OPEN_STATUSES, TERMINAL_STATUSES, Gateway, Pipeline, Run, RunStatus
from runwatch.resolvers import alerts, signals, sql, tasks, webhooks
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.errors import Conflict, InvalidInput
from runwatch.resolvers.rollups import Outcome, PipelineChange, record_outcome, touch_pipeline

# Until a pipeline says otherwise, a run still open this long after its start has timed out.
DEFAULT_MAX_RUNTIME = timedelta(hours=2)
# A gateway's run: its heartbeats say the gateway is alive, not that it still runs this run
# (a restarted gateway heartbeats under the same token and has forgotten its runs), so a
# ceiling remains, far above any sync the orphan window would wrongly cut.
GATEWAY_MAX_RUNTIME = timedelta(hours=24)
# A client's clock may run a little ahead of ours; beyond this a start or an end is refused.
CLOCK_SKEW = timedelta(minutes=5)

ALREADY_CLAIMED = "Already claimed by another gateway"
CLAIMED_BY_WORKER = "Already claimed by a managed worker"
CLAIMED_BY_OTHER_WORKER = "Already claimed by another worker"

# What a client may ask for from each open status (`timed_out` is the reaper's alone).
_CLIENT_MOVES = {
    RunStatus.PENDING: {RunStatus.RUNNING, RunStatus.CANCELLED},
    RunStatus.RUNNING: {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED},
}


def is_terminal(status: RunStatus | str) -> bool:
    return status in TERMINAL_STATUSES


# --- the rules -------------------------------------------------------------------------------


def finished(run: Run) -> Conflict:
    """The answer to any change of a finished run that is not a replay."""
    when = f" at {iso(run.finished_at)}" if run.finished_at else ""
    return Conflict(f"Run {run.id} already completed ({RunStatus(run.status).value}{when}); "
                    "a completed run never changes.")


def check_move(run: Run, target: RunStatus) -> None:
    """Refuse a status change the state machine does not allow (a same-status request is
    not a change and is allowed: retries are no-ops)."""
    current = RunStatus(run.status)
    if target == current:
        return
    if is_terminal(current):
        raise finished(run)
    if target == RunStatus.TIMED_OUT:
        raise Conflict("timed_out is set by runwatch when a run is stuck; report failed instead.")
    if target not in _CLIENT_MOVES[current]:
        if current == RunStatus.RUNNING and target == RunStatus.PENDING:
            raise Conflict(f"Run {run.id} is running; it cannot go back to pending.")
        raise Conflict(
            f"Run {run.id} is pending: claim it (status running) before finishing it, "
            "or cancel it."
        )


def check_clock(moment: datetime | None, now: datetime, field: str,
                label: str | None = None) -> None:
    """Refuse a run's start or end more than `CLOCK_SKEW` ahead of the server's clock: a start
    in the future would put its deadline out of the reaper's reach, an end in the future the
    pipeline's freshness stamps (which only move forward). `field` is the offending field as
    the surface names it, `label` how its message spells it (the field by default)."""
    if moment is not None and moment > now + CLOCK_SKEW:
        raise InvalidInput.one(field, f"{label or field} is in the future (more than 5 minutes "
                                      "ahead of the server's clock).")


def is_operator_cancel(caller: Caller | None, target: RunStatus) -> bool:
    """A person or service with `write` may cancel any open run, whoever claimed it."""
    return (caller is not None and caller.gateway_id is None and target == RunStatus.CANCELLED
            and caller.has(Scope.WRITE))


def claim_conflict(caller: Caller | None, run: Run, target: RunStatus) -> str | None:
    """Why `caller` may not move the open `run` to `target` (its claim stands in the way), or
    None. A run claimed by a gateway moves only through that gateway; a run started or
    claimed by a token (a managed worker, a loader's recurring task) is not a gateway's to
    move, and another token may not claim it again. runwatch itself (`caller` None: the
    reaper) and an operator's cancel are never in the way."""
    if caller is None or is_operator_cancel(caller, target):
        return None
    claimant_gateway = run.gateway_id  # type: ignore[attr-defined]
    if caller.gateway_id is not None:
        if claimant_gateway is not None and claimant_gateway != caller.gateway_id:
            return ALREADY_CLAIMED
        if claimant_gateway is None and run.claimed_by_token_id is not None:
            return CLAIMED_BY_WORKER
        return None
    if claimant_gateway is not None:
        return ALREADY_CLAIMED
    if target == RunStatus.RUNNING and run.claimed_by_token_id not in (None, caller.token_id):
        return CLAIMED_BY_OTHER_WORKER
    return None


def reclaim_conflict(caller: Caller | None, run: Run, status: RunStatus | None) -> str | None:
    """Why a gateway's `status: running` on `run` is refused, or None. For a gateway that
    status is a claim, `pending -> running`, and nothing else: the replicas of one gateway
    share its token, so a claim of a run that is no longer pending is refused for every
    gateway, its claimant included, and of two replicas exactly one runs the pipeline. (A
    retry of a claim by the same replica cannot be told apart from it; the stock gateway
    never retries one.) The reason names the claimant when another one holds the run (a
    managed worker: "Already claimed by a managed worker"); every reason starts "Already
    claimed", the words eltPulse's gateway recognises. Not a refusal here: a pending run (the
    claim itself) and a cancelled or timed-out one, which answers with its stop signal."""
    if caller is None or caller.gateway_id is None or status != RunStatus.RUNNING:
        return None
    if RunStatus(run.status) in (RunStatus.PENDING, RunStatus.CANCELLED, RunStatus.TIMED_OUT):
        return None
    return claim_conflict(caller, run, RunStatus.RUNNING) or ALREADY_CLAIMED


def claim_guard(caller: Caller | None, target: RunStatus) -> tuple[str, list[Any]]:
    """`claim_conflict` as a condition of the conditional UPDATE (for the moves that do not
    read the run first). Kept beside the rule it mirrors; `refusal` explains a miss with the
    rule itself, and tests/test_lifecycle.py drives both through every surface."""
    if caller is None or is_operator_cancel(caller, target):
        return "", []
    if caller.gateway_id is not None:
        return (" AND (gateway_id = ? OR (gateway_id IS NULL AND claimed_by_token_id IS NULL))",
                [caller.gateway_id])
    if target == RunStatus.RUNNING:
        return (" AND gateway_id IS NULL AND (claimed_by_token_id IS NULL"
                " OR claimed_by_token_id = ?)", [caller.token_id])
    return " AND gateway_id IS NULL", []


def refusal(caller: Caller | None, run: Run, target: RunStatus) -> Conflict:
    """Why a move of `run` to `target` did not happen, as the conflict to answer (a replay
    that changes nothing is the caller's to recognise before asking)."""
    if is_terminal(run.status):
        return finished(run)
    try:
        check_move(run, target)
    except Conflict as exc:
        return exc
    reason = claim_conflict(caller, run, target)
    return Conflict(reason or f"Run {run.id} changed meanwhile; retry the request.")


def deadline_for(started_at: datetime, max_runtime_seconds: int | None,
                 default_max_runtime: timedelta | None) -> datetime | None:
    """When a run started at `started_at` times out if it is still open: None when neither
    its pipeline nor the caller sets a maximum (something else watches it)."""
    runtime = (timedelta(seconds=max_runtime_seconds) if max_runtime_seconds
               else default_max_runtime)
    if runtime is None:
        return None
    try:
        return started_at + runtime
    except OverflowError:  # a start at the end of time: it never times out
        return datetime.max.replace(tzinfo=UTC)


# --- after the commit ------------------------------------------------------------------------


@dataclass
class Effects:
    """What a committed transaction tells this process: which runs changed (live
    subscriptions), the status transitions it made (metrics) and whether background work was
    enqueued (idle workers). A rolled-back transaction tells nothing."""

    runs: set[tuple[int, int]] = field(default_factory=set)  # (organisation, run)
    # (from status, None for a new run; to status; organisation)
    moves: list[tuple[str | None, str, int]] = field(default_factory=list)
    work: bool = False

    def fire(self) -> None:
        for organisation_id, run_id in self.runs:
            signals.run_changed(organisation_id, run_id)
        for source, target, organisation_id in self.moves:
            metrics.run_moved(source, target, organisation_id)
        if self.work:
            signals.work_enqueued()


@contextlib.asynccontextmanager
async def transaction() -> AsyncIterator[tuple[BaseDBAsyncClient, Effects]]:
    """A transaction for run changes; its effects are sent once it has committed (never for
    a rolled-back one)."""
    effects = Effects()
    async with in_transaction() as conn:
        yield conn, effects
    effects.fire()


def run_from_row(row: dict[str, Any]) -> Run:
    """A run from a `RETURNING *` row (the one place that uses Tortoise's loader for it)."""
    return sql.model_from_row(Run, row)


# --- the moves -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineLimits:
    """All that opening a run reads of its pipeline, for a caller that has not loaded the
    whole row (`executions.start_execution`)."""

    id: int
    max_runtime_seconds: int | None


async def open_run(
    conn: BaseDBAsyncClient, effects: Effects, *, caller: Caller,
    pipeline: Pipeline | PipelineLimits, status: RunStatus, started_at: datetime | None,
    default_max_runtime: timedelta | None = DEFAULT_MAX_RUNTIME, now: datetime | None = None,
    clock_field: str = "started_at", clock_label: str | None = None, **columns: Any,
) -> Run:
    """A new run, pending or already running. A running run is claimed by the caller's
    token and times out at its deadline: its start plus the pipeline's maximum runtime, or
    `default_max_runtime` (None: no deadline unless the pipeline sets one). A start past the
    clock rule is refused (`check_clock`, naming `clock_field`)."""
    assert status in OPEN_STATUSES
    now = now or utcnow()
    check_clock(started_at, now, clock_field, clock_label)
    running = status == RunStatus.RUNNING
    if running and started_at is None:
        started_at = now
    run = await sql.insert(Run, {
        "organisation_id": caller.organisation_id, "pipeline_id": pipeline.id,
        "status": status, "started_at": started_at,
        "deadline_at": deadline_for(started_at, pipeline.max_runtime_seconds,
                                    default_max_runtime)
        if running and started_at is not None else None,
        "claimed_by_token_id": caller.token_id if running else None, **columns}, conn)
    await touch_pipeline(conn, pipeline.id)
    effects.runs.add((run.organisation_id, run.id))  # type: ignore[attr-defined]
    effects.moves.append((None, status.value, caller.organisation_id))
    return run


async def move(
    conn: BaseDBAsyncClient, effects: Effects, *, run_id: int, organisation_id: int,
    target: RunStatus, columns: dict[str, Any], from_statuses: Iterable[RunStatus],
    caller: Caller | None, now: datetime, where: str = "", params: Iterable[Any] = (),
    pipeline_change: PipelineChange | None = None, clock_field: str = "finished_at",
    clock_label: str | None = None,
) -> Run | None:
    """The one conditional UPDATE that changes a run's status: the run as it is afterwards,
    or None when nothing matched (unknown, another organisation's, not in `from_statuses`,
    claimed by someone else, or `where` false). A move into a terminal status runs
    `on_terminal` in the same transaction (with `pipeline_change`, made only when the run
    moved); a claim marks the pipeline's telemetry changed. An end (`finished_at` of a
    terminal move) past the clock rule is refused first (`check_clock`, naming
    `clock_field`)."""
    if is_terminal(target):
        check_clock(columns.get("finished_at"), now, clock_field, clock_label)
    guard, guard_params = claim_guard(caller, target)
    sets = {"status": target.value, **columns, "updated_at": now}
    sources = [s.value for s in from_statuses]
    statement = (
        f"UPDATE run SET {', '.join(f'{c} = ?' for c in sets)} "
        f"WHERE id = ? AND organisation_id = ? AND status IN ({sql.placeholders(len(sources))})"
        f"{guard}{where} RETURNING *")
    rows = await sql.fetch(statement, [
        *sets.values(), run_id, organisation_id, *sources, *guard_params, *params], conn)
    if not rows:
        return None
    run = run_from_row(rows[0])
    effects.runs.add((run.organisation_id, run.id))  # type: ignore[attr-defined]
    effects.moves.append((sources[0] if len(sources) == 1 else "open", target.value,
                          organisation_id))
    if is_terminal(target):
        effects.work |= await on_terminal(conn, run, pipeline_change)
    else:
        await touch_pipeline(conn, run.pipeline_id)  # type: ignore[attr-defined]
    return run


async def change_data(
    conn: BaseDBAsyncClient, effects: Effects, *, run_id: int, organisation_id: int,
    columns: dict[str, Any], now: datetime,
) -> Run | None:
    """A change of a run that is not a status change (counts, error, facets, times): the run
    as it is afterwards, or None when it is not the organisation's. `updated_at` is stamped,
    so that live subscribers, which tell a change by it, send it; the change is signalled
    after the commit. (JSON columns are given as `sql.json_param`.)"""
    sets = {**columns, "updated_at": now}
    rows = await sql.fetch(
        f"UPDATE run SET {', '.join(f'{c} = ?' for c in sets)} "
        "WHERE id = ? AND organisation_id = ? RETURNING *",
        [*sets.values(), run_id, organisation_id], conn)
    if not rows:
        return None
    run = run_from_row(rows[0])
    effects.runs.add((organisation_id, run.id))
    return run


async def claim(
    conn: BaseDBAsyncClient, effects: Effects, *, caller: Caller, run: Run, now: datetime,
    default_max_runtime: timedelta | None = DEFAULT_MAX_RUNTIME,
    columns: dict[str, Any] | None = None,
) -> Run:
    """`pending -> running` by a gateway or a managed worker: it becomes the run's claimant;
    the deadline starts counting. A gateway's run is not bounded by the orphan window (a sync
    may rightly run for hours, eltPulse sets no maximum, and the lease watches the gateway)
    but by its pipeline's `max_runtime_seconds`, else `GATEWAY_MAX_RUNTIME`: a gateway that
    restarted (or lost a claim's answer) heartbeats on without running it. Raises Conflict
    when another got there first."""
    check_move(run, RunStatus.RUNNING)
    pipeline = await Pipeline.get(id=run.pipeline_id).using_db(conn)  # type: ignore[attr-defined]
    if caller.gateway_id is not None:
        default_max_runtime = GATEWAY_MAX_RUNTIME
    started_at = run.started_at or now
    claimed = await move(
        conn, effects, run_id=run.id, organisation_id=caller.organisation_id,
        target=RunStatus.RUNNING, from_statuses=(RunStatus.PENDING,), caller=caller, now=now,
        columns={
            **(columns or {}), "started_at": started_at,
            "deadline_at": deadline_for(started_at, pipeline.max_runtime_seconds,
                                        default_max_runtime),
            "gateway_id": caller.gateway_id,
            "claimed_by_token_id": None if caller.gateway_id is not None else caller.token_id,
        })
    if claimed is None:
        raise refusal(caller, run, RunStatus.RUNNING)
    if caller.gateway_id is not None:
        await Gateway.filter(id=caller.gateway_id).using_db(conn).update(last_seen_at=now)
    return claimed


async def time_out(
    conn: BaseDBAsyncClient, effects: Effects, *, run_id: int, organisation_id: int,
    finished_at: datetime, error: str, now: datetime, from_status: RunStatus | None = None,
) -> Run | None:
    """The reaper's move: an open run that is stuck becomes `timed_out`; None when another
    process (or the run's own end) got there first. `from_status`, when the caller holds the
    run locked in that status, narrows the move to it (and names it in the metrics)."""
    return await move(
        conn, effects, run_id=run_id, organisation_id=organisation_id,
        target=RunStatus.TIMED_OUT,
        from_statuses=OPEN_STATUSES if from_status is None else (from_status,),
        caller=None, now=now,
        columns={"finished_at": finished_at, "error": error})


# --- once a run is terminal ------------------------------------------------------------------


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


async def on_terminal(conn: BaseDBAsyncClient, run: Run,
                      pipeline_change: PipelineChange | None = None) -> bool:
    """What happens once when a run first becomes terminal, in the transaction that made it
    so: the roll-ups; a webhook delivery for the endpoint that wants the event; after a
    success, anomaly detection (a task, when the pipeline has active rules); after a
    timeout, an alert. `pipeline_change` goes with the roll-ups' UPDATE of the pipeline.
    Returns whether background work was enqueued (`Effects.work`)."""
    pipeline_name = await record_outcome(conn, outcome_of(run), pipeline_change)
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
