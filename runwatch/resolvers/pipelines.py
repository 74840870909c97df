"""Pipelines: what runs. A connection's delivery pipeline is created with the connection;
ELT pipelines are created by people and services (REST `POST /api/elt/pipelines`, GraphQL
`createPipeline`). A pipeline's name is unique in its organisation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError

from runwatch.models import INT32_MAX, Connection, Pipeline
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.errors import Conflict, InvalidInput, NotFound
from runwatch.resolvers.pagination import Page, paginate
from runwatch.resolvers.run_input import UNSET, Errors, check_bounded_text

MAX_DESCRIPTION_CHARS = 4000


async def get_pipeline(*, caller: Caller, pipeline_id: int) -> Pipeline:
    caller.require_scope(Scope.READ)
    return await _pipeline(caller, pipeline_id)


async def _pipeline(caller: Caller, pipeline_id: int) -> Pipeline:
    """The organisation's pipeline, for a caller whose scope was checked already."""
    row = await Pipeline.filter(id=pipeline_id, organisation_id=caller.organisation_id).first()
    if row is None:
        raise NotFound("pipeline", pipeline_id)
    return row


async def list_pipelines(
    *, caller: Caller, first: int | None = None, after: str | None = None,
    connection_id: int | None = None, kind: str | None = None,
) -> Page[Pipeline]:
    caller.require_scope(Scope.READ)
    query = Pipeline.filter(organisation_id=caller.organisation_id)
    if connection_id is not None:
        query = query.filter(connection_id=connection_id)
    if kind:
        query = query.filter(kind=kind)
    return await paginate(query, first=first, after=after, newest_first=False)


@dataclass(frozen=True)
class PipelineFields:
    """What a create or an update of an ELT pipeline sets: only the fields given (`UNSET`
    leaves one as it is; None clears it, where it may be cleared)."""

    # `Any`: the type named, or the `UNSET` sentinel.
    name: str | Any = UNSET
    description: str | Any | None = UNSET
    max_runtime_seconds: int | Any | None = UNSET
    connection_id: int | Any | None = UNSET

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not UNSET}


async def _columns(caller: Caller, given: PipelineFields, *, creating: bool) -> dict[str, Any]:
    """The validated columns a create or an update sets (only the fields given)."""
    errors = Errors()
    raw = given.given()
    values: dict[str, Any] = {}
    if creating or "name" in raw:
        name = check_bounded_text(raw.get("name"), "name", errors, 200)
        if not name and "name" not in errors.fields:
            errors.add("name", "This field is required and may not be blank.")
        values["name"] = name
    if "description" in raw:
        values["description"] = check_bounded_text(
            raw["description"], "description", errors, MAX_DESCRIPTION_CHARS)
    if "max_runtime_seconds" in raw:
        runtime = raw["max_runtime_seconds"]
        if runtime is not None and (isinstance(runtime, bool) or not isinstance(runtime, int)
                                    or not 60 <= runtime <= INT32_MAX):
            errors.add("max_runtime_seconds", "Whole seconds, at least 60 (or null for the "
                                              "deployment's default).")
        values["max_runtime_seconds"] = runtime
    if "connection_id" in raw:
        connection_id = raw["connection_id"]
        if connection_id is not None and not (
            0 < connection_id <= INT32_MAX and await Connection.filter(
                id=connection_id, organisation_id=caller.organisation_id).exists()
        ):
            errors.add("connection_id", f"No connection {connection_id} here.")
        values["connection_id"] = connection_id
    errors.raise_any()
    return values


async def create_pipeline(*, caller: Caller, fields: PipelineFields,
                          kind: str = "elt") -> Pipeline:
    """A pipeline (its name is required); a duplicate name is a conflict."""
    caller.require_scope(Scope.WRITE)
    values = await _columns(caller, fields, creating=True)
    try:
        return await Pipeline.create(organisation_id=caller.organisation_id, kind=kind, **values)
    except IntegrityError:
        raise Conflict(f"A pipeline named {values['name']!r} already exists.") from None


async def update_pipeline(*, caller: Caller, pipeline_id: int,
                          fields: PipelineFields) -> Pipeline:
    caller.require_scope(Scope.WRITE)  # a write token may change what it cannot list
    pipeline = await _pipeline(caller, pipeline_id)
    values = await _columns(caller, fields, creating=False)
    if pipeline.kind == "delivery" and ({"name", "connection_id"} & set(values)):
        raise InvalidInput.one(
            "name", "A connection's delivery pipeline is named after and tied to its "
            "connection; change the connection instead.")
    for key, value in values.items():
        setattr(pipeline, key, value)
    if values:
        try:
            await pipeline.save(update_fields=list(values))
        except IntegrityError:
            raise Conflict(f"A pipeline named {values['name']!r} already exists.") from None
    return pipeline
