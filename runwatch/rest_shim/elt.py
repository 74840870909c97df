"""ELT-runs contract: `/api/elt/` (people and services: `read` / `write` scopes) and
`/api/agent/` (gateways, with their own tokens).

Wire format: camelCase bodies, ids as strings, `{"run": …}` / `{"runs": […]}` envelopes,
errors `{"error": "…"}` and validation errors `{"error": {"field": ["…"]}}` (400).

Wire names -> runwatch: `errorSummary` -> Run.error, `telemetry.summary.rowsLoaded` /
`bytesLoaded` -> Run.rows_total / Run.bytes (the rest of the summary is `Run.telemetry_summary`),
`logEntries` -> RunLogLine rows, `telemetry.samples` -> RunTelemetrySample rows,
`targetGatewayId` -> Run.target_gateway, `gatewayId` (added: who claimed it) -> Run.gateway.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from runwatch.faults import database_unavailable, unavailable
from runwatch.models import (
    Gateway,
    Pipeline,
    Run,
    RunLogLine,
    RunStatus,
    RunTelemetrySample,
    WebhookEndpoint,
)
from runwatch.naming import camel_field
from runwatch.resolvers import (
    elt_runs,
    gateways,
    inputs,
    pipelines,
    run_series,
    runs,
    secrets,
    webhooks,
)
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.elt_runs import RunFinished
from runwatch.resolvers.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from runwatch.resolvers.pagination import encode_cursor
from runwatch.resolvers.run_input import UNSET, Errors, check_int_id, parse_change
from runwatch.resolvers.run_series import LOGS, SAMPLES
from runwatch.resolvers.run_summary import eltpulse_status, summary_of
from runwatch.rest_shim.common import (
    BadRequest,
    Handler,
    UnreadableBody,
    caller_of,
    json_body,
    parse_pk,
)
from runwatch.rest_shim.openapi import AGENT, ELT, ELT_OPS, PIPELINES, RUNS
from runwatch.rest_shim.routing import Operations
from runwatch.settings import Settings

LIST_DEFAULT, LIST_MAX = 50, 200
# Wire names of run-change and new-run fields (the rest are the same words in snake_case).
PATCH_FIELDS = {"status", "logEntries", "appendLog", "errorSummary", "finishedAt",
                "telemetrySummary", "appendTelemetrySample", "telemetrySamples"}
NEW_RUN_FIELDS = {"pipelineId", "environment", "correlationId", "triggeredBy",
                  "partitionColumn", "partitionValue", "targetGatewayId", "targetAgentTokenId",
                  "status"}
# eltPulse's definition fields (wire names): what its web app sends and a gateway runs.
DEFINITION_FIELDS = ("tool", "sourceType", "destinationType", "sourceConfiguration",
                     "pipelineCode", "configYaml", "workspaceYaml")
PIPELINE_FIELDS = {"name", "description", "maxRuntimeSeconds", "connectionId",
                   *DEFINITION_FIELDS, "groupName", "enabled",
                   # eltPulse's connection links (its web app's new-pipeline bodies)
                   "sourceConnectionId", "destinationConnectionId"}


def snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def domain_body(body: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """Wire keys -> domain names. An unknown key is refused here, named as the client wrote
    it: handed on, a snake_case spelling (`append_log`) would pass for the domain name and
    the resolver's field names would be camelCased (`foo_bar` reported as `fooBar`)."""
    unknown = {k: ["Unknown field."] for k in body if k not in known}
    if unknown:
        raise BadRequest(unknown)
    return {snake(k): v for k, v in body.items()}


def new_run_of(body: dict[str, Any]) -> elt_runs.NewRun:
    """`POST /api/elt/runs`'s body (wire names) -> a typed new run; ids are strings of
    digits on the wire (numbers are accepted too)."""
    raw = domain_body(body, NEW_RUN_FIELDS)
    errors = Errors()
    # eltPulse's web app names the target gateway `targetAgentTokenId` (a gateway id, or null
    # for any gateway): an alias of `targetGatewayId`.
    if "target_agent_token_id" in raw:
        alias = raw.pop("target_agent_token_id")
        if raw.get("target_gateway_id") is not None and alias is not None \
                and str(alias) != str(raw["target_gateway_id"]):
            errors.add("target_agent_token_id", "Names another gateway than targetGatewayId.")
        raw["target_gateway_id"] = raw.get("target_gateway_id") or alias
    pipeline_id = check_int_id(raw.get("pipeline_id"), "pipeline_id", errors)
    if raw.get("pipeline_id") is None:
        errors.add("pipeline_id", "This field is required.")
    texts = {}
    for name in elt_runs.NEW_RUN_TEXTS:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            errors.add(name, "Not a valid string.")
        texts[name] = value if isinstance(value, str) else None
    # Without a status the run is created running, as the reference's (run-types.ts
    # createRunBodySchema): whoever POSTs it runs it. eltPulse's web app always sends one
    # ("pending" for a gateway to take; "running" from its demo).
    status = raw.get("status") or RunStatus.RUNNING
    if str(status).lower() not in (RunStatus.PENDING, RunStatus.RUNNING):
        errors.add("status", "A new run is running (the default: its creator runs it) or "
                             "pending (for a gateway to claim).")
    target = check_int_id(raw.get("target_gateway_id"), "target_gateway_id", errors)
    errors.raise_any()
    return elt_runs.NewRun(pipeline_id=pipeline_id or 0, target_gateway_id=target,
                           status=RunStatus(str(status).lower()), **texts)


def pipeline_fields_of(body: dict[str, Any]) -> pipelines.PipelineFields:
    """A pipeline's wire body -> the fields it sets (what it leaves out stays UNSET)."""
    raw = domain_body(body, PIPELINE_FIELDS)
    errors = Errors()
    for name in ("name", "description"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            errors.add(name, "Not a valid string.")
    runtime = raw.get("max_runtime_seconds")
    if isinstance(runtime, float) and runtime.is_integer():
        raw["max_runtime_seconds"] = runtime = int(runtime)
    if runtime is not None and (isinstance(runtime, bool) or not isinstance(runtime, int)):
        errors.add("max_runtime_seconds", "Whole seconds, at least 60 (or null for the "
                                          "deployment's default).")
    for name in ("connection_id", "source_connection_id", "destination_connection_id"):
        if name in raw:
            raw[name] = check_int_id(raw[name], name, errors)
    errors.raise_any()
    return pipelines.PipelineFields(**raw)


def upsert_of(body: dict[str, Any]) -> bool:
    """`POST /api/elt/pipelines`'s `upsert` (eltPulse's: update the pipeline of the same
    name instead of answering 409), taken out of the body."""
    upsert = body.pop("upsert", False)
    if upsert is None:
        return False
    if not isinstance(upsert, bool):
        raise BadRequest({"upsert": ["Must be true or false."]})
    return upsert


AGENT_LIST_DEFAULT = 5  # the reference's default page of a gateway's poll
STOP_STATUSES = (RunStatus.CANCELLED, RunStatus.TIMED_OUT)
MANIFEST_VERSION = 1
# What eltPulse's gateway does with the manifest's intervals: it clamps the poll interval to
# 3..120 s and the heartbeat to 5..300 s (and falls back to 5 s / 30 s without them).
GATEWAY_POLL_RANGE, GATEWAY_HEARTBEAT_RANGE = (3, 120), (5, 300)


def gateway_intervals(settings: Settings) -> tuple[int, int]:
    """The poll and heartbeat intervals a gateway is told: the configured ones, within what
    the stock gateway accepts, and the heartbeat at most half the lease, so that a healthy
    gateway heartbeats at least twice within every lease and is never taken for dead."""
    poll = max(GATEWAY_POLL_RANGE[0], min(GATEWAY_POLL_RANGE[1], settings.gateway_poll_seconds))
    heartbeat = min(settings.gateway_heartbeat_seconds, settings.gateway_lease_seconds // 2)
    return poll, max(GATEWAY_HEARTBEAT_RANGE[0], min(GATEWAY_HEARTBEAT_RANGE[1], heartbeat))


def _carries_data(change: Any) -> bool:
    """Whether a change holds lines, samples, a summary or an errorSummary (not only a
    status)."""
    return bool(change.new_log_lines or change.new_samples or change.summary is not None
                or change.log_entries is not None or change.samples is not None
                or change.error_summary is not UNSET)


def connector_json(g: Gateway) -> dict[str, Any]:
    """A gateway as eltPulse's agent-status page shows a "connector" (an agent token)."""
    labels = g.labels if isinstance(g.labels, dict) else {}
    return {
        "id": str(g.id), "name": g.name, "metadata": None,
        "heartbeat": {"seenAt": iso(g.last_seen_at), "version": g.version or "unknown",
                      "labels": {k: v for k, v in labels.items() if isinstance(v, str)},
                      "source": "customer_agent"} if g.last_seen_at else None,
        "createdAt": iso(g.created_at),
    }


def manifest_pipeline_json(p: Pipeline) -> dict[str, Any]:
    return {"id": str(p.id), "name": p.name, "tool": p.tool, "enabled": p.enabled,
            "sourceType": p.source_type, "destinationType": p.destination_type,
            "groupName": p.group_name, "updatedAt": iso(p.updated_at or p.created_at)}


def error(status: int, message: Any, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="runwatch"'} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def translate_errors(handler: Handler) -> Handler:
    """Domain errors -> this contract's status codes and `{"error": …}` bodies."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error(400, exc.body)
        except UnreadableBody as exc:
            return error(400, f"Invalid JSON: {exc.reason}" if exc.not_json
                         else "Expected a JSON object.")
        except InvalidInput as exc:
            return error(400, {camel_field(k): v for k, v in exc.fields.items()})
        except NotFound as exc:
            return error(404, f"{exc.kind.capitalize()} not found")
        except RunFinished as exc:
            extra = {"cancel": True} if exc.status in STOP_STATUSES else {}
            return error(409, exc.message, **extra)
        except Conflict as exc:
            return error(409, exc.message)
        except Unauthenticated as exc:
            return error(401, exc.message if exc.message.startswith("Invalid token") else
                         "Authentication required: send 'Authorization: Bearer <token>'.")
        except PermissionDenied as exc:
            return error(403, exc.message)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            return unavailable("error", exc, request.url.path)

    return wrapped


# ------------------------------------------------------------------------------- wire shapes


def _id(value: int | None) -> str | None:
    return None if value is None else str(value)


def log_json(line: RunLogLine) -> dict[str, Any]:
    return {"at": iso(line.at), "level": line.level.value, "message": line.message}


def sample_json(point: RunTelemetrySample) -> dict[str, Any]:
    values = {"at": iso(point.at), "rows": point.rows, "bytes": point.bytes,
              "rowsDelta": point.rows_delta, "bytesDelta": point.bytes_delta,
              "progress": point.progress, "phase": point.phase, "resource": point.resource}
    return {k: v for k, v in values.items() if v is not None}


def run_json(
    run: Run, lines: list[RunLogLine] | None = None,
    samples: list[RunTelemetrySample] | None = None, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A run as the contract shows it. `logEntries` and `telemetry.samples` are there when
    given (GET); PATCH answers leave them out, so that an append stays O(1). `extra`: what
    `runs_json` adds for eltPulse's clients (`pipeline`, `targetAgentToken`, …)."""
    body: dict[str, Any] = {
        "id": str(run.id),
        "pipelineId": str(run.pipeline_id),  # type: ignore[attr-defined]
        "status": eltpulse_status(run.status),
        "timedOut": run.status == RunStatus.TIMED_OUT,
        "environment": run.environment,
        "correlationId": run.correlation_id,
        "triggeredBy": run.triggered_by,
        "partitionColumn": run.partition_column,
        "partitionValue": run.partition_value,
        "targetGatewayId": _id(run.target_gateway_id),  # type: ignore[attr-defined]
        "gatewayId": _id(run.gateway_id),  # type: ignore[attr-defined]
        # eltPulse's reference stamps startedAt when a run is created: until a claim sets the
        # real start, a run's startedAt is its creation time.
        "startedAt": iso(run.started_at or run.created_at),
        "finishedAt": iso(run.finished_at),
        "deadlineAt": iso(run.deadline_at),
        "errorSummary": run.error,
        "cancel": stop_signal(run),
        "logEntriesDropped": LOGS.dropped(run.log_seq, run.log_base),
        "telemetrySamplesDropped": SAMPLES.dropped(run.sample_seq, run.sample_base),
        "createdAt": iso(run.created_at),
        "updatedAt": iso(run.updated_at),
    }
    telemetry: dict[str, Any] = {"summary": summary_of(run)}
    if lines is not None:
        body["logEntries"] = [log_json(line) for line in lines]
    if samples is not None:
        telemetry["samples"] = [sample_json(point) for point in samples]
    body["telemetry"] = telemetry
    if extra:
        body.update(extra)
    return body


def stop_signal(run: Run) -> bool:
    """`cancel`: the run was cancelled or timed out; whoever executes it must stop."""
    return RunStatus(run.status) in (RunStatus.CANCELLED, RunStatus.TIMED_OUT)


# eltPulse's `ingestionExecutor` values that runwatch's runs can have (its Runs page labels
# them "Your gateway", "App / API" and "—"). `eltpulse_managed` (eltPulse's own hosted
# workers) never applies: runwatch executes no pipeline itself.
EXECUTOR_GATEWAY, EXECUTOR_API, EXECUTOR_UNKNOWN = (
    "customer_agent", "customer_control_plane", "unspecified")


def executor_of(run: Run) -> str:
    """`ingestionExecutor`, as the reference sets it: `customer_agent` once a gateway claimed
    the run, or when it is targeted at one; `customer_control_plane` when a worker or service
    started or claimed it with its token (it reports through the API); `unspecified` while
    any gateway may take it."""
    if run.gateway_id is not None or run.target_gateway_id is not None:  # type: ignore[attr-defined]
        return EXECUTOR_GATEWAY
    return EXECUTOR_API if run.claimed_by_token_id is not None else EXECUTOR_UNKNOWN


async def runs_json(rows: list[Run], *, definitions: bool = False) -> list[dict[str, Any]]:
    """Runs with their logs and samples and what eltPulse's pages read beside them (the
    pipeline, the target gateway, the webhook's status): a fixed number of queries for the
    whole page. `definitions`: the pipeline with its definition (what a gateway runs)."""
    ids = [r.id for r in rows]
    lines = await run_series.log_lines(ids)
    samples = await run_series.telemetry_samples(ids)
    organisation = rows[0].organisation_id if rows else 0  # type: ignore[attr-defined]
    pipeline_ids = {r.pipeline_id for r in rows}  # type: ignore[attr-defined]
    by_pipeline = {p.id: p for p in await Pipeline.filter(
        id__in=pipeline_ids, organisation_id=organisation)} if pipeline_ids else {}
    target_ids = {r.target_gateway_id for r in rows} - {None}  # type: ignore[attr-defined]
    by_gateway = {g.id: g for g in await Gateway.filter(
        id__in=target_ids, organisation_id=organisation)} if target_ids else {}
    statuses = await webhooks.delivery_status_of(ids)

    def extra(run: Run) -> dict[str, Any]:
        pipeline = by_pipeline.get(run.pipeline_id)  # type: ignore[attr-defined]
        target = by_gateway.get(run.target_gateway_id)  # type: ignore[attr-defined]
        return {
            "pipeline": (pipeline_definition_json(pipeline) if definitions
                         else pipeline_ref_json(pipeline)) if pipeline else None,
            "targetAgentToken": {"id": str(target.id), "name": target.name}
            if target else None,
            "webhookStatus": statuses.get(run.id),
            "ingestionExecutor": executor_of(run),
        }

    return [run_json(r, lines[r.id], samples[r.id], extra(r)) for r in rows]


def pipeline_ref_json(p: Pipeline) -> dict[str, Any]:
    return {"id": str(p.id), "name": p.name}


def pipeline_definition_json(p: Pipeline) -> dict[str, Any]:
    """What a gateway runs: the reference's selection of pipeline fields."""
    return {**pipeline_ref_json(p),
            **{name: getattr(p, snake(name)) for name in DEFINITION_FIELDS}}


def pipeline_json(p: Pipeline) -> dict[str, Any]:
    return {
        "id": str(p.id), "name": p.name, "kind": p.kind, "description": p.description,
        "maxRuntimeSeconds": p.max_runtime_seconds,
        "connectionId": _id(p.connection_id),  # type: ignore[attr-defined]
        # eltPulse's names: the destination is the connection; runwatch keeps no sources
        "destinationConnectionId": _id(p.connection_id),  # type: ignore[attr-defined]
        "sourceConnectionId": None,
        "createdAt": iso(p.created_at),
        **{name: getattr(p, snake(name)) for name in DEFINITION_FIELDS},
        "groupName": p.group_name, "enabled": p.enabled,
        "updatedAt": iso(p.updated_at or p.created_at),
    }


def webhook_json(e: WebhookEndpoint | None, *, with_secret: bool = True) -> dict[str, Any] | None:
    """An endpoint; its signing secret only for callers that may set it (`write`)."""
    if e is None:
        return None
    return {
        "id": str(e.id), "url": e.url, "secret": e.secret if with_secret else None,
        "eventTypes": e.event_types,
        "enabled": e.enabled, "pipelineId": _id(e.pipeline_id),  # type: ignore[attr-defined]
        "createdAt": iso(e.created_at), "updatedAt": iso(e.updated_at),
    }


def gateway_json(g: Gateway) -> dict[str, Any]:
    return {"id": str(g.id), "name": g.name, "lastSeenAt": iso(g.last_seen_at),
            "version": g.version, "labels": g.labels}


# ------------------------------------------------------------------------------- requests


def _query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter, clamped to [lo, hi]; anything that is not an integer is
    ignored (the default), as eltPulse's reference does."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()) or len(raw) > 10:
        return default
    return max(lo, min(hi, int(raw)))


def _statuses(request: Request) -> list[RunStatus] | None:
    """`status=a,b`: the known statuses named; unknown ones are ignored (the reference's
    behaviour), and none known is no filter. `failed` includes the timed-out runs the wire
    shows as failed; `timed_out` alone names only those (runwatch's own)."""
    raw = request.query_params.get("status")
    if not raw:
        return None
    values = [part.strip().lower() for part in raw.split(",") if part.strip()]
    statuses = [RunStatus(v) for v in values if v in set(RunStatus)]
    if RunStatus.FAILED in statuses and RunStatus.TIMED_OUT not in statuses:
        statuses.append(RunStatus.TIMED_OUT)  # shown as failed (`eltpulse_status`)
    return statuses or None


def _filter_id(request: Request, name: str, kind: str) -> int | None:
    """An id filter: one no row can have matches nothing (an empty list)."""
    return inputs.filter_id(request.query_params.get(name), kind)


def _run_id(request: Request) -> int:
    return parse_pk(request.path_params["id"], "run")


def _pipeline_id(request: Request) -> int:
    return parse_pk(request.path_params["id"], "pipeline")


def _not_the_webhook(request: Request) -> None:
    """`/api/elt/runs/webhook` is not a run: the `{id}` route also matches it, so a method the
    webhook route lacks would land here and be a run "webhook" not found."""
    if request.path_params["id"] == "webhook":
        raise HTTPException(405, headers={"Allow": "GET, PUT"})


def routes(settings: Settings) -> list[BaseRoute]:
    ops = Operations(ELT_OPS, translate_errors)
    default_max_runtime = timedelta(seconds=settings.orphan_window_seconds)
    allow_private = settings.webhook_allow_private

    async def patch(request: Request, update: Callable[..., Awaitable[Run]]) -> Run:
        body = await json_body(request)
        change = parse_change(domain_body(body, PATCH_FIELDS), now=utcnow())
        return await update(caller=caller_of(request), run_id=_run_id(request), change=change,
                            default_max_runtime=default_max_runtime)

    # ---- /api/elt/runs

    @ops("GET", RUNS)
    async def list_runs(request: Request) -> Response:
        caller = caller_of(request)
        limit = _query_int(request, "limit", LIST_DEFAULT, 1, LIST_MAX)
        before = _filter_id(request, "before", "run")
        # before=0 (or an id no row can have, which _filter_id makes 0): an empty page
        after = encode_cursor(before) if before is not None else None
        page = await runs.list_runs(
            caller=caller, first=limit, after=after,
            pipeline_id=_filter_id(request, "pipelineId", "pipeline"), statuses=_statuses(request),
            environment=request.query_params.get("environment") or None)
        return JSONResponse({"runs": await runs_json(page.items)})

    @ops("POST", RUNS)
    async def create_run(request: Request) -> Response:
        caller = caller_of(request)
        body = await json_body(request)
        run = await elt_runs.create_run(caller=caller, new=new_run_of(body),
                                        default_max_runtime=default_max_runtime)
        return JSONResponse({"run": (await runs_json([run]))[0]}, status_code=201)

    @ops("GET", RUNS + "/{id}")
    async def get_run(request: Request) -> Response:
        caller = caller_of(request)
        run = await elt_runs.get_visible_run(caller=caller, run_id=_run_id(request))
        return JSONResponse({"run": (await runs_json([run]))[0]})

    @ops("PATCH", RUNS + "/{id}")
    async def patch_run(request: Request) -> Response:
        _not_the_webhook(request)
        return JSONResponse({"run": run_json(await patch(request, elt_runs.update_run))})

    # ---- webhook settings

    def webhook_routes(path: str, pipeline_of: Callable[[Request], int | None]) -> None:
        async def answer(caller: Caller, endpoint: WebhookEndpoint | None,
                         pipeline_id: int | None) -> dict[str, Any]:
            """The endpoint (`webhook`, its secret for `write` only) and what eltPulse's
            settings page reads: `globalUrl` and the pipelines' URLs, or one pipeline's."""
            webhook = webhook_json(endpoint, with_secret=caller.has(Scope.WRITE))
            url = endpoint.url if endpoint else None
            if pipeline_id is None:
                listed = await webhooks.pipeline_urls(caller=caller)
                return {"globalUrl": url, "url": url, "pipelines": [
                    {"id": str(p.id), "name": p.name, "webhookUrl": hook}
                    for p, hook in listed], "webhook": webhook}
            pipeline = await webhooks.settings_pipeline(caller=caller, pipeline_id=pipeline_id)
            return {"pipelineId": str(pipeline.id), "name": pipeline.name, "url": url,
                    "webhook": webhook}

        async def read(request: Request) -> Response:
            caller = caller_of(request)
            pipeline_id = pipeline_of(request)
            endpoint = await webhooks.endpoint_for(caller=caller, pipeline_id=pipeline_id)
            return JSONResponse(await answer(caller, endpoint, pipeline_id))

        async def put(request: Request) -> Response:
            caller = caller_of(request)
            pipeline_id = pipeline_of(request)
            body = await json_body(request)
            unknown = {k: ["Unknown field."] for k in body
                       if k not in {"url", "eventTypes", "enabled"}}
            if unknown:
                raise BadRequest(unknown)
            enabled = body.get("enabled")
            if enabled is not None and not isinstance(enabled, bool):
                raise BadRequest({"enabled": ["Must be true or false."]})
            # eltPulse's page clears a URL with `{"url": ""}` (or `{}`): like null, removes it
            url = body.get("url")
            if url is None or (isinstance(url, str) and not url.strip()):
                await webhooks.remove_endpoint_for(caller=caller, pipeline_id=pipeline_id)
                return JSONResponse(await answer(caller, None, pipeline_id))
            endpoint = await webhooks.set_endpoint(
                caller=caller, pipeline_id=pipeline_id, url=url,
                event_types=body.get("eventTypes"), enabled=enabled,
                allow_private=allow_private)
            return JSONResponse(await answer(caller, endpoint, pipeline_id))

        ops("GET", path)(read)
        ops("PUT", path)(put)

    webhook_routes(RUNS + "/webhook", lambda request: None)
    webhook_routes(PIPELINES + "/{id}/webhook", _pipeline_id)

    # ---- /api/elt/pipelines

    @ops("GET", PIPELINES)
    async def list_pipelines(request: Request) -> Response:
        caller = caller_of(request)
        limit = _query_int(request, "limit", LIST_DEFAULT, 1, LIST_MAX)
        page = await pipelines.list_pipelines(caller=caller, first=limit)
        return JSONResponse({"pipelines": [pipeline_json(p) for p in page.items]})

    @ops("POST", PIPELINES)
    async def create_pipeline(request: Request) -> Response:
        caller = caller_of(request)
        body = await json_body(request)
        if upsert_of(body):
            pipeline, created = await pipelines.upsert_pipeline(
                caller=caller, fields=pipeline_fields_of(body))
        else:
            pipeline = await pipelines.create_pipeline(caller=caller,
                                                       fields=pipeline_fields_of(body))
            created = True
        # `created` and 201 / 200 as the reference's upsert answers
        return JSONResponse({"pipeline": pipeline_json(pipeline), "created": created},
                            status_code=201 if created else 200)

    @ops("GET", PIPELINES + "/{id}")
    async def get_pipeline(request: Request) -> Response:
        caller = caller_of(request)
        pipeline = await pipelines.get_pipeline(caller=caller, pipeline_id=_pipeline_id(request))
        return JSONResponse({"pipeline": pipeline_json(pipeline)})

    @ops("PATCH", PIPELINES + "/{id}")
    async def patch_pipeline(request: Request) -> Response:
        caller = caller_of(request)
        body = await json_body(request)
        pipeline = await pipelines.update_pipeline(
            caller=caller, pipeline_id=_pipeline_id(request), fields=pipeline_fields_of(body))
        return JSONResponse({"pipeline": pipeline_json(pipeline)})

    # ---- /api/agent (gateways)

    @ops("GET", AGENT + "/runs")
    async def agent_list(request: Request) -> Response:
        caller = caller_of(request)
        limit = _query_int(request, "limit", AGENT_LIST_DEFAULT, 1, elt_runs.AGENT_LIST_MAX)
        rows = await elt_runs.list_gateway_runs(
            caller=caller, statuses=_statuses(request), limit=limit)
        return JSONResponse({"runs": await runs_json(rows, definitions=True)})

    @ops("GET", AGENT + "/runs/{id}")
    async def agent_get(request: Request) -> Response:
        run = await elt_runs.get_gateway_run(caller=caller_of(request), run_id=_run_id(request))
        body = (await runs_json([run], definitions=True))[0]
        return JSONResponse({"run": body, "cancel": body["cancel"]})

    @ops("PATCH", AGENT + "/runs/{id}")
    async def agent_patch(request: Request) -> Response:
        caller, run_id = caller_of(request), _run_id(request)
        body = await json_body(request)
        change = parse_change(domain_body(body, PATCH_FIELDS), now=utcnow())
        try:
            run = await elt_runs.update_gateway_run(
                caller=caller, run_id=run_id, change=change,
                default_max_runtime=default_max_runtime)
        except RunFinished as exc:
            # A cancelled or timed-out run tells its gateway to stop: 200 with `cancel: true`
            # (the gateway throws on any other status and would never see it); the lines
            # and samples it carried are kept, and an errorSummary as on any finished run
            # (set when it has none, else an error line); its status and finishedAt are not
            # applied.
            if exc.status not in STOP_STATUSES:
                raise
            summary = change.error_summary if isinstance(change.error_summary, str) else UNSET
            data = dataclasses.replace(change, status=None, finished_at=None,
                                       error_summary=summary)
            run = await (elt_runs.update_gateway_run(
                caller=caller, run_id=run_id, change=data,
                default_max_runtime=default_max_runtime) if _carries_data(data)
                else elt_runs.get_gateway_run(caller=caller, run_id=run_id))
        answer = run_json(run)
        return JSONResponse({"run": answer, "cancel": answer["cancel"]})

    @ops("GET", AGENT + "/pipelines/{id}")
    async def agent_pipeline(request: Request) -> Response:
        caller = caller_of(request)
        pipeline = await pipelines.get_gateway_pipeline(
            caller=caller, pipeline_id=_pipeline_id(request))
        # the secrets of the pipeline's connection, in clear, as the reference's detail has
        # them (the read is recorded)
        connection_id = pipeline.connection_id  # type: ignore[attr-defined]
        listed = await secrets.gateway_connections(
            caller=caller, keys=settings.secrets_keys,
            connection_id=connection_id) if connection_id is not None else []
        return JSONResponse({"pipeline": {
            **pipeline_json(pipeline), **pipeline_definition_json(pipeline),
            "secrets": listed[0][1] if listed else {}}})

    @ops("POST", AGENT + "/monitors/{id}/report")
    async def monitor_report(request: Request) -> Response:
        caller = caller_of(request)
        await json_body(request)  # any JSON object; read so that a broken body is a 400
        await gateways.report_monitor(caller=caller,
                                      monitor_id=parse_pk(request.path_params["id"], "monitor"))
        return JSONResponse({"ok": True})

    @ops("GET", ELT + "/agent-status")
    async def agent_status(request: Request) -> Response:
        organisation, rows = await gateways.gateway_status(caller=caller_of(request))
        connectors = [connector_json(g) for g in rows]
        seen = [c["heartbeat"] for c in connectors if c["heartbeat"]]
        return JSONResponse({
            "executionPlane": "customer_agent", "managedComputeReady": False,
            "hasAccountToken": False, "hasNamedConnectors": bool(connectors),
            "hasAnyToken": bool(connectors), "defaultAgentTokenId": None,
            "connectors": [],
            "organization": {"id": str(organisation.id), "name": organisation.name,
                             "defaultAgentTokenId": None, "orgGatewaysAllowed": True,
                             "connectors": connectors},
            "accountTokenHeartbeat": None,
            "heartbeat": max(seen, key=lambda h: h["seenAt"]) if seen else None,
        })

    @ops("GET", AGENT + "/connections")
    async def agent_connections(request: Request) -> Response:
        listed = await secrets.gateway_connections(caller=caller_of(request),
                                                   keys=settings.secrets_keys)
        return JSONResponse({"connections": [
            # runwatch's connections are the warehouses data is loaded into
            {"id": str(c.id), "name": c.name, "connectionType": "destination",
             "connector": c.warehouse_type, "config": c.settings, "secrets": values}
            for c, values in listed]})

    @ops("GET", AGENT + "/manifest")
    async def manifest(request: Request) -> Response:
        caller = caller_of(request)
        gateway = await gateways.current_gateway(caller=caller)
        organisation = await gateways.organisation_of(caller=caller)
        definitions = await pipelines.gateway_pipelines(caller=caller)
        poll, heartbeat = gateway_intervals(settings)
        return JSONResponse({
            "version": MANIFEST_VERSION,
            "billing": {"runsPollIntervalSeconds": poll,
                        "heartbeatIntervalSeconds": heartbeat},
            "organization": {"id": str(organisation.id), "name": organisation.name},
            "pipelines": [manifest_pipeline_json(p) for p in definitions],
            "workloads": {"monitors": []},
            "executorHints": {"mode": "gateway", "leaseSeconds": settings.gateway_lease_seconds},
            "gateway": gateway_json(gateway),
            "pollIntervalSeconds": poll,
            "heartbeatIntervalSeconds": heartbeat,
            "leaseSeconds": settings.gateway_lease_seconds,
            "serverTime": iso(utcnow()),
        })

    @ops("POST", AGENT + "/heartbeat")
    async def heartbeat(request: Request) -> Response:
        caller = caller_of(request)
        body = await json_body(request)
        unknown = {k: ["Unknown field."] for k in body if k not in {"version", "labels"}}
        if unknown:
            raise BadRequest(unknown)
        gateway = await gateways.heartbeat(
            caller=caller, version=body.get("version"), labels=body.get("labels"))
        return JSONResponse({"ok": True, "gateway": gateway_json(gateway)})

    return ops.routes()
