"""`runwatch demo` fills every list a new user looks at, through the public GraphQL API."""

from __future__ import annotations

import os
import subprocess
import sys

from runwatch.demo import seed_demo
from runwatch.resolvers.tokens import authenticate

SCREENS = """{
  connections { nodes { name warehouseType telemetry { status statusReason
    eventsLast7d { total } failedDeliveriesLast24h recentErrors { runId message } } } }
  pipelines(first: 50) { nodes { name kind } }
  runs(first: 200) { nodes { id status pipeline { name } } }
  anomalyRules { metricField }
  anomalyResults { nodes { metricField value runId } }
  webhookEndpoints { nodes { url enabled } }
  webhookDeliveries { nodes { id status } }
  alertChannels { name }
  addresses { name }
}"""

ELT_RUN = """query($id: ID!) { run(id: $id) { status error
  logEntries { nodes { level message } } telemetrySamples { nodes { rows phase } } } }"""


async def gql(client, token: str, query: str, **variables):
    r = await client.post("/graphql", json={"query": query, "variables": variables},
                          headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


async def test_demo_populates_every_list(client):
    org_id, token = await seed_demo()
    assert (await authenticate(token)).organisation_id == org_id
    data = await gql(client, token, SCREENS)

    connections = {c["name"]: c for c in data["connections"]["nodes"]}
    assert set(connections) == {"warehouse-prod", "analytics-bq", "legacy-redshift"}
    status = {name: c["telemetry"]["status"] for name, c in connections.items()}
    assert status == {"warehouse-prod": "ACTIVE", "analytics-bq": "DEGRADED",
                      "legacy-redshift": "ERROR"}
    failing = connections["legacy-redshift"]["telemetry"]
    assert "permission denied" in failing["statusReason"]
    assert failing["recentErrors"] and all(e["runId"] for e in failing["recentErrors"])
    assert all(c["telemetry"]["eventsLast7d"]["total"] > 0 for c in connections.values())

    kinds = {p["name"]: p["kind"] for p in data["pipelines"]["nodes"]}
    assert {"orders-to-warehouse", "customers-sync"} <= set(kinds) and len(kinds) == 5
    runs = data["runs"]["nodes"]
    statuses = {r["status"] for r in runs}
    assert {"SUCCEEDED", "FAILED", "RUNNING"} <= statuses
    assert len(runs) > 100  # a week of runs
    assert [r["metricField"] for r in data["anomalyRules"]] == ["events_delivered"]
    (anomaly,) = data["anomalyResults"]["nodes"]
    assert anomaly["value"] == 1_500_000
    assert data["webhookEndpoints"]["nodes"] == [
        {"url": "http://127.0.0.1:9/runwatch-demo", "enabled": True}]
    assert len(data["webhookDeliveries"]["nodes"]) >= 10
    assert [c["name"] for c in data["alertChannels"]] == ["on-call"]
    assert {a["name"] for a in data["addresses"]} == {
        "shop.public.orders", "shop.public.order_items", "analytics.core.orders",
        "crm.public.accounts", "analytics.core.customers"}

    elt = [r for r in runs if r["pipeline"]["name"] == "orders-to-warehouse"]
    assert len(elt) == 7
    failed = next(r for r in elt if r["status"] == "FAILED")
    run = (await gql(client, token, ELT_RUN, id=failed["id"]))["run"]
    assert run["error"] == "deadlock detected on analytics.orders"
    assert [line["level"] for line in run["logEntries"]["nodes"]] == [
        "INFO", "INFO", "INFO", "ERROR"]
    assert len(run["telemetrySamples"]["nodes"]) == 3


def test_demo_command_prints_a_token_for_the_new_organisation(database_url, app, tmp_path):
    env = {**os.environ, "DATABASE_URL": database_url}
    out = subprocess.run([sys.executable, "-m", "runwatch.cli", "demo"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    first, token = out.stdout.strip().splitlines()
    assert first.startswith("Seeded demo organisation ") and token.startswith("rw_")


async def test_a_reaper_pass_while_the_demo_writes_its_history_takes_nothing(
        client, monkeypatch):
    """`runwatch demo` may run beside a server whose reaper works the same database: a pass
    between a history run's start (days ago) and its report must not time it out."""
    from runwatch import demo
    from runwatch.models import Run, RunStatus
    from runwatch.services.reaper import reap_stuck_runs

    reaped: list[int] = []

    def with_a_pass_first(call):
        async def wrapped(*args, **kwargs):
            reaped.append(await reap_stuck_runs())
            return await call(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(demo, "report_run", with_a_pass_first(demo.report_run))
    monkeypatch.setattr(demo, "update_run", with_a_pass_first(demo.update_run))
    await seed_demo()
    assert reaped and sum(reaped) == 0
    assert await Run.filter(status=RunStatus.TIMED_OUT).count() == 0
