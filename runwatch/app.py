"""The ASGI application: /graphql (with the GraphiQL console), the REST shims, health."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from cross_web import HTTPException as StrawberryHTTPException
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET
from tortoise import connections
from tortoise.contrib.starlette import RegisterTortoise

from runwatch import __version__
from runwatch.auth import Authenticator, AuthMiddleware
from runwatch.db import pending_migrations, tortoise_config
from runwatch.faults import DatabaseFaults
from runwatch.limits import BodySizeLimitMiddleware, RateLimitMiddleware
from runwatch.resolvers.telemetry import TelemetryCache, TelemetryOptions
from runwatch.rest_shim import elt, openapi, warehouse, watcher
from runwatch.schema import build_schema
from runwatch.schema.context import Context, Loaders
from runwatch.services.workers import run_workers
from runwatch.settings import Settings


class RunwatchGraphQL(GraphQL):
    def __init__(
        self, *args: Any, options: TelemetryOptions, settings: Settings,
        authenticator: Authenticator, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.options = options
        self.settings = settings
        self.authenticator = authenticator

    async def get_context(self, request: Any, response: Any = None) -> Context:
        caller = request.state.caller
        return Context(
            caller=caller,
            options=self.options,
            loaders=Loaders(caller=caller, options=self.options),
            settings=self.settings,
            request=request,
            response=response,
        )

    async def on_ws_connect(self, context: Context) -> Any:
        """Browsers cannot set headers on a WebSocket: accept the token in the
        `connection_init` payload too (`{"Authorization": "Bearer …"}`). A token that is
        sent but not valid closes the connection (4403)."""
        params = context.connection_params or {}
        raw = params.get("Authorization") or params.get("authorization") or params.get(
            "authToken")
        if context.caller is None and isinstance(raw, str) and raw.strip():
            token = raw.strip().removeprefix("Bearer ").removeprefix("bearer ").strip()
            caller = await self.authenticator(token)
            if caller is None:
                raise ConnectionRejectionError({"message": "Invalid token."})
            context.caller = caller
            context.loaders = Loaders(caller=caller, options=self.options)
        return UNSET

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """strawberry answers a request it cannot read (malformed JSON, no query, a wrong
        method or content type) in plain text: answer in GraphQL's own error shape."""
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except StrawberryHTTPException as exc:
            response = graphql_http_error(exc.status_code, exc.reason)
        await response(scope, receive, send)


GRAPHQL_BODY_HINT = ('send a JSON object like {"query": "{ connections { nodes { id } } }", '
                     '"variables": {}} with Content-Type: application/json')


def graphql_http_error(status: int, reason: str) -> Response:
    """`{"errors": [{"message", "extensions": {"code"}}]}`, as for any GraphQL error."""
    hints = {
        "Unable to parse request body as JSON": "The request body is not valid JSON: "
        + GRAPHQL_BODY_HINT + ".",
        "No GraphQL query found in the request": "No GraphQL query in the request: "
        + GRAPHQL_BODY_HINT + ".",
    }
    code = {405: "METHOD_NOT_ALLOWED", 404: "NOT_FOUND", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(
        status, "BAD_REQUEST")
    return JSONResponse(
        {"errors": [{"message": hints.get(reason, reason), "extensions": {"code": code}}]},
        status_code=status)


def telemetry_options(settings: Settings) -> TelemetryOptions:
    return TelemetryOptions(
        orphan_window=timedelta(seconds=settings.orphan_window_seconds),
        error_streak=settings.error_streak,
        recent_errors_limit=settings.recent_errors_limit,
        cache=TelemetryCache() if settings.telemetry_cache else None,
    )


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


# Paths whose contract words errors as `{"error": ...}` (the others: `{"detail": ...}`).
ERROR_SHAPED = ("/api/elt/", "/api/agent/", "/api/elt", "/api/agent")


async def ready(request: Request) -> Response:
    """Readiness for load balancers and orchestrators: 200 when the database answers within
    `RUNWATCH_READY_TIMEOUT_SECONDS`, every shipped migration is applied and, when this
    process runs the background workers, they are running; otherwise 503. The body names each
    check and what is wrong."""
    settings: Settings = request.app.state.settings
    checks: dict[str, str] = {}
    try:
        pending = await asyncio.wait_for(pending_migrations(connections.get("default")),
                                         settings.ready_timeout_seconds)
    except TimeoutError:
        checks["database"] = (f"no answer within {settings.ready_timeout_seconds:g} s")
    except Exception as exc:  # unreachable, refused, closed: not ready, and say why
        checks["database"] = f"unreachable: {type(exc).__name__}: {exc}"[:300]
    else:
        checks["database"] = "ok"
        checks["migrations"] = (
            "no runwatch schema: run `runwatch migrate`" if pending is None
            else f"pending {', '.join(pending)}: run `runwatch migrate`" if pending else "ok")
    worker = getattr(request.app.state, "workers", None)
    if worker is None:
        checks["workers"] = "not in this process"
    else:
        checks["workers"] = "stopped" if worker.done() else "ok"
    ok = all(v in {"ok", "not in this process"} for v in checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                        status_code=200 if ok else 503)


def _no_route(request: Request) -> str:
    path = request.url.path if len(request.url.path) <= 200 else request.url.path[:200] + "…"
    return (f"No such route: {request.method} {path}. The REST routes are listed at "
            "/openapi.json; GraphQL is at /graphql.")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # Routes answer an unknown id themselves ("Not found."); here a 404 means no route matched.
    messages = {404: _no_route(request), 405: f'Method "{request.method}" not allowed.'}
    key = "error" if request.url.path.startswith(ERROR_SHAPED) else "detail"
    return JSONResponse(
        {key: messages.get(exc.status_code, exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": "Internal server error."}, status_code=500)


def create_app(
    settings: Settings | None = None, *, run_background: bool | None = None
) -> Starlette:
    """Build the application. `run_background` overrides `settings.workers_in_serve`."""
    settings = settings or Settings.from_env()
    options = telemetry_options(settings)
    background = settings.workers_in_serve if run_background is None else run_background
    authenticator = Authenticator(settings.token_cache_seconds)
    graphql = RunwatchGraphQL(
        build_schema(settings),
        options=options,
        settings=settings,
        authenticator=authenticator,
        graphql_ide="graphiql" if settings.graphiql else None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with RegisterTortoise(app, config=tortoise_config(settings.database_url)):
            stop = asyncio.Event()
            worker = asyncio.create_task(run_workers(settings, stop)) if background else None
            app.state.workers = worker  # for /ready
            try:
                yield
            finally:
                stop.set()
                if worker is not None:
                    await worker

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/openapi.json", openapi.endpoint(settings), methods=["GET"]),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        *warehouse.routes(options),
        *elt.routes(settings),
        *watcher.routes(settings),
    ]
    application = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            # outermost: a database fault anywhere inside (the token look-up too) is a 503
            Middleware(DatabaseFaults, error_shaped=ERROR_SHAPED),
            Middleware(AuthMiddleware, authenticator=authenticator),
            Middleware(RateLimitMiddleware, per_minute=settings.rate_limit_per_minute,
                       watcher_prefix=settings.watcher_prefix),
            Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes),
        ],
        exception_handlers={HTTPException: http_error, 500: server_error},
    )
    application.state.settings = settings
    return application
