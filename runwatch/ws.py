"""GraphQL over WebSocket obeys the rules of HTTP: one guard per socket.

A socket is authenticated when it opens, but it may live for hours: here every operation it
starts re-checks the token (through the same `Authenticator`, so within the same bound as HTTP:
the token cache's seconds), counts against the token's rate limit (the same limiter object as
HTTP requests: `runwatch.resolvers.rate_limits`), and is refused past the per-socket and per-
token subscription limits; a running subscription is closed (4401) within a second of the
token's cache entry running out once the token is revoked or expired (one task per app
re-checks the tokens of all its sockets every second); a message larger than the
body limit closes the socket (1009); a token holds at most `max_sockets` sockets at once
(4429).

Both WebSocket protocols (graphql-transport-ws and the legacy graphql-ws) go through the
handler subclasses at the end, which only call into `SocketGuard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator, Hashable
from dataclasses import dataclass, field
from json import JSONDecodeError
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from runwatch.auth import Authenticator, bearer_token
from runwatch.limits import Limiter, rate_key, rate_limited_operation

if TYPE_CHECKING:
    from runwatch.resolvers.caller import Caller
    from runwatch.schema.context import Context

# Close codes (graphql-transport-ws reserves 4400-4499 for the application).
REVOKED = 4401
TOO_MANY_SOCKETS = 4429
TOO_BIG = 1009
# How often a socket with live operations re-checks its token. The check is a look-up in the
# token cache most of the time, so a revoked token is noticed at most this long after HTTP
# notices it.
RECHECK_SECONDS = 1.0

@dataclass
class SocketLimits:
    """What every socket of one app shares: the authenticator, the rate limiter, the limits
    and the live sockets per key (token, or client address without one)."""

    authenticator: Authenticator
    limiter: Limiter | None
    per_minute: int
    max_sockets: int
    max_per_socket: int
    max_per_token: int
    max_message_bytes: int
    recheck_seconds: float = RECHECK_SECONDS
    sockets: dict[Hashable, set[SocketGuard]] = field(default_factory=dict)
    # The sockets authenticated with a token, re-checked together by one task (not one
    # sleeping task per socket: 10,000 sockets would be 10,000 wake-ups a second).
    watched: set[SocketGuard] = field(default_factory=set)
    sweeper: asyncio.Task[None] | None = None
    closing: set[asyncio.Task[None]] = field(default_factory=set)

    def watch(self, guard: SocketGuard) -> None:
        self.watched.add(guard)
        sweeper = self.sweeper
        # (A sweeper of another event loop, one that has stopped since, never runs again:
        # an app served by a new loop, as in tests, gets its own.)
        if (sweeper is None or sweeper.done()
                or sweeper.get_loop() is not asyncio.get_running_loop()):
            self.sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close every socket whose token stops authenticating while it runs operations (an
        idle socket is checked by its next operation): one look-up per token a round, most
        of the time in the token cache."""
        while self.watched:
            await asyncio.sleep(self.recheck_seconds)
            by_token: dict[str, list[SocketGuard]] = {}
            for guard in self.watched:
                if guard.operations and guard.token is not None:
                    by_token.setdefault(guard.token, []).append(guard)
            for token, guards in by_token.items():
                try:
                    caller = await self.authenticator(token)
                except Exception:  # the database is away: HTTP answers 503, try again later
                    continue
                for guard in guards:
                    if caller is not None:
                        guard.adopt(caller)
                    elif guard in self.watched:
                        self.watched.discard(guard)
                        task = asyncio.create_task(guard.close_revoked())
                        self.closing.add(task)
                        task.add_done_callback(self.closing.discard)


class SocketGuard:
    """The rules for one socket; `handler` is the protocol handler (its live operations)."""

    def __init__(self, limits: SocketLimits, handler: Any) -> None:
        self.limits = limits
        self.handler = handler
        self.key: Hashable | None = None
        self.token: str | None = None
        # The contexts of the socket's operations still running (`operation_context`).
        self.live_contexts: weakref.WeakValueDictionary[int, Context] = (
            weakref.WeakValueDictionary())

    def operation_context(self, context: Context) -> Context:
        """The context one operation runs with: the socket's, with DataLoaders of its own (as
        an HTTP request has), so that a repeated query on a long-lived socket reads afresh."""
        copy = context.for_operation()
        self.live_contexts[id(copy)] = copy
        return copy

    @property
    def operations(self) -> int:
        live = getattr(self.handler, "operations", None)
        if live is None:
            live = getattr(self.handler, "tasks", {})
        return len(live)

    def _token(self) -> str | None:
        """The token the socket was authenticated with: the handshake's header when it
        authenticated (`AuthMiddleware`), else the `connection_init` payload's (as
        `RunwatchGraphQL.on_ws_connect` chose)."""
        context = self.handler.context
        request = context.request
        if request is not None and request.scope.get("state", {}).get("caller") is not None:
            return bearer_token(request.scope["headers"]) or None
        params = context.connection_params or {}
        raw = params.get("Authorization") or params.get("authorization") or params.get(
            "authToken")
        if isinstance(raw, str) and raw.strip():
            return raw.strip().removeprefix("Bearer ").removeprefix("bearer ").strip()
        return None

    def admit(self) -> str | None:
        """Register the socket once its `connection_init` is accepted; the reason it may not
        stay open, or None."""
        context = self.handler.context
        client = context.request.scope.get("client") if context.request is not None else None
        self.key = rate_key(context.caller, client)
        self.token = self._token() if context.caller is not None else None
        live = self.limits.sockets.setdefault(self.key, set())
        if len(live) >= self.limits.max_sockets:
            return (f"Too many sockets: at most {self.limits.max_sockets} per token "
                    "(RUNWATCH_WS_MAX_SOCKETS_PER_TOKEN).")
        live.add(self)
        if self.token is not None:
            self.limits.watch(self)
        return None

    async def release(self) -> None:
        if self.key is not None:
            live = self.limits.sockets.get(self.key)
            if live is not None:
                live.discard(self)
                if not live:
                    del self.limits.sockets[self.key]
        self.limits.watched.discard(self)

    async def still_valid(self) -> bool:
        """Whether the socket's token still authenticates (always for a socket without one)."""
        if self.token is None:
            return True
        caller = await self.limits.authenticator(self.token)
        if caller is None:
            return False
        self.adopt(caller)
        return True

    def adopt(self, caller: Caller) -> None:
        """The token's caller as looked up now: a changed one (the token's scopes, its
        organisation) replaces the old one for the socket's next operations and the next
        events of those running."""
        context = self.handler.context
        if caller != context.caller:
            for each in (context, *self.live_contexts.values()):
                each.adopt(caller)

    async def close_revoked(self) -> None:
        with contextlib.suppress(Exception):
            await self.handler.websocket.close(
                code=REVOKED, reason="Token revoked or expired: reconnect with a valid token.")

    async def refuse_operation(self) -> dict[str, Any] | None:
        """Before an operation runs: None to run it, or the GraphQL error refusing it. A
        revoked token closes the socket instead (`"close"` in the answer)."""
        try:
            valid = await self.still_valid()
        except Exception:  # the token look-up failed (the database is away), as HTTP's 503
            return {"message": "The service is unavailable: retry shortly.",
                    "extensions": {"code": "SERVICE_UNAVAILABLE"}}
        if not valid:
            return {"close": True}
        limits = self.limits
        if limits.limiter is not None and self.key is not None:
            wait = await limits.limiter.check(self.key)
            if wait:
                return rate_limited_operation(limits.per_minute, wait)
        if self.operations >= limits.max_per_socket:
            return {"message": f"Too many operations on this socket: at most "
                    f"{limits.max_per_socket} at once (RUNWATCH_WS_MAX_SUBSCRIPTIONS_PER_SOCKET).",
                    "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS",
                                   "maximum": limits.max_per_socket}}
        if self.key is not None:
            running = sum(g.operations for g in limits.sockets.get(self.key, ()))
            if running >= limits.max_per_token:
                return {"message": f"Too many subscriptions for this token: at most "
                        f"{limits.max_per_token} at once "
                        "(RUNWATCH_WS_MAX_SUBSCRIPTIONS_PER_TOKEN).",
                        "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS",
                                       "maximum": limits.max_per_token}}
        return None


class LimitedWebSocketAdapter(ASGIWebSocketAdapter):
    """Messages larger than the body limit close the socket (1009) before they are parsed."""

    async def iter_json(self, *, ignore_parsing_errors: bool = False
                        ) -> AsyncGenerator[object, None]:
        limit = self.view.socket_limits.max_message_bytes
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                if len(text) > limit or (len(text) * 4 > limit and len(
                        text.encode("utf-8", "surrogatepass")) > limit):
                    await self.ws.close(code=TOO_BIG, reason=f"Message too big: the limit is "
                                        f"{limit} bytes.")
                    return
                try:
                    yield self.view.decode_json(text)
                except JSONDecodeError as e:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from e
        except KeyError as e:
            raise NonTextMessageReceived from e
        except WebSocketDisconnect:
            pass


class _PerOperation:
    """The schema as a socket's handler calls it: every operation it starts (`stream` for
    graphql-transport-ws, `subscribe` for graphql-ws) gets its own context
    (`SocketGuard.operation_context`) instead of the one the socket holds for its life."""

    def __init__(self, schema: Any, guard: SocketGuard) -> None:
        self._schema = schema
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._schema, name)

    async def stream(self, *args: Any, context_value: Any, **kwargs: Any) -> Any:
        return await self._schema.stream(
            *args, context_value=self._guard.operation_context(context_value), **kwargs)

    async def subscribe(self, *args: Any, context_value: Any, **kwargs: Any) -> Any:
        return await self._schema.subscribe(
            *args, context_value=self._guard.operation_context(context_value), **kwargs)


class _Guarded:
    """What both protocol handlers share: a guard, released when the socket ends, and a
    context per operation."""

    guard: SocketGuard

    async def handle(self) -> None:
        self.guard = SocketGuard(self.view.socket_limits, self)  # type: ignore[attr-defined]
        self.schema = _PerOperation(self.schema, self.guard)  # type: ignore[has-type]
        try:
            await super().handle()  # type: ignore[misc]
        finally:
            await self.guard.release()

    async def _admit(self) -> bool:
        if not self.connection_acknowledged:  # type: ignore[attr-defined]
            return False
        reason = self.guard.admit()
        if reason is None:
            return True
        self.connection_acknowledged = False
        await self.websocket.close(code=TOO_MANY_SOCKETS, reason=reason)  # type: ignore
        return False


class TransportWSHandler(_Guarded, BaseGraphQLTransportWSHandler):
    async def handle_connection_init(self, message: Any) -> None:
        await super().handle_connection_init(message)
        await self._admit()

    async def handle_subscribe(self, message: Any) -> None:
        if self.connection_acknowledged and message["id"] not in self.operations:
            refused = await self.guard.refuse_operation()
            if refused is not None:
                if refused.get("close"):
                    await self.guard.close_revoked()
                else:
                    await self.send_message({"id": message["id"], "type": "error",
                                             "payload": [refused]})
                return
        await super().handle_subscribe(message)


class LegacyWSHandler(_Guarded, BaseGraphQLWSHandler):
    async def handle_connection_init(self, message: Any) -> None:
        await super().handle_connection_init(message)
        await self._admit()

    async def handle_start(self, message: Any) -> None:
        if self.connection_acknowledged:
            refused = await self.guard.refuse_operation()
            if refused is not None:
                if refused.get("close"):
                    await self.guard.close_revoked()
                else:
                    await self.send_message({"type": "error", "id": message["id"],
                                             "payload": refused})
                return
        await super().handle_start(message)


__all__ = ["LegacyWSHandler", "LimitedWebSocketAdapter", "SocketGuard", "SocketLimits",
           "TransportWSHandler"]
