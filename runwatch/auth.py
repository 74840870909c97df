"""Authentication: plain ASGI middleware turns a bearer token into a `Caller` once per request.

Authorization (scopes, tenancy) is the resolvers' job. Not `BaseHTTPMiddleware`: it would break
the context variables Tortoise relies on.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.types import ASGIApp, Receive, Scope, Send

from runwatch.resolvers.caller import Caller
from runwatch.resolvers.tokens import identify

MAX_CACHED_TOKENS = 10_000
# The longest a process may keep accepting a token after it was revoked (the hardening
# promise): a larger `RUNWATCH_TOKEN_CACHE_SECONDS` is clamped to this.
MAX_CACHE_SECONDS = 60


class Authenticator:
    """Token -> Caller, remembered for `ttl` seconds per process (0 disables the cache).

    The cache is keyed by a hash of the token (the token itself is not kept) and holds only
    successful look-ups, so unknown tokens cannot fill it. `ttl` is clamped to
    `MAX_CACHE_SECONDS`, so a revoked token stops working on every replica within a minute
    (within `ttl` seconds); an entry never outlives the token's own `expires_at` (the end of a
    rotation's overlap). `clock` (monotonic seconds) is for tests.
    """

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = min(max(ttl, 0), MAX_CACHE_SECONDS)
        self.clock = clock
        self._cache: dict[str, tuple[Caller, float]] = {}
        # Look-ups under way: when an entry runs out, every socket of that token re-checks
        # within the same second, and they share one look-up.
        self._inflight: dict[str, asyncio.Future[Caller | None]] = {}

    async def __call__(self, token: str) -> Caller | None:
        if self.ttl <= 0:
            identity = await identify(token)
            return identity.caller if identity is not None else None
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled
                return await self(token)  # the one looking up was: look up again
        future: asyncio.Future[Caller | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            caller = await self._look_up(token, key, now)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no warning when nobody else waited
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(caller)
            return caller
        finally:
            self._inflight.pop(key, None)

    async def _look_up(self, token: str, key: str, now: float) -> Caller | None:
        identity = await identify(token)
        if identity is None:
            self._cache.pop(key, None)
            return None
        until = now + self.ttl
        if identity.expires_at is not None:
            left = (identity.expires_at - datetime.now(UTC)).total_seconds()
            until = min(until, now + left)
        if len(self._cache) >= MAX_CACHED_TOKENS:
            self._cache.clear()
        self._cache[key] = (identity.caller, until)
        return identity.caller


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (`Token <token>` too); "" when
    the header is there but not in that form; None without the header."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() in {"bearer", "token"} and token.strip():
                return token.strip()
            return ""
    return None


# Why a request is not authenticated (`scope["state"]["auth_problem"]`), and what to tell the
# person, on every surface that words it freely (GraphQL, hints on the REST shims). The REST
# contracts keep their own words for an unknown token ("Invalid token.").
NO_TOKEN = "missing"
UNKNOWN_TOKEN = "invalid"
NOT_BEARER = "scheme"
BEARER_HINT = "Send it as 'Authorization: Bearer <token>'."
MESSAGES = {
    NO_TOKEN: "Authentication required: send 'Authorization: Bearer <token>' (create one with "
    "`runwatch token create`).",
    UNKNOWN_TOKEN: "Invalid token: it is unknown, revoked or expired. Check it, or create "
    "another with `runwatch token create` (`runwatch token list` shows the existing ones).",
    NOT_BEARER: f"Invalid token. {BEARER_HINT}",
}


def auth_problem(state: dict[str, object] | object) -> str | None:
    """`NO_TOKEN`, `UNKNOWN_TOKEN`, `NOT_BEARER` or None (authenticated) for a request's
    state (a dict or Starlette's `request.state`)."""
    if isinstance(state, dict):
        return state.get("auth_problem")  # type: ignore[return-value]
    return getattr(state, "auth_problem", None)


class AuthMiddleware:
    """Sets `scope["state"]["caller"]` (a Caller or None), `["auth_failed"]` (a token was
    sent but is not valid) and `["auth_problem"]` (why there is no caller, see `MESSAGES`)."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in {"http", "websocket"}:
            state = scope.setdefault("state", {})
            token = bearer_token(scope["headers"])
            caller = await self.authenticator(token) if token else None
            state["caller"] = caller
            state["auth_failed"] = token is not None and caller is None
            state["auth_problem"] = (
                None if caller is not None else NO_TOKEN if token is None
                else NOT_BEARER if token == "" else UNKNOWN_TOKEN)
        await self.app(scope, receive, send)
