"""Pipelines: the pipeline type, its relations, and the pipeline queries.

Two relations point up the import order (see `runwatch.schema.types`): `Pipeline.connection`
(`runwatch.schema.connection` lists a connection's pipelines) and `Pipeline.webhookEndpoint`
(`runwatch.schema.webhook`'s endpoints name their pipeline)."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from runwatch.models import Pipeline as PipelineModel
from runwatch.resolvers import pipelines as pipelines_api
from runwatch.schema.context import Info
from runwatch.schema.errors import filter_id, or_none, parse_id
from runwatch.schema.pipeline_types import PipelineType
from runwatch.schema.run import Run, RunStatus, runs_page
from runwatch.schema.telemetry import Telemetry
from runwatch.schema.types import Page

ConnectionRef = strawberry.LazyType("Connection", "runwatch.schema.connection")
WebhookEndpointRef = strawberry.LazyType("WebhookEndpoint", "runwatch.schema.webhook")


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
    tool: str | None = strawberry.field(description="eltPulse's definition: what runs it.")
    source_type: str | None
    destination_type: str | None
    source_configuration: JSON | None = strawberry.field(
        description="Non-secret source settings.")
    pipeline_code: str | None
    config_yaml: str | None
    workspace_yaml: str | None
    group_name: str | None
    enabled: bool
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
            active=m.active, tool=m.tool, source_type=m.source_type,
            destination_type=m.destination_type, source_configuration=m.source_configuration,
            pipeline_code=m.pipeline_code, config_yaml=m.config_yaml,
            workspace_yaml=m.workspace_yaml, group_name=m.group_name, enabled=m.enabled,
            connection_id=m.connection_id,  # type: ignore[attr-defined]
            pipeline_type_id=m.pipeline_type_id)  # type: ignore[attr-defined]

    @strawberry.field(description="The Watcher pipeline type, if any.")
    async def pipeline_type(self, info: Info) -> PipelineType | None:
        if self.pipeline_type_id is None:
            return None
        info.context.require_caller()
        row = await info.context.loaders.pipeline_type.load(self.pipeline_type_id)
        return PipelineType.of(row) if row else None

    @strawberry.field(description="This pipeline's own webhook endpoint (it wins over the "
                      "organisation's default), if any.")
    async def webhook_endpoint(self, info: Info) -> WebhookEndpointRef | None:
        info.context.require_caller()
        row = await info.context.loaders.endpoint_of_pipeline.load(int(self.id))
        return WebhookEndpointRef.resolve_type().of(row) if row else None

    @strawberry.field
    async def connection(self, info: Info) -> ConnectionRef | None:
        if self.connection_id is None:
            return None
        info.context.require_caller()
        row = await info.context.loaders.connection.load(self.connection_id)
        return ConnectionRef.resolve_type().of(row) if row else None

    @strawberry.field
    async def telemetry(self, info: Info) -> Telemetry:
        info.context.require_caller()
        return Telemetry.of(await info.context.loaders.pipeline_telemetry.load(int(self.id)))

    @strawberry.field(description="This pipeline's runs, newest first.")
    async def runs(
        self, info: Info, first: int | None = None, after: str | None = None,
        status: list[RunStatus] | None = None,
    ) -> Page[Run]:
        return await runs_page(info, parent=int(self.id), first=first, after=after,
                               status=status, of_connection=False)


@strawberry.type
class PipelineQuery:
    @strawberry.field
    async def pipeline(self, info: Info, id: strawberry.ID) -> Pipeline | None:
        caller = info.context.require_caller()
        row = await or_none(lambda: pipelines_api.get_pipeline(
            caller=caller, pipeline_id=parse_id(id, "pipeline")))
        return Pipeline.of(row) if row else None

    @strawberry.field(description="The organisation's pipelines, oldest first.")
    async def pipelines(
        self, info: Info, first: int | None = None, after: str | None = None,
        connection_id: strawberry.ID | None = None, kind: str | None = None,
    ) -> Page[Pipeline]:
        caller = info.context.require_caller()

        async def call():
            return await pipelines_api.list_pipelines(
                caller=caller, first=first, after=after, kind=kind,
                connection_id=filter_id(connection_id, "connection"))

        page = await call()
        return Page.of(page, Pipeline.of)
