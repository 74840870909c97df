"""Every route's scope in `/openapi.json` is what the server enforces, for every kind of token.

Each documented operation is sent, with its own example body and the ids of a seeded world,
by no token, a `read`, `write`, `report` and `admin` token, and a gateway's token. A token the
document admits must get past authorization (its answer is neither 401 nor 403: the resolver
agrees with the route), any other must get 403 (401 without a token). The routes enforce the
document's scope by construction (`runwatch/rest_shim/routing.py`); this proves the resolvers
behind them ask for nothing else."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest

from runwatch.rest_shim.openapi import build_document
from tests.conftest import Tenant
from tests.elt_helpers import make_gateway

ADMITS = {
    "read": {"read", "admin"},
    "write": {"write", "admin"},
    "report": {"report", "admin"},
    "writer": {"report", "write", "admin"},
    "viewer": {"read", "write", "admin"},
    "gateway": {"gateway"},
}
TOKENS = ("none", "read", "write", "report", "admin", "gateway")
# The seeded world's ids (see `openapi.EXAMPLES`), by contract and path parameter.
PATH_IDS = {
    "warehouse": {"id": "1", "run_id": "1"},
    "elt": {"id": "2"},
    "watcher": {"pipeline_id": "3", "pipeline_type_id": "1", "pipeline_execution_id": "3",
                "address_id": "1", "address_type_id": "1", "anomaly_detection_rule_id": "1"},
}


async def seed(client: httpx.AsyncClient, tenant: Tenant, prefix: str) -> str:
    """The world the examples name; returns the gateway's token."""
    admin = tenant.headers("admin")

    async def ok(r: httpx.Response, expect: str | int | None = None, key: str = "id") -> None:
        assert r.status_code in (200, 201), r.text
        if expect is not None:
            body = r.json()
            for part in key.split("."):
                body = body[part]
            assert str(body) == str(expect), (key, r.text)

    await ok(await client.post(tenant.prefix + "/", json={"name": "w", "type": "snowflake"},
                               headers=admin), 1)
    await ok(await client.post(f"{tenant.prefix}/1/metrics/", json={}, headers=admin),
             1, "run_id")
    await ok(await client.post("/api/elt/pipelines", json={"name": "orders"}, headers=admin),
             2, "pipeline.id")
    await ok(await client.post("/api/elt/runs", json={"pipelineId": "2"}, headers=admin),
             2, "run.id")
    gateway = await make_gateway(tenant)
    assert gateway.id == 1
    w = prefix
    await ok(await client.post(w + "/pipeline", headers=admin, json={
        "name": "orders_load", "pipeline_type_name": "extraction"}), 3)
    await ok(await client.post(w + "/start_pipeline_execution", headers=admin,
                               json={"pipeline_id": 3}), 3)
    await ok(await client.post(w + "/address", headers=admin, json={
        "name": "warehouse.sales.orders", "address_type_name": "postgres",
        "address_type_group_name": "database"}), 1)
    await ok(await client.post(w + "/anomaly_detection_rule", headers=admin, json={
        "pipeline_id": 3, "metric_field": "total_rows"}), 1)
    return gateway.token


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in document["paths"].items()
            for method, op in item.items()]


async def test_every_route_enforces_exactly_its_documented_scope(client, tenant, settings):
    document = build_document(settings)
    gateway_token = await seed(client, tenant, settings.watcher_prefix)
    headers = {name: tenant.headers(name) for name in ("read", "write", "report", "admin")}
    headers["gateway"] = {"Authorization": f"Bearer {gateway_token}"}
    headers["none"] = {}
    wrong: list[str] = []
    checked = 0
    for method, path, op in operations(document):
        contract = op["tags"][0]
        ids = {**PATH_IDS.get(contract, {}), "organisation_pk": str(tenant.org_id)}
        url = re.sub(r"{(\w+)}", lambda m, ids=ids: ids[m.group(1)], path)
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        scope = op["x-runwatch-scope"]
        for token in TOKENS:
            kwargs: dict[str, Any] = {"headers": headers[token]}
            if "example" in body:
                kwargs["json"] = body["example"]
            r = await client.request(method, url, **kwargs)
            checked += 1
            if scope is None:
                expected = "admitted"
            elif token == "none":
                expected = "401"
            else:
                expected = "admitted" if token in ADMITS[scope] else "403"
            got = ("401" if r.status_code == 401 else "403" if r.status_code == 403
                   else "admitted")
            if got != expected or r.status_code >= 500:
                wrong.append(f"{method} {path} [{scope}] with {token}: {r.status_code} "
                             f"(expected {expected}) {r.text[:200]}")
    assert checked == len(operations(document)) * len(TOKENS)
    assert wrong == [], "\n".join(wrong)


def test_every_request_body_has_an_example_that_fits_its_schema(settings):
    document = build_document(settings)
    for method, path, op in operations(document):
        if "requestBody" not in op:
            continue
        content = op["requestBody"]["content"]["application/json"]
        assert "example" in content, f"{method} {path} has no example request"
        schema = {**content["schema"], "components": document["components"]}
        jsonschema.validate(content["example"], schema,
                            cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("scope", sorted(ADMITS))
def test_the_document_words_each_scope(settings, scope):
    """`x-runwatch-scope` and the description say the same thing."""
    document = build_document(settings)
    described = {op["description"].rsplit("Needs ", 1)[1]
                 for _, _, op in operations(document) if op["x-runwatch-scope"] == scope}
    assert len(described) == 1, described
