"""The raw baseline: a minimal Starlette app on a raw asyncpg pool.

It does the least a server can do for the same work runwatch does, so that the ratio
runwatch / baseline measures runwatch's own overhead (ORM, validation, GraphQL, routing) and not
the machine, PostgreSQL or the HTTP server, which both share.

- `PATCH /metrics/{connection_id}/{run_id}`: a first run report. The Authorization header is
  compared with a token from the environment (no database: runwatch caches authenticated tokens
  too), the JSON body is parsed, then it issues exactly the statements runwatch issues for a first
  report (`runwatch.resolvers.runs.report_run`, then `runwatch.resolvers.lifecycle.on_terminal`:
  `rollups.record_outcome` and `webhooks.enqueue_run_event`), in one transaction: the
  conditional `UPDATE run ... RETURNING *` scoped by id, organisation and the pipeline's
  connection; the additive `INSERT ... ON CONFLICT` into pipeline_hourly_stats; the
  `UPDATE pipeline ... RETURNING name` of the roll-ups that move; the `SELECT ... FROM
  webhook_endpoint` that finds the endpoint wanting the event (the benchmark's reporting
  organisation has none, so neither side enqueues a delivery); after a success, the
  `INSERT INTO task ... WHERE EXISTS (... anomaly_rule ...)` of anomaly detection (no rules
  here, so it inserts nothing; the run id is in its text, as in runwatch's). Answers 204, or
  409 when the UPDATE completed nothing (in a benchmark: the fresh runs ran out, a failure that
  must show).
- `PATCH /elt/runs/{run_id}`: an ELT-runs append, `{"appendLog": {"level", "message"}}` or
  `{"appendTelemetrySample": {"rows", "bytes", "progress", ...}}`. Token compared as above, the
  JSON parsed and checked the least that yields typed values, then one
  `INSERT INTO run_log_line` (or `run_telemetry_sample`) of the row runwatch would store (the
  same columns), its `seq` from a counter of this process, in its own transaction. 204. It
  neither locks the run nor numbers the series from it nor trims it to its cap: that is what
  runwatch's append does on top, and the ratio measures it.
- `GET /pk/{id}`: `SELECT * FROM connection WHERE id=$1`, the row as JSON (the raw primary-key
  lookup handler that telemetry reads are compared with).
- `GET /health`: readiness.

`bench/sqlcheck.py` compares `report_statements` with the statements runwatch logs for the same
report, so a change to runwatch's SQL shows up as a warning in the benchmark output.

Started by the harness as
`python -m uvicorn --factory bench.baseline:create_app --host 127.0.0.1 --port P ...`, with
BASELINE_DATABASE_URL, BASELINE_ORGANISATION_ID, BASELINE_REPORT_TOKEN, BASELINE_READ_TOKEN,
BASELINE_WRITE_TOKEN (the ELT organisation's) and BASELINE_SEQ_START (the first `seq` its
appends use).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Tortoise's asyncpg pool defaults (tortoise/backends/base_postgres/client.py:
# `minsize` defaults to 1, `maxsize` to 5; runwatch does not override them).
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 5

OPEN_STATUSES = ("running",)  # the statuses a report or an end moves from

# runwatch.resolvers.runs._COMPLETE (+ _OF_CONNECTION), through lifecycle's conditional
# UPDATE: the happy path of a report is one UPDATE ... RETURNING of a running run (a pending
# run cannot be finished), not claimed by a gateway (lifecycle.claim_guard), scoped by
# organisation and by the pipeline's connection.
# A run may not complete before its start: started_at < the next whole second after the
# completion (`runs.completes_before`, in SQL).
COMPLETE_RUN = """
UPDATE run SET status = $1, finished_at = $2, events_delivered = $3, events_evaluations = $4,
               events_custom = $5, dlq_batches = $6, error = $7, updated_at = $8
WHERE id = $9 AND organisation_id = $10 AND status IN ($11) AND gateway_id IS NULL
  AND (started_at IS NULL OR started_at < $12)
  AND pipeline_id IN (SELECT id FROM pipeline WHERE connection_id = $13)
RETURNING *
"""
SECOND = timedelta(seconds=1)

# runwatch.resolvers.rollups._UPSERT_HOURLY, with asyncpg placeholders.
UPSERT_HOURLY = """
INSERT INTO pipeline_hourly_stats
    (pipeline_id, hour, runs_succeeded, runs_failed, events_total, events_evaluations,
     events_custom, dlq_batches)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (pipeline_id, hour) DO UPDATE SET
    runs_succeeded = pipeline_hourly_stats.runs_succeeded + excluded.runs_succeeded,
    runs_failed = pipeline_hourly_stats.runs_failed + excluded.runs_failed,
    events_total = pipeline_hourly_stats.events_total + excluded.events_total,
    events_evaluations = pipeline_hourly_stats.events_evaluations + excluded.events_evaluations,
    events_custom = pipeline_hourly_stats.events_custom + excluded.events_custom,
    dlq_batches = pipeline_hourly_stats.dlq_batches + excluded.dlq_batches
"""

# runwatch.resolvers.rollups._ADVANCE: a roll-up on the pipeline only moves forward in time.
ADVANCE = "{column} = CASE WHEN {column} IS NULL OR {column} < ${a} THEN ${b} ELSE {column} END"

# runwatch.resolvers.tasks._ANOMALY_IF_RULES: after a success, an anomaly-detection task if
# the pipeline has an active rule (the payload a JSON parameter, as there).
ANOMALY_IF_RULES = """
INSERT INTO task (organisation_id, kind, payload, status, due_at, attempts, created_at)
SELECT $1, $2, CAST($3 AS JSONB), $4, $5, 0, $6
WHERE EXISTS (SELECT 1 FROM anomaly_rule WHERE pipeline_id = $7 AND active = $8)
"""

# runwatch.resolvers.webhooks.enqueue_run_event: the endpoint that wants a terminal run's
# event, the pipeline's or the organisation's default.
FIND_ENDPOINT = (
    "SELECT id, pipeline_id, event_types, enabled FROM webhook_endpoint "
    "WHERE organisation_id = $1 AND (pipeline_id = $2 OR pipeline_id IS NULL)"
)

# The rows runwatch's appends store (runwatch.resolvers.run_series.write: the same columns, in
# the same order; `bench/sqlcheck.py` compares the texts).
INSERT_LOG_LINE = (
    "INSERT INTO run_log_line (run_id, seq, at, level, message) VALUES ($1, $2, $3, $4, $5)"
)
INSERT_SAMPLE = (
    "INSERT INTO run_telemetry_sample (run_id, seq, at, rows, bytes, rows_delta, bytes_delta, "
    "progress, phase, resource) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
LOG_LEVELS = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}
SAMPLE_FIELDS = ("rows", "bytes", "rowsDelta", "bytesDelta", "progress", "phase", "resource")

Statement = tuple[str, list[Any]]


def report_status(report: dict[str, Any]) -> str:
    return "failed" if report["error"] or report["batches_dlq"] > 0 else "succeeded"


def complete_statement(organisation_id: int, connection_id: int, run_id: int,
                       report: dict[str, Any], now: datetime) -> Statement:
    """The conditional UPDATE that completes the run (returns the row only if it did)."""
    finished_at = report["completed_at"]
    return COMPLETE_RUN, [
        report_status(report), finished_at, report["events_delivered"], report["evaluations"],
        report["custom_events"], report["batches_dlq"], report["error"], now,
        run_id, organisation_id, *OPEN_STATUSES,
        finished_at.replace(microsecond=0) + SECOND, connection_id,
    ]


def terminal_statements(organisation_id: int, pipeline_id: int, run_id: int, status: str,
                        finished_at: datetime, events: int, evaluations: int, custom_events: int,
                        dlq_batches: int, now: datetime,
                        change: tuple[list[str], list[Any]] | None = None) -> list[Statement]:
    """on_terminal's statements for a run that just became `status`: record_outcome's
    additive hourly upsert, then the pipeline's revision and the roll-ups that move
    (returning its name), with `change`'s assignments (`$?` numbered here) and parameters;
    enqueue_run_event's look-up of the endpoint; after a success, the conditional
    anomaly-detection task."""
    succeeded = status == "succeeded"
    hour = finished_at.replace(minute=0, second=0, microsecond=0)
    statements: list[Statement] = [(UPSERT_HOURLY, [
        pipeline_id, hour, int(succeeded), int(status in ("failed", "timed_out")), events,
        evaluations, custom_events, dlq_batches,
    ])]
    columns = (["last_success_at"] if succeeded else []) + (
        ["last_delivery_at"] if events > 0 else [])
    assignments = "".join(
        ", " + ADVANCE.format(column=c, a=2 * n + 1, b=2 * n + 2) for n, c in enumerate(columns)
    )
    params: list[Any] = [finished_at] * (2 * len(columns))
    sets, values = change or ([], [])
    extra = iter(values)
    for assignment in sets:
        while "$?" in assignment:
            assignment = assignment.replace("$?", f"${len(params) + 1}", 1)
            params.append(next(extra))
        assignments += ", " + assignment
    statements.append((
        f"UPDATE pipeline SET revision = revision + 1{assignments} "
        f"WHERE id = ${len(params) + 1} RETURNING name",
        [*params, pipeline_id],
    ))
    statements.append((FIND_ENDPOINT, [organisation_id, pipeline_id]))
    if succeeded:
        statements.append((ANOMALY_IF_RULES, [
            organisation_id, "anomaly_detection",
            json.dumps({"run_id": int(run_id)}, separators=(",", ":")),  # sql.json_param's
            "pending", now, now, pipeline_id, True]))
    return statements


def rollup_statements(organisation_id: int, pipeline_id: int, run_id: int,
                      report: dict[str, Any], now: datetime) -> list[Statement]:
    """on_terminal's statements after a first report (see `terminal_statements`)."""
    return terminal_statements(
        organisation_id, pipeline_id, run_id, report_status(report), report["completed_at"],
        report["events_delivered"], report["evaluations"] or 0, report["custom_events"] or 0,
        report["batches_dlq"], now)


def report_statements(organisation_id: int, connection_id: int, run_id: int, pipeline_id: int,
                      report: dict[str, Any], now: datetime) -> list[Statement]:
    """Every statement of a first report, in order (for the SQL equivalence check)."""
    return [complete_statement(organisation_id, connection_id, run_id, report, now),
            *rollup_statements(organisation_id, pipeline_id, run_id, report, now)]


def parse_report(body: Any) -> dict[str, Any] | None:
    """The least parsing that yields typed values (None: not a usable report)."""
    if not isinstance(body, dict):
        return None
    try:
        completed_at = datetime.fromisoformat(body["completed_at"])
    except (KeyError, TypeError, ValueError):
        return None
    if completed_at.tzinfo is None:
        completed_at = completed_at.replace(tzinfo=UTC)
    events = body.get("events_delivered")
    if not isinstance(events, int):
        return None
    error = body.get("error")
    return {
        "completed_at": completed_at.astimezone(UTC),
        "events_delivered": events,
        "batches_dlq": int(body.get("batches_dlq") or 0),
        "error": error.strip() or None if isinstance(error, str) else None,
        "evaluations": body.get("evaluations"),
        "custom_events": body.get("custom_events"),
    }


def _number(value: Any, *, integer: bool) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("not an integer")
        return int(value)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return float(value)


def parse_append(body: Any, now: datetime) -> tuple[str, list[Any]] | None:
    """An appendLog or appendTelemetrySample body -> (kind, the row's values after run_id and
    seq), or None when it is neither."""
    if not isinstance(body, dict) or len(body) != 1:
        return None
    try:
        if "appendLog" in body:
            entry = body["appendLog"]
            level = LOG_LEVELS[str(entry.get("level", "info")).lower()]
            message = entry["message"]
            if not isinstance(message, str):
                return None
            return "log", [now, level, message.replace("\x00", "\ufffd")]
        if "appendTelemetrySample" in body:
            point = body["appendTelemetrySample"]
            if not isinstance(point, dict) or set(point) - set(SAMPLE_FIELDS):
                return None
            values = [_number(point.get(k), integer=True)
                      for k in ("rows", "bytes", "rowsDelta", "bytesDelta")]
            progress = _number(point.get("progress"), integer=False)
            return "sample", [now, *values, progress, point.get("phase"), point.get("resource")]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return None


# ------------------------------------------------------------------------ the Watcher round
#
# The four requests of a Watcher job's round (`runwatch/rest_shim/watcher.py`), issuing the
# statements runwatch issues for them (`runwatch.resolvers.watcher_pipelines`,
# `runwatch.resolvers.executions`, `runwatch.resolvers.lifecycle.on_terminal`), in the same
# transactions: a statement runwatch issues outside a transaction runs here on a connection of
# its own from the pool (as Tortoise's do), the others in one transaction on one connection.
# The run's INSERT and the pipeline's UPDATE (`runwatch.resolvers.sql.insert` / `update`) name
# their columns (`bench/sqlcheck.py` compares the lists as sets, so a column added to
# runwatch's models shows up as a difference).

def _quoted(columns: tuple[str, ...]) -> str:
    return ",".join(f'"{c}"' for c in columns)


# The look-ups runwatch makes with `runwatch.resolvers.sql.first` / `select`: `SELECT *`.
# watcher_pipelines._upsert: the type's id found by name, then the pipeline by name, locked.
SELECT_TYPE_BY_NAME = ("SELECT id FROM pipeline_type WHERE organisation_id = $1 AND name = $2 "
                       "LIMIT 1")
SELECT_PIPELINE_BY_NAME = ('SELECT * FROM "pipeline" WHERE organisation_id = $1 AND name = $2 '
                           'LIMIT 1 FOR UPDATE')
# executions.start_execution: the pipeline's maximum runtime, the parent execution's id, then
# the run and the pipeline's revision (rollups.touch_pipeline) in one transaction.
SELECT_PIPELINE_BY_ID = ("SELECT id, max_runtime_seconds FROM pipeline WHERE id = $1 AND "
                         "organisation_id = $2 LIMIT 1")
SELECT_RUN_BY_ID = 'SELECT * FROM "run" WHERE id = $1 AND organisation_id = $2 LIMIT 1'
SELECT_RUN_ID = "SELECT id FROM run WHERE id = $1 AND organisation_id = $2 LIMIT 1"
# executions.end_execution: the start of the execution.
SELECT_RUN_START = "SELECT started_at FROM run WHERE id = $1 AND organisation_id = $2 LIMIT 1"
# What `sql.insert(Run, …)` inserts: every column but the id, in the model's order.
INSERT_RUN_COLUMNS = (
    "status", "created_at", "updated_at", "started_at", "finished_at", "events_delivered",
    "events_evaluations", "events_custom", "dlq_batches", "rows_total", "rows_inserted",
    "rows_updated", "rows_deleted", "bytes", "error", "deadline_at", "environment",
    "correlation_id", "triggered_by", "partition_column", "partition_value",
    "claimed_by_token_id", "telemetry_summary", "hour_recorded", "date_recorded",
    "duration_seconds", "throughput", "watermark", "next_watermark", "execution_metadata",
    "anomaly_flags", "log_seq", "log_base", "sample_seq", "sample_base", "openlineage_run_id",
    "scheduled_at", "openlineage_facets", "gateway_id", "organisation_id", "parent_id",
    "pipeline_id", "target_gateway_id",
)
INSERT_RUN = (
    f'INSERT INTO "run" ({_quoted(INSERT_RUN_COLUMNS)}) '
    f'VALUES ({",".join(f"${n}" for n in range(1, len(INSERT_RUN_COLUMNS) + 1))}) '
    'RETURNING *'
)
TOUCH_PIPELINE = "UPDATE pipeline SET revision = revision + 1 WHERE id = $1"
# executions._END: the conditional UPDATE that ends a running execution.
END_RUN = """
UPDATE run SET status = $1, finished_at = $2, duration_seconds = $3, throughput = $4,
  rows_total = $5, rows_inserted = $6, rows_updated = $7, rows_deleted = $8,
  execution_metadata = $9, updated_at = $10
WHERE id = $11 AND organisation_id = $12 AND status IN ($13) AND gateway_id IS NULL
RETURNING *
"""
# executions._advance_pipeline: after a successful end; each last_target_* only moves forward.
TARGET_COLUMNS = (("inserts", "last_target_insert"), ("updates", "last_target_update"),
                  ("soft_deletes", "last_target_soft_delete"))
WATCHER_COUNTS = {"total_rows": "rows_total", "inserts": "rows_inserted",
                  "updates": "rows_updated", "soft_deletes": "rows_deleted"}
# What POST /pipeline may define (watcher_pipelines.DEFINITION: its digest covers these).
DEFINITION = ("pipeline_type_name", "pipeline_metadata", "freshness_number",
              "freshness_datepart", "timeliness_number", "timeliness_datepart")
KEEP_CASE = {"watermark", "next_watermark"}


class Fail(Exception):
    """An answer other than the round's: (status, detail)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class Db:
    """Where the Watcher handlers send statements: a pool (a statement outside a transaction
    takes a connection of its own, as Tortoise's do) or one connection (the SQL check).
    `log`, when given, records every statement with its parameters."""

    def __init__(self, target: Any, log: list[Statement] | None = None) -> None:
        self.target, self.log = target, log

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        if self.log is not None:
            self.log.append((sql, list(args)))
        return await self.target.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        if self.log is not None:
            self.log.append((sql, list(args)))
        await self.target.execute(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Db]:
        if isinstance(self.target, asyncpg.Pool):
            async with self.target.acquire() as conn, conn.transaction():
                yield Db(conn, self.log)
        else:
            async with self.target.transaction():
                yield self


def watcher_body(body: Any) -> dict[str, Any]:
    """The Watcher's wire convention: top-level strings trimmed and lower-cased, but the
    watermarks (only trimmed)."""
    if not isinstance(body, dict):
        raise Fail(422, "not an object")
    return {k: (v.strip() if k in KEEP_CASE else v.strip().lower()) if isinstance(v, str) else v
            for k, v in body.items()}


def _int_field(body: dict[str, Any], key: str, required: bool = True) -> int | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Fail(422, f"{key} must be an integer")
    return value


def _mark(value: Any) -> str | None:
    return None if value is None else str(value).strip()


def _when(value: Any, key: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).strip().upper())
    except ValueError:
        raise Fail(422, f"{key} must be an ISO 8601 date-time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def definition_digest(sent: dict[str, Any]) -> str:
    """watcher_pipelines.digest: canonical JSON, SHA-256."""
    canonical = json.dumps(sent, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def watcher_pipeline(db: Db, organisation_id: int, raw: Any,
                           now: datetime) -> tuple[int, dict[str, Any]]:
    """POST /pipeline, the found path (the round's): the type and the pipeline found by name,
    the pipeline locked, the next watermark stored when it changed. 200."""
    body = watcher_body(raw)
    name, type_name = body.get("name"), body.get("pipeline_type_name")
    if not isinstance(name, str) or not name or not isinstance(type_name, str) or not type_name:
        raise Fail(422, "name and pipeline_type_name are required")
    next_mark = _mark(body.get("next_watermark"))
    sent = {k: body[k] for k in DEFINITION if k in body}
    if set(sent) - {"pipeline_type_name"}:
        raise Fail(422, "the baseline only handles a definition of pipeline_type_name")
    async with db.transaction() as tx:
        types = await tx.fetch(SELECT_TYPE_BY_NAME, organisation_id, type_name)
        if not types:
            raise Fail(409, "the baseline only finds pipeline types")
        rows = await tx.fetch(SELECT_PIPELINE_BY_NAME, organisation_id, name)
        if not rows:
            raise Fail(409, "the baseline only finds pipelines")
        pipeline = rows[0]
        changes: dict[str, Any] = {}
        if "next_watermark" in body and next_mark != pipeline["next_watermark"]:
            changes["next_watermark"] = next_mark
        new_digest = definition_digest(sent)
        if new_digest != pipeline["input_digest"]:
            changes["input_digest"] = new_digest
            changes["pipeline_type_id"] = types[0]["id"]
        if changes:
            changes["updated_at"] = now
            sets = ", ".join(f'"{column}" = ${n}' for n, column in enumerate(changes, 1))
            await tx.execute(f'UPDATE "pipeline" SET {sets} WHERE "id" = ${len(changes) + 1}',
                             *changes.values(), pipeline["id"])
    answer = {"id": pipeline["id"], "active": pipeline["active"],
              "load_lineage": pipeline["load_lineage"]}
    if "next_watermark" in body:
        answer["watermark"] = pipeline["watermark"]
    return 200, answer


async def watcher_start(db: Db, organisation_id: int, token_id: int | None, raw: Any,
                        now: datetime) -> tuple[int, dict]:
    """POST /start_pipeline_execution: a running run of the pipeline (a child of `parent_id`
    when sent). 201 {"id"}."""
    body = watcher_body(raw)
    pipeline_id = _int_field(body, "pipeline_id")
    parent_id = _int_field(body, "parent_id", required=False)
    started = _when(body["start_date"], "start_date") if body.get("start_date") else now
    rows = await db.fetch(SELECT_PIPELINE_BY_ID, pipeline_id, organisation_id)
    if not rows:
        raise Fail(404, "pipeline not found")
    if parent_id is not None and not await db.fetch(SELECT_RUN_ID, parent_id, organisation_id):
        raise Fail(404, "parent execution not found")
    runtime = rows[0]["max_runtime_seconds"]
    values = dict.fromkeys(INSERT_RUN_COLUMNS)
    values.update(
        status="running", created_at=now, updated_at=now, started_at=started,
        # A Watcher execution has no default deadline: only its pipeline's maximum runtime.
        deadline_at=started + timedelta(seconds=runtime) if runtime else None,
        environment="default", claimed_by_token_id=token_id, hour_recorded=started.hour,
        date_recorded=started.date(), watermark=_mark(body.get("watermark")),
        next_watermark=_mark(body.get("next_watermark")), log_seq=0, log_base=0, sample_seq=0,
        sample_base=0, organisation_id=organisation_id, parent_id=parent_id,
        pipeline_id=pipeline_id)
    async with db.transaction() as tx:
        created = await tx.fetch(INSERT_RUN, *values.values())
        await tx.execute(TOUCH_PIPELINE, pipeline_id)
    return 201, {"id": created[0]["id"]}


async def watcher_end(db: Db, organisation_id: int, raw: Any, now: datetime) -> int:
    """POST /end_pipeline_execution: the running execution ended; on_terminal's statements,
    whose UPDATE of the pipeline also moves, after a success, its watermark and
    last_target_* on. 204."""
    body = watcher_body(raw)
    run_id = _int_field(body, "id")
    if "end_date" not in body:
        raise Fail(422, "end_date is required")
    end_date = _when(body["end_date"], "end_date")
    succeeded = body.get("completed_successfully")
    if not isinstance(succeeded, bool):
        raise Fail(422, "completed_successfully must be a boolean")
    counts = {k: _int_field(body, k, required=False) for k in WATCHER_COUNTS}
    if body.get("execution_metadata") is not None:
        raise Fail(422, "the baseline does not store execution_metadata")
    rows = await db.fetch(SELECT_RUN_START, run_id, organisation_id)
    if not rows:
        raise Fail(404, "pipeline execution not found")
    started = rows[0]["started_at"]
    if started is not None and end_date <= started:
        raise Fail(400, "end_date must be greater than start_date")
    duration = round((end_date - (started or end_date)).total_seconds())
    total = counts["total_rows"]
    throughput = None if total is None else (round(total / duration, 4) if duration else 0.0)
    status = "succeeded" if succeeded else "failed"
    async with db.transaction() as tx:
        ended = await tx.fetch(END_RUN, status, end_date, duration, throughput,
                               *counts.values(), None, now, run_id, organisation_id, "running")
        if not ended:
            # Already ended: runwatch answers 204 for the same end again, 409 otherwise; the
            # benchmark never ends an execution twice, so this must show as a failure.
            raise Fail(409, "pipeline execution already ended")
        row = ended[0]
        pipeline_id = row["pipeline_id"]
        change: tuple[list[str], list[Any]] | None = None
        if succeeded:  # the watermark and last_target_* move on, in the roll-ups' UPDATE
            change = (["watermark = next_watermark", "load_lineage = $?", "updated_at = $?"],
                      [False, now])
            for key, column in TARGET_COLUMNS:
                if (counts[key] or 0) > 0:
                    change[0].append(f"{column} = CASE WHEN {column} IS NULL OR {column} < $? "
                                     f"THEN $? ELSE {column} END")
                    change[1].extend([end_date, end_date])
        for sql, params in terminal_statements(
            organisation_id, pipeline_id, run_id, row["status"], row["finished_at"],
            row["events_delivered"] or 0, row["events_evaluations"] or 0,
            row["events_custom"] or 0, row["dlq_batches"] or 0, now, change,
        ):
            # As Tortoise's client does: rows fetched when the statement returns some.
            if sql.startswith("SELECT") or "RETURNING" in sql:
                await tx.fetch(sql, *params)
            else:
                await tx.execute(sql, *params)
    return 204


def iso_z(moment: datetime | None) -> str | None:
    """runwatch's wire form of an instant: UTC, `Z`, microseconds only when there are some."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _json_column(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


_DONE = {"succeeded": True, "failed": False, "timed_out": False, "cancelled": False}


def execution_json(row: Any, children: list[dict[str, Any]]) -> dict[str, Any]:
    """The shim's execution_json + child_executions, from a row of `run`."""
    return {
        "id": row["id"], "parent_id": row["parent_id"], "pipeline_id": row["pipeline_id"],
        "start_date": iso_z(row["started_at"]), "end_date": iso_z(row["finished_at"]),
        "duration_seconds": row["duration_seconds"],
        "completed_successfully": _DONE.get(row["status"]),
        "inserts": row["rows_inserted"], "updates": row["rows_updated"],
        "soft_deletes": row["rows_deleted"], "total_rows": row["rows_total"],
        "watermark": row["watermark"], "next_watermark": row["next_watermark"],
        "execution_metadata": _json_column(row["execution_metadata"]),
        "anomaly_flags": _json_column(row["anomaly_flags"]),
        "throughput": row["throughput"], "hour_recorded": row["hour_recorded"],
        "date_recorded": row["date_recorded"].isoformat() if row["date_recorded"] else None,
        "status": row["status"], "child_executions": children,
    }


async def watcher_execution(db: Db, organisation_id: int,
                            run_id: int) -> tuple[int, dict[str, Any]]:
    """GET /pipeline_execution/{id}: the execution and its direct children, theirs not read
    (executions.execution_tree). 200."""
    rows = await db.fetch(SELECT_RUN_BY_ID, run_id, organisation_id)
    if not rows:
        raise Fail(404, "pipeline execution not found")
    root = rows[0]
    level = await db.fetch('SELECT * FROM "run" WHERE organisation_id = $1 AND parent_id = $2 '
                           'ORDER BY id', organisation_id, root["id"])
    children = [execution_json(child, []) for child in level if child["id"] != root["id"]]
    return 200, execution_json(root, children)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def create_app() -> Starlette:
    database_url = os.environ["BASELINE_DATABASE_URL"]
    organisation_id = int(os.environ["BASELINE_ORGANISATION_ID"])
    report_auth = "Bearer " + os.environ["BASELINE_REPORT_TOKEN"]
    read_auth = "Bearer " + os.environ["BASELINE_READ_TOKEN"]
    write_auth = "Bearer " + os.environ.get("BASELINE_WRITE_TOKEN", "")
    watcher_organisation = int(os.environ.get("BASELINE_WATCHER_ORGANISATION_ID", "0"))
    watcher_auth = "Bearer " + os.environ.get("BASELINE_WATCHER_TOKEN", "")
    watcher_token_id = int(os.environ.get("BASELINE_WATCHER_TOKEN_ID", "0")) or None
    # Unique (run_id, seq) whatever the run: one counter for every append of this process.
    seq = itertools.count(int(os.environ.get("BASELINE_SEQ_START", "1")))
    pool: asyncpg.Pool | None = None

    async def _keep_session(conn: asyncpg.Connection) -> None:
        """As runwatch's pool (`runwatch.db._keep_session`): a connection goes back without
        asyncpg's reset query, so both sides make the same round trips."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(
            database_url, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE, reset=_keep_session
        )
        try:
            yield
        finally:
            await pool.close()

    async def report(request: Request) -> Response:
        if request.headers.get("authorization") != report_auth:
            return JSONResponse({"detail": "Invalid token."}, status_code=401)
        connection_id = int(request.path_params["connection_id"])
        run_id = int(request.path_params["run_id"])
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        parsed = parse_report(body)
        if parsed is None:
            return JSONResponse({"detail": "bad report"}, status_code=400)
        assert pool is not None
        sql, params = complete_statement(organisation_id, connection_id, run_id, parsed,
                                         datetime.now(UTC))
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(sql, *params)
            if not rows:
                # Unknown, foreign or already completed: in a benchmark this means the fresh
                # runs ran out, which must show up as a failure (runwatch would answer 204 for
                # an identical replay, 409 for a different one).
                return JSONResponse({"detail": "not completed"}, status_code=409)
            for rollup_sql, rollup_params in rollup_statements(
                organisation_id, rows[0]["pipeline_id"], run_id, parsed, datetime.now(UTC)
            ):
                # As Tortoise's client does: rows fetched when the statement returns some.
                if rollup_sql.startswith("SELECT") or "RETURNING" in rollup_sql:
                    await conn.fetch(rollup_sql, *rollup_params)
                else:
                    await conn.execute(rollup_sql, *rollup_params)
        return Response(status_code=204)

    async def append(request: Request) -> Response:
        if request.headers.get("authorization") != write_auth:
            return JSONResponse({"error": "Invalid token."}, status_code=401)
        run_id = int(request.path_params["run_id"])
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        parsed = parse_append(body, datetime.now(UTC))
        if parsed is None:
            return JSONResponse({"error": "bad append"}, status_code=400)
        kind, values = parsed
        assert pool is not None
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(INSERT_LOG_LINE if kind == "log" else INSERT_SAMPLE,
                               run_id, next(seq), *values)
        return Response(status_code=204)

    async def pk(request: Request) -> Response:
        if request.headers.get("authorization") != read_auth:
            return JSONResponse({"detail": "Invalid token."}, status_code=401)
        assert pool is not None
        row = await pool.fetchrow("SELECT * FROM connection WHERE id=$1",
                                  int(request.path_params["id"]))
        if row is None:
            return JSONResponse({"detail": "Not found."}, status_code=404)
        data = {key: _jsonable(value) for key, value in row.items()}
        if isinstance(data.get("settings"), str):
            data["settings"] = json.loads(data["settings"])
        return JSONResponse(data)

    async def watcher(request: Request, handle: Callable[[Db, Any], Awaitable[Any]]) -> Response:
        """The Watcher routes: the token compared as above, the body parsed, then `handle`."""
        if request.headers.get("authorization") != watcher_auth:
            return JSONResponse({"detail": "invalid token."}, status_code=401)
        body: Any = None
        if request.method == "POST":
            try:
                body = json.loads(await request.body())
            except ValueError:
                return JSONResponse({"detail": "json decode error"}, status_code=422)
        assert pool is not None
        try:
            answer = await handle(Db(pool), body)
        except Fail as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status)
        if isinstance(answer, int):
            return Response(status_code=answer)
        return JSONResponse(answer[1], status_code=answer[0])

    async def post_pipeline(request: Request) -> Response:
        return await watcher(request, lambda db, body: watcher_pipeline(
            db, watcher_organisation, body, datetime.now(UTC)))

    async def start_execution(request: Request) -> Response:
        return await watcher(request, lambda db, body: watcher_start(
            db, watcher_organisation, watcher_token_id, body, datetime.now(UTC)))

    async def end_execution(request: Request) -> Response:
        return await watcher(request, lambda db, body: watcher_end(
            db, watcher_organisation, body, datetime.now(UTC)))

    async def get_execution(request: Request) -> Response:
        run_id = int(request.path_params["run_id"])
        return await watcher(request, lambda db, body: watcher_execution(
            db, watcher_organisation, run_id))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/metrics/{connection_id:int}/{run_id:int}", report, methods=["PATCH"]),
            Route("/elt/runs/{run_id:int}", append, methods=["PATCH"]),
            Route("/pk/{id:int}", pk, methods=["GET"]),
            Route("/pipeline", post_pipeline, methods=["POST"]),
            Route("/start_pipeline_execution", start_execution, methods=["POST"]),
            Route("/end_pipeline_execution", end_execution, methods=["POST"]),
            Route("/pipeline_execution/{run_id:int}", get_execution, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
