"""Strawberry types for connections, pipelines, runs and telemetry. Fields only delegate."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Generic, NewType, TypeVar

import strawberry
from strawberry.scalars import JSON

from runwatch.models import Connection as ConnectionModel
from runwatch.models import Pipeline as PipelineModel
from runwatch.models import Run as RunModel
from runwatch.models import RunStatus as RunStatusModel
from runwatch.resolvers import runs as runs_api
from runwatch.resolvers.pagination import Page
from runwatch.resolvers.telemetry import EventCounts as EventCountsData
from runwatch.resolvers.telemetry import Telemetry as TelemetryData
from runwatch.schema.context import Info

N = TypeVar("N")

BigInt = NewType("BigInt", int)


def _parse_bigint(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("BigInt must be an integer")
    parsed = int(value)
    if not -(2**63) <= parsed < 2**63:
        raise ValueError("BigInt must fit in 64 bits")
    return parsed


BIGINT_SCALAR = strawberry.scalar(
    name="BigInt",
    serialize=int,
    parse_value=_parse_bigint,
    description="A 64-bit integer (counts of events, rows and bytes exceed GraphQL's Int).",
)


RunStatus = strawberry.enum(
    RunStatusModel, description="The one run state machine: pending -> running -> terminal."
)


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
    created_at: datetime
    connection_id: strawberry.Private[int | None]

    @staticmethod
    def of(m: PipelineModel) -> Pipeline:
        return Pipeline(id=strawberry.ID(str(m.id)), name=m.name, kind=m.kind,
                        created_at=m.created_at,
                        connection_id=m.connection_id)  # type: ignore[attr-defined]

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


@strawberry.type(description="One execution of a pipeline with its typed metrics.")
class Run:
    id: strawberry.ID
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    events_delivered: BigInt | None  # type: ignore[valid-type]
    events_by_type: EventCounts | None
    dlq_batches: int | None
    rows_total: BigInt | None  # type: ignore[valid-type]
    rows_inserted: BigInt | None  # type: ignore[valid-type]
    rows_updated: BigInt | None  # type: ignore[valid-type]
    rows_deleted: BigInt | None  # type: ignore[valid-type]
    bytes: BigInt | None  # type: ignore[valid-type]
    error: str | None
    pipeline_id: strawberry.Private[int]

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
            finished_at=m.finished_at, events_delivered=m.events_delivered,
            events_by_type=by_type, dlq_batches=m.dlq_batches, rows_total=m.rows_total,
            rows_inserted=m.rows_inserted, rows_updated=m.rows_updated,
            rows_deleted=m.rows_deleted, bytes=m.bytes, error=m.error,
            pipeline_id=m.pipeline_id,  # type: ignore[attr-defined]
        )

    @strawberry.field
    async def pipeline(self, info: Info) -> Pipeline:
        info.context.require_caller()
        row = await info.context.loaders.pipeline.load(self.pipeline_id)
        return Pipeline.of(row)  # type: ignore[arg-type]


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
