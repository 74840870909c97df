"""Pipelines. A connection's delivery pipeline is created with the connection; other kinds
come with the ELT-runs and Watcher capabilities."""

from __future__ import annotations

from runwatch.models import Pipeline
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.errors import NotFound
from runwatch.resolvers.pagination import Page, paginate


async def get_pipeline(*, caller: Caller, pipeline_id: int) -> Pipeline:
    caller.require(Scope.READ)
    row = await Pipeline.filter(id=pipeline_id, organisation_id=caller.organisation_id).first()
    if row is None:
        raise NotFound("pipeline", pipeline_id)
    return row


async def list_pipelines(
    *, caller: Caller, first: int | None = None, after: str | None = None,
    connection_id: int | None = None, kind: str | None = None,
) -> Page[Pipeline]:
    caller.require(Scope.READ)
    query = Pipeline.filter(organisation_id=caller.organisation_id)
    if connection_id is not None:
        query = query.filter(connection_id=connection_id)
    if kind:
        query = query.filter(kind=kind)
    return await paginate(query, first=first, after=after, newest_first=False)
