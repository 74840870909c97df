"""The built-in status UI (`GET /` for browsers) and the offline GraphiQL console's page.

Everything here is static: HTML, hand-written JS modules and CSS in `static/`, the console's
vendored third-party builds in `static/vendor/` (pinned in `vendor/manifest.json`, refreshed by
`scripts/refresh_console_assets.py`), and each screen's GraphQL query in `static/queries/`. The
UI talks only to the public GraphQL API at `/graphql`; nothing here reads the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from runwatch.settings import Settings
from runwatch.ui.console import CONSOLE_FILES

STATIC = Path(__file__).resolve().parent / "static"
# Same-origin only: the page may load and connect to nothing but the server it came from.
# GraphiQL sets inline styles (and its CSS embeds fonts and icons as data: URLs).
CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".graphql": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}

Endpoint = Callable[[Request], Awaitable[Response]]


def wants_html(request: Request) -> bool:
    """A browser navigating (Accept names text/html); API clients, curl and health checkers
    send `*/*` or `application/json` and keep getting JSON."""
    return "text/html" in request.headers.get("accept", "")


def static_file(settings: Settings) -> Endpoint:
    """`GET /ui/{path}`: a file from `static/` (only the console's files when the UI is off)."""

    async def endpoint(request: Request) -> Response:
        relative = request.path_params["path"]
        target = (STATIC / relative).resolve()
        allowed = settings.ui or relative in CONSOLE_FILES
        if (not allowed or not target.is_relative_to(STATIC) or not target.is_file()
                or target.suffix not in MEDIA_TYPES):
            raise HTTPException(404)
        return FileResponse(target, media_type=MEDIA_TYPES[target.suffix],
                            headers={"Cache-Control": "no-cache", **SECURITY_HEADERS})

    return endpoint


def index_page() -> Response:
    return FileResponse(STATIC / "index.html", media_type=MEDIA_TYPES[".html"],
                        headers={"Cache-Control": "no-cache", **SECURITY_HEADERS})


def root(fallback: Endpoint | None) -> Endpoint:
    """`GET /`: the UI for a browser, otherwise what `/` answered without the UI (the watcher
    contract's health when its routes sit at the root, else 404)."""

    async def endpoint(request: Request) -> Response:
        if wants_html(request):
            return index_page()
        if fallback is None:
            raise HTTPException(404)
        return await fallback(request)

    return endpoint


def install(routes: list[BaseRoute], settings: Settings) -> list[BaseRoute]:
    """The app's routes with the UI's: `GET /` negotiated, `GET /ui/{path}` for its files (the
    console's files are served even with the UI off, as long as the console is on)."""
    out: list[BaseRoute] = []
    if settings.ui:
        for route in routes:
            if isinstance(route, Route) and route.path == "/":
                route = Route("/", root(route.endpoint), methods=["GET"], name=route.name)
            out.append(route)
        if not any(isinstance(r, Route) and r.path == "/" for r in routes):
            # Only the UI answers here (the watcher routes have a prefix): not a REST route.
            out.append(Route("/", root(None), methods=["GET"], name="ui"))
    else:
        out.extend(routes)
    if settings.ui or settings.graphiql:
        out.append(Route("/ui/{path:path}", static_file(settings), methods=["GET"], name="ui"))
    return out
