"""The OpenAPI 3.1 document of every REST route (`GET /openapi.json`), for clients and fuzzers.

The routes are described as data: one `Op` per method and path, with its scope, query
parameters, request body and answers, grouped by contract. Each contract words its errors its
own way (`ERRORS`): the builder gives every error status of an operation its contract's shape,
so an operation lists only its status codes. `tests/test_openapi.py` checks that the document
is valid and names exactly the routes the app serves; `tests/test_fuzz.py` sends generated
requests and checks every answer against it.

Every shim path also answers with the other trailing-slash spelling (no redirects); the
document names each path once, in its contract's spelling (the warehouse contract's with the
slash, the others' without). HEAD is answered wherever GET is and is not listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runwatch import __version__
from runwatch.models import INT32_MAX, INT64_MAX, LogLevel, RunStatus
from runwatch.resolvers.anomalies import LOOKBACK_RANGE, METRICS, MINIMUM_RANGE, Z_RANGE
from runwatch.resolvers.dateparts import DATEPARTS
from runwatch.resolvers.pagination import MAX_PAGE_SIZE
from runwatch.resolvers.runs import MAX_COUNT
from runwatch.resolvers.webhooks import EVENT_TYPES
from runwatch.rest_shim.common import Handler
from runwatch.settings import Settings

Schema = dict[str, Any]

# ------------------------------------------------------------------------- schema helpers


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: tuple[str, ...] | str = "all",
        *, extra: bool = False) -> Schema:
    """An object; `required="all"` (answers) requires every property; `extra` allows others."""
    names = list(properties) if required == "all" else list(required)
    schema: Schema = {"type": "object", "properties": properties,
                      "additionalProperties": extra}
    if names:
        schema["required"] = names
    return schema


def array(items: Schema, **limits: int) -> Schema:
    return {"type": "array", "items": items, **limits}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY_OBJECT: Schema = {"type": "object"}
TIME: Schema = {"type": "string", "format": "date-time"}
TIME_OR_NULL = nullable(TIME)
STR_OR_NULL = nullable(STR)
INT_OR_NULL = nullable(INT)
COUNT: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}
ID_TEXT: Schema = {"type": "string", "pattern": "^[0-9]+$"}  # the ELT contract's ids
ID_TEXT_OR_NULL = nullable(ID_TEXT)
DATEPART: Schema = {"type": "string", "enum": list(DATEPARTS)}
MESSAGES: Schema = array(STR)
RUN_STATUS: Schema = {"type": "string", "enum": [s.value for s in RunStatus]}
# eltPulse's five: a timed-out run is `failed` on that wire (`timedOut: true`).
ELT_RUN_STATUS: Schema = {"type": "string", "enum": [
    s.value for s in RunStatus if s != RunStatus.TIMED_OUT]}
WATERMARK: Schema = {"anyOf": [{"type": "string", "maxLength": 50}, INT]}

# ------------------------------------------------------------------------- error shapes

DRF_DETAIL = obj({"detail": STR})
DRF_FIELD_ERRORS: Schema = {"type": "object", "minProperties": 1,
                            "additionalProperties": MESSAGES}
ELT_ERROR = obj({"error": STR, "cancel": BOOL}, ("error",))
ELT_FIELD_ERRORS = obj({"error": {"anyOf": [STR, {"type": "object", "minProperties": 1,
                                                  "additionalProperties": MESSAGES}]}})
WATCHER_DETAIL = obj({"detail": STR})
WATCHER_422 = obj({"detail": array(obj({
    "loc": array({"anyOf": [STR, INT]}), "msg": STR, "type": STR}), minItems=1)})

# Answered in the contract's shape by the limits middleware (`runwatch.limits`) before any
# handler: 413 to any operation with a request body, 429 to any that needs a token; and by
# `runwatch.faults` when the database cannot be used (503, to any that needs a token).
TOO_LARGE = "Request body too large (`RUNWATCH_MAX_BODY_BYTES`)."
RATE_LIMITED = "Rate limit of the token (or client) exceeded; see `Retry-After`."
UNAVAILABLE = "The database is unavailable; retry after `Retry-After` seconds."

# Per contract: error status -> (description, schema name).
ERRORS: dict[str, dict[int, tuple[str, str]]] = {
    "warehouse": {
        400: ("Invalid input: `{field: [messages]}`, `{\"detail\": \"JSON parse error - …\"}` "
              "or `{\"non_field_errors\": [...]}`.", "DrfBadRequest"),
        401: ("No valid token.", "DrfDetail"),
        403: ("The token lacks the route's scope.", "DrfDetail"),
        404: ("No such object for this organisation (or not the token's organisation).",
              "DrfDetail"),
        409: ("Contradicts what is recorded.", "DrfDetail"),
        413: (TOO_LARGE, "DrfDetail"),
        429: (RATE_LIMITED, "DrfDetail"),
        503: (UNAVAILABLE, "DrfDetail"),
    },
    "elt": {
        400: ("Invalid input: `{\"error\": \"…\"}` or `{\"error\": {field: [messages]}}`.",
              "EltBadRequest"),
        401: ("No valid token.", "EltError"),
        403: ("The token lacks the route's scope (or is not a gateway's, on /api/agent/).",
              "EltError"),
        404: ("No such object for this caller.", "EltError"),
        409: ("Conflicts with the run's state; `cancel: true` when the run was cancelled.",
              "EltError"),
        413: (TOO_LARGE, "EltError"),
        429: (RATE_LIMITED, "EltError"),
        503: (UNAVAILABLE, "EltError"),
    },
    "watcher": {
        400: ("Values that contradict each other or what is stored.", "WatcherDetail"),
        401: ("No valid token.", "WatcherDetail"),
        403: ("The token lacks the route's scope.", "WatcherDetail"),
        404: ("No such object for this organisation.", "WatcherDetail"),
        409: ("Contradicts what is recorded.", "WatcherDetail"),
        422: ("Validation error (also an unparsable body or a path id that is not an integer).",
              "WatcherValidationError"),
        413: (TOO_LARGE, "WatcherDetail"),
        429: (RATE_LIMITED, "WatcherDetail"),
        503: (UNAVAILABLE, "WatcherDetail"),
    },
    "openlineage": {
        400: ("Unreadable JSON: `{\"code\": 400, \"message\"}` (Marquez's shape).",
              "MarquezError"),
        401: ("No valid token.", "MarquezError"),
        403: ("The token lacks the route's scope.", "MarquezError"),
        404: ("No such job or dataset for this organisation.", "MarquezError"),
        409: ("A different end for a finished run.", "MarquezError"),
        422: ("An event that fails validation: `{\"errors\": [...]}`.", "MarquezErrors"),
        413: (TOO_LARGE, "MarquezError"),
        429: (RATE_LIMITED, "MarquezError"),
        503: (UNAVAILABLE, "MarquezError"),
    },
}

# ------------------------------------------------------------------------- answer shapes

COUNTS = obj({"evaluations": INT, "custom_events": INT, "total": INT})

LOG_LINE = obj({"at": TIME, "level": {"type": "string", "enum": [lv.value for lv in LogLevel]},
                "message": STR})
SAMPLE = obj({"at": TIME, "rows": INT, "bytes": INT, "rowsDelta": INT, "bytesDelta": INT,
              "progress": NUM, "phase": STR, "resource": STR}, ("at",))

WATCHER_TYPE_FIELDS: dict[str, Schema] = {
    "freshness_number": INT_OR_NULL, "freshness_datepart": STR_OR_NULL,
    "mute_freshness_check": BOOL,
    "timeliness_number": INT_OR_NULL, "timeliness_datepart": STR_OR_NULL,
    "mute_timeliness_check": BOOL,
}
EXECUTION_FIELDS: dict[str, Schema] = {
    "id": INT, "parent_id": INT_OR_NULL, "pipeline_id": INT,
    "start_date": TIME_OR_NULL, "end_date": TIME_OR_NULL, "duration_seconds": INT_OR_NULL,
    "completed_successfully": nullable(BOOL),
    "inserts": INT_OR_NULL, "updates": INT_OR_NULL, "soft_deletes": INT_OR_NULL,
    "total_rows": INT_OR_NULL, "watermark": STR_OR_NULL, "next_watermark": STR_OR_NULL,
    "execution_metadata": nullable(ANY_OBJECT), "anomaly_flags": nullable(ANY_OBJECT),
    "throughput": nullable(NUM), "hour_recorded": INT_OR_NULL,
    "date_recorded": nullable({"type": "string", "format": "date"}), "status": RUN_STATUS,
}


# An ELT pipeline as the REST contract shows it (eltPulse's definition fields included).
ELT_PIPELINE_FIELDS: dict[str, Schema] = {
    "id": ID_TEXT, "name": STR, "kind": STR, "description": STR_OR_NULL,
    "maxRuntimeSeconds": INT_OR_NULL, "connectionId": ID_TEXT_OR_NULL,
    "destinationConnectionId": ID_TEXT_OR_NULL, "sourceConnectionId": {"type": "null"},
    "createdAt": TIME, "tool": STR_OR_NULL, "sourceType": STR_OR_NULL,
    "destinationType": STR_OR_NULL,
    "sourceConfiguration": nullable(ANY_OBJECT), "pipelineCode": STR_OR_NULL,
    "configYaml": STR_OR_NULL, "workspaceYaml": STR_OR_NULL, "groupName": STR_OR_NULL,
    "enabled": BOOL, "updatedAt": TIME,
}

SCHEMAS: dict[str, Schema] = {
    # errors
    "DrfDetail": DRF_DETAIL,
    "DrfBadRequest": {"anyOf": [DRF_DETAIL, DRF_FIELD_ERRORS]},
    "EltError": ELT_ERROR,
    "EltBadRequest": ELT_FIELD_ERRORS,
    "WatcherDetail": WATCHER_DETAIL,
    "WatcherValidationError": WATCHER_422,
    # warehouse
    "Connection": obj({"id": INT, "name": STR, "type": STR, "created_at": TIME,
                       "updated_at": TIME}, extra=True),
    "ConnectionPage": obj({"next": STR_OR_NULL, "results": array(ref("Connection"))}),
    "StartedRun": obj({"run_id": INT, "started_at": TIME}),
    "Telemetry": obj({
        "status": {"type": "string", "enum": ["active", "degraded", "idle", "error"]},
        "last_delivery_at": TIME_OR_NULL,
        "events_last_24h": COUNTS, "events_last_7d": COUNTS,
        "failed_deliveries_last_24h": INT,
        "recent_errors": array(obj({"occurred_at": TIME, "message": STR, "run_id": INT})),
    }),
    # ELT
    "Run": obj({
        "id": ID_TEXT, "pipelineId": ID_TEXT, "status": ELT_RUN_STATUS, "timedOut": BOOL,
        "environment": STR,
        "correlationId": STR_OR_NULL, "triggeredBy": STR_OR_NULL,
        "partitionColumn": STR_OR_NULL, "partitionValue": STR_OR_NULL,
        "targetGatewayId": ID_TEXT_OR_NULL, "gatewayId": ID_TEXT_OR_NULL,
        "startedAt": TIME_OR_NULL, "finishedAt": TIME_OR_NULL, "deadlineAt": TIME_OR_NULL,
        "errorSummary": STR_OR_NULL, "cancel": BOOL,
        "logEntriesDropped": INT, "telemetrySamplesDropped": INT,
        "createdAt": TIME, "updatedAt": TIME,
        "logEntries": array(LOG_LINE),
        "telemetry": obj({"summary": ANY_OBJECT, "samples": array(SAMPLE)}, ("summary",)),
        # read by eltPulse's pages and gateways (GET and POST answers; not PATCH answers)
        "pipeline": nullable(obj({"id": ID_TEXT, "name": STR, **{
            name: STR_OR_NULL for name in ("tool", "sourceType", "destinationType",
                                           "pipelineCode", "configYaml", "workspaceYaml")},
            "sourceConfiguration": nullable(ANY_OBJECT)}, ("id", "name"))),
        "targetAgentToken": nullable(obj({"id": ID_TEXT, "name": STR})),
        "webhookStatus": nullable({"type": "string",
                                   "enum": ["pending", "delivered", "failed"]}),
        "ingestionExecutor": {"type": "string", "enum": [
            "customer_agent", "customer_control_plane", "unspecified"]},
    }, ("id", "pipelineId", "status", "timedOut", "environment", "correlationId", "triggeredBy",
        "partitionColumn", "partitionValue", "targetGatewayId", "gatewayId", "startedAt",
        "finishedAt", "deadlineAt", "errorSummary", "cancel", "logEntriesDropped",
        "telemetrySamplesDropped", "createdAt", "updatedAt", "telemetry")),
    "EltPipeline": obj(ELT_PIPELINE_FIELDS),
    "Webhook": obj({
        "id": ID_TEXT, "url": STR, "secret": STR_OR_NULL,
        "eventTypes": array({"type": "string", "enum": list(EVENT_TYPES)}),
        "enabled": BOOL, "pipelineId": ID_TEXT_OR_NULL, "createdAt": TIME, "updatedAt": TIME,
    }),
    "Gateway": obj({
        "id": ID_TEXT, "name": STR, "lastSeenAt": TIME_OR_NULL, "version": STR_OR_NULL,
        "labels": {"anyOf": [ANY_OBJECT, array(STR), {"type": "null"}]},
    }),
    # Watcher
    "WatcherPipeline": obj({
        "id": INT, "name": STR, "pipeline_type_id": INT_OR_NULL,
        "watermark": STR_OR_NULL, "next_watermark": STR_OR_NULL,
        "pipeline_metadata": nullable(ANY_OBJECT),
        "last_target_insert": TIME_OR_NULL, "last_target_update": TIME_OR_NULL,
        "last_target_soft_delete": TIME_OR_NULL,
        **WATCHER_TYPE_FIELDS,
        "load_lineage": BOOL, "active": BOOL, "created_at": TIME, "updated_at": TIME_OR_NULL,
    }),
    "PipelineType": obj({"id": INT, "name": STR, **WATCHER_TYPE_FIELDS, "created_at": TIME,
                         "updated_at": TIME_OR_NULL}),
    "Execution": obj({**EXECUTION_FIELDS,
                      "child_executions": array(ref("Execution"))}),
    "Address": obj({
        "id": INT, "name": STR, "address_type_id": INT, "namespace": STR_OR_NULL,
        "database_name": STR_OR_NULL, "schema_name": STR_OR_NULL, "table_name": STR_OR_NULL,
        "primary_key": STR_OR_NULL, "address_metadata": nullable(ANY_OBJECT),
        "created_at": TIME, "updated_at": TIME_OR_NULL,
    }),
    "AddressType": obj({"id": INT, "name": STR, "group_name": STR, "created_at": TIME,
                        "updated_at": TIME_OR_NULL}),
    "AnomalyRule": obj({
        "id": INT, "pipeline_id": INT, "metric_field": STR, "z_threshold": NUM,
        "lookback_days": INT, "minimum_executions": INT, "active": BOOL,
        "created_at": TIME, "updated_at": TIME_OR_NULL,
    }),
    "Id": obj({"id": INT}),
}

# ------------------------------------------------------------------------- request bodies

NOT_BLANK = r"\S"
NAME_150: Schema = {"type": "string", "minLength": 1, "maxLength": 150, "pattern": NOT_BLANK}
NAME_200: Schema = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK}
TEXT_50: Schema = {"type": "string", "minLength": 1, "maxLength": 50, "pattern": NOT_BLANK}
POSITIVE: Schema = {"type": "integer", "minimum": 1, "maximum": INT32_MAX}
WATCHER_ID: Schema = POSITIVE
WAREHOUSE_TYPE: Schema = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,49}$",
                          "description": "A lower-case identifier: snowflake, bigquery, …"}
CHECK_SETTINGS: dict[str, Schema] = {
    "freshness_number": POSITIVE, "freshness_datepart": DATEPART,
    "timeliness_number": POSITIVE, "timeliness_datepart": DATEPART,
}
MUTES: dict[str, Schema] = {"mute_freshness_check": BOOL, "mute_timeliness_check": BOOL}
ADDRESS_COLUMNS: dict[str, Schema] = {
    "database_name": TEXT_50, "schema_name": TEXT_50, "table_name": TEXT_50,
    "primary_key": TEXT_50, "address_metadata": ANY_OBJECT, "namespace": STR,
}
ADDRESS_REF = obj({"name": NAME_150, "address_type_name": NAME_150,
                   "address_type_group_name": NAME_150},
                  ("name", "address_type_name", "address_type_group_name"), extra=True)
RULE_SETTINGS: dict[str, Schema] = {
    "metric_field": {"type": "string", "enum": list(METRICS)},
    "z_threshold": {"type": "number", "minimum": Z_RANGE[0], "maximum": Z_RANGE[1]},
    "lookback_days": {"type": "integer", "minimum": LOOKBACK_RANGE[0],
                      "maximum": LOOKBACK_RANGE[1]},
    "minimum_executions": {"type": "integer", "minimum": MINIMUM_RANGE[0],
                           "maximum": MINIMUM_RANGE[1]},
    "active": BOOL,
}
SETTING_VALUE: Schema = {"type": ["string", "integer", "boolean", "null"]}
LOG_LEVEL: Schema = {"type": "string", "enum": ["info", "warn", "warning", "error"]}
APPEND_LOG = obj({"level": LOG_LEVEL, "message": STR}, ("message",))  # the server stamps `at`
LOG_INPUT = obj({"at": TIME, "level": LOG_LEVEL, "message": STR}, ("message",))
SAMPLE_INPUT = obj({"at": TIME, "rows": COUNT, "bytes": COUNT, "rowsDelta": COUNT,
                    "bytesDelta": COUNT, "progress": {"type": "number", "minimum": 0,
                                                      "maximum": 100},
                    "phase": STR, "resource": STR}, ())
RUN_CHANGE = obj({
    "status": {"type": "string", "enum": ["running", "succeeded", "failed", "cancelled"]},
    "appendLog": APPEND_LOG, "logEntries": array(LOG_INPUT, maxItems=500),
    "errorSummary": STR_OR_NULL, "finishedAt": TIME,
    "telemetrySummary": obj({
        "rowsLoaded": nullable(COUNT), "bytesLoaded": nullable(COUNT),
        "progress": nullable({"type": "number", "minimum": 0, "maximum": 100}),
        "currentPhase": STR_OR_NULL, "currentResource": STR_OR_NULL}, ()),
    "appendTelemetrySample": SAMPLE_INPUT,
    "telemetrySamples": array(SAMPLE_INPUT, maxItems=2000),
}, ())
WEBHOOK_INPUT = obj({
    "url": nullable({"anyOf": [{"type": "string", "format": "uri"}, {"const": ""}]}),
    "eventTypes": array({"type": "string", "enum": list(EVENT_TYPES)}, minItems=1),
    "enabled": BOOL,
}, ())
ELT_PIPELINE_INPUT: dict[str, Schema] = {
    "name": NAME_200, "description": nullable({"type": "string", "maxLength": 4000}),
    "maxRuntimeSeconds": nullable({"type": "integer", "minimum": 60, "maximum": INT32_MAX}),
    "connectionId": ID_TEXT_OR_NULL,
    "destinationConnectionId": {**ID_TEXT_OR_NULL, "description":
                                "eltPulse's name of `connectionId`; its connector must be the "
                                "`destinationType`."},
    "sourceConnectionId": {"type": "null", "description": "runwatch keeps no source "
                           "connections: only null is accepted."},
    "tool": nullable({"type": "string", "maxLength": 50, "description":
                      "`auto` takes the tool of the code sent: `dlt` for `pipelineCode`, "
                      "`sling` for `configYaml`; without code it is refused (runwatch "
                      "generates no pipeline code)."}),
    "sourceType": nullable({"type": "string", "maxLength": 100}),
    "destinationType": nullable({"type": "string", "maxLength": 100}),
    "sourceConfiguration": nullable({**ANY_OBJECT, "description":
                                     "Non-secret settings, at most 64 KiB of JSON."}),
    "pipelineCode": nullable({"type": "string", "maxLength": 262_144}),
    "configYaml": nullable({"type": "string", "maxLength": 262_144}),
    "workspaceYaml": nullable({"type": "string", "maxLength": 262_144}),
    "groupName": nullable({"type": "string", "maxLength": 200}),
    "enabled": BOOL,
}

# ------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Op:
    """One method of one path. `answers`: success status -> body schema (None: no body);
    `errors`: the error statuses, shaped by the contract; `scope`: the token it needs (None:
    public)."""

    method: str
    path: str
    summary: str
    answers: dict[int, Schema | None]
    errors: tuple[int, ...] = ()
    scope: str | None = "read"
    body: Schema | None = None
    body_required: bool = False
    query: dict[str, Schema] = field(default_factory=dict)
    description: str = ""


WAREHOUSE = "/api/v1/organisations/{organisation_pk}/integrations/warehouse-connections"
ONE = WAREHOUSE + "/{id}/"
WAREHOUSE_OPS = (
    Op("GET", WAREHOUSE + "/", "List connections, oldest first",
       {200: ref("ConnectionPage")}, (400, 401, 403, 404),
       query={"limit": {"type": "integer", "minimum": 0,
                        "description": f"Page size (default 100, at most {MAX_PAGE_SIZE})."},
              "cursor": {"type": "string", "description": "From the previous page's `next`."}}),
    Op("POST", WAREHOUSE + "/", "Create a connection (and its delivery pipeline)",
       {201: ref("Connection")}, (400, 401, 403, 404), "write",
       obj({"name": NAME_200, "type": WAREHOUSE_TYPE}, ("name", "type"), extra=True), True,
       description="Every key but `name` and `type` is a non-secret setting."),
    Op("GET", ONE, "Get a connection", {200: ref("Connection")}, (401, 403, 404)),
    Op("PATCH", ONE, "Change a connection's name, type or settings (merged; null removes)",
       {200: ref("Connection")}, (400, 401, 403, 404), "write",
       obj({"name": NAME_200, "type": WAREHOUSE_TYPE}, (), extra=True)),
    Op("POST", ONE + "metrics/", "Pre-create a running run", {201: ref("StartedRun")},
       (400, 401, 403, 404), "report", obj({"started_at": TIME}, ())),
    Op("PATCH", ONE + "metrics/{run_id}/", "Report a run's outcome", {204: None},
       (400, 401, 403, 404, 409), "report",
       obj({"completed_at": TIME, "events_delivered": COUNT, "batches_dlq": COUNT,
            "error": STR_OR_NULL, "evaluations": COUNT, "custom_events": COUNT},
           ("completed_at", "events_delivered")), True),
    Op("GET", ONE + "telemetry/", "A connection's delivery telemetry",
       {200: ref("Telemetry")}, (401, 403, 404)),
)

ELT = "/api/elt"
RUNS = "/api/elt/runs"
PIPELINES = "/api/elt/pipelines"
AGENT = "/api/agent"
LIST_LIMIT: Schema = {"type": "integer", "description": "Clamped to 1..200 (default 50)."}
STATUSES: Schema = {"type": "string", "description": "Comma-separated run statuses."}


def envelope(name: str, schema: Schema, **more: Schema) -> Schema:
    return obj({name: schema, **more})


HEARTBEAT = obj({"seenAt": TIME, "version": STR,
                 "labels": {"type": "object", "additionalProperties": STR}, "source": STR})
CONNECTOR = obj({"id": ID_TEXT, "name": STR, "metadata": {"type": "null"},
                 "heartbeat": nullable(HEARTBEAT), "createdAt": TIME})
# eltPulse's webhook settings page reads `globalUrl` (or `url`) and the pipelines' URLs.
DEFAULT_WEBHOOK = obj({
    "globalUrl": STR_OR_NULL, "url": STR_OR_NULL,
    "pipelines": array(obj({"id": ID_TEXT, "name": STR, "webhookUrl": STR_OR_NULL})),
    "webhook": nullable(ref("Webhook"))})
PIPELINE_WEBHOOK = obj({"pipelineId": ID_TEXT, "name": STR, "url": STR_OR_NULL,
                        "webhook": nullable(ref("Webhook"))})

ELT_OPS = (
    Op("GET", RUNS, "List runs, newest first", {200: envelope("runs", array(ref("Run")))},
       (400, 401, 403),
       query={"limit": LIST_LIMIT, "pipelineId": STR, "status": STATUSES, "environment": STR,
              "before": {"type": "string", "description": "A run id: the next page."}}),
    Op("POST", RUNS, "Create a run (running: its creator runs it; or pending, for a gateway)",
       {201: envelope("run", ref("Run"))}, (400, 401, 403, 404, 409), "write",
       obj({"pipelineId": ID_TEXT, "environment": {"type": "string", "maxLength": 100},
            "correlationId": {"type": "string", "maxLength": 200},
            "triggeredBy": {"type": "string", "maxLength": 256},
            "partitionColumn": {"type": "string", "maxLength": 256},
            "partitionValue": {"type": "string", "maxLength": 2048},
            "targetGatewayId": ID_TEXT_OR_NULL,
            "targetAgentTokenId": {**ID_TEXT_OR_NULL,
                                   "description": "eltPulse's name of `targetGatewayId`."},
            "status": {"type": "string", "enum": ["pending", "running"], "default": "running",
                       "description": "Without it the run is created running (the "
                       "reference's default); `pending` queues it for a gateway."}},
           ("pipelineId",)),
       True),
    Op("GET", RUNS + "/{id}", "A run with its logs and samples",
       {200: envelope("run", ref("Run"))}, (401, 403, 404)),
    Op("PATCH", RUNS + "/{id}", "Change a run: status, logs, telemetry (one transaction)",
       {200: envelope("run", ref("Run"))}, (400, 401, 403, 404, 409), "write", RUN_CHANGE,
       description="The answer leaves out `logEntries` and `telemetry.samples`."),
    Op("GET", RUNS + "/webhook", "The organisation's default webhook endpoint",
       {200: DEFAULT_WEBHOOK}, (401, 403), "viewer",
       description="`secret` is null unless the token has `write`."),
    Op("PUT", RUNS + "/webhook", "Set (or with `url` null, empty or absent remove) the "
       "default endpoint", {200: DEFAULT_WEBHOOK}, (400, 401, 403), "write",
       WEBHOOK_INPUT, True),
    Op("GET", PIPELINES, "List pipelines",
       {200: envelope("pipelines", array(ref("EltPipeline")))}, (400, 401, 403),
       query={"limit": LIST_LIMIT}),
    Op("POST", PIPELINES, "Create a pipeline (names are unique per organisation)",
       {201: envelope("pipeline", ref("EltPipeline"), created=BOOL),
        200: envelope("pipeline", ref("EltPipeline"), created=BOOL)},
       (400, 401, 403, 404, 409), "write",
       obj({**ELT_PIPELINE_INPUT, "upsert": {
           "type": "boolean", "description": "Update the ELT pipeline of the same name "
           "(the fields sent) instead of a 409: 200 with `created: false`."}}, ("name",)),
       True),
    Op("GET", PIPELINES + "/{id}", "A pipeline",
       {200: envelope("pipeline", ref("EltPipeline"))}, (401, 403, 404)),
    Op("PATCH", PIPELINES + "/{id}", "Change a pipeline",
       {200: envelope("pipeline", ref("EltPipeline"))}, (400, 401, 403, 404, 409), "write",
       obj(ELT_PIPELINE_INPUT, ())),
    Op("GET", PIPELINES + "/{id}/webhook", "A pipeline's own webhook endpoint",
       {200: PIPELINE_WEBHOOK}, (401, 403, 404), "viewer",
       description="`secret` is null unless the token has `write`."),
    Op("PUT", PIPELINES + "/{id}/webhook", "Set (or remove) a pipeline's endpoint",
       {200: PIPELINE_WEBHOOK}, (400, 401, 403, 404), "write",
       WEBHOOK_INPUT, True),
    Op("GET", AGENT + "/runs", "Runs this gateway may take, oldest first",
       {200: envelope("runs", array(ref("Run")))}, (400, 401, 403), "gateway",
       query={"status": STATUSES, "limit": {"type": "integer",
                                            "description": "Clamped to 1..20 (default 5)."}},
       description="Each run embeds its pipeline's definition (what the gateway runs)."),
    Op("GET", AGENT + "/runs/{id}", "A run, with `cancel`",
       {200: envelope("run", ref("Run"), cancel=BOOL)}, (401, 403, 404), "gateway"),
    Op("PATCH", AGENT + "/runs/{id}", "Claim (`status: running`) or change a run",
       {200: envelope("run", ref("Run"), cancel=BOOL)}, (400, 401, 403, 404, 409), "gateway",
       RUN_CHANGE,
       description="A claim is `pending -> running` only: `status: running` on a run that is "
       "no longer pending is 409 `Already claimed by another gateway` for every gateway, its "
       "claimant included (replicas share one token: exactly one of them runs it). A "
       "cancelled or timed-out run answers 200 with `cancel: true`."),
    Op("GET", AGENT + "/pipelines/{id}", "A pipeline's definition, for a gateway",
       {200: envelope("pipeline", obj({
           **ELT_PIPELINE_FIELDS, "secrets": {"type": "object", "additionalProperties": STR}}))},
       (401, 403, 404), "gateway",
       description="With `secrets`: its connection's secret values in clear (the read is "
       "recorded)."),
    Op("POST", AGENT + "/monitors/{id}/report", "A monitor's report (runwatch runs no "
       "monitors: every id is not found)", {200: obj({"ok": BOOL})}, (400, 401, 403, 404),
       "gateway", ANY_OBJECT, True),
    Op("GET", ELT + "/agent-status", "The organisation's gateways and their heartbeats, as "
       "eltPulse's gateway page reads them", {200: obj({
           "executionPlane": STR, "managedComputeReady": BOOL, "hasAccountToken": BOOL,
           "hasNamedConnectors": BOOL, "hasAnyToken": BOOL,
           "defaultAgentTokenId": ID_TEXT_OR_NULL, "connectors": array(CONNECTOR),
           "organization": obj({"id": ID_TEXT, "name": STR,
                                "defaultAgentTokenId": ID_TEXT_OR_NULL,
                                "orgGatewaysAllowed": BOOL, "connectors": array(CONNECTOR)}),
           "accountTokenHeartbeat": {"type": "null"},
           "heartbeat": nullable(HEARTBEAT)})}, (401, 403)),
    Op("GET", AGENT + "/connections", "The organisation's connections with their secrets",
       {200: obj({"connections": array(obj({
           "id": ID_TEXT, "name": STR, "connectionType": STR, "connector": STR,
           "config": ANY_OBJECT,
           "secrets": {"type": "object", "additionalProperties": STR}}))})},
       (401, 403), "gateway",
       description="Secret values in clear, for the gateway's jobs; every read is recorded."),
    Op("GET", AGENT + "/manifest", "What the gateway should do, and the server's time",
       {200: obj({"version": INT,
                  "billing": obj({"runsPollIntervalSeconds": INT,
                                  "heartbeatIntervalSeconds": INT}),
                  "organization": obj({"id": ID_TEXT, "name": STR}),
                  "pipelines": array(obj({
                      "id": ID_TEXT, "name": STR, "tool": STR_OR_NULL, "enabled": BOOL,
                      "sourceType": STR_OR_NULL, "destinationType": STR_OR_NULL,
                      "groupName": STR_OR_NULL, "updatedAt": TIME})),
                  "workloads": obj({"monitors": array(ANY_OBJECT)}),
                  "executorHints": ANY_OBJECT,
                  "gateway": ref("Gateway"), "pollIntervalSeconds": INT,
                  "heartbeatIntervalSeconds": INT, "leaseSeconds": INT, "serverTime": TIME})},
       (401, 403), "gateway"),
    Op("POST", AGENT + "/heartbeat", "Record that the gateway is alive",
       {200: obj({"ok": {"const": True}, "gateway": ref("Gateway")})}, (400, 401, 403),
       "gateway", obj({"version": {"type": "string", "maxLength": 100},
                       "labels": {"anyOf": [{"type": "object",
                                             "additionalProperties": STR}, array(STR)]}}, ())),
)

FOUND_OR_CREATED = "200 when found (nothing changes), 201 when created."


def watcher_ops(prefix: str) -> tuple[Op, ...]:
    def p(path: str) -> str:
        return prefix + path

    write = "writer"  # `report` or `write`
    return (
        Op("POST", p("/pipeline"), "Get or create a pipeline by name",
           {200: ref("WatcherPipelineCreated"), 201: ref("WatcherPipelineCreated")},
           (401, 403, 422), write,
           obj({"name": NAME_150, "pipeline_type_name": NAME_150,
                "next_watermark": nullable(WATERMARK),
                "pipeline_metadata": ANY_OBJECT, **CHECK_SETTINGS},
               ("name", "pipeline_type_name"), extra=True), True,
           description="200 when found (`next_watermark` is stored when sent with a value, "
                       "null stores nothing; the definition fields sent update it when they "
                       "changed), 201 when created. `watermark`: the stored one when a "
                       "`next_watermark` was sent to a found pipeline, else null."),
        Op("GET", p("/pipeline"), "List pipelines", {200: array(ref("WatcherPipeline"))},
           (401, 403)),
        Op("PATCH", p("/pipeline"), "Change a pipeline (found by `id`, else by `name`)",
           {200: ref("WatcherPipeline")}, (400, 401, 403, 404, 422), write,
           obj({"id": WATCHER_ID, "name": NAME_150, "pipeline_type_id": WATCHER_ID,
                "watermark": WATERMARK, "next_watermark": WATERMARK,
                "pipeline_metadata": ANY_OBJECT, **CHECK_SETTINGS, **MUTES,
                "load_lineage": BOOL, "active": BOOL}, (), extra=True), True),
        Op("GET", p("/pipeline/{pipeline_id}"), "A pipeline", {200: ref("WatcherPipeline")},
           (401, 403, 404, 422)),
        Op("POST", p("/pipeline_type"), "Get or create a pipeline type",
           {200: ref("Id"), 201: ref("Id")}, (401, 403, 422), write,
           obj({"name": NAME_150, **CHECK_SETTINGS, **MUTES}, ("name",), extra=True), True,
           description=FOUND_OR_CREATED),
        Op("PATCH", p("/pipeline_type"), "Change a pipeline type (found by `id`, else by "
           "`name`): its check settings and mute flags",
           {200: ref("PipelineType")}, (400, 401, 403, 404, 422), write,
           obj({"id": WATCHER_ID, "name": NAME_150, **CHECK_SETTINGS, **MUTES}, (),
               extra=True), True),
        Op("GET", p("/pipeline_type"), "List pipeline types",
           {200: array(ref("PipelineType"))}, (401, 403)),
        Op("GET", p("/pipeline_type/{pipeline_type_id}"), "A pipeline type",
           {200: ref("PipelineType")}, (401, 403, 404, 422)),
        Op("POST", p("/start_pipeline_execution"), "Start an execution", {201: ref("Id")},
           (401, 403, 404, 422), write,
           obj({"pipeline_id": WATCHER_ID, "start_date": TIME, "watermark": WATERMARK,
                "next_watermark": WATERMARK, "parent_id": {"type": "integer", "minimum": 1}},
               ("pipeline_id",), extra=True), True),
        Op("POST", p("/end_pipeline_execution"), "End an execution", {204: None},
           (400, 401, 403, 404, 409, 422), write,
           obj({"id": {"type": "integer", "minimum": 1}, "end_date": TIME,
                "completed_successfully": BOOL, "total_rows": COUNT, "inserts": COUNT,
                "updates": COUNT, "soft_deletes": COUNT, "execution_metadata": ANY_OBJECT},
               ("id", "end_date", "completed_successfully"), extra=True), True,
           description="400 when `end_date` is not after the start; replaying the same end "
                       "is a no-op, a different end of an ended execution 409."),
        Op("GET", p("/pipeline_execution/{pipeline_execution_id}"),
           "An execution with its children at any depth", {200: ref("Execution")},
           (401, 403, 404, 422)),
        Op("POST", p("/address"), "Get or create an address (an upsert)",
           {200: ref("Id"), 201: ref("Id")}, (401, 403, 422), write,
           obj({"name": NAME_150, "address_type_name": NAME_150,
                "address_type_group_name": NAME_150, **ADDRESS_COLUMNS},
               ("name", "address_type_name", "address_type_group_name"), extra=True), True,
           description="200 when found (the fields sent that changed are updated, a new "
                       "type is created, `updated_at` is set), 201 when created."),
        Op("GET", p("/address"), "List addresses", {200: array(ref("Address"))}, (401, 403)),
        Op("PATCH", p("/address"), "Change an address (found by `id`, else by `name`)",
           {200: ref("Address")}, (400, 401, 403, 404, 422), write,
           obj({"id": WATCHER_ID, "name": NAME_150, "address_type_id": WATCHER_ID,
                **ADDRESS_COLUMNS}, (), extra=True), True),
        Op("GET", p("/address/{address_id}"), "An address", {200: ref("Address")},
           (401, 403, 404, 422)),
        Op("POST", p("/address_type"), "Get or create an address type",
           {200: ref("Id"), 201: ref("Id")}, (401, 403, 422), write,
           obj({"name": NAME_150, "group_name": NAME_150}, ("name", "group_name"),
               extra=True), True, description=FOUND_OR_CREATED),
        Op("PATCH", p("/address_type"), "Change an address type (found by `id`, else by "
           "`name`)", {200: ref("AddressType")}, (400, 401, 403, 404, 422), write,
           obj({"id": WATCHER_ID, "name": NAME_150, "group_name": NAME_150}, (), extra=True),
           True),
        Op("GET", p("/address_type"), "List address types",
           {200: array(ref("AddressType"))}, (401, 403)),
        Op("GET", p("/address_type/{address_type_id}"), "An address type",
           {200: ref("AddressType")}, (401, 403, 404, 422)),
        Op("POST", p("/address_lineage"), "Replace a pipeline's lineage edges",
           {200: ref("Lineage"), 201: ref("Lineage")}, (401, 403, 404, 422), write,
           obj({"pipeline_id": WATCHER_ID, "source_addresses": array(ADDRESS_REF),
                "target_addresses": array(ADDRESS_REF)}, ("pipeline_id",), extra=True), True,
           description="201 with the number of edges; 200 with 0 when the pipeline's "
                       "`load_lineage` is false."),
        Op("POST", p("/anomaly_detection_rule"), "Get or create a rule (pipeline + metric)",
           {200: ref("Id"), 201: ref("Id")}, (401, 403, 404, 422), write,
           obj({"pipeline_id": WATCHER_ID, **RULE_SETTINGS}, ("pipeline_id", "metric_field"),
               extra=True), True, description=FOUND_OR_CREATED),
        Op("GET", p("/anomaly_detection_rule"), "List rules",
           {200: array(ref("AnomalyRule"))}, (401, 403)),
        Op("PATCH", p("/anomaly_detection_rule"), "Change a rule",
           {200: ref("AnomalyRule")}, (401, 403, 404, 422), write,
           obj({"id": WATCHER_ID, "pipeline_id": WATCHER_ID, **RULE_SETTINGS}, ("id",),
               extra=True), True),
        Op("GET", p("/anomaly_detection_rule/{anomaly_detection_rule_id}"), "A rule",
           {200: ref("AnomalyRule")}, (401, 403, 404, 422)),
        Op("POST", p("/unflag_anomaly"), "Clear anomaly flags of an execution", {204: None},
           (401, 403, 404, 422), write,
           obj({"pipeline_id": WATCHER_ID, "pipeline_execution_id": {"type": "integer",
                                                                     "minimum": 1},
                "metric_field": array({"type": "string", "enum": list(METRICS)},
                                      minItems=1)},
               ("pipeline_id", "pipeline_execution_id", "metric_field"), extra=True), True,
           description="404 when none of the metrics is flagged."),
        Op("POST", p("/timeliness"), "Queue a timeliness check", {200: ref("Queued")},
           (401, 403, 422), write,
           obj({"lookback_minutes": {"type": "integer", "minimum": 5}}, (), extra=True), True),
        Op("POST", p("/freshness"), "Queue a freshness check", {200: ref("Queued")},
           (401, 403, 422), write, obj({}, (), extra=True)),
        Op("POST", p("/log_cleanup"), "Delete run history older than the retention",
           {200: ref("CleanupCounts")}, (401, 403, 422), write,
           obj({"retention_days": {"type": "integer", "minimum": 90},
                "batch_size": {"type": "integer", "minimum": 1}}, ("retention_days",),
               extra=True), True),
        Op("POST", p("/celery/monitor-queue"), "Report the pending background work",
           {200: obj({"status": {"const": "success"}}),
            500: obj({"status": {"const": "error"}})}, (401, 403), write,
           description="500 `{\"status\": \"error\"}` when the queue cannot be read."),
        Op("GET", p("/") if prefix else "/", "Watcher health",
           {200: obj({"status": {"const": "ok"}})}, scope=None),
    )


WATCHER_SCHEMAS: dict[str, Schema] = {
    "WatcherPipelineCreated": obj({"id": INT, "active": BOOL, "load_lineage": BOOL,
                                   "watermark": STR_OR_NULL}),
    "Lineage": obj({"pipeline_id": INT, "lineage_relationships_created": INT, "message": STR}),
    "Queued": obj({"status": {"const": "queued"}}),
    "CleanupCounts": obj({name: INT for name in (
        "total_pipeline_executions_deleted",
        "total_timeliness_pipeline_execution_logs_deleted",
        "total_anomaly_detection_results_deleted",
        "total_pipeline_execution_closure_parent_deleted",
        "total_pipeline_execution_closure_child_deleted",
        "total_freshness_pipeline_logs_deleted",
        # runwatch's: old rows kept, and why
        "kept_open", "kept_latest", "kept_failure_streak", "kept_freshness_logs")}),
}

HEALTH = Op("GET", "/health", "Liveness and version",
            {200: obj({"status": {"const": "ok"}, "version": STR})}, scope=None)
READY_BODY = obj({"status": {"enum": ["ready", "not ready"]},
                  "checks": obj({"database": STR, "migrations": STR, "workers": STR},
                                required=("database", "workers"))})
READY = Op("GET", "/ready", "Readiness: database reachable, migrations applied, workers running",
           {200: READY_BODY, 503: READY_BODY}, scope=None,
           description="503 names the failed check in `checks`; for load balancers and "
           "readiness probes (`/health` is the liveness probe).")

# Path parameters, per contract: integers (warehouse, Watcher) or the ELT contract's string
# ids. An id no row can have is 404, except that the Watcher answers 422 to one that is not an
# integer. (`/api/elt/runs/webhook` is the webhook's path, not the run "webhook": a concrete
# path matches before a template.)
# OpenLineage (Marquez's endpoint): run events in, the graph around a job or dataset out.
OPENLINEAGE = "/api/v1/lineage"
MARQUEZ_EDGE = obj({"origin": STR, "destination": STR})
OPENLINEAGE_SCHEMAS: dict[str, Schema] = {
    "MarquezError": obj({"code": INT, "message": STR}),
    "MarquezErrors": obj({"errors": array(STR, minItems=1)}),
    "LineageGraph": obj({"graph": array(obj({
        "id": STR, "type": {"type": "string", "enum": ["DATASET", "JOB"]},
        "data": ANY_OBJECT, "inEdges": array(MARQUEZ_EDGE),
        "outEdges": array(MARQUEZ_EDGE)}))}),
}
OPENLINEAGE_OPS = (
    Op("POST", OPENLINEAGE, "Record an OpenLineage run event", {201: None},
       (400, 401, 403, 409, 422), "writer",
       obj({"eventType": STR, "eventTime": TIME, "producer": STR, "schemaURL": STR,
            "run": ANY_OBJECT, "job": ANY_OBJECT, "inputs": array(ANY_OBJECT),
            "outputs": array(ANY_OBJECT)}, ("eventTime", "producer", "run", "job"), extra=True),
       True, description="OpenLineage spec 1-x and 2-x run events (see the README)."),
    Op("GET", OPENLINEAGE, "The lineage graph around a job or dataset",
       {200: ref("LineageGraph")}, (401, 403, 404, 422),
       query={"nodeId": {"type": "string",
                         "description": "`dataset:<namespace>:<name>` or `job:<namespace>:<name>`"},
              "depth": {"type": "integer", "minimum": 0, "maximum": 20,
                        "description": "Hops (default 20)."}}),
)

PATH_PARAMETERS: dict[str, dict[str, Schema]] = {
    "warehouse": {"organisation_pk": INT, "id": INT,
                  "run_id": {"type": "integer", "maximum": INT64_MAX}},
    "elt": {"id": {"type": "string", "description": "The object's id (digits)."}},
    "watcher": {name: INT for name in (
        "pipeline_id", "pipeline_type_id", "pipeline_execution_id", "address_id",
        "address_type_id", "anomaly_detection_rule_id")},
}
TAGS = {
    "warehouse": "Warehouse-connection contract: DRF-style errors `{\"detail\"}` / "
                 "`{field: [messages]}`.",
    "elt": "ELT-runs contract: camelCase, string ids, errors `{\"error\"}`.",
    "watcher": "Watcher contract: FastAPI-style 422 `{\"detail\": [{loc, msg, type}]}`, "
               "other errors `{\"detail\"}`.",
    "openlineage": "OpenLineage (Marquez's endpoint): errors `{\"code\", \"message\"}`, "
                   "422 `{\"errors\": [...]}`.",
    "service": "runwatch itself.",
}
SCOPES_HELP = {
    "read": "a token with `read`", "write": "a token with `write`",
    "report": "a token with `report`", "writer": "a token with `report` or `write`",
    "viewer": "a token with `read` or `write`", "gateway": "a gateway's token",
}

# ------------------------------------------------------------------------- request examples

# An example request body for every operation that takes one, by method and path (Watcher
# paths without the deployment's prefix). The ids are those of a fresh organisation that has
# made, in this order: warehouse connection 1 (with its delivery pipeline 1) and its run 1,
# ELT pipeline 2 and its run 2, gateway 1, Watcher pipeline 3 (of pipeline type 1) and its
# execution (run 3), address 1 of address type 1, anomaly rule 1. `tests/test_openapi_scopes.py`
# sends each one with every kind of token and checks that the answer agrees with the
# operation's scope, and that each example fits its schema.
EXAMPLES: dict[tuple[str, str], Any] = {
    ("POST", OPENLINEAGE): {
        "eventType": "COMPLETE", "eventTime": "2026-12-01T10:05:00Z",
        "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.30.0/client/python",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent",
        "run": {"runId": "0193a5d2-7b1e-7c3a-9d2f-3f1b2c4d5e6f"},
        "job": {"namespace": "airflow", "name": "daily_orders"},
        "inputs": [{"namespace": "postgres://db:5432", "name": "shop.public.orders"}],
        "outputs": [{"namespace": "postgres://db:5432", "name": "shop.mart.daily",
                     "outputFacets": {"outputStatistics": {"rowCount": 1234}}}]},
    ("POST", WAREHOUSE + "/"): {"name": "analytics", "type": "snowflake",
                                "settings": {"account": "acme-eu", "warehouse": "LOAD_WH"}},
    ("PATCH", ONE): {"name": "analytics-eu"},
    ("POST", ONE + "metrics/"): {"started_at": "2026-01-31T12:00:00Z"},
    ("PATCH", ONE + "metrics/{run_id}/"): {
        "completed_at": "2026-01-31T12:04:10Z", "events_delivered": 1200, "batches_dlq": 0,
        "error": None, "evaluations": 1000, "custom_events": 200},
    ("POST", RUNS): {"pipelineId": "2", "environment": "production",
                     "correlationId": "nightly-2026-01-31", "triggeredBy": "scheduler"},
    ("PATCH", RUNS + "/{id}"): {"appendLog": {"level": "info", "message": "started by ops"}},
    ("PUT", RUNS + "/webhook"): {"url": "https://hooks.example.com/runwatch",
                                 "eventTypes": ["run.failed"], "enabled": True},
    ("POST", PIPELINES): {"name": "orders-sync", "description": "orders into the warehouse",
                          "maxRuntimeSeconds": 3600},
    ("PATCH", PIPELINES + "/{id}"): {"description": "orders and refunds"},
    ("PUT", PIPELINES + "/{id}/webhook"): {"url": "https://hooks.example.com/orders"},
    ("PATCH", AGENT + "/runs/{id}"): {
        "status": "running", "appendLog": {"level": "info", "message": "claimed"},
        "telemetrySummary": {"rowsLoaded": 0, "progress": 0, "currentPhase": "extract"}},
    ("POST", AGENT + "/heartbeat"): {"version": "1.4.2", "labels": {"region": "eu-west-1"}},
    ("POST", AGENT + "/monitors/{id}/report"): {"ok": True, "message": "3 new files"},
    ("POST", "/pipeline"): {"name": "orders_load", "pipeline_type_name": "extraction",
                            "next_watermark": "2026-01-31T00:00:00"},
    ("PATCH", "/pipeline"): {"name": "orders_load", "freshness_number": 1,
                             "freshness_datepart": "day"},
    ("POST", "/pipeline_type"): {"name": "extraction", "timeliness_number": 2,
                                 "timeliness_datepart": "hour"},
    ("POST", "/start_pipeline_execution"): {"pipeline_id": 3},
    ("POST", "/end_pipeline_execution"): {
        "id": 3, "end_date": "2099-01-01T00:00:00Z", "completed_successfully": True,
        "total_rows": 1500, "inserts": 1000, "updates": 500, "soft_deletes": 0},
    ("POST", "/address"): {"name": "warehouse.sales.orders", "address_type_name": "postgres",
                           "address_type_group_name": "database"},
    ("PATCH", "/address"): {"id": 1, "primary_key": "order_id"},
    ("POST", "/address_type"): {"name": "postgres", "group_name": "database"},
    ("PATCH", "/address_type"): {"name": "postgres", "group_name": "database"},
    ("PATCH", "/pipeline_type"): {"name": "extraction", "mute_timeliness_check": True},
    ("POST", "/address_lineage"): {
        "pipeline_id": 3,
        "source_addresses": [{"name": "app.public.orders", "address_type_name": "postgres",
                              "address_type_group_name": "database"}],
        "target_addresses": [{"name": "warehouse.sales.orders",
                              "address_type_name": "postgres",
                              "address_type_group_name": "database"}]},
    ("POST", "/anomaly_detection_rule"): {"pipeline_id": 3, "metric_field": "total_rows",
                                          "z_threshold": 3, "lookback_days": 30},
    ("PATCH", "/anomaly_detection_rule"): {"id": 1, "active": False},
    ("POST", "/unflag_anomaly"): {"pipeline_id": 3, "pipeline_execution_id": 3,
                                  "metric_field": ["total_rows"]},
    ("POST", "/timeliness"): {"lookback_minutes": 60},
    ("POST", "/freshness"): {},
    ("POST", "/log_cleanup"): {"retention_days": 90, "batch_size": 1000},
}


def example_of(contract: str, op: Op, prefix: str) -> Any:
    path = op.path.removeprefix(prefix) if contract == "watcher" and prefix else op.path
    return EXAMPLES.get((op.method, path))


# ------------------------------------------------------------------------- the builder


def operations(settings: Settings) -> list[tuple[str, Op]]:
    """(contract, operation) for every documented route."""
    return [
        ("service", HEALTH),
        ("service", READY),
        *(("warehouse", op) for op in WAREHOUSE_OPS),
        *(("elt", op) for op in ELT_OPS),
        *(("watcher", op) for op in watcher_ops(settings.watcher_prefix)),
        *(("openlineage", op) for op in OPENLINEAGE_OPS),
    ]


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[{}]", "", path).replace("-", "_").strip("/").replace("/", "_")
    return f"{method.lower()}_{words or 'root'}"


def _response(description: str, schema: Schema | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    return answer


def _operation(contract: str, op: Op, prefix: str) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True,
         "schema": PATH_PARAMETERS[contract][name]}
        for name in re.findall(r"{(\w+)}", op.path)
    ]
    parameters += [{"name": name, "in": "query", "required": False, "schema": schema}
                   for name, schema in op.query.items()]
    responses = {str(status): _response("Success." if status < 400 else "Error.", schema)
                 for status, schema in op.answers.items()}
    limits = (413,) * (op.body is not None) + (429, 503) * (op.scope is not None)
    for status in (*op.errors, *limits):
        description, shape = ERRORS[contract][status]
        responses[str(status)] = _response(description, ref(shape))
    if "401" in responses:
        responses["401"]["headers"] = {"WWW-Authenticate": {
            "required": True, "schema": {"const": 'Bearer realm="runwatch"'}}}
    for status in ("429", "503"):
        if status in responses:
            responses[status]["headers"] = {"Retry-After": {
                "description": "Seconds to wait before trying again.", "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    who = SCOPES_HELP.get(op.scope or "", "no token")
    document: dict[str, Any] = {
        "operationId": _operation_id(op.method, op.path),
        "summary": op.summary,
        "description": (op.description + " " if op.description else "") + f"Needs {who}.",
        "tags": [contract],
        "x-runwatch-scope": op.scope,
        "parameters": parameters,
        "responses": responses,
    }
    if op.scope is None:
        document["security"] = []
    if op.body is not None:
        content: dict[str, Any] = {"schema": op.body}
        example = example_of(contract, op, prefix)
        if example is not None:
            content["example"] = example
        document["requestBody"] = {"required": op.body_required,
                                   "content": {"application/json": content}}
    return document


def build_document(settings: Settings) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for contract, op in operations(settings):
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(
            contract, op, settings.watcher_prefix)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runwatch REST shims",
            "version": __version__,
            "description": "The REST compatibility routes of runwatch (GraphQL is at "
                           "`/graphql`). Every path also answers with the other "
                           "trailing-slash spelling; HEAD is answered wherever GET is.",
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": {**SCHEMAS, **WATCHER_SCHEMAS, **OPENLINEAGE_SCHEMAS},
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "`Authorization: Bearer rw_…` (a gateway's token on "
                               "/api/agent/)."}},
        },
        "security": [{"bearerAuth": []}],
    }


def endpoint(settings: Settings) -> Handler:
    """`GET /openapi.json` (public: the document names no secret)."""
    document = build_document(settings)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    return openapi_json
