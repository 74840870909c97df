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
import itertools
import json
import math
import os
from collections.abc import AsyncIterator
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

OPEN_STATUSES = ("pending", "running")

# runwatch.resolvers.runs._COMPLETE (+ _OF_CONNECTION): the happy path of a report is one
# conditional UPDATE ... RETURNING, scoped by organisation and by the pipeline's connection.
# A run may not complete before its start: started_at < the next whole second after the
# completion (`runs.completes_before`, in SQL).
COMPLETE_RUN = """
UPDATE run SET status = $1, finished_at = $2, events_delivered = $3, events_evaluations = $4,
               events_custom = $5, dlq_batches = $6, error = $7, updated_at = $8
WHERE id = $9 AND organisation_id = $10 AND status IN ($11, $12)
  AND (started_at IS NULL OR started_at < $13)
  AND pipeline_id IN (SELECT id FROM pipeline WHERE connection_id = $14)
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


def rollup_statements(organisation_id: int, pipeline_id: int, run_id: int,
                      report: dict[str, Any], now: datetime) -> list[Statement]:
    """on_terminal's statements: record_outcome's additive hourly upsert, then the pipeline's
    revision and the roll-ups that move (returning its name); enqueue_run_event's look-up of
    the endpoint; after a success, the conditional anomaly-detection task."""
    finished_at: datetime = report["completed_at"]
    events = report["events_delivered"]
    status = report_status(report)
    succeeded = status == "succeeded"
    hour = finished_at.replace(minute=0, second=0, microsecond=0)
    statements: list[Statement] = [(UPSERT_HOURLY, [
        pipeline_id, hour, int(succeeded), int(status in ("failed", "timed_out")), events,
        report["evaluations"] or 0, report["custom_events"] or 0, report["batches_dlq"],
    ])]
    columns = (["last_success_at"] if succeeded else []) + (
        ["last_delivery_at"] if events > 0 else [])
    assignments = "".join(
        ", " + ADVANCE.format(column=c, a=2 * n + 1, b=2 * n + 2) for n, c in enumerate(columns)
    )
    statements.append((
        f"UPDATE pipeline SET revision = revision + 1{assignments} "
        f"WHERE id = ${2 * len(columns) + 1} RETURNING name",
        [*[finished_at] * (2 * len(columns)), pipeline_id],
    ))
    statements.append((FIND_ENDPOINT, [organisation_id, pipeline_id]))
    if succeeded:
        statements.append((ANOMALY_IF_RULES, [
            organisation_id, "anomaly_detection", json.dumps({"run_id": int(run_id)}),
            "pending", now, now, pipeline_id, True]))
    return statements


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


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def create_app() -> Starlette:
    database_url = os.environ["BASELINE_DATABASE_URL"]
    organisation_id = int(os.environ["BASELINE_ORGANISATION_ID"])
    report_auth = "Bearer " + os.environ["BASELINE_REPORT_TOKEN"]
    read_auth = "Bearer " + os.environ["BASELINE_READ_TOKEN"]
    write_auth = "Bearer " + os.environ.get("BASELINE_WRITE_TOKEN", "")
    # Unique (run_id, seq) whatever the run: one counter for every append of this process.
    seq = itertools.count(int(os.environ.get("BASELINE_SEQ_START", "1")))
    pool: asyncpg.Pool | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(
            database_url, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE
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

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/metrics/{connection_id:int}/{run_id:int}", report, methods=["PATCH"]),
            Route("/elt/runs/{run_id:int}", append, methods=["PATCH"]),
            Route("/pk/{id:int}", pk, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
