"""The indexed route table (`runwatch.route_index`) chooses the route Starlette's loop over the
whole table chooses, for every route of the app, every method, both spellings of each path
and paths no route has."""

from __future__ import annotations

import re

import pytest
from starlette.routing import BaseRoute, Match, Route, WebSocketRoute
from starlette.testclient import TestClient

from runwatch.app import create_app
from runwatch.route_index import RouteIndex
from runwatch.settings import Settings

METHODS = ("GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS")
PARAM = re.compile(r"\{[^}]+\}")


@pytest.fixture(scope="module")
def plain_app():  # type: ignore[no-untyped-def]
    return create_app(Settings.from_env({"RUNWATCH_METRICS": "1"}), run_background=False)


def starlette_choice(routes: list[BaseRoute], scope: dict) -> tuple[Match, BaseRoute | None]:
    """Starlette's `Router.app` loop: the first full match, else the first partial one."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return match, route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return (Match.PARTIAL, partial) if partial is not None else (Match.NONE, None)


def scopes(routes: list[BaseRoute]) -> list[dict]:
    paths = {"/", "/nope", "/api", "/api/", "/api/v1", "/api/elt/runs/7/extra", "/ui",
             "/pipeline/1/2", "//pipeline", "/graphql/", "/GRAPHQL", "/%2Fpipeline"}
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str):
            concrete = PARAM.sub("12", path)
            paths |= {concrete, concrete.rstrip("/") or "/", concrete + "/", concrete + "x"}
    found = []
    for path in sorted(paths):
        for root in ("", "/base"):
            for method in METHODS:
                found.append({"type": "http", "method": method, "path": root + path,
                              "root_path": root, "headers": []})
            found.append({"type": "websocket", "path": root + path, "root_path": root,
                          "headers": []})
    return found


def test_the_index_chooses_what_the_loop_chooses(plain_app) -> None:  # type: ignore[no-untyped-def]
    routes = plain_app.routes
    assert len(routes) > 50 and not any(isinstance(r, RouteIndex) for r in routes)
    index = plain_app.router.routes[0]
    assert isinstance(index, RouteIndex) and plain_app.router.routes == [index]
    checked = 0
    for scope in scopes(routes):
        expected, route = starlette_choice(routes, scope)
        match, child = index.matches(scope)
        assert match is expected, scope
        assert child.get("route") is route, scope
        checked += 1
    assert checked > 2000


def test_a_request_names_the_route_that_served_it(plain_app) -> None:  # type: ignore[no-untyped-def]
    """`scope["route"]` is the route itself (not the index), as Starlette's router sets it."""
    seen = {}

    class Spy:
        def __init__(self, inner):  # type: ignore[no-untyped-def]
            self.inner = inner

        async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
            await self.inner(scope, receive, send)
            seen["route"] = scope.get("route")

    client = TestClient(Spy(plain_app))
    assert client.get("/health").status_code == 200
    assert isinstance(seen["route"], Route) and seen["route"].path == "/health"
    # a known path, another method: the first partial match answers (405)
    r = client.delete("/health")
    assert r.status_code == 405 and seen["route"].path == "/health"
    # the slash redirect still happens for a spelling only the other variant has
    r = client.get("/openapi.json/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"].endswith("/openapi.json")
    assert client.get("/no/such/route").status_code == 404


def test_url_path_for_reaches_the_routes(plain_app) -> None:  # type: ignore[no-untyped-def]
    named = [r for r in plain_app.routes if isinstance(r, Route | WebSocketRoute) and r.name
             and "{" not in r.path]
    assert named
    assert plain_app.url_path_for(named[0].name) == named[0].path
