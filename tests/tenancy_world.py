"""The world of the generated tenancy proof (`tests/test_tenancy_generated.py`), and the
machinery that judges every answer given in it.

- `spread_ids()`: each table's ids start in a range of their own (table k from k * 10^7), so
  that an id value names one row of one table: any integer in an answer can be checked
  against the ids of organisation A.
- `build_world()`: organisation A with one of every kind of object, built through the public
  APIs (REST, GraphQL) and the resolvers the CLI uses (gateways), the background work run as
  the workers run it (anomaly detection, checks, webhook sending); organisation B with a token
  per scope set, a gateway and a few objects of its own.
- `Snapshot`: every row of every table with its owning organisation (through the foreign key
  chain for rows without an `organisation_id`), to compare A's rows before and after a call
  and to know what of A's must never reach B: ids, distinctive numbers, `acme` strings and
  secrets.
- `leaks()`: what of A's an answer holds (integers, ids inside strings and cursors, A's
  strings), leaving out what the caller sent itself (an echoed id reveals nothing).
- `ws_subscribe()`: a graphql-transport-ws client driving the ASGI app in-process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from tortoise import Tortoise, connections

from runwatch.models import (
    Address,
    AddressLineage,
    AddressType,
    AnomalyResult,
    DeliveryStatus,
    Pipeline,
    Run,
    RunStatus,
    WebhookDelivery,
    WebhookEndpoint,
)
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.gateways import create_gateway
from runwatch.resolvers.pagination import encode_cursor
from runwatch.services.tasks import TaskRunner
from runwatch.services.webhooks import Sender
from runwatch.settings import Settings
from tests.conftest import Tenant, make_tenant

ID_STEP = 10_000_000
MARK = "acme"  # every name and text of organisation A carries it (B's carry "bravo")
DEAD_URL = "http://127.0.0.1:9"  # the discard port: nothing listens, attempts fail at once
T0 = datetime(2024, 3, 1, 14, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
WAREHOUSE = "/api/v1/organisations/{org}/integrations/warehouse-connections"
# Distinctive numbers of A's rows: a leak of an aggregate shows as one of them.
A_EVENTS = 7_777_701


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def models() -> list[Any]:
    return sorted(Tortoise.apps["models"].values(), key=lambda m: m._meta.db_table)


async def spread_ids() -> None:
    """Table k's next id is k * ID_STEP + 1 (the tables are empty: `clean_database` empties
    them after every test and restarts their sequences)."""
    conn = connections.get("default")
    for k, model in enumerate(models(), start=1):
        table, base = model._meta.db_table, k * ID_STEP
        if conn.capabilities.dialect == "postgres":
            await conn.execute_query(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {base})")
        else:
            await conn.execute_query("DELETE FROM sqlite_sequence WHERE name = ?", [table])
            await conn.execute_query(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", [table, base])


# ------------------------------------------------------------------------------- snapshots


def _strings(value: Any) -> Iterator[str]:
    """The strings of a column value, inside JSON text too (JSON columns read back as text)."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "{[":
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if parsed is not None:
                yield from _strings(parsed)
                return
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


# Columns whose values are secrets or unique handles: forbidden to B whatever they read.
SECRET_COLUMNS = {("webhook_endpoint", "secret"), ("alert_channel", "secret"),
                  ("service_token", "key_id"), ("service_token", "secret_hash"),
                  ("webhook_delivery", "message_id")}


# Columns written by authentication itself, whatever the request then does (a token's last
# use): not a change the request made to the organisation's data.
BOOKKEEPING = {("service_token", "last_used_at")}


@dataclass
class Snapshot:
    rows: dict[str, dict[int, dict[str, Any]]]
    owner: dict[str, dict[int, int | None]]

    @classmethod
    async def take(cls) -> Snapshot:
        conn = connections.get("default")
        rows: dict[str, dict[int, dict[str, Any]]] = {}
        for model in models():
            table = model._meta.db_table
            found = await conn.execute_query_dict(f'SELECT * FROM "{table}"')
            rows[table] = {int(r["id"]): dict(r) for r in found}
        owner: dict[str, dict[int, int | None]] = {"organisation": {
            i: i for i in rows["organisation"]}}
        pending = [m for m in models() if m._meta.db_table != "organisation"]
        while pending:
            progressed = []
            for model in pending:
                table = model._meta.db_table
                if "organisation_id" in model._meta.fields_db_projection.values():
                    owner[table] = {i: r["organisation_id"] for i, r in rows[table].items()}
                    progressed.append(model)
                    continue
                for name in model._meta.fk_fields:
                    fk = model._meta.fields_map[name]
                    parent = fk.related_model._meta.db_table
                    if parent in owner:
                        column = fk.source_field
                        owner[table] = {i: owner[parent].get(r[column])
                                        for i, r in rows[table].items()}
                        progressed.append(model)
                        break
            assert progressed, f"no owner for {[m._meta.db_table for m in pending]}"
            pending = [m for m in pending if m not in progressed]
        return cls(rows=rows, owner=owner)

    def of(self, org: int) -> dict[str, dict[int, dict[str, Any]]]:
        return {t: {i: r for i, r in rows.items() if self.owner[t].get(i) == org}
                for t, rows in self.rows.items()}

    def changes(self, after: Snapshot, org: int) -> list[str]:
        """What changed in `org`'s rows from this snapshot to `after`."""
        found = []
        before_rows, after_rows = self.of(org), after.of(org)
        for table in sorted(before_rows):
            old, new = before_rows[table], after_rows[table]
            for i in sorted(set(old) - set(new)):
                found.append(f"{table} {i} deleted")
            for i in sorted(set(new) - set(old)):
                found.append(f"{table} {i} created")
            for i in sorted(set(old) & set(new)):
                diff = [k for k in old[i] if old[i][k] != new[i].get(k)
                        and (table, k) not in BOOKKEEPING]
                if diff:
                    found.append(f"{table} {i} changed: " + ", ".join(
                        f"{k} {old[i][k]!r} -> {new[i][k]!r}" for k in diff))
        return found

    def secrets_of(self, org: int, other: int, extra: set[str]) -> Forbidden:
        """What of `org`'s must never reach `other`: the ids of its rows, its big numbers
        and its strings (those carrying MARK, and secrets), less what `other` holds too."""
        mine, theirs = self.of(org), self.of(other)
        ids = {i for rows in mine.values() for i in rows}
        numbers: set[int] = set()
        strings = set(extra)
        for table, rows in mine.items():
            for row in rows.values():
                for column, value in row.items():
                    if isinstance(value, int) and not isinstance(value, bool):
                        if abs(value) >= 1_000_000:
                            numbers.add(value)
                    elif (table, column) in SECRET_COLUMNS and isinstance(value, str):
                        strings.add(value)
                    else:
                        strings.update(s for s in _strings(value) if MARK in s.lower())
        their_numbers = {v for rows in theirs.values() for row in rows.values()
                         for v in row.values() if isinstance(v, int)}
        their_strings = {s for rows in theirs.values() for row in rows.values()
                         for v in row.values() for s in _strings(v)}
        return Forbidden(ids=ids | (numbers - their_numbers),
                         strings={s for s in strings if s not in their_strings and len(s) >= 4},
                         theirs=their_strings)


# ------------------------------------------------------------------------------- leaks


@dataclass
class Answer:
    """A response: HTTP status and JSON body (a WebSocket's messages as one GraphQL body)."""

    status: int
    body: Any

    def __str__(self) -> str:
        return f"{self.status} {json.dumps(self.body, default=str)[:400]}"


@dataclass
class Forbidden:
    ids: set[int]
    strings: set[str]
    # the other organisation's own strings: one of them holding one of A's (B's pipeline
    # `acme-warehouse-spare delivery` holds A's `acme-warehouse`) is not a leak
    theirs: set[str] = field(default_factory=set)


NUMBER = re.compile(r"\d+")
CURSORISH = re.compile(r"^[A-Za-z0-9_\-]+=*$")


def numbers_in(value: Any) -> Iterator[int]:
    """Every integer of a JSON value: numbers, digit runs inside strings, pagination cursors
    (`base64("id:N")`)."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, float):
        if value.is_integer():
            yield int(value)
    elif isinstance(value, str):
        for run in NUMBER.findall(value):
            if len(run) < 20:
                yield int(run)
        if CURSORISH.match(value) and len(value) >= 8:
            with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
                text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
                if text.startswith("id:"):
                    yield int(text[3:])
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from numbers_in(k)
            yield from numbers_in(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from numbers_in(v)


def texts_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from texts_in(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from texts_in(v)


def leaks(answer: Any, forbidden: Forbidden, sent: Any) -> list[str]:
    """What of the forbidden an answer holds, less what the caller sent (`sent`: the URL,
    query and body of a request, the variables of an operation)."""
    echoed = set(numbers_in(sent))
    sent_texts = list(texts_in(sent))
    found = sorted({n for n in numbers_in(answer) if n in forbidden.ids and n not in echoed})
    problems = [f"A's id/number {n}" for n in found]
    texts = [t for t in texts_in(answer) if t not in forbidden.theirs]
    for secret in sorted(forbidden.strings):
        if any(secret in t for t in sent_texts):
            continue
        if any(secret in t for t in texts):
            problems.append(f"A's string {secret[:60]!r}")
    return problems


# ------------------------------------------------------------------------------- the world


class Ids(dict):
    """Ids by name, readable as attributes (`w.a.run_done`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


@dataclass
class Org:
    tenant: Tenant
    ids: Ids = field(default_factory=Ids)
    gateway_token: str = ""
    spare_gateway_token: str = ""

    @property
    def org_id(self) -> int:
        return self.tenant.org_id

    def headers(self, who: str) -> dict[str, str]:
        """`who`: a scope set of conftest's tokens, `gateway`, or `anonymous`."""
        if who == "anonymous":
            return {}
        if who == "gateway":
            return {"Authorization": f"Bearer {self.gateway_token}"}
        return self.tenant.headers(who)

    def token(self, who: str) -> str | None:
        if who == "anonymous":
            return None
        if who == "gateway":
            return self.gateway_token
        return self.tenant.tokens[who]

    def warehouse(self, org: int | None = None) -> str:
        return WAREHOUSE.format(org=self.org_id if org is None else org)


@dataclass
class World:
    a: Org
    b: Org

    def __getattr__(self, name: str) -> Any:  # `w.A` / `w.B`: the ids
        if name == "A":
            return self.a.ids
        if name == "B":
            return self.b.ids
        raise AttributeError(name)


class Builder:
    """Calls the public APIs as one organisation, asserting each call worked."""

    def __init__(self, client: httpx.AsyncClient, org: Org) -> None:
        self.client = client
        self.org = org

    async def rest(self, method: str, path: str, body: Any = None, who: str = "admin",
                   expect: int | tuple[int, ...] = (200, 201, 204)) -> Any:
        kwargs = {} if body is None else {"json": body}
        headers = self.org.headers(who)
        r = await self.client.request(method, path, headers=headers, **kwargs)
        allowed = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in allowed, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    async def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        r = await self.client.post("/graphql", json={"query": query, "variables": variables},
                                   headers=self.org.headers("admin"))
        body = r.json()
        assert r.status_code == 200 and "errors" not in body, body
        return body["data"]

    async def gateway(self, name: str) -> tuple[int, str]:
        caller = Caller(organisation_id=self.org.org_id, scopes=frozenset({Scope.ADMIN}))
        gateway, issued = await create_gateway(caller=caller, name=name)
        return gateway.id, issued.token

    # ---- warehouse

    async def connection(self, name: str, **settings: Any) -> int:
        body = await self.rest("POST", self.org.warehouse() + "/",
                               {"name": name, "type": "snowflake", **settings}, "write")
        return body["id"]

    async def start_metrics(self, connection: int, started: datetime) -> int:
        body = await self.rest("POST", f"{self.org.warehouse()}/{connection}/metrics/",
                               {"started_at": iso(started)}, "report")
        return body["run_id"]

    async def delivery_pipeline(self, connection: int) -> int:
        data = await self.gql("query($c: ID) { pipelines(connectionId: $c) { nodes { id } } }",
                              c=str(connection))
        (node,) = data["pipelines"]["nodes"]
        return int(node["id"])

    # ---- ELT

    async def elt_pipeline(self, name: str, **fields: Any) -> int:
        body = await self.rest("POST", "/api/elt/pipelines", {"name": name, **fields}, "write")
        return int(body["pipeline"]["id"])

    async def elt_run(self, pipeline: int, **fields: Any) -> int:
        """A pending run (for a gateway) unless `status` says otherwise."""
        body = await self.rest("POST", "/api/elt/runs",
                               {"pipelineId": str(pipeline), "status": "pending", **fields},
                               "write")
        return int(body["run"]["id"])

    async def agent_patch(self, run: int, body: dict[str, Any]) -> None:
        await self.rest("PATCH", f"/api/agent/runs/{run}", body, "gateway", expect=200)

    # ---- Watcher

    async def watcher_pipeline(self, name: str, type_name: str, **fields: Any) -> int:
        body = await self.rest("POST", "/pipeline",
                               {"name": name, "pipeline_type_name": type_name, **fields},
                               "write", expect=201)
        return body["id"]

    async def start(self, pipeline: int, at: datetime, **fields: Any) -> int:
        body = await self.rest("POST", "/start_pipeline_execution",
                               {"pipeline_id": pipeline, "start_date": iso(at), **fields},
                               "report", expect=201)
        return body["id"]

    async def end(self, execution: int, at: datetime, ok: bool = True, **fields: Any) -> None:
        await self.rest("POST", "/end_pipeline_execution",
                        {"id": execution, "end_date": iso(at), "completed_successfully": ok,
                         **fields}, "report", expect=204)


def address(name: str, type_name: str, group: str) -> dict[str, str]:
    return {"name": name, "address_type_name": type_name, "address_type_group_name": group}


async def build_a(client: httpx.AsyncClient, org: Org, settings: Settings) -> None:
    """Organisation A: one of every kind of object (and spares for the destructive calls)."""
    api, ids, now = Builder(client, org), org.ids, datetime.now(UTC)

    # warehouse: a connection (and its delivery pipeline) with a reported run and open ones
    ids.conn = await api.connection("acme-warehouse", account="acme-secret-account")
    ids.delivery_pipeline = await api.delivery_pipeline(ids.conn)
    ids.spare_conn = await api.connection("acme-warehouse-spare")
    ids.wh_done = await api.start_metrics(ids.conn, now - timedelta(minutes=30))
    await api.rest("PATCH", f"{org.warehouse()}/{ids.conn}/metrics/{ids.wh_done}/", {
        "completed_at": iso(now - timedelta(minutes=20)), "events_delivered": A_EVENTS,
        "error": "acme-delivery-failed"}, "report", expect=204)
    ids.wh_open = await api.start_metrics(ids.conn, now - timedelta(minutes=5))
    ids.wh_spare_rest = await api.start_metrics(ids.conn, now - timedelta(minutes=4))
    ids.wh_spare_gql = await api.start_metrics(ids.conn, now - timedelta(minutes=3))
    ids.wh_spare_nested = await api.start_metrics(ids.conn, now - timedelta(minutes=2))

    # ELT: pipelines with their own webhook endpoints, the default endpoint, gateways, runs
    ids.pipeline = await api.elt_pipeline("acme-orders", description="acme orders")
    ids.spare_pipeline = await api.elt_pipeline("acme-spare")
    ids.default_endpoint = int((await api.rest("PUT", "/api/elt/runs/webhook", {
        "url": f"{DEAD_URL}/acme-default"}, "write"))["webhook"]["id"])
    ids.endpoint = int((await api.rest("PUT", f"/api/elt/pipelines/{ids.pipeline}/webhook", {
        "url": f"{DEAD_URL}/acme-orders-hook"}, "write"))["webhook"]["id"])
    ids.spare_endpoint = int((await api.rest(
        "PUT", f"/api/elt/pipelines/{ids.spare_pipeline}/webhook",
        {"url": f"{DEAD_URL}/acme-spare-hook"}, "write"))["webhook"]["id"])
    ids.gateway, org.gateway_token = await api.gateway("acme-gw")
    ids.spare_gateway, org.spare_gateway_token = await api.gateway("acme-gw-spare")
    ids.run_pending = await api.elt_run(ids.pipeline, correlationId="acme-corr-pending",
                                        environment="acme-env")
    ids.run_targeted = await api.elt_run(ids.pipeline, targetGatewayId=str(ids.gateway))
    ids.run_cancel = await api.elt_run(ids.pipeline)  # the spare cancelRun cancels
    ids.run_running = await api.elt_run(ids.pipeline)
    ids.run_done = await api.elt_run(ids.pipeline, correlationId="acme-corr-done")
    for run in (ids.run_running, ids.run_done):
        await api.agent_patch(run, {
            "status": "running", "appendLog": {"message": f"acme log of {run}"},
            "appendTelemetrySample": {"rows": 10, "phase": "acme-phase"},
            "telemetrySummary": {"currentPhase": "acme-phase", "rowsLoaded": 10}})
    await api.agent_patch(ids.run_done, {"status": "succeeded",
                                         "appendLog": {"message": "acme done"}})

    # Watcher: a typed pipeline with lineage, nested executions, addresses
    ids.wp = await api.watcher_pipeline("acme-load", "acme-type",
                                        pipeline_metadata={"owner": "acme-team"},
                                        next_watermark="acme-wm-1")
    ids.pipeline_type = (await api.rest("GET", f"/pipeline/{ids.wp}", who="read"))[
        "pipeline_type_id"]
    await api.rest("POST", "/address_lineage", {
        "pipeline_id": ids.wp,
        "source_addresses": [address("acme_db.s.source", "acme_pg", "acme_database")],
        "target_addresses": [address("acme_db.s.target", "acme_pg", "acme_database")],
    }, "write", expect=201)
    by_name = {a["name"]: a for a in await api.rest("GET", "/address", who="read")}
    ids.address_source = by_name["acme_db.s.source"]["id"]
    ids.address_target = by_name["acme_db.s.target"]["id"]
    ids.address_type = by_name["acme_db.s.source"]["address_type_id"]
    for key, name in (("address_lookup", "acme_db.s.lookup"),
                      ("address_claimed", "acme_db.s.claimed")):
        ids[key] = (await api.rest("POST", "/address", address(
            name, "acme_pg", "acme_database"), "write", expect=201))["id"]
    ids.address_type_extra = (await api.rest("POST", "/address_type", {
        "name": "acme_extra", "group_name": "acme_group"}, "write", expect=201))["id"]
    ids.exec_parent = await api.start(ids.wp, T0)
    ids.exec_child = await api.start(ids.wp, T0 + SECOND, parent_id=ids.exec_parent)
    await api.end(ids.exec_child, T0 + 2 * SECOND, total_rows=5)
    await api.end(ids.exec_parent, T0 + 3 * SECOND, total_rows=5)
    ids.exec_open = await api.start(ids.wp, now - timedelta(minutes=2))
    ids.exec_spare = await api.start(ids.wp, now - timedelta(minutes=1))  # REST allowed end

    # alert channels (before the findings below, so that they alert)
    for key, name in (("channel", "acme-alerts"), ("spare_channel", "acme-alerts-spare")):
        data = await api.gql("""mutation($input: CreateAlertChannelInput!) {
            createAlertChannel(input: $input) {
              ... on AlertChannelSuccess { channel { id } } } }""",
                             input={"name": name, "kind": "webhook",
                                    "url": f"{DEAD_URL}/{name}"})
        ids[key] = int(data["createAlertChannel"]["channel"]["id"])

    # anomalies: a baseline of five runs at the same hour, then one far off it in 3 metrics
    ids.wp_anomaly = await api.watcher_pipeline("acme-anomaly", "acme-type")
    for day in range(5):
        at = T0 + day * DAY + day * 60 * SECOND
        run = await api.start(ids.wp_anomaly, at)
        await api.end(run, at + (100 + 10 * day) * SECOND, total_rows=1000 + 100 * day,
                      inserts=10 + day)
    for metric in ("duration_seconds", "total_rows", "inserts"):
        ids[f"rule_{metric}"] = (await api.rest("POST", "/anomaly_detection_rule", {
            "pipeline_id": ids.wp_anomaly, "metric_field": metric, "z_threshold": 1,
            "minimum_executions": 5}, "write", expect=201))["id"]
    ids.rule = ids.rule_duration_seconds
    at = T0 + 5 * DAY + 10 * 60 * SECOND
    ids.exec_anomalous = await api.start(ids.wp_anomaly, at)
    await api.end(ids.exec_anomalous, at + 900 * SECOND, total_rows=90_000, inserts=900)

    # timeliness and freshness: a late open run, a stale target
    ids.wp_checks = await api.watcher_pipeline(
        "acme-checks", "acme-type", timeliness_number=1, timeliness_datepart="minute",
        freshness_number=1, freshness_datepart="minute")
    ids.exec_late = await api.start(ids.wp_checks, now - 10 * 60 * SECOND)
    stale = await api.start(ids.wp_checks, now - DAY)
    await api.end(stale, now - DAY + SECOND, inserts=1)
    await api.rest("POST", "/timeliness", {"lookback_minutes": 60}, "write")
    await api.rest("POST", "/freshness", None, "write")

    # the workers: detection, checks, alerts, webhook attempts
    for _ in range(10):
        if not await TaskRunner(settings).run_due():
            break
    sender = Sender(timeout=5, allow_private=True, concurrency=4)
    try:
        await sender.deliver_due()
    finally:
        await sender.aclose()

    flagged = await api.gql("query($r: ID) { anomalyResults(runId: $r) { nodes { id "
                            "metricField } } }", r=str(ids.exec_anomalous))
    results = {n["metricField"]: int(n["id"]) for n in flagged["anomalyResults"]["nodes"]}
    assert set(results) == {"duration_seconds", "total_rows", "inserts"}, results
    ids.anomaly_result = results["duration_seconds"]
    logs = await api.gql("{ timelinessLogs { nodes { id runId } } "
                         "freshnessLogs { nodes { id pipelineId } } }")
    assert [int(n["runId"]) for n in logs["timelinessLogs"]["nodes"]] == [ids.exec_late], logs
    ids.timeliness_log = int(logs["timelinessLogs"]["nodes"][0]["id"])
    ids.freshness_log = int(logs["freshnessLogs"]["nodes"][0]["id"])
    (delivery,) = await WebhookDelivery.filter(run_id=ids.run_done)
    assert delivery.attempts >= 1, delivery
    ids.delivery = delivery.id
    alerts = await WebhookDelivery.filter(organisation_id=org.org_id, channel_id=ids.channel)
    assert alerts, "the findings alerted no channel"
    ids.alert_delivery = alerts[0].id
    # pagination cursors of A's rows (a cursor names an id)
    ids.cursor_conn = encode_cursor(ids.conn)
    ids.cursor_run_done = encode_cursor(ids.run_done)
    ids.cursor_wh_open = encode_cursor(ids.wh_open)


async def build_b(client: httpx.AsyncClient, org: Org) -> None:
    """Organisation B: tokens of every scope set (conftest), a gateway, some objects."""
    api, ids, now = Builder(client, org), org.ids, datetime.now(UTC)
    ids.conn = await api.connection("bravo-warehouse")
    ids.delivery_pipeline = await api.delivery_pipeline(ids.conn)
    ids.wh_open = await api.start_metrics(ids.conn, now - timedelta(minutes=5))
    ids.pipeline = await api.elt_pipeline("bravo-orders")
    ids.gateway, org.gateway_token = await api.gateway("bravo-gw")
    ids.run_pending = await api.elt_run(ids.pipeline)
    ids.wp = await api.watcher_pipeline("bravo-load", "bravo-type")
    ids.exec_done = await api.start(ids.wp, T0)
    await api.end(ids.exec_done, T0 + SECOND, total_rows=3)
    ids.wp_lineage = await api.watcher_pipeline("bravo-lineage", "bravo-type")
    ids.address = (await api.rest("POST", "/address", address(
        "bravo_db.s.x", "bravo_pg", "bravo_database"), "write", expect=201))["id"]
    ids.rule = (await api.rest("POST", "/anomaly_detection_rule", {
        "pipeline_id": ids.wp, "metric_field": "total_rows"}, "write", expect=201))["id"]


async def build_world(client: httpx.AsyncClient, settings: Settings) -> World:
    await spread_ids()
    a = Org(await make_tenant("acme-org"))
    await build_a(client, a, settings)
    b = Org(await make_tenant("bravo-org"))
    await build_b(client, b)
    return World(a=a, b=b)


def a_secrets(w: World) -> set[str]:
    """A's bearer tokens (only their hashes are stored)."""
    return {*w.a.tenant.tokens.values(), w.a.gateway_token, w.a.spare_gateway_token}


async def run_count(org: int) -> int:
    return await Run.filter(organisation_id=org).count()


# ------------------------------------------------------------------------------- WebSocket


async def ws_subscribe(
    app: Any, *, token: str | None, query: str, variables: dict[str, Any],
    token_in_payload: bool = False, timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Subscribe over graphql-transport-ws through the ASGI app, in this event loop; the
    messages the server sent until it completed, errored or closed (the token in the
    `Authorization` header, or in the `connection_init` payload)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    headers = [(b"host", b"runwatch.test"), (b"sec-websocket-protocol", b"graphql-transport-ws")]
    if token and not token_in_payload:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "scheme": "ws", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
        "root_path": "", "headers": headers, "subprotocols": ["graphql-transport-ws"],
        "client": ("127.0.0.1", 50000), "server": ("runwatch.test", 80),
    }

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    def text(payload: dict[str, Any]) -> dict[str, Any]:
        return {"type": "websocket.receive", "text": json.dumps(payload)}

    server = asyncio.create_task(app(scope, receive, send))
    messages: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            await inbox.put({"type": "websocket.connect"})
            accepted = await outbox.get()
            if accepted["type"] != "websocket.accept":
                return [accepted]
            init: dict[str, Any] = {"type": "connection_init"}
            if token and token_in_payload:
                init["payload"] = {"Authorization": f"Bearer {token}"}
            await inbox.put(text(init))
            await inbox.put(text({"id": "1", "type": "subscribe",
                                  "payload": {"query": query, "variables": variables}}))
            while True:
                sent = await outbox.get()
                if sent["type"] == "websocket.close":
                    messages.append({"type": "close", "code": sent.get("code")})
                    break
                message = json.loads(sent["text"])
                if message["type"] == "connection_ack":
                    continue
                messages.append(message)
                if message["type"] in {"complete", "error"}:
                    break
    finally:
        await inbox.put({"type": "websocket.disconnect", "code": 1000})
        try:
            async with asyncio.timeout(timeout):
                await server
        except TimeoutError:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
    return messages


# ------------------------------------------------------------------------------- cross-links


async def cross_link(w: World) -> None:
    """Rows that tie the two organisations together, as no API call may make them: B's
    objects pointing at A's, and A's pointing at B's. Every field that loads a related object
    must still show B nothing of A's (defence in depth: the loaders scope by organisation,
    not only the mutations that validate the links)."""
    a, b, now = w.A, w.B, datetime.now(UTC)
    a_org, b_org = w.a.org_id, w.b.org_id
    # B's rows pointing at A's objects
    b.linked_pipeline = (await Pipeline.create(
        organisation_id=b_org, name="bravo-linked", kind="elt", connection_id=a.conn,
        pipeline_type_id=a.pipeline_type)).id
    b.linked_run_pipeline = (await Run.create(
        organisation_id=b_org, pipeline_id=a.pipeline, status=RunStatus.PENDING)).id
    b.linked_run = (await Run.create(
        organisation_id=b_org, pipeline_id=b.wp, parent_id=a.exec_parent,
        gateway_id=a.gateway, target_gateway_id=a.gateway, status=RunStatus.RUNNING,
        started_at=now - timedelta(minutes=1))).id
    b.linked_endpoint = (await WebhookEndpoint.create(
        organisation_id=b_org, pipeline_id=a.pipeline, url=f"{DEAD_URL}/bravo-linked",
        secret="whsec_bravolinkedbravolinkedbravolinked", event_types=["run.succeeded"])).id
    b.linked_delivery = (await WebhookDelivery.create(
        organisation_id=b_org, endpoint_id=a.endpoint, run_id=a.run_done,
        event_type="run.succeeded", message_id="msg_bravo_linked", payload={"b": "bravo"},
        status=DeliveryStatus.FAILED)).id
    own_type = await AddressType.create(organisation_id=b_org, name="bravo_linked_type",
                                        group_name="bravo_group")
    b.linked_address = (await Address.create(
        organisation_id=b_org, name="bravo_db.s.linked", address_type_id=a.address_type)).id
    target = await Address.create(organisation_id=b_org, name="bravo_db.s.linked_target",
                                  address_type_id=own_type.id)
    await AddressLineage.create(organisation_id=b_org, pipeline_id=a.wp,
                                source_id=b.linked_address, target_id=target.id)
    # A's rows pointing at B's objects
    a.linked_pipeline = (await Pipeline.create(
        organisation_id=a_org, name="acme-linked-pipeline", kind="elt",
        connection_id=b.conn)).id
    a.linked_run = (await Run.create(
        organisation_id=a_org, pipeline_id=b.delivery_pipeline, parent_id=b.linked_run,
        status=RunStatus.SUCCEEDED, started_at=now - timedelta(minutes=2),
        finished_at=now - timedelta(minutes=1), events_delivered=A_EVENTS + 1,
        error="acme-linked-error")).id
    a.linked_result = (await AnomalyResult.create(
        organisation_id=a_org, pipeline_id=a.wp_anomaly, run_id=b.linked_run,
        rule_id=a.rule, metric_field="updates", value=1, mean=1, std_dev=1, z_threshold=1,
        lower_bound=0, upper_bound=2, points=5, detected_at=now)).id
    a.linked_endpoint = (await WebhookEndpoint.create(
        organisation_id=a_org, pipeline_id=b.pipeline, url=f"{DEAD_URL}/acme-linked",
        secret="whsec_acmelinkedacmelinkedacmelinked", event_types=["run.succeeded"])).id
    a.linked_delivery = (await WebhookDelivery.create(
        organisation_id=a_org, endpoint_id=b.linked_endpoint, run_id=b.linked_run,
        event_type="run.succeeded", message_id="msg_acme_linked",
        payload={"a": "acme-linked-payload"}, status=DeliveryStatus.FAILED)).id
