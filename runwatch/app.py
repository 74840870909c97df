"""The ASGI application: /graphql (with the GraphiQL console), the REST shims, health, the
status UI."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from cross_web import HTTPException as GraphQLHTTPException
from graphql import GraphQLError
from starlette._utils import get_route_path  # the router's own rule (root_path)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET
from tortoise import connections
from tortoise.contrib.starlette import RegisterTortoise

from runwatch import __version__, malloc, metrics, ui
from runwatch.auth import Authenticator, AuthMiddleware
from runwatch.db import pending_migrations, tortoise_config
from runwatch.faults import DatabaseFaults
from runwatch.limits import (
    BodySizeLimitMiddleware,
    Limiter,
    RateLimitMiddleware,
    rate_key,
    rate_limited_operation,
)
from runwatch.resolvers import strict_json as json_values
from runwatch.resolvers.rate_limits import build_limiter
from runwatch.resolvers.telemetry import TelemetryCache, TelemetryOptions
from runwatch.rest_shim import elt, openapi, openlineage, warehouse, watcher
from runwatch.route_index import RouteIndex
from runwatch.schema import build_schema
from runwatch.schema.context import Context, Loaders
from runwatch.services import notify
from runwatch.services.workers import run_workers
from runwatch.settings import Settings
from runwatch.ui.console import console_page
from runwatch.ws import LegacyWSHandler, LimitedWebSocketAdapter, SocketLimits, TransportWSHandler

ALL_OPERATION_TYPES = frozenset(OperationType)
POST_OPERATION_TYPES = OperationType.from_http("POST")


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":")).encode


def strict_json(data: str | bytes) -> Any:
    """The JSON of `/graphql` bodies and socket messages: the one strict rule of every body
    (`runwatch.resolvers.strict_json`: no NaN/Infinity, numbers too large or of thousands of
    digits, lone surrogates, bytes that are not UTF-8, nesting past 100 levels), each failure a
    `JSONDecodeError` (a 400 over HTTP, close 4400 on a socket)."""
    try:
        return json_values.loads(data)
    except json_values.NotStrictJSON as exc:
        raise json.JSONDecodeError(exc.reason, "", 0) from None


class RunwatchGraphQL(GraphQL):
    # Over WebSocket: the token re-checked, the rate limit counted, the sizes and numbers of
    # messages, sockets and subscriptions bounded (`runwatch.ws`).
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler
    websocket_adapter_class = LimitedWebSocketAdapter  # type: ignore[assignment]

    def __init__(
        self, *args: Any, options: TelemetryOptions, settings: Settings,
        authenticator: Authenticator, limiter: Limiter | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.options = options
        self.settings = settings
        self.authenticator = authenticator
        self._declined: tuple[bytes, Any] | None = None  # `prepared_post`, `decode_json`
        self.max_subscriptions_per_connection = settings.ws_max_subscriptions_per_socket
        self.socket_limits = SocketLimits(
            authenticator=authenticator, limiter=limiter,
            per_minute=settings.rate_limit_per_minute,
            max_sockets=settings.ws_max_sockets_per_token,
            max_per_socket=settings.ws_max_subscriptions_per_socket,
            max_per_token=settings.ws_max_subscriptions_per_token,
            max_message_bytes=settings.max_body_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """strawberry answers its own HTTP errors (bad JSON, a subscription over HTTP…) in
        plain text: here they keep their status and take the GraphQL error shape."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.prepared_post(request) if scope["method"] == "POST" else None
            if response is None:
                response = await self.run(request)
        except GraphQLHTTPException as exc:
            cause = exc.__cause__
            detail = cause.msg if isinstance(cause, json.JSONDecodeError) else None
            response = graphql_http_error(exc.status_code, exc.reason, detail)
        await response(scope, receive, send)

    async def prepared_post(self, request: Request) -> Response | None:
        """The short lane of a document POSTed before (`runwatch.schema.prepared`): the body
        read and checked as strawberry's `run` checks it, the prepared operation executed,
        the result processed and answered by the view's own `process_result` and
        `create_response`, without the request adapter, the request-data object and the
        two execute layers between them (about 0.1 ms of a request's CPU under load,
        bench/README.md). None for anything else: a new document, another content type, a
        batch, a body strawberry refuses (its 400), a streaming `Accept`; strawberry's `run`
        then takes the request, its body already read. `tests/test_prepared.py` sends every
        kind of answer through both."""
        headers = request.headers
        if "application/json" not in mime_type(headers.get("content-type", "")) or \
                self._get_stream_transport_from_headers(headers) is not None:
            return None
        body = await request.body()
        try:
            data: Any = strict_json(body)
        except json.JSONDecodeError as exc:
            data = exc
        answer = await self._answer_prepared(request, data) if isinstance(data, dict) else None
        if answer is None:  # strawberry's `run` decodes the body next: not a second time
            self._declined = (body, data)
        return answer

    async def _answer_prepared(self, request: Request, data: dict[str, Any]) -> Response | None:
        request_data = GraphQLRequestData(
            query=data.get("query"), variables=data.get("variables"),
            operation_name=data.get("operationName"), extensions=data.get("extensions"),
            protocol="http")
        if not isinstance(request_data.variables, dict | None) or \
                not isinstance(request_data.extensions, dict | None):
            return None
        prepared = self.schema.prepared.get(  # type: ignore[attr-defined]
            request_data.query, request_data.operation_name, POST_OPERATION_TYPES)
        if prepared is None:
            return None
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, response=sub_response)
        started = time.perf_counter()
        try:
            result = await self.schema.prepared.execute(  # type: ignore[attr-defined]
                prepared, query=request_data.query, variables=request_data.variables,
                context=context, operation_extensions=request_data.extensions)
        finally:
            metrics.graphql_operation(request_data, time.perf_counter() - started)
        response_data = await self.process_result(request=request, result=result)
        return self.create_response(response_data=response_data, sub_response=sub_response)

    def encode_json(self, data: object) -> str:
        """strawberry's encoding (`json.dumps(data, separators=(",", ":"))`), by one encoder
        built once: `json.dumps` with a keyword argument builds an encoder on every call."""
        return _COMPACT_JSON(data)

    def decode_json(self, data: str | bytes) -> object:
        """The strict JSON rule; a body the prepared lane decoded and declined a moment ago
        (the same bytes object: starlette keeps a request's body) is not decoded again."""
        declined, self._declined = self._declined, None
        if declined is not None and declined[0] is data:
            if isinstance(declined[1], json.JSONDecodeError):
                raise declined[1]
            return declined[1]
        return strict_json(data)

    async def execute_operation(self, **kwargs: Any) -> Any:
        """With batching on, every operation of a batch counts against the rate limit, as
        every operation sent over a WebSocket does (`runwatch.ws`): the request counted the
        first (`RateLimitMiddleware`), each further one counts here, before any runs. One
        past the limit gets `RATE_LIMITED` as its result; the others run."""
        batch = kwargs["request_data"]
        limiter = self.socket_limits.limiter
        if not isinstance(batch, list) or len(batch) < 2 or limiter is None:
            return await super().execute_operation(**kwargs)
        request = kwargs["request"]
        key = rate_key(request.scope.get("state", {}).get("caller"), request.scope.get("client"))
        refused: dict[int, ExecutionResult] = {}
        for index in range(1, len(batch)):
            wait = await limiter.check(key)
            if wait:
                error = rate_limited_operation(self.socket_limits.per_minute, wait)
                refused[index] = ExecutionResult(data=None, errors=[GraphQLError(
                    error["message"], extensions=error["extensions"])])
        admitted = [data for index, data in enumerate(batch) if index not in refused]
        ran = iter(await super().execute_operation(**{**kwargs, "request_data": admitted}))
        return [refused[index] if index in refused else next(ran)
                for index in range(len(batch))]

    async def execute_single(self, **kwargs: Any) -> Any:
        """A subscription needs the WebSocket: over HTTP it is a 400 saying so (strawberry
        would run it as a query and fail with a masked error). A document seen before is
        never a subscription (`runwatch.schema.prepared`): it skips the check."""
        request_data = kwargs["request_data"]
        query = getattr(request_data, "query", None)
        if isinstance(query, str) and "subscription" in query and self.schema.prepared.get(  # type: ignore[attr-defined]
                query, request_data.operation_name, ALL_OPERATION_TYPES) is None:
            from graphql import get_operation_ast, parse

            with contextlib.suppress(GraphQLError):
                document = parse(query, no_location=True,
                                 max_tokens=self.settings.graphql_max_tokens)
                operation = get_operation_ast(document, request_data.operation_name)
                if (operation is not None
                        and operation.operation.value == OperationType.SUBSCRIPTION.value):
                    raise GraphQLHTTPException(
                        400, "Subscriptions are served over the WebSocket at /graphql "
                        "(graphql-transport-ws), not over HTTP.")
        started = time.perf_counter()
        try:
            return await super().execute_single(**kwargs)
        finally:
            metrics.graphql_operation(request_data, time.perf_counter() - started)

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
            context.adopt(caller)
        return UNSET

    async def render_graphql_ide(self, request: Any) -> Response:
        """GraphiQL from the package's own files (strawberry's page loads them from a CDN)."""
        return HTMLResponse(console_page(), headers=ui.SECURITY_HEADERS)


@functools.lru_cache(maxsize=256)
def mime_type(header: str) -> str:
    """A Content-Type header's type as strawberry reads it (`parse_content_type`, through
    `email.message`: 5 µs a request), once per distinct header; clients send a handful."""
    return parse_content_type(header)[0]


QUERY_VALUE = re.compile(r"=[^&]*")


def redact_query(path: str) -> str:
    """`/graphql?headers={…token…}&x=1` -> `/graphql?headers=[redacted]&x=[redacted]`: the
    console puts a token in its URL (`?headers=`), and any query value may be a credential."""
    base, sep, query = path.partition("?")
    return f"{base}?{QUERY_VALUE.sub('=[redacted]', query)}" if sep else path


class RedactQueryStrings(logging.Filter):
    """On `uvicorn.access`: its records carry the path with its query string as the third
    argument (`client, method, path, http version, status`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def install_access_log_filter() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryStrings) for f in logger.filters):
        logger.addFilter(RedactQueryStrings())


GRAPHQL_BODY_HINT = ('send a JSON object like {"query": "{ connections { nodes { id } } }", '
                     '"variables": {}} with Content-Type: application/json')


def graphql_http_error(status: int, reason: str, detail: str | None = None) -> Response:
    """`{"errors": [{"message", "extensions": {"code"}}]}`, as for any GraphQL error, with a
    hint for the requests a person gets wrong most (`detail`: what the JSON parser said)."""
    hints = {
        "Unable to parse request body as JSON": "The request body is not valid JSON: "
        + GRAPHQL_BODY_HINT + (f" ({detail})." if detail else "."),
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


class RunwatchApp(Starlette):
    """Starlette, with its routes indexed by a path's first segment (`runwatch.route_index`)
    and a short lane for the GraphQL socket.

    A WebSocket to `/graphql` goes through the middleware that acts on sockets (every one in
    the list that is not `http_only`, in the list's order) straight to the GraphQL app, past
    what only passes a socket through: Starlette's `ServerErrorMiddleware` (HTTP only), the
    `http_only` middleware, the router (one route) and Starlette's `ExceptionMiddleware` (its
    handlers are HTTP's; nothing on this path raises `WebSocketException`). Every coroutine of
    that chain stays suspended for as long as the socket is open: about 3 KB per open
    subscription (`bench.live`)."""

    def __init__(self, *, socket_path: str, socket_app: Any, routes: list[BaseRoute],
                 **kwargs: Any) -> None:
        # One route for the table: it tries only the routes of the path's first segment.
        super().__init__(routes=[RouteIndex(routes)], **kwargs)
        self.socket_path = socket_path
        app = socket_app
        for layer in reversed(self.user_middleware):
            if not getattr(layer.cls, "http_only", False):
                app = layer.cls(app, *layer.args, **layer.kwargs)
        self.socket_stack = app

    @property
    def routes(self) -> list[BaseRoute]:
        """The routes themselves, in their order (the router holds them as one index)."""
        return self.router.routes[0].routes  # type: ignore[attr-defined, no-any-return]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and get_route_path(scope) == self.socket_path:
            scope["app"] = self
            await self.socket_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, *, run_background: bool | None = None
) -> Starlette:
    """Build the application. `run_background` overrides `settings.workers_in_serve`."""
    settings = settings or Settings.from_env()
    install_access_log_filter()
    options = telemetry_options(settings)
    background = settings.workers_in_serve if run_background is None else run_background
    authenticator = Authenticator(settings.token_cache_seconds)
    # One count per token for HTTP requests and WebSocket operations alike.
    limiter = build_limiter(settings.rate_limit_backend, settings.rate_limit_per_minute,
                            redis_url=settings.redis_url,
                            prefix=settings.rate_limit_key_prefix)
    graphql = RunwatchGraphQL(
        build_schema(settings),
        options=options,
        settings=settings,
        authenticator=authenticator,
        limiter=limiter,
        graphql_ide="graphiql" if settings.graphiql else None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        malloc.cap_arenas()  # a long-lived serving process (see runwatch.malloc)
        async with RegisterTortoise(app, config=tortoise_config(settings.database_url)):
            if settings.live_notify:  # live updates: this process's publisher and listener
                await notify.HUB.start(settings)
            stop = asyncio.Event()
            worker = asyncio.create_task(run_workers(settings, stop)) if background else None
            app.state.workers = worker  # for /ready
            try:
                with malloc.startup_frozen():
                    async with malloc.trimming():
                        yield
            finally:
                stop.set()
                if worker is not None:
                    await worker
                if settings.live_notify:
                    await notify.HUB.stop()
                if hasattr(limiter, "close"):  # a shared store's connections
                    await limiter.close()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/openapi.json", openapi.endpoint(settings), methods=["GET"]),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        # In the route table; RunwatchApp serves it in its short lane, past the router.
        WebSocketRoute("/graphql", graphql),
        *warehouse.routes(options),
        *elt.routes(settings),
        *watcher.routes(settings),
        *openlineage.routes(),
    ]
    routes = ui.install(routes, settings)
    if metrics.configure(settings):  # `GET /metrics` and the request counts (RUNWATCH_METRICS)
        routes.append(Route("/metrics", metrics.MetricsEndpoint(settings), methods=["GET"]))
    application = RunwatchApp(
        socket_path="/graphql",
        socket_app=graphql,
        routes=routes,
        lifespan=lifespan,
        middleware=[
            *([Middleware(metrics.MetricsMiddleware, routes=routes)] if settings.metrics else []),
            # outermost: a database fault anywhere inside (the token look-up too) is a 503
            Middleware(DatabaseFaults, error_shaped=ERROR_SHAPED),
            Middleware(AuthMiddleware, authenticator=authenticator),
            Middleware(RateLimitMiddleware, per_minute=settings.rate_limit_per_minute,
                       watcher_prefix=settings.watcher_prefix, limiter=limiter),
            Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes),
        ],
        exception_handlers={HTTPException: http_error, 500: server_error},
    )
    application.state.settings = settings
    application.state.limiter = limiter
    return application
