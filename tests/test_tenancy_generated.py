"""Tenancy and scopes, proved for everything that exists rather than for a hand-picked list.

Every REST route of the app (`app.routes`: path and method, HEAD aside, both slash variants
one route), every field of `Query`, `Mutation` and `Subscription`, and every field of the
other object types that has a resolver of its own (they load related objects by id) has an
entry in the tables below; the coverage tests fail, naming it, when something exists that has
no entry (or an entry names something that no longer exists).

In one world (`tests/tenancy_world.py`: organisation A with one of every kind of object,
organisation B with a token per scope set, a gateway and a few objects), each entry is:

1. called by B (its admin token; its gateway's for the gateway routes) with A's ids: the
   answer is the entry's "not found" (a 404 in the route's shape, GraphQL null, an empty
   list, a NotFoundError; or, for a call that takes no id, B's own objects only), it holds no
   id, distinctive number, `acme` string or secret of A's, a refusal reads exactly as it does
   for ids that exist nowhere (no existence oracle), and A's rows are unchanged;
2. called by A's tokens that lack the entry's scope (and A's gateway token, and no token):
   refused (401 / 403 / UNAUTHENTICATED / FORBIDDEN / PermissionDeniedError), revealing
   nothing, changing nothing;
3. called by A's token with the scope: it works (so that the table stays honest).

The nested fields are checked on A's objects (they resolve: the world has them), through
mutation payloads with tokens that lack `read` (refused where they load), and, after rows are
made to point across the organisations (`cross_link`), on B's objects: never A's.

Every id is unique across tables (`spread_ids`), so any integer B is shown can be checked
against A's rows; a control (`check_the_detector`) proves the detector flags A's own answers.
Every problem of every entry is collected and reported at once.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.routing import Route, WebSocketRoute
from strawberry.types.base import StrawberryObjectDefinition

from runwatch.app import create_app
from runwatch.schema import build_schema
from tests.tenancy_world import (
    A_EVENTS,
    DEAD_URL,
    ID_STEP,
    WAREHOUSE,
    Answer,
    Forbidden,
    Org,
    Snapshot,
    World,
    a_secrets,
    build_world,
    cross_link,
    iso,
    leaks,
    numbers_in,
    ws_subscribe,
)

# ----------------------------------------------------------------------------------- scopes

READ, WRITE, REPORT, ADMIN, GATEWAY, PUBLIC = "read", "write", "report", "admin", "gateway", "-"
WRITER = "report|write"  # the Watcher's writes: a loader's `report` token or a person's `write`
VIEWER = "read|write"  # webhook settings: readable with `read` (secret hidden) or `write`
# Who must be refused, by the scope an entry needs ("anonymous": no token at all).
LACKING = {
    READ: ("write", "report", "gateway", "anonymous"),
    WRITE: ("read", "report", "gateway", "anonymous"),
    REPORT: ("read", "write", "gateway", "anonymous"),
    WRITER: ("read", "gateway", "anonymous"),
    VIEWER: ("report", "gateway", "anonymous"),
    ADMIN: ("read", "write", "report", "read,write,report", "gateway", "anonymous"),
    GATEWAY: ("admin", "read", "write", "report", "read,write,report", "anonymous"),
    PUBLIC: (),
}
# Who must succeed.
ALLOWED = {READ: ("read",), WRITE: ("write",), REPORT: ("report",), WRITER: ("report", "write"),
           VIEWER: ("read", "write"), ADMIN: ("admin",), GATEWAY: ("gateway",),
           PUBLIC: ("anonymous",)}


# ----------------------------------------------------------------------------------- calls


@dataclass(frozen=True)
class Rest:
    method: str
    path: str
    body: Any = None

    def sent(self) -> Any:
        return [self.path, self.body]

    def __str__(self) -> str:
        body = "" if self.body is None else " " + json.dumps(self.body)[:160]
        return f"{self.method} {self.path}{body}"


@dataclass(frozen=True)
class Gql:
    kind: str  # query | mutation | subscription
    field: str  # the root field (every document aliases it `f`)
    document: str
    variables: dict[str, Any] = field(default_factory=dict)
    transport: str = "post"  # post | get | ws | ws-payload (the token in connection_init)

    def sent(self) -> Any:
        return self.variables

    def __str__(self) -> str:
        text = " ".join(self.document.split())
        return f"[{self.transport}] {text[:140]} {json.dumps(self.variables)[:120]}"


Request = Rest | Gql
Expect = Callable[[Answer], str | None]

ERRORS = "... on Error { message }"


def q(field_name: str, signature: str, arguments: str, selection: str,
      transport: str = "post", **variables: Any) -> Gql:
    """A query (or, with transport ws, a subscription) of one root field aliased `f`."""
    head = f"({signature})" if signature else ""
    args = f"({arguments})" if arguments else ""
    kind = "subscription" if transport.startswith("ws") else "query"
    return Gql(kind, field_name, f"{kind}{head} {{ f: {field_name}{args} {selection} }}",
               variables, transport)


def m(field_name: str, signature: str, arguments: str, selection: str = "",
      **variables: Any) -> Gql:
    """A mutation of one root field aliased `f`, with its union's error members."""
    head = f"({signature})" if signature else ""
    args = f"({arguments})" if arguments else ""
    return Gql("mutation", field_name, f"mutation{head} {{ f: {field_name}{args} "
               f"{{ __typename {ERRORS} {selection} }} }}", variables)


def _value(body: Any, path: str) -> Any:
    value = body
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit():
            value = value[int(part)] if int(part) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, list):
        return bool(value)
    if isinstance(value, dict) and "nodes" in value:
        return bool(value["nodes"])
    return True


def codes(body: Any) -> list[str]:
    errors = body.get("errors") if isinstance(body, dict) else None
    return [(e.get("extensions") or {}).get("code", "?") for e in errors or []]


# ----------------------------------------------------------------------------------- expectations


def status(code: int, body: Any = None) -> Expect:
    def check(a: Answer) -> str | None:
        if a.status != code:
            return f"expected {code}, got {a}"
        if body is not None and a.body != body:
            return f"expected {code} {body}, got {a}"
        return None

    return check


def statuses(*allowed: int) -> Expect:
    def check(a: Answer) -> str | None:
        return None if a.status in allowed else f"expected one of {allowed}, got {a}"

    return check


NOT_FOUND = status(404, {"detail": "Not found."})  # the warehouse contract's


def elt_404(kind: str) -> Expect:
    return status(404, {"error": f"{kind} not found"})


def watcher_404(kind: str) -> Expect:
    return status(404, {"detail": f"{kind} not found"})


def field_error(name: str) -> Expect:
    """The ELT contract's 400 naming one field (a foreign id is an invalid reference)."""

    def check(a: Answer) -> str | None:
        error = a.body.get("error") if isinstance(a.body, dict) else None
        if a.status == 400 and isinstance(error, dict) and name in error:
            return None
        return f"expected 400 naming {name}, got {a}"

    return check


def gql_clean(a: Answer) -> str | None:
    if a.status != 200 or not isinstance(a.body, dict) or a.body.get("errors"):
        return f"expected an answer without errors, got {a}"
    return None


def null(a: Answer) -> str | None:
    """GraphQL: the root field is null (not found), without errors."""
    return gql_clean(a) or (None if _value(a.body, "data.f") is None
                            else f"expected null, got {a}")


def empty(path: str = "nodes") -> Expect:
    def check(a: Answer) -> str | None:
        found = _value(a.body, f"data.f.{path}" if path else "data.f")
        return gql_clean(a) or (None if found == [] else f"expected [] at {path}, got {a}")

    return check


def own(a: Answer) -> str | None:
    """GraphQL: an answer without errors (that it holds nothing of A's is checked always)."""
    return gql_clean(a)


def typename(*names: str) -> Expect:
    def check(a: Answer) -> str | None:
        found = _value(a.body, "data.f.__typename")
        return gql_clean(a) or (None if found in names else f"expected {names}, got {a}")

    return check


NOT_FOUND_ERROR = typename("NotFoundError")
INVALID = typename("InvalidInputError")


def has_data(a: Answer) -> str | None:
    """A query's success: no errors, and the world has what it asked for."""
    return gql_clean(a) or (None if present(_value(a.body, "data.f"))
                            else f"expected data, got {a}")


def error_code(code: str) -> Expect:
    def check(a: Answer) -> str | None:
        if code in codes(a.body) and _value(a.body, "data.f") is None:
            return None
        return f"expected {code} without data, got {a}"

    return check


def streamed(a: Answer) -> str | None:
    """A subscription's success: an update of the run, then complete."""
    kinds = (a.body or {}).get("messages", [])
    if gql_clean(a) or not present(_value(a.body, "data.f.run")) or kinds[-1:] != ["complete"]:
        return f"expected an update then complete, got {a}"
    return None


def refused(request: Request, who: str, a: Answer) -> str | None:
    """How a call without the needed scope (or without a token) must be answered."""
    if isinstance(request, Rest):
        expected = 401 if who == "anonymous" else 403
        return None if a.status == expected else f"expected {expected}, got {a}"
    code = "UNAUTHENTICATED" if who == "anonymous" else "FORBIDDEN"
    if request.kind == "mutation" and who != "anonymous":
        found = _value(a.body, "data.f.__typename")
        return None if found == "PermissionDeniedError" else (
            f"expected PermissionDeniedError, got {a}")
    return error_code(code)(a)


# ----------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Entry:
    """How to call one route or root field as A (`call`: refused without `scope`, `ok` with
    it) and as B with A's ids (`foreign`: each call with what it must answer)."""

    key: str
    scope: str
    call: Callable[[World], Request]
    ok: Expect
    foreign: Callable[[World], list[tuple[Request, Expect]]]
    allowed: tuple[str, ...] | None = None  # default: ALLOWED[scope]


def now() -> str:
    return iso(datetime.now(UTC))


OL_EVENT = {"eventType": "START", "eventTime": "2026-12-01T10:00:00Z",
            "producer": "https://example.com/producer",
            "run": {"runId": "0193a5d2-7b1e-7c3a-9d2f-3f1b2c4d5e6f"},
            "job": {"namespace": "airflow", "name": "acme-ol-job"}}
W = WAREHOUSE.format(org="{organisation_pk}")
LINEAGE_ITEM = {"address_type_name": "bravo_pg", "address_type_group_name": "bravo_database"}


def wh(w: World, org: Org | None = None) -> str:
    """The warehouse prefix with A's organisation in the URL (or `org`'s)."""
    return (org or w.a).warehouse()


def report_body() -> dict[str, Any]:
    return {"completed_at": now(), "events_delivered": 1}


REST_ENTRIES = [
    # ---- warehouse connections
    Entry(f"GET {W}", READ, lambda w: Rest("GET", wh(w) + "/"), status(200),
          lambda w: [(Rest("GET", wh(w) + "/"), NOT_FOUND),
                     (Rest("GET", wh(w, w.b) + "/"), status(200)),
                     (Rest("GET", f"{wh(w, w.b)}/?cursor={w.A.cursor_conn}&limit=200"),
                      status(200))]),
    Entry(f"POST {W}", WRITE,
          lambda w: Rest("POST", wh(w) + "/", {"name": "acme-rest-conn", "type": "snowflake"}),
          status(201),
          lambda w: [(Rest("POST", wh(w) + "/", {"name": "bravo-planted", "type": "snowflake"}),
                      NOT_FOUND)]),
    Entry(f"GET {W}/{{id}}", READ, lambda w: Rest("GET", f"{wh(w)}/{w.A.conn}/"), status(200),
          lambda w: [(Rest("GET", f"{wh(w)}/{w.A.conn}/"), NOT_FOUND),
                     (Rest("GET", f"{wh(w, w.b)}/{w.A.conn}"), NOT_FOUND)]),
    Entry(f"PATCH {W}/{{id}}", WRITE,
          lambda w: Rest("PATCH", f"{wh(w)}/{w.A.conn}/", {"region": "acme-region"}),
          status(200),
          lambda w: [(Rest("PATCH", f"{p}/{w.A.conn}/", {"name": "bravo-hijack",
                                                         "account": "bravo"}), NOT_FOUND)
                     for p in (wh(w), wh(w, w.b))]),
    Entry(f"POST {W}/{{id}}/metrics", REPORT,
          lambda w: Rest("POST", f"{wh(w)}/{w.A.conn}/metrics/", {}), status(201),
          lambda w: [(Rest("POST", f"{p}/{w.A.conn}/metrics/", {}), NOT_FOUND)
                     for p in (wh(w), wh(w, w.b))]),
    Entry(f"PATCH {W}/{{id}}/metrics/{{run_id}}", REPORT,
          lambda w: Rest("PATCH", f"{wh(w)}/{w.A.conn}/metrics/{w.A.wh_spare_rest}/",
                         report_body()), status(204),
          lambda w: [(Rest("PATCH", f"{p}/{c}/metrics/{r}/", report_body()), NOT_FOUND)
                     for p, c, r in ((wh(w), w.A.conn, w.A.wh_open),
                                     (wh(w, w.b), w.A.conn, w.A.wh_open),
                                     (wh(w, w.b), w.B.conn, w.A.wh_open),
                                     (wh(w, w.b), w.B.conn, w.A.wh_done),
                                     (wh(w, w.b), w.A.conn, w.B.wh_open))]),
    Entry(f"GET {W}/{{id}}/telemetry", READ,
          lambda w: Rest("GET", f"{wh(w)}/{w.A.conn}/telemetry/"), status(200),
          lambda w: [(Rest("GET", f"{p}/{w.A.conn}/telemetry/"), NOT_FOUND)
                     for p in (wh(w), wh(w, w.b))]),
    # ---- ELT: webhook settings, runs, pipelines
    Entry("GET /api/elt/runs/webhook", VIEWER,
          lambda w: Rest("GET", "/api/elt/runs/webhook"),
          status(200), lambda w: [(Rest("GET", "/api/elt/runs/webhook/"), status(200))]),
    Entry("PUT /api/elt/runs/webhook", WRITE,
          lambda w: Rest("PUT", "/api/elt/runs/webhook", {"url": f"{DEAD_URL}/acme-default"}),
          status(200),
          lambda w: [(Rest("PUT", "/api/elt/runs/webhook", {"url": f"{DEAD_URL}/bravo-default"}),
                      status(200))]),
    Entry("GET /api/elt/runs", READ, lambda w: Rest("GET", "/api/elt/runs"), status(200),
          lambda w: [(Rest("GET", "/api/elt/runs/"), status(200)),
                     (Rest("GET", f"/api/elt/runs?pipelineId={w.A.pipeline}"),
                      status(200, {"runs": []})),
                     (Rest("GET", f"/api/elt/runs?before={w.A.run_done}&limit=200"),
                      status(200))]),
    Entry("POST /api/elt/runs", WRITE,
          lambda w: Rest("POST", "/api/elt/runs", {"pipelineId": str(w.A.pipeline)}),
          status(201),
          lambda w: [(Rest("POST", "/api/elt/runs", {"pipelineId": str(w.A.pipeline)}),
                      field_error("pipelineId")),
                     (Rest("POST", "/api/elt/runs", {"pipelineId": str(w.B.pipeline),
                                                     "targetGatewayId": str(w.A.gateway)}),
                      field_error("targetGatewayId")),
                     # correlation ids are unique per organisation: no existence oracle
                     (Rest("POST", "/api/elt/runs", {"pipelineId": str(w.B.pipeline),
                                                     "correlationId": "acme-corr-pending"}),
                      status(201))]),
    Entry("GET /api/elt/runs/{id}", READ, lambda w: Rest("GET", f"/api/elt/runs/{w.A.run_done}"),
          status(200),
          lambda w: [(Rest("GET", f"/api/elt/runs/{r}"), elt_404("Run"))
                     for r in (w.A.run_pending, w.A.run_running, w.A.run_done,
                               w.A.exec_parent, w.A.wh_done)]),
    Entry("PATCH /api/elt/runs/{id}", WRITE,
          lambda w: Rest("PATCH", f"/api/elt/runs/{w.A.run_pending}",
                         {"appendLog": {"message": "acme rest log"}}), status(200),
          lambda w: [(Rest("PATCH", f"/api/elt/runs/{r}", body), elt_404("Run"))
                     for r, body in ((w.A.run_pending, {"status": "cancelled"}),
                                     (w.A.run_running, {"appendLog": {"message": "bravo"}}),
                                     (w.A.run_done, {"errorSummary": "bravo"}))]),
    Entry("GET /api/elt/pipelines", READ, lambda w: Rest("GET", "/api/elt/pipelines"),
          status(200), lambda w: [(Rest("GET", "/api/elt/pipelines/"), status(200))]),
    Entry("POST /api/elt/pipelines", WRITE,
          lambda w: Rest("POST", "/api/elt/pipelines", {"name": "acme-rest-pipeline"}),
          status(201),
          lambda w: [(Rest("POST", "/api/elt/pipelines", {"name": "bravo-p",
                                                          "connectionId": str(w.A.conn)}),
                      field_error("connectionId")),
                     (Rest("POST", "/api/elt/pipelines", {"name": "acme-spare"}),
                      status(201))]),
    Entry("GET /api/elt/pipelines/{id}", READ,
          lambda w: Rest("GET", f"/api/elt/pipelines/{w.A.pipeline}"), status(200),
          lambda w: [(Rest("GET", f"/api/elt/pipelines/{p}"), elt_404("Pipeline"))
                     for p in (w.A.pipeline, w.A.delivery_pipeline, w.A.wp)]),
    Entry("PATCH /api/elt/pipelines/{id}", WRITE,
          lambda w: Rest("PATCH", f"/api/elt/pipelines/{w.A.pipeline}",
                         {"description": "acme orders v2"}), status(200),
          lambda w: [(Rest("PATCH", f"/api/elt/pipelines/{w.A.pipeline}",
                           {"description": "bravo"}), elt_404("Pipeline")),
                     (Rest("PATCH", f"/api/elt/pipelines/{w.B.pipeline}",
                           {"connectionId": str(w.A.conn)}), field_error("connectionId"))]),
    Entry("GET /api/elt/pipelines/{id}/webhook", VIEWER,
          lambda w: Rest("GET", f"/api/elt/pipelines/{w.A.pipeline}/webhook"), status(200),
          lambda w: [(Rest("GET", f"/api/elt/pipelines/{w.A.pipeline}/webhook"),
                      elt_404("Pipeline"))]),
    Entry("PUT /api/elt/pipelines/{id}/webhook", WRITE,
          lambda w: Rest("PUT", f"/api/elt/pipelines/{w.A.pipeline}/webhook",
                         {"url": f"{DEAD_URL}/acme-orders-hook"}), status(200),
          lambda w: [(Rest("PUT", f"/api/elt/pipelines/{w.A.pipeline}/webhook",
                           {"url": f"{DEAD_URL}/bravo"}), elt_404("Pipeline")),
                     (Rest("PUT", f"/api/elt/pipelines/{w.A.spare_pipeline}/webhook/",
                           {"url": None}), elt_404("Pipeline"))]),
    # ---- ELT: the gateways' routes
    Entry("GET /api/agent/runs", GATEWAY, lambda w: Rest("GET", "/api/agent/runs"), status(200),
          lambda w: [(Rest("GET", "/api/agent/runs"), status(200)),
                     (Rest("GET", "/api/agent/runs/?status=pending,running,succeeded,cancelled"),
                      status(200))]),
    Entry("GET /api/agent/runs/{id}", GATEWAY,
          lambda w: Rest("GET", f"/api/agent/runs/{w.A.run_running}"), status(200),
          lambda w: [(Rest("GET", f"/api/agent/runs/{r}"), elt_404("Run"))
                     for r in (w.A.run_pending, w.A.run_targeted, w.A.run_running,
                               w.A.run_done)]),
    Entry("PATCH /api/agent/runs/{id}", GATEWAY,
          lambda w: Rest("PATCH", f"/api/agent/runs/{w.A.run_running}",
                         {"appendLog": {"message": "acme agent log"}}), status(200),
          lambda w: [(Rest("PATCH", f"/api/agent/runs/{r}", body), elt_404("Run"))
                     for r, body in ((w.A.run_pending, {"status": "running"}),
                                     (w.A.run_targeted, {"status": "running"}),
                                     (w.A.run_running, {"appendLog": {"message": "bravo"}}),
                                     (w.A.run_done, {"errorSummary": "bravo"}))]),
    Entry("GET /api/agent/pipelines/{id}", GATEWAY,
          lambda w: Rest("GET", f"/api/agent/pipelines/{w.A.pipeline}"), status(200),
          lambda w: [(Rest("GET", f"/api/agent/pipelines/{p}"), elt_404("Pipeline"))
                     for p in (w.A.pipeline, w.A.delivery_pipeline)]),
    Entry("POST /api/agent/monitors/{id}/report", GATEWAY,
          lambda w: Rest("POST", "/api/agent/monitors/1/report", {"ok": True}),
          elt_404("Monitor"),
          lambda w: [(Rest("POST", "/api/agent/monitors/1/report", {"ok": True}),
                      elt_404("Monitor"))]),
    Entry("GET /api/elt/agent-status", READ, lambda w: Rest("GET", "/api/elt/agent-status"),
          status(200), lambda w: [(Rest("GET", "/api/elt/agent-status/"), status(200))]),
    Entry("GET /api/agent/connections", GATEWAY, lambda w: Rest("GET", "/api/agent/connections"),
          status(200),
          lambda w: [(Rest("GET", "/api/agent/connections"), status(200))]),
    Entry("GET /api/agent/manifest", GATEWAY, lambda w: Rest("GET", "/api/agent/manifest"),
          status(200), lambda w: [(Rest("GET", "/api/agent/manifest/"), status(200))]),
    Entry("POST /api/agent/heartbeat", GATEWAY,
          lambda w: Rest("POST", "/api/agent/heartbeat", {"version": "acme-1"}), status(200),
          lambda w: [(Rest("POST", "/api/agent/heartbeat", {"version": "bravo-1"}),
                      status(200))]),
    # ---- Watcher: pipelines and types
    Entry("GET /pipeline", READ, lambda w: Rest("GET", "/pipeline"), status(200),
          lambda w: [(Rest("GET", "/pipeline/"), status(200))]),
    Entry("POST /pipeline", WRITER,
          lambda w: Rest("POST", "/pipeline", {"name": "acme-load",
                                               "pipeline_type_name": "acme-type"}),
          statuses(200, 201),
          # get-or-create by name: B's own pipeline (and type), never A's of that name
          lambda w: [(Rest("POST", "/pipeline", {"name": "acme-checks",
                                                 "pipeline_type_name": "acme-type"}),
                      status(201))]),
    Entry("PATCH /pipeline", WRITER,
          lambda w: Rest("PATCH", "/pipeline", {"id": w.A.wp, "active": True}), status(200),
          lambda w: [(Rest("PATCH", "/pipeline", {"id": w.A.wp, "active": False}),
                      watcher_404("pipeline")),
                     (Rest("PATCH", "/pipeline", {"name": "acme-load", "active": False}),
                      watcher_404("pipeline")),
                     (Rest("PATCH", "/pipeline", {"id": w.B.wp,
                                                  "pipeline_type_id": w.A.pipeline_type}),
                      watcher_404("pipeline type"))]),
    Entry("GET /pipeline/{pipeline_id}", READ, lambda w: Rest("GET", f"/pipeline/{w.A.wp}"),
          status(200),
          lambda w: [(Rest("GET", f"/pipeline/{p}"), watcher_404("pipeline"))
                     for p in (w.A.wp, w.A.pipeline)]),
    Entry("GET /pipeline_type", READ, lambda w: Rest("GET", "/pipeline_type"), status(200),
          lambda w: [(Rest("GET", "/pipeline_type"), status(200))]),
    Entry("POST /pipeline_type", WRITER,
          lambda w: Rest("POST", "/pipeline_type", {"name": "acme-type"}), status(200),
          lambda w: [(Rest("POST", "/pipeline_type", {"name": "acme-type"}),
                      statuses(200, 201))]),
    Entry("PATCH /pipeline_type", WRITER,
          lambda w: Rest("PATCH", "/pipeline_type", {"id": w.A.pipeline_type,
                                                     "mute_freshness_check": False}),
          status(200),
          lambda w: [(Rest("PATCH", "/pipeline_type", {"id": w.A.pipeline_type,
                                                       "mute_freshness_check": True}),
                      watcher_404("pipeline type"))]),  # by name: B's own `acme-type`
    Entry("GET /pipeline_type/{pipeline_type_id}", READ,
          lambda w: Rest("GET", f"/pipeline_type/{w.A.pipeline_type}"), status(200),
          lambda w: [(Rest("GET", f"/pipeline_type/{w.A.pipeline_type}"),
                      watcher_404("pipeline type"))]),
    # ---- Watcher: executions
    Entry("POST /start_pipeline_execution", WRITER,
          lambda w: Rest("POST", "/start_pipeline_execution", {"pipeline_id": w.A.wp}),
          status(201),
          lambda w: [(Rest("POST", "/start_pipeline_execution", {"pipeline_id": w.A.wp}),
                      watcher_404("pipeline")),
                     (Rest("POST", "/start_pipeline_execution",
                           {"pipeline_id": w.B.wp, "parent_id": w.A.exec_parent}),
                      watcher_404("parent execution"))]),
    Entry("POST /end_pipeline_execution", WRITER,
          lambda w: Rest("POST", "/end_pipeline_execution", {
              "id": w.A.exec_spare, "end_date": now(), "completed_successfully": True}),
          status(204),
          lambda w: [(Rest("POST", "/end_pipeline_execution", {
              "id": e, "end_date": now(), "completed_successfully": True}),
              watcher_404("pipeline execution")) for e in (w.A.exec_open, w.A.exec_parent)]),
    Entry("GET /pipeline_execution/{pipeline_execution_id}", READ,
          lambda w: Rest("GET", f"/pipeline_execution/{w.A.exec_parent}"), status(200),
          lambda w: [(Rest("GET", f"/pipeline_execution/{e}"),
                      watcher_404("pipeline execution"))
                     for e in (w.A.exec_parent, w.A.exec_child, w.A.run_done)]),
    # ---- Watcher: addresses, types, lineage
    Entry("GET /address", READ, lambda w: Rest("GET", "/address"), status(200),
          lambda w: [(Rest("GET", "/address"), status(200))]),
    Entry("POST /address", WRITER,
          lambda w: Rest("POST", "/address", {"name": "acme_db.s.lookup",
                                              "address_type_name": "acme_pg",
                                              "address_type_group_name": "acme_database"}),
          status(200),
          lambda w: [(Rest("POST", "/address", {"name": "acme_db.s.claimed",
                                                "address_type_name": "acme_pg",
                                                "address_type_group_name": "acme_database"}),
                      status(201))]),
    Entry("PATCH /address", WRITER,
          lambda w: Rest("PATCH", "/address", {"id": w.A.address_lookup,
                                               "primary_key": "acme_pk"}), status(200),
          lambda w: [(Rest("PATCH", "/address", {"id": w.A.address_lookup,
                                                 "primary_key": "bravo"}),
                      watcher_404("address")),
                     (Rest("PATCH", "/address", {"name": "acme_db.s.lookup",
                                                 "primary_key": "bravo"}),
                      watcher_404("address")),
                     (Rest("PATCH", "/address", {"id": w.B.address,
                                                 "address_type_id": w.A.address_type}),
                      watcher_404("address type"))]),
    Entry("GET /address/{address_id}", READ,
          lambda w: Rest("GET", f"/address/{w.A.address_source}"), status(200),
          lambda w: [(Rest("GET", f"/address/{a}"), watcher_404("address"))
                     for a in (w.A.address_source, w.A.address_lookup)]),
    Entry("GET /address_type", READ, lambda w: Rest("GET", "/address_type"), status(200),
          lambda w: [(Rest("GET", "/address_type"), status(200))]),
    Entry("POST /address_type", WRITER,
          lambda w: Rest("POST", "/address_type", {"name": "acme_extra",
                                                   "group_name": "acme_group"}), status(200),
          lambda w: [(Rest("POST", "/address_type", {"name": "acme_extra",
                                                     "group_name": "acme_group"}),
                      status(201))]),
    Entry("PATCH /address_type", WRITER,
          lambda w: Rest("PATCH", "/address_type", {"id": w.A.address_type_extra,
                                                    "group_name": "acme_group"}), status(200),
          lambda w: [(Rest("PATCH", "/address_type", {"id": t, "group_name": "bravo"}),
                      watcher_404("address type"))
                     for t in (w.A.address_type, w.A.address_type_extra)]),
    Entry("GET /address_type/{address_type_id}", READ,
          lambda w: Rest("GET", f"/address_type/{w.A.address_type}"), status(200),
          lambda w: [(Rest("GET", f"/address_type/{t}"), watcher_404("address type"))
                     for t in (w.A.address_type, w.A.address_type_extra)]),
    Entry("POST /address_lineage", WRITER,
          lambda w: Rest("POST", "/address_lineage", {
              "pipeline_id": w.A.wp,
              "source_addresses": [{"name": "acme_db.s.source", "address_type_name": "acme_pg",
                                    "address_type_group_name": "acme_database"}],
              "target_addresses": [{"name": "acme_db.s.target", "address_type_name": "acme_pg",
                                    "address_type_group_name": "acme_database"}]}),
          statuses(200, 201),
          lambda w: [(Rest("POST", "/address_lineage", {
              "pipeline_id": w.A.wp, "source_addresses": [{"name": "bravo.s", **LINEAGE_ITEM}],
              "target_addresses": [{"name": "bravo.t", **LINEAGE_ITEM}]}),
              watcher_404("pipeline")),
              # B's own pipeline, with the names of A's addresses: B's own addresses
              (Rest("POST", "/address_lineage", {
                  "pipeline_id": w.B.wp_lineage,
                  "source_addresses": [{"name": "acme_db.s.source", **LINEAGE_ITEM}],
                  "target_addresses": [{"name": "acme_db.s.target", **LINEAGE_ITEM}]}),
               status(201))]),
    # ---- OpenLineage (B sending A's run id and job name gets its own run and pipeline)
    Entry("POST /api/v1/lineage", WRITER,
          lambda w: Rest("POST", "/api/v1/lineage", OL_EVENT), status(201),
          lambda w: [(Rest("POST", "/api/v1/lineage", OL_EVENT), status(201))]),
    Entry("GET /api/v1/lineage", READ,
          lambda w: Rest("GET", "/api/v1/lineage?nodeId=dataset:default:acme_db.s.lookup"),
          status(200),
          lambda w: [(Rest("GET", "/api/v1/lineage?nodeId=dataset:default:acme_db.s.lookup"),
                      status(404))]),
    # ---- Watcher: anomaly detection
    Entry("POST /anomaly_detection_rule", WRITER,
          lambda w: Rest("POST", "/anomaly_detection_rule", {"pipeline_id": w.A.wp_anomaly,
                                                             "metric_field": "total_rows"}),
          status(200),
          lambda w: [(Rest("POST", "/anomaly_detection_rule", {"pipeline_id": w.A.wp_anomaly,
                                                               "metric_field": "updates"}),
                      watcher_404("pipeline"))]),
    Entry("GET /anomaly_detection_rule", READ, lambda w: Rest("GET", "/anomaly_detection_rule"),
          status(200), lambda w: [(Rest("GET", "/anomaly_detection_rule"), status(200))]),
    Entry("PATCH /anomaly_detection_rule", WRITER,
          lambda w: Rest("PATCH", "/anomaly_detection_rule", {"id": w.A.rule, "active": True}),
          status(200),
          lambda w: [(Rest("PATCH", "/anomaly_detection_rule", {"id": w.A.rule,
                                                                "active": False}),
                      watcher_404("anomaly detection rule")),
                     (Rest("PATCH", "/anomaly_detection_rule", {
                         "id": w.B.rule, "pipeline_id": w.A.wp_anomaly}),
                      watcher_404("pipeline"))]),
    Entry("GET /anomaly_detection_rule/{anomaly_detection_rule_id}", READ,
          lambda w: Rest("GET", f"/anomaly_detection_rule/{w.A.rule}"), status(200),
          lambda w: [(Rest("GET", f"/anomaly_detection_rule/{w.A.rule}"),
                      watcher_404("anomaly detection rule"))]),
    Entry("POST /unflag_anomaly", WRITER,
          lambda w: Rest("POST", "/unflag_anomaly", {
              "pipeline_id": w.A.wp_anomaly, "pipeline_execution_id": w.A.exec_anomalous,
              "metric_field": ["total_rows"]}), status(204),
          lambda w: [(Rest("POST", "/unflag_anomaly", {
              "pipeline_id": p, "pipeline_execution_id": w.A.exec_anomalous,
              "metric_field": ["duration_seconds"]}), watcher_404("pipeline execution"))
              for p in (w.A.wp_anomaly, w.B.wp)],
          allowed=("write",)),  # it unflags: a second call finds nothing to unflag
    # ---- Watcher: checks, retention, queue, health
    Entry("POST /timeliness", WRITER,
          lambda w: Rest("POST", "/timeliness", {"lookback_minutes": 60}), status(200),
          lambda w: [(Rest("POST", "/timeliness", {"lookback_minutes": 60}), status(200))]),
    Entry("POST /freshness", WRITER, lambda w: Rest("POST", "/freshness"), status(200),
          lambda w: [(Rest("POST", "/freshness/"), status(200))]),
    # B's clean-up with the shortest retention must not touch A's old executions
    Entry("POST /log_cleanup", WRITER,
          lambda w: Rest("POST", "/log_cleanup", {"retention_days": 36500}), status(200),
          lambda w: [(Rest("POST", "/log_cleanup", {"retention_days": 90}), status(200))]),
    Entry("POST /celery/monitor-queue", WRITER, lambda w: Rest("POST", "/celery/monitor-queue"),
          status(200), lambda w: [(Rest("POST", "/celery/monitor-queue"), status(200))]),
    Entry("GET /", PUBLIC, lambda w: Rest("GET", "/"), status(200),
          lambda w: [(Rest("GET", "/"), status(200))]),
    Entry("GET /ui/{path:path}", PUBLIC, lambda w: Rest("GET", "/ui/console.js"), status(200),
          lambda w: [(Rest("GET", "/ui/console.js"), status(200))]),
    Entry("GET /health", PUBLIC, lambda w: Rest("GET", "/health"), status(200),
          lambda w: [(Rest("GET", "/health"), status(200))]),
    Entry("GET /ready", PUBLIC, lambda w: Rest("GET", "/ready"), status(200),
          lambda w: [(Rest("GET", "/ready"), status(200))]),
    Entry("GET /openapi.json", PUBLIC, lambda w: Rest("GET", "/openapi.json"), status(200),
          lambda w: [(Rest("GET", "/openapi.json"), status(200))]),
    # ---- GraphQL transports (every field below goes through POST; these prove the others)
    Entry("GET /graphql", READ,
          lambda w: q("run", "$id: ID!", "id: $id", "{ id status }", "get", id=w.A.run_done),
          has_data,
          lambda w: [(q("run", "$id: ID!", "id: $id", "{ id status }", "get", id=w.A.run_done),
                      null)]),
    Entry("POST /graphql", READ,
          lambda w: q("connection", "$id: ID!", "id: $id", "{ id name settings }",
                      id=w.A.conn), has_data,
          lambda w: [(q("connection", "$id: ID!", "id: $id", "{ id name settings }",
                        id=w.A.conn), null)]),
    Entry("WEBSOCKET /graphql", READ,
          lambda w: q("runUpdates", "$id: ID!", "id: $id", "{ run { id status } }",
                      "ws-payload", id=w.A.run_done), streamed,
          lambda w: [(q("runUpdates", "$id: ID!", "id: $id", "{ run { id status } }",
                        "ws-payload", id=w.A.run_running), error_code("NOT_FOUND"))]),
]

RUN_FIELDS = "{ id status environment correlationId pipeline { id name } }"
PIPELINE_FIELDS = "{ id name kind description connection { id name } }"


def one(field_name: str, selection: str, attr: str, *others: str,
        id_type: str = "ID!", arg: str = "id", scope: str = READ) -> Entry:
    """A query of one object by id: null for B, whichever of A's ids it asks for."""
    def call(w: World, key: str = attr) -> Gql:
        return q(field_name, f"$id: {id_type}", f"{arg}: $id", selection, id=w.A[key])

    return Entry(f"Query.{field_name}", scope, call, has_data,
                 lambda w: [(call(w, key), null) for key in (attr, *others)])


def listing(field_name: str, selection: str, *filtered: tuple[str, str, str],
            scope: str = READ) -> Entry:
    """A list: B's own (all of it), and empty when filtered by A's ids
    (`filtered`: argument, GraphQL type, the name of A's id)."""
    def plain(w: World) -> Gql:
        return q(field_name, "", "", selection)

    def by(w: World, argument: str, kind: str, attr: str) -> Gql:
        return q(field_name, f"$v: {kind}", f"{argument}: $v", selection, v=w.A[attr])

    path = "nodes" if "nodes" in selection else ""
    return Entry(f"Query.{field_name}", scope, plain, has_data,
                 lambda w: [(plain(w), own), *((by(w, *f), empty(path)) for f in filtered)])


QUERY_ENTRIES = [
    one("connection", "{ id name settings }", "conn"),
    Entry("Query.connectionSecrets", READ,
          lambda w: q("connectionSecrets", "$c: ID!", "connectionId: $c", "{ name set }",
                      c=w.A.conn), own,
          lambda w: [(q("connectionSecrets", "$c: ID!", "connectionId: $c", "{ name set }",
                        c=w.A.conn), empty(""))]),
    Entry("Query.connections", READ, lambda w: q("connections", "", "", "{ nodes { id } }"),
          has_data,
          lambda w: [(q("connections", "", "", "{ nodes { id name settings } }"), own),
                     (q("connections", "", 'nameContains: "acme"', "{ nodes { id } }"),
                      empty()),
                     (q("connections", "$c: String", "after: $c", "{ nodes { id name } }",
                        c=w.A.cursor_conn), own)]),
    one("pipeline", PIPELINE_FIELDS, "pipeline", "delivery_pipeline", "wp", "spare_pipeline"),
    listing("pipelines", "{ nodes { id name } pageInfo { endCursor } }",
            ("connectionId", "ID", "conn")),
    one("run", RUN_FIELDS, "run_done", "run_pending", "exec_parent", "wh_done"),
    listing("runs", "{ nodes { id status } pageInfo { endCursor } }",
            ("pipelineId", "ID", "pipeline"), ("connectionId", "ID", "conn"),
            ("pipelineId", "ID", "wp_anomaly"),
            # a cursor is an id: one taken from A's page must not page into A's rows
            ("after", "String", "cursor_run_done"), ("after", "String", "cursor_wh_open")),
    one("gateway", "{ id name labels version }", "gateway", "spare_gateway"),
    Entry("Query.gateways", READ, lambda w: q("gateways", "", "", "{ nodes { id } }"), has_data,
          lambda w: [(q("gateways", "", "includeRevoked: true", "{ nodes { id name } }"),
                      own)]),
    # webhook endpoints: readable with `read` or `write`, as over REST (`require_viewer`)
    one("webhookEndpoint", "{ id url eventTypes }", "endpoint", "default_endpoint",
        scope=VIEWER),
    listing("webhookEndpoints", "{ nodes { id url } }", scope=VIEWER),
    one("webhookDelivery", "{ id eventType payload messageId }", "delivery", "alert_delivery"),
    listing("webhookDeliveries", "{ nodes { id eventType payload } }",
            ("endpointId", "ID", "endpoint"), ("runId", "ID", "run_done")),
    listing("pipelineTypes", "{ id name }"),
    one("pipelineType", "{ id name }", "pipeline_type"),
    listing("addresses", "{ id name namespace }"),
    Entry("Query.address", READ,
          lambda w: q("address", "$id: ID", "id: $id", "{ id name }", id=w.A.address_source),
          has_data,
          lambda w: [(q("address", "$id: ID", "id: $id", "{ id name }", id=w.A.address_source),
                      null),
                     (q("address", "$n: String", "name: $n", "{ id name }",
                        n="acme_db.s.lookup"), null),
                     (q("address", "$n: String", "name: $n, namespace: null", "{ id }",
                        n="ACME_DB.S.LOOKUP"), null)]),
    Entry("Query.lineage", READ,
          lambda w: q("lineage", "$id: ID!", "addressId: $id", "{ root { id } nodes { id } "
                      "edges { sourceId targetId } }", id=w.A.address_source), has_data,
          lambda w: [(q("lineage", "$id: ID!", "addressId: $id", "{ root { id } }",
                        id=w.A[a]), null) for a in ("address_source", "address_target")]),
    Entry("Query.lineageGraph", READ,
          lambda w: q("lineageGraph", "$n: String!", "nodeId: $n", "{ id inEdges { origin } }",
                      n="dataset:default:acme_db.s.lookup"), has_data,
          lambda w: [(q("lineageGraph", "$n: String!", "nodeId: $n", "{ id }",
                        n="dataset:default:acme_db.s.lookup"), null)]),
    listing("anomalyRules", "{ id pipelineId metricField }",
            ("pipelineId", "ID", "wp_anomaly")),
    listing("anomalyResults", "{ nodes { id runId pipelineId } }",
            ("pipelineId", "ID", "wp_anomaly"), ("runId", "ID", "exec_anomalous")),
    listing("timelinessLogs", "{ nodes { id runId pipelineId } }"),
    listing("freshnessLogs", "{ nodes { id pipelineId } }"),
    listing("alertChannels", "{ id name url }"),
]


def success(*names: str) -> Expect:
    return typename(*names)


MUTATION_ENTRIES = [
    Entry("Mutation.createConnection", WRITE,
          lambda w: m("createConnection", "$input: CreateConnectionInput!", "input: $input",
                      "... on ConnectionSuccess { connection { id } }",
                      input={"name": "acme-gql-conn", "warehouseType": "snowflake"}),
          success("ConnectionSuccess"),
          # names are unique per organisation: A's are free in B (no existence oracle)
          lambda w: [(m("createConnection", "$input: CreateConnectionInput!", "input: $input",
                        "... on ConnectionSuccess { connection { id name pipelines { id } } }",
                        input={"name": name, "warehouseType": "snowflake"}),
                      success("ConnectionSuccess"))
                     for name in ("bravo-gql-conn", "acme-warehouse-spare")]),
    Entry("Mutation.setConnectionSecrets", WRITE,
          lambda w: m("setConnectionSecrets", "$input: SetConnectionSecretsInput!",
                      "input: $input", input={"connectionId": w.A.conn,
                                              "secrets": {"ACME_TOKEN": None}}),
          success("ConnectionSecretsSuccess"),
          lambda w: [(m("setConnectionSecrets", "$input: SetConnectionSecretsInput!",
                        "input: $input", input={"connectionId": w.A.conn,
                                                "secrets": {"BRAVO": None}}),
                      NOT_FOUND_ERROR)]),
    Entry("Mutation.updateConnection", WRITE,
          lambda w: m("updateConnection", "$input: UpdateConnectionInput!", "input: $input",
                      input={"id": w.A.conn, "name": "acme-warehouse"}),
          success("ConnectionSuccess"),
          lambda w: [(m("updateConnection", "$input: UpdateConnectionInput!", "input: $input",
                        "... on ConnectionSuccess { connection { id name settings } }",
                        input={"id": w.A.conn, **change}), NOT_FOUND_ERROR)
                     for change in ({"name": "bravo-hijack"}, {"settings": {"account": "b"}},
                                    {})]),
    Entry("Mutation.startRun", REPORT,
          lambda w: m("startRun", "$input: StartRunInput!", "input: $input",
                      input={"connectionId": w.A.conn}), success("StartRunSuccess"),
          lambda w: [(m("startRun", "$input: StartRunInput!", "input: $input",
                        "... on StartRunSuccess { run { id } }", input=given), NOT_FOUND_ERROR)
                     for given in ({"connectionId": w.A.conn},
                                   {"pipelineId": w.A.delivery_pipeline},
                                   {"pipelineId": w.A.pipeline})]),
    Entry("Mutation.reportRun", REPORT,
          lambda w: m("reportRun", "$input: ReportRunInput!", "input: $input",
                      input={"runId": w.A.wh_spare_gql, "completedAt": now(),
                             "eventsDelivered": 3}), success("ReportRunSuccess"),
          lambda w: [(m("reportRun", "$input: ReportRunInput!", "input: $input",
                        "... on ReportRunSuccess { run { id eventsDelivered } }",
                        input={"runId": r, "completedAt": now(), "eventsDelivered": 1}),
                      NOT_FOUND_ERROR) for r in (w.A.wh_open, w.A.wh_done, w.A.run_running)]),
    Entry("Mutation.createPipeline", WRITE,
          lambda w: m("createPipeline", "$input: CreatePipelineInput!", "input: $input",
                      input={"name": "acme-gql-pipeline"}), success("PipelineSuccess"),
          lambda w: [(m("createPipeline", "$input: CreatePipelineInput!", "input: $input",
                        "... on PipelineSuccess { pipeline { id connection { id } } }",
                        input={"name": "bravo-gql-pipeline", "connectionId": w.A.conn}),
                      INVALID),
                     (m("createPipeline", "$input: CreatePipelineInput!", "input: $input",
                        "... on PipelineSuccess { pipeline { id } }",
                        input={"name": "acme-spare-2"}), success("PipelineSuccess"))]),
    Entry("Mutation.updatePipeline", WRITE,
          lambda w: m("updatePipeline", "$input: UpdatePipelineInput!", "input: $input",
                      input={"id": w.A.pipeline, "description": "acme gql"}),
          success("PipelineSuccess"),
          lambda w: [(m("updatePipeline", "$input: UpdatePipelineInput!", "input: $input",
                        "... on PipelineSuccess { pipeline { id name } }",
                        input={"id": w.A[p], "description": "bravo"}), NOT_FOUND_ERROR)
                     for p in ("pipeline", "delivery_pipeline", "wp")]),
    Entry("Mutation.createRun", WRITE,
          lambda w: m("createRun", "$input: CreateRunInput!", "input: $input",
                      input={"pipelineId": w.A.pipeline}), success("RunSuccess"),
          lambda w: [(m("createRun", "$input: CreateRunInput!", "input: $input",
                        "... on RunSuccess { run { id } }", input=given), INVALID)
                     for given in ({"pipelineId": w.A.pipeline},
                                   {"pipelineId": w.B.pipeline,
                                    "targetGatewayId": w.A.gateway})]
          + [(m("createRun", "$input: CreateRunInput!", "input: $input",
                "... on RunSuccess { run { id correlationId } }",
                input={"pipelineId": w.B.pipeline, "correlationId": "acme-corr-done"}),
              success("RunSuccess"))]),
    Entry("Mutation.updateRun", WRITE,
          lambda w: m("updateRun", "$input: UpdateRunInput!", "input: $input",
                      input={"id": w.A.run_pending, "appendLog": {"message": "acme gql log"}}),
          success("RunSuccess"),
          lambda w: [(m("updateRun", "$input: UpdateRunInput!", "input: $input",
                        "... on RunSuccess { run { id status } }", input=given),
                      NOT_FOUND_ERROR)
                     for given in ({"id": w.A.run_running, "appendLog": {"message": "bravo"}},
                                   {"id": w.A.run_pending, "status": "CANCELLED"},
                                   {"id": w.A.run_done, "errorSummary": "bravo"},
                                   {"id": w.A.exec_open, "status": "FAILED"})]),
    Entry("Mutation.cancelRun", WRITE,
          lambda w: m("cancelRun", "$id: ID!", "id: $id", id=w.A.run_cancel),
          success("RunSuccess"),
          lambda w: [(m("cancelRun", "$id: ID!", "id: $id", "... on RunSuccess { run { id } }",
                        id=w.A[r]), NOT_FOUND_ERROR)
                     for r in ("run_pending", "run_running", "exec_open")]),
    Entry("Mutation.createGateway", ADMIN,
          lambda w: m("createGateway", "$input: CreateGatewayInput!", "input: $input",
                      input={"name": "acme-gql-gw"}), success("GatewayTokenSuccess"),
          lambda w: [(m("createGateway", "$input: CreateGatewayInput!", "input: $input",
                        "... on GatewayTokenSuccess { gateway { id name } }",
                        input={"name": name}), success("GatewayTokenSuccess"))
                     for name in ("bravo-gql-gw", "acme-gw-spare")]),
    Entry("Mutation.issueGatewayToken", ADMIN,
          lambda w: m("issueGatewayToken", "$input: IssueGatewayTokenInput!", "input: $input",
                      input={"gatewayId": w.A.gateway}), success("GatewayTokenSuccess"),
          lambda w: [(m("issueGatewayToken", "$input: IssueGatewayTokenInput!",
                        "input: $input", "... on GatewayTokenSuccess { token }",
                        input={"gatewayId": w.A[g], "revokeOthers": True}), NOT_FOUND_ERROR)
                     for g in ("gateway", "spare_gateway")]),
    Entry("Mutation.revokeGateway", ADMIN,
          lambda w: m("revokeGateway", "$id: ID!", "id: $id", id=w.A.spare_gateway),
          success("GatewaySuccess"),
          lambda w: [(m("revokeGateway", "$id: ID!", "id: $id",
                        "... on GatewaySuccess { gateway { id } }", id=w.A.gateway),
                      NOT_FOUND_ERROR)]),
    Entry("Mutation.setWebhookEndpoint", WRITE,
          lambda w: m("setWebhookEndpoint", "$input: SetWebhookEndpointInput!", "input: $input",
                      input={"url": f"{DEAD_URL}/acme-default"}),
          success("WebhookEndpointSuccess"),
          lambda w: [(m("setWebhookEndpoint", "$input: SetWebhookEndpointInput!",
                        "input: $input",
                        "... on WebhookEndpointSuccess { endpoint { id url secret } }",
                        input={"url": f"{DEAD_URL}/bravo", "pipelineId": w.A[p]}),
                      NOT_FOUND_ERROR) for p in ("pipeline", "spare_pipeline")]
          + [(m("setWebhookEndpoint", "$input: SetWebhookEndpointInput!", "input: $input",
                "... on WebhookEndpointSuccess { endpoint { id url secret } }",
                input={"url": f"{DEAD_URL}/bravo-gql-default"}),
              success("WebhookEndpointSuccess"))]),
    Entry("Mutation.deleteWebhookEndpoint", WRITE,
          lambda w: m("deleteWebhookEndpoint", "$id: ID!", "id: $id", id=w.A.spare_endpoint),
          success("DeleteWebhookEndpointSuccess"),
          lambda w: [(m("deleteWebhookEndpoint", "$id: ID!", "id: $id", id=w.A[e]),
                      NOT_FOUND_ERROR) for e in ("endpoint", "default_endpoint")]),
    Entry("Mutation.rotateWebhookSecret", WRITE,
          lambda w: m("rotateWebhookSecret", "$id: ID!", "id: $id", id=w.A.endpoint),
          success("WebhookEndpointSuccess"),
          lambda w: [(m("rotateWebhookSecret", "$id: ID!", "id: $id",
                        "... on WebhookEndpointSuccess { endpoint { secret } }", id=w.A[e]),
                      NOT_FOUND_ERROR) for e in ("endpoint", "default_endpoint")]),
    Entry("Mutation.redeliverWebhook", WRITE,
          lambda w: m("redeliverWebhook", "$id: ID!", "id: $id", id=w.A.delivery),
          success("WebhookDeliverySuccess"),
          lambda w: [(m("redeliverWebhook", "$id: ID!", "id: $id",
                        "... on WebhookDeliverySuccess { delivery { id payload } }", id=w.A[d]),
                      NOT_FOUND_ERROR) for d in ("delivery", "alert_delivery")]),
    Entry("Mutation.createAnomalyRule", WRITER,
          lambda w: m("createAnomalyRule", "$input: AnomalyRuleInput!", "input: $input",
                      input={"pipelineId": w.A.wp_anomaly, "metricField": "duration_seconds"}),
          success("AnomalyRuleSuccess"),
          lambda w: [(m("createAnomalyRule", "$input: AnomalyRuleInput!", "input: $input",
                        "... on AnomalyRuleSuccess { rule { id } }",
                        input={"pipelineId": w.A.wp_anomaly, "metricField": metric}),
                      NOT_FOUND_ERROR) for metric in ("duration_seconds", "updates")]),
    Entry("Mutation.updateAnomalyRule", WRITER,
          lambda w: m("updateAnomalyRule", "$input: UpdateAnomalyRuleInput!", "input: $input",
                      input={"id": w.A.rule, "active": True}), success("AnomalyRuleSuccess"),
          lambda w: [(m("updateAnomalyRule", "$input: UpdateAnomalyRuleInput!",
                        "input: $input", "... on AnomalyRuleSuccess { rule { id pipelineId } }",
                        input={"id": w.A.rule, "active": False}), NOT_FOUND_ERROR)]),
    Entry("Mutation.updatePipelineType", WRITER,
          lambda w: m("updatePipelineType", "$input: UpdatePipelineTypeInput!",
                      "input: $input", input={"id": w.A.pipeline_type,
                                              "muteTimelinessCheck": False}),
          success("PipelineTypeSuccess"),
          lambda w: [(m("updatePipelineType", "$input: UpdatePipelineTypeInput!",
                        "input: $input", "... on PipelineTypeSuccess { pipelineType { id } }",
                        input={"id": w.A.pipeline_type, "muteTimelinessCheck": True}),
                      NOT_FOUND_ERROR)]),
    Entry("Mutation.unflagAnomaly", WRITER,
          lambda w: m("unflagAnomaly", "$p: ID!, $r: ID!", "pipelineId: $p, runId: $r, "
                      'metricFields: ["inserts"]', p=w.A.wp_anomaly, r=w.A.exec_anomalous),
          success("DoneSuccess"),
          lambda w: [(m("unflagAnomaly", "$p: ID!, $r: ID!", "pipelineId: $p, runId: $r, "
                        'metricFields: ["duration_seconds"]', p=p, r=w.A.exec_anomalous),
                      NOT_FOUND_ERROR) for p in (w.A.wp_anomaly, w.B.wp)],
          allowed=("write",)),  # it unflags: a second call finds nothing to unflag
    Entry("Mutation.requestTimelinessCheck", WRITER,
          lambda w: m("requestTimelinessCheck", "", "lookbackMinutes: 30"),
          success("DoneSuccess"),
          lambda w: [(m("requestTimelinessCheck", "", ""), success("DoneSuccess"))]),
    Entry("Mutation.requestFreshnessCheck", WRITER,
          lambda w: m("requestFreshnessCheck", "", ""), success("DoneSuccess"),
          lambda w: [(m("requestFreshnessCheck", "", ""), success("DoneSuccess"))]),
    Entry("Mutation.createAlertChannel", WRITE,
          lambda w: m("createAlertChannel", "$input: CreateAlertChannelInput!", "input: $input",
                      input={"name": "acme-gql-alerts", "kind": "slack",
                             "url": f"{DEAD_URL}/acme-gql-alerts"}),
          success("AlertChannelSuccess"),
          lambda w: [(m("createAlertChannel", "$input: CreateAlertChannelInput!",
                        "input: $input", "... on AlertChannelSuccess { channel { id } secret }",
                        input={"name": name, "kind": "webhook",
                               "url": f"{DEAD_URL}/bravo-gql-alerts"}),
                      success("AlertChannelSuccess"))
                     for name in ("bravo-gql-alerts", "acme-alerts-spare")]),
    Entry("Mutation.setAlertChannelEnabled", WRITE,
          lambda w: m("setAlertChannelEnabled", "$id: ID!", "id: $id, enabled: true",
                      id=w.A.channel), success("AlertChannelSuccess"),
          lambda w: [(m("setAlertChannelEnabled", "$id: ID!", "id: $id, enabled: false",
                        "... on AlertChannelSuccess { channel { id name url } }", id=w.A[c]),
                      NOT_FOUND_ERROR) for c in ("channel", "spare_channel")]),
    Entry("Mutation.deleteAlertChannel", WRITE,
          lambda w: m("deleteAlertChannel", "$id: ID!", "id: $id", id=w.A.spare_channel),
          success("DoneSuccess"),
          lambda w: [(m("deleteAlertChannel", "$id: ID!", "id: $id", id=w.A[c]),
                      NOT_FOUND_ERROR) for c in ("channel", "spare_channel")]),
]

SUBSCRIPTION_ENTRIES = [
    Entry("Subscription.runUpdates", READ,
          lambda w: q("runUpdates", "$id: ID!", "id: $id",
                      "{ run { id status } newLogLines { seq message } }", "ws",
                      id=w.A.run_done), streamed,
          lambda w: [(q("runUpdates", "$id: ID!, $after: BigInt", "id: $id, logsAfter: $after",
                        "{ run { id status } newLogLines { message } newSamples { seq } }",
                        "ws", id=w.A[r], after=0), error_code("NOT_FOUND"))
                     for r in ("run_running", "run_done", "exec_open")]),
]

ENTRIES = REST_ENTRIES + QUERY_ENTRIES + MUTATION_ENTRIES + SUBSCRIPTION_ENTRIES


# ----------------------------------------------------------------------------------- nested


@dataclass(frozen=True)
class Probe:
    """A nested field reached through a mutation's payload with a token that lacks `read`:
    `refused` (FORBIDDEN, no value) unless the field allows that token."""

    who: str
    request: Callable[[World], Gql]
    path: str  # where the field's value is, under `data.f`
    refused: bool = True


@dataclass(frozen=True)
class Nested:
    """A field with a resolver of its own on a non-root type. `a`: reaching it on A's object
    as A (it resolves: the world has what it loads); `b`: on B's object that `cross_link`
    pointed at A's (it must show nothing of A's; `absent`: it is null or empty); `probes`;
    `why`: why there is no probe (or no cross-link)."""

    key: str
    a: Callable[[World], Gql]
    b: Callable[[World], Gql]
    path: str
    absent: bool = True
    probes: tuple[Probe, ...] = ()
    why: str = ""


def by_id(root: str, selection: str, attr: str, org: str = "A", id_type: str = "ID!",
          arg: str = "id") -> Callable[[World], Gql]:
    return lambda w: q(root, f"$id: {id_type}", f"{arg}: $id", selection,
                       id=getattr(w, org)[attr])


def noop_update(field_name: str, input_type: str, success_type: str, payload: str, attr: str,
                selection: str) -> Callable[[World], Gql]:
    """A mutation that changes nothing (an update without changes), for its payload."""
    return lambda w: m(field_name, f"$input: {input_type}!", "input: $input",
                       f"... on {success_type} {{ {payload} {{ {selection} }} }}",
                       input={"id": w.A[attr]})


def run_probe(attr: str, selection: str, path: str) -> tuple[Probe, ...]:
    return (Probe("write", noop_update("updateRun", "UpdateRunInput", "RunSuccess", "run", attr,
                                       selection), f"run.{path}"),)


def pipeline_probe(attr: str, selection: str, path: str, refused: bool = True) -> tuple[Probe]:
    return (Probe("write", noop_update("updatePipeline", "UpdatePipelineInput",
                                       "PipelineSuccess", "pipeline", attr, selection),
                  f"pipeline.{path}", refused),)


def connection_probe(selection: str, path: str) -> tuple[Probe]:
    return (Probe("write", noop_update("updateConnection", "UpdateConnectionInput",
                                       "ConnectionSuccess", "connection", "conn", selection),
                  f"connection.{path}"),)


def endpoint_probe(selection: str, path: str, refused: bool = True) -> tuple[Probe]:
    """Setting A's pipeline endpoint to what it is, for the endpoint in the payload."""
    return (Probe("write", lambda w: m(
        "setWebhookEndpoint", "$input: SetWebhookEndpointInput!", "input: $input",
        f"... on WebhookEndpointSuccess {{ endpoint {{ {selection} }} }}",
        input={"url": f"{DEAD_URL}/acme-orders-hook", "pipelineId": w.A.pipeline}),
        f"endpoint.{path}", refused),)


def delivery_probe(selection: str, path: str, refused: bool = True) -> tuple[Probe]:
    """The only payload with a delivery: redeliverWebhook's (a `write` mutation)."""
    return (Probe("write", lambda w: m(
        "redeliverWebhook", "$id: ID!", "id: $id",
        f"... on WebhookDeliverySuccess {{ delivery {{ {selection} }} }}", id=w.A.delivery),
        f"delivery.{path}", refused),)


TELEMETRY = "telemetry { status eventsLast24h { total } eventsLast7d { total } " \
            "recentErrors { runId message } }"
READ_ONLY = "reachable only through read-scoped queries (no mutation returns it)"
MUTATION_OWN_RUN = ("the run the mutation itself found in the caller's organisation; loads "
                    "nothing (the mutation's own scope is probed at the root)")

NESTED = [
    Nested("Connection.telemetry", by_id("connection", f"{{ {TELEMETRY} }}", "conn"),
           by_id("connection", f"{{ {TELEMETRY} }}", "conn", "B"), "telemetry.recentErrors",
           absent=False, probes=connection_probe("telemetry { status }", "telemetry")),
    Nested("Connection.pipelines", by_id("connection", "{ pipelines { id name } }", "conn"),
           by_id("connection", "{ pipelines { id name } }", "conn", "B"), "pipelines",
           absent=False, probes=connection_probe("pipelines { id }", "pipelines")),
    Nested("Connection.runs", by_id("connection", "{ runs { nodes { id } } }", "conn"),
           by_id("connection", "{ runs(first: 200) { nodes { id } } }", "conn", "B"),
           "runs", absent=False, probes=connection_probe("runs { nodes { id } }", "runs")),
    Nested("Gateway.online", by_id("gateway", "{ online }", "gateway"),
           by_id("gateway", "{ id online }", "gateway", "B"), "online", absent=False,
           why="computed from the gateway itself; loads nothing"),
    Nested("LineageEdge.pipeline",
           by_id("lineage", "{ edges { pipeline { id name } } }", "address_source",
                 arg="addressId"),
           by_id("lineage", "{ edges { sourceId targetId pipeline { id name } } }",
                 "linked_address", "B", arg="addressId"), "edges.0.pipeline", why=READ_ONLY),
    Nested("Address.addressType",
           by_id("address", "{ addressType { id name } }", "address_source", id_type="ID"),
           by_id("address", "{ addressType { id name } }", "linked_address", "B", id_type="ID"),
           "addressType", why=READ_ONLY),
    Nested("Pipeline.pipelineType", by_id("pipeline", "{ pipelineType { id name } }", "wp"),
           by_id("pipeline", "{ pipelineType { id name } }", "linked_pipeline", "B"),
           "pipelineType", probes=pipeline_probe("wp", "pipelineType { id }", "pipelineType")),
    # a write token may read (and set) webhook settings
    Nested("Pipeline.webhookEndpoint",
           by_id("pipeline", "{ webhookEndpoint { id url } }", "pipeline"),
           by_id("pipeline", "{ webhookEndpoint { id url } }", "pipeline", "B"),
           "webhookEndpoint",
           probes=pipeline_probe("pipeline", "webhookEndpoint { id }", "webhookEndpoint",
                                 refused=False)),
    Nested("Pipeline.connection",
           by_id("pipeline", "{ connection { id name } }", "delivery_pipeline"),
           by_id("pipeline", "{ connection { id name } }", "linked_pipeline", "B"),
           "connection",
           probes=pipeline_probe("delivery_pipeline", "connection { id }", "connection")),
    Nested("Pipeline.telemetry", by_id("pipeline", f"{{ {TELEMETRY} }}", "delivery_pipeline"),
           by_id("pipeline", f"{{ {TELEMETRY} }}", "delivery_pipeline", "B"),
           "telemetry.recentErrors", absent=False,
           probes=pipeline_probe("delivery_pipeline", "telemetry { status }", "telemetry")),
    Nested("Pipeline.runs", by_id("pipeline", "{ runs { nodes { id } } }", "pipeline"),
           by_id("pipeline", "{ runs(first: 200) { nodes { id } } }", "delivery_pipeline",
                 "B"), "runs", absent=False,
           probes=pipeline_probe("pipeline", "runs { nodes { id } }", "runs")),
    Nested("Run.pipeline", by_id("run", "{ pipeline { id name } }", "run_done"),
           by_id("run", "{ id pipeline { id name } }", "linked_run_pipeline", "B"), "pipeline",
           probes=(*run_probe("run_done", "pipeline { id }", "pipeline"),
                   Probe("report", lambda w: m(
                       "startRun", "$input: StartRunInput!", "input: $input",
                       "... on StartRunSuccess { run { pipeline { id name } } }",
                       input={"connectionId": w.A.conn}), "run.pipeline"))),
    # A run mutation's answer builds its run's object only when `run` is selected
    # (runwatch.schema.run.HoldsRun): the run the mutation itself loaded, in its organisation.
    Nested("RunSuccess.run",
           noop_update("updateRun", "UpdateRunInput", "RunSuccess", "run", "run_done", "id"),
           noop_update("updateRun", "UpdateRunInput", "RunSuccess", "run", "run_done",
                       "id status"), "run", why=MUTATION_OWN_RUN),
    Nested("StartRunSuccess.run",
           lambda w: m("startRun", "$input: StartRunInput!", "input: $input",
                       "... on StartRunSuccess { run { id } }", input={"connectionId": w.A.conn}),
           lambda w: m("startRun", "$input: StartRunInput!", "input: $input",
                       "... on StartRunSuccess { run { id status } }",
                       input={"connectionId": w.A.conn}), "run", why=MUTATION_OWN_RUN),
    Nested("ReportRunSuccess.run",
           lambda w: m("reportRun", "$input: ReportRunInput!", "input: $input",
                       "... on ReportRunSuccess { run { id } }", input={
                           "runId": w.A.wh_spare_nested, "completedAt": now(),
                           "eventsDelivered": 2}),
           lambda w: m("reportRun", "$input: ReportRunInput!", "input: $input",
                       "... on ReportRunSuccess { run { id eventsDelivered } }", input={
                           "runId": w.A.wh_open, "completedAt": now(), "eventsDelivered": 1}),
           "run", why=MUTATION_OWN_RUN),
    Nested("Run.parent", by_id("run", "{ parent { id } }", "exec_child"),
           by_id("run", "{ parent { id status } }", "linked_run", "B"), "parent",
           probes=run_probe("exec_child", "parent { id }", "parent")),
    Nested("Run.children", by_id("run", "{ children { id } }", "exec_parent"),
           by_id("run", "{ children { id status } }", "linked_run", "B"), "children",
           probes=run_probe("exec_parent", "children { id }", "children")),
    Nested("Run.anomalyResults", by_id("run", "{ anomalyResults { id } }", "exec_anomalous"),
           by_id("run", "{ anomalyResults { id runId } }", "linked_run", "B"),
           "anomalyResults",
           probes=run_probe("exec_anomalous", "anomalyResults { id }", "anomalyResults")),
    Nested("Run.gateway", by_id("run", "{ gateway { id name } }", "run_running"),
           by_id("run", "{ gateway { id name } }", "linked_run", "B"), "gateway",
           probes=run_probe("run_running", "gateway { id }", "gateway")),
    Nested("Run.targetGateway", by_id("run", "{ targetGateway { id name } }", "run_targeted"),
           by_id("run", "{ targetGateway { id name } }", "linked_run", "B"), "targetGateway",
           probes=run_probe("run_targeted", "targetGateway { id }", "targetGateway")),
    Nested("Run.logEntries", by_id("run", "{ logEntries { nodes { seq message } } }",
                                   "run_done"),
           by_id("run", "{ logEntries { nodes { seq message } } }", "linked_run", "B"),
           "logEntries",
           probes=run_probe("run_done", "logEntries { nodes { seq } }", "logEntries"),
           why="log lines hang off their run: no row can tie them to another organisation"),
    Nested("Run.telemetrySamples",
           by_id("run", "{ telemetrySamples { nodes { seq phase } } }", "run_done"),
           by_id("run", "{ telemetrySamples { nodes { seq phase } } }", "linked_run", "B"),
           "telemetrySamples",
           probes=run_probe("run_done", "telemetrySamples { nodes { seq } }",
                            "telemetrySamples"),
           why="samples hang off their run: no row can tie them to another organisation"),
    Nested("Run.webhookDeliveries",
           by_id("run", "{ webhookDeliveries { nodes { id } } }", "run_done"),
           by_id("run", "{ webhookDeliveries { nodes { id payload } } }", "linked_run", "B"),
           "webhookDeliveries",
           probes=run_probe("run_done", "webhookDeliveries { nodes { id } }",
                            "webhookDeliveries")),
    Nested("WebhookDelivery.attempts",
           by_id("webhookDelivery", "{ attempts { attemptedAt error } }", "delivery"),
           by_id("webhookDelivery", "{ attempts { attemptedAt error } }", "linked_delivery",
                 "B"), "attempts", probes=delivery_probe("attempts { error }", "attempts"),
           why="attempts hang off their delivery: no row can tie them to another "
               "organisation"),
    Nested("WebhookDelivery.endpoint",
           by_id("webhookDelivery", "{ endpoint { id url } }", "delivery"),
           by_id("webhookDelivery", "{ endpoint { id url secret } }", "linked_delivery", "B"),
           "endpoint", probes=delivery_probe("endpoint { id }", "endpoint", refused=False)),
    Nested("WebhookDelivery.run", by_id("webhookDelivery", "{ run { id } }", "delivery"),
           by_id("webhookDelivery", "{ run { id status } }", "linked_delivery", "B"), "run",
           probes=delivery_probe("run { id }", "run")),
    # the secret needs `write`: a `read` token is refused it (a query's payload)
    Nested("WebhookEndpoint.secret", by_id("webhookEndpoint", "{ secret }", "endpoint"),
           by_id("webhookEndpoint", "{ id secret }", "linked_endpoint", "B"), "secret",
           absent=False,
           probes=(Probe("read", by_id("webhookEndpoint", "{ id secret }", "endpoint"),
                         "secret"),
                   *endpoint_probe("secret", "secret", refused=False))),
    Nested("WebhookEndpoint.pipeline",
           by_id("webhookEndpoint", "{ pipeline { id name } }", "endpoint"),
           by_id("webhookEndpoint", "{ pipeline { id name } }", "linked_endpoint", "B"),
           "pipeline", probes=endpoint_probe("pipeline { id }", "pipeline")),
    Nested("WebhookEndpoint.deliveries",
           by_id("webhookEndpoint", "{ deliveries { nodes { id } } }", "endpoint"),
           by_id("webhookEndpoint", "{ deliveries { nodes { id payload } } }",
                 "linked_endpoint", "B"), "deliveries",
           probes=endpoint_probe("deliveries { nodes { id } }", "deliveries")),
]


# ----------------------------------------------------------------------------------- coverage


ROOTS = ("Query", "Mutation", "Subscription")


def route_keys(app: Any) -> set[str]:
    keys = set()
    for route in app.routes:
        path = route.path.rstrip("/") or "/"
        if isinstance(route, WebSocketRoute):
            keys.add(f"WEBSOCKET {path}")
        elif isinstance(route, Route):
            keys.update(f"{method} {path}" for method in route.methods or () if method != "HEAD")
        else:
            keys.add(f"{type(route).__name__} {path}")
    return keys


def root_keys(schema: Any) -> set[str]:
    keys = set()
    for root, kind in zip(ROOTS, (schema._schema.query_type, schema._schema.mutation_type,
                                  schema._schema.subscription_type), strict=True):
        keys.update(f"{root}.{name}" for name in kind.fields)
    return keys


def nested_keys(schema: Any) -> set[str]:
    """Fields of non-root object types with a resolver of their own (every field with
    arguments has one): the fields that load something."""
    keys = set()
    for name, kind in schema.schema_converter.type_map.items():
        definition = kind.definition
        if not isinstance(definition, StrawberryObjectDefinition) or definition.is_input:
            continue
        if name in ROOTS:
            continue
        for f in definition.fields:
            if f.base_resolver is not None or f.arguments:
                keys.add(f"{name}.{schema.config.name_converter.get_graphql_name(f)}")
    return keys


def coverage_problems(what: str, existing: set[str], covered: list[str]) -> list[str]:
    problems = [f"{what} {key!r} has no entry in the tenancy table"
                for key in sorted(existing - set(covered))]
    problems += [f"the tenancy table's entry {key!r} names no existing {what}"
                 for key in sorted(set(covered) - existing)]
    problems += [f"the tenancy table has {key!r} twice"
                 for key in sorted({k for k in covered if covered.count(k) > 1})]
    return problems


def test_the_table_covers_every_rest_route(settings):
    app = create_app(settings)
    keys = [e.key for e in REST_ENTRIES]
    problems = coverage_problems("route", route_keys(app), keys)
    assert not problems, "\n".join(problems)


def test_the_table_covers_every_root_field():
    keys = [e.key for e in QUERY_ENTRIES + MUTATION_ENTRIES + SUBSCRIPTION_ENTRIES]
    problems = coverage_problems("field", root_keys(build_schema()), keys)
    assert not problems, "\n".join(problems)


def test_the_table_covers_every_nested_field_that_loads():
    problems = coverage_problems("field", nested_keys(build_schema()), [n.key for n in NESTED])
    for n in NESTED:
        if not n.probes and not n.why:
            problems.append(f"{n.key}: neither a scope probe nor why there is none")
    assert not problems, "\n".join(problems)


def test_the_coverage_check_names_what_is_missing(settings):
    """The coverage check itself: a route or field without an entry is named."""
    app = create_app(settings)
    keys = [e.key for e in REST_ENTRIES if e.key != "PATCH /address"]
    assert coverage_problems("route", route_keys(app), keys) == [
        "route 'PATCH /address' has no entry in the tenancy table"]
    fields = [e.key for e in QUERY_ENTRIES + MUTATION_ENTRIES + SUBSCRIPTION_ENTRIES]
    assert coverage_problems("field", root_keys(build_schema()), [*fields, "Query.gone"]) == [
        "the tenancy table's entry 'Query.gone' names no existing field"]
    assert targets("GET /api/elt/runs/{id}", Rest("GET", "/api/elt/runs/5/"))
    assert not targets("GET /api/elt/runs/{id}", Rest("GET", "/api/elt/pipelines/5"))
    assert not targets("GET /api/elt/runs/{id}", Rest("PATCH", "/api/elt/runs/5"))
    assert targets("Query.run", q("run", "$id: ID!", "id: $id", "{ id }", id=1))
    assert not targets("Query.runs", q("run", "$id: ID!", "id: $id", "{ id }", id=1))


def test_the_leak_detector():
    """Integers, ids inside strings and cursors, A's strings; what the caller sent is not a
    leak."""
    forbidden = Forbidden(ids={140000009, 7777701}, strings={"acme-orders", "whsec_secret"})
    cursor = base64.urlsafe_b64encode(b"id:140000009").decode()
    assert leaks({"a": [{"id": "140000009"}]}, forbidden, {}) == ["A's id/number 140000009"]
    assert leaks({"total": 7777701}, forbidden, {}) == ["A's id/number 7777701"]
    assert leaks({"message": "No run 140000009 here."}, forbidden, {}) == [
        "A's id/number 140000009"]
    assert leaks({"endCursor": cursor}, forbidden, {}) == ["A's id/number 140000009"]
    assert leaks({"url": "x?secret=whsec_secret"}, forbidden, {}) == [
        "A's string 'whsec_secret'"]
    assert leaks({"name": "acme-orders-2"}, forbidden, {}) == ["A's string 'acme-orders'"]
    assert leaks({"kind": "run", "id": "140000009"}, forbidden, {"id": 140000009}) == []
    assert leaks({"detail": "acme-orders not found"}, forbidden, ["acme-orders"]) == []
    assert leaks({"id": 140000008, "at": "2024-03-01T14:00:00.123456Z"}, forbidden, {}) == []


# ----------------------------------------------------------------------------------- the proof


# Added to an id, a free id of the same table (each table's ids span ID_STEP).
MISSING_OFFSET = ID_STEP * 9 // 10


def substitute(value: Any, mapping: dict[int, int]) -> Any:
    """`value` with the integers of `mapping` replaced (digit runs inside strings too)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return mapping.get(value, value)
    if isinstance(value, str):
        return re.sub(r"\d+", lambda match: str(mapping.get(int(match[0]), match[0])), value)
    if isinstance(value, dict):
        return {k: substitute(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, mapping) for v in value]
    return value


def substitute_request(request: Request, mapping: dict[int, int]) -> Request:
    if isinstance(request, Rest):
        return Rest(request.method, substitute(request.path, mapping),
                    substitute(request.body, mapping))
    return Gql(request.kind, request.field, request.document,
               substitute(request.variables, mapping), request.transport)


def refusal(request: Request, answer: Answer) -> bool:
    """An answer that refuses (an error, not found, null, empty), as opposed to B's data."""
    if isinstance(request, Rest):
        return answer.status >= 400
    value = _value(answer.body, "data.f")
    return bool(codes(answer.body)) or value is None or value == [] or (
        isinstance(value, dict) and (str(value.get("__typename", "")).endswith("Error")
                                     or value.get("nodes") == []))


def targets(key: str, request: Request) -> bool:
    """Whether a call is a call of the route or root field its entry is keyed by (so that an
    entry cannot cover one route while calling another)."""
    root, dot, name = key.partition(".")
    if dot and root in ROOTS:
        return (isinstance(request, Gql) and request.kind == root.lower()
                and request.field == name)
    method, _, path = key.partition(" ")
    if path == "/graphql":
        transports = {"GET": ("get",), "POST": ("post",), "WEBSOCKET": ("ws", "ws-payload")}
        return isinstance(request, Gql) and request.transport in transports[method]
    if not isinstance(request, Rest) or request.method != method:
        return False
    pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
    return re.fullmatch(pattern, request.path.split("?")[0].rstrip("/") or "/") is not None


@dataclass
class Prover:
    client: Any
    app: Any
    w: World
    problems: list[str] = field(default_factory=list)
    seen_by_b: set[int] = field(default_factory=set)  # every number any answer showed B
    calls: int = 0

    async def perform(self, request: Request, org: Org, who: str) -> Answer:
        self.calls += 1
        headers = org.headers(who)
        if isinstance(request, Rest):
            kwargs = {} if request.body is None else {"json": request.body}
            r = await self.client.request(request.method, request.path, headers=headers,
                                          **kwargs)
            try:
                body = r.json() if r.content else None
            except ValueError:
                body = r.text
            return Answer(r.status_code, body)
        if request.transport == "post":
            r = await self.client.post("/graphql", headers=headers, json={
                "query": request.document, "variables": request.variables})
        elif request.transport == "get":
            r = await self.client.get("/graphql", headers=headers, params={
                "query": request.document, "variables": json.dumps(request.variables)})
        else:
            messages = await ws_subscribe(
                self.app, token=org.token(who), query=request.document,
                variables=request.variables, token_in_payload=request.transport == "ws-payload")
            return Answer(200, ws_body(messages))
        try:
            return Answer(r.status_code, r.json())
        except ValueError:
            return Answer(r.status_code, r.text)

    def note(self, key: str, who: str, request: Request | str, problem: str | None) -> None:
        if problem:
            self.problems.append(f"{key} | {who} | {request} | {problem}")

    def note_leaks(self, key: str, who: str, request: Request, answer: Answer,
                   forbidden: Forbidden, label: str = "LEAK") -> None:
        found = leaks(answer.body, forbidden, request.sent())
        if found:
            more = f" (+{len(found) - 6} more)" if len(found) > 6 else ""
            self.note(key, who, request, f"{label}: {', '.join(found[:6])}{more} in {answer}")

    async def check(self, entry: Entry) -> None:
        w = self.w
        before = await Snapshot.take()
        forbidden = before.secrets_of(w.a.org_id, w.b.org_id, a_secrets(w))
        b_who = "gateway" if entry.scope == GATEWAY else "admin"
        foreign = entry.foreign(w)
        for request in [entry.call(w), *(r for r, _ in foreign)]:
            if not targets(entry.key, request):
                self.note(entry.key, "the table", request, "this call is not of this entry")
        for request, expect in foreign:
            answer = await self.perform(request, w.b, b_who)
            self.note(entry.key, f"B {b_who}", request, expect(answer))
            self.note_leaks(entry.key, f"B {b_who}", request, answer, forbidden)
            self.seen_by_b.update(set(numbers_in(answer.body)) - set(numbers_in(request.sent())))
            await self.check_no_oracle(entry, request, answer, forbidden, b_who)
        after_b = await Snapshot.take()
        for change in before.changes(after_b, w.a.org_id):
            self.note(entry.key, f"B {b_who}", entry.key, f"CHANGED A: {change}")
        request = entry.call(w)
        for who in LACKING[entry.scope]:
            answer = await self.perform(request, w.a, who)
            self.note(entry.key, f"A {who}", request, refused(request, who, answer))
            if not isinstance(request, Rest) or answer.status >= 400:
                self.note_leaks(entry.key, f"A {who}", request, answer, forbidden, "REVEALS")
        after_lacking = await Snapshot.take()
        for change in after_b.changes(after_lacking, w.a.org_id):
            self.note(entry.key, "A lacking the scope", entry.key, f"CHANGED A: {change}")
        for who in entry.allowed or ALLOWED[entry.scope]:
            answer = await self.perform(request, w.a, who)
            self.note(entry.key, f"A {who}", request, entry.ok(answer))

    async def check_no_oracle(self, entry: Entry, request: Request, answer: Answer,
                              forbidden: Forbidden, b_who: str) -> None:
        """A refusal must not tell A's ids from ids that exist nowhere: the same call with
        each of A's ids replaced by a free id of the same table answers alike."""
        if not refusal(request, answer):
            return
        mapping = {n: n + MISSING_OFFSET for n in set(numbers_in(request.sent()))
                   if n in forbidden.ids}
        if not mapping:
            return
        missing = substitute_request(request, mapping)
        other = await self.perform(missing, self.w.b, b_who)
        back = {v: k for k, v in mapping.items()}
        if (other.status, substitute(other.body, back)) != (answer.status, answer.body):
            self.note(entry.key, f"B {b_who}", request,
                      f"ORACLE: A's ids answer {answer}; missing ids answer {other}")

    async def check_the_detector(self) -> None:
        """A control: A's own answers, judged as if B had been given them, are leaks (so a
        clean answer to B means something)."""
        w = self.w
        forbidden = (await Snapshot.take()).secrets_of(w.a.org_id, w.b.org_id, a_secrets(w))
        request = q("run", "$id: ID!", "id: $id", "{ id correlationId pipeline { id name } "
                    "webhookDeliveries { pageInfo { endCursor } } }", id=w.A.run_done)
        answer = await self.perform(request, w.a, "admin")
        found = leaks(answer.body, forbidden, {})
        expected = {f"A's id/number {w.A.run_done}", f"A's id/number {w.A.pipeline}",
                    f"A's id/number {w.A.delivery}", "A's string 'acme-orders'",
                    "A's string 'acme-corr-done'"}
        if not expected <= set(found):
            self.problems.append(f"the leak detector missed {expected - set(found)} in "
                                 f"{answer}")
        answer = await self.perform(Rest("GET", f"{wh(w)}/{w.A.conn}/telemetry/"), w.a, "read")
        if f"A's id/number {A_EVENTS}" not in leaks(answer.body, forbidden, {}):
            self.problems.append(f"the leak detector missed A's event count in {answer}")

    async def check_nested_on_a(self, nested: Nested) -> None:
        w = self.w
        request = nested.a(w)
        answer = await self.perform(request, w.a, "admin")
        found = _value(answer.body, f"data.f.{nested.path}")
        if gql_clean(answer) or (found is None if not nested.absent else not present(found)):
            self.note(nested.key, "A admin", request,
                      f"the world does not exercise it: {answer}")
        forbidden = (await Snapshot.take()).secrets_of(w.a.org_id, w.b.org_id, a_secrets(w))
        for probe in nested.probes:
            request = probe.request(w)
            answer = await self.perform(request, w.a, probe.who)
            value = _value(answer.body, f"data.f.{probe.path}")
            if probe.refused:
                # refused where it loads (FORBIDDEN), or the whole mutation refused
                denied = "FORBIDDEN" in codes(answer.body) or _value(
                    answer.body, "data.f.__typename") == "PermissionDeniedError"
                if not denied or present(value):
                    self.note(nested.key, f"A {probe.who}", request,
                              f"expected FORBIDDEN without a value, got {answer}")
                self.note_leaks(nested.key, f"A {probe.who}", request, Answer(0, value),
                                forbidden, "REVEALS")
            elif gql_clean(answer) or value is None:
                self.note(nested.key, f"A {probe.who}", request,
                          f"expected the value, got {answer}")

    async def check_nested_on_b(self, nested: Nested, forbidden: Any) -> None:
        w = self.w
        request = nested.b(w)
        answer = await self.perform(request, w.b, "admin")
        self.note_leaks(nested.key, "B admin", request, answer, forbidden)
        found = _value(answer.body, f"data.f.{nested.path}")
        if nested.absent and present(found):
            self.note(nested.key, "B admin", request, f"expected nothing, got {answer}")
        self.seen_by_b.update(set(numbers_in(answer.body)) - set(numbers_in(request.sent())))


def ws_body(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """graphql-transport-ws messages as one GraphQL answer (+ the message types)."""
    body: dict[str, Any] = {"messages": [m["type"] for m in messages]}
    errors: list[Any] = []
    for message in messages:
        payload = message.get("payload")
        if message["type"] == "next" and isinstance(payload, dict):
            body.setdefault("data", payload.get("data"))
            errors += payload.get("errors") or []
        elif message["type"] == "error":
            errors += payload if isinstance(payload, list) else [payload]
        elif message["type"] == "close":
            errors.append({"message": f"closed {message.get('code')}",
                           "extensions": {"code": f"CLOSED_{message.get('code')}"}})
    if errors:
        body["errors"] = errors
    return body


async def test_no_caller_reaches_another_organisation_or_beyond_its_scope(
    client, app, settings
):
    w = await build_world(client, settings)
    prover = Prover(client, app, w)
    await prover.check_the_detector()
    for entry in ENTRIES:
        await prover.check(entry)
    for nested in NESTED:
        await prover.check_nested_on_a(nested)
    await cross_link(w)
    forbidden = (await Snapshot.take()).secrets_of(w.a.org_id, w.b.org_id, a_secrets(w))
    for nested in NESTED:
        await prover.check_nested_on_b(nested, forbidden)
    # Across every answer B was given: none of A's ids, as A's world stands at the end.
    final = await Snapshot.take()
    a_ids = {i for rows in final.of(w.a.org_id).values() for i in rows}
    seen = sorted(prover.seen_by_b & a_ids)
    if seen:
        prover.problems.append(f"B was shown these ids of A's rows over the run: {seen}")
    assert not prover.problems, (
        f"{len(prover.problems)} problem(s) in {prover.calls} calls:\n"
        + "\n".join(prover.problems))
