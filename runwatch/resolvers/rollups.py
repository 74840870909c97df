"""Roll-ups written in the same transaction as a run's outcome.

Telemetry reads these instead of run history: per pipeline per UTC hour of the finish time
(`pipeline_hourly_stats`), and on the pipeline itself the last success, the last time events
were delivered, and a revision that validates cached telemetry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from runwatch.models import FAILED_STATUSES, RunStatus
from runwatch.resolvers import sql


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Outcome:
    pipeline_id: int
    status: RunStatus
    finished_at: datetime
    events: int = 0
    evaluations: int = 0
    custom_events: int = 0
    dlq_batches: int = 0

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


_UPSERT_HOURLY = """
INSERT INTO pipeline_hourly_stats
    (pipeline_id, hour, runs_succeeded, runs_failed, events_total, events_evaluations,
     events_custom, dlq_batches)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (pipeline_id, hour) DO UPDATE SET
    runs_succeeded = pipeline_hourly_stats.runs_succeeded + excluded.runs_succeeded,
    runs_failed = pipeline_hourly_stats.runs_failed + excluded.runs_failed,
    events_total = pipeline_hourly_stats.events_total + excluded.events_total,
    events_evaluations = pipeline_hourly_stats.events_evaluations + excluded.events_evaluations,
    events_custom = pipeline_hourly_stats.events_custom + excluded.events_custom,
    dlq_batches = pipeline_hourly_stats.dlq_batches + excluded.dlq_batches
"""


@dataclass(frozen=True)
class PipelineChange:
    """More of the pipeline's columns that the run's outcome moves: assignments (`column =
    expression` with `?` placeholders) and their parameters, made by the outcome's one UPDATE
    of the pipeline row (one round trip, one row lock taken once)."""
    sets: Sequence[str]
    params: Sequence[Any]


# Each roll-up on the pipeline only moves forward in time, so late or concurrent reports
# cannot move it back.
_ADVANCE = "{column} = CASE WHEN {column} IS NULL OR {column} < ? THEN ? ELSE {column} END"


def advance(column: str) -> str:
    """The assignment that moves the time in `column` forward to its parameter (given twice),
    never back."""
    return _ADVANCE.format(column=column)


async def record_outcome(conn: BaseDBAsyncClient, outcome: Outcome,
                         change: PipelineChange | None = None) -> str:
    """Add one terminal run to the roll-ups (and make `change` to the pipeline in the same
    UPDATE). Call inside the transaction that made it terminal. Returns the pipeline's name
    (for the events that announce the outcome).

    A cancelled run counts neither as a success nor as a failure (it delivered nothing on
    purpose), but its events, if any, still count.
    """
    succeeded = outcome.status == RunStatus.SUCCEEDED
    await sql.execute(
        _UPSERT_HOURLY,
        [
            outcome.pipeline_id,
            floor_hour(outcome.finished_at),
            int(succeeded),
            int(outcome.failed),
            outcome.events,
            outcome.evaluations,
            outcome.custom_events,
            outcome.dlq_batches,
        ],
        conn,
    )
    columns = (["last_success_at"] if succeeded else []) + (
        ["last_delivery_at"] if outcome.events > 0 else [])
    assignments = "".join(", " + advance(c) for c in columns)
    params: list[Any] = [outcome.finished_at] * (2 * len(columns))
    if change is not None:
        assignments += "".join(", " + assignment for assignment in change.sets)
        params.extend(change.params)
    rows = await sql.fetch(
        f"UPDATE pipeline SET revision = revision + 1{assignments} WHERE id = ? RETURNING name",
        [*params, outcome.pipeline_id],
        conn,
    )
    return str(rows[0]["name"])


async def touch_pipeline(conn: BaseDBAsyncClient, pipeline_id: int) -> None:
    """Mark a pipeline's telemetry as changed (e.g. a run started: it may already be orphaned)."""
    await sql.execute("UPDATE pipeline SET revision = revision + 1 WHERE id = ?", [pipeline_id],
                      conn)
