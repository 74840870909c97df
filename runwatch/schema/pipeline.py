"""Pipeline queries."""

from __future__ import annotations

import strawberry

from runwatch.resolvers import pipelines as pipelines_api
from runwatch.schema.context import Info
from runwatch.schema.errors import filter_id, or_none, parse_id
from runwatch.schema.types import Pipeline, PipelinePage


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
    ) -> PipelinePage:  # type: ignore[valid-type]
        caller = info.context.require_caller()

        async def call():
            return await pipelines_api.list_pipelines(
                caller=caller, first=first, after=after, kind=kind,
                connection_id=filter_id(connection_id, "connection"))

        page = await call()
        return PipelinePage.of(page)  # type: ignore[attr-defined]
