"""Portable raw SQL for the few statements the ORM cannot express (additive upserts,
windowed aggregates), and for the hot reads and writes of the REST paths where the ORM's
per-call work showed in the profile (`select`, `insert`, `update`). Write `?` placeholders;
asyncpg gets `$1..$n`. (The statements here never hold a literal `?`, so a plain substitution
is enough.)"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from tortoise import connections, timezone
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.fields import DatetimeField, Field
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


@dataclass(frozen=True)
class _Column:
    """A column of an INSERT: its field, and what it gets when not given (`Model.__init__`'s
    rules): `stamp` (`auto_now` always, `auto_now_add` when not given: the ORM's clock),
    `make` (a callable default, called each time), `copy` (a mutable default, copied), else
    `stored` (a constant default, as the database takes it: converted once)."""

    name: str
    field: Field
    stamp: bool = False
    always: bool = False  # auto_now: stamped even when given
    make: Any = None
    copy: Any = None
    stored: Any = None


@lru_cache(maxsize=64)
def _insert_plan(model: type[Model]) -> tuple[tuple[_Column, ...], frozenset[str], str]:
    """The columns of `model`'s INSERT (every one but the generated id), their names, and the
    statement with `?` placeholders."""
    meta = model._meta
    columns = []
    for name, column in meta.fields_db_projection.items():
        if name in meta.generated_db_fields:
            continue
        field = meta.fields_map[name]
        default = field.default
        if inspect.iscoroutinefunction(default) or (default is None and field.has_db_default()):
            # An awaited default, or the database's own: the ORM's dynamic insert (none of
            # the models `insert` is used for has one).
            raise NotImplementedError(f"{model.__name__}.{name}: use the ORM's create")
        if isinstance(field, DatetimeField) and (field.auto_now or field.auto_now_add):
            columns.append(_Column(column, field, stamp=True, always=field.auto_now))
        elif callable(default):
            columns.append(_Column(column, field, make=default))
        elif default is None or isinstance(default, int | float | str | bool | bytes):
            stored = None if default is None else field.to_db_value(default, None)
            columns.append(_Column(column, field, stored=stored))
        else:
            columns.append(_Column(column, field, copy=default))
    quoted = ", ".join(f'"{c.name}"' for c in columns)
    statement = (f'INSERT INTO "{meta.db_table}" ({quoted}) '
                 f"VALUES ({placeholders(len(columns))}) RETURNING *")
    return tuple(columns), frozenset(c.name for c in columns), statement


async def insert(model: type[M], values: dict[str, Any], conn: BaseDBAsyncClient) -> M:
    """A new row of `model` as `Model.create(**values, using_db=conn)` makes it (every other
    column gets the model's default; `auto_now` / `auto_now_add` times are stamped; values go
    through the fields' conversions and checks; a null for a non-null field is refused), in
    one `INSERT … RETURNING *`, the instance loaded from the row the database stored.

    `values` are keyed by column (`pipeline_id`, not `pipeline`). For the hot creates (a run's
    start): `Model.create` builds the instance and converts each of its ~40 fields before the
    INSERT; here only the values given are converted."""
    columns, known, statement = _insert_plan(model)
    unknown = values.keys() - known
    if unknown:
        raise TypeError(f"{model.__name__} has no column {sorted(unknown)}")
    now = None
    params = []
    for c in columns:
        if c.stamp and (c.always or values.get(c.name) is None):
            now = now or timezone.localtime()
            value = c.field.to_db_value(now, None)
        elif c.name in values:
            value = values[c.name]
            if value is None:
                if not c.field.null:
                    raise ValueError(f"{c.name} is non nullable field, but null was passed")
            else:
                value = c.field.to_db_value(c.field.to_python_value(value), None)
        elif c.make is not None:
            value = c.field.to_db_value(c.make(), None)
        elif c.copy is not None:
            value = c.field.to_db_value(deepcopy(c.copy), None)
        else:
            value = c.stored
        params.append(value)
    rows = await conn.execute_query_dict(render(conn, statement), params)
    return model_from_row(model, rows[0])


async def update(model: type[Model], row_id: int, changes: dict[str, Any],
                 conn: BaseDBAsyncClient) -> int:
    """`Model.filter(id=row_id).using_db(conn).update(**changes)` in one statement built once
    per set of fields (the values through the fields' conversions and checks, as the ORM
    sends them): the number of rows changed. `changes` are keyed by field (not relation)
    name."""
    fields_map, projection = model._meta.fields_map, model._meta.fields_db_projection
    unknown = changes.keys() - projection.keys()
    if unknown:
        raise TypeError(f"{model.__name__} has no column {sorted(unknown)}")
    params = []
    for name, value in changes.items():
        field = fields_map[name]
        if value is None and not field.null:
            raise ValueError(f"{name} is non nullable field, but null was passed")
        params.append(None if value is None else field.to_db_value(value, None))
    params.append(row_id)
    columns = tuple(projection[name] for name in changes)
    return await execute(_update_statement(model._meta.db_table, columns), params, conn)


@lru_cache(maxsize=256)
def _update_statement(table: str, names: tuple[str, ...]) -> str:
    sets = ", ".join(f'"{name}" = ?' for name in names)
    return f'UPDATE "{table}" SET {sets} WHERE "id" = ?'


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
