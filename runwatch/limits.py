"""Abuse limits: per-token rate limits and a request body size limit, as plain ASGI middleware.

Not `BaseHTTPMiddleware`: it would break the context variables Tortoise relies on. Both answer
in the error shape of the contract the path belongs to: `{"error": ...}` under `/api/elt/` and
`/api/agent/`, a GraphQL response (`{"errors": [{"message", "extensions": {"code"}}]}`) on
`/graphql`, `{"detail": ...}` everywhere else (the warehouse and Watcher contracts).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runwatch.resolvers.rate_limits import Limiter, RateLimiter

__all__ = ["BodySizeLimitMiddleware", "Limiter", "RateLimitMiddleware", "RateLimiter",
           "error_body", "rate_key", "rate_limited_operation"]

# Same prefixes as the app's own error handler (`runwatch.app.ERROR_SHAPED`).
ERROR_SHAPED = ("/api/elt/", "/api/agent/", "/api/elt", "/api/agent")
GRAPHQL_PATH = "/graphql"
OPENLINEAGE_PATH = "/api/v1/lineage"
LIMIT_STATUS = {"RATE_LIMITED": 429, "PAYLOAD_TOO_LARGE": 413}


def error_body(path: str, message: str, code: str) -> dict[str, Any]:
    """`message` in the error shape of the contract `path` belongs to (`code`: the GraphQL
    `extensions.code`)."""
    if path == GRAPHQL_PATH or path.startswith(GRAPHQL_PATH + "/"):
        return {"errors": [{"message": message, "extensions": {"code": code}}]}
    if path.startswith(ERROR_SHAPED):
        return {"error": message}
    if path.rstrip("/") == OPENLINEAGE_PATH:  # Marquez's shape
        return {"code": LIMIT_STATUS.get(code, 400), "message": message}
    return {"detail": message}


def rate_key(caller: Any, client: Any) -> Hashable:
    """Whose budget a request or a WebSocket operation spends: its token's (by id, so a
    rotated token's successor has its own), else its client address's."""
    if caller is not None and caller.token_id is not None:
        return ("token", caller.token_id)
    return ("client", client[0] if client else None)


def rate_limited_operation(per_minute: int, wait: float) -> dict[str, Any]:
    """The GraphQL error of one operation refused by the rate limit (`wait`: the limiter's
    seconds), the same over a WebSocket and in an HTTP batch: each operation counts."""
    seconds = max(1, math.ceil(wait))
    return {"message": f"Rate limit exceeded ({per_minute} requests per minute): retry after "
            f"{seconds} seconds.", "extensions": {"code": "RATE_LIMITED", "retryAfter": seconds}}


class RateLimitMiddleware:
    """`per_minute` requests per minute per token (keyed by the token's id, so a rotated
    token's successor has its own budget), and per client address for requests without a
    valid token; past it, `429 Too Many Requests` with `Retry-After` (seconds). `/health` and
    the Watcher's `GET /` (at `watcher_prefix`) are exempt. `per_minute=0` turns it off.

    The counts live where `limiter` keeps them (`runwatch.resolvers.rate_limits`): in this
    process (memory: with N replicas a token may get N times the limit), or in PostgreSQL or
    Redis, shared by every replica (fail open when the store is unreachable). The client
    address is the one the ASGI server reports (behind a reverse
    proxy, the proxy's, unless the server is told to trust its forwarded headers).

    It runs after `AuthMiddleware` (it needs the caller) and before the body is read, so a
    refused request costs no body parsing. A refused WebSocket handshake gets the same 429 when
    the server supports denial responses, else it is closed (code 1008); a WebSocket whose
    token comes only in `connection_init` is counted by its address (the handshake carries no
    token). The same `limiter` object counts every operation sent over a socket
    (`runwatch.ws`) and every operation of a GraphQL batch past its first
    (`runwatch.app.RunwatchGraphQL`): pass one to all.
    """

    def __init__(
        self, app: ASGIApp, *, per_minute: int, watcher_prefix: str = "",
        limiter: Limiter | None = None,
    ) -> None:
        self.app = app
        self.per_minute = per_minute
        if limiter is None and per_minute > 0:  # (an empty limiter is falsy: it has a len)
            limiter = RateLimiter(per_minute)
        self.limiter = limiter
        prefix = watcher_prefix.rstrip("/")
        self.exempt_get = {"/", prefix or "/", prefix + "/"}

    def exempt(self, scope: Scope) -> bool:
        path = scope["path"]
        return path in {"/health", "/ready"} or (
            scope["type"] == "http" and scope["method"] in {"GET", "HEAD"}
            and path in self.exempt_get
        )

    @staticmethod
    def key(scope: Scope) -> Hashable:
        return rate_key(scope.get("state", {}).get("caller"), scope.get("client"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.limiter is None or scope["type"] not in {"http", "websocket"}
                or self.exempt(scope)):
            await self.app(scope, receive, send)
            return
        wait = await self.limiter.check(self.key(scope))
        if not wait:
            await self.app(scope, receive, send)
            return
        seconds = max(1, math.ceil(wait))
        response = JSONResponse(
            error_body(scope["path"], f"Rate limit exceeded ({self.per_minute} requests per "
                       f"minute): retry after {seconds} seconds.", "RATE_LIMITED"),
            status_code=429, headers={"Retry-After": str(seconds)},
        )
        if scope["type"] == "http":
            await response(scope, receive, send)
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 429,
                        "headers": response.raw_headers})
            await send({"type": "websocket.http.response.body", "body": response.body})
        else:
            await send({"type": "websocket.close", "code": 1008})


class BodySizeLimitMiddleware:
    """Refuses a request body larger than `max_bytes` with `413 Content Too Large`, before any
    handler sees it: at once when `Content-Length` says so, else (a chunked body) as soon as
    the bytes read pass the limit. The body is read here, at most `max_bytes` of it, and handed
    on as it came; the handlers read whole bodies anyway."""

    # Passes sockets through: not in the GraphQL socket's lane (`runwatch.app.RunwatchApp`).
    http_only = True

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit():
            if int(declared) > self.max_bytes:
                await self.refuse(scope, receive, send)
                return
            if int(declared) == 0:
                await self.app(scope, receive, send)
                return
        read: deque[Message] = deque()
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self.refuse(scope, receive, send)
                return
            read.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return read.popleft() if read else await receive()

        await self.app(scope, replay, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            error_body(scope["path"], f"Request body too large: the limit is {self.max_bytes} "
                       "bytes.", "PAYLOAD_TOO_LARGE"),
            status_code=413,
            # The rest of the body is not read: the connection cannot be reused.
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
