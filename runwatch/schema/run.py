"""Runs: the run type, its relations, and the run queries and mutations (`startRun`,
`reportRun`).

Two relations point up the import order (see `runwatch.schema.types`): `Run.pipeline`
(`runwatch.schema.pipeline` lists a pipeline's runs) and `Run.webhookDeliveries`
(`runwatch.schema.webhook`'s deliveries name their run)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from runwatch.models import Run as RunModel
from runwatch.models import RunStatus as RunStatusModel
from runwatch.resolvers import runs as runs_api
from runwatch.resolvers.batch_reads import Window
from runwatch.resolvers.run_series import LOGS, SAMPLES
from runwatch.schema.checks import AnomalyResult
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
from runwatch.schema.gateway import Gateway
from runwatch.schema.run_series import LogLine, RunTelemetrySummary, TelemetrySample
from runwatch.schema.telemetry import EventCounts
from runwatch.schema.types import (
    CHILDREN_DEFAULT,
    BigInt,
    Page,
    short_list,
    short_list_help,
)

PipelineRef = strawberry.LazyType("Pipeline", "runwatch.schema.pipeline")
WebhookDeliveryRef = strawberry.LazyType("WebhookDelivery", "runwatch.schema.webhook")

RunStatus = strawberry.enum(
    RunStatusModel, description="The one run state machine: pending -> running -> terminal."
)


@strawberry.type(description="One execution of a pipeline with its typed metrics.")
class Run:
    id: strawberry.ID
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None = strawberry.field(
        description="When this run times out if it is still open (set when it starts).")
    events_delivered: BigInt | None  # type: ignore[valid-type]
    events_by_type: EventCounts | None
    dlq_batches: int | None
    rows_total: BigInt | None  # type: ignore[valid-type]
    rows_inserted: BigInt | None  # type: ignore[valid-type]
    rows_updated: BigInt | None  # type: ignore[valid-type]
    rows_deleted: BigInt | None  # type: ignore[valid-type]
    bytes: BigInt | None  # type: ignore[valid-type]
    error: str | None
    environment: str
    correlation_id: str | None
    triggered_by: str | None
    partition_column: str | None
    partition_value: str | None
    telemetry_summary: RunTelemetrySummary
    log_lines_dropped: BigInt = strawberry.field(  # type: ignore[valid-type]
        description="Log lines that fell out of the 500-line cap.")
    telemetry_samples_dropped: BigInt = strawberry.field(  # type: ignore[valid-type]
        description="Samples that fell out of the 2000-sample cap.")
    hour_recorded: int | None = strawberry.field(description="UTC hour of the start.")
    duration_seconds: BigInt | None  # type: ignore[valid-type]
    throughput: float | None = strawberry.field(description="Total rows per second.")
    watermark: str | None
    next_watermark: str | None
    execution_metadata: JSON | None
    anomaly_flags: JSON | None
    scheduled_at: datetime | None = strawberry.field(
        description="OpenLineage's nominalTime: when the run was scheduled to start.")
    openlineage_run_id: str | None = strawberry.field(
        description="The OpenLineage run id (a UUID) of a run reported by OpenLineage events.")
    openlineage_facets: JSON | None = strawberry.field(
        description="The OpenLineage facets runwatch has no column for (`run.<name>`, "
                    "`job.<name>`; 64 KiB at most, the dropped ones named in `_dropped`).")
    parent_id: strawberry.Private[int | None]
    pipeline_id: strawberry.Private[int]
    gateway_id: strawberry.Private[int | None]
    target_gateway_id: strawberry.Private[int | None]

    @staticmethod
    def of(m: RunModel) -> Run:
        by_type = None
        if m.events_evaluations is not None or m.events_custom is not None:
            by_type = EventCounts(evaluations=m.events_evaluations or 0,
                                  custom_events=m.events_custom or 0,
                                  total=m.events_delivered or 0)
        return Run(
            id=strawberry.ID(str(m.id)), status=m.status,
            created_at=m.created_at, updated_at=m.updated_at, started_at=m.started_at,
            finished_at=m.finished_at, deadline_at=m.deadline_at,
            events_delivered=m.events_delivered,
            events_by_type=by_type, dlq_batches=m.dlq_batches, rows_total=m.rows_total,
            rows_inserted=m.rows_inserted, rows_updated=m.rows_updated,
            rows_deleted=m.rows_deleted, bytes=m.bytes, error=m.error,
            environment=m.environment, correlation_id=m.correlation_id,
            triggered_by=m.triggered_by, partition_column=m.partition_column,
            partition_value=m.partition_value,
            telemetry_summary=RunTelemetrySummary.of(m),
            log_lines_dropped=LOGS.dropped(m.log_seq, m.log_base),
            telemetry_samples_dropped=SAMPLES.dropped(m.sample_seq, m.sample_base),
            hour_recorded=m.hour_recorded, duration_seconds=m.duration_seconds,
            throughput=m.throughput, watermark=m.watermark, next_watermark=m.next_watermark,
            execution_metadata=m.execution_metadata, anomaly_flags=m.anomaly_flags,
            scheduled_at=m.scheduled_at, openlineage_run_id=m.openlineage_run_id,
            openlineage_facets=m.openlineage_facets,
            parent_id=m.parent_id,  # type: ignore[attr-defined]
            pipeline_id=m.pipeline_id,  # type: ignore[attr-defined]
            gateway_id=m.gateway_id,  # type: ignore[attr-defined]
            target_gateway_id=m.target_gateway_id,  # type: ignore[attr-defined]
        )

    @strawberry.field
    async def pipeline(self, info: Info) -> PipelineRef:
        info.context.require_caller()
        row = await info.context.loaders.pipeline.load(self.pipeline_id)
        return PipelineRef.resolve_type().of(row)

    @strawberry.field(description="The run this one is a child of (Watcher executions nest).")
    async def parent(self, info: Info) -> Run | None:
        if self.parent_id is None:
            return None
        info.context.require_caller()
        row = await info.context.loaders.run.load(self.parent_id)
        return Run.of(row) if row else None

    @strawberry.field(description="Direct children, oldest first (ask for their children in "
                      "turn for any depth).")
    async def children(
        self, info: Info,
        first: Annotated[int, strawberry.argument(
            description=short_list_help(CHILDREN_DEFAULT))] = CHILDREN_DEFAULT,
    ) -> list[Run]:
        info.context.require_caller()
        rows = await info.context.loaders.children_of_run.load(int(self.id))
        return [Run.of(r) for r in short_list(rows, first, f"run {self.id}'s children")]

    @strawberry.field(description="This run's flagged metrics.")
    async def anomaly_results(self, info: Info) -> list[AnomalyResult]:
        info.context.require_caller()
        rows = await info.context.loaders.anomaly_results_of_run.load(int(self.id))
        return [AnomalyResult.of(r) for r in rows]

    @strawberry.field(description="The gateway that claimed this run, if one did.")
    async def gateway(self, info: Info) -> Gateway | None:
        return await _gateway(info, self.gateway_id)

    @strawberry.field(description="The gateway this run is reserved for, if any.")
    async def target_gateway(self, info: Info) -> Gateway | None:
        return await _gateway(info, self.target_gateway_id)

    @strawberry.field(description="The kept log lines (newest 500), oldest first.")
    async def log_entries(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Page[LogLine]:
        info.context.require_caller()
        page = await info.context.loaders.log_page.load(
            (int(self.id), Window(first, after), None))
        return Page.of(page, LogLine.of)

    @strawberry.field(description="The kept telemetry samples (newest 2000), oldest first.")
    async def telemetry_samples(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Page[TelemetrySample]:
        info.context.require_caller()
        page = await info.context.loaders.sample_page.load(
            (int(self.id), Window(first, after), None))
        return Page.of(page, TelemetrySample.of)

    @strawberry.field(description="Webhook deliveries of this run's terminal event.")
    async def webhook_deliveries(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Page[WebhookDeliveryRef]:
        info.context.require_caller()
        page = await info.context.loaders.deliveries_of_run.load(
            (int(self.id), Window(first, after), None))
        return Page.of(page, WebhookDeliveryRef.resolve_type().of)


async def _gateway(info: Info, gateway_id: int | None) -> Gateway | None:
    if gateway_id is None:
        return None
    info.context.require_caller()
    row = await info.context.loaders.gateway.load(gateway_id)
    return Gateway.of(row) if row else None


async def runs_page(
    info: Info, *, parent: int, first: int | None, after: str | None,
    status: list[RunStatus] | None, of_connection: bool,
) -> Page[Run]:
    """`Pipeline.runs` and `Connection.runs`: a page of a parent's runs, newest first, read
    for every parent of a list at once."""
    info.context.require_caller()
    loaders = info.context.loaders
    loader = loaders.runs_of_connection if of_connection else loaders.runs_of_pipeline
    page = await loader.load((parent, Window(first, after), tuple(sorted(set(status or ())))))
    return Page.of(page, Run.of)


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
class HoldsRun:
    """A mutation's answer that holds the run it changed: the run's GraphQL object (some
    forty fields) is built only when `run` is selected (a reporter that asks for
    `__typename` alone skips it). Not in the schema itself: only its subclasses are."""

    row: strawberry.Private[RunModel]

    @strawberry.field
    def run(self) -> Run:
        return Run.of(self.row)


@strawberry.type
class StartRunSuccess(HoldsRun):
    pass


@strawberry.type
class ReportRunSuccess(HoldsRun):
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
    ) -> Page[Run]:
        caller = info.context.require_caller()

        async def call():
            return await runs_api.list_runs(
                caller=caller, first=first, after=after,
                pipeline_id=filter_id(pipeline_id, "pipeline"),
                connection_id=filter_id(connection_id, "connection"),
                statuses=status or None,
                started_after=started_after, started_before=started_before)

        return Page.of(await call(), Run.of)


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
            return StartRunSuccess(row=run)

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
            return ReportRunSuccess(row=run, changed=changed)

        return await as_data(call)  # type: ignore[return-value]
