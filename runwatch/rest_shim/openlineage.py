"""OpenLineage, as Marquez's endpoint answers it: `POST /api/v1/lineage` (a run event: 201 with
an empty body) and `GET /api/v1/lineage?nodeId=…&depth=…` (the graph around a job or dataset).

Errors in Marquez's (Dropwizard's) shapes, so that OpenLineage transports retry what they
should (5xx and 429) and nothing else: unreadable JSON is 400 `{"code": 400, "message":
"Unable to process JSON"}`; an event that fails validation is 422 `{"errors": [...]}`; the
rest (401, 403, 404, 409, 413, 429, 503) `{"code": <status>, "message": ...}`. The mapping onto
runwatch is the domain's (`runwatch.resolvers.openlineage`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from runwatch.faults import HEADERS, MESSAGE, database_unavailable, note
from runwatch.resolvers import openlineage
from runwatch.resolvers.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from runwatch.rest_shim.common import Handler, UnreadableBody, caller_of, json_object
from runwatch.rest_shim.openapi import OPENLINEAGE, OPENLINEAGE_OPS
from runwatch.rest_shim.routing import Operations

NOT_JSON = "Unable to process JSON"


def marquez(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status,
                        headers=headers)


def is_lineage_path(path: str) -> bool:
    return path.rstrip("/") == OPENLINEAGE


def translate(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except UnreadableBody:
            return marquez(400, NOT_JSON)
        except InvalidInput as exc:
            return JSONResponse({"errors": [m for ms in exc.fields.values() for m in ms]},
                                status_code=422)
        except NotFound as exc:
            return marquez(404, exc.message)
        except Conflict as exc:
            return marquez(409, exc.message)
        except Unauthenticated as exc:
            return marquez(401, exc.message, {"WWW-Authenticate": 'Bearer realm="runwatch"'})
        except PermissionDenied as exc:
            return marquez(403, exc.message)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            note(exc, request.url.path)
            return JSONResponse({"code": 503, "message": MESSAGE}, status_code=503,
                                headers=HEADERS)

    return wrapped


def _depth(raw: str | None) -> Any:
    if raw is None:
        return openlineage.MAX_DEPTH
    try:
        return int(raw)
    except ValueError:
        return raw  # the resolver words the error


def routes() -> list[BaseRoute]:
    ops = Operations(OPENLINEAGE_OPS, translate)

    @ops("POST", OPENLINEAGE)
    async def post_event(request: Request) -> Response:
        caller = caller_of(request)
        body = await json_object(request)
        if body is None:
            raise InvalidInput.one("event", "The request body must not be null")
        await openlineage.ingest(caller=caller, event=openlineage.parse_event(body))
        return Response(status_code=201)

    @ops("GET", OPENLINEAGE)
    async def get_graph(request: Request) -> Response:
        caller = caller_of(request)
        node_id = request.query_params.get("nodeId")
        if node_id is None:
            raise InvalidInput.one("nodeId", "nodeId must not be null")
        nodes = await openlineage.lineage_graph(
            caller=caller, node_id=node_id, depth=_depth(request.query_params.get("depth")))
        return JSONResponse({"graph": [node.wire() for node in nodes]})

    return ops.routes()
