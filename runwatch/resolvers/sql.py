"""Portable raw SQL for the few statements the ORM cannot express (additive upserts,
windowed aggregates). Write `?` placeholders; asyncpg gets `$1..$n`. (The statements here never
hold a literal `?`, so a plain substitution is enough.)"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

_QMARK = re.compile(r"\?")
M = TypeVar("M", bound=Model)


def client() -> BaseDBAsyncClient:
    return connections.get("default")


def is_postgres(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


def render(conn: BaseDBAsyncClient, sql: str) -> str:
    return _numbered(sql) if is_postgres(conn) else sql


@lru_cache(maxsize=256)
def _numbered(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _QMARK.sub(lambda _: f"${next(counter)}", sql)


def placeholders(n: int) -> str:
    return ", ".join("?" for _ in range(n))


async def fetch(
    sql: str, params: Sequence[Any] = (), conn: BaseDBAsyncClient | None = None
) -> list[dict[str, Any]]:
    conn = conn or client()
    return await conn.execute_query_dict(render(conn, sql), list(params))


async def execute(
    sql: str, params: Sequence[Any] = (), conn: BaseDBAsyncClient | None = None
) -> int:
    conn = conn or client()
    rowcount, _ = await conn.execute_query(render(conn, sql), list(params))
    return rowcount


async def select(
    model: type[M], where: str, params: Sequence[Any] = (), conn: BaseDBAsyncClient | None = None
) -> list[M]:
    """Instances of `model` from `SELECT * FROM <its table> WHERE <where>`, as the ORM loads
    them. `where` has `?` placeholders and may go on with ORDER BY, LIMIT and FOR UPDATE (left
    out on SQLite, as the ORM's `select_for_update` is); `params` are plain values (ints,
    texts), sent as they are.

    For the hot look-ups of the REST paths: the statement the ORM would send, without its
    query builder's work on every call (about a fifth of a Watcher request's server CPU under
    py-spy). Elsewhere the ORM's querysets are the clearer way."""
    conn = conn or client()
    table = model._meta.db_table
    rows = await conn.execute_query_dict(_select_statement(table, where, is_postgres(conn)),
                                         list(params))
    return [model_from_row(model, row) for row in rows]


@lru_cache(maxsize=256)
def _select_statement(table: str, where: str, postgres: bool) -> str:
    statement = f'SELECT * FROM "{table}" WHERE {where}'
    if postgres:
        return _numbered(statement)
    return statement.removesuffix(" FOR UPDATE")


async def first(
    model: type[M], where: str, params: Sequence[Any] = (), conn: BaseDBAsyncClient | None = None
) -> M | None:
    """The one instance `select` finds with `where` (which ends with `LIMIT 1`), or None."""
    found = await select(model, where, params, conn)
    return found[0] if found else None


def model_from_row(model: type[M], row: dict[str, Any]) -> M:
    """A model instance from a raw `RETURNING *` row, converted as the ORM converts its own
    reads (SQLite hands back text for times and JSON). The one caller of Tortoise's
    `_init_from_db`: it has no public equivalent that skips the constructor's defaults."""
    return model._init_from_db(**row)


def as_datetime(value: Any) -> Any:
    """Datetimes come back as `datetime` from asyncpg and as ISO text from SQLite."""
    if value is None or isinstance(value, datetime):
        return value.astimezone(UTC) if value is not None and value.tzinfo else value
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def json_param(value: Any) -> str:
    """A JSON value as a statement parameter (asyncpg's jsonb codec and SQLite both take
    text)."""
    return json.dumps(value, separators=(",", ":"))


def as_json(value: Any) -> Any:
    """A JSON column as Python: asyncpg decodes jsonb already, SQLite hands back text."""
    return json.loads(value) if isinstance(value, str | bytes) else value
