"""What the shims share: caller extraction, JSON bodies, timestamps, error translation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runwatch.auth import MESSAGES, NOT_BEARER, auth_problem
from runwatch.faults import database_unavailable, unavailable
from runwatch.resolvers import inputs, strict_json
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import parse_iso
from runwatch.resolvers.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    """A body the shim cannot even hand to a resolver; `body` is the contract's error shape."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.body = body


class UnreadableBody(Exception):
    """The body is not JSON (`not_json`) or not a JSON object; each contract words it."""

    def __init__(self, reason: str, *, not_json: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.not_json = not_json


def caller_of(request: Request, scope: Scope | None = None) -> Caller:
    """The authenticated caller. A route that needs a scope says so here, before it reads the
    body, so that a caller without it learns nothing from validation errors (the resolver
    checks the scope again: authorization stays in the domain)."""
    caller = request.state.caller
    if caller is None:
        if request.state.auth_failed:  # the contracts' words, and a hint for a bad header
            raise Unauthenticated(MESSAGES[NOT_BEARER] if auth_problem(request.state)
                                  == NOT_BEARER else "Invalid token.")
        raise Unauthenticated()
    if scope is not None:
        caller.require_scope(scope)
    return caller


async def json_object(request: Request) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is empty. The one body reader of every REST
    shim: strict JSON (`runwatch.resolvers.strict_json`: no NaN, Infinity, lone surrogates or
    deep nesting), refused as `UnreadableBody` before anything reads a field of it."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        body = strict_json.loads(raw)
    except strict_json.NotStrictJSON as exc:
        raise UnreadableBody(exc.reason, not_json=True) from None
    if not isinstance(body, dict):
        raise UnreadableBody(type(body).__name__, not_json=False)
    return body


async def json_body(request: Request) -> dict[str, Any]:
    """`json_object`, an empty body read as `{}`."""
    body = await json_object(request)
    return {} if body is None else body


DATETIME_HELP = (
    "Datetime has wrong format. Use one of these formats instead: "
    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
)


def parse_datetime(value: Any, name: str, errors: dict[str, list[str]]) -> datetime | None:
    """ISO 8601; a time without an offset is taken as UTC."""
    parsed = parse_iso(value)
    if parsed is None:
        errors[name] = [DATETIME_HELP]
    return parsed


def parse_int(value: Any, name: str, errors: dict[str, list[str]]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors[name] = ["A valid integer is required."]
        return None
    return value


def parse_pk(raw: str, kind: str = "object") -> int:
    """A path id; anything but an integer the kind's id column can hold is simply not found
    (`runwatch.resolvers.inputs.parse_id`, the one id rule)."""
    return inputs.parse_id(raw, kind)


def detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def drf_errors(wire_field: Callable[[str], str]) -> Callable[[Handler], Handler]:
    """A decorator translating domain errors to DRF-style responses (the warehouse contract's),
    naming invalid fields as the wire does (`wire_field`: domain name -> wire name)."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except BadRequest as exc:
                return JSONResponse(exc.body, status_code=400)
            except UnreadableBody as exc:
                if exc.not_json:
                    return detail(400, f"JSON parse error - {exc.reason}")
                return JSONResponse({"non_field_errors": [
                    f"Invalid data. Expected a dictionary, but got {exc.reason}."]},
                    status_code=400)
            except InvalidInput as exc:
                fields = {wire_field(name): messages for name, messages in exc.fields.items()}
                return JSONResponse(fields, status_code=400)
            except NotFound:
                return detail(404, "Not found.")
            except Conflict as exc:
                return detail(409, exc.message)
            except Unauthenticated as exc:
                return detail(401, exc.message, {"WWW-Authenticate": 'Bearer realm="runwatch"'})
            except PermissionDenied as exc:
                return detail(403, exc.message)
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                return unavailable("detail", exc, request.url.path)

        return wrapped

    return decorate


def routes_with_optional_slash(path: str, **handlers: Handler) -> list[Route]:
    """One route per path for all its methods (so a 405 lists every allowed method in `Allow`),
    with and without the trailing slash (no redirects: a redirected PATCH is fragile in many
    HTTP clients). `handlers` maps a method name to its handler: `GET=…, POST=…`."""
    by_method = {method.upper(): handler for method, handler in handlers.items()}

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    bare = path.rstrip("/")
    return [Route(p, endpoint, methods=list(by_method)) for p in (bare + "/", bare)]
