"""Warehouse connections. Creating one also creates its delivery pipeline."""

from __future__ import annotations

import json
import re
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from runwatch.models import Connection, Pipeline
from runwatch.resolvers import inputs, strict_json
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.pagination import Page, paginate

WAREHOUSE_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
# Setting names that hold credentials. runwatch never stores secrets: they belong in the
# loader's secret store, and a response must never be able to leak one.
SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|pwd|secret|private[_-]?key|token|api[_-]?key|credential"
    r"|access[_-]?key",
    re.IGNORECASE,
)
# A URL with a password in it (`postgres://user:secret@host/db`).
URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)
MAX_SETTINGS_BYTES = 16_384
UNSET: Any = object()
NUL_MESSAGE = inputs.NUL_MESSAGE


def delivery_pipeline_name(connection_name: str) -> str:
    return f"{connection_name} delivery"


def _validate_name(name: Any, errors: dict[str, list[str]]) -> str:
    if not isinstance(name, str) or not name.strip():
        errors["name"] = ["This field is required and may not be blank."]
        return ""
    if len(name.strip()) > 200:
        errors["name"] = ["Ensure this field has no more than 200 characters."]
    elif inputs.has_nul(name):
        errors["name"] = [NUL_MESSAGE]
    return name.strip()


def _validate_type(value: Any, errors: dict[str, list[str]]) -> str:
    if not isinstance(value, str) or not WAREHOUSE_TYPE.match(value.strip().lower()):
        errors["warehouse_type"] = [
            "A warehouse type is required: a lower-case identifier such as "
            "'snowflake', 'bigquery', 'redshift' or 'postgres'."
        ]
        return ""
    return value.strip().lower()


def nul_paths(value: Any, path: str = "") -> list[str]:
    """Where NUL characters hide in a JSON value (PostgreSQL cannot store them)."""
    if isinstance(value, str):
        return [path] if inputs.has_nul(value) else []
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            here = f"{path}.{key}" if path else str(key)
            found.extend([here] if inputs.has_nul(str(key)) else nul_paths(inner, here))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found.extend(nul_paths(inner, f"{path}[{index}]"))
    return found


def secret_keys(value: Any, path: str = "") -> list[str]:
    """Where credentials hide: keys named like one, and URLs carrying a password."""
    found: list[str] = []
    if isinstance(value, str) and URL_WITH_PASSWORD.match(value.strip()):
        found.append(path)
    elif isinstance(value, dict):
        for key, inner in value.items():
            here = f"{path}.{key}" if path else str(key)
            if SECRET_KEY.search(str(key)):
                found.append(here)
            found.extend(secret_keys(inner, here))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found.extend(secret_keys(inner, f"{path}[{index}]"))
    return found


def _validate_settings(settings: Any, errors: dict[str, list[str]]) -> dict[str, Any]:
    if not isinstance(settings, dict):
        errors["settings"] = ["Expected an object of non-secret settings."]
        return {}
    not_json = strict_json.problem(settings)
    if not_json is not None:
        errors["settings"] = [f"Settings must be JSON: {not_json}."]
        return {}
    for key in secret_keys(settings):
        errors[f"settings.{key}"] = [
            "runwatch does not store secrets; keep credentials in the loader's secret store "
            "and send only non-secret settings."
        ]
    for key in nul_paths(settings):
        errors[f"settings.{key}"] = [NUL_MESSAGE]
    if len(json.dumps(settings)) > MAX_SETTINGS_BYTES:
        errors["settings"] = [f"Settings are limited to {MAX_SETTINGS_BYTES} bytes of JSON."]
    return settings


async def get_connection(*, caller: Caller, connection_id: int) -> Connection:
    caller.require_scope(Scope.READ)
    row = await Connection.filter(id=connection_id, organisation_id=caller.organisation_id).first()
    if row is None:
        raise NotFound("connection", connection_id)
    return row


async def list_connections(
    *, caller: Caller, first: int | None = None, after: str | None = None,
    warehouse_type: str | None = None, name_contains: str | None = None,
) -> Page[Connection]:
    caller.require_scope(Scope.READ)
    warehouse_type = inputs.filter_text(warehouse_type, "warehouse_type", 50)
    name_contains = inputs.filter_text(name_contains, "name_contains", 200)
    query = Connection.filter(organisation_id=caller.organisation_id)
    if warehouse_type:
        query = query.filter(warehouse_type=warehouse_type.lower())
    if name_contains:
        query = query.filter(name__icontains=name_contains)
    return await paginate(query, first=first, after=after, newest_first=False)


async def create_connection(
    *, caller: Caller, name: Any, warehouse_type: Any, settings: Any = None
) -> Connection:
    caller.require_scope(Scope.WRITE)
    errors: dict[str, list[str]] = {}
    name = _validate_name(name, errors)
    warehouse_type = _validate_type(warehouse_type, errors)
    settings = _validate_settings({} if settings is None else settings, errors)
    if errors:
        raise InvalidInput(errors)
    try:
        async with in_transaction():
            connection = await Connection.create(
                organisation_id=caller.organisation_id,
                name=name,
                warehouse_type=warehouse_type,
                settings=settings,
            )
            await Pipeline.create(
                organisation_id=caller.organisation_id,
                connection_id=connection.id,
                name=delivery_pipeline_name(name),
                kind="delivery",
            )
    except IntegrityError:
        raise InvalidInput.one("name", "A connection with this name already exists.") from None
    return connection


async def update_connection(
    *, caller: Caller, connection_id: int, name: Any = UNSET, warehouse_type: Any = UNSET,
    settings: Any = UNSET, settings_patch: Any = UNSET,
) -> Connection:
    """Change a connection. `settings` replaces the settings; `settings_patch` merges into them
    (a key set to null is removed), which is what a REST PATCH of top-level keys means."""
    caller.require_scope(Scope.WRITE)
    try:
        # The row is locked while the change is made, so concurrent PATCHes of different
        # settings merge instead of overwriting each other (SQLite serialises transactions).
        async with in_transaction():
            return await _update_locked(
                caller, connection_id, name, warehouse_type, settings, settings_patch
            )
    except IntegrityError:
        raise InvalidInput.one("name", "A connection with this name already exists.") from None


async def _update_locked(
    caller: Caller, connection_id: int, name: Any, warehouse_type: Any, settings: Any,
    settings_patch: Any,
) -> Connection:
    connection = await Connection.filter(
        id=connection_id, organisation_id=caller.organisation_id
    ).select_for_update().first()
    if connection is None:
        raise NotFound("connection", connection_id)
    errors: dict[str, list[str]] = {}
    changed: list[str] = []
    if name is not UNSET:
        connection.name = _validate_name(name, errors)
        changed.append("name")
    if warehouse_type is not UNSET:
        connection.warehouse_type = _validate_type(warehouse_type, errors)
        changed.append("warehouse_type")
    if settings_patch is not UNSET and isinstance(settings_patch, dict):
        merged = {**connection.settings, **settings_patch}
        settings = {k: v for k, v in merged.items() if v is not None}
    if settings is not UNSET:
        connection.settings = _validate_settings(settings, errors)
        changed.append("settings")
    if errors:
        raise InvalidInput(errors)
    if changed:
        await connection.save(update_fields=[*changed, "updated_at"])
        if "name" in changed:  # the delivery pipeline is named after its connection
            await Pipeline.filter(connection_id=connection.id, kind="delivery").update(
                name=delivery_pipeline_name(connection.name)
            )
    return connection

