"""Watcher contract: the documented paths (under `RUNWATCH_WATCHER_PREFIX`, root by default).

Wire conventions of the original service, kept: every top-level string of a request body is
trimmed and lower-cased except `watermark` / `next_watermark` (and so are the text fields of
answers); nested objects are left alone; unknown keys are ignored; validation errors are 422
`{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`; other errors `{"detail": "..."}`.
Its defects, fixed: unknown ids are 404 (not 500), an end before its start is 400, the
execution hierarchy works for root executions too, log cleanup commits, change detection is
a stable digest. Every route needs a token of the caller's organisation (`read` for GET;
`report` or `write` for the rest).

Wire names -> runwatch: an execution is a `Run` (`total_rows` -> `rows_total`, `inserts` ->
`rows_inserted`, `updates` -> `rows_updated`, `soft_deletes` -> `rows_deleted`,
`completed_successfully` -> status `succeeded` / `failed`, `start_date` / `end_date` ->
`started_at` / `finished_at`); a pipeline is a `Pipeline` (kind `watcher` when created here).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from runwatch.faults import database_unavailable, unavailable
from runwatch.models import (
    Address,
    AddressType,
    AnomalyRule,
    Pipeline,
    PipelineType,
    Run,
    RunStatus,
)
from runwatch.resolvers import addresses, anomalies, checks, executions, inputs, retention
from runwatch.resolvers import watcher_pipelines as pipelines
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, parse_iso, to_utc
from runwatch.resolvers.errors import (
    Conflict,
    InvalidInput,
    InvalidRange,
    NameTaken,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from runwatch.resolvers.executions import ExecutionTree
from runwatch.resolvers.run_input import Errors
from runwatch.resolvers.tasks import check_queue
from runwatch.resolvers.watcher_pipelines import integer, require_writer
from runwatch.rest_shim import watcher_input as wire
from runwatch.rest_shim.common import Handler, UnreadableBody, caller_of, json_object
from runwatch.rest_shim.openapi import watcher_ops
from runwatch.rest_shim.routing import Operations
from runwatch.rest_shim.watcher_input import LaxError, lax, lax_lineage
from runwatch.settings import Settings

KEEP_CASE = {"watermark", "next_watermark"}


class Unprocessable(Exception):
    """A 422 of the shim itself (unreadable body, a path parameter that is not an int)."""

    def __init__(self, loc: list[Any], msg: str, kind: str) -> None:
        super().__init__(msg)
        self.detail = [{"loc": loc, "msg": msg, "type": kind}]


# The domain's messages in pydantic's wording (the original validates with pydantic models and
# clients match on its messages): a model validator's `ValueError` is "Value error, <text>";
# the field checks runwatch shares with it have pydantic's own messages and types. Any other
# message is runwatch's own, sent as written (its case kept).
VALUE_ERRORS = ("Either 'id' or 'name' must be provided", "Both ")
PYDANTIC = (
    (re.compile(r"field required"), "Field required", "missing"),
    (re.compile(r"\w+ must be an integer"), "Input should be a valid integer", "int_type"),
    (re.compile(r"\w+ must be a boolean"), "Input should be a valid boolean", "bool_type"),
    (re.compile(r"\w+ must be greater than or equal to (\d+)"),
     "Input should be greater than or equal to {0}", "greater_than_equal"),
)


ONE_OF = re.compile(r"\w+ must be one of: (.+)")


def pydantic_message(message: str) -> tuple[str, str]:
    """(msg, type) of a domain message as the original's pydantic models word it."""
    if message.startswith(VALUE_ERRORS):
        return f"Value error, {message}", "value_error"
    choices = ONE_OF.fullmatch(message)
    if choices:  # an enum: "Input should be 'minute', 'hour' or 'day'"
        quoted = [f"'{c}'" for c in choices.group(1).split(", ")]
        listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        return f"Input should be {listed}", "enum"
    for pattern, wording, kind in PYDANTIC:
        match = pattern.fullmatch(message)
        if match:
            return wording.format(*match.groups()), kind
    return message, "value_error"


def normalise(value: Any, key: str | None = None) -> Any:
    """Trim and lower-case a top-level string; watermarks are kept as sent (neither trimmed
    nor lower-cased), and so are lists and objects (the original's models change top-level
    strings only)."""
    if key in KEEP_CASE:
        return value
    if isinstance(value, str):
        return value.strip().lower()
    return value


async def body_of(request: Request, *, required: bool = True) -> dict[str, Any]:
    try:
        body = await json_object(request)
    except UnreadableBody as exc:  # FastAPI's own answers (NaN, Infinity, deep nesting too)
        if exc.not_json:
            raise Unprocessable(["body", 0], "JSON decode error", "json_invalid") from None
        raise Unprocessable(["body"], "Input should be a valid dictionary or object to extract "
                            "fields from", "model_attributes_type") from None
    if body is None:
        if required:
            raise Unprocessable(["body"], "Field required", "missing")
        return {}
    return {key: normalise(value, key) for key, value in body.items()}


def path_int(request: Request, name: str) -> int:
    """A path id: not an integer at all is this contract's 422; an integer no row of the kind
    can have is not found (`runwatch.resolvers.inputs`, the one id rule)."""
    raw = request.path_params[name]
    digits = raw.removeprefix("-")  # one sign at most: `--5` is not an integer
    if not (digits.isascii() and digits.isdigit()):
        raise Unprocessable(["path", name], "Input should be a valid integer, unable to parse "
                           "string as an integer", "int_parsing")
    kind = name.removesuffix("_id").replace("_", " ")
    significant = digits.lstrip("0") or "0"  # `007` is 7, as FastAPI reads it
    if raw.startswith("-") and significant != "0":
        raise NotFound(kind, raw)
    return inputs.parse_id(significant, kind)


# An ISO 8601 time in a message (`2026-12-07T11:25:26Z`): a value, whose case is kept.
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T[\d:.]+(?:Z|[+-]\d{2}:\d{2})?")


def lower_text(message: str) -> str:
    """A message lower-cased (the Watcher's answers are), except the times it quotes."""
    kept, at = [], 0
    for match in ISO_TIME.finditer(message):
        kept.append(message[at:match.start()].lower() + match.group())
        at = match.end()
    return "".join(kept) + message[at:].lower()


def detail(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="runwatch"'} if status == 401 else None
    return JSONResponse({"detail": lower_text(message.strip())}, status_code=status,
                        headers=headers)


def translate_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except (Unprocessable, LaxError) as exc:
            return JSONResponse({"detail": exc.detail}, status_code=422)
        except NameTaken as exc:  # the original's words and case: clients match on them
            return JSONResponse({"detail": f"{exc.kind.capitalize()} name already exists"},
                                status_code=400)
        except InvalidRange as exc:
            return detail(400, " ".join(m for msgs in exc.fields.values() for m in msgs))
        except InvalidInput as exc:
            return JSONResponse({"detail": [
                {"loc": ["body", *(int(p) if p.isdigit() else p for p in name.split("."))],
                 "msg": msg, "type": kind}
                for name, messages in exc.fields.items() for message in messages
                for msg, kind in [pydantic_message(message)]
            ]}, status_code=422)
        except NotFound as exc:
            return detail(404, f"{exc.kind} not found")
        except Conflict as exc:
            return detail(409, exc.message)
        except Unauthenticated as exc:
            return detail(401, exc.message)
        except PermissionDenied as exc:
            return detail(403, exc.message)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            return unavailable("detail", exc, request.url.path)

    return wrapped


def reader(request: Request) -> Caller:
    return caller_of(request, Scope.READ)


def writer(request: Request) -> Caller:
    caller = caller_of(request)
    require_writer(caller)
    return caller


# ------------------------------------------------------------------------------- wire bodies


def _time(value: Any, name: str, errors: Errors, *, required: bool) -> datetime | None:
    if value is None:
        if required:
            errors.add(name, "field required")
        return None
    parsed = value if isinstance(value, datetime) else parse_iso(value)
    if parsed is None:
        errors.add(name, f"{name} must be an ISO 8601 date-time")
        return None
    return to_utc(parsed, name)


def execution_start_of(body: dict[str, Any]) -> executions.ExecutionStart:
    body = lax(body, wire.START)
    errors = Errors()
    pipeline_id = integer(body.get("pipeline_id"), "pipeline_id", errors, required=True)
    parent_id = integer(body.get("parent_id"), "parent_id", errors, required=False)
    started = _time(body.get("start_date"), "start_date", errors, required=False)
    errors.raise_any()
    return executions.ExecutionStart(
        pipeline_id=pipeline_id, parent_id=parent_id,  # type: ignore[arg-type]
        start_date=started, watermark=body.get("watermark"),
        next_watermark=body.get("next_watermark"))


def execution_end_of(body: dict[str, Any]) -> executions.End:
    body = lax(body, wire.END)
    errors = Errors()
    run_id = integer(body.get("id"), "id", errors, required=True)
    end_date = _time(body.get("end_date"), "end_date", errors, required=True)
    succeeded = body.get("completed_successfully")
    if not isinstance(succeeded, bool):
        errors.add("completed_successfully", "field required" if succeeded is None
                   else "completed_successfully must be a boolean")
    errors.raise_any()
    return executions.End(
        run_id=run_id, end_date=end_date, succeeded=succeeded,  # type: ignore[arg-type]
        counts={key: body.get(key) for key in executions.COUNTS},
        execution_metadata=body.get("execution_metadata"))


def pipeline_type_of(body: dict[str, Any]) -> pipelines.PipelineTypeInput:
    return pipelines.PipelineTypeInput(**_known(body, pipelines.PipelineTypeInput))


def pipeline_type_change_of(body: dict[str, Any]) -> pipelines.PipelineTypeChange:
    """`PATCH /pipeline_type`: a field not sent stays `UNSET` (unchanged)."""
    return pipelines.PipelineTypeChange(**_known(body, pipelines.PipelineTypeChange))


def pipeline_of(body: dict[str, Any]) -> pipelines.PipelineDefinition:
    """`POST /pipeline`: a field not sent stays `UNSET` (a found pipeline keeps it)."""
    return pipelines.PipelineDefinition(**_known(body, pipelines.PipelineDefinition))


def pipeline_change_of(body: dict[str, Any]) -> pipelines.PipelineChange:
    """`PATCH /pipeline`: a field not sent stays `UNSET` (unchanged); null clears it."""
    return pipelines.PipelineChange(**_known(body, pipelines.PipelineChange))


def address_type_of(body: dict[str, Any]) -> addresses.AddressTypeInput:
    return addresses.AddressTypeInput(**_known(body, addresses.AddressTypeInput))


def address_type_change_of(body: dict[str, Any]) -> addresses.AddressTypeChange:
    return addresses.AddressTypeChange(**_known(body, addresses.AddressTypeChange))


def address_of(body: dict[str, Any]) -> addresses.AddressInput:
    return addresses.AddressInput(**_known(body, addresses.AddressInput))


def address_change_of(body: dict[str, Any]) -> addresses.AddressChange:
    """`PATCH /address`: a field not sent stays `UNSET` (unchanged); null clears it."""
    return addresses.AddressChange(**_known(body, addresses.AddressChange))


def lineage_of(body: dict[str, Any]) -> addresses.LineageInput:
    """`POST /address_lineage`: each address of `source_addresses` / `target_addresses` has
    its strings trimmed and lower-cased, like a top-level string. A side that is not a list,
    or an item that is not an object, is passed on as sent (the domain refuses it)."""

    def lowered(value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [{k: v.strip().lower() if isinstance(v, str) else v for k, v in item.items()}
                if isinstance(item, dict) else item for item in value]

    def side(value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [addresses.AddressInput(**_known(item, addresses.AddressInput))
                if isinstance(item, dict) else item for item in value]

    body = lax_lineage({**body, **{key: lowered(body.get(key)) for key in wire.LINEAGE_SIDES
                                   if key in body}})
    return addresses.LineageInput(pipeline_id=body.get("pipeline_id"),
                                  sources=side(body.get("source_addresses")),
                                  targets=side(body.get("target_addresses")))


def rule_of(body: dict[str, Any]) -> anomalies.RuleInput:
    return anomalies.RuleInput(**_known(body, anomalies.RuleInput))


def rule_change_of(body: dict[str, Any]) -> anomalies.RuleChange:
    return anomalies.RuleChange(**_known(body, anomalies.RuleChange))


def unflag_of(body: dict[str, Any]) -> anomalies.Unflag:
    body = lax(body, wire.UNFLAG)
    return anomalies.Unflag(pipeline_id=body.get("pipeline_id"),
                            run_id=body.get("pipeline_execution_id"),
                            metric_fields=body.get("metric_field"))


def lookback_of(body: Any) -> Any:
    """`POST /timeliness`: the body is required, `lookback_minutes` in it is not."""
    if not isinstance(body, dict):
        raise InvalidInput.one("body", "field required")
    return lax(body, wire.TIMELINESS).get("lookback_minutes")


# The wire's types of each body (`watcher_input`).
SPECS: dict[type, wire.Spec] = {
    pipelines.PipelineTypeInput: wire.PIPELINE_TYPE,
    pipelines.PipelineTypeChange: wire.PIPELINE_TYPE_CHANGE,
    pipelines.PipelineDefinition: wire.PIPELINE, pipelines.PipelineChange: wire.PIPELINE_CHANGE,
    addresses.AddressTypeInput: wire.ADDRESS_TYPE,
    addresses.AddressTypeChange: wire.ADDRESS_TYPE_CHANGE,
    addresses.AddressInput: wire.ADDRESS, addresses.AddressChange: wire.ADDRESS_CHANGE,
    anomalies.RuleInput: wire.RULE, anomalies.RuleChange: wire.RULE_CHANGE,
}


def _known(body: dict[str, Any], kind: type) -> dict[str, Any]:
    """The body's fields that `kind` has (the Watcher ignores unknown keys), read as the
    wire's types read them (lax: `"5"` is 5); the domain checks their values."""
    body = lax(body, SPECS[kind])
    names = {f.name for f in dataclasses.fields(kind)}
    return {k: v for k, v in body.items() if k in names}


# ------------------------------------------------------------------------------- wire shapes


def pipeline_json(p: Pipeline) -> dict[str, Any]:
    return {
        "id": p.id, "name": p.name.lower(),
        "pipeline_type_id": p.pipeline_type_id,  # type: ignore[attr-defined]
        "watermark": p.watermark, "next_watermark": p.next_watermark,
        "pipeline_metadata": p.pipeline_metadata,
        "last_target_insert": iso(p.last_target_insert),
        "last_target_update": iso(p.last_target_update),
        "last_target_soft_delete": iso(p.last_target_soft_delete),
        "freshness_number": p.freshness_number, "freshness_datepart": p.freshness_datepart,
        "mute_freshness_check": p.mute_freshness_check,
        "timeliness_number": p.timeliness_number, "timeliness_datepart": p.timeliness_datepart,
        "mute_timeliness_check": p.mute_timeliness_check,
        "load_lineage": p.load_lineage, "active": p.active,
        "created_at": iso(p.created_at), "updated_at": iso(p.updated_at),
    }


def type_json(t: PipelineType) -> dict[str, Any]:
    return {
        "id": t.id, "name": t.name.lower(),
        "freshness_number": t.freshness_number, "freshness_datepart": t.freshness_datepart,
        "mute_freshness_check": t.mute_freshness_check,
        "timeliness_number": t.timeliness_number, "timeliness_datepart": t.timeliness_datepart,
        "mute_timeliness_check": t.mute_timeliness_check,
        "created_at": iso(t.created_at), "updated_at": iso(t.updated_at),
    }


def execution_json(run: Run) -> dict[str, Any]:
    done = {RunStatus.SUCCEEDED: True, RunStatus.FAILED: False, RunStatus.TIMED_OUT: False,
            RunStatus.CANCELLED: False}
    return {
        "id": run.id, "parent_id": run.parent_id,  # type: ignore[attr-defined]
        "pipeline_id": run.pipeline_id,  # type: ignore[attr-defined]
        "start_date": iso(run.started_at), "end_date": iso(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "completed_successfully": done.get(RunStatus(run.status)),
        "inserts": run.rows_inserted, "updates": run.rows_updated,
        "soft_deletes": run.rows_deleted, "total_rows": run.rows_total,
        "watermark": run.watermark, "next_watermark": run.next_watermark,
        "execution_metadata": run.execution_metadata, "anomaly_flags": run.anomaly_flags,
        "throughput": run.throughput,
        "hour_recorded": run.hour_recorded,
        "date_recorded": run.date_recorded.isoformat() if run.date_recorded else None,
        "status": RunStatus(run.status).value,
    }


def tree_json(tree: ExecutionTree) -> dict[str, Any]:
    return {**execution_json(tree.run), "child_executions": [tree_json(c) for c in tree.children]}


def address_json(a: Address) -> dict[str, Any]:
    return {
        "id": a.id, "name": a.name.lower(),
        "address_type_id": a.address_type_id,  # type: ignore[attr-defined]
        "namespace": a.namespace,
        "database_name": a.database_name, "schema_name": a.schema_name,
        "table_name": a.table_name, "primary_key": a.primary_key,
        "address_metadata": a.address_metadata,
        "created_at": iso(a.created_at), "updated_at": iso(a.updated_at),
    }


def address_type_json(t: AddressType) -> dict[str, Any]:
    return {"id": t.id, "name": t.name.lower(), "group_name": t.group_name.lower(),
            "created_at": iso(t.created_at), "updated_at": iso(t.updated_at)}


def rule_json(r: AnomalyRule) -> dict[str, Any]:
    return {
        "id": r.id, "pipeline_id": r.pipeline_id,  # type: ignore[attr-defined]
        "metric_field": r.metric_field, "z_threshold": r.z_threshold,
        "lookback_days": r.lookback_days, "minimum_executions": r.minimum_executions,
        "active": r.active, "created_at": iso(r.created_at), "updated_at": iso(r.updated_at),
    }


def created(found: tuple[Any, bool], body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=201 if found[1] else 200)


def routes(settings: Settings) -> list[BaseRoute]:
    prefix = settings.watcher_prefix
    ops = Operations(watcher_ops(prefix), translate_errors)

    # ---- pipelines and types

    @ops("POST", prefix + "/pipeline")
    async def post_pipeline(request: Request) -> Response:
        caller = writer(request)
        raw = await body_of(request)
        found = await pipelines.get_or_create_pipeline(caller=caller, given=pipeline_of(raw))
        p = found[0]
        # `watermark` is always in the answer: the stored one when a `next_watermark` was
        # sent to a found pipeline, else null (the contract's "returned when next_watermark
        # is provided"; a null next_watermark is not provided).
        handed = not found[1] and raw.get("next_watermark") is not None
        return created(found, {"id": p.id, "active": p.active, "load_lineage": p.load_lineage,
                               "watermark": p.watermark if handed else None})

    @ops("GET", prefix + "/pipeline")
    async def list_pipelines(request: Request) -> Response:
        rows = await pipelines.list_watcher_pipelines(caller=reader(request))
        return JSONResponse([pipeline_json(p) for p in rows])

    @ops("GET", prefix + "/pipeline/{pipeline_id}")
    async def get_pipeline(request: Request) -> Response:
        p = await pipelines.get_watcher_pipeline(
            caller=reader(request), pipeline_id=path_int(request, "pipeline_id"))
        return JSONResponse(pipeline_json(p))

    @ops("PATCH", prefix + "/pipeline")
    async def patch_pipeline(request: Request) -> Response:
        caller = writer(request)
        p = await pipelines.patch_pipeline(
            caller=caller, change=pipeline_change_of(await body_of(request)))
        return JSONResponse(pipeline_json(p))

    @ops("POST", prefix + "/pipeline_type")
    async def post_type(request: Request) -> Response:
        caller = writer(request)
        found = await pipelines.get_or_create_type(
            caller=caller, given=pipeline_type_of(await body_of(request)))
        return created(found, {"id": found[0].id})

    @ops("PATCH", prefix + "/pipeline_type")
    async def patch_type(request: Request) -> Response:
        caller = writer(request)
        t = await pipelines.patch_type(
            caller=caller, change=pipeline_type_change_of(await body_of(request)))
        return JSONResponse(type_json(t))

    @ops("GET", prefix + "/pipeline_type")
    async def list_types(request: Request) -> Response:
        return JSONResponse([type_json(t) for t in
                             await pipelines.list_types(caller=reader(request))])

    @ops("GET", prefix + "/pipeline_type/{pipeline_type_id}")
    async def get_type(request: Request) -> Response:
        t = await pipelines.get_type(caller=reader(request),
                                     type_id=path_int(request, "pipeline_type_id"))
        return JSONResponse(type_json(t))

    # ---- executions

    @ops("POST", prefix + "/start_pipeline_execution")
    async def start(request: Request) -> Response:
        caller = writer(request)
        run = await executions.start_execution(
            caller=caller, start=execution_start_of(await body_of(request)))
        return JSONResponse({"id": run.id}, status_code=201)

    @ops("POST", prefix + "/end_pipeline_execution")
    async def end(request: Request) -> Response:
        caller = writer(request)
        await executions.end_execution(caller=caller,
                                       end=execution_end_of(await body_of(request)))
        return Response(status_code=204)

    @ops("GET", prefix + "/pipeline_execution/{pipeline_execution_id}")
    async def get_execution(request: Request) -> Response:
        tree = await executions.execution_tree(
            caller=reader(request),
            run_id=path_int(request, "pipeline_execution_id"))
        return JSONResponse(tree_json(tree))

    # ---- addresses, types, lineage

    @ops("POST", prefix + "/address")
    async def post_address(request: Request) -> Response:
        caller = writer(request)
        found = await addresses.get_or_create_address(
            caller=caller, given=address_of(await body_of(request)))
        return created(found, {"id": found[0].id})

    @ops("GET", prefix + "/address")
    async def list_addresses(request: Request) -> Response:
        return JSONResponse([address_json(a) for a in
                             await addresses.list_addresses(caller=reader(request))])

    @ops("GET", prefix + "/address/{address_id}")
    async def get_address(request: Request) -> Response:
        a = await addresses.get_address(caller=reader(request),
                                        address_id=path_int(request, "address_id"))
        return JSONResponse(address_json(a))

    @ops("PATCH", prefix + "/address")
    async def patch_address(request: Request) -> Response:
        caller = writer(request)
        a = await addresses.patch_address(
            caller=caller, change=address_change_of(await body_of(request)))
        return JSONResponse(address_json(a))

    @ops("POST", prefix + "/address_type")
    async def post_address_type(request: Request) -> Response:
        caller = writer(request)
        found = await addresses.get_or_create_address_type(
            caller=caller, given=address_type_of(await body_of(request)))
        return created(found, {"id": found[0].id})

    @ops("PATCH", prefix + "/address_type")
    async def patch_address_type(request: Request) -> Response:
        caller = writer(request)
        t = await addresses.patch_address_type(
            caller=caller, change=address_type_change_of(await body_of(request)))
        return JSONResponse(address_type_json(t))

    @ops("GET", prefix + "/address_type")
    async def list_address_types(request: Request) -> Response:
        return JSONResponse([address_type_json(t) for t in
                             await addresses.list_address_types(caller=reader(request))])

    @ops("GET", prefix + "/address_type/{address_type_id}")
    async def get_address_type(request: Request) -> Response:
        t = await addresses.get_address_type(caller=reader(request),
                                             type_id=path_int(request, "address_type_id"))
        return JSONResponse(address_type_json(t))

    @ops("POST", prefix + "/address_lineage")
    async def post_lineage(request: Request) -> Response:
        caller = writer(request)
        result = await addresses.create_lineage(
            caller=caller, lineage=lineage_of(await body_of(request)))
        return JSONResponse({
            "pipeline_id": result.pipeline_id,
            "lineage_relationships_created": result.created,
            "message": result.message.lower(),
        }, status_code=201 if result.applied else 200)

    # ---- anomaly detection

    @ops("POST", prefix + "/anomaly_detection_rule")
    async def post_rule(request: Request) -> Response:
        caller = writer(request)
        found = await anomalies.get_or_create_rule(caller=caller,
                                                   rule=rule_of(await body_of(request)))
        return created(found, {"id": found[0].id})

    @ops("GET", prefix + "/anomaly_detection_rule")
    async def list_rules(request: Request) -> Response:
        return JSONResponse([rule_json(r) for r in
                             await anomalies.list_rules(caller=reader(request))])

    @ops("GET", prefix + "/anomaly_detection_rule/{anomaly_detection_rule_id}")
    async def get_rule(request: Request) -> Response:
        r = await anomalies.get_rule(caller=reader(request),
                                     rule_id=path_int(request, "anomaly_detection_rule_id"))
        return JSONResponse(rule_json(r))

    @ops("PATCH", prefix + "/anomaly_detection_rule")
    async def patch_rule(request: Request) -> Response:
        caller = writer(request)
        r = await anomalies.patch_rule(caller=caller,
                                       change=rule_change_of(await body_of(request)))
        return JSONResponse(rule_json(r))

    @ops("POST", prefix + "/unflag_anomaly")
    async def unflag(request: Request) -> Response:
        caller = writer(request)
        await anomalies.unflag(caller=caller, request=unflag_of(await body_of(request)))
        return Response(status_code=204)

    # ---- checks, retention, queue

    @ops("POST", prefix + "/timeliness")
    async def timeliness(request: Request) -> Response:
        caller = writer(request)
        await checks.request_timeliness(
            caller=caller, lookback_minutes=lookback_of(await body_of(request)))
        return JSONResponse({"status": "queued"})

    @ops("POST", prefix + "/freshness")
    async def freshness(request: Request) -> Response:
        caller = writer(request)
        await body_of(request, required=False)
        await checks.request_freshness(caller=caller)
        return JSONResponse({"status": "queued"})

    @ops("POST", prefix + "/log_cleanup")
    async def log_cleanup(request: Request) -> Response:
        caller = writer(request)
        days, batch = retention.parse_cleanup(lax(await body_of(request), wire.CLEANUP))
        counts = await retention.request_cleanup(caller=caller, retention_days=days,
                                                 batch_size=batch)
        return JSONResponse(counts.answer())

    @ops("POST", prefix + "/celery/monitor-queue")
    async def monitor(request: Request) -> Response:
        caller = writer(request)
        try:
            await check_queue(caller=caller)
        except Exception:  # the contract's own error answer: the queue could not be read
            return JSONResponse({"status": "error"}, status_code=500)
        return JSONResponse({"status": "success"})

    @ops("GET", prefix + "/" if prefix else "/")
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return ops.routes()
