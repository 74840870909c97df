"""Database faults: which failures mean "the database cannot be used right now", and the 503
each contract answers for them.

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
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg
from graphql import GraphQLError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension
from tortoise.exceptions import DBConnectionError, OperationalError

log = logging.getLogger("runwatch.faults")

T = TypeVar("T")
RETRY_DELAY = 0.25  # `retrying`'s first pause, in seconds

RETRY_AFTER_SECONDS = 1
MESSAGE = "The database is unavailable; retry shortly."
HEADERS = {"Retry-After": str(RETRY_AFTER_SECONDS)}
GRAPHQL_CODE = "SERVICE_UNAVAILABLE"

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


# ------------------------------------------------------------------------------- the answers

_last_logged = 0.0
_unlogged = 0


def note(exc: BaseException, where: str) -> None:
    """Log a database fault answered with a 503: one line a second at most (an outage under
    load fails every request), without a traceback (it is not a bug)."""
    global _last_logged, _unlogged
    now = time.monotonic()
    if now - _last_logged < 1:
        _unlogged += 1
        return
    more = f" (and {_unlogged} more since the last report)" if _unlogged else ""
    log.warning("database unavailable, answered 503 (%s): %s: %s%s",
                where, type(exc).__name__, exc, more)
    _last_logged, _unlogged = now, 0


def unavailable(key: str, exc: BaseException, where: str) -> JSONResponse:
    """The 503 of a REST contract whose errors are `{key: message}` (`detail` or `error`)."""
    note(exc, where)
    return JSONResponse({key: MESSAGE}, status_code=503, headers=HEADERS)


def graphql_unavailable_body() -> dict[str, object]:
    return {"data": None, "errors": [{"message": MESSAGE, "extensions": {"code": GRAPHQL_CODE}}]}


def graphql_fault(error: GraphQLError) -> bool:
    """A GraphQL error a database fault caused (`_is_unexpected` leaves these to
    `DatabaseFaultErrors`: they are neither masked nor logged as crashes)."""
    return error.original_error is not None and database_unavailable(error.original_error)


def _unavailable_error(error: GraphQLError) -> GraphQLError:
    note(error.original_error, "GraphQL")  # type: ignore[arg-type]
    return GraphQLError(MESSAGE, nodes=error.nodes, source=error.source,
                        positions=error.positions, path=error.path,
                        extensions={"code": GRAPHQL_CODE})


class DatabaseFaultErrors(SchemaExtension):
    """GraphQL: an error a database fault caused is reported as `MESSAGE` with
    `extensions.code = "SERVICE_UNAVAILABLE"` (nothing of the driver's message), and over
    HTTP the whole answer is a 503 with `Retry-After` (the data that did resolve stays in it;
    a client retries the operation). Subscription events get the same error, no status."""

    def on_execute(self):  # type: ignore[no-untyped-def]
        yield
        self._rewrite(self.execution_context.result)

    def on_stream_result(self, result):  # type: ignore[no-untyped-def]
        self._rewrite(result)
        yield None

    def _rewrite(self, result: object) -> None:
        errors = getattr(result, "errors", None)
        if not errors or not any(graphql_fault(e) for e in errors):
            return
        result.errors = [_unavailable_error(e) if graphql_fault(e) else e  # type: ignore[attr-defined]
                         for e in errors]
        response = getattr(self.execution_context.context, "response", None)
        if response is not None:  # HTTP (a WebSocket has no status to set)
            response.status_code = 503
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)


class DatabaseFaults:
    """ASGI middleware, outside the others: a database fault that escapes a route or a
    middleware (the token look-up runs in one, before any route) is answered 503 in the
    path's contract shape, `Retry-After` included, instead of the 500 of an unexpected error.
    A response already started cannot be replaced: then the error propagates as before. A
    WebSocket is closed with 1013 (try again later)."""

    def __init__(self, app: ASGIApp, *, error_shaped: tuple[str, ...] = (),
                 graphql_path: str = "/graphql") -> None:
        self.app = app
        self.error_shaped = error_shaped
        self.graphql_path = graphql_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] in {"http.response.start", "websocket.accept",
                                   "websocket.close", "websocket.http.response.start"}:
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started or not database_unavailable(exc):
                raise
            path = scope.get("path", "")
            note(exc, path)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1013, "reason": MESSAGE})
                return
            await self.response(path)(scope, receive, send)

    def response(self, path: str) -> JSONResponse:
        if path.rstrip("/") == self.graphql_path:
            body: dict[str, object] = graphql_unavailable_body()
        else:
            body = {"error" if path.startswith(self.error_shaped) else "detail": MESSAGE}
        return JSONResponse(body, status_code=503, headers=HEADERS)
