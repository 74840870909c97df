"""Warehouse-connection contract: run reports (PATCH .../metrics/{run_id}/), telemetry reads,
and the neighbouring routes the flow needs (connections, pre-creating runs).

Wire names -> runwatch: `completed_at` -> Run.finished_at, `events_delivered` ->
Run.events_delivered, `batches_dlq` -> Run.dlq_batches, `error` -> Run.error, optional
`evaluations` / `custom_events` -> Run.events_evaluations / Run.events_custom.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from runwatch.models import Connection
from runwatch.resolvers import connections as connections_api
from runwatch.resolvers import inputs
from runwatch.resolvers import runs as runs_api
from runwatch.resolvers.caller import Caller
from runwatch.resolvers.clock import iso
from runwatch.resolvers.errors import NotFound
from runwatch.resolvers.pagination import MAX_PAGE_SIZE
from runwatch.resolvers.runs import RunReport
from runwatch.resolvers.telemetry import Telemetry, TelemetryOptions, connection_telemetry
from runwatch.rest_shim.common import (
    BadRequest,
    caller_of,
    drf_errors,
    json_body,
    parse_datetime,
    parse_int,
    parse_pk,
)
from runwatch.rest_shim.openapi import WAREHOUSE, WAREHOUSE_OPS
from runwatch.rest_shim.routing import Operations

PREFIX = WAREHOUSE
ONE = PREFIX + "/{id}/"
REPORT_FIELDS = {"completed_at", "events_delivered", "batches_dlq", "error", "evaluations",
                 "custom_events"}
RESERVED_CONNECTION_KEYS = {"id", "created_at", "updated_at", "organisation", "settings"}


def scoped_caller(request: Request) -> Caller:
    """The caller (whose scope the route checked: `routing`), who must belong to the
    organisation in the URL (else: not found)."""
    caller = caller_of(request)
    if parse_pk(request.path_params["organisation_pk"]) != caller.organisation_id:
        raise NotFound("organisation", request.path_params["organisation_pk"])
    return caller


def connection_json(connection: Connection) -> dict[str, Any]:
    return {
        **connection.settings,
        "id": connection.id,
        "name": connection.name,
        "type": connection.warehouse_type,
        "created_at": iso(connection.created_at),
        "updated_at": iso(connection.updated_at),
    }


def telemetry_json(t: Telemetry) -> dict[str, Any]:
    def counts(c):
        return {"evaluations": c.evaluations, "custom_events": c.custom_events, "total": c.total}

    return {
        "status": t.status,
        "last_delivery_at": iso(t.last_delivery_at),
        "events_last_24h": counts(t.events_last_24h),
        "events_last_7d": counts(t.events_last_7d),
        "failed_deliveries_last_24h": t.failed_deliveries_last_24h,
        "recent_errors": [
            # run_id: not in the contract's example, added so that an error can be looked up
            # (GraphQL's RecentError has it too); clients ignore keys they do not know
            {"occurred_at": iso(e.occurred_at), "message": e.message, "run_id": e.run_id}
            for e in t.recent_errors
        ],
    }


def wire_field(name: str) -> str:
    """Domain field names -> this contract's: settings are top-level keys, `type` is the type."""
    if name.startswith("settings."):
        return name.removeprefix("settings.")
    return {"warehouse_type": "type", "after": "cursor", "first": "limit"}.get(name, name)


translate_errors = drf_errors(wire_field)


def _connection_input(body: dict[str, Any]) -> dict[str, Any]:
    """`{"name", "type", ...settings}`: every other top-level key is a non-secret setting."""
    errors = {key: ["This field is read-only."] for key in body if key in RESERVED_CONNECTION_KEYS}
    if errors:
        raise BadRequest(errors)
    settings = {k: v for k, v in body.items() if k not in {"name", "type"}}
    return {"name": body.get("name"), "warehouse_type": body.get("type"), "settings": settings}


async def list_connections(request: Request) -> Response:
    caller = scoped_caller(request)
    page = await connections_api.list_connections(
        caller=caller,
        first=min(_int_query(request, "limit", 100), MAX_PAGE_SIZE) or 1,
        after=request.query_params.get("cursor"),
    )
    next_url = None
    if page.has_next_page and page.end_cursor:
        next_url = str(request.url.include_query_params(cursor=page.end_cursor))
    return JSONResponse({"next": next_url, "results": [connection_json(c) for c in page.items]})


def _int_query(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = inputs.as_int(raw)
    if value is None:
        raise BadRequest({name: ["A valid integer is required."]})
    return value


async def create_connection(request: Request) -> Response:
    caller = scoped_caller(request)
    body = await json_body(request)
    connection = await connections_api.create_connection(
        caller=caller, **_connection_input(body)
    )
    return JSONResponse(connection_json(connection), status_code=201)


async def get_connection(request: Request) -> Response:
    caller = scoped_caller(request)
    connection = await connections_api.get_connection(
        caller=caller, connection_id=parse_pk(request.path_params["id"])
    )
    return JSONResponse(connection_json(connection))


async def patch_connection(request: Request) -> Response:
    caller = scoped_caller(request)
    body = await json_body(request)
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = body["name"]
    if "type" in body:
        changes["warehouse_type"] = body["type"]
    settings_keys = {k: v for k, v in body.items() if k not in {"name", "type"}}
    if settings_keys:
        changes["settings_patch"] = _connection_input(settings_keys)["settings"]
    connection = await connections_api.update_connection(
        caller=caller, connection_id=parse_pk(request.path_params["id"]), **changes
    )
    return JSONResponse(connection_json(connection))


def parse_report(body: dict[str, Any]) -> RunReport:
    errors: dict[str, list[str]] = {k: ["Unknown field."] for k in body if k not in REPORT_FIELDS}
    for name in ("completed_at", "events_delivered"):
        if body.get(name) is None:
            errors[name] = ["This field is required."]
    completed_at = (
        parse_datetime(body["completed_at"], "completed_at", errors)
        if body.get("completed_at") is not None else None
    )
    counts: dict[str, int | None] = {}
    for name in ("events_delivered", "batches_dlq", "evaluations", "custom_events"):
        value = body.get(name)
        counts[name] = None if value is None else parse_int(value, name, errors)
    error = body.get("error")
    if error is not None and not isinstance(error, str):
        errors["error"] = ["Not a valid string."]
    if errors:
        raise BadRequest(errors)
    return RunReport(
        completed_at=completed_at,  # type: ignore[arg-type]
        events_delivered=counts["events_delivered"],  # type: ignore[arg-type]
        batches_dlq=counts["batches_dlq"] or 0,
        error=error,
        evaluations=counts["evaluations"],
        custom_events=counts["custom_events"],
    )


async def report_run(request: Request) -> Response:
    caller = scoped_caller(request)
    connection_id = parse_pk(request.path_params["id"])
    run_id = parse_pk(request.path_params["run_id"], "run")
    report = parse_report(await json_body(request))
    await runs_api.report_run(
        caller=caller, run_id=run_id, report=report, connection_id=connection_id
    )
    return Response(status_code=204)


def routes(options: TelemetryOptions) -> list[BaseRoute]:
    ops = Operations(WAREHOUSE_OPS, translate_errors)
    ops("GET", PREFIX + "/")(list_connections)
    ops("POST", PREFIX + "/")(create_connection)
    ops("GET", ONE)(get_connection)
    ops("PATCH", ONE)(patch_connection)
    ops("PATCH", ONE + "metrics/{run_id}/")(report_run)

    @ops("POST", ONE + "metrics/")
    async def start_run(request: Request) -> Response:
        caller = scoped_caller(request)
        body = await json_body(request)
        errors: dict[str, list[str]] = {k: ["Unknown field."] for k in body if k != "started_at"}
        started_at = None
        if body.get("started_at") is not None:
            started_at = parse_datetime(body["started_at"], "started_at", errors)
        if errors:
            raise BadRequest(errors)
        run = await runs_api.start_run(
            caller=caller, connection_id=parse_pk(request.path_params["id"]),
            started_at=started_at, default_max_runtime=options.orphan_window,
        )
        return JSONResponse({"run_id": run.id, "started_at": iso(run.started_at)},
                            status_code=201)

    @ops("GET", ONE + "telemetry/")
    async def telemetry(request: Request) -> Response:
        caller = scoped_caller(request)
        t = await connection_telemetry(
            caller=caller, connection_id=parse_pk(request.path_params["id"]), options=options
        )
        return JSONResponse(telemetry_json(t))

    return ops.routes()
