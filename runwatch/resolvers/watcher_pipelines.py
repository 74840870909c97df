"""Watcher pipelines and pipeline types: get-or-create by name, stable change detection, the
watermark hand-off. A Watcher pipeline is a `Pipeline` like any other (kind `watcher`)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from runwatch.models import INT32_MAX, Pipeline, PipelineType
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.dateparts import DATEPARTS
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.run_input import Errors

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
    if len(value.strip()) > limit or "\x00" in value:
        errors.add(name, f"{name} must be a string of 1 to {limit} characters")
        return None
    return value.strip()


def watermark(value: Any, name: str, errors: Errors) -> str | None:
    """string | int | datetime | date, stored as text (at most 50 characters)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        errors.add(name, f"{name} must be a string, an integer, a date or a datetime")
        return None
    stored = str(value).strip()
    if len(stored) > MAX_WATERMARK or "\x00" in stored:
        errors.add(name, f"{name} must be at most {MAX_WATERMARK} characters")
        return None
    return stored


def metadata(value: Any, name: str, errors: Errors) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.add(name, f"{name} must be an object")
        return None
    try:  # NaN / Infinity: not JSON (PostgreSQL's jsonb refuses them), so not storable
        encoded = json.dumps(value, allow_nan=False)
    except ValueError:
        errors.add(name, f"{name} must be JSON (NaN and Infinity are not)")
        return None
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


def check_config(raw: dict[str, Any], errors: Errors) -> dict[str, Any]:
    """`freshness_number` / `freshness_datepart` (and timeliness): both or neither."""
    values: dict[str, Any] = {}
    for check in CHECKS:
        number_key, part_key = f"{check}_number", f"{check}_datepart"
        if number_key not in raw and part_key not in raw:
            continue
        number, part = raw.get(number_key), raw.get(part_key)
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
    *, caller: Caller, raw: dict[str, Any], conn: Any = None
) -> tuple[PipelineType, bool]:
    """`POST /pipeline_type`: found by name (never updated) or created."""
    require_writer(caller)
    errors = Errors()
    name = text(raw.get("name"), "name", errors, required=True)
    config = check_config(raw, errors)
    mutes = {k: boolean(raw.get(k), k, errors) for k in
             ("mute_freshness_check", "mute_timeliness_check") if raw.get(k) is not None}
    errors.raise_any()
    found = await PipelineType.filter(
        organisation_id=caller.organisation_id, name=name).using_db(conn).first()
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


async def get_or_create_pipeline(
    *, caller: Caller, raw: dict[str, Any]
) -> tuple[Pipeline, bool]:
    """`POST /pipeline`: created (201) or found by name (200). A found pipeline gets the
    `next_watermark` sent, and the definition fields sent only when their digest differs
    from the stored one; `active`, `load_lineage`, `watermark` and the mute flags are never
    changed here. The answer's watermark is the one stored (null on create)."""
    require_writer(caller)
    errors = Errors()
    name = text(raw.get("name"), "name", errors, required=True)
    type_name = text(raw.get("pipeline_type_name"), "pipeline_type_name", errors,
                     required=True)
    next_mark = watermark(raw.get("next_watermark"), "next_watermark", errors)
    meta = metadata(raw.get("pipeline_metadata"), "pipeline_metadata", errors)
    config = check_config(raw, errors)
    errors.raise_any()
    sent = {k: raw[k] for k in DEFINITION if k in raw}
    try:
        return await _upsert(caller, raw, name, type_name, next_mark, meta, config, digest(sent))
    except IntegrityError:  # a concurrent call created it (or its type): now it is found
        return await _upsert(caller, raw, name, type_name, next_mark, meta, config, digest(sent))


async def _upsert(
    caller: Caller, raw: dict[str, Any], name: str | None, type_name: str | None,
    next_mark: str | None, meta: dict[str, Any] | None, config: dict[str, Any],
    new_digest: str,
) -> tuple[Pipeline, bool]:
    async with in_transaction() as conn:
        pipeline_type, _ = await get_or_create_type(
            caller=caller, raw={"name": type_name}, conn=conn)
        pipeline = await Pipeline.filter(
            organisation_id=caller.organisation_id, name=name
        ).select_for_update().using_db(conn).first()
        if pipeline is None:
            created = await Pipeline.create(
                organisation_id=caller.organisation_id, name=name, kind="watcher",
                pipeline_type_id=pipeline_type.id, next_watermark=next_mark,
                pipeline_metadata=meta, input_digest=new_digest, **config, using_db=conn)
            return created, True
        changes: dict[str, Any] = {}
        if "next_watermark" in raw and next_mark != pipeline.next_watermark:
            changes["next_watermark"] = next_mark
        if new_digest != pipeline.input_digest:
            changes["input_digest"] = new_digest
            if "pipeline_type_name" in raw:
                changes["pipeline_type_id"] = pipeline_type.id
            if "pipeline_metadata" in raw:
                changes["pipeline_metadata"] = meta
            changes.update(config)
        if changes:
            changes["updated_at"] = utcnow()
            await Pipeline.filter(id=pipeline.id).using_db(conn).update(**changes)
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


PATCHABLE = ("name", "pipeline_type_id", "watermark", "next_watermark", "pipeline_metadata",
             "freshness_number", "freshness_datepart", "mute_freshness_check",
             "timeliness_number", "timeliness_datepart", "mute_timeliness_check",
             "load_lineage", "active")


async def patch_pipeline(*, caller: Caller, raw: dict[str, Any]) -> Pipeline:
    """`PATCH /pipeline`: the row by `id`, or else by `name`; only the fields sent change."""
    require_writer(caller)
    errors = Errors()
    if raw.get("id") is None and raw.get("name") is None:
        raise InvalidInput.one("id", "Either 'id' or 'name' must be provided")
    changes: dict[str, Any] = {}
    lookup_name = None
    if raw.get("id") is not None:
        if isinstance(raw["id"], bool) or not isinstance(raw["id"], int):
            errors.add("id", "id must be an integer")
        if "name" in raw:
            changes["name"] = text(raw["name"], "name", errors, required=True)
    else:  # found by name: a malformed name is invalid input, not "not found"
        lookup_name = text(raw["name"], "name", errors, required=True)
    for key in ("watermark", "next_watermark"):
        if key in raw:
            changes[key] = watermark(raw[key], key, errors)
    if "pipeline_metadata" in raw:
        changes["pipeline_metadata"] = metadata(raw["pipeline_metadata"], "pipeline_metadata",
                                                errors)
    changes.update(check_config(raw, errors))
    for key in ("mute_freshness_check", "mute_timeliness_check", "load_lineage", "active"):
        if raw.get(key) is not None:
            changes[key] = boolean(raw[key], key, errors)
    if raw.get("pipeline_type_id") is not None:
        type_id = raw["pipeline_type_id"]
        if isinstance(type_id, bool) or not isinstance(type_id, int):
            errors.add("pipeline_type_id", "pipeline_type_id must be an integer")
        else:
            changes["pipeline_type_id"] = type_id
    errors.raise_any()
    async with in_transaction() as conn:
        query = Pipeline.filter(organisation_id=caller.organisation_id)
        query = query.filter(id=raw["id"]) if raw.get("id") is not None else query.filter(
            name=lookup_name)
        pipeline = await query.select_for_update().using_db(conn).first() if (
            raw.get("id") is None or storable_id(raw["id"])) else None
        if pipeline is None:
            raise NotFound("pipeline", raw.get("id") or raw.get("name"))
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
                raise InvalidInput.one("name", "A pipeline with this name already exists") \
                    from None
            for key, value in changes.items():
                setattr(pipeline, key, value)
    return pipeline
