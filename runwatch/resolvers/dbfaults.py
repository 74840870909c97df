"""Database faults, told apart from other failures: which errors mean "the database cannot be
used right now" (`database_unavailable`), and `retrying`, which lets background work outlast a
momentary loss. The web layer's answers to them (a 503 in each contract's shape) are in
`runwatch/faults.py`; this module is the domain's half and imports nothing from the web.

PostgreSQL (asyncpg through Tortoise): a connection the server terminated
(`pg_terminate_backend`, a restart, a failover), a server that refuses connections or is still
starting, too many connections. Tortoise does not retry or translate these: asyncpg's own
exceptions surface (`ConnectionDoesNotExistError` for a query in flight, `InterfaceError:
connection is closed` for a transaction's rollback on the dead connection, `AdminShutdownError`,
`CannotConnectNowError`, `OSError` from a refused connect), often chained (a failed rollback
raised while the lost query's error was being handled). asyncpg's pool replaces a closed
connection on the next acquire, so the service recovers by itself as soon as the server
answers again: requests are not retried here, the client does (`Retry-After`). Background
workers, which have no client to answer, retry their own database steps a few times
(`retrying`) so that a momentary loss does not leave claimed work waiting for its hold.

SQLite: the file locked by another process for longer than the busy timeout ("database is
locked"), or the file unreadable.

Everything else, including a failed query (a syntax error, a constraint), is not a fault of
the database's availability and stays what it was (a domain error, or a 500).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg
from tortoise.exceptions import DBConnectionError, OperationalError

log = logging.getLogger("runwatch.faults")

T = TypeVar("T")
RETRY_DELAY = 0.25  # `retrying`'s first pause, in seconds

# Server states that end (or refuse) connections: class 08 (connection exceptions, but a
# protocol violation is a bug), 57P01-57P04 (shutdown, crash, starting up, database dropped),
# 53300 (too many connections).
_PG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.DatabaseDroppedError,
    asyncpg.TooManyConnectionsError,
)
# asyncpg's InterfaceError is also raised for misuse; only these mean a lost connection.
_CLOSED = ("connection is closed", "underlying connection is closed", "pool is closed",
           "pool is closing")
# asyncpg's protocol state 2 (PROTOCOL_ERROR_CONSUME): see `_unavailable`.
_ERROR_CONSUME = "another operation (2) is in progress"
_SQLITE_UNAVAILABLE = ("database is locked", "database table is locked",
                       "unable to open database file", "disk i/o error")


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from or while handling, says the
    database cannot be reached or used right now (worth a retry, not a bug)."""
    return any(_unavailable(e) for e in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack and len(seen) < 50:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.ProtocolViolationError):
        return False
    if isinstance(exc, (DBConnectionError, *_PG_UNAVAILABLE)):
        return True
    if isinstance(exc, asyncpg.InternalClientError) and _ERROR_CONSUME in str(exc):
        # The server's FATAL message (its "terminating connection") arrived on an idle
        # connection: asyncpg's protocol waits for a sync point that never comes, and every
        # use of the connection fails like this until the end of the stream is read.
        return True
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError) and _raised_in(
            exc, "/asyncpg/pool.py", "release"):
        # Resetting a connection to give it back to the pool failed: asyncpg terminates it
        # ("most likely caused by an IO error").
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return any(text in str(exc) for text in _CLOSED)
    if isinstance(exc, sqlite3.OperationalError | OperationalError):
        return str(exc).lower().startswith(_SQLITE_UNAVAILABLE)
    if isinstance(exc, OSError):  # TimeoutError, ConnectionRefusedError, … while connecting
        return _raised_in(exc, "/asyncpg/")  # (a webhook's is not the database's)
    return False


def _raised_in(exc: BaseException, path: str, function: str | None = None) -> bool:
    """Whether `exc` went through a frame of a file whose path contains `path` (in
    `function`, if given)."""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if path in code.co_filename.replace("\\", "/") and function in (None, code.co_name):
            return True
        tb = tb.tb_next
    return False


async def retrying(step: Callable[[], Awaitable[T]], *, attempts: int = 5) -> T:
    """Run `step`; while it fails because the database is unavailable, run it again after
    `RETRY_DELAY`, doubling (at most `attempts` runs, about 4 s of pauses in all). Any other
    failure, and the last one, propagates. For background workers only: a request answers
    503 at once instead."""
    for attempt in range(attempts):
        try:
            return await step()
        except Exception as exc:
            if attempt == attempts - 1 or not database_unavailable(exc):
                raise
            log.info("database unavailable (%s: %s); trying again", type(exc).__name__, exc)
            await asyncio.sleep(RETRY_DELAY * 2**attempt)
    raise AssertionError("unreachable")


