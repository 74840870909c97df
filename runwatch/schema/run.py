"""Run queries and mutations (`startRun`, `reportRun`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from runwatch.resolvers import runs as runs_api
from runwatch.schema.context import Info
from runwatch.schema.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    as_data,
    filter_id,
    or_none,
    parse_id,
)
from runwatch.schema.types import BigInt, Run, RunPage, RunStatus


@strawberry.input
class StartRunInput:
    connection_id: strawberry.ID | None = None
    pipeline_id: strawberry.ID | None = None
    started_at: datetime | None = None


@strawberry.input(description="A run's completion, as a loader reports it.")
class ReportRunInput:
    run_id: strawberry.ID
    completed_at: datetime
    events_delivered: BigInt  # type: ignore[valid-type]
    batches_dlq: int = 0
    error: str | None = None
    evaluations: BigInt | None = None  # type: ignore[valid-type]
    custom_events: BigInt | None = None  # type: ignore[valid-type]


@strawberry.type
class StartRunSuccess:
    run: Run


@strawberry.type
class ReportRunSuccess:
    run: Run
    changed: bool = strawberry.field(
        description="False when this was a replay of the report already recorded.")


StartRunResult = Annotated[
    StartRunSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("StartRunResult"),
]
ReportRunResult = Annotated[
    ReportRunSuccess | NotFoundError | InvalidInputError | ConflictError | PermissionDeniedError,
    strawberry.union("ReportRunResult"),
]


@strawberry.type
class RunQuery:
    @strawberry.field
    async def run(self, info: Info, id: strawberry.ID) -> Run | None:
        caller = info.context.require_caller()
        row = await or_none(lambda: runs_api.get_run(caller=caller, run_id=parse_id(id, "run")))
        return Run.of(row) if row else None

    @strawberry.field(description="Runs newest first, filtered.")
    async def runs(
        self, info: Info, first: int | None = None, after: str | None = None,
        pipeline_id: strawberry.ID | None = None, connection_id: strawberry.ID | None = None,
        status: list[RunStatus] | None = None, started_after: datetime | None = None,
        started_before: datetime | None = None,
    ) -> RunPage:  # type: ignore[valid-type]
        caller = info.context.require_caller()

        async def call():
            return await runs_api.list_runs(
                caller=caller, first=first, after=after,
                pipeline_id=filter_id(pipeline_id, "pipeline"),
                connection_id=filter_id(connection_id, "connection"),
                statuses=status or None,
                started_after=started_after, started_before=started_before)

        return RunPage.of(await call())  # type: ignore[attr-defined]


@strawberry.type
class RunMutation:
    @strawberry.mutation(description="Pre-create a running run (the recurring task's call).")
    async def start_run(self, info: Info, input: StartRunInput) -> StartRunResult:
        caller = info.context.require_caller()

        async def call() -> StartRunSuccess:
            run = await runs_api.start_run(
                caller=caller,
                connection_id=None if input.connection_id is None
                else parse_id(input.connection_id, "connection"),
                pipeline_id=None if input.pipeline_id is None
                else parse_id(input.pipeline_id, "pipeline"),
                started_at=input.started_at,
                default_max_runtime=info.context.options.orphan_window)
            return StartRunSuccess(run=Run.of(run))

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Report a run's completion (needs the `report` scope). "
                         "Replaying the same report is a no-op; a different one conflicts.")
    async def report_run(self, info: Info, input: ReportRunInput) -> ReportRunResult:
        caller = info.context.require_caller()

        async def call() -> ReportRunSuccess:
            run, changed = await runs_api.report_run(
                caller=caller, run_id=parse_id(input.run_id, "run"),
                report=runs_api.RunReport(
                    completed_at=input.completed_at, events_delivered=input.events_delivered,
                    batches_dlq=input.batches_dlq, error=input.error,
                    evaluations=input.evaluations, custom_events=input.custom_events))
            return ReportRunSuccess(run=Run.of(run), changed=changed)

        return await as_data(call)  # type: ignore[return-value]
