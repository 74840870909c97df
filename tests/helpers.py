"""Small helpers shared by the tests (REST calls that set up state)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from tests.conftest import Tenant


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def create_connection(
    client: httpx.AsyncClient, tenant: Tenant, name: str = "warehouse", **settings: Any
) -> int:
    r = await client.post(
        tenant.prefix + "/",
        json={"name": name, "type": "snowflake", **settings},
        headers=tenant.headers("write"),
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def start_run(
    client: httpx.AsyncClient, tenant: Tenant, connection_id: int,
    started_at: datetime | None = None,
) -> int:
    body = {"started_at": iso(started_at)} if started_at else {}
    r = await client.post(
        f"{tenant.prefix}/{connection_id}/metrics/", json=body, headers=tenant.headers("report")
    )
    assert r.status_code == 201, r.text
    return r.json()["run_id"]


async def report(
    client: httpx.AsyncClient, tenant: Tenant, connection_id: int, run_id: int, **body: Any
) -> httpx.Response:
    return await client.patch(
        f"{tenant.prefix}/{connection_id}/metrics/{run_id}/",
        json=body,
        headers=tenant.headers("report"),
    )


async def graphql(
    client: httpx.AsyncClient, tenant: Tenant | None, query: str, scopes: str = "admin",
    **variables: Any,
) -> dict[str, Any]:
    headers = tenant.headers(scopes) if tenant else {}
    r = await client.post("/graphql", json={"query": query, "variables": variables},
                          headers=headers)
    assert r.status_code == 200, r.text
    return r.json()
