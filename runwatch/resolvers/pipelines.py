"""Pipelines: what runs. A connection's delivery pipeline is created with the connection;
ELT pipelines are created by people and services (REST `POST /api/elt/pipelines`, GraphQL
`createPipeline`). A pipeline's name is unique in its organisation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError

from runwatch.models import INT32_MAX, Connection, Pipeline
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.connections import nul_paths, secret_keys
from runwatch.resolvers.errors import Conflict, InvalidInput, NotFound
from runwatch.resolvers.pagination import Page, paginate
from runwatch.resolvers.run_input import UNSET, Errors, check_bounded_text

MAX_DESCRIPTION_CHARS = 4000
# eltPulse's definition fields: short texts and their limits, the code and YAML documents
# (each at most 256 KiB of text), the source configuration (at most 64 KiB of JSON).
DEFINITION_TEXTS = {"tool": 50, "source_type": 100, "destination_type": 100,
                    "group_name": 200}
DEFINITION_DOCUMENTS = ("pipeline_code", "config_yaml", "workspace_yaml")
MAX_DOCUMENT_CHARS = 262_144
MAX_SOURCE_CONFIGURATION_BYTES = 65_536


async def get_pipeline(*, caller: Caller, pipeline_id: int) -> Pipeline:
    caller.require_scope(Scope.READ)
    return await _pipeline(caller, pipeline_id)


async def _pipeline(caller: Caller, pipeline_id: int) -> Pipeline:
    """The organisation's pipeline, for a caller whose scope was checked already."""
    row = await Pipeline.filter(id=pipeline_id, organisation_id=caller.organisation_id).first()
    if row is None:
        raise NotFound("pipeline", pipeline_id)
    return row


async def get_gateway_pipeline(*, caller: Caller, pipeline_id: int) -> Pipeline:
    """A pipeline's definition, for a gateway of its organisation (what it runs)."""
    caller.require_gateway()
    return await _pipeline(caller, pipeline_id)


MANIFEST_PIPELINES_MAX = 1000


async def gateway_pipelines(*, caller: Caller) -> list[Pipeline]:
    """The organisation's ELT pipelines, for its gateways' manifest (oldest first, at most
    MANIFEST_PIPELINES_MAX)."""
    caller.require_gateway()
    return await Pipeline.filter(organisation_id=caller.organisation_id, kind="elt").order_by(
        "id").limit(MANIFEST_PIPELINES_MAX)


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
    tool: str | Any | None = UNSET
    source_type: str | Any | None = UNSET
    destination_type: str | Any | None = UNSET
    source_configuration: dict[str, Any] | Any | None = UNSET
    pipeline_code: str | Any | None = UNSET
    config_yaml: str | Any | None = UNSET
    workspace_yaml: str | Any | None = UNSET
    group_name: str | Any | None = UNSET
    enabled: bool | Any = UNSET
    # eltPulse's connection links (its web app sends them): the destination is the pipeline's
    # connection (runwatch's connections are the warehouses data is loaded into), checked
    # as the reference checks it; runwatch keeps no source connections, so only null is a
    # source it accepts.
    source_connection_id: int | Any | None = UNSET
    destination_connection_id: int | Any | None = UNSET

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not UNSET}


async def _columns(caller: Caller, given: PipelineFields, *, creating: bool,
                   current: Pipeline | None = None) -> dict[str, Any]:
    """The validated columns a create or an update (of `current`) sets (only the fields
    given)."""
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
    await _connection_links(caller, raw, values, errors, current)
    _definition(raw, values, errors)
    _resolve_tool(values, errors, current)
    errors.raise_any()
    return values


async def _connection(caller: Caller, connection_id: Any) -> Connection | None:
    if not isinstance(connection_id, int) or not 0 < connection_id <= INT32_MAX:
        return None
    return await Connection.filter(id=connection_id,
                                   organisation_id=caller.organisation_id).first()


async def _connection_links(caller: Caller, raw: dict[str, Any], values: dict[str, Any],
                            errors: Errors, current: Pipeline | None) -> None:
    """eltPulse's `sourceConnectionId` / `destinationConnectionId`, checked as the reference
    checks them (the connection exists here, is of that kind, and its connector is the
    pipeline's source or destination type); the destination becomes the pipeline's
    connection. Null clears (the destination) or says there is none (the source)."""
    if raw.get("source_connection_id") is not None:
        source = await _connection(caller, raw["source_connection_id"])
        errors.add("source_connection_id", "Invalid connection" if source is None else
                   "Connection must be a source profile: runwatch's connections are the "
                   "warehouses data is loaded into (it keeps no source connections); send "
                   "null, and the source's secrets as a connection's secrets.")
    if "destination_connection_id" not in raw:
        return
    destination_id = raw["destination_connection_id"]
    if "connection_id" in raw and destination_id != raw["connection_id"]:
        errors.add("destination_connection_id", "Names another connection than connectionId.")
        return
    if destination_id is None:
        values["connection_id"] = None
        return
    destination = await _connection(caller, destination_id)
    if destination is None:
        errors.add("destination_connection_id", "Invalid connection")
        return
    destination_type = raw.get("destination_type", current.destination_type
                               if current is not None else None)
    if isinstance(destination_type, str) and destination_type.strip() and \
            destination.warehouse_type.lower() != destination_type.strip().lower():
        errors.add("destination_connection_id",
                   "Connection connector does not match pipeline destination type "
                   f"({destination.warehouse_type!r}, not {destination_type.strip()!r}).")
        return
    values["connection_id"] = destination.id


AUTO_TOOL = "auto"
NO_CODEGEN = ("runwatch does not generate pipeline code: \"auto\" needs the code to run, "
              "pipelineCode (run as dlt) or configYaml (run as sling); or name the tool, "
              "dlt or sling, and send its code. (A gateway given no code would run an "
              "empty script and report success.)")


def _resolve_tool(values: dict[str, Any], errors: Errors, current: Pipeline | None) -> None:
    """`tool: "auto"` (eltPulse's web app sends it and lets its server generate the code):
    the tool the code sent is for, `dlt` for `pipelineCode`, `sling` for `configYaml` only
    (what eltPulse's gateway runs: `sling` runs configYaml, any other tool pipelineCode);
    without either, refused (runwatch generates no code)."""
    tool = values.get("tool")
    if not isinstance(tool, str) or tool.strip().lower() != AUTO_TOOL:
        return

    def document(name: str) -> str | None:
        text = values[name] if name in values else (
            getattr(current, name) if current is not None else None)
        return text if isinstance(text, str) and text.strip() else None

    if document("pipeline_code"):
        values["tool"] = "dlt"
    elif document("config_yaml"):
        values["tool"] = "sling"
    else:
        errors.add("tool", NO_CODEGEN)


def _definition(raw: dict[str, Any], values: dict[str, Any], errors: Errors) -> None:
    """eltPulse's definition fields among those given, checked into `values`."""
    for name, limit in DEFINITION_TEXTS.items():
        if name in raw:
            values[name] = check_bounded_text(raw[name], name, errors, limit)
    for name in DEFINITION_DOCUMENTS:
        if name not in raw:
            continue
        text = raw[name]
        if text is not None and not isinstance(text, str):
            errors.add(name, "Not a valid string.")
        elif text is not None and "\x00" in text:
            errors.add(name, "Null characters are not allowed.")
        elif text is not None and len(text) > MAX_DOCUMENT_CHARS:
            errors.add(name, f"Ensure this field has no more than {MAX_DOCUMENT_CHARS} "
                             "characters.")
        values[name] = text
    if "source_configuration" in raw:
        config = raw["source_configuration"]
        if config is not None:
            if not isinstance(config, dict):
                errors.add("source_configuration", "Expected an object of non-secret settings.")
            else:
                for key in secret_keys(config):
                    errors.add(f"source_configuration.{key}", SECRET_REFUSAL)
                for key in nul_paths(config):
                    errors.add(f"source_configuration.{key}", "Null characters are not allowed.")
                if len(json.dumps(config)) > MAX_SOURCE_CONFIGURATION_BYTES:
                    errors.add("source_configuration",
                               f"At most {MAX_SOURCE_CONFIGURATION_BYTES} bytes of JSON.")
        values["source_configuration"] = config
    if "enabled" in raw:
        if not isinstance(raw["enabled"], bool):
            errors.add("enabled", "Must be true or false.")
        values["enabled"] = raw["enabled"]


SECRET_REFUSAL = ("runwatch does not keep credentials in a pipeline's definition (every read "
                  "returns it); store them as the connection's secrets.")


async def create_pipeline(*, caller: Caller, fields: PipelineFields,
                          kind: str = "elt") -> Pipeline:
    """A pipeline (its name is required); a duplicate name is a conflict."""
    caller.require_scope(Scope.WRITE)
    values = await _columns(caller, fields, creating=True)
    try:
        return await Pipeline.create(organisation_id=caller.organisation_id, kind=kind, **values)
    except IntegrityError:
        raise Conflict(f"A pipeline named {values['name']!r} already exists.") from None


async def upsert_pipeline(*, caller: Caller, fields: PipelineFields) -> tuple[Pipeline, bool]:
    """Create an ELT pipeline, or update the one of the same name with the fields given
    (eltPulse's `upsert`): the pipeline and whether it was created. What the body leaves out
    stays as it is (runwatch's pipelines carry more than eltPulse's definition: a maximum
    runtime, webhooks, alert rules). A connection's delivery pipeline is not an ELT
    definition: its name is a conflict, as without `upsert`."""
    caller.require_scope(Scope.WRITE)
    name = fields.name.strip() if isinstance(fields.name, str) else fields.name
    for _ in range(2):  # a create that loses to a concurrent one becomes an update
        existing = await Pipeline.filter(organisation_id=caller.organisation_id,
                                         name=name).first() if isinstance(name, str) else None
        if existing is None:
            try:
                return await create_pipeline(caller=caller, fields=fields), True
            except Conflict:
                continue
        if existing.kind != "elt":
            what = ("a connection's delivery pipeline" if existing.kind == "delivery"
                    else f"a {existing.kind} pipeline")
            raise Conflict(f"A pipeline named {name!r} already exists ({what}, not an ELT "
                           "definition).")
        return await update_pipeline(caller=caller, pipeline_id=existing.id,
                                     fields=dataclasses.replace(fields, name=UNSET)), False
    raise Conflict(f"A pipeline named {name!r} already exists.")


# A connection's delivery pipeline is named after, and tied to, its connection.
CONNECTION_BOUND = frozenset({"name", "connection_id"})


def check_pipeline_change(caller: Caller, pipeline: Pipeline, changed: set[str]) -> None:
    """Whether `caller` may change the fields `changed` of `pipeline`, on every surface (ELT
    REST, GraphQL `updatePipeline`, the Watcher's `PATCH /pipeline` and `POST /pipeline`):
    a Watcher pipeline (kind `watcher`) may be changed with `report` (what its jobs have) or
    `write`; any other kind needs `write`; a delivery pipeline keeps its name and
    connection."""
    if not changed:
        return
    if pipeline.kind == "watcher":
        caller.require_any(Scope.REPORT, Scope.WRITE)
    else:
        caller.require_scope(Scope.WRITE)
    if pipeline.kind == "delivery" and CONNECTION_BOUND & changed:
        raise InvalidInput.one(
            "name", "A connection's delivery pipeline is named after and tied to its "
            "connection; change the connection instead.")


async def update_pipeline(*, caller: Caller, pipeline_id: int,
                          fields: PipelineFields) -> Pipeline:
    caller.require_scope(Scope.WRITE)  # a write token may change what it cannot list
    pipeline = await _pipeline(caller, pipeline_id)
    values = await _columns(caller, fields, creating=False, current=pipeline)
    check_pipeline_change(caller, pipeline, set(values))
    if values:
        values["updated_at"] = utcnow()
    for key, value in values.items():
        setattr(pipeline, key, value)
    if values:
        try:
            await pipeline.save(update_fields=list(values))
        except IntegrityError:
            raise Conflict(f"A pipeline named {values['name']!r} already exists.") from None
    return pipeline
