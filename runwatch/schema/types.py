"""Strawberry types for connections, pipelines, runs and telemetry. Fields only delegate."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Generic, NewType, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.schema.types.base_scalars import DateTimeDefinition

from runwatch.models import Connection as ConnectionModel
from runwatch.models import LogLevel as LogLevelModel
from runwatch.models import Pipeline as PipelineModel
from runwatch.models import Run as RunModel
from runwatch.models import RunLogLine as RunLogLineModel
from runwatch.models import RunStatus as RunStatusModel
from runwatch.models import RunTelemetrySample as RunTelemetrySampleModel
from runwatch.resolvers import run_reads
from runwatch.resolvers import runs as runs_api
from runwatch.resolvers import webhooks as webhooks_api
from runwatch.resolvers.clock import iso
from runwatch.resolvers.pagination import Page
from runwatch.resolvers.run_series import LOGS, SAMPLES
from runwatch.resolvers.run_summary import summary_of
from runwatch.resolvers.telemetry import EventCounts as EventCountsData
from runwatch.resolvers.telemetry import Telemetry as TelemetryData
from runwatch.schema.context import Info

N = TypeVar("N")

BigInt = NewType("BigInt", int)


def _parse_bigint(value: object) -> int:
    """GraphQLError, not ValueError: a bad value is the client's error, shown as such (an
    error the schema did not raise on purpose is masked)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise GraphQLError("BigInt must be an integer")
    try:
        parsed = int(value)
    except ValueError:
        raise GraphQLError("BigInt must be an integer") from None
    if not -(2**63) <= parsed < 2**63:
        raise GraphQLError("BigInt must fit in 64 bits")
    return parsed


BIGINT_SCALAR = strawberry.scalar(
    name="BigInt",
    serialize=int,
    parse_value=_parse_bigint,
    description="A 64-bit integer (counts of events, rows and bytes exceed GraphQL's Int).",
)


# Datetimes read as the REST shims write them (`2026-04-20T11:00:00Z`: UTC with a `Z`), so that
# a person comparing the two surfaces sees the same text; any ISO 8601 offset is accepted.
DATETIME_SCALAR = strawberry.scalar(
    name="DateTime",
    serialize=iso,
    parse_value=DateTimeDefinition.parse_value,
    description="Date with time, ISO 8601: answers are in UTC with a `Z`, as over REST; "
    "inputs may carry any offset.",
)


RunStatus = strawberry.enum(
    RunStatusModel, description="The one run state machine: pending -> running -> terminal."
)
LogLevel = strawberry.enum(LogLevelModel, description="A log line's level.")

if TYPE_CHECKING:
    from runwatch.schema.gateway import Gateway
    from runwatch.schema.watcher import AnomalyResult, PipelineType
    from runwatch.schema.webhook import WebhookDeliveryPage, WebhookEndpoint

GatewayRef = Annotated["Gateway", strawberry.lazy("runwatch.schema.gateway")]
WebhookDeliveryPageRef = Annotated[
    "WebhookDeliveryPage", strawberry.lazy("runwatch.schema.webhook")]
WebhookEndpointRef = Annotated["WebhookEndpoint", strawberry.lazy("runwatch.schema.webhook")]
PipelineTypeRef = Annotated["PipelineType", strawberry.lazy("runwatch.schema.watcher")]
AnomalyResultRef = Annotated["AnomalyResult", strawberry.lazy("runwatch.schema.watcher")]


@strawberry.enum(description="Delivery status; the rule is documented in the README.")
class DeliveryStatus(Enum):
    ACTIVE = "active"
    DEGRADED = "degraded"
    ERROR = "error"
    IDLE = "idle"


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[N]):
    cursor: str
    node: N


@strawberry.type
class EventCounts:
    evaluations: BigInt  # type: ignore[valid-type]
    custom_events: BigInt  # type: ignore[valid-type]
    total: BigInt  # type: ignore[valid-type]

    @staticmethod
    def of(c: EventCountsData) -> EventCounts:
        return EventCounts(evaluations=c.evaluations, custom_events=c.custom_events, total=c.total)


@strawberry.type
class RecentError:
    occurred_at: datetime
    message: str
    run_id: strawberry.ID


@strawberry.type(description="Rolling windows over a connection's or a pipeline's runs.")
class Telemetry:
    status: DeliveryStatus
    status_reason: str
    last_delivery_at: datetime | None
    events_last_24h: EventCounts
    events_last_7d: EventCounts
    failed_deliveries_last_24h: int
    dlq_batches_last_24h: int
    recent_errors: list[RecentError]

    @staticmethod
    def of(t: TelemetryData) -> Telemetry:
        return Telemetry(
            status=DeliveryStatus(t.status),
            status_reason=t.status_reason,
            last_delivery_at=t.last_delivery_at,
            events_last_24h=EventCounts.of(t.events_last_24h),
            events_last_7d=EventCounts.of(t.events_last_7d),
            failed_deliveries_last_24h=t.failed_deliveries_last_24h,
            dlq_batches_last_24h=t.dlq_batches_last_24h,
            recent_errors=[
                RecentError(occurred_at=e.occurred_at, message=e.message,
                            run_id=strawberry.ID(str(e.run_id)))
                for e in t.recent_errors
            ],
        )


def _telemetry(found: TelemetryData | None) -> Telemetry:
    return Telemetry.of(found or TelemetryData())


async def _runs_page(
    info: Info, *, first: int | None, after: str | None, status: list[RunStatus] | None,
    pipeline_id: int | None = None, connection_id: int | None = None,
) -> RunPage:
    caller = info.context.require_caller()
    page = await runs_api.list_runs(
        caller=caller, first=first, after=after, pipeline_id=pipeline_id,
        connection_id=connection_id,
        statuses=status or None,
    )
    return RunPage.of(page)


@strawberry.type(description="A warehouse endpoint. Secrets are never stored or returned.")
class Connection:
    id: strawberry.ID
    name: str
    warehouse_type: str
    settings: JSON
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def of(m: ConnectionModel) -> Connection:
        return Connection(
            id=strawberry.ID(str(m.id)), name=m.name, warehouse_type=m.warehouse_type,
            settings=m.settings, created_at=m.created_at, updated_at=m.updated_at,
        )

    @strawberry.field
    async def telemetry(self, info: Info) -> Telemetry:
        info.context.require_caller()
        return _telemetry(await info.context.loaders.connection_telemetry.load(int(self.id)))

    @strawberry.field
    async def pipelines(self, info: Info) -> list[Pipeline]:
        info.context.require_caller()
        rows = await info.context.loaders.pipelines_of_connection.load(int(self.id))
        return [Pipeline.of(p) for p in rows]

    @strawberry.field(description="Runs of this connection's pipelines, newest first.")
    async def runs(
        self, info: Info, first: int | None = None, after: str | None = None,
        status: list[RunStatus] | None = None,
    ) -> RunPage:
        return await _runs_page(info, first=first, after=after, status=status,
                                connection_id=int(self.id))


@strawberry.type(description="What runs; a connection's delivery pipeline delivers into it.")
class Pipeline:
    id: strawberry.ID
    name: str
    kind: str
    description: str | None
    max_runtime_seconds: int | None = strawberry.field(
        description="A run still open this long after its start times out; null: the "
        "deployment's default.")
    created_at: datetime
    updated_at: datetime | None
    watermark: str | None
    next_watermark: str | None
    pipeline_metadata: JSON | None
    last_target_insert: datetime | None
    last_target_update: datetime | None
    last_target_soft_delete: datetime | None
    freshness_number: int | None
    freshness_datepart: str | None
    mute_freshness_check: bool
    timeliness_number: int | None
    timeliness_datepart: str | None
    mute_timeliness_check: bool
    load_lineage: bool
    active: bool
    connection_id: strawberry.Private[int | None]
    pipeline_type_id: strawberry.Private[int | None]

    @staticmethod
    def of(m: PipelineModel) -> Pipeline:
        return Pipeline(
            id=strawberry.ID(str(m.id)), name=m.name, kind=m.kind, description=m.description,
            max_runtime_seconds=m.max_runtime_seconds, created_at=m.created_at,
            updated_at=m.updated_at, watermark=m.watermark, next_watermark=m.next_watermark,
            pipeline_metadata=m.pipeline_metadata, last_target_insert=m.last_target_insert,
            last_target_update=m.last_target_update,
            last_target_soft_delete=m.last_target_soft_delete,
            freshness_number=m.freshness_number, freshness_datepart=m.freshness_datepart,
            mute_freshness_check=m.mute_freshness_check,
            timeliness_number=m.timeliness_number, timeliness_datepart=m.timeliness_datepart,
            mute_timeliness_check=m.mute_timeliness_check, load_lineage=m.load_lineage,
            active=m.active,
            connection_id=m.connection_id,  # type: ignore[attr-defined]
            pipeline_type_id=m.pipeline_type_id)  # type: ignore[attr-defined]

    @strawberry.field(description="The Watcher pipeline type, if any.")
    async def pipeline_type(self, info: Info) -> PipelineTypeRef | None:
        from runwatch.schema.watcher import PipelineType

        if self.pipeline_type_id is None:
            return None
        info.context.require_caller()
        row = await info.context.loaders.pipeline_type.load(self.pipeline_type_id)
        return PipelineType.of(row) if row else None

    @strawberry.field(description="This pipeline's own webhook endpoint (it wins over the "
                      "organisation's default), if any.")
    async def webhook_endpoint(self, info: Info) -> WebhookEndpointRef | None:
        from runwatch.schema.webhook import WebhookEndpoint

        caller = info.context.require_caller()
        row = await webhooks_api.endpoint_for(caller=caller, pipeline_id=int(self.id))
        return WebhookEndpoint.of(row) if row else None

    @strawberry.field
    async def connection(self, info: Info) -> Connection | None:
        if self.connection_id is None:
            return None
        info.context.require_caller()
        row = await info.context.loaders.connection.load(self.connection_id)
        return Connection.of(row) if row else None

    @strawberry.field
    async def telemetry(self, info: Info) -> Telemetry:
        info.context.require_caller()
        return _telemetry(await info.context.loaders.pipeline_telemetry.load(int(self.id)))

    @strawberry.field(description="This pipeline's runs, newest first.")
    async def runs(
        self, info: Info, first: int | None = None, after: str | None = None,
        status: list[RunStatus] | None = None,
    ) -> RunPage:
        return await _runs_page(info, first=first, after=after, status=status,
                                pipeline_id=int(self.id))


@strawberry.type(description="One structured log line of a run.")
class LogLine:
    seq: BigInt  # type: ignore[valid-type]
    at: datetime
    level: LogLevel  # type: ignore[valid-type]
    message: str

    @staticmethod
    def of(m: RunLogLineModel) -> LogLine:
        return LogLine(seq=m.seq, at=m.at, level=m.level, message=m.message)


@strawberry.type(description="One point of a run's live telemetry.")
class TelemetrySample:
    seq: BigInt  # type: ignore[valid-type]
    at: datetime
    rows: BigInt | None  # type: ignore[valid-type]
    bytes: BigInt | None  # type: ignore[valid-type]
    rows_delta: BigInt | None  # type: ignore[valid-type]
    bytes_delta: BigInt | None  # type: ignore[valid-type]
    progress: float | None
    phase: str | None
    resource: str | None

    @staticmethod
    def of(m: RunTelemetrySampleModel) -> TelemetrySample:
        return TelemetrySample(
            seq=m.seq, at=m.at, rows=m.rows, bytes=m.bytes, rows_delta=m.rows_delta,
            bytes_delta=m.bytes_delta, progress=m.progress, phase=m.phase, resource=m.resource)


@strawberry.type(description="A run's live telemetry summary (shallow-merged by its runner).")
class RunTelemetrySummary:
    rows_loaded: BigInt | None  # type: ignore[valid-type]
    bytes_loaded: BigInt | None  # type: ignore[valid-type]
    progress: float | None
    current_phase: str | None
    current_resource: str | None
    updated_at: datetime | None

    @staticmethod
    def of(m: RunModel) -> RunTelemetrySummary:
        summary = summary_of(m)
        updated = summary.get("updatedAt")
        return RunTelemetrySummary(
            rows_loaded=summary.get("rowsLoaded"), bytes_loaded=summary.get("bytesLoaded"),
            progress=summary.get("progress"), current_phase=summary.get("currentPhase"),
            current_resource=summary.get("currentResource"),
            updated_at=datetime.fromisoformat(updated.replace("Z", "+00:00"))
            if isinstance(updated, str) else None,
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
            parent_id=m.parent_id,  # type: ignore[attr-defined]
            pipeline_id=m.pipeline_id,  # type: ignore[attr-defined]
            gateway_id=m.gateway_id,  # type: ignore[attr-defined]
            target_gateway_id=m.target_gateway_id,  # type: ignore[attr-defined]
        )

    @strawberry.field
    async def pipeline(self, info: Info) -> Pipeline:
        info.context.require_caller()
        row = await info.context.loaders.pipeline.load(self.pipeline_id)
        return Pipeline.of(row)  # type: ignore[arg-type]

    @strawberry.field(description="The run this one is a child of (Watcher executions nest).")
    async def parent(self, info: Info) -> Run | None:
        if self.parent_id is None:
            return None
        info.context.require_caller()
        row = await info.context.loaders.run.load(self.parent_id)
        return Run.of(row) if row else None

    @strawberry.field(description="Direct children, oldest first (ask for their children in "
                      "turn for any depth).")
    async def children(self, info: Info) -> list[Run]:
        info.context.require_caller()
        return [Run.of(r) for r in await info.context.loaders.children_of_run.load(int(self.id))]

    @strawberry.field(description="This run's flagged metrics.")
    async def anomaly_results(self, info: Info) -> list[AnomalyResultRef]:
        from runwatch.schema.watcher import AnomalyResult

        info.context.require_caller()
        rows = await info.context.loaders.anomaly_results_of_run.load(int(self.id))
        return [AnomalyResult.of(r) for r in rows]

    @strawberry.field(description="The gateway that claimed this run, if one did.")
    async def gateway(self, info: Info) -> GatewayRef | None:
        return await _gateway(info, self.gateway_id)

    @strawberry.field(description="The gateway this run is reserved for, if any.")
    async def target_gateway(self, info: Info) -> GatewayRef | None:
        return await _gateway(info, self.target_gateway_id)

    @strawberry.field(description="The kept log lines (newest 500), oldest first.")
    async def log_entries(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> LogLinePage:
        caller = info.context.require_caller()
        page = await run_reads.log_page(caller=caller, run_id=int(self.id), first=first,
                                        after=after)
        return LogLinePage.of(page)

    @strawberry.field(description="The kept telemetry samples (newest 2000), oldest first.")
    async def telemetry_samples(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> TelemetrySamplePage:
        caller = info.context.require_caller()
        page = await run_reads.sample_page(caller=caller, run_id=int(self.id), first=first,
                                           after=after)
        return TelemetrySamplePage.of(page)

    @strawberry.field(description="Webhook deliveries of this run's terminal event.")
    async def webhook_deliveries(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> WebhookDeliveryPageRef:
        from runwatch.schema.webhook import WebhookDeliveryPage

        caller = info.context.require_caller()
        page = await webhooks_api.list_deliveries(
            caller=caller, where=webhooks_api.DeliveryFilter(run_id=int(self.id)),
            first=first, after=after)
        return WebhookDeliveryPage.of(page)


async def _gateway(info: Info, gateway_id: int | None) -> Gateway | None:
    from runwatch.schema.gateway import Gateway

    if gateway_id is None:
        return None
    info.context.require_caller()
    row = await info.context.loaders.gateway.load(gateway_id)
    return Gateway.of(row) if row else None


def _page_parts(page: Page, node: type) -> dict:
    nodes = [node.of(item) for item in page.items]  # type: ignore[attr-defined]
    return {
        "edges": [Edge(cursor=page.cursor(item), node=n)
                  for item, n in zip(page.items, nodes, strict=True)],
        "nodes": nodes,
        "page_info": PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
    }


@strawberry.type
class ConnectionPage:
    edges: list[Edge[Connection]]
    nodes: list[Connection]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page) -> ConnectionPage:
        return cls(**_page_parts(page, Connection))


@strawberry.type
class PipelinePage:
    edges: list[Edge[Pipeline]]
    nodes: list[Pipeline]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page) -> PipelinePage:
        return cls(**_page_parts(page, Pipeline))


@strawberry.type
class RunPage:
    edges: list[Edge[Run]]
    nodes: list[Run]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page) -> RunPage:
        return cls(**_page_parts(page, Run))


@strawberry.type
class LogLinePage:
    edges: list[Edge[LogLine]]
    nodes: list[LogLine]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page) -> LogLinePage:
        return cls(**_page_parts(page, LogLine))


@strawberry.type
class TelemetrySamplePage:
    edges: list[Edge[TelemetrySample]]
    nodes: list[TelemetrySample]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page) -> TelemetrySamplePage:
        return cls(**_page_parts(page, TelemetrySample))
