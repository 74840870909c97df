"""The web layer's answer to database faults: a 503 in each contract's shape (`{"detail"}`,
`{"error"}`, GraphQL's `SERVICE_UNAVAILABLE`), with `Retry-After`, for a request that met a
fault anywhere inside it. Which failures count as a fault (and `retrying`, for background
work) is the domain's business: `runwatch/resolvers/dbfaults.py`.
"""

from __future__ import annotations

import logging
import time

from graphql import GraphQLError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from runwatch import metrics
from runwatch.resolvers.dbfaults import database_unavailable

log = logging.getLogger("runwatch.faults")


RETRY_AFTER_SECONDS = 1
MESSAGE = "The database is unavailable; retry shortly."
HEADERS = {"Retry-After": str(RETRY_AFTER_SECONDS)}
GRAPHQL_CODE = "SERVICE_UNAVAILABLE"

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
        reword_faults(self.execution_context.result, self.execution_context.context)

    def on_stream_result(self, result):  # type: ignore[no-untyped-def]
        reword_faults(result, self.execution_context.context)
        yield None


def reword_faults(result: object, context: object) -> None:
    """`DatabaseFaultErrors`' rule, also the prepared path's (`runwatch.schema.prepared`):
    the result's fault errors reworded, and over HTTP a 503 with `Retry-After`."""
    errors = getattr(result, "errors", None)
    if not errors or not any(graphql_fault(e) for e in errors):
        return
    result.errors = [_unavailable_error(e) if graphql_fault(e) else e  # type: ignore[attr-defined]
                     for e in errors]
    response = getattr(context, "response", None)
    if response is not None:  # HTTP (a WebSocket has no status to set)
        metrics.database_fault("graphql")
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
            metrics.database_fault(scope["type"])
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1013, "reason": MESSAGE})
                return
            await self.response(path)(scope, receive, send)

    def response(self, path: str) -> JSONResponse:
        if path.rstrip("/") == self.graphql_path:
            body: dict[str, object] = graphql_unavailable_body()
        elif path.rstrip("/") == "/api/v1/lineage":  # OpenLineage: Marquez's shape
            body = {"code": 503, "message": MESSAGE}
        else:
            body = {"error" if path.startswith(self.error_shaped) else "detail": MESSAGE}
        return JSONResponse(body, status_code=503, headers=HEADERS)
