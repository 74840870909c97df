"""Watcher pipeline executions: started and ended by ETL jobs, nested at any depth. An
execution is a `Run` (so the state machine, roll-ups, webhooks, the reaper and anomaly
detection apply to it); the Watcher fields are columns of the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runwatch.models import Run, RunStatus
from runwatch.resolvers import inputs, lifecycle, rollups, sql
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import to_utc, utcnow
from runwatch.resolvers.errors import InvalidRange, NotFound
from runwatch.resolvers.run_input import Errors
from runwatch.resolvers.runs import MAX_COUNT
from runwatch.resolvers.watcher_pipelines import metadata, require_writer, watermark

COUNTS = {"total_rows": "rows_total", "inserts": "rows_inserted", "updates": "rows_updated",
          "soft_deletes": "rows_deleted"}


async def _run_of(caller: Caller, run_id: int | None, kind: str = "pipeline execution") -> Run:
    run = await sql.first(Run, "id = ? AND organisation_id = ? LIMIT 1",
                          [run_id, caller.organisation_id]) \
        if inputs.storable(run_id, "run") else None
    if run is None:
        raise NotFound(kind, run_id)
    return run


async def _column_of(caller: Caller, run_id: int | None, column: str,
                     kind: str = "pipeline execution") -> Any:
    """One column of the organisation's run (where a check needs no more than that), or
    NotFound."""
    rows = await sql.fetch(f"SELECT {column} FROM run WHERE id = ? AND organisation_id = ? "
                           "LIMIT 1", [run_id, caller.organisation_id]) \
        if inputs.storable(run_id, "run") else []
    if not rows:
        raise NotFound(kind, run_id)
    return rows[0][column]


@dataclass(frozen=True)
class ExecutionStart:
    """`POST /start_pipeline_execution`, typed: watermarks are texts, numbers or dates as
    the job sent them (stored as text)."""

    pipeline_id: int
    parent_id: int | None = None
    start_date: datetime | None = None
    watermark: str | int | float | None = None
    next_watermark: str | int | float | None = None


@dataclass(frozen=True)
class End:
    """`POST /end_pipeline_execution`, typed; `counts` by the Watcher's names (`COUNTS`)."""

    run_id: int
    end_date: datetime
    succeeded: bool
    counts: dict[str, int | None]
    execution_metadata: dict[str, Any] | None = None


async def start_execution(
    *, caller: Caller, start: ExecutionStart, now: datetime | None = None,
) -> Run:
    """A running run; `hour_recorded` / `date_recorded` are the UTC hour and date of its
    start (now when `start_date` is not given).

    It has no default deadline: only its pipeline's `max_runtime_seconds` bounds it. The
    Watcher has no timeout (a job may rightly run for hours, or report a start from the
    past); an execution running late is the timeliness check's business, which logs and
    alerts it while it keeps running, and the job's end is applied whenever it comes."""
    require_writer(caller)
    errors = Errors()
    marks = {k: watermark(getattr(start, k), k, errors) for k in ("watermark", "next_watermark")}
    errors.raise_any()
    started = to_utc(start.start_date, "start_date") if start.start_date else now or utcnow()
    rows = await sql.fetch(
        "SELECT id, max_runtime_seconds FROM pipeline WHERE id = ? AND organisation_id = ? "
        "LIMIT 1", [start.pipeline_id, caller.organisation_id]) \
        if inputs.storable(start.pipeline_id, "pipeline") else []
    if not rows:
        raise NotFound("pipeline", start.pipeline_id)
    pipeline = lifecycle.PipelineLimits(**rows[0])
    if start.parent_id is not None:
        await _column_of(caller, start.parent_id, "id", "parent execution")
    async with lifecycle.transaction() as (conn, effects):
        run = await lifecycle.open_run(
            conn, effects, caller=caller, pipeline=pipeline, status=RunStatus.RUNNING,
            started_at=started, default_max_runtime=None,
            now=now, clock_field="start_date",
            parent_id=start.parent_id, hour_recorded=started.hour,
            date_recorded=started.date(), **marks)
    return run


def _check_end(end: End) -> End:
    """The values of an end: counts within range, metadata storable JSON."""
    errors = Errors()
    for key in COUNTS:
        value = end.counts.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= MAX_COUNT):
            errors.add(key, f"{key} must be an integer from 0 to {MAX_COUNT}")
    meta = metadata(end.execution_metadata, "execution_metadata", errors)
    errors.raise_any()
    return End(run_id=end.run_id, end_date=to_utc(end.end_date, "end_date"),
               succeeded=end.succeeded, counts={k: end.counts.get(k) for k in COUNTS},
               execution_metadata=meta)


def duration_and_throughput(started: datetime, ended: datetime,
                            total_rows: int | None) -> tuple[int, float | None]:
    """Whole seconds, rounded; rows per second to 4 decimals: 0 for a zero duration (with or
    without `total_rows`, as NOTES says and the original computes it), null without
    `total_rows` otherwise."""
    duration = round((ended - started).total_seconds())
    if not duration:
        return duration, 0.0
    if total_rows is None:
        return duration, None
    return duration, round(total_rows / duration, 4)


async def end_execution(
    *, caller: Caller, end: End, now: datetime | None = None
) -> tuple[Run, bool]:
    """`POST /end_pipeline_execution`. Returns the run and whether this call ended it (the
    same end again is a no-op; a different end of an ended execution is a conflict).

    A successful end also moves the pipeline on, in the same transaction: `watermark`
    becomes its `next_watermark`, `last_target_insert` / `update` / `soft_delete` become the
    end date for each count above 0, and `load_lineage` becomes false. A failed end changes
    none of these."""
    require_writer(caller)
    end = _check_end(end)
    started_at = sql.as_datetime(await _column_of(caller, end.run_id, "started_at"))
    if started_at is not None and end.end_date <= started_at:
        raise InvalidRange.one("end_date", "end_date must be greater than start_date")
    status = RunStatus.SUCCEEDED if end.succeeded else RunStatus.FAILED
    duration, throughput = duration_and_throughput(
        started_at or end.end_date, end.end_date, end.counts["total_rows"])
    stamp = now or utcnow()
    columns = {
        "finished_at": end.end_date, "duration_seconds": duration, "throughput": throughput,
        **{column: end.counts[key] for key, column in COUNTS.items()},
        "execution_metadata": None if end.execution_metadata is None
        else sql.json_param(end.execution_metadata),
    }
    async with lifecycle.transaction() as (conn, effects):
        ended = await lifecycle.move(
            conn, effects, run_id=end.run_id, organisation_id=caller.organisation_id,
            target=status, columns=columns, from_statuses=(RunStatus.RUNNING,), caller=caller,
            now=stamp, pipeline_change=_advance_pipeline(end, stamp) if end.succeeded else None,
            clock_field="end_date")
    if ended is not None:
        return ended, True
    run = await _run_of(caller, end.run_id)
    same = (run.status == status and run.finished_at == end.end_date and all(
        getattr(run, column) == end.counts[key] for key, column in COUNTS.items()))
    if same:
        return run, False
    raise lifecycle.refusal(caller, run, status)


def _advance_pipeline(end: End, stamp: datetime) -> rollups.PipelineChange:
    """What a successful end moves on the pipeline. `stamp` (when this change is made) is the
    pipeline's `updated_at`; the client's end date only goes into the `last_target_*`
    columns."""
    columns = {"inserts": "last_target_insert", "updates": "last_target_update",
               "soft_deletes": "last_target_soft_delete"}
    sets = ["watermark = next_watermark", "load_lineage = ?", "updated_at = ?"]
    params: list[Any] = [False, stamp]
    for key, column in columns.items():
        if (end.counts[key] or 0) > 0:
            # Only forward: an older execution that ends late does not move freshness back.
            sets.append(rollups.advance(column))
            params.extend([end.end_date, end.end_date])
    return rollups.PipelineChange(sets=sets, params=params)


@dataclass
class ExecutionTree:
    """An execution and its direct children (theirs are not read: `children` is empty)."""

    run: Run
    children: list[ExecutionTree] = field(default_factory=list)


async def execution_tree(*, caller: Caller, run_id: int) -> ExecutionTree:
    """An execution with its direct children, ordered by id (roots too); a child's own
    children are not listed (read that child for them), as the Watcher lists them."""
    caller.require_scope(Scope.READ)
    root = await _run_of(caller, run_id)
    children = await sql.select(
        Run, "organisation_id = ? AND parent_id = ? ORDER BY id",
        [caller.organisation_id, root.id])
    return ExecutionTree(root, [ExecutionTree(child) for child in children if child.id != root.id])
