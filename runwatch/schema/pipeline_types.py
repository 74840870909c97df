"""Watcher pipeline types: a kind of pipeline with default freshness and timeliness."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from runwatch.models import PipelineType as PipelineTypeModel
from runwatch.resolvers import watcher_pipelines as pipelines_api
from runwatch.schema.context import Info
from runwatch.schema.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    as_data,
    or_none,
    parse_id,
)


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


@strawberry.input(description="A pipeline type's settings to change; a field left out stays "
                  "as it is, a check's number and datepart come together (null clears both).")
class UpdatePipelineTypeInput:
    id: strawberry.ID
    name: str | None = strawberry.UNSET
    freshness_number: int | None = strawberry.UNSET
    freshness_datepart: str | None = strawberry.UNSET
    timeliness_number: int | None = strawberry.UNSET
    timeliness_datepart: str | None = strawberry.UNSET
    mute_freshness_check: bool | None = strawberry.UNSET
    mute_timeliness_check: bool | None = strawberry.UNSET


@strawberry.type
class PipelineTypeSuccess:
    pipeline_type: PipelineType


PipelineTypeResult = Annotated[
    PipelineTypeSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("PipelineTypeResult")]


@strawberry.type
class PipelineTypeMutation:
    @strawberry.mutation(description="Change a pipeline type's freshness and timeliness "
                         "settings, its mute flags or its name (the REST `PATCH "
                         "/pipeline_type`).")
    async def update_pipeline_type(
        self, info: Info, input: UpdatePipelineTypeInput
    ) -> PipelineTypeResult:
        caller = info.context.require_caller()

        async def call() -> PipelineTypeSuccess:
            fields = {k: getattr(input, k) for k in (
                "name", "freshness_number", "freshness_datepart", "timeliness_number",
                "timeliness_datepart", "mute_freshness_check", "mute_timeliness_check")
                if getattr(input, k) is not strawberry.UNSET}
            for key in ("mute_freshness_check", "mute_timeliness_check"):
                if fields.get(key, False) is None:
                    fields.pop(key)  # null: left as it is (a flag is never null)
            row = await pipelines_api.patch_type(caller=caller, change=pipelines_api.
                                                 PipelineTypeChange(
                id=parse_id(input.id, "pipeline type"), **fields))
            return PipelineTypeSuccess(pipeline_type=PipelineType.of(row))

        return await as_data(call)  # type: ignore[return-value]
