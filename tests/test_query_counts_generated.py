"""The N+1 invariant, proved for every list of the schema rather than for hand-picked screens.

The schema is walked from `Query`: every list field it reaches (a field returning a page, or a
list of objects) gets a query that reaches it by the shortest path and selects, under each of
its items, every field of the item's type that loads something (the fields with a resolver of
their own, as `tests/test_tenancy_generated.py` defines them). Each query runs against a world
of `SMALL` units (`seed_units`: a connection, its pipeline with a type, an own webhook endpoint,
runs with a child, log lines, samples, findings, deliveries and attempts, a gateway, an
address on a lineage star, an alert channel), then of ten times as many; a query whose
statement count grows with the world is an N+1 and fails, named.

Coverage: the list fields the walk reached must be every list field of the schema, but for the
few listed in `UNREACHABLE` (with why); a new list field without coverage fails here.
Statements are counted as `tests/test_query_counts.py` counts them.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLUnionType,
    Undefined,
    get_named_type,
)
from strawberry.types.base import StrawberryObjectDefinition
from tortoise.expressions import F

from runwatch.models import (
    Address,
    AddressLineage,
    AddressType,
    AlertChannel,
    AnomalyResult,
    AnomalyRule,
    ChannelKind,
    Connection,
    FreshnessLog,
    Gateway,
    LogLevel,
    Pipeline,
    PipelineType,
    Run,
    RunLogLine,
    RunStatus,
    RunTelemetrySample,
    TimelinessLog,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from runwatch.schema import build_schema
from tests.conftest import Tenant, app_client
from tests.test_query_counts import counted

SMALL = 3
LARGE = 10 * SMALL
WHO = "read,write,report"  # `WebhookEndpoint.secret` needs `write`
ROOT_ADDRESS = "root_address"

# List fields no query reaches, and why they need no proof here.
UNREACHABLE = {
    "RunUpdate.newLogLines": "only in a subscription's update of one run; a LogLine loads "
                             "nothing",
    "RunUpdate.newSamples": "only in a subscription's update of one run; a TelemetrySample "
                            "loads nothing",
    "InvalidInputError.fieldErrors": "only in a mutation's error; a FieldError loads nothing",
    "ConnectionSecretsSuccess.secrets": "only in a mutation's answer; a ConnectionSecret "
                                        "loads nothing",
    "Query.connectionSecrets": "one connection's secret names: one query; a ConnectionSecret "
                               "loads nothing",
}

# Values for the required arguments of the root fields a path may go through (formatted with
# the world's ids).
ROOT_ARGUMENTS = {"lineage": '(addressId: "{root_address}")',
                  # the same star read in OpenLineage's terms (the root address has no
                  # namespace, so it is in the default one)
                  "lineageGraph": '(nodeId: "dataset:default:db.s.root")'}


# ----------------------------------------------------------------------------------- the walk


def _unwrap(kind: Any) -> Any:
    while isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    return kind


def is_page(kind: Any) -> bool:
    named = get_named_type(kind)
    return isinstance(named, GraphQLObjectType) and {"edges", "nodes", "pageInfo"} <= set(
        named.fields)


def is_list_field(kind: Any) -> bool:
    """A page, or a list of objects."""
    return is_page(kind) or (isinstance(_unwrap(kind), GraphQLList)
                             and isinstance(get_named_type(kind), GraphQLObjectType))


def item_type(kind: Any) -> GraphQLObjectType:
    named = get_named_type(kind)
    return get_named_type(named.fields["nodes"].type) if is_page(kind) else named


def list_fields(schema: Any) -> set[str]:
    """Every list field of every object type (a page's own `edges` and `nodes` are the page's
    list, counted as the field that returns the page)."""
    found = set()
    for name, kind in schema._schema.type_map.items():
        if not isinstance(kind, GraphQLObjectType) or name.startswith("__") or is_page(kind):
            continue
        found.update(f"{name}.{f}" for f, field in kind.fields.items() if is_list_field(
            field.type))
    return found


def loading_fields(schema: Any, type_name: str) -> list[str]:
    """The fields of a type that load something: a resolver of their own, or arguments."""
    definition = schema.schema_converter.type_map[type_name].definition
    assert isinstance(definition, StrawberryObjectDefinition), type_name
    return [schema.config.name_converter.get_graphql_name(f) for f in definition.fields
            if f.base_resolver is not None or f.arguments]


@dataclass(frozen=True)
class Step:
    field: str
    arguments: str
    page: bool


@dataclass(frozen=True)
class Probe:
    key: str  # Type.field
    path: tuple[Step, ...]  # from Query to the list field itself
    selection: str  # under each item

    def document(self, ids: dict[str, int]) -> str:
        inner = self.selection
        for step in reversed(self.path):
            arguments = step.arguments.format(**ids) if step.arguments else ""
            inner = f"nodes {{ {inner} }}" if step.page else inner
            inner = f"{step.field}{arguments} {{ {inner} }}"
        return f"{{ {inner} }}"

    def items(self, data: Any) -> int:
        """How many items the list field answered (over every parent)."""
        level = [data]
        for step in self.path:
            level = [v for parent in level for v in _as_list(parent[step.field])]
            if step.page:
                level = [v for page in level for v in page["nodes"]]
        return len(level)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _required(field: Any) -> list[str]:
    return [name for name, arg in field.args.items()
            if isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined]


def _selection(schema: Any, kind: GraphQLObjectType) -> str:
    parts = ["__typename"]
    for name in loading_fields(schema, kind.name):
        field = kind.fields[name]
        required = _required(field)
        assert not required, f"{kind.name}.{name} needs {required}: give the walk values"
        named = get_named_type(field.type)
        leaf = not isinstance(named, GraphQLObjectType | GraphQLUnionType)
        parts.append(name if leaf else f"{name} {{ __typename }}")
    return " ".join(parts)


def _arguments(root: bool, name: str, field: Any) -> str | None:
    """The arguments a path passes to a field; None when it cannot pass them."""
    if not _required(field):
        return ""
    if root and name in ROOT_ARGUMENTS:
        return ROOT_ARGUMENTS[name]
    return None


def probes(schema: Any) -> list[Probe]:
    """A probe for every list field reachable from Query, by the shortest path (breadth
    first over the types)."""
    query = schema._schema.query_type
    paths: dict[str, tuple[Step, ...]] = {query.name: ()}
    found: dict[str, Probe] = {}
    queue = deque([query])
    while queue:
        kind = queue.popleft()
        for name, field in kind.fields.items():
            arguments = _arguments(kind is query, name, field)
            named = get_named_type(field.type)
            if arguments is None or not isinstance(named, GraphQLObjectType):
                continue
            step = Step(name, arguments, is_page(field.type))
            path = (*paths[kind.name], step)
            target = item_type(field.type)
            key = f"{kind.name}.{name}"
            if is_list_field(field.type) and key not in found:
                found[key] = Probe(key, path, _selection(schema, target))
            if target.name not in paths:
                paths[target.name] = path
                queue.append(target)
    return sorted(found.values(), key=lambda p: p.key)


# ----------------------------------------------------------------------------------- the world


@dataclass
class Seeder:
    """`seed_units` inserts through the ORM (thousands of rows through the APIs would take
    minutes); every row belongs to the tenant's organisation."""

    org: int
    ids: dict[str, int]
    counter: itertools.count

    async def unit(self, i: int) -> None:
        org, now = self.org, datetime.now(UTC)
        kind = await PipelineType.create(organisation_id=org, name=f"type-{i}")
        connection = await Connection.create(organisation_id=org, name=f"conn-{i}",
                                             warehouse_type="snowflake")
        pipeline = await Pipeline.create(organisation_id=org, connection=connection,
                                         name=f"pipe-{i}", kind="batch", pipeline_type=kind)
        endpoint = await WebhookEndpoint.create(organisation_id=org, pipeline=pipeline,
                                                url=f"http://127.0.0.1:9/hook-{i}",
                                                secret=f"whsec_{i}")
        gateway = await Gateway.create(organisation_id=org, name=f"gw-{i}")
        done = await Run.create(
            organisation_id=org, pipeline=pipeline, status=RunStatus.SUCCEEDED,
            started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=1),
            events_delivered=10, gateway=gateway, target_gateway=gateway)
        failed = await Run.create(
            organisation_id=org, pipeline=pipeline, status=RunStatus.FAILED, error="boom",
            started_at=now - timedelta(minutes=30), finished_at=now - timedelta(minutes=20))
        await Run.create(organisation_id=org, pipeline=pipeline, parent=done,
                         status=RunStatus.SUCCEEDED, started_at=now - timedelta(hours=2),
                         finished_at=now - timedelta(hours=1))
        await RunLogLine.create(run=done, seq=1, at=now, level=LogLevel.INFO, message="hello")
        await RunTelemetrySample.create(run=done, seq=1, at=now, rows=1)
        rule = await AnomalyRule.create(organisation_id=org, pipeline=pipeline,
                                        metric_field="total_rows")
        await AnomalyResult.create(
            organisation_id=org, pipeline=pipeline, run=done, rule=rule,
            metric_field="total_rows", value=9.0, mean=1.0, std_dev=1.0, z_threshold=1.0,
            lower_bound=0.0, upper_bound=2.0, points=5)
        await TimelinessLog.create(organisation_id=org, pipeline=pipeline, run=failed,
                                   run_status="failed", deadline_at=now)
        await FreshnessLog.create(organisation_id=org, pipeline=pipeline, last_dml_at=now,
                                  deadline_at=now)
        delivery = await WebhookDelivery.create(
            organisation_id=org, endpoint=endpoint, run=done, event_type="run.succeeded",
            message_id=f"msg_{org}_{i}", payload={"run": done.id})
        await WebhookAttempt.create(delivery=delivery, attempted_at=now, duration_ms=3,
                                    status_code=500)
        await AlertChannel.create(organisation_id=org, name=f"alerts-{i}",
                                  kind=ChannelKind.WEBHOOK, url=f"http://127.0.0.1:9/a-{i}")
        address_type = await AddressType.create(organisation_id=org, name=f"pg-{i}",
                                                group_name="database")
        address = await Address.create(organisation_id=org, name=f"db.s.t{i}",
                                       address_type=address_type)
        await AddressLineage.create(organisation_id=org, pipeline=pipeline,
                                    source_id=self.ids[ROOT_ADDRESS], target=address)

    async def units(self, count: int) -> None:
        if ROOT_ADDRESS not in self.ids:
            root_type = await AddressType.create(organisation_id=self.org, name="pg-root",
                                                 group_name="database")
            self.ids[ROOT_ADDRESS] = (await Address.create(
                organisation_id=self.org, name="db.s.root", address_type=root_type)).id
        for _ in range(count):
            await self.unit(next(self.counter))


def seeder(tenant: Tenant) -> Seeder:
    return Seeder(tenant.org_id, {}, itertools.count())


# ----------------------------------------------------------------------------------- the tests


def test_the_walk_covers_every_list_field():
    schema = build_schema()
    reached = {p.key for p in probes(schema)}
    existing = list_fields(schema)
    missing = sorted(existing - reached - set(UNREACHABLE))
    assert not missing, f"list fields no query-count probe reaches: {missing}"
    stale = sorted(set(UNREACHABLE) - (existing - reached))
    assert not stale, f"UNREACHABLE names fields that are reached or gone: {stale}"


def test_the_walk_sees_a_list_and_its_relations():
    """Guards the walk itself, on fields known to be lists with relations."""
    schema = build_schema()
    by_key = {p.key: p for p in probes(schema)}
    assert {"Query.pipelines", "Connection.pipelines", "Run.children",
            "WebhookDelivery.attempts", "LineageGraph.nodes"} <= set(by_key)
    pipelines = by_key["Query.pipelines"]
    assert "webhookEndpoint { __typename }" in pipelines.selection
    assert "runs { __typename }" in pipelines.selection
    assert pipelines.document({}) .startswith("{ pipelines { nodes { __typename ")
    assert [s.field for s in by_key["Run.children"].path] == ["runs", "children"]


async def cold(caplog, client, tenant: Tenant, document: str) -> tuple[int, Any]:
    """The statements of one request with the telemetry cache cold: a cached entry is valid
    only while its pipelines' revisions are unchanged, so bumping them all makes every read
    take the full path (a hit within the same second would otherwise save a statement)."""
    await Pipeline.filter(organisation_id=tenant.org_id).update(revision=F("revision") + 1)
    return await counted(caplog, client, tenant, document, scopes=WHO)


@pytest.fixture
async def uncosted(settings) -> AsyncIterator[httpx.AsyncClient]:
    """The probes select every relation under a list, past the cost budget (which bounds
    answers, not statements): they are sent with the cost check off."""
    async with app_client(settings, graphql_max_cost=0) as client:
        yield client


async def test_no_list_field_costs_more_queries_for_more_items(uncosted, tenant, caplog):
    client = uncosted
    schema = build_schema()
    all_probes = probes(schema)
    world = seeder(tenant)
    await world.units(SMALL)
    small = {}
    for probe in all_probes:
        count, data = await cold(caplog, client, tenant, probe.document(world.ids))
        small[probe.key] = (count, probe.items(data))
    await world.units(LARGE - SMALL)
    problems = []
    for probe in all_probes:
        count, data = await cold(caplog, client, tenant, probe.document(world.ids))
        (before, items_before), items = small[probe.key], probe.items(data)
        if not items > items_before >= 1:
            problems.append(f"{probe.key}: the world does not grow it ({items_before} items, "
                            f"then {items}): {probe.document(world.ids)}")
        elif count != before:
            problems.append(f"{probe.key}: {before} queries for {items_before} items, {count} "
                            f"for {items}: {probe.document(world.ids)}")
    assert not problems, "\n".join(problems)
