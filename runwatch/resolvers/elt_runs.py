"""ELT runs: created by people, services or schedulers, claimed and executed by gateways or
managed workers, which stream logs and live telemetry and finish them.

Every change of a run is one transaction that starts with one UPDATE of the run's row: it
locks the row, reserves the sequence numbers of new log lines and samples and merges the
telemetry summary. Concurrent PATCHes of one run therefore apply one after the other and none
is lost; the status change (checked by the state machine in `lifecycle`) and the lines follow
in the same transaction, so a refused change leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from runwatch.models import Gateway, Pipeline, Run, RunStatus
from runwatch.resolvers import inputs, lifecycle, sql, webhooks
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.errors import Conflict, InvalidInput, NotFound
from runwatch.resolvers.lifecycle import (
    ALREADY_CLAIMED,
    DEFAULT_MAX_RUNTIME,
    check_move,
    is_terminal,
)
from runwatch.resolvers.run_input import (
    UNSET,
    Errors,
    RunChange,
    check_bounded_text,
    check_change,
)
from runwatch.resolvers.run_series import LOGS, SAMPLES, item_values, write
from runwatch.resolvers.runs import completes_before

AGENT_LIST_MAX = 20


class RunFinished(Conflict):
    """A change a finished run refuses; `status` tells a gateway to stop (cancelled)."""

    def __init__(self, message: str, status: RunStatus) -> None:
        super().__init__(message)
        self.status = status


class SummaryTaken(Exception):
    """A different `errorSummary` for a finished run that has one: `apply_change` applies
    the change again with it as an error line (`RunChange.late_summary`)."""


def _visible_to(caller: Caller) -> Q:
    """Runs a caller may see: its organisation's; a gateway sees the untargeted ones and
    those targeted at itself."""
    scope = Q(organisation_id=caller.organisation_id)
    if caller.gateway_id is not None:
        return scope & (Q(target_gateway_id=None) | Q(target_gateway_id=caller.gateway_id))
    caller.require_scope(Scope.READ)
    return scope


async def get_visible_run(*, caller: Caller, run_id: int) -> Run:
    """A run, for a person with `read` or for a gateway that may take it."""
    run = await Run.filter(_visible_to(caller), id=run_id).first()
    if run is None:
        raise NotFound("run", run_id)
    return run


async def get_gateway_run(*, caller: Caller, run_id: int) -> Run:
    """A run, for the gateway that may take it (the /api/agent/ read)."""
    caller.require_gateway()
    return await get_visible_run(caller=caller, run_id=run_id)


async def list_gateway_runs(
    *, caller: Caller, statuses: list[RunStatus] | None = None, limit: int = AGENT_LIST_MAX,
) -> list[Run]:
    """What a gateway polls: runs it may take (pending by default), oldest first."""
    caller.require_gateway()
    limit = max(1, min(limit, AGENT_LIST_MAX))
    return await Run.filter(
        _visible_to(caller), status__in=statuses or [RunStatus.PENDING]
    ).order_by("id").limit(limit)


@dataclass(frozen=True)
class NewRun:
    """A new run, typed. `status` is pending (for a gateway to claim) or running (a worker
    that starts its own); texts are checked (length, NUL) and trimmed by `create_run`."""

    pipeline_id: int
    environment: str | None = None
    correlation_id: str | None = None
    triggered_by: str | None = None
    partition_column: str | None = None
    partition_value: str | None = None
    target_gateway_id: int | None = None
    status: RunStatus = RunStatus.PENDING


# The new run's texts and their limits (triggeredBy, partitionColumn and partitionValue are
# eltPulse's: datapulse run-types.ts; its environment and correlationId limits, 64 and 128,
# are narrower than ours). A slice's derived triggeredBy may be longer than the 256 a client
# may send (its column holds `backfill:partition:` + a column + ":" + a value).
NEW_RUN_TEXTS = {"environment": 100, "correlation_id": 200, "triggered_by": 256,
                 "partition_column": 256, "partition_value": 2048}


SLICE_TRIGGER = "backfill:partition:"  # eltPulse's Run slices key their coverage on it
PARTITION_TYPES = ("date", "key")
PARTITION_COLUMN_REQUIRED = (
    "partitionColumn is required when partitionValue is set and the pipeline has no date/key "
    "partition column saved (sourceConfiguration._partitionConfig).")


def saved_partition_column(pipeline: Pipeline) -> str | None:
    """The partition column a pipeline saved, as eltPulse's reference reads it:
    `sourceConfiguration._partitionConfig` of type `date` or `key`, its `column` trimmed."""
    config = pipeline.source_configuration
    saved = config.get("_partitionConfig") if isinstance(config, dict) else None
    if not isinstance(saved, dict) or saved.get("type") not in PARTITION_TYPES:
        return None
    column = saved.get("column")
    if isinstance(column, bool) or not isinstance(column, str | int | float):
        return None
    return str(column).strip() or None


def _partitioned(new: NewRun, pipeline: Pipeline) -> NewRun:
    """A slice's column and trigger, as the reference resolves them: a `partition_value`
    without a column takes the pipeline's saved one (none saved: refused, naming
    partitionColumn), and a run with both and no `triggered_by` is
    `backfill:partition:<column>:<value>`, the key of eltPulse's slice coverage."""
    column = new.partition_column
    if new.partition_value and not column:
        column = saved_partition_column(pipeline)
        if column is None:
            raise InvalidInput.one("partition_column", PARTITION_COLUMN_REQUIRED)
        if len(column) > NEW_RUN_TEXTS["partition_column"]:
            raise InvalidInput.one(
                "partition_column", "The pipeline's saved partition column is longer than "
                f"{NEW_RUN_TEXTS['partition_column']} characters; send partitionColumn.")
    triggered_by = new.triggered_by
    if new.partition_value and column and not triggered_by:
        triggered_by = f"{SLICE_TRIGGER}{column}:{new.partition_value}"
    return dataclasses.replace(new, partition_column=column, triggered_by=triggered_by)


def _checked(new: NewRun) -> NewRun:
    errors = Errors()
    if new.status not in (RunStatus.PENDING, RunStatus.RUNNING):
        errors.add("status", "A new run is pending or running.")
    texts = {name: check_bounded_text(getattr(new, name), name, errors, limit)
             for name, limit in NEW_RUN_TEXTS.items()}
    errors.raise_any()
    # eltPulse's reference gives every run a correlation id: a UUID when none (or a blank
    # one) is sent, so that webhook receivers always have a key to match on.
    return dataclasses.replace(new, **{**texts, "environment": texts["environment"] or "default",
                                       "correlation_id": texts["correlation_id"] or str(uuid4())})


async def create_run(
    *, caller: Caller, new: NewRun, now: datetime | None = None,
    default_max_runtime: timedelta = DEFAULT_MAX_RUNTIME,
) -> Run:
    """A new run of a pipeline: pending (for a gateway to claim) or already running (a
    managed worker starting its own). `correlation_id` is unique in the organisation."""
    caller.require_person(Scope.WRITE)
    new = _checked(new)
    now = now or utcnow()
    pipeline = await Pipeline.filter(
        id=new.pipeline_id, organisation_id=caller.organisation_id
    ).first() if inputs.storable(new.pipeline_id, "pipeline") else None
    if pipeline is None:
        raise InvalidInput.one("pipeline_id", f"No pipeline {new.pipeline_id} here.")
    new = _partitioned(new, pipeline)
    if new.target_gateway_id is not None and not (
        inputs.storable(new.target_gateway_id, "gateway") and await Gateway.filter(
            id=new.target_gateway_id, organisation_id=caller.organisation_id, revoked_at=None
        ).exists()):
        raise InvalidInput.one("target_gateway_id", f"No gateway {new.target_gateway_id} here.")
    running = new.status == RunStatus.RUNNING
    try:
        async with lifecycle.transaction() as (conn, effects):
            run = await lifecycle.open_run(
                conn, effects, caller=caller, pipeline=pipeline, status=new.status,
                started_at=now if running else None, default_max_runtime=default_max_runtime,
                now=now,
                environment=new.environment, correlation_id=new.correlation_id,
                triggered_by=new.triggered_by, partition_column=new.partition_column,
                partition_value=new.partition_value, target_gateway_id=new.target_gateway_id)
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


async def _set(conn: Any, effects: lifecycle.Effects, run: Run, columns: dict[str, Any],
               now: datetime) -> Run:
    """Data of a run that is not its status (an error summary): the lifecycle's one path."""
    if not columns:
        return run
    changed = await lifecycle.change_data(
        conn, effects, run_id=run.id, organisation_id=run.organisation_id,  # type: ignore[attr-defined]
        columns=columns, now=now)
    assert changed is not None  # locked by the change's first UPDATE
    return changed


async def _change_status(
    conn: Any, effects: lifecycle.Effects, caller: Caller, run: Run, change: RunChange,
    now: datetime, default_max_runtime: timedelta,
) -> Run:
    """The status part of a change (through the lifecycle) and the error summary with it."""
    current = RunStatus(run.status)
    target = change.status or current
    reclaim = lifecycle.reclaim_conflict(caller, run, change.status)
    if is_terminal(current):
        if target != current:
            raise RunFinished(reclaim or lifecycle.finished(run).message, current)
        if change.finished_at is not None and change.finished_at != run.finished_at:
            raise RunFinished(
                f"Run {run.id} finished at {iso(run.finished_at)}; it cannot change.", current)
        if change.error_summary is not UNSET and change.error_summary != run.error:
            if run.error is not None:
                if change.error_summary is None:
                    raise RunFinished(f"Run {run.id} is finished; its errorSummary cannot be "
                                      "cleared.", current)
                raise SummaryTaken
            run = await _set(conn, effects, run, {"error": change.error_summary}, now)
            await webhooks.summary_arrived(conn, run)  # its event may not be sent yet
            return run
        return run
    data: dict[str, Any] = {}
    if change.error_summary is not UNSET:
        data["error"] = change.error_summary
    if change.finished_at is not None and not is_terminal(target):  # also with the claim
        raise InvalidInput.one(
            "finished_at", "finishedAt goes with a terminal status (succeeded, failed or "
            "cancelled).")
    if reclaim:
        raise Conflict(reclaim)
    if target == current:
        if change.status is not None and (
                reason := lifecycle.claim_conflict(caller, run, target)):
            raise Conflict(reason)
        return await _set(conn, effects, run, data, now)
    check_move(run, target)
    if target == RunStatus.RUNNING:
        return await lifecycle.claim(conn, effects, caller=caller, run=run, now=now,
                                     default_max_runtime=default_max_runtime, columns=data)
    finished_at = change.finished_at or now
    if run.started_at is not None and completes_before(run.started_at, finished_at):
        raise InvalidInput.one(
            "finished_at", f"The run started at {iso(run.started_at)}; it cannot finish "
            "before that.")
    moved = await lifecycle.move(
        conn, effects, run_id=run.id, organisation_id=caller.organisation_id, target=target,
        columns={**data, "finished_at": finished_at}, from_statuses=(current,), caller=caller,
        now=now, clock_label="finishedAt")
    if moved is None:
        raise lifecycle.refusal(caller, run, target)
    return moved


def _plain_append(change: RunChange) -> bool:
    """One log line or one sample and nothing else: what runners send most, many per second."""
    appends = (change.append_log is not None) + (change.append_sample is not None)
    return appends == 1 and change.status is None and change.log_entries is None \
        and change.samples is None and change.error_summary is UNSET \
        and change.finished_at is None and change.summary is None and not change.notes


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
    return lifecycle.run_from_row(rows[0]) if rows else None


async def update_run(
    *, caller: Caller, run_id: int, change: RunChange, now: datetime | None = None,
    default_max_runtime: timedelta = DEFAULT_MAX_RUNTIME,
) -> Run:
    """A person's or service's change of a run (`write`): as a managed worker that runs it,
    or as an operator (who may cancel any run). See `apply_change`."""
    caller.require_person(Scope.WRITE)
    return await apply_change(caller=caller, run_id=run_id, change=change, now=now,
                              default_max_runtime=default_max_runtime)


async def update_gateway_run(
    *, caller: Caller, run_id: int, change: RunChange, now: datetime | None = None,
    default_max_runtime: timedelta = DEFAULT_MAX_RUNTIME,
) -> Run:
    """A gateway's change of a run it may take or has claimed. See `apply_change`."""
    caller.require_gateway()
    return await apply_change(caller=caller, run_id=run_id, change=change, now=now,
                              default_max_runtime=default_max_runtime)


async def apply_change(
    *, caller: Caller, run_id: int, change: RunChange, now: datetime | None,
    default_max_runtime: timedelta,
) -> Run:
    """Apply one PATCH to a run: its status (through the lifecycle), logs, samples, summary
    and error, all or nothing. Returns the run as it is afterwards. The caller was checked
    by `update_run` or `update_gateway_run`."""
    now = now or utcnow()
    if not change.checked:
        change = check_change(change)
    try:
        return await _apply_change(caller, run_id, change, now, default_max_runtime)
    except SummaryTaken:
        # eltPulse's gateway sends a failed run's summary ("Process exited with code N") on
        # its own after the status, and its error path once more with a log line; a worker
        # may have reported first. Refusing the PATCH lost its lines (the clients swallow a
        # 409): the first summary stays, this one becomes an error line, the rest applies.
        return await _apply_change(caller, run_id, change.late_summary(now), now,
                                   default_max_runtime)


async def _apply_change(
    caller: Caller, run_id: int, change: RunChange, now: datetime,
    default_max_runtime: timedelta,
) -> Run:
    if _plain_append(change) and sql.is_postgres(sql.client()):
        appended = await _append_in_one_statement(caller, run_id, change, now)
        if appended is not None:
            lifecycle.Effects(runs={(
                appended.organisation_id, appended.id)}).fire()  # type: ignore[attr-defined]
            return appended
        # not found, or claimed by another gateway: the general path says which
    statement, params = _lock_statement(caller, run_id, change, now)
    async with lifecycle.transaction() as (conn, effects):
        rows = await sql.fetch(statement, params, conn)
        if not rows:
            raise NotFound("run", run_id)
        run = lifecycle.run_from_row(rows[0])
        effects.runs.add((run.organisation_id, run.id))  # type: ignore[attr-defined]
        if caller.gateway_id is not None and (
            run.gateway_id not in (None, caller.gateway_id)  # type: ignore[attr-defined]
        ):
            raise Conflict(ALREADY_CLAIMED)
        seqs = {series: (getattr(run, series.seq_column), getattr(run, series.base_column))
                for series in (LOGS, SAMPLES)}
        run = await _change_status(conn, effects, caller, run, change, now, default_max_runtime)
        for series, items, replace in (
            (LOGS, change.new_log_lines, change.log_entries is not None),
            (SAMPLES, change.new_samples, change.samples is not None),
        ):
            if items or replace:
                seq, base = seqs[series]
                await write(conn, series, run_id=run.id, old_seq=seq - len(items),
                            old_base=base, replace=replace, items=items)
    return run


async def cancel_run(*, caller: Caller, run_id: int, now: datetime | None = None) -> Run:
    """Cancel a pending or running run (an operator's cancel: whoever claimed it); its
    gateway sees `cancel: true` on its next call."""
    return await update_run(caller=caller, run_id=run_id,
                            change=RunChange(status=RunStatus.CANCELLED), now=now)
