"""Watcher pipelines and pipeline types: get-or-create by name, stable change detection, the
watermark hand-off. A Watcher pipeline is a `Pipeline` like any other (kind `watcher`)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from runwatch.models import INT32_MAX, Pipeline, PipelineType
from runwatch.resolvers import inputs, pipelines, sql, strict_json
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.dateparts import DATEPARTS
from runwatch.resolvers.errors import InvalidInput, NameTaken, NotFound
from runwatch.resolvers.run_input import UNSET, Errors

CHECKS = ("freshness", "timeliness")
# What `POST /pipeline` may define (and what its digest covers); never `active`,
# `load_lineage`, `watermark` or the mute flags.
DEFINITION = ("pipeline_type_name", "pipeline_metadata", "freshness_number",
              "freshness_datepart", "timeliness_number", "timeliness_datepart")
MAX_WATERMARK = 50


def require_writer(caller: Caller) -> None:
    """Watcher jobs write with a `report` token (like loaders); people with `write`."""
    caller.require_any(Scope.REPORT, Scope.WRITE)


def digest(definition: dict[str, Any]) -> str:
    """A stable digest of a definition: the same input gives the same digest in every
    process and release (canonical JSON, SHA-256), unlike Python's per-process `hash`."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def text(value: Any, name: str, errors: Errors, *, limit: int = 150,
         required: bool = False) -> str | None:
    if value is None:
        if required:
            errors.add(name, "field required")
        return None
    if not isinstance(value, str) or not value.strip():
        errors.add(name, f"{name} must be a string of 1 to {limit} characters")
        return None
    if len(value.strip()) > limit or inputs.has_nul(value):
        errors.add(name, f"{name} must be a string of 1 to {limit} characters")
        return None
    return value.strip()


def integer(value: Any, name: str, errors: Errors, *, required: bool = False) -> int | None:
    """An integer field of a Watcher body (an id, a count), in the Watcher's wording."""
    if value is None:
        if required:
            errors.add(name, "field required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(name, f"{name} must be an integer")
        return None
    return value


def patch_target(object_id: Any, raw_name: Any, errors: Errors) -> tuple[str | None, dict]:
    """A Watcher PATCH's row: by `id`, or else by `name`. Returns the name to look the row
    up by (None: by `id`) and the rename a row found by `id` takes (a `name` sent with it)."""
    name = None if raw_name is UNSET else raw_name
    if object_id is None and name is None:
        raise InvalidInput.one("id", "Either 'id' or 'name' must be provided")
    if object_id is None:  # found by name: a malformed name is invalid input, not "not found"
        return text(name, "name", errors, required=True), {}
    integer(object_id, "id", errors)
    if raw_name is UNSET:
        return None, {}
    return None, {"name": text(name, "name", errors, required=True)}


def watermark(value: Any, name: str, errors: Errors) -> str | None:
    """string | int | datetime | date, stored as text (at most 50 characters)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        errors.add(name, f"{name} must be a string, an integer, a date or a datetime")
        return None
    stored = str(value)  # as sent: a watermark is a value, never trimmed
    if len(stored) > MAX_WATERMARK or inputs.has_nul(stored):
        errors.add(name, f"{name} must be at most {MAX_WATERMARK} characters")
        return None
    return stored


def metadata(value: Any, name: str, errors: Errors) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.add(name, f"{name} must be an object")
        return None
    not_json = strict_json.problem(value)  # NaN, Infinity, lone surrogates, deep nesting
    if not_json is not None:
        errors.add(name, f"{name} must be JSON: {not_json}")
        return None
    encoded = json.dumps(value)
    if len(encoded) > 65_536 or "\\u0000" in encoded:
        errors.add(name, f"{name} must be at most 64 KiB of JSON, without null characters")
        return None
    return value


def boolean(value: Any, name: str, errors: Errors) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        errors.add(name, f"{name} must be a boolean")
        return None
    return value


@dataclass(frozen=True, kw_only=True)
class CheckConfig:
    """The freshness and timeliness settings of a pipeline or a type: a number and a
    datepart, both or neither (`UNSET`: not given, left as it is; None: cleared). Values are
    as sent; the resolvers check them, whatever the surface. `Any`: the type named, or
    `UNSET`."""

    freshness_number: int | Any | None = UNSET
    freshness_datepart: str | Any | None = UNSET
    timeliness_number: int | Any | None = UNSET
    timeliness_datepart: str | Any | None = UNSET


@dataclass(frozen=True, kw_only=True)
class PipelineTypeInput(CheckConfig):
    """`POST /pipeline_type`: a type by name, its check settings and mute flags (None: not
    given)."""

    name: str | None = None
    mute_freshness_check: bool | None = None
    mute_timeliness_check: bool | None = None


@dataclass(frozen=True, kw_only=True)
class PipelineDefinition(CheckConfig):
    """`POST /pipeline`: a pipeline by name and its definition. `next_watermark` and
    `pipeline_metadata` are `UNSET` when not given (a found pipeline keeps them) and None
    when sent as null."""

    name: str | None = None
    pipeline_type_name: str | None = None
    next_watermark: str | int | float | Any | None = UNSET
    pipeline_metadata: dict[str, Any] | Any | None = UNSET

    def definition(self) -> dict[str, Any]:
        """The definition fields given, as given: what the digest covers."""
        return {k: getattr(self, k) for k in DEFINITION if getattr(self, k) is not UNSET}


@dataclass(frozen=True, kw_only=True)
class PipelineChange(CheckConfig):
    """`PATCH /pipeline`: the pipeline `id`, or else the one named `name`; only the fields
    given change (`UNSET`: left as it is; None clears a nullable field). The flags and
    `pipeline_type_id` change only when not None."""

    id: int | None = None
    name: str | Any | None = UNSET
    pipeline_type_id: int | None = None
    watermark: str | int | float | Any | None = UNSET
    next_watermark: str | int | float | Any | None = UNSET
    pipeline_metadata: dict[str, Any] | Any | None = UNSET
    mute_freshness_check: bool | None = None
    mute_timeliness_check: bool | None = None
    load_lineage: bool | None = None
    active: bool | None = None


@dataclass(frozen=True, kw_only=True)
class PipelineTypeChange(CheckConfig):
    """`PATCH /pipeline_type`: the type `id`, or else the one named `name`; only the fields
    given change (`UNSET`: left as it is; None clears a check's settings). The mute flags
    change only when not None."""

    id: int | None = None
    name: str | Any | None = UNSET
    mute_freshness_check: bool | None = None
    mute_timeliness_check: bool | None = None


def check_config(given: CheckConfig, errors: Errors) -> dict[str, Any]:
    """`freshness_number` / `freshness_datepart` (and timeliness): both or neither."""
    values: dict[str, Any] = {}
    for check in CHECKS:
        number_key, part_key = f"{check}_number", f"{check}_datepart"
        number, part = getattr(given, number_key), getattr(given, part_key)
        if number is UNSET and part is UNSET:
            continue
        number = None if number is UNSET else number
        part = None if part is UNSET else part
        if (number is None) != (part is None):
            errors.add(number_key, f"Both {number_key} and {part_key} must be provided together")
            continue
        if number is not None:
            if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 2**31:
                errors.add(number_key, f"{number_key} must be an integer greater than 0")
            if not isinstance(part, str) or part.strip().lower() not in DATEPARTS:
                errors.add(part_key, f"{part_key} must be one of: {', '.join(DATEPARTS)}")
            part = part.strip().lower() if isinstance(part, str) else part
        values[number_key], values[part_key] = number, part
    return values


async def get_or_create_type(
    *, caller: Caller, given: PipelineTypeInput, conn: Any = None
) -> tuple[PipelineType, bool]:
    """`POST /pipeline_type`: found by name (never updated) or created."""
    require_writer(caller)
    errors = Errors()
    name = text(given.name, "name", errors, required=True)
    config = check_config(given, errors)
    mutes = {k: boolean(getattr(given, k), k, errors) for k in
             ("mute_freshness_check", "mute_timeliness_check") if getattr(given, k) is not None}
    errors.raise_any()
    found = await sql.first(PipelineType, "organisation_id = ? AND name = ? LIMIT 1",
                            [caller.organisation_id, name], conn)
    if found is not None:
        return found, False
    if conn is not None:  # inside the caller's transaction: it handles a concurrent create
        return await PipelineType.create(
            organisation_id=caller.organisation_id, name=name, **config, **mutes,
            using_db=conn), True
    try:
        return await PipelineType.create(
            organisation_id=caller.organisation_id, name=name, **config, **mutes), True
    except IntegrityError:  # created meanwhile by a concurrent call
        return await PipelineType.get(organisation_id=caller.organisation_id, name=name), False


def storable_id(value: int) -> bool:
    """Whether an INTEGER id column can hold `value` (else: simply not found)."""
    return 0 < value <= INT32_MAX


async def get_type(*, caller: Caller, type_id: int) -> PipelineType:
    caller.require_scope(Scope.READ)
    row = await PipelineType.filter(
        id=type_id, organisation_id=caller.organisation_id).first() \
        if storable_id(type_id) else None
    if row is None:
        raise NotFound("pipeline type", type_id)
    return row


async def list_types(*, caller: Caller) -> list[PipelineType]:
    caller.require_scope(Scope.READ)
    return await PipelineType.filter(organisation_id=caller.organisation_id).order_by("id")


async def patch_type(*, caller: Caller, change: PipelineTypeChange) -> PipelineType:
    """`PATCH /pipeline_type`: the row by `id`, or else by `name`; its check settings, mute
    flags (and, found by `id`, its name) as sent."""
    require_writer(caller)
    errors = Errors()
    type_id = change.id
    lookup_name, changes = patch_target(type_id, change.name, errors)
    changes.update(check_config(change, errors))
    for key in ("mute_freshness_check", "mute_timeliness_check"):
        if getattr(change, key) is not None:
            changes[key] = boolean(getattr(change, key), key, errors)
    errors.raise_any()
    async with in_transaction() as conn:
        query = PipelineType.filter(organisation_id=caller.organisation_id)
        query = query.filter(id=type_id) if type_id is not None else query.filter(
            name=lookup_name)
        row = await query.select_for_update().using_db(conn).first() if (
            type_id is None or storable_id(type_id)) else None
        if row is None:
            raise NotFound("pipeline type", type_id or lookup_name)
        if changes:
            changes["updated_at"] = utcnow()
            try:
                await PipelineType.filter(id=row.id).using_db(conn).update(**changes)
            except IntegrityError:
                raise NameTaken("pipeline type") from None
            for key, value in changes.items():
                setattr(row, key, value)
    return row


async def get_or_create_pipeline(
    *, caller: Caller, given: PipelineDefinition
) -> tuple[Pipeline, bool]:
    """`POST /pipeline`: created (201) or found by name (200). A found pipeline gets the
    `next_watermark` sent when it is not null (null stores nothing), and the definition
    fields sent only when their digest differs from the stored one; `active`,
    `load_lineage`, `watermark` and the mute flags are never changed here."""
    require_writer(caller)
    errors = Errors()
    name = text(given.name, "name", errors, required=True)
    type_name = text(given.pipeline_type_name, "pipeline_type_name", errors, required=True)
    next_mark = watermark(_or_none(given.next_watermark), "next_watermark", errors)
    meta = metadata(_or_none(given.pipeline_metadata), "pipeline_metadata", errors)
    config = check_config(given, errors)
    errors.raise_any()
    new_digest = digest(given.definition())
    try:
        return await _upsert(caller, given, name, type_name, next_mark, meta, config, new_digest)
    except IntegrityError:  # a concurrent call created it (or its type): now it is found
        return await _upsert(caller, given, name, type_name, next_mark, meta, config, new_digest)


async def _type_id(caller: Caller, name: str | None, conn: Any) -> int:
    """The id of the organisation's pipeline type `name`, created when there is none (as
    `POST /pipeline_type` creates it), in the caller's transaction."""
    rows = await sql.fetch("SELECT id FROM pipeline_type WHERE organisation_id = ? AND name = ? "
                           "LIMIT 1", [caller.organisation_id, name], conn)
    if rows:
        return int(rows[0]["id"])
    created, _ = await get_or_create_type(caller=caller, given=PipelineTypeInput(name=name),
                                          conn=conn)
    return created.id


def _or_none(value: Any) -> Any:
    return None if value is UNSET else value


async def _upsert(
    caller: Caller, given: PipelineDefinition, name: str | None, type_name: str | None,
    next_mark: str | None, meta: dict[str, Any] | None, config: dict[str, Any],
    new_digest: str,
) -> tuple[Pipeline, bool]:
    async with in_transaction() as conn:
        type_id = await _type_id(caller, type_name, conn)
        pipeline = await sql.first(
            Pipeline, "organisation_id = ? AND name = ? LIMIT 1 FOR UPDATE",
            [caller.organisation_id, name], conn)
        if pipeline is None:
            created = await Pipeline.create(
                organisation_id=caller.organisation_id, name=name, kind="watcher",
                pipeline_type_id=type_id, next_watermark=next_mark,
                pipeline_metadata=meta, input_digest=new_digest, **config, using_db=conn)
            return created, True
        changes: dict[str, Any] = {}
        # A null `next_watermark` stores nothing (the SDK always sends the key, null when
        # its config has none): only a value moves the chain on.
        if next_mark is not None and next_mark != pipeline.next_watermark:
            changes["next_watermark"] = next_mark
        if new_digest != pipeline.input_digest:
            changes["input_digest"] = new_digest
            changes["pipeline_type_id"] = type_id  # the type is required
            if given.pipeline_metadata is not UNSET:
                changes["pipeline_metadata"] = meta
            changes.update(config)
        # Checked as any change of a pipeline is: a `report` token finds any pipeline by
        # name, but changes only a Watcher one.
        pipelines.check_pipeline_change(caller, pipeline, set(changes))
        if changes:
            changes["updated_at"] = utcnow()
            await sql.update(Pipeline, pipeline.id, changes, conn)
            for key, value in changes.items():
                setattr(pipeline, key, value)
    return pipeline, False


async def get_watcher_pipeline(*, caller: Caller, pipeline_id: int) -> Pipeline:
    caller.require_scope(Scope.READ)
    row = await Pipeline.filter(
        id=pipeline_id, organisation_id=caller.organisation_id).first() \
        if storable_id(pipeline_id) else None
    if row is None:
        raise NotFound("pipeline", pipeline_id)
    return row


async def list_watcher_pipelines(*, caller: Caller) -> list[Pipeline]:
    caller.require_scope(Scope.READ)
    return await Pipeline.filter(organisation_id=caller.organisation_id).order_by("id")


async def patch_pipeline(*, caller: Caller, change: PipelineChange) -> Pipeline:
    """`PATCH /pipeline`: the row by `id`, or else by `name`; only the fields sent change."""
    require_writer(caller)
    errors = Errors()
    pipeline_id = change.id
    lookup_name, changes = patch_target(pipeline_id, change.name, errors)
    for key in ("watermark", "next_watermark"):
        if getattr(change, key) is not UNSET:
            changes[key] = watermark(getattr(change, key), key, errors)
    if change.pipeline_metadata is not UNSET:
        changes["pipeline_metadata"] = metadata(change.pipeline_metadata, "pipeline_metadata",
                                                errors)
    changes.update(check_config(change, errors))
    for key in ("mute_freshness_check", "mute_timeliness_check", "load_lineage", "active"):
        if getattr(change, key) is not None:
            changes[key] = boolean(getattr(change, key), key, errors)
    if change.pipeline_type_id is not None:
        type_id = change.pipeline_type_id
        if isinstance(type_id, bool) or not isinstance(type_id, int):
            errors.add("pipeline_type_id", "pipeline_type_id must be an integer")
        else:
            changes["pipeline_type_id"] = type_id
    errors.raise_any()
    async with in_transaction() as conn:
        query = Pipeline.filter(organisation_id=caller.organisation_id)
        query = query.filter(id=pipeline_id) if pipeline_id is not None else query.filter(
            name=lookup_name)
        pipeline = await query.select_for_update().using_db(conn).first() if (
            pipeline_id is None or storable_id(pipeline_id)) else None
        if pipeline is None:
            raise NotFound("pipeline", pipeline_id or lookup_name)
        pipelines.check_pipeline_change(caller, pipeline, set(changes))
        if "pipeline_type_id" in changes and not storable_id(changes["pipeline_type_id"]):
            raise NotFound("pipeline type", changes["pipeline_type_id"])
        if "pipeline_type_id" in changes and not await PipelineType.filter(
            id=changes["pipeline_type_id"], organisation_id=caller.organisation_id
        ).using_db(conn).exists():
            raise NotFound("pipeline type", changes["pipeline_type_id"])
        if changes:
            changes["updated_at"] = utcnow()
            try:
                await Pipeline.filter(id=pipeline.id).using_db(conn).update(**changes)
            except IntegrityError:
                raise NameTaken("pipeline") from None
            for key, value in changes.items():
                setattr(pipeline, key, value)
    return pipeline
