"""The offline GraphiQL console (`GET /graphql`) and the UI's file route: every asset is on the
server's own origin, pinned by version and sha384 in the manifest, and shipped in the package.
(tests/test_browser.py runs the console in a real browser with every other origin blocked.)"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import replace

import httpx

from runwatch.app import create_app
from runwatch.ui import STATIC
from runwatch.ui.console import VENDOR, manifest

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def sha384(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def test_every_vendored_file_matches_its_pin() -> None:
    assets = manifest()
    names = {a["file"] for a in assets}
    assert {"react.production.min.js", "react-dom.production.min.js", "graphiql.min.js",
            "graphiql.min.css", "plugin-explorer.umd.js", "plugin-explorer.css"} == names
    for asset in assets:
        data = (VENDOR / asset["file"]).read_bytes()
        assert sha384(data) == asset["integrity"], asset["file"]
        assert len(data) == asset["bytes"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", asset["version"])
    on_disk = {p.name for p in VENDOR.iterdir()} - {"manifest.json"}
    assert on_disk == names, "a vendored file without a pin (or a pin without its file)"
    # minified builds only: the whole console stays under 5 MB
    assert sum(a["bytes"] for a in assets) < 5_000_000


async def test_the_console_page_loads_only_pinned_same_origin_assets(client) -> None:
    r = await client.get("/graphql", headers=HTML)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "unpkg" not in page and "cdn" not in page.lower() and "//" not in page.replace(
        "<!doctype html>", "")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    refs = re.findall(r'<(?:script src|link rel="stylesheet" href)="([^"]+)"'
                      r'(?: integrity="([^"]+)")?', page)
    pins = {a["file"]: a for a in manifest()}
    pinned = [(url, integrity) for url, integrity in refs if "/vendor/" in url]
    assert len(pinned) == len(pins)
    for url, integrity in refs:
        assert url.startswith("/ui/"), url
        served = await client.get(url)
        assert served.status_code == 200, url
        if "/vendor/" in url:
            name = url.split("/vendor/")[1].split("?")[0]
            assert integrity == pins[name]["integrity"] == sha384(served.content), url
            assert f"?v={pins[name]['version']}" in url


async def test_the_console_still_runs_queries(client, tenant) -> None:
    r = await client.post("/graphql", json={"query": "{ connections { nodes { id } } }"},
                          headers=tenant.headers("read"))
    body = r.json()
    assert body["data"] == {"connections": {"nodes": []}} and "errors" not in body


async def test_the_file_route_serves_only_files_under_static(client) -> None:
    for path in ("/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/../../pyproject.toml",
                 "/ui/vendor/manifest.jsonx", "/ui/nothing.js", "/ui/vendor"):
        r = await client.get(path)
        assert r.status_code == 404, path
        # "Not found." for a file, "No such route: …" for a path the client normalised away
        assert set(r.json()) == {"detail"} and "app.py" not in r.text.split(":", 1)[0], r.text
    r = await client.get("/ui/vendor/manifest.json")
    assert r.status_code == 200 and r.json()["assets"]


async def test_root_answers_json_to_api_clients_and_the_ui_to_browsers(client) -> None:
    for accept in ("*/*", "application/json", None):
        headers = {"Accept": accept} if accept else {}
        r = await client.get("/", headers=headers)
        assert r.status_code == 200, accept
        assert r.json()["status"] == "ok"
    r = await client.get("/", headers=HTML)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.text == (STATIC / "index.html").read_text()
    assert "default-src 'self'" in r.headers["content-security-policy"]


async def _get(settings, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A GET from an app built with other settings (no lifespan of its own: the session's
    app holds the database)."""
    transport = httpx.ASGITransport(app=create_app(settings, run_background=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://runwatch.test") as c:
        return await c.get(path, headers=headers)


async def test_the_ui_can_be_switched_off_and_the_console_keeps_its_files(app, settings) -> None:
    off = replace(settings, ui=False)
    r = await _get(off, "/", HTML)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert (await _get(off, "/ui/app.js")).status_code == 404
    assert (await _get(off, "/ui/vendor/graphiql.min.js")).status_code == 200
    assert (await _get(off, "/ui/console.js")).status_code == 200
    assert (await _get(replace(off, graphiql=False), "/ui/console.js")).status_code == 404


async def test_with_a_watcher_prefix_root_is_only_the_ui(app, settings) -> None:
    prefixed = replace(settings, watcher_prefix="/watcher")
    r = await _get(prefixed, "/", HTML)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    r = await _get(prefixed, "/")
    assert r.status_code == 404 and r.json()["detail"].startswith("No such route: GET /")


def test_the_refresh_script_refuses_an_unknown_package(capsys) -> None:
    """The refresh script (it needs npm and the registry, so only its argument check runs
    here) changes nothing when asked for a package it does not pin."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "refresh_console_assets.py"
    spec = importlib.util.spec_from_file_location("refresh_console_assets", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    before = (VENDOR / "manifest.json").read_text()
    assert script.main(["left-pad=1.3.0"]) == 2
    assert "unknown package" in capsys.readouterr().out
    assert (VENDOR / "manifest.json").read_text() == before
    assert {f[2] for f in script.FILES} == {a["file"] for a in manifest()}
