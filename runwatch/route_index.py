"""The route table, indexed by a path's first segment.

Starlette's router tries its routes one after the other, a regular expression each, until one
matches. runwatch has 85 (the three REST shims, each path with and without its trailing
slash): a Watcher request tried 44 to 75 of them before its own, about 7 % of the Watcher
round's CPU (cProfile under `bench.perf --profile watcher`). `RouteIndex` is one route that
stands for the whole table: for a request it tries only the routes whose path starts with the
request's first segment (and the few whose first segment is a parameter), in the table's
order, with Starlette's own `matches`. So the answer is the one Starlette's loop gives:

- the first route that matches fully wins; else the first partial match (a known path with
  another method: the 405);
- the router's slash redirect asks the index about the other spelling of the path, as it
  would ask each route;
- `scope["route"]` is the route that matched (the router sets it to this index, then updates
  the scope with the match's child scope, which names the route).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette._utils import get_route_path  # the router's own rule (root_path)
from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

ANY = None  # the bucket key of routes whose first segment is not a literal


def first_segment(path: str) -> str:
    """`/api/v1/x` -> `api`; `/` -> ``."""
    return path[1:].split("/", 1)[0]


def _key(route: BaseRoute) -> str | None:
    path = getattr(route, "path", None)
    if not isinstance(path, str) or not path.startswith("/"):
        return ANY  # a Host, or a route of another kind: tried for every path
    segment = first_segment(path)
    return ANY if "{" in segment else segment


class RouteIndex(BaseRoute):
    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = list(routes)
        keys = [_key(r) for r in self.routes]
        anywhere = tuple(r for r, k in zip(self.routes, keys, strict=True) if k is ANY)
        self.anywhere = anywhere
        self.buckets: dict[str, tuple[BaseRoute, ...]] = {
            key: tuple(r for r, k in zip(self.routes, keys, strict=True) if k in (key, ANY))
            for key in {k for k in keys if k is not ANY}}

    def candidates(self, scope: Scope) -> tuple[BaseRoute, ...]:
        return self.buckets.get(first_segment(get_route_path(scope)), self.anywhere)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        partial: tuple[Match, Scope] | None = None
        for route in self.candidates(scope):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return match, {**child_scope, "route": route}
            if match is Match.PARTIAL and partial is None:
                partial = (match, {**child_scope, "route": route})
        return partial or (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope["route"].handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)

    def __repr__(self) -> str:
        return f"RouteIndex({len(self.routes)} routes, {len(self.buckets)} first segments)"


__all__ = ["RouteIndex", "first_segment"]
