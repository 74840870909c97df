"""The Watcher over GraphQL: every query returns what the Watcher REST routes created (pipeline
types, Watcher pipeline fields, execution trees, addresses and their lineage graph), anomaly
rules and results, freshness and timeliness logs, alert channels; the scopes and the tenancy
of every field and mutation; and the N+1 invariant of a run list with its Watcher fields."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from runwatch.models import (
    AlertChannel,
    AnomalyResult,
    AnomalyRule,
    FreshnessLog,
    Run,
    Task,
    TaskStatus,
    TimelinessLog,
    WebhookDelivery,
)
from runwatch.resolvers import checks
from runwatch.services.tasks import TaskRunner
from tests.conftest import Tenant
from tests.helpers import graphql, iso

SQL_LOGGER = "tortoise.db_client"
NOT_STATEMENTS = ("Created connection", "Closed connection")
# a token's last-used stamp (its first use, then at most once a minute): not a screen's cost
LAST_USED = 'UPDATE "service_token" SET "last_used_at"'
DAY = timedelta(days=1)
# A fixed UTC hour on fixed days: the anomaly baseline is the same hour of day.
BASE = datetime(2024, 3, 10, 10, 0, tzinfo=UTC)


# ----------------------------------------------------------------------------------------------
# helpers: state through the Watcher REST routes, reads through GraphQL


async def rest(client: httpx.AsyncClient, tenant: Tenant, method: str, path: str,
               body: dict[str, Any], status: int = 201) -> Any:
    r = await client.request(method, path, json=body, headers=tenant.headers("report"))
    assert r.status_code == status, r.text
    return r.json() if r.content else None


async def make_pipeline(client, tenant: Tenant, name: str = "nightly load",
                        type_name: str = "extraction", **fields: Any) -> int:
    body = await rest(client, tenant, "POST", "/pipeline",
                      {"name": name, "pipeline_type_name": type_name, **fields})
    return body["id"]


async def patch_pipeline(client, tenant: Tenant, pipeline_id: int, **fields: Any) -> dict:
    return await rest(client, tenant, "PATCH", "/pipeline", {"id": pipeline_id, **fields},
                      status=200)


async def start(client, tenant: Tenant, pipeline_id: int, at: datetime | None = None,
                parent: int | None = None, **fields: Any) -> int:
    body: dict[str, Any] = {"pipeline_id": pipeline_id, **fields}
    if at is not None:
        body["start_date"] = iso(at)
    if parent is not None:
        body["parent_id"] = parent
    return (await rest(client, tenant, "POST", "/start_pipeline_execution", body))["id"]


async def end(client, tenant: Tenant, run_id: int, at: datetime, ok: bool = True,
              **fields: Any) -> None:
    await rest(client, tenant, "POST", "/end_pipeline_execution", {
        "id": run_id, "end_date": iso(at), "completed_successfully": ok, **fields}, status=204)


async def execution(client, tenant: Tenant, pipeline_id: int, at: datetime, seconds: int,
                    **fields: Any) -> int:
    run_id = await start(client, tenant, pipeline_id, at)
    await end(client, tenant, run_id, at + timedelta(seconds=seconds), **fields)
    return run_id


def address(name: str, type_name: str = "postgres", group: str = "database",
            **extra: Any) -> dict[str, Any]:
    return {"name": name, "address_type_name": type_name, "address_type_group_name": group,
            **extra}


async def draw(client, tenant: Tenant, pipeline: str, sources: list[str],
               targets: list[str]) -> int:
    """A pipeline `pipeline` whose lineage is sources x targets; returns its id."""
    pid = await make_pipeline(client, tenant, pipeline)
    body = await rest(client, tenant, "POST", "/address_lineage", {
        "pipeline_id": pid, "source_addresses": [address(s) for s in sources],
        "target_addresses": [address(t) for t in targets]})
    assert body["lineage_relationships_created"] == len(sources) * len(targets), body
    return pid


async def ok(client, tenant: Tenant, query: str, scopes: str = "read",
             **variables: Any) -> dict[str, Any]:
    """A GraphQL request that must succeed; returns its data."""
    body = await graphql(client, tenant, query, scopes, **variables)
    assert "errors" not in body, body
    return body["data"]


async def mutate(client, tenant: Tenant, query: str, scopes: str = "write",
                 **variables: Any) -> dict[str, Any]:
    """A mutation's result (its only top-level field)."""
    data = await ok(client, tenant, query, scopes, **variables)
    [result] = data.values()
    return result


def moment(value: str | None) -> datetime | None:
    """A GraphQL DateTime as an aware datetime."""
    return None if value is None else datetime.fromisoformat(value)


def field_errors(result: dict[str, Any]) -> set[str]:
    assert result["__typename"] == "InvalidInputError", result
    return {e["field"] for e in result["fieldErrors"]}


# ----------------------------------------------------------------------------------------------
# pipeline types and the Watcher fields of a pipeline

TYPE_FIELDS = """id name freshnessNumber freshnessDatepart muteFreshnessCheck timelinessNumber
  timelinessDatepart muteTimelinessCheck createdAt updatedAt"""
PIPELINE_TYPES = "{ pipelineTypes { FIELDS } }".replace("FIELDS", TYPE_FIELDS)
PIPELINE_TYPE = """query($id: ID!) { pipelineType(id: $id)
  { FIELDS } }""".replace("FIELDS", TYPE_FIELDS)
WATCHER_PIPELINE = """query($id: ID!) { pipeline(id: $id) {
  id name kind watermark nextWatermark pipelineMetadata lastTargetInsert lastTargetUpdate
  lastTargetSoftDelete freshnessNumber freshnessDatepart muteFreshnessCheck timelinessNumber
  timelinessDatepart muteTimelinessCheck loadLineage active updatedAt
  pipelineType { id name } } }"""


async def test_pipeline_types_are_what_the_rest_side_created(client, tenant):
    r = await client.post("/pipeline_type", json={
        "name": "Replication", "freshness_number": 2, "freshness_datepart": "hour",
        "timeliness_number": 30, "timeliness_datepart": "minute",
        "mute_timeliness_check": True}, headers=tenant.headers("report"))
    assert r.status_code == 201, r.text
    replication = r.json()["id"]
    await make_pipeline(client, tenant, "load", "extraction")  # creates its type

    types = (await ok(client, tenant, PIPELINE_TYPES))["pipelineTypes"]
    assert [t["name"] for t in types] == ["replication", "extraction"]
    first = types[0]
    assert first == {
        "id": str(replication), "name": "replication", "freshnessNumber": 2,
        "freshnessDatepart": "hour", "muteFreshnessCheck": False, "timelinessNumber": 30,
        "timelinessDatepart": "minute", "muteTimelinessCheck": True,
        "createdAt": first["createdAt"], "updatedAt": None}
    assert first["createdAt"]
    assert types[1]["freshnessNumber"] is None and types[1]["timelinessDatepart"] is None

    one = (await ok(client, tenant, PIPELINE_TYPE, id=str(replication)))["pipelineType"]
    assert one == first
    for missing in ("999999", "0", "-1", "abc", str(2**40)):
        assert (await ok(client, tenant, PIPELINE_TYPE, id=missing))["pipelineType"] is None


async def test_watcher_pipeline_fields(client, tenant):
    pid = await make_pipeline(
        client, tenant, "Nightly Load", "extraction", next_watermark="2024-03-01T00:00:00",
        pipeline_metadata={"owner": "Data Team"}, freshness_number=6,
        freshness_datepart="hour", timeliness_number=45, timeliness_datepart="minute")
    data = (await ok(client, tenant, WATCHER_PIPELINE, id=str(pid)))["pipeline"]
    assert data["name"] == "nightly load" and data["kind"] == "watcher"
    assert data["watermark"] is None and data["nextWatermark"] == "2024-03-01T00:00:00"
    assert data["pipelineMetadata"] == {"owner": "Data Team"}  # nested: left alone
    assert (data["freshnessNumber"], data["freshnessDatepart"]) == (6, "hour")
    assert (data["timelinessNumber"], data["timelinessDatepart"]) == (45, "minute")
    assert data["loadLineage"] is True and data["active"] is True
    assert data["lastTargetInsert"] is None and data["lastTargetUpdate"] is None
    assert data["pipelineType"]["name"] == "extraction"

    # a successful end hands the watermark over and stamps the target changes
    ended_at = BASE + timedelta(minutes=5)
    await execution(client, tenant, pid, BASE, 300, inserts=3, updates=0, total_rows=3)
    await patch_pipeline(client, tenant, pid, mute_freshness_check=True, active=False)
    data = (await ok(client, tenant, WATCHER_PIPELINE, id=str(pid)))["pipeline"]
    assert data["watermark"] == "2024-03-01T00:00:00"
    assert moment(data["lastTargetInsert"]) == ended_at
    assert data["lastTargetUpdate"] is None and data["lastTargetSoftDelete"] is None
    assert data["loadLineage"] is False and data["active"] is False
    assert data["muteFreshnessCheck"] is True and data["muteTimelinessCheck"] is False
    assert data["updatedAt"] is not None

    # a pipeline without a type (a connection's delivery pipeline) has none
    r = await client.post(tenant.prefix + "/", json={"name": "wh", "type": "snowflake"},
                          headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    pipelines = (await ok(client, tenant, "{ pipelines { nodes { name pipelineType { name } } } }")
                 )["pipelines"]["nodes"]
    assert {p["name"]: p["pipelineType"] for p in pipelines} == {
        "nightly load": {"name": "extraction"}, "wh delivery": None}


# ----------------------------------------------------------------------------------------------
# executions are runs: the tree, the Watcher fields

TREE = """query($id: ID!) { run(id: $id) {
  id parent { id } status startedAt finishedAt durationSeconds throughput hourRecorded
  watermark nextWatermark executionMetadata anomalyFlags rowsTotal rowsInserted
  children { id parent { id }
    children { id parent { id } children { id parent { id } children { id } } } } } }"""


async def test_execution_tree_to_depth_three(client, tenant):
    pid = await make_pipeline(client, tenant)
    root = await start(client, tenant, pid, BASE, watermark="W1", next_watermark="W2")
    a = await start(client, tenant, pid, BASE + timedelta(minutes=1), parent=root)
    b = await start(client, tenant, pid, BASE + timedelta(minutes=2), parent=root)
    grandchild = await start(client, tenant, pid, BASE + timedelta(minutes=3), parent=a)
    great = await start(client, tenant, pid, BASE + timedelta(minutes=4), parent=grandchild)
    await end(client, tenant, root, BASE + timedelta(seconds=200), total_rows=1000,
              inserts=400, execution_metadata={"Job": "Nightly"})

    run = (await ok(client, tenant, TREE, id=str(root)))["run"]
    assert run["parent"] is None
    assert run["status"] == "SUCCEEDED"
    assert moment(run["startedAt"]) == BASE
    assert moment(run["finishedAt"]) == BASE + timedelta(seconds=200)
    assert run["durationSeconds"] == 200 and run["throughput"] == 5.0
    assert run["hourRecorded"] == 10
    assert (run["watermark"], run["nextWatermark"]) == ("W1", "W2")
    assert run["executionMetadata"] == {"Job": "Nightly"}
    assert run["anomalyFlags"] is None
    assert (run["rowsTotal"], run["rowsInserted"]) == (1000, 400)

    assert [c["id"] for c in run["children"]] == [str(a), str(b)]
    first, second = run["children"]
    assert first["parent"] == {"id": str(root)} and second["parent"] == {"id": str(root)}
    assert second["children"] == []
    [level2] = first["children"]
    assert level2["id"] == str(grandchild) and level2["parent"] == {"id": str(a)}
    [level3] = level2["children"]
    assert level3 == {"id": str(great), "parent": {"id": str(grandchild)}, "children": []}

    # from the bottom up
    up = """query($id: ID!) { run(id: $id) { durationSeconds hourRecorded
      parent { id parent { id parent { id parent { id } } } } } }"""
    bottom = (await ok(client, tenant, up, id=str(great)))["run"]
    assert bottom["durationSeconds"] is None and bottom["hourRecorded"] == 10
    assert bottom["parent"] == {"id": str(grandchild), "parent": {
        "id": str(a), "parent": {"id": str(root), "parent": None}}}


# ----------------------------------------------------------------------------------------------
# addresses and lineage

ADDRESS_FIELDS = """id name namespace databaseName schemaName tableName primaryKey
  addressMetadata createdAt updatedAt addressType { id name groupName createdAt }"""
ADDRESSES = "{ addresses { FIELDS } }".replace("FIELDS", ADDRESS_FIELDS)
ADDRESS = """query($id: ID, $name: String, $namespace: String) {
  address(id: $id, name: $name, namespace: $namespace) { FIELDS
  } }""".replace("FIELDS", ADDRESS_FIELDS)


async def test_addresses_with_their_type(client, tenant):
    orders = (await rest(client, tenant, "POST", "/address", address(
        "Warehouse.Public.Orders", "Postgres", "Database", namespace="postgres://db:5432",
        primary_key="order_id", address_metadata={"Tier": "Gold"})))["id"]
    files = (await rest(client, tenant, "POST", "/address", address(
        "s3://bucket/raw/orders.csv", "s3", "files")))["id"]

    listed = (await ok(client, tenant, ADDRESSES))["addresses"]
    assert [a["id"] for a in listed] == [str(orders), str(files)]
    first, second = listed
    assert first["name"] == "warehouse.public.orders"
    assert first["namespace"] == "postgres://db:5432"
    # the database group fills the three-part name
    assert (first["databaseName"], first["schemaName"], first["tableName"]) == (
        "warehouse", "public", "orders")
    assert first["primaryKey"] == "order_id" and first["addressMetadata"] == {"Tier": "Gold"}
    assert first["createdAt"] and first["updatedAt"] is None
    assert first["addressType"]["name"] == "postgres"
    assert first["addressType"]["groupName"] == "database"
    assert second["addressType"]["name"] == "s3" and second["addressType"]["groupName"] == "files"
    assert second["databaseName"] is None and second["namespace"] is None

    one = (await ok(client, tenant, ADDRESS, id=str(orders)))["address"]
    assert one == first
    by_name = (await ok(client, tenant, ADDRESS, name="warehouse.public.orders"))["address"]
    assert by_name == first
    # names are stored lower-cased (the Watcher wire convention): a lookup is too
    assert (await ok(client, tenant, ADDRESS, name="  Warehouse.Public.ORDERS "))["address"][
        "id"] == str(orders)
    both = (await ok(client, tenant, ADDRESS, name="warehouse.public.orders",
                     namespace="postgres://db:5432"))["address"]
    assert both["id"] == str(orders)
    assert (await ok(client, tenant, ADDRESS, name="warehouse.public.orders",
                     namespace="postgres://other:5432"))["address"] is None
    assert (await ok(client, tenant, ADDRESS, name="s3://bucket/raw/orders.csv",
                     namespace="postgres://db:5432"))["address"] is None
    assert (await ok(client, tenant, ADDRESS, name="nope"))["address"] is None
    for missing in ("999999", "0", "x", str(2**40)):
        assert (await ok(client, tenant, ADDRESS, id=missing))["address"] is None
    assert (await ok(client, tenant, ADDRESS))["address"] is None  # neither id nor name


async def test_address_lookup_by_namespace_ignores_case_like_the_name(client, tenant):
    """Namespaces are stored lower-cased like names (every top-level string of a Watcher body
    is, and so is every string of a lineage item), so a lookup matches them the same way."""
    orders = (await rest(client, tenant, "POST", "/address", address(
        "warehouse.public.orders", namespace="Postgres://DB:5432")))["id"]
    found = (await ok(client, tenant, ADDRESS, name="Warehouse.Public.Orders",
                      namespace="Postgres://DB:5432"))["address"]
    assert found is not None and found["id"] == str(orders)
    assert found["namespace"] == "postgres://db:5432"


LINEAGE = """query($id: ID!, $direction: LineageDirection, $depth: Int) {
  lineage(addressId: $id, direction: $direction, depth: $depth) {
    root { id name } nodes { id name addressType { name } }
    edges { sourceId targetId pipeline { id name kind } } } }"""


async def chain(client, tenant: Tenant) -> dict[str, int]:
    """a -> b -> c -> d, each edge drawn by its own pipeline (p-ab, p-bc, p-cd); returns the
    ids of the addresses and the pipelines by name."""
    ids = {"p-ab": await draw(client, tenant, "p-ab", ["a"], ["b"]),
           "p-bc": await draw(client, tenant, "p-bc", ["b"], ["c"]),
           "p-cd": await draw(client, tenant, "p-cd", ["c"], ["d"])}
    for a in (await ok(client, tenant, ADDRESSES))["addresses"]:
        ids[a["name"]] = int(a["id"])
    return ids


async def lineage(client, tenant: Tenant, address_id: int, direction: str | None = None,
                  depth: int | None = None) -> dict[str, Any] | None:
    variables: dict[str, Any] = {"id": str(address_id)}
    if direction is not None:
        variables["direction"] = direction
    if depth is not None:
        variables["depth"] = depth
    return (await ok(client, tenant, LINEAGE, **variables))["lineage"]


def node_names(graph: dict[str, Any]) -> list[str]:
    return [n["name"] for n in graph["nodes"]]


def edge_names(graph: dict[str, Any], ids: dict[str, int]) -> list[tuple[str, str, str]]:
    by_id = {str(v): k for k, v in ids.items() if len(k) == 1}
    return [(by_id[e["sourceId"]], by_id[e["targetId"]], e["pipeline"]["name"])
            for e in graph["edges"]]


async def test_lineage_directions_and_depths(client, tenant):
    ids = await chain(client, tenant)

    graph = await lineage(client, tenant, ids["b"], "DOWNSTREAM", 1)
    assert graph["root"] == {"id": str(ids["b"]), "name": "b"}
    assert node_names(graph) == ["b", "c"]
    assert edge_names(graph, ids) == [("b", "c", "p-bc")]
    [edge] = graph["edges"]
    assert edge["pipeline"] == {"id": str(ids["p-bc"]), "name": "p-bc", "kind": "watcher"}
    assert graph["nodes"][1]["addressType"] == {"name": "postgres"}

    graph = await lineage(client, tenant, ids["b"], "DOWNSTREAM", 2)
    assert node_names(graph) == ["b", "c", "d"]
    assert edge_names(graph, ids) == [("b", "c", "p-bc"), ("c", "d", "p-cd")]

    graph = await lineage(client, tenant, ids["d"], "UPSTREAM", 1)
    assert node_names(graph) == ["d", "c"]
    assert edge_names(graph, ids) == [("c", "d", "p-cd")]
    graph = await lineage(client, tenant, ids["d"], "UPSTREAM", 3)
    assert node_names(graph) == ["d", "a", "b", "c"]  # the root, then the others by id
    assert edge_names(graph, ids) == [("a", "b", "p-ab"), ("b", "c", "p-bc"), ("c", "d", "p-cd")]
    assert node_names(await lineage(client, tenant, ids["d"], "UPSTREAM", 2)) == ["d", "b", "c"]
    # upstream of the start and downstream of the end: only the root
    assert node_names(await lineage(client, tenant, ids["a"], "UPSTREAM", 5)) == ["a"]
    assert (await lineage(client, tenant, ids["d"], "DOWNSTREAM", 5))["edges"] == []

    graph = await lineage(client, tenant, ids["b"], "BOTH", 1)
    assert node_names(graph) == ["b", "a", "c"]
    assert edge_names(graph, ids) == [("a", "b", "p-ab"), ("b", "c", "p-bc")]
    # the defaults: both directions, three hops
    graph = await lineage(client, tenant, ids["b"])
    assert node_names(graph) == ["b", "a", "c", "d"]
    assert len(graph["edges"]) == 3


async def test_lineage_of_a_cycle_terminates(client, tenant):
    ids = await chain(client, tenant)
    ids["p-da"] = await draw(client, tenant, "p-da", ["d"], ["a"])  # a -> b -> c -> d -> a
    for direction in ("UPSTREAM", "DOWNSTREAM", "BOTH"):
        graph = await lineage(client, tenant, ids["a"], direction, 20)
        assert node_names(graph) == ["a", "b", "c", "d"], direction
        assert sorted(edge_names(graph, ids)) == [
            ("a", "b", "p-ab"), ("b", "c", "p-bc"), ("c", "d", "p-cd"), ("d", "a", "p-da")]
    # a self-loop too
    ids["p-cc"] = await draw(client, tenant, "p-cc", ["c"], ["c"])
    graph = await lineage(client, tenant, ids["c"], "DOWNSTREAM", 20)
    assert node_names(graph) == ["c", "a", "b", "d"]
    assert ("c", "c", "p-cc") in edge_names(graph, ids)


async def test_two_pipelines_drawing_the_same_edge_are_two_edges(client, tenant):
    ids = await chain(client, tenant)
    ids["p-ab-2"] = await draw(client, tenant, "p-ab-2", ["a"], ["b"])
    graph = await lineage(client, tenant, ids["a"], "DOWNSTREAM", 1)
    assert edge_names(graph, ids) == [("a", "b", "p-ab"), ("a", "b", "p-ab-2")]


async def test_lineage_of_an_unknown_address_is_null_and_bad_depths_are_errors(client, tenant):
    ids = await chain(client, tenant)
    for missing in ("999999", "0", "abc", str(2**40)):
        body = await graphql(client, tenant, LINEAGE, "read", id=missing)
        assert "errors" not in body and body["data"] == {"lineage": None}, body
    for depth in (0, 21, -1):
        body = await graphql(client, tenant, LINEAGE, "read", id=str(ids["a"]), depth=depth)
        assert body["data"] == {"lineage": None}
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert "depth" in error["extensions"]["fieldErrors"]
    body = await graphql(client, tenant, LINEAGE, "read", id=str(ids["a"]), direction="SIDEWAYS")
    assert body["errors"] and body.get("data") is None  # not a LineageDirection


# ----------------------------------------------------------------------------------------------
# anomaly rules and results

RULE_FIELDS = """id pipelineId metricField zThreshold lookbackDays minimumExecutions active
  createdAt updatedAt"""
CREATE_RULE = """mutation($input: AnomalyRuleInput!) { createAnomalyRule(input: $input) {
  __typename ... on AnomalyRuleSuccess { created rule { FIELDS } }
  ... on InvalidInputError { fieldErrors { field messages } }
  ... on NotFoundError { kind id } ... on Error { message } } }""".replace("FIELDS", RULE_FIELDS)
UPDATE_RULE = """mutation($input: UpdateAnomalyRuleInput!) { updateAnomalyRule(input: $input) {
  __typename ... on AnomalyRuleSuccess { created rule { FIELDS } }
  ... on InvalidInputError { fieldErrors { field messages } }
  ... on NotFoundError { kind id } ... on Error { message } } }""".replace("FIELDS", RULE_FIELDS)
RULES = """query($p: ID) { anomalyRules(pipelineId: $p) { FIELDS
  } }""".replace("FIELDS", RULE_FIELDS)
RESULT_FIELDS = """id runId pipelineId metricField value mean stdDev zThreshold lowerBound
  upperBound points detectedAt"""
RESULTS = """query($p: ID, $r: ID, $first: Int, $after: String) {
  anomalyResults(pipelineId: $p, runId: $r, first: $first, after: $after) {
    nodes { FIELDS } edges { cursor node { id } } pageInfo { hasNextPage endCursor
  } } }""".replace("FIELDS", RESULT_FIELDS)
UNFLAG = """mutation($p: ID!, $r: ID!, $m: [String!]!) {
  unflagAnomaly(pipelineId: $p, runId: $r, metricFields: $m) {
    __typename ... on DoneSuccess { ok } ... on InvalidInputError { fieldErrors { field } }
    ... on NotFoundError { kind } ... on Error { message } } }"""
RUN_ANOMALIES = """query($id: ID!) { run(id: $id) { anomalyFlags durationSeconds
  anomalyResults { FIELDS } } }""".replace("FIELDS", RESULT_FIELDS)


async def create_rule(client, tenant: Tenant, scopes: str = "report",
                      **fields: Any) -> dict[str, Any]:
    return await mutate(client, tenant, CREATE_RULE, scopes, input=fields)


async def update_rule(client, tenant: Tenant, scopes: str = "read,write,report",
                      **fields: Any) -> dict[str, Any]:
    # not `report` alone: see test_a_report_or_write_token_can_update_a_rule
    return await mutate(client, tenant, UPDATE_RULE, scopes, input=fields)


async def test_create_and_update_anomaly_rules(client, tenant):
    pid = await make_pipeline(client, tenant)
    other_pid = await make_pipeline(client, tenant, "other")
    made = await create_rule(client, tenant, pipelineId=str(pid), metricField="duration_seconds")
    assert made["__typename"] == "AnomalyRuleSuccess" and made["created"] is True
    rule = made["rule"]
    assert rule == {
        "id": rule["id"], "pipelineId": str(pid), "metricField": "duration_seconds",
        "zThreshold": 3.0, "lookbackDays": 30, "minimumExecutions": 30, "active": True,
        "createdAt": rule["createdAt"], "updatedAt": None}

    # the same pipeline and metric: found, unchanged (whatever the settings sent)
    again = await create_rule(client, tenant, pipelineId=str(pid),
                              metricField=" Duration_Seconds ", zThreshold=2.0)
    assert again["created"] is False and again["rule"] == rule
    # another metric, another pipeline: new rules, with the settings sent
    rows = await create_rule(client, tenant, pipelineId=str(pid), metricField="total_rows",
                             zThreshold=1.5, lookbackDays=7, minimumExecutions=5, active=False)
    assert rows["created"] is True
    assert (rows["rule"]["zThreshold"], rows["rule"]["lookbackDays"],
            rows["rule"]["minimumExecutions"], rows["rule"]["active"]) == (1.5, 7, 5, False)
    elsewhere = await create_rule(client, tenant, pipelineId=str(other_pid),
                                  metricField="duration_seconds")
    assert elsewhere["created"] is True and elsewhere["rule"]["id"] != rule["id"]

    listed = (await ok(client, tenant, RULES))["anomalyRules"]
    assert [r["id"] for r in listed] == [rule["id"], rows["rule"]["id"], elsewhere["rule"]["id"]]
    mine = (await ok(client, tenant, RULES, p=str(pid)))["anomalyRules"]
    assert [r["metricField"] for r in mine] == ["duration_seconds", "total_rows"]
    for nothing in ("999999", "0", "abc", str(2**40)):
        assert (await ok(client, tenant, RULES, p=nothing))["anomalyRules"] == []

    # update: only what is sent changes (a null is not sent)
    updated = await update_rule(client, tenant, id=rule["id"], zThreshold=2.5,
                                minimumExecutions=10, lookbackDays=None)
    assert updated["__typename"] == "AnomalyRuleSuccess" and updated["created"] is False
    assert (updated["rule"]["zThreshold"], updated["rule"]["minimumExecutions"],
            updated["rule"]["lookbackDays"], updated["rule"]["active"]) == (2.5, 10, 30, True)
    assert updated["rule"]["updatedAt"] is not None
    updated = await update_rule(client, tenant, id=rule["id"], active=False,
                                metricField="throughput")
    assert (updated["rule"]["active"], updated["rule"]["metricField"]) == (False, "throughput")
    stored = await AnomalyRule.get(id=int(rule["id"]))
    assert (stored.z_threshold, stored.minimum_executions, stored.lookback_days,
            stored.active, stored.metric_field) == (2.5, 10, 30, False, "throughput")
    # moving onto a metric the pipeline already watches is invalid
    clash = await update_rule(client, tenant, id=rule["id"], metricField="total_rows")
    assert field_errors(clash) == {"metricField"}


async def test_anomaly_rule_validation_names_the_graphql_fields(client, tenant):
    pid = await make_pipeline(client, tenant)
    bad = await create_rule(client, tenant, pipelineId=str(pid), metricField="nope",
                            zThreshold=0.5, lookbackDays=0, minimumExecutions=2)
    assert field_errors(bad) == {"metricField", "zThreshold", "lookbackDays",
                                 "minimumExecutions"}
    assert all(e["messages"] for e in bad["fieldErrors"])
    bad = await create_rule(client, tenant, pipelineId=str(pid), metricField="bytes",
                            zThreshold=10.5, lookbackDays=366, minimumExecutions=1001)
    assert field_errors(bad) == {"zThreshold", "lookbackDays", "minimumExecutions"}
    assert await AnomalyRule.all().count() == 0

    for missing in ("999999", "0", "abc"):
        result = await create_rule(client, tenant, pipelineId=missing,
                                   metricField="duration_seconds")
        assert result["__typename"] == "NotFoundError" and result["kind"] == "pipeline"

    rule = (await create_rule(client, tenant, pipelineId=str(pid),
                              metricField="duration_seconds"))["rule"]
    bad = await update_rule(client, tenant, id=rule["id"], zThreshold=11.0, lookbackDays=0,
                            minimumExecutions=4, metricField="nope")
    assert field_errors(bad) == {"zThreshold", "lookbackDays", "minimumExecutions",
                                 "metricField"}
    assert (await AnomalyRule.get(id=int(rule["id"]))).z_threshold == 3.0  # unchanged
    for missing in ("999999", "0", "abc"):
        result = await update_rule(client, tenant, id=missing, zThreshold=2.0)
        assert result["__typename"] == "NotFoundError"
        assert result["kind"] == "anomaly detection rule"


@pytest.mark.parametrize("scopes", ["report", "write"])
async def test_a_report_or_write_token_can_update_a_rule(client, tenant, scopes):
    pid = await make_pipeline(client, tenant)
    rule = (await create_rule(client, tenant, scopes, pipelineId=str(pid),
                              metricField="duration_seconds"))["rule"]
    updated = await update_rule(client, tenant, scopes, id=rule["id"], zThreshold=2.0)
    assert updated["__typename"] == "AnomalyRuleSuccess", updated
    assert updated["rule"]["zThreshold"] == 2.0


async def flag_a_slow_run(client, tenant: Tenant, settings) -> tuple[int, int]:
    """The issue's history: five runs of 100..140 s at 10:00 UTC on five days, a rule (z = 1,
    at least 5 executions), a 150 s run, and the task worker. Returns (pipeline, slow run)."""
    pid = await make_pipeline(client, tenant)
    for day, seconds in enumerate([100, 110, 120, 130, 140], start=1):
        await execution(client, tenant, pid, BASE - (6 - day) * DAY, seconds)
    made = await create_rule(client, tenant, pipelineId=str(pid), metricField="duration_seconds",
                             zThreshold=1.0, minimumExecutions=5)
    assert made["created"] is True
    slow = await execution(client, tenant, pid, BASE, 150)
    assert await TaskRunner(settings).run_due() >= 1
    return pid, slow


def assert_the_band(result: dict[str, Any], pid: int, slow: int) -> None:
    assert result["runId"] == str(slow) and result["pipelineId"] == str(pid)
    assert result["metricField"] == "duration_seconds"
    assert result["value"] == 150
    assert result["mean"] == pytest.approx(120)
    assert result["stdDev"] == pytest.approx(math.sqrt(250))
    assert round(result["stdDev"], 2) == 15.81
    assert round(result["lowerBound"], 2) == 104.19
    assert round(result["upperBound"], 2) == 135.81
    assert result["zThreshold"] == 1.0
    assert result["points"] == 5
    assert result["detectedAt"]


async def test_the_anomaly_flow_and_unflag(client, tenant, settings):
    pid, slow = await flag_a_slow_run(client, tenant, settings)
    assert (await Task.get(kind="anomaly_detection")).status == TaskStatus.DONE

    page = (await ok(client, tenant, RESULTS, p=str(pid)))["anomalyResults"]
    [result] = page["nodes"]
    assert_the_band(result, pid, slow)
    assert page["edges"] == [{"cursor": page["edges"][0]["cursor"], "node": {"id": result["id"]}}]
    assert page["pageInfo"]["hasNextPage"] is False
    assert (await ok(client, tenant, RESULTS, r=str(slow)))["anomalyResults"]["nodes"] == [result]
    assert (await ok(client, tenant, RESULTS))["anomalyResults"]["nodes"] == [result]
    for nothing in ("999999", "0", "abc", str(2**70)):
        assert (await ok(client, tenant, RESULTS, p=nothing))["anomalyResults"]["nodes"] == []
        assert (await ok(client, tenant, RESULTS, r=nothing))["anomalyResults"]["nodes"] == []

    run = (await ok(client, tenant, RUN_ANOMALIES, id=str(slow)))["run"]
    assert run["anomalyFlags"] == {"duration_seconds": True}
    assert run["durationSeconds"] == 150
    assert run["anomalyResults"] == [result]

    # unflag: the flag is cleared, the result goes, and there is nothing left to unflag
    done = await mutate(client, tenant, UNFLAG, "report", p=str(pid), r=str(slow),
                        m=["Duration_Seconds"])
    assert done == {"__typename": "DoneSuccess", "ok": True}
    run = (await ok(client, tenant, RUN_ANOMALIES, id=str(slow)))["run"]
    assert run["anomalyFlags"] == {"duration_seconds": False}
    assert run["anomalyResults"] == []
    assert (await ok(client, tenant, RESULTS, p=str(pid)))["anomalyResults"]["nodes"] == []
    again = await mutate(client, tenant, UNFLAG, "report", p=str(pid), r=str(slow),
                         m=["duration_seconds"])
    assert again["__typename"] == "NotFoundError" and again["kind"] == "anomaly"


async def test_anomaly_results_are_paged_newest_first(client, tenant, settings):
    pid, slow = await flag_a_slow_run(client, tenant, settings)
    slower = await execution(client, tenant, pid, BASE + DAY, 200)
    assert await TaskRunner(settings).run_due() == 1
    first = (await ok(client, tenant, RESULTS, p=str(pid), first=1))["anomalyResults"]
    assert [n["runId"] for n in first["nodes"]] == [str(slower)]
    assert first["pageInfo"]["hasNextPage"] is True
    rest_page = (await ok(client, tenant, RESULTS, p=str(pid), first=1,
                          after=first["pageInfo"]["endCursor"]))["anomalyResults"]
    assert [n["runId"] for n in rest_page["nodes"]] == [str(slow)]
    assert rest_page["pageInfo"]["hasNextPage"] is False
    body = await graphql(client, tenant, RESULTS, "read", first=0)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_unflag_validation_and_not_found(client, tenant, settings):
    pid, slow = await flag_a_slow_run(client, tenant, settings)
    other_pid = await make_pipeline(client, tenant, "other")
    bad = await mutate(client, tenant, UNFLAG, "report", p=str(pid), r=str(slow), m=["nope"])
    assert field_errors(bad) == {"metricFields"}
    bad = await mutate(client, tenant, UNFLAG, "report", p=str(pid), r=str(slow), m=[])
    assert field_errors(bad) == {"metricFields"}
    # the run of another pipeline, unknown ids, a metric that is not flagged
    for p, r, m in ((other_pid, slow, "duration_seconds"), (pid, 999999, "duration_seconds"),
                    ("abc", slow, "duration_seconds"), (pid, "0", "duration_seconds"),
                    (pid, slow, "total_rows")):
        result = await mutate(client, tenant, UNFLAG, "report", p=str(p), r=str(r), m=[m])
        assert result["__typename"] == "NotFoundError", (p, r, m, result)
    assert (await Run.get(id=slow)).anomaly_flags == {"duration_seconds": True}
    assert await AnomalyResult.all().count() == 1


# ----------------------------------------------------------------------------------------------
# checks: requests queue a task; the logs list what the checks found

TIMELINESS = """mutation($m: Int!) { requestTimelinessCheck(lookbackMinutes: $m) {
  __typename ... on DoneSuccess { ok } ... on InvalidInputError { fieldErrors { field messages } }
  ... on Error { message } } }"""
TIMELINESS_DEFAULT = """mutation { requestTimelinessCheck { __typename } }"""
FRESHNESS = """mutation { requestFreshnessCheck { __typename ... on DoneSuccess { ok } } }"""
TIMELINESS_LOGS = """query($first: Int, $after: String) { timelinessLogs(first: $first,
  after: $after) { nodes { id runId pipelineId runStatus deadlineAt createdAt }
  pageInfo { hasNextPage endCursor } } }"""
FRESHNESS_LOGS = """query($first: Int, $after: String) { freshnessLogs(first: $first,
  after: $after) { nodes { id pipelineId lastDmlAt deadlineAt createdAt }
  pageInfo { hasNextPage endCursor } } }"""


async def test_check_requests_queue_tasks(client, tenant):
    for minutes in (1, 4, -5, 0):
        bad = await mutate(client, tenant, TIMELINESS, "report", m=minutes)
        assert field_errors(bad) == {"lookbackMinutes"}, minutes
    assert await Task.all().count() == 0

    assert await mutate(client, tenant, TIMELINESS, "report", m=90) == {
        "__typename": "DoneSuccess", "ok": True}
    assert (await mutate(client, tenant, TIMELINESS_DEFAULT, "write"))["__typename"] == \
        "DoneSuccess"
    assert await mutate(client, tenant, FRESHNESS, "report") == {
        "__typename": "DoneSuccess", "ok": True}
    tasks = await Task.all().order_by("id")
    assert [(t.kind, t.payload, t.organisation_id, t.status) for t in tasks] == [  # type: ignore[attr-defined]
        ("timeliness_check", {"lookback_minutes": 90}, tenant.org_id, TaskStatus.PENDING),
        ("timeliness_check", {"lookback_minutes": 60}, tenant.org_id, TaskStatus.PENDING),
        ("freshness_check", {}, tenant.org_id, TaskStatus.PENDING)]


async def late_and_stale(client, tenant: Tenant) -> dict[str, Any]:
    """A running execution 30 minutes into a 5-minute timeliness, and a pipeline whose target
    last changed 3 hours ago with a 1-hour freshness; both checks run. Returns the ids."""
    now = datetime.now(UTC).replace(microsecond=0)
    late_pid = await make_pipeline(client, tenant, "late")
    patched = await patch_pipeline(client, tenant, late_pid, timeliness_number=5,
                                   timeliness_datepart="minute")
    assert (patched["timeliness_number"], patched["timeliness_datepart"]) == (5, "minute")
    late_run = await start(client, tenant, late_pid, now - timedelta(minutes=30))
    on_time = await start(client, tenant, late_pid, now - timedelta(minutes=2))

    stale_pid = await make_pipeline(client, tenant, "stale")
    await patch_pipeline(client, tenant, stale_pid, freshness_number=1,
                         freshness_datepart="hour")
    changed_at = now - timedelta(hours=3)
    load = await start(client, tenant, stale_pid, changed_at - timedelta(minutes=10))
    await end(client, tenant, load, changed_at, inserts=5)
    [timely] = await checks.check_timeliness(organisation_id=tenant.org_id, lookback_minutes=60)
    [fresh] = await checks.check_freshness(organisation_id=tenant.org_id)
    return {"now": now, "late_pid": late_pid, "late_run": late_run, "on_time": on_time,
            "stale_pid": stale_pid, "changed_at": changed_at, "timeliness": timely,
            "freshness": fresh}


async def test_timeliness_and_freshness_logs_list_what_the_checks_logged(client, tenant):
    found = await late_and_stale(client, tenant)
    [log] = (await ok(client, tenant, TIMELINESS_LOGS))["timelinessLogs"]["nodes"]
    stored = await TimelinessLog.get(id=found["timeliness"].id)
    assert log["id"] == str(stored.id)
    assert log["runId"] == str(found["late_run"]) and log["pipelineId"] == str(found["late_pid"])
    assert log["runStatus"] == "running"
    assert moment(log["deadlineAt"]) == found["now"] - timedelta(minutes=25)
    assert moment(log["createdAt"]) == stored.created_at

    [log] = (await ok(client, tenant, FRESHNESS_LOGS))["freshnessLogs"]["nodes"]
    stored = await FreshnessLog.get(id=found["freshness"].id)
    assert log["id"] == str(stored.id) and log["pipelineId"] == str(found["stale_pid"])
    assert moment(log["lastDmlAt"]) == found["changed_at"]
    assert moment(log["deadlineAt"]) == found["changed_at"] + timedelta(hours=1)

    # newest first, paged
    second = await start(client, tenant, found["late_pid"],
                         found["now"] - timedelta(minutes=20))
    assert len(await checks.check_timeliness(organisation_id=tenant.org_id)) == 1
    page = (await ok(client, tenant, TIMELINESS_LOGS, first=1))["timelinessLogs"]
    assert [n["runId"] for n in page["nodes"]] == [str(second)]
    assert page["pageInfo"]["hasNextPage"] is True
    page = (await ok(client, tenant, TIMELINESS_LOGS, first=1,
                     after=page["pageInfo"]["endCursor"]))["timelinessLogs"]
    assert [n["runId"] for n in page["nodes"]] == [str(found["late_run"])]
    assert page["pageInfo"]["hasNextPage"] is False


async def test_a_requested_check_runs_in_the_task_worker(client, tenant, settings):
    now = datetime.now(UTC).replace(microsecond=0)
    pid = await make_pipeline(client, tenant, "late")
    await patch_pipeline(client, tenant, pid, timeliness_number=1, timeliness_datepart="minute")
    run = await start(client, tenant, pid, now - timedelta(minutes=10))
    assert (await mutate(client, tenant, TIMELINESS, "report", m=30))["__typename"] == \
        "DoneSuccess"
    assert (await ok(client, tenant, TIMELINESS_LOGS))["timelinessLogs"]["nodes"] == []
    assert await TaskRunner(settings).run_due() == 1
    [log] = (await ok(client, tenant, TIMELINESS_LOGS))["timelinessLogs"]["nodes"]
    assert log["runId"] == str(run) and log["runStatus"] == "running"


# ----------------------------------------------------------------------------------------------
# alert channels

CHANNEL_FIELDS = "id name kind url enabled createdAt"
CREATE_CHANNEL = """mutation($input: CreateAlertChannelInput!) { createAlertChannel(input: $input) {
  __typename ... on AlertChannelSuccess { secret channel { FIELDS } }
  ... on InvalidInputError { fieldErrors { field messages } } ... on Error { message
  } } }""".replace("FIELDS", CHANNEL_FIELDS)
SET_ENABLED = """mutation($id: ID!, $enabled: Boolean!) {
  setAlertChannelEnabled(id: $id, enabled: $enabled) {
    __typename ... on AlertChannelSuccess { secret channel { FIELDS } }
    ... on NotFoundError { kind id } ... on Error { message
  } } }""".replace("FIELDS", CHANNEL_FIELDS)
DELETE_CHANNEL = """mutation($id: ID!) { deleteAlertChannel(id: $id) {
  __typename ... on DoneSuccess { ok } ... on NotFoundError { kind id } ... on Error { message }
  } }"""
CHANNELS = "{ alertChannels { FIELDS } }".replace("FIELDS", CHANNEL_FIELDS)


async def create_channel(client, tenant: Tenant, name: str, kind: str, url: str,
                         scopes: str = "write") -> dict[str, Any]:
    return await mutate(client, tenant, CREATE_CHANNEL, scopes,
                        input={"name": name, "kind": kind, "url": url})


async def test_alert_channels(client, tenant):
    slack = await create_channel(client, tenant, " ops ", "slack", "http://127.0.0.1:9/slack")
    assert slack["__typename"] == "AlertChannelSuccess" and slack["secret"] is None
    assert slack["channel"]["name"] == "ops" and slack["channel"]["kind"] == "slack"
    assert slack["channel"]["enabled"] is True
    hook = await create_channel(client, tenant, "pager", "WEBHOOK", "https://127.0.0.1:9/hook")
    assert hook["channel"]["kind"] == "webhook"
    assert isinstance(hook["secret"], str) and hook["secret"]  # shown once, when created
    stored = await AlertChannel.get(id=int(hook["channel"]["id"]))
    assert stored.secret == hook["secret"]

    listed = (await ok(client, tenant, CHANNELS, "read,write,report"))["alertChannels"]
    assert listed == [slack["channel"], hook["channel"]]

    off = await mutate(client, tenant, SET_ENABLED, id=slack["channel"]["id"], enabled=False)
    assert off["__typename"] == "AlertChannelSuccess" and off["secret"] is None
    assert off["channel"]["enabled"] is False
    channels = (await ok(client, tenant, CHANNELS, "read,write,report"))["alertChannels"]
    assert [c["enabled"] for c in channels] == [False, True]
    on = await mutate(client, tenant, SET_ENABLED, id=slack["channel"]["id"], enabled=True)
    assert on["channel"]["enabled"] is True

    done = await mutate(client, tenant, DELETE_CHANNEL, id=hook["channel"]["id"])
    assert done == {"__typename": "DoneSuccess", "ok": True}
    channels = (await ok(client, tenant, CHANNELS, "read,write,report"))["alertChannels"]
    assert channels == [on["channel"]]
    again = await mutate(client, tenant, DELETE_CHANNEL, id=hook["channel"]["id"])
    assert again["__typename"] == "NotFoundError" and again["kind"] == "alert channel"
    for missing in ("999999", "0", "abc", str(2**40)):
        assert (await mutate(client, tenant, DELETE_CHANNEL, id=missing))["__typename"] == \
            "NotFoundError"
        assert (await mutate(client, tenant, SET_ENABLED, id=missing, enabled=False))[
            "__typename"] == "NotFoundError"


async def test_alert_channel_validation(client, tenant):
    for name, kind, url, field in (
        ("ops", "email", "http://127.0.0.1:9/x", "kind"),
        ("ops", "slack", "ftp://x", "url"),
        ("ops", "webhook", "", "url"),
        ("ops", "slack", "not a url", "url"),
        ("", "slack", "http://127.0.0.1:9/x", "name"),
        ("x" * 201, "slack", "http://127.0.0.1:9/x", "name"),
    ):
        result = await create_channel(client, tenant, name, kind, url)
        assert field_errors(result) == {field}, (name, kind, url, result)
    assert await AlertChannel.all().count() == 0
    assert (await create_channel(client, tenant, "ops", "slack", "http://127.0.0.1:9/x"))[
        "__typename"] == "AlertChannelSuccess"
    duplicate = await create_channel(client, tenant, "ops", "webhook", "http://127.0.0.1:9/y")
    assert field_errors(duplicate) == {"name"}
    assert await AlertChannel.all().count() == 1


async def test_a_channel_that_was_alerted_can_be_disabled_and_deleted(client, tenant, settings):
    channel = (await create_channel(client, tenant, "ops", "webhook",
                                    "http://127.0.0.1:9/hook"))["channel"]
    await flag_a_slow_run(client, tenant, settings)  # the anomaly is alerted to the channel
    [delivery] = await WebhookDelivery.filter(channel_id=int(channel["id"]))
    assert delivery.event_type == "alert.anomaly"
    off = await mutate(client, tenant, SET_ENABLED, id=channel["id"], enabled=False)
    assert off["channel"]["enabled"] is False
    done = await mutate(client, tenant, DELETE_CHANNEL, id=channel["id"])
    assert done == {"__typename": "DoneSuccess", "ok": True}
    assert (await ok(client, tenant, CHANNELS, "read,write,report"))["alertChannels"] == []
    assert await WebhookDelivery.filter(id=delivery.id).count() == 0  # its deliveries go too


# ----------------------------------------------------------------------------------------------
# scopes

READS = {
    "pipelineTypes": "{ pipelineTypes { id } }",
    "pipelineType": "query($type: ID!) { pipelineType(id: $type) { id } }",
    "addresses": "{ addresses { id } }",
    "address": "query($address: ID!) { address(id: $address) { id } }",
    "addressByName": '{ address(name: "a") { id } }',
    "lineage": "query($address: ID!) { lineage(addressId: $address) { root { id } } }",
    "anomalyRules": "{ anomalyRules { id } }",
    "anomalyResults": "{ anomalyResults { nodes { id } } }",
    "timelinessLogs": "{ timelinessLogs { nodes { id } } }",
    "freshnessLogs": "{ freshnessLogs { nodes { id } } }",
    "alertChannels": "{ alertChannels { id } }",
}


async def watcher_state(client, tenant: Tenant) -> dict[str, Any]:
    """One of everything the mutations act on, and the ids the queries need."""
    ids = await chain(client, tenant)
    pid = await make_pipeline(client, tenant, "scoped")
    run = await execution(client, tenant, pid, BASE, 60)
    rule = (await create_rule(client, tenant, pipelineId=str(pid),
                              metricField="duration_seconds"))["rule"]
    channel = (await create_channel(client, tenant, "ops", "slack",
                                    "http://127.0.0.1:9/x"))["channel"]
    [type_id] = [t["id"] for t in (await ok(client, tenant, PIPELINE_TYPES))["pipelineTypes"]]
    return {"type": type_id, "address": str(ids["a"]), "pipeline": str(pid), "run": str(run),
            "rule": rule["id"], "channel": channel["id"]}


def variables_of(query: str, state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if f"${k}" in query}


@pytest.mark.parametrize("scopes", ["write", "report", None])
async def test_reads_need_the_read_scope(client, tenant, scopes):
    state = await watcher_state(client, tenant)
    for name, query in READS.items():
        body = await graphql(client, tenant if scopes else None, query, scopes or "admin",
                             **variables_of(query, state))
        [error] = body["errors"]
        expected = "FORBIDDEN" if scopes else "UNAUTHENTICATED"
        assert error["extensions"]["code"] == expected, (name, body)
        # a non-null field nulls the data; a nullable one is null
        assert body["data"] is None or set(body["data"].values()) == {None}, (name, body)
    for query in READS.values():  # and with it, they answer
        await ok(client, tenant, query, "read", **variables_of(query, state))


MUTATIONS = {
    "createAnomalyRule": """mutation($pipeline: ID!) { r: createAnomalyRule(input: {
        pipelineId: $pipeline, metricField: "total_rows"}) { __typename } }""",
    "updateAnomalyRule": """mutation($rule: ID!) { r: updateAnomalyRule(input: {
        id: $rule, zThreshold: 2.0}) { __typename } }""",
    "unflagAnomaly": """mutation($pipeline: ID!, $run: ID!) { r: unflagAnomaly(
        pipelineId: $pipeline, runId: $run, metricFields: ["duration_seconds"]) {
        __typename } }""",
    "requestTimelinessCheck": "mutation { r: requestTimelinessCheck { __typename } }",
    "requestFreshnessCheck": "mutation { r: requestFreshnessCheck { __typename } }",
    "createAlertChannel": """mutation { r: createAlertChannel(input: {name: "new",
        kind: "slack", url: "http://127.0.0.1:9/new"}) { __typename } }""",
    "setAlertChannelEnabled": """mutation($channel: ID!) { r: setAlertChannelEnabled(
        id: $channel, enabled: false) { __typename } }""",
    "deleteAlertChannel": """mutation($channel: ID!) { r: deleteAlertChannel(id: $channel) {
        __typename } }""",
}
# What each mutation answers when the scope lets it through (nothing is flagged to unflag).
ALLOWED = {"createAnomalyRule": "AnomalyRuleSuccess", "updateAnomalyRule": "AnomalyRuleSuccess",
           "unflagAnomaly": "NotFoundError", "requestTimelinessCheck": "DoneSuccess",
           "requestFreshnessCheck": "DoneSuccess", "createAlertChannel": "AlertChannelSuccess",
           "setAlertChannelEnabled": "AlertChannelSuccess", "deleteAlertChannel": "DoneSuccess"}
# The Watcher's own writes take `report` (like its REST routes); alert channels need `write`.
REPORT_WRITES = {"createAnomalyRule", "updateAnomalyRule", "unflagAnomaly",
                 "requestTimelinessCheck", "requestFreshnessCheck"}


async def snapshot() -> tuple:
    rules = [(r.id, r.metric_field, r.z_threshold) for r in await AnomalyRule.all().order_by("id")]
    channels = [(c.id, c.name, c.enabled) for c in await AlertChannel.all().order_by("id")]
    return rules, channels, await Task.all().count()


async def test_mutations_with_the_read_scope_are_denied(client, tenant):
    state = await watcher_state(client, tenant)
    before = await snapshot()
    for name, query in MUTATIONS.items():
        result = await mutate(client, tenant, query, "read", **variables_of(query, state))
        assert result["__typename"] == "PermissionDeniedError", name
    assert await snapshot() == before


async def test_alert_channel_mutations_with_the_report_scope_are_denied(client, tenant):
    state = await watcher_state(client, tenant)
    before = await snapshot()
    for name in MUTATIONS.keys() - REPORT_WRITES:
        query = MUTATIONS[name]
        result = await mutate(client, tenant, query, "report", **variables_of(query, state))
        assert result["__typename"] == "PermissionDeniedError", name
    assert await snapshot() == before


# updateAnomalyRule with `report` or `write` alone: test_a_report_or_write_token_can_update_a_rule
@pytest.mark.parametrize("scopes, allowed", [
    ("report", REPORT_WRITES - {"updateAnomalyRule"}),
    ("write", MUTATIONS.keys() - {"updateAnomalyRule"}),
    ("read,write,report", MUTATIONS.keys()),
])
async def test_mutations_the_scope_allows(client, tenant, scopes, allowed):
    state = await watcher_state(client, tenant)
    for name in sorted(allowed, key=list(MUTATIONS).index):
        query = MUTATIONS[name]
        result = await mutate(client, tenant, query, scopes, **variables_of(query, state))
        assert result["__typename"] == ALLOWED[name], (name, result)


# ----------------------------------------------------------------------------------------------
# tenancy

EVERYTHING = """query($type: ID!, $address: ID!, $pipeline: ID!, $run: ID!, $child: ID!) {
  pipelineTypes { id } pipelineType(id: $type) { id }
  addresses { id } address(id: $address) { id }
  a: address(name: "a") { id } ns: address(name: "a", namespace: "ns") { id }
  lineage(addressId: $address) { root { id } }
  anomalyRules { id } rulesOf: anomalyRules(pipelineId: $pipeline) { id }
  anomalyResults { nodes { id } } resultsOf: anomalyResults(pipelineId: $pipeline) {
    nodes { id } }
  resultsOfRun: anomalyResults(runId: $run) { nodes { id } }
  timelinessLogs { nodes { id } } freshnessLogs { nodes { id } }
  alertChannels { id }
  pipeline(id: $pipeline) { id } run(id: $run) { id } child: run(id: $child) { id }
  runs { nodes { id } } pipelines { nodes { id } } }"""


async def other_organisation(client, tenant: Tenant, settings) -> dict[str, Any]:
    """Another organisation with one of everything: a lineage chain, a flagged run with a
    child, a rule, an alert channel, a timeliness and a freshness log."""
    found = await late_and_stale(client, tenant)
    ids = await chain(client, tenant)
    await rest(client, tenant, "PATCH", "/address", {"id": ids["a"], "namespace": "ns"},
               status=200)
    pid, slow = await flag_a_slow_run(client, tenant, settings)
    child = await start(client, tenant, pid, BASE + timedelta(minutes=1), parent=slow)
    [rule] = await AnomalyRule.filter(organisation_id=tenant.org_id)
    channel = (await create_channel(client, tenant, "ops", "slack",
                                    "http://127.0.0.1:9/x"))["channel"]
    [type_id, *_] = [t["id"] for t in (await ok(client, tenant, PIPELINE_TYPES))["pipelineTypes"]]
    state = {"type": type_id, "address": str(ids["a"]), "pipeline": str(pid), "run": str(slow),
             "child": str(child), "rule": str(rule.id), "channel": channel["id"]}
    # everything is there for its own organisation
    data = await ok(client, tenant, EVERYTHING, **state)
    assert all(data.values()), data
    assert data["timelinessLogs"]["nodes"] and data["freshnessLogs"]["nodes"]
    assert data["resultsOfRun"]["nodes"] and found["timeliness"]
    return state


async def test_queries_with_another_organisations_ids_find_nothing(
    client, tenant, other_tenant, settings
):
    theirs = await other_organisation(client, other_tenant, settings)
    data = await ok(client, tenant, EVERYTHING, **theirs)
    empty_pages = {"anomalyResults", "resultsOf", "resultsOfRun", "timelinessLogs",
                   "freshnessLogs", "runs", "pipelines"}
    for key, value in data.items():
        assert value == ({"nodes": []} if key in empty_pages else [] if key in {
            "pipelineTypes", "addresses", "anomalyRules", "rulesOf", "alertChannels"} else None
        ), (key, value)

    # the organisation's own Watcher objects do not reach into the other's either
    mine = await make_pipeline(client, tenant, "scoped")
    run = await start(client, tenant, mine, BASE)
    tree = """query($id: ID!) { run(id: $id) { children { id } parent { id } anomalyResults {
      id } pipeline { pipelineType { id } } } }"""
    assert (await ok(client, tenant, tree, id=str(run)))["run"] == {
        "children": [], "parent": None, "anomalyResults": [], "pipeline": {
            "pipelineType": {"id": (await ok(client, tenant, PIPELINE_TYPES))[
                "pipelineTypes"][0]["id"]}}}
    r = await client.post("/start_pipeline_execution", json={
        "pipeline_id": mine, "parent_id": int(theirs["run"])}, headers=tenant.headers("report"))
    assert r.status_code == 404, r.text


async def test_mutations_with_another_organisations_ids_are_not_found(
    client, tenant, other_tenant, settings
):
    theirs = await other_organisation(client, other_tenant, settings)
    mine = await make_pipeline(client, tenant, "mine")
    before = await snapshot(), (await Run.get(id=int(theirs["run"]))).anomaly_flags, \
        await AnomalyResult.all().count()

    attempts = [
        (CREATE_RULE, {"input": {"pipelineId": theirs["pipeline"],
                                 "metricField": "total_rows"}}),
        (UPDATE_RULE, {"input": {"id": theirs["rule"], "zThreshold": 5.0, "active": False}}),
        (UNFLAG, {"p": theirs["pipeline"], "r": theirs["run"], "m": ["duration_seconds"]}),
        (UNFLAG, {"p": str(mine), "r": theirs["run"], "m": ["duration_seconds"]}),
        (SET_ENABLED, {"id": theirs["channel"], "enabled": False}),
        (DELETE_CHANNEL, {"id": theirs["channel"]}),
    ]
    for query, variables in attempts:
        result = await mutate(client, tenant, query, "admin", **variables)
        assert result["__typename"] == "NotFoundError", (query, variables, result)

    after = await snapshot(), (await Run.get(id=int(theirs["run"]))).anomaly_flags, \
        await AnomalyResult.all().count()
    assert after == before
    assert before[1] == {"duration_seconds": True}
    # and the requested checks are of the caller's organisation only
    assert (await mutate(client, tenant, TIMELINESS, "report", m=60))["__typename"] == \
        "DoneSuccess"
    newest = await Task.all().order_by("-id").first()
    assert newest is not None and newest.organisation_id == tenant.org_id  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------
# the N+1 invariant

RUNS_WITH_WATCHER_FIELDS = """{ runs(first: 50) { nodes {
    id parent { id } children { id } pipeline { id pipelineType { name } } } } }"""


async def counted(caplog, client, tenant: Tenant, query: str) -> tuple[int, dict]:
    """Run one GraphQL request; returns (SQL statements it executed, its data)."""
    with caplog.at_level(logging.DEBUG, logger=SQL_LOGGER):
        start_at = len(caplog.records)
        data = await ok(client, tenant, query)
        records = caplog.records[start_at:]
    statements = [r for r in records if r.name == SQL_LOGGER and r.levelno == logging.DEBUG
                  and not r.getMessage().startswith(NOT_STATEMENTS)
                  and LAST_USED not in r.getMessage()]
    return len(statements), data


async def add_runs(client, tenant: Tenant, first: int, count: int) -> None:
    """Runs numbered first.., each of its own pipeline of its own type; an odd-numbered run
    is a child of the one before it."""
    for i in range(first, first + count):
        pid = await make_pipeline(client, tenant, f"p-{i:03d}", f"type-{i:03d}")
        previous = await Run.filter(organisation_id=tenant.org_id).order_by("-id").first()
        parent = previous.id if i % 2 and previous else None
        await start(client, tenant, pid, BASE + timedelta(minutes=i), parent=parent)


async def test_runs_with_watcher_fields_cost_a_fixed_number_of_queries(client, tenant, caplog):
    await add_runs(client, tenant, 0, 5)
    small, data = await counted(caplog, client, tenant, RUNS_WITH_WATCHER_FIELDS)
    assert len(data["runs"]["nodes"]) == 5

    await add_runs(client, tenant, 5, 45)
    large, data = await counted(caplog, client, tenant, RUNS_WITH_WATCHER_FIELDS)
    nodes = data["runs"]["nodes"]
    assert len(nodes) == 50
    by_id = {n["id"]: n for n in nodes}
    # newest first: run i is nodes[49 - i]; its pipeline's type is type-i
    for i, node in enumerate(reversed(nodes)):
        assert node["pipeline"]["pipelineType"] == {"name": f"type-{i:03d}"}
        if i % 2:
            assert node["parent"]["id"] == nodes[50 - i]["id"] and node["children"] == []
        else:
            assert node["parent"] is None
            assert node["children"] == ([] if i == 49 else [{"id": nodes[48 - i]["id"]}])
    assert sum(1 for n in by_id.values() if n["parent"]) == 25

    assert large == small, f"{small} queries for 5 runs, {large} for 50"
    # the token, the page, then one batch each: parents, children, pipelines, pipeline types
    assert large <= 6


async def add_addresses(client, tenant: Tenant, first: int, count: int) -> None:
    for i in range(first, first + count):
        await rest(client, tenant, "POST", "/address", address(f"a-{i:03d}", f"type-{i:03d}"))


async def test_addresses_with_their_type_cost_a_fixed_number_of_queries(client, tenant, caplog):
    query = "{ addresses { id addressType { name } } }"
    await add_addresses(client, tenant, 0, 5)
    small, data = await counted(caplog, client, tenant, query)
    assert len(data["addresses"]) == 5
    await add_addresses(client, tenant, 5, 45)
    large, data = await counted(caplog, client, tenant, query)
    assert [a["addressType"]["name"] for a in data["addresses"]] == [
        f"type-{i:03d}" for i in range(50)]
    assert large == small, f"{small} queries for 5 addresses, {large} for 50"


async def test_runs_with_anomaly_results_cost_a_fixed_number_of_queries(client, tenant, caplog):
    query = "{ runs(first: 50) { nodes { id anomalyResults { id } } } }"
    await add_runs(client, tenant, 0, 5)
    small, data = await counted(caplog, client, tenant, query)
    assert len(data["runs"]["nodes"]) == 5
    await add_runs(client, tenant, 5, 45)
    large, data = await counted(caplog, client, tenant, query)
    assert len(data["runs"]["nodes"]) == 50
    assert large == small, f"{small} queries for 5 runs, {large} for 50"
