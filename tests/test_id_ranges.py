"""Ids and filter values at the edge (issue 10, findings 6 and 7's REST cases): an id no row can
have is "not found" exactly like an unknown one, a value the column cannot hold is a 400 in the
contract's shape; none reaches the database driver (PostgreSQL answered 500 "value out of int32
range" for ids above 2**31 - 1, and 500 for NUL or over-long filter strings)."""

from __future__ import annotations

import pytest

from runwatch.models import Pipeline, Run
from runwatch.resolvers import inputs
from runwatch.resolvers.errors import NotFound
from tests.conftest import Tenant
from tests.elt_helpers import AGENT, ELT, create_pipeline, create_run, make_gateway
from tests.helpers import graphql

BIG = "2349699704146414"  # above 2**31 - 1, below 2**63 - 1
HUGE = "9" * 30  # above 2**63 - 1
UNKNOWN = "999999"  # storable, exists nowhere


@pytest.mark.parametrize("value", [BIG, HUGE, int(BIG)])
async def test_elt_create_pipeline_with_an_impossible_connection(client, tenant: Tenant, value):
    unknown = await client.post(f"{ELT}/pipelines", json={"name": "u", "connectionId": UNKNOWN},
                                headers=tenant.headers("write"))
    r = await client.post(f"{ELT}/pipelines", json={"name": "x", "connectionId": value},
                          headers=tenant.headers("write"))
    assert r.status_code == unknown.status_code == 400, r.text
    assert set(r.json()["error"]) == set(unknown.json()["error"]) == {"connectionId"}, r.text
    assert await Pipeline.filter(name__in=["x", "u"]).count() == 0


async def test_elt_patch_pipeline_with_an_impossible_connection(client, tenant: Tenant):
    pipeline = await create_pipeline(client, tenant)
    r = await client.patch(f"{ELT}/pipelines/{pipeline['id']}", json={"connectionId": BIG},
                           headers=tenant.headers("write"))
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) == {"connectionId"}


@pytest.mark.parametrize("field", ["pipelineId", "targetGatewayId"])
@pytest.mark.parametrize("value", [BIG, HUGE])
async def test_elt_create_run_with_impossible_ids(client, tenant: Tenant, field, value):
    pipeline = await create_pipeline(client, tenant)
    body = {"pipelineId": pipeline["id"], field: value}
    r = await client.post(f"{ELT}/runs", json=body, headers=tenant.headers("write"))
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) == {field}, r.text
    assert await Run.all().count() == 0


@pytest.mark.parametrize("path", [
    f"{ELT}/pipelines/{BIG}", f"{ELT}/pipelines/{HUGE}", f"{ELT}/runs/{HUGE}",
    f"/pipeline/{BIG}", f"/pipeline/{HUGE}", f"/pipeline/-{BIG}", f"/pipeline_execution/{HUGE}",
    f"/address/{BIG}",
])
async def test_impossible_path_ids_are_not_found(client, tenant: Tenant, path):
    r = await client.get(path, headers=tenant.headers("read"))
    assert r.status_code == 404, r.text


async def test_warehouse_impossible_path_ids_are_not_found(client, tenant: Tenant):
    for path in (f"{tenant.prefix}/{BIG}/", f"{tenant.prefix}/{HUGE}/",
                 f"/api/v1/organisations/{BIG}/integrations/warehouse-connections/"):
        r = await client.get(path, headers=tenant.headers("read"))
        assert r.status_code == 404, (path, r.text)
        assert r.json() == {"detail": "Not found."}


async def test_elt_filters_by_impossible_ids_match_nothing(client, tenant: Tenant):
    pipeline = await create_pipeline(client, tenant)
    await create_run(client, tenant, pipeline["id"])
    for query in (f"pipelineId={BIG}", f"pipelineId={HUGE}", f"before={HUGE}"):
        r = await client.get(f"{ELT}/runs?{query}", headers=tenant.headers("read"))
        assert r.status_code == 200, r.text
        assert r.json()["runs"] == []


@pytest.mark.parametrize("query", ["environment=" + "e" * 101, "environment=a%00b",
                                   "environment=%00"])
async def test_elt_run_filters_the_column_cannot_hold_are_400(client, tenant: Tenant, query):
    r = await client.get(f"{ELT}/runs?{query}", headers=tenant.headers("read"))
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and "environment" in r.json()["error"], r.text


async def test_elt_run_filter_at_the_column_length_is_fine(client, tenant: Tenant):
    r = await client.get(f"{ELT}/runs?environment={'e' * 100}", headers=tenant.headers("read"))
    assert r.status_code == 200, r.text


CREATE_PIPELINE = """mutation($c: ID) { createPipeline(input: {name: "g", connectionId: $c}) {
  __typename ... on Error { message } } }"""
CREATE_RUN = """mutation($p: ID!, $g: ID) { createRun(input: {pipelineId: $p,
  targetGatewayId: $g}) { __typename ... on Error { message } } }"""


@pytest.mark.parametrize("value", [BIG, HUGE])
async def test_graphql_impossible_ids_are_data_not_unexpected(client, tenant: Tenant, value):
    data = await graphql(client, tenant, CREATE_PIPELINE, c=value)
    assert data["data"]["createPipeline"]["__typename"] == "InvalidInputError", data
    pipeline = await create_pipeline(client, tenant)
    await make_gateway(tenant)
    data = await graphql(client, tenant, CREATE_RUN, p=value)
    assert data["data"]["createRun"]["__typename"] == "InvalidInputError", data
    data = await graphql(client, tenant, CREATE_RUN, p=pipeline["id"], g=value)
    assert data["data"]["createRun"]["__typename"] == "InvalidInputError", data
    data = await graphql(client, tenant, "query($i: ID!) { pipeline(id: $i) { id } }", i=value)
    assert data["data"] == {"pipeline": None} and "errors" not in data, data
    assert await Run.all().count() == 0


async def test_graphql_connection_filters_the_column_cannot_hold(client, tenant: Tenant):
    for name in ("a\u0000b", "n" * 201):
        data = await graphql(client, tenant, """query($n: String) {
          connections(nameContains: $n) { nodes { id } } }""", n=name)
        assert "Unexpected error." not in str(data), data
        assert data.get("errors"), data


def test_the_id_rule():
    assert inputs.parse_id("2147483647", "pipeline") == 2**31 - 1
    assert inputs.parse_id("9223372036854775807", "run") == 2**63 - 1
    for raw, kind in (("2147483648", "pipeline"), ("9223372036854775808", "run"), ("0", "run"),
                      ("-1", "run"), ("1e3", "run"), ("", "run"), ("١", "run"), (HUGE, "run"),
                      ("9" * 5000, "run"), (True, "run")):
        with pytest.raises(NotFound):
            inputs.parse_id(raw, kind)


N = "a\u0000b"


async def test_nul_in_string_inputs_is_never_a_500(client, tenant):
    """PostgreSQL text cannot hold NUL: every string input refuses it (or, in free text,
    shows it as U+FFFD) before it reaches the database."""
    h = tenant.headers("admin")
    p = await create_pipeline(client, tenant)
    run = await create_run(client, tenant, p["id"])
    agent = await make_gateway(tenant)
    calls = [
        ("POST", tenant.prefix + "/", {"name": N, "type": "pg"}),
        ("POST", tenant.prefix + "/", {"name": "n", "type": N}),
        ("POST", tenant.prefix + "/", {"name": "n2", "type": "pg", N: 1}),
        ("POST", f"{ELT}/pipelines", {"name": N}),
        ("POST", f"{ELT}/pipelines", {"name": "x", "description": N}),
        ("POST", f"{ELT}/runs", {"pipelineId": p["id"], "environment": N}),
        ("POST", f"{ELT}/runs", {"pipelineId": p["id"], "correlationId": N}),
        ("POST", f"{ELT}/runs", {"pipelineId": p["id"], "triggeredBy": N}),
        ("POST", f"{ELT}/runs", {"pipelineId": p["id"], "partitionColumn": N, "partitionValue": N}),
        ("PATCH", f"{ELT}/runs/{run['id']}", {"errorSummary": N, "status": "failed"}),
        ("PATCH", f"{ELT}/runs/{run['id']}", {"telemetry": {"currentPhase": N}}),
        ("PUT", f"{ELT}/runs/webhook", {"url": "http://x/" + N}),
        ("POST", "/pipeline", {"name": N, "pipeline_type_name": "t"}),
        ("POST", "/pipeline", {"name": "p", "pipeline_type_name": N}),
        ("POST", "/pipeline_type", {"name": N, "group_name": "g"}),
        ("POST", "/address", {"name": N, "address_type_name": "t", "address_type_group_name": "g"}),
        ("POST", "/address_type", {"name": "t", "group_name": N}),
        ("POST", "/start_pipeline_execution", {"pipeline_id": 1, "watermark": N}),
        ("POST", "/timeliness", {"pipeline_id": 1, N: 1}),
    ]
    bad = []
    for method, path, body in calls:
        r = await client.request(method, path, json=body, headers=h)
        if r.status_code >= 500:
            bad.append((method, path, body, r.status_code, r.text[:200]))
    r = await client.post(f"{AGENT}/heartbeat", json={"version": N}, headers=agent.headers())
    if r.status_code >= 500:
        bad.append(("hb version", r.status_code))
    for q in ['{ connections(warehouseType: "a\\u0000b") { nodes { id } } }',
              '{ runs(first: 5) { nodes { id } } }',
              'mutation { createPipeline(input: {name: "a\\u0000b"}) { __typename } }',
              'mutation { createGateway(input: {name: "a\\u0000b"}) { __typename } }']:
        r = await client.post("/graphql", json={"query": q}, headers=h)
        if r.status_code >= 500 or "Unexpected" in r.text:
            bad.append((q, r.text[:300]))
    assert not bad, bad


@pytest.mark.parametrize("big", [int(BIG), int(HUGE), -int(BIG)])
async def test_out_of_range_numbers_are_never_a_500(client, tenant, big):
    """Every id and number of every contract, far outside its column: an answer, never a
    database error."""
    h = tenant.headers("admin")
    p = await create_pipeline(client, tenant)
    run = await create_run(client, tenant, p["id"])
    agent = await make_gateway(tenant)
    r = await client.post("/pipeline", json={"name": "wp", "pipeline_type_name": "t"}, headers=h)
    wp = r.json()["id"]
    bad = []
    calls = [
        ("POST", "/start_pipeline_execution", {"pipeline_id": big}),
        ("POST", "/start_pipeline_execution", {"pipeline_id": wp, "parent_id": big}),
        ("POST", "/end_pipeline_execution", {"id": big, "status": "success"}),
        ("POST", "/end_pipeline_execution", {"id": 1, "total_rows": big}),
        ("POST", "/timeliness", {"pipeline_id": big}),
        ("POST", "/freshness", {"pipeline_id": big}),
        ("POST", "/pipeline", {"name": "q", "pipeline_type_name": "t",
                               "freshness_number": big}),
        ("POST", "/pipeline", {"name": "q2", "pipeline_type_name": "t",
                               "timeliness_number": big}),
        ("PATCH", "/pipeline", {"id": big, "name": "z"}),
        ("PATCH", "/pipeline", {"id": wp, "pipeline_type_id": big}),
        ("PATCH", "/address", {"id": big, "name": "z"}),
        ("PATCH", "/address", {"name": "zz", "address_type_id": big}),
        ("POST", "/address_lineage", {"pipeline_id": big, "source_addresses": [],
                                      "target_addresses": []}),
        ("POST", "/anomaly_detection_rule", {"pipeline_id": big, "metric_field": "total_rows"}),
        ("PATCH", "/anomaly_detection_rule", {"id": big, "active": False}),
        ("POST", "/unflag_anomaly", {"pipeline_id": big, "pipeline_execution_id": big}),
        ("POST", "/log_cleanup", {"days": big}),
        ("POST", f"{ELT}/pipelines", {"name": "m", "maxRuntimeSeconds": big}),
        ("PATCH", f"{ELT}/runs/{run['id']}", {"telemetry": {"rowsLoaded": big}}),
        ("PATCH", f"{ELT}/runs/{run['id']}",
         {"appendTelemetrySample": {"rows": big, "bytes": big}}),
        ("POST", f"{ELT}/runs", {"pipelineId": p["id"], "status": "running", "startedAt": big}),
        ("GET", f"{ELT}/runs?limit={big}", None),
        ("GET", f"{ELT}/pipelines?limit={big}", None),
        ("GET", f"/anomaly_detection_rule?pipeline_id={big}", None),
        ("GET", f"/pipeline?pipeline_id={big}", None),
        ("GET", f"{tenant.prefix}/?limit={big}", None),
        ("POST", f"{tenant.prefix}/1/runs/", {"rows_loaded": big}),
        ("POST", f"{AGENT}/runs/{big}/claim", {}),
        ("PATCH", f"{AGENT}/runs/{big}", {"status": "running"}),
        ("GET", f"{AGENT}/runs?limit={big}", None),
    ]
    for method, path, body in calls:
        hh = agent.headers() if path.startswith(AGENT) else h
        r = await (client.request(method, path, json=body, headers=hh) if body is not None
                   else client.request(method, path, headers=hh))
        if r.status_code >= 500:
            bad.append((method, path, body, r.status_code, r.text[:200]))
    for q in [f'{{ runs(first: 5, pipelineId: "{big}") {{ nodes {{ id }} }} }}',
              f'{{ anomalyResults(pipelineId: "{big}") {{ nodes {{ id }} }} }}',
              f'{{ webhookDeliveries(runId: "{big}") {{ nodes {{ id }} }} }}',
              f'mutation {{ cancelRun(id: "{big}") {{ __typename }} }}',
              f'mutation {{ startRun(input: {{connectionId: "{big}"}}) {{ __typename }} }}',
              f'{{ lineage(addressId: "{big}") {{ root {{ id }} }} }}']:
        r = await client.post("/graphql", json={"query": q}, headers=h)
        if r.status_code >= 500 or "Unexpected" in r.text:
            bad.append((q, r.text[:300]))
    assert not bad, bad
