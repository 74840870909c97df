"""Routes declared once. Each contract's operations are a table (`openapi.py`: method, path,
scope, request and answer schemas, examples); the same table generates `/openapi.json` and,
here, the Starlette routes:

- a handler is bound to its operation by method and path (`@operations("GET", path)`); an
  operation without a handler, or a handler without an operation, fails when the app is built,
  so the document cannot name a route the app does not serve, nor the reverse;
- the operation's scope is checked before its handler runs (before the body is read, so a
  caller without it learns nothing from validation errors), and the resolver checks its caller
  again: the document's scope is what the server enforces, by construction;
- each path answers with and without its trailing slash (no redirects: a redirected PATCH is
  fragile in many HTTP clients), all of its methods on one route (so a 405 lists them in
  `Allow`), and concrete paths match before templates (`/api/elt/runs/webhook` is not run
  "webhook").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runwatch.resolvers.caller import Scope
from runwatch.rest_shim.common import Handler, caller_of
from runwatch.rest_shim.openapi import Op

# An operation's `scope` (the document's `x-runwatch-scope`): the scopes, any of which lets a
# token in (`admin` has them all).
ACCESS: dict[str, tuple[Scope, ...]] = {
    "read": (Scope.READ,),
    "write": (Scope.WRITE,),
    "report": (Scope.REPORT,),
    "writer": (Scope.REPORT, Scope.WRITE),  # Watcher jobs (`report`) and people (`write`)
    "viewer": (Scope.READ, Scope.WRITE),  # settings readable by both (`write` sets them)
    "gateway": (Scope.GATEWAY,),
}


def guarded(op: Op, handler: Handler) -> Handler:
    """`handler`, behind its operation's scope (none: a public route)."""
    if op.scope is None:
        return handler
    scopes = ACCESS[op.scope]

    async def checked(request: Request) -> Response:
        caller_of(request).require_any(*scopes)
        return await handler(request)

    return checked


class Operations:
    """One contract's operations and their handlers; `translate` words the domain's errors
    (the scope check's included) in the contract's shape."""

    def __init__(self, ops: Iterable[Op], translate: Callable[[Handler], Handler]) -> None:
        self.ops = {(op.method, op.path): op for op in ops}
        self.translate = translate
        self.handlers: dict[tuple[str, str], Handler] = {}

    def __call__(self, method: str, path: str) -> Callable[[Handler], Handler]:
        key = (method, path)
        if key not in self.ops:
            raise LookupError(f"{method} {path} is not an operation of the contract's table")
        if key in self.handlers:
            raise LookupError(f"{method} {path} has a handler already")

        def bind(handler: Handler) -> Handler:
            self.handlers[key] = self.translate(guarded(self.ops[key], handler))
            return handler

        return bind

    def routes(self) -> list[Route]:
        missing = [f"{m} {p}" for m, p in self.ops if (m, p) not in self.handlers]
        if missing:
            raise LookupError(f"operations without a handler: {', '.join(missing)}")
        by_path: dict[str, dict[str, Handler]] = {}
        for (method, path), handler in self.handlers.items():
            by_path.setdefault(path, {})[method] = handler
        # Concrete paths before templates (a stable sort keeps the table's order otherwise).
        ordered = sorted(by_path, key=lambda path: path.count("{"))
        return [route for path in ordered for route in _twins(path, by_path[path])]


def _twins(path: str, by_method: dict[str, Handler]) -> list[Route]:
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    if path == "/":
        return [Route("/", endpoint, methods=list(by_method))]
    bare = path.rstrip("/")
    return [Route(p, endpoint, methods=list(by_method)) for p in (bare + "/", bare)]
