"""ELT runs: created by people, services or schedulers, claimed and executed by gateways or
managed workers, which stream logs and live telemetry and finish them.

Every change of a run is one transaction that starts with one UPDATE of the run's row: it
locks the row, reserves the sequence numbers of new log lines and samples and merges the
telemetry summary. Concurrent PATCHes of one run therefore apply one after the other and none
is lost; the status change (checked by the state machine in `lifecycle`) and the lines follow
in the same transaction, so a refused change leaves nothing behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from runwatch.models import Gateway, Pipeline, Run, RunStatus
from runwatch.resolvers import inputs, signals, sql
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.errors import Conflict, InvalidInput, NotFound
from runwatch.resolvers.lifecycle import (
    DEFAULT_MAX_RUNTIME,
    check_move,
    deadline_for,
    is_terminal,
    on_terminal,
)
from runwatch.resolvers.rollups import touch_pipeline
from runwatch.resolvers.run_input import (
    UNSET,
    Errors,
    RunChange,
    check_bounded_text,
    check_int_id,
)
from runwatch.resolvers.run_series import LOGS, SAMPLES, item_values, write
from runwatch.resolvers.runs import CLOCK_SKEW, completes_before

ALREADY_CLAIMED = "Already claimed by another gateway"
AGENT_LIST_MAX = 20
NEW_RUN_KEYS = ("pipeline_id", "environment", "correlation_id", "triggered_by",
                "partition_column", "partition_value", "target_gateway_id", "status")


class RunFinished(Conflict):
    """A change a finished run refuses; `status` tells a gateway to stop (cancelled)."""

    def __init__(self, message: str, status: RunStatus) -> None:
        super().__init__(message)
        self.status = status


def _visible_to(caller: Caller) -> Q:
    """Runs a caller may see: its organisation's; a gateway sees the untargeted ones and
    those targeted at itself."""
    scope = Q(organisation_id=caller.organisation_id)
    if caller.gateway_id is not None:
        return scope & (Q(target_gateway_id=None) | Q(target_gateway_id=caller.gateway_id))
    caller.require(Scope.READ)
    return scope


def _require_writer(caller: Caller) -> None:
    if caller.gateway_id is None:
        caller.require(Scope.WRITE)


async def get_visible_run(*, caller: Caller, run_id: int) -> Run:
    run = await Run.filter(_visible_to(caller), id=run_id).first()
    if run is None:
        raise NotFound("run", run_id)
    return run


async def list_gateway_runs(
    *, caller: Caller, statuses: list[RunStatus] | None = None, limit: int = AGENT_LIST_MAX,
) -> list[Run]:
    """What a gateway polls: runs it may take (pending by default), oldest first."""
    caller.require(Scope.GATEWAY)
    limit = max(1, min(limit, AGENT_LIST_MAX))
    return await Run.filter(
        _visible_to(caller), status__in=statuses or [RunStatus.PENDING]
    ).order_by("id").limit(limit)


@dataclass(frozen=True)
class NewRun:
    pipeline_id: int
    environment: str
    correlation_id: str | None
    triggered_by: str | None
    partition_column: str | None
    partition_value: str | None
    target_gateway_id: int | None
    status: RunStatus


def parse_new_run(raw: dict[str, Any]) -> NewRun:
    errors = Errors()
    for key in raw:
        if key not in NEW_RUN_KEYS:
            errors.add(key, "Unknown field.")
    pipeline_id = check_int_id(raw.get("pipeline_id"), "pipeline_id", errors)
    if raw.get("pipeline_id") is None:
        errors.add("pipeline_id", "This field is required.")
    status = raw.get("status") or RunStatus.PENDING
    if str(status).lower() not in (RunStatus.PENDING, RunStatus.RUNNING):
        errors.add("status", "A new run is pending (the default) or running.")
    new = NewRun(
        pipeline_id=pipeline_id or 0,
        environment=check_bounded_text(raw.get("environment"), "environment", errors, 100)
        or "default",
        correlation_id=check_bounded_text(
            raw.get("correlation_id"), "correlation_id", errors, 200),
        triggered_by=check_bounded_text(raw.get("triggered_by"), "triggered_by", errors, 200),
        partition_column=check_bounded_text(
            raw.get("partition_column"), "partition_column", errors, 200),
        partition_value=check_bounded_text(
            raw.get("partition_value"), "partition_value", errors, 1000),
        target_gateway_id=check_int_id(
            raw.get("target_gateway_id"), "target_gateway_id", errors),
        status=RunStatus(str(status).lower()) if not errors.fields.get("status") else
        RunStatus.PENDING,
    )
    errors.raise_any()
    return new


async def create_run(
    *, caller: Caller, raw: dict[str, Any], now: datetime | None = None,
    default_max_runtime: timedelta = DEFAULT_MAX_RUNTIME,
) -> Run:
    """A new run of a pipeline: pending (for a gateway to claim) or already running (a
    managed worker starting its own). `correlation_id` is unique in the organisation."""
    caller.require(Scope.WRITE)
    new = parse_new_run(raw)
    now = now or utcnow()
    pipeline = await Pipeline.filter(
        id=new.pipeline_id, organisation_id=caller.organisation_id
    ).first() if inputs.storable(new.pipeline_id, "pipeline") else None
    if pipeline is None:
        raise InvalidInput.one("pipeline_id", f"No pipeline {new.pipeline_id} here.")
    if new.target_gateway_id is not None and not (
        inputs.storable(new.target_gateway_id, "gateway") and await Gateway.filter(
            id=new.target_gateway_id, organisation_id=caller.organisation_id, revoked_at=None
        ).exists()):
        raise InvalidInput.one("target_gateway_id", f"No gateway {new.target_gateway_id} here.")
    running = new.status == RunStatus.RUNNING
    try:
        async with in_transaction() as conn:
            run = await Run.create(
                organisation_id=caller.organisation_id, pipeline_id=pipeline.id,
                status=new.status, environment=new.environment,
                correlation_id=new.correlation_id, triggered_by=new.triggered_by,
                partition_column=new.partition_column, partition_value=new.partition_value,
                target_gateway_id=new.target_gateway_id,
                started_at=now if running else None,
                deadline_at=deadline_for(now, pipeline.max_runtime_seconds,
                                         default_max_runtime) if running else None,
                claimed_by_token_id=caller.token_id if running else None,
                using_db=conn,
            )
            await touch_pipeline(conn, pipeline.id)
    except IntegrityError:
        existing = await Run.filter(
            organisation_id=caller.organisation_id, correlation_id=new.correlation_id
        ).first()
        raise Conflict(
            f"A run with correlationId {new.correlation_id!r} already exists"
            + (f" (run {existing.id})." if existing else ".")
        ) from None
    return run


def _lock_statement(
    caller: Caller, run_id: int, change: RunChange, now: datetime
) -> tuple[str, list]:
    """The UPDATE that opens every change: lock the run, reserve sequence numbers, merge the
    summary. Returns the statement and its parameters."""
    sets = ["updated_at = ?"]
    params: list[Any] = [now]
    for series, items, replace in (
        (LOGS, change.new_log_lines, change.log_entries is not None),
        (SAMPLES, change.new_samples, change.samples is not None),
    ):
        if replace:
            sets.append(f"{series.base_column} = {series.seq_column}")
        if items:
            sets.append(f"{series.seq_column} = {series.seq_column} + ?")
            params.append(len(items))
    patch = change.summary
    if patch is not None:
        for column, value in (("rows_total", patch.rows), ("bytes", patch.bytes)):
            if value is not UNSET:
                sets.append(f"{column} = ?")
                params.append(value)
        document = {**patch.document, "updatedAt": iso(now)}
        kept = {k: v for k, v in document.items() if v is not None}
        removed = [k for k, v in document.items() if v is None]
        if sql.is_postgres(sql.client()):
            sets.append("telemetry_summary = (COALESCE(telemetry_summary, '{}'::jsonb) "
                        "|| ?::jsonb) - ?::text[]")
            params.extend([json.dumps(kept), removed])
        else:  # SQLite's json_patch removes the keys a patch sets to null
            sets.append("telemetry_summary = json_patch(COALESCE(telemetry_summary, '{}'), ?)")
            params.append(json.dumps(document))
    where = "id = ? AND organisation_id = ?"
    params.extend([run_id, caller.organisation_id])
    if caller.gateway_id is not None:
        where += " AND (target_gateway_id IS NULL OR target_gateway_id = ?)"
        params.append(caller.gateway_id)
    return f"UPDATE run SET {', '.join(sets)} WHERE {where} RETURNING *", params


def _claim_conflict(caller: Caller, run: Run) -> str | None:
    """Why this caller may not act as the runner of a running run, or None."""
    claimant_gateway = run.gateway_id  # type: ignore[attr-defined]
    if caller.gateway_id is not None:
        if claimant_gateway is not None and claimant_gateway != caller.gateway_id:
            return ALREADY_CLAIMED
        if claimant_gateway is None and run.claimed_by_token_id is not None:
            return "Already claimed by a managed worker"
        return None
    if claimant_gateway is not None:
        return ALREADY_CLAIMED
    if run.claimed_by_token_id not in (None, caller.token_id):
        return "Already claimed by another worker"
    return None


async def _status_changes(
    caller: Caller, run: Run, change: RunChange, now: datetime,
    default_max_runtime: timedelta,
) -> dict[str, Any]:
    """The columns a change sets beyond its data: status, timing, claim, error."""
    current = RunStatus(run.status)
    target = change.status or current
    sets: dict[str, Any] = {}
    if is_terminal(current):
        if target != current:
            try:
                check_move(run, target)
            except Conflict as exc:
                raise RunFinished(exc.message, current) from None
        if change.finished_at is not None and change.finished_at != run.finished_at:
            raise RunFinished(
                f"Run {run.id} finished at {iso(run.finished_at)}; it cannot change.", current)
        if change.error_summary is not UNSET and change.error_summary != run.error:
            if run.error is not None:
                raise RunFinished(
                    f"Run {run.id} is finished and has an errorSummary; it cannot be replaced.",
                    current)
            sets["error"] = change.error_summary
        return sets
    if change.error_summary is not UNSET:
        sets["error"] = change.error_summary
    if change.finished_at is not None and not is_terminal(target):  # also with the claim
        raise InvalidInput.one(
            "finished_at", "finishedAt goes with a terminal status (succeeded, failed or "
            "cancelled).")
    if target == current:
        if change.status == RunStatus.RUNNING and (reason := _claim_conflict(caller, run)):
            raise Conflict(reason)
        return sets
    check_move(run, target)
    if target == RunStatus.RUNNING:  # the claim
        pipeline = await Pipeline.get(id=run.pipeline_id)  # type: ignore[attr-defined]
        started_at = run.started_at or now
        sets.update(
            status=target, started_at=started_at,
            deadline_at=deadline_for(started_at, pipeline.max_runtime_seconds,
                                     default_max_runtime),
            gateway_id=caller.gateway_id,
            claimed_by_token_id=None if caller.gateway_id is not None else caller.token_id,
        )
        return sets
    finished_at = change.finished_at or now
    if finished_at > now + CLOCK_SKEW:
        raise InvalidInput.one("finished_at", "finishedAt is in the future (more than 5 minutes "
                                              "ahead of the server's clock).")
    if run.started_at is not None and completes_before(run.started_at, finished_at):
        raise InvalidInput.one(
            "finished_at", f"The run started at {iso(run.started_at)}; it cannot finish "
            "before that.")
    sets.update(status=target, finished_at=finished_at)
    return sets


def _plain_append(change: RunChange) -> bool:
    """One log line or one sample and nothing else: what runners send most, many per second."""
    appends = (change.append_log is not None) + (change.append_sample is not None)
    return appends == 1 and change.status is None and change.log_entries is None \
        and change.samples is None and change.error_summary is UNSET \
        and change.finished_at is None and change.summary is None


# A plain append on PostgreSQL in one statement, without an explicit transaction (a statement
# is atomic): the UPDATE numbers the item and locks the run, the INSERT stores it, the DELETE
# drops the item that fell out of the cap. Data-modifying CTEs share one snapshot, and the
# item deleted is never the one inserted. SQLite takes the general path (no such CTEs).
_APPEND_SQL = """
WITH r AS (
  UPDATE run SET {seq} = {seq} + 1, updated_at = ?
  WHERE id = ? AND organisation_id = ?{gateway}
  RETURNING *
), i AS (
  INSERT INTO {table} (run_id, seq, {columns})
  SELECT r.id, r.{seq}, {values} FROM r
), d AS (
  DELETE FROM {table} USING r
  WHERE {table}.run_id = r.id AND {table}.seq = r.{seq} - {cap} AND r.{seq} - {cap} > r.{base}
)
SELECT * FROM r
"""
_GATEWAY_SCOPE = (" AND (target_gateway_id IS NULL OR target_gateway_id = ?)"
                  " AND (gateway_id IS NULL OR gateway_id = ?)")


async def _append_in_one_statement(
    caller: Caller, run_id: int, change: RunChange, now: datetime
) -> Run | None:
    series, item = (LOGS, change.append_log) if change.append_log is not None else (
        SAMPLES, change.append_sample)
    statement = _APPEND_SQL.format(
        seq=series.seq_column, base=series.base_column, table=series.table, cap=series.cap,
        columns=", ".join(series.columns), values=sql.placeholders(len(series.columns)),
        gateway=_GATEWAY_SCOPE if caller.gateway_id is not None else "")
    params: list[Any] = [now, run_id, caller.organisation_id]
    if caller.gateway_id is not None:
        params += [caller.gateway_id, caller.gateway_id]
    params += list(item_values(item))  # type: ignore[arg-type]
    rows = await sql.fetch(statement, params)
    return Run._init_from_db(**rows[0]) if rows else None


async def update_run(
    *, caller: Caller, run_id: int, change: RunChange, now: datetime | None = None,
    default_max_runtime: timedelta = DEFAULT_MAX_RUNTIME,
) -> Run:
    """Apply one PATCH to a run: its status (through the state machine), logs, samples,
    summary and error, all or nothing. Returns the run as it is afterwards."""
    _require_writer(caller)
    now = now or utcnow()
    if _plain_append(change) and sql.is_postgres(sql.client()):
        appended = await _append_in_one_statement(caller, run_id, change, now)
        if appended is not None:
            signals.run_changed(appended.id)
            return appended
        # not found, or claimed by another gateway: the general path says which
    statement, params = _lock_statement(caller, run_id, change, now)
    enqueued = False
    async with in_transaction() as conn:
        rows = await sql.fetch(statement, params, conn)
        if not rows:
            raise NotFound("run", run_id)
        run = Run._init_from_db(**rows[0])
        if caller.gateway_id is not None and (
            run.gateway_id not in (None, caller.gateway_id)  # type: ignore[attr-defined]
        ):
            raise Conflict(ALREADY_CLAIMED)
        sets = await _status_changes(caller, run, change, now, default_max_runtime)
        if sets:
            assignments = ", ".join(f"{column} = ?" for column in sets)
            rows = await sql.fetch(
                f"UPDATE run SET {assignments} WHERE id = ? RETURNING *",
                [*(v.value if isinstance(v, RunStatus) else v for v in sets.values()), run.id],
                conn)
            before = RunStatus(run.status)
            run = Run._init_from_db(**rows[0])
            became_terminal = not is_terminal(before) and is_terminal(RunStatus(run.status))
            if "started_at" in sets or became_terminal:
                if caller.gateway_id is not None and "gateway_id" in sets:
                    await Gateway.filter(id=caller.gateway_id).using_db(conn).update(
                        last_seen_at=now)
                if became_terminal:
                    enqueued = await on_terminal(conn, run)
                else:
                    await touch_pipeline(conn, run.pipeline_id)  # type: ignore[attr-defined]
        for series, items, replace in (
            (LOGS, change.new_log_lines, change.log_entries is not None),
            (SAMPLES, change.new_samples, change.samples is not None),
        ):
            if items or replace:
                seq = getattr(run, series.seq_column)
                base = getattr(run, series.base_column)
                await write(conn, series, run_id=run.id, old_seq=seq - len(items),
                            old_base=base, replace=replace, items=items)
    signals.run_changed(run.id)
    if enqueued:
        signals.work_enqueued()
    return run


async def cancel_run(*, caller: Caller, run_id: int, now: datetime | None = None) -> Run:
    """Cancel a pending or running run; its gateway sees `cancel: true` on its next call."""
    return await update_run(caller=caller, run_id=run_id,
                            change=RunChange(status=RunStatus.CANCELLED), now=now)
