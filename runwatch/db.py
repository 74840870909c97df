"""Database configuration and migrations (Tortoise's built-in migration engine)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import pkgutil
import sqlite3
from typing import Any

from tortoise import Tortoise
from tortoise.backends.asyncpg import client as asyncpg_backend
from tortoise.backends.base.client import (
    BaseDBAsyncClient,
    TransactionalDBClient,
    TransactionContextPooled,
)
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.backends.sqlite import client as sqlite_backend
from tortoise.connection import get_connections
from tortoise.exceptions import OperationalError
from tortoise.migrations.api import migrate as migrate_api

MODELS_MODULE = "runwatch.models"
MIGRATIONS_MODULE = "runwatch.models.migrations"


def tortoise_config(database_url: str) -> dict[str, Any]:
    connection: str | dict[str, Any] = database_url
    if database_url.startswith(("sqlite", "asyncpg")):  # Tortoise's clients, fixed below
        connection = {**expand_db_url(database_url), "engine": __name__}
    return {
        "connections": {"default": connection},
        "apps": {
            "models": {
                "models": [MODELS_MODULE],
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


# --------------------------------------------------------------------------------- engines
#
# This module is the Tortoise `engine` of runwatch's connections: Tortoise's own clients, with
# what the fault tests found fixed. (Tortoise's migration executor picks its schema editor by
# the client class's module name, hence the `__module__` of each.)
#
# SQLite. Tortoise keeps one connection per process (an asyncio lock serialises its statements
# and is held through a transaction), in WAL mode (its default), with the `busy_timeout` of
# the URL (`normalise_database_url` adds one): a statement that needs the write lock while
# another *process* holds it waits for it. Two things still surfaced "database is locked" or
# worse with a second process writing the same file:
#
# - Transactions began with a deferred `BEGIN`: one that reads before it writes holds a read
#   snapshot, and when it then needs the write lock SQLite answers SQLITE_BUSY at once if
#   another process wrote in the meantime (waiting would not make the snapshot current, so
#   the busy timeout does not apply). Here they begin with `BEGIN IMMEDIATE`: the write lock
#   first, waited for under the busy timeout like any single statement.
# - A begin that failed (the busy timeout ran out) left the client's lock held for good: every
#   later query of the process hung. Here it lets go of the lock; and a begin whose request
#   was cancelled while it waited for the write lock rolls back what it opened before the next
#   statement can run (it still runs in aiosqlite's thread).
#
# The pragmas run busy timeout first, so that switching to WAL already waits for the lock.
#
# PostgreSQL. Tortoise does not retry a query or reconnect by itself; asyncpg's pool replaces
# a closed connection on the next acquire, so the service heals as soon as the server answers.
# But a transaction whose `BEGIN` failed (its connection just killed) was never given back to
# the pool: asyncpg does not always return the holder of a connection that closed under it, so
# each such fault could take one of the pool's connections for good (the pool hangs when all
# are gone, and so does closing it), and the task kept the dead transaction as its connection.
# Here a failed begin releases its connection and leaves the task's connection as it was.


class SqliteTransaction(sqlite_backend.SqliteTransactionWrapper):
    async def begin(self) -> None:
        try:
            await self._connection.commit()  # as Tortoise does: nothing may be left open
            await self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # "database is locked": like any statement's
            raise OperationalError(exc) from exc


_abandoned: set[asyncio.Task[None]] = set()


class SqliteTransactionContext(sqlite_backend.SqliteTransactionContext):
    async def __aenter__(self) -> SqliteTransaction:
        await self._trxlock.acquire()
        handed_off = False
        try:
            await self.ensure_connection()
            begin = asyncio.ensure_future(self.connection.begin())
            try:
                await asyncio.shield(begin)
            except asyncio.CancelledError:
                if not begin.done():
                    task = asyncio.ensure_future(self._abandon(begin))
                    _abandoned.add(task)
                    task.add_done_callback(_abandoned.discard)
                    handed_off = True
                raise
        except BaseException:
            if not handed_off:
                self._trxlock.release()
            raise
        self.token = get_connections().set(self.connection_name, self.connection)
        return self.connection

    async def _abandon(self, begin: asyncio.Future[None]) -> None:
        """Let a begin whose caller went away finish, roll back what it opened, let go."""
        try:
            with contextlib.suppress(Exception):
                await begin
                await self.connection._connection.rollback()
        finally:
            self._trxlock.release()


class SqliteClient(sqlite_backend.SqliteClient):
    __module__ = f"{__name__}.sqlite"

    def __init__(self, file_path: str, **kwargs: Any) -> None:
        super().__init__(file_path, **kwargs)
        if "busy_timeout" in self.pragmas:
            self.pragmas = {"busy_timeout": self.pragmas.pop("busy_timeout"), **self.pragmas}

    def _in_transaction(self) -> SqliteTransactionContext:
        return SqliteTransactionContext(SqliteTransaction(self), self._lock)


class PooledTransactionContext(TransactionContextPooled):
    async def __aenter__(self) -> TransactionalDBClient:
        await self.ensure_connection()
        pool = self.client._parent._pool
        self.client._connection = await pool.acquire()
        try:
            await self.client.begin()
        except BaseException:
            with contextlib.suppress(Exception):  # a dead connection: asyncpg terminates it
                await pool.release(self.client._connection)
            raise
        self.token = get_connections().set(self.connection_name, self.client)
        return self.client


async def _keep_session(conn: Any) -> None:
    """asyncpg's pool `reset`: nothing more than what asyncpg always does on release (roll
    back an open transaction, drop listeners). Its default also sends `SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`, one more round trip each time
    a connection goes back: every ORM statement outside a transaction takes one, so a request
    of two reads paid four round trips. runwatch leaves no session state on pooled
    connections (no SET outside a transaction, no advisory locks, no cursors; LISTEN is on the
    live listener's own connection; `tests/test_db_pool.py` keeps it so)."""


class AsyncpgClient(asyncpg_backend.AsyncpgDBClient):
    __module__ = f"{__name__}.asyncpg"

    async def create_pool(self, **kwargs: Any) -> Any:
        return await super().create_pool(**{"reset": _keep_session, **kwargs})

    def _in_transaction(self) -> PooledTransactionContext:
        return PooledTransactionContext(asyncpg_backend.TransactionWrapper(self),
                                        self._pool_init_lock)


def get_client_class(db_info: dict[str, Any]) -> type[BaseDBAsyncClient]:
    """Tortoise's hook for an engine module: the client for a connection's settings."""
    return SqliteClient if "file_path" in db_info["credentials"] else AsyncpgClient


async def apply_migrations(database_url: str) -> list[str]:
    """Apply every pending migration; returns the names applied (empty when up to date)."""
    applied: list[str] = []

    def progress(event: str, app_label: str, name: str) -> None:
        if event == "apply_done":
            applied.append(f"{app_label}.{name}")

    try:
        await migrate_api(config=tortoise_config(database_url), progress=progress)
    finally:
        await Tortoise.close_connections()
    return applied


def migration_names() -> list[str]:
    """The migrations shipped with this version, in order."""
    package = importlib.import_module(MIGRATIONS_MODULE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name[:1].isdigit())


async def pending_migrations(conn: BaseDBAsyncClient) -> list[str] | None:
    """The shipped migrations this database has not applied yet; None when it has no runwatch
    schema at all (never migrated). Reads only: it never creates a table."""
    if conn.capabilities.dialect == "sqlite":
        probe = ("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' "
                 "AND name = 'tortoise_migrations'")
    else:
        probe = "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'tortoise_migrations' " \
                "AND schemaname = ANY (current_schemas(false))"
    if not (await conn.execute_query_dict(probe))[0]["n"]:
        return None
    rows = await conn.execute_query_dict(
        "SELECT name FROM tortoise_migrations WHERE app = 'models'")
    applied = {row["name"] for row in rows}
    return [name for name in migration_names() if name not in applied]


async def unmigrated_model_changes() -> list[str]:
    """Operations `tortoise makemigrations` would write now; empty when migrations match models.

    Uses a private in-memory context, so it never touches a real database.
    """
    from tortoise.context import TortoiseContext
    from tortoise.migrations.autodetector import MigrationAutodetector

    config = tortoise_config("sqlite://:memory:")
    async with TortoiseContext() as ctx:
        await ctx.init(config=config)
        writers = await MigrationAutodetector(ctx.apps, config["apps"]).changes()
    return [f"{w.app_label}: {op.describe() if hasattr(op, 'describe') else op!r}"
            for w in writers for op in w.operations]


# For Tortoise's own CLI: `tortoise -c runwatch.db.TORTOISE_ORM makemigrations` (`make migrations`).
TORTOISE_ORM = tortoise_config("sqlite://:memory:")
