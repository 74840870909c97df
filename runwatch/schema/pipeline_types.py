"""Watcher pipeline types: a kind of pipeline with default freshness and timeliness."""

from __future__ import annotations

from datetime import datetime

import strawberry

from runwatch.models import PipelineType as PipelineTypeModel
from runwatch.resolvers import watcher_pipelines as pipelines_api
from runwatch.schema.context import Info
from runwatch.schema.errors import or_none, parse_id


@strawberry.type(description="A kind of pipeline with default freshness and timeliness.")
class PipelineType:
    id: strawberry.ID
    name: str
    freshness_number: int | None
    freshness_datepart: str | None
    mute_freshness_check: bool
    timeliness_number: int | None
    timeliness_datepart: str | None
    mute_timeliness_check: bool
    created_at: datetime
    updated_at: datetime | None

    @staticmethod
    def of(m: PipelineTypeModel) -> PipelineType:
        return PipelineType(
            id=strawberry.ID(str(m.id)), name=m.name, freshness_number=m.freshness_number,
            freshness_datepart=m.freshness_datepart,
            mute_freshness_check=m.mute_freshness_check,
            timeliness_number=m.timeliness_number, timeliness_datepart=m.timeliness_datepart,
            mute_timeliness_check=m.mute_timeliness_check, created_at=m.created_at,
            updated_at=m.updated_at)


@strawberry.type
class PipelineTypeQuery:
    @strawberry.field(description="The organisation's pipeline types.")
    async def pipeline_types(self, info: Info) -> list[PipelineType]:
        caller = info.context.require_caller()
        return [PipelineType.of(t) for t in await pipelines_api.list_types(caller=caller)]

    @strawberry.field
    async def pipeline_type(self, info: Info, id: strawberry.ID) -> PipelineType | None:
        caller = info.context.require_caller()
        row = await or_none(lambda: pipelines_api.get_type(
            caller=caller, type_id=parse_id(id, "pipeline type")))
        return PipelineType.of(row) if row else None
