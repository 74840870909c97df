"""The OpenAPI document at /openapi.json: valid OpenAPI 3.1, and it names exactly the REST
routes the app serves (a route added without documenting it fails here)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from starlette.applications import Starlette
from starlette.routing import Route

from runwatch.rest_shim.openapi import build_document

NOT_REST = {"/graphql", "/openapi.json"}
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def canonical(path: str) -> str:
    return path.rstrip("/") or "/"


def starlette_of(app) -> Starlette:
    """The Starlette app inside the `app` fixture (asgi-lifespan wraps it in a closure that
    sets the lifespan state)."""
    while not isinstance(app, Starlette):
        inner = [cell.cell_contents for cell in getattr(app, "__closure__", None) or ()]
        app = next(c for c in inner if callable(c))
    return app


def served(app) -> set[tuple[str, str]]:
    """(path without its trailing slash, method) of every REST route; HEAD goes with GET."""
    found = set()
    for route in starlette_of(app).routes:
        # the status UI's page and files (runwatch/ui) are not REST
        if not isinstance(route, Route) or route.path in NOT_REST or route.name == "ui":
            continue
        for method in route.methods or ():
            if method != "HEAD":
                found.add((canonical(route.path), method.lower()))
    return found


def documented(document: dict) -> set[tuple[str, str]]:
    return {(canonical(path), method) for path, item in document["paths"].items()
            for method in item if method in METHODS}


async def test_the_document_is_served_and_valid_openapi_3_1(client, settings) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document == build_document(settings)
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


async def test_no_token_is_needed_to_read_it(client) -> None:
    response = await client.get("/openapi.json", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 200


def test_it_names_exactly_the_routes_the_app_serves(app, settings) -> None:
    document = build_document(settings)
    routes = served(app)
    names = documented(document)
    assert routes - names == set(), "routes the OpenAPI document does not describe"
    assert names - routes == set(), "documented operations the app does not serve"


def test_each_documented_path_is_served_as_spelled_and_with_its_twin(app, settings) -> None:
    """The document's spelling routes; every shim path also answers with the other
    trailing-slash spelling (no redirects)."""
    paths = {route.path for route in starlette_of(app).routes if isinstance(route, Route)}
    for path in build_document(settings)["paths"]:
        assert path in paths, path
        if path in {"/health", "/ready", "/"}:
            continue
        twin = path.rstrip("/") if path.endswith("/") else path + "/"
        assert twin in paths, f"{path} has no twin {twin}"


def test_every_operation_documents_its_errors_and_scopes(settings) -> None:
    document = build_document(settings)
    operation_ids = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            operation_ids.append(op["operationId"])
            statuses = set(op["responses"])
            assert any(s.startswith("2") for s in statuses), (method, path)
            if op.get("security") == []:  # public
                assert "401" not in statuses, (method, path)
                continue
            assert {"401", "403", "429", "503"} <= statuses, (method, path)
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
            if "requestBody" in op:
                assert "413" in statuses, (method, path)
            for status, answer in op["responses"].items():
                empty = status == "204" or (status == "201" and "openlineage" in op["tags"])
                if not empty:  # (Marquez's lineage endpoint answers 201 with no body)
                    assert "application/json" in answer["content"], (method, path, status)
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"


@pytest.mark.parametrize("prefix", ["", "/watcher"])
def test_the_watcher_paths_follow_the_prefix(settings, prefix) -> None:
    from runwatch.app import create_app

    configured = replace(settings, watcher_prefix=prefix)
    app = create_app(configured)
    assert served(app) == documented(build_document(configured))
    paths = build_document(configured)["paths"]
    assert f"{prefix}/pipeline" in paths
    assert ("/watcher/" in paths) == bool(prefix) and ("/" in paths) == (not prefix)
