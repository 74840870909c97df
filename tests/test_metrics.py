"""Prometheus metrics (`GET /metrics`): off by default, a bearer token when set, series that
move with the runs reported over REST and GraphQL, transitions counted in the lifecycle,
several processes adding up, bounded label sets."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tortoise import connections

from runwatch import metrics
from tests.conftest import DIALECT, app_client
from tests.helpers import create_connection, iso, report, start_run

ROOT = Path(__file__).resolve().parent.parent
REPORT_RUN = """mutation($input: ReportRunInput!) { reportRun(input: $input) {
  __typename ... on ReportRunSuccess { run { status } } } }"""


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict:
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def test_off_by_default_is_not_mounted(client):
    r = await client.get("/metrics")
    assert r.status_code == 404


async def test_a_wrong_or_missing_token_is_401(settings, tenant):
    async with app_client(settings, metrics=True, metrics_token="s3cret-metrics") as c:
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": "Basic s3cret-metrics"},
                        # a runwatch token is not the metrics token
                        tenant.headers("admin")):
            r = await c.get("/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert "detail" in r.json()
            assert r.headers["www-authenticate"].startswith("Bearer")
        await scrape(c, Authorization="Bearer s3cret-metrics")


async def test_series_move_when_runs_are_reported_over_rest(settings, tenant):
    async with app_client(settings, metrics=True) as c:
        before = await scrape(c)
        cid = await create_connection(c, tenant)
        started = datetime.now(UTC) - timedelta(minutes=10)
        run_id = await start_run(c, tenant, cid, started)
        r = await report(c, tenant, cid, run_id, completed_at=iso(started + timedelta(minutes=5)),
                         events_delivered=10, batches_dlq=0, error=None)
        assert r.status_code == 204, r.text
        after = await scrape(c)
    moved = {key: after[key] - value(before, *key[:1], **dict(key[1])) for key in after}
    transitions = "runwatch_run_transitions_total"
    assert moved[(transitions, frozenset({"from_status": "none",
                                          "to_status": "running"}.items()))] == 1
    assert moved[(transitions, frozenset({"from_status": "running",
                                          "to_status": "succeeded"}.items()))] == 1
    assert value(after, "runwatch_runs", status="succeeded") == 1
    # requests by route template, not by raw path
    route = ("/api/v1/organisations/{organisation_pk}/integrations/warehouse-connections/{id}"
             "/metrics/{run_id}")
    templates = {dict(k[1]).get("route") for k in after if k[0] == "runwatch_http_requests_total"}
    assert route in templates, templates
    assert not any(f"/{run_id}" in t for t in templates if t)
    assert moved[("runwatch_http_requests_total", frozenset(
        {"method": "PATCH", "route": route, "status": "204"}.items()))] == 1
    assert any(k[0] == "runwatch_http_request_duration_seconds_bucket" for k in after)
    for kind in ("webhook", "alert"):
        assert ("runwatch_delivery_backlog", frozenset({"kind": kind}.items())) in after
    assert ("runwatch_reaper_lag_seconds", frozenset()) in after


async def test_series_move_when_runs_are_reported_over_graphql(settings, tenant):
    async with app_client(settings, metrics=True) as c:
        cid = await create_connection(c, tenant)
        started = datetime.now(UTC) - timedelta(minutes=10)
        run_id = await start_run(c, tenant, cid, started)
        before = await scrape(c)
        r = await c.post("/graphql", headers=tenant.headers("report"), json={
            "query": REPORT_RUN, "operationName": None, "variables": {"input": {
                "runId": str(run_id), "completedAt": iso(started + timedelta(minutes=5)),
                "eventsDelivered": 5, "error": "COPY failed"}}})
        assert r.json()["data"]["reportRun"]["run"]["status"] == "FAILED", r.text
        r = await c.post("/graphql", headers=tenant.headers("read"),
                         json={"query": "query Overview { __typename }",
                               "operationName": "Overview"})
        assert r.status_code == 200
        # without operationName: the document's own name
        r = await c.post("/graphql", headers=tenant.headers("read"),
                         json={"query": "\n  query Overview { __typename }"})
        assert r.status_code == 200
        # the same text again: the prepared lane (runwatch.app `prepared_post`) counts it too
        r = await c.post("/graphql", headers=tenant.headers("read"),
                         json={"query": "query Overview { __typename }",
                               "operationName": "Overview"})
        assert r.status_code == 200
        after = await scrape(c)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("runwatch_run_transitions_total", from_status="running",
                 to_status="failed") == 1
    assert delta("runwatch_runs", status="failed") == 1
    assert delta("runwatch_runs", status="running") == -1
    assert delta("runwatch_graphql_operations_total", operation="anonymous") == 1
    assert delta("runwatch_graphql_operations_total", operation="Overview") == 3
    assert delta("runwatch_graphql_operation_duration_seconds_count", operation="Overview") == 3


async def test_two_processes_add_up(settings):
    async with app_client(settings, metrics=True) as c:
        before = await scrape(c)
        metrics.run_moved("pending", "cancelled")
        script = ("from runwatch import metrics; from runwatch.settings import Settings; "
                  "from dataclasses import replace; "
                  "assert metrics.configure(replace(Settings(), metrics=True)); "
                  "[metrics.run_moved('pending', 'cancelled') for _ in range(3)]; "
                  "metrics.webhook_attempt(False, False)")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        assert env["PROMETHEUS_MULTIPROC_DIR"] == os.environ["PROMETHEUS_MULTIPROC_DIR"]
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
        after = await scrape(c)
    labels = {"from_status": "pending", "to_status": "cancelled"}
    assert (value(after, "runwatch_run_transitions_total", **labels)
            - value(before, "runwatch_run_transitions_total", **labels)) == 4
    assert (value(after, "runwatch_webhook_attempts_total", kind="webhook", outcome="failed")
            - value(before, "runwatch_webhook_attempts_total", kind="webhook",
                    outcome="failed")) == 1
    # the dead process's counts stay part of the host's; its live gauges go
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    stale = directory / "gauge_livesum_999999999.db"
    stale.write_bytes(b"")
    assert metrics.sweep_dead() == [999999999]
    assert not stale.exists()
    assert any(directory.glob("counter_*.db"))


async def test_label_sets_stay_bounded(settings, tenant):
    async with app_client(settings, metrics=True) as c:
        for i in range(60):
            await c.get(f"/no/such/path/{i}")
            await c.get(f"{tenant.prefix}/{i}/", headers=tenant.headers("read"))
        for i in range(metrics.MAX_OPERATION_NAMES + 50):
            await c.post("/graphql", headers=tenant.headers("read"),
                         json={"query": f"query Op{i} {{ __typename }}",
                               "operationName": f"Op{i}"})
        await c.post("/graphql", headers=tenant.headers("read"),
                     json={"query": "query X { __typename }", "operationName": "bad name!"})
        found = await scrape(c)
    routes = {dict(k[1])["route"] for k in found if k[0] == "runwatch_http_requests_total"}
    assert "unmatched" in routes
    assert len(routes) < 10, routes
    assert not any(str(i) in r for r in routes for i in range(10, 60))
    names = {dict(k[1])["operation"] for k in found
             if k[0] == "runwatch_graphql_operations_total"}
    assert len(names) <= metrics.MAX_OPERATION_NAMES + 2
    assert "other" in names and "bad name!" not in names
    for (_, labels), _v in found.items():
        for label, text in labels:
            assert label not in {"organisation", "run_id", "path"}, (label, text)


async def test_organisation_labels_only_when_asked(settings, tenant):
    async with app_client(settings, metrics=True, metrics_org_labels=True) as c:
        cid = await create_connection(c, tenant)
        await start_run(c, tenant, cid)
        found = await scrape(c)
    assert value(found, "runwatch_runs", status="running", organisation=str(tenant.org_id)) == 1


def test_settings_read_the_environment():
    from runwatch.settings import Settings

    s = Settings.from_env({"RUNWATCH_METRICS": "1", "RUNWATCH_METRICS_TOKEN": " t ",
                           "RUNWATCH_METRICS_ORG_LABELS": "1", "DATABASE_URL": "sqlite://x.db"})
    assert (s.metrics, s.metrics_token, s.metrics_org_labels) == (True, "t", True)
    assert "metrics_token" not in repr(s)
    assert not Settings.from_env({"DATABASE_URL": "sqlite://x.db"}).metrics


@pytest.mark.skipif(DIALECT != "sqlite", reason="SQLite file locking: runs on SQLite")
async def test_database_fault_503s_are_counted(settings, tenant, database_url):
    async with app_client(settings, metrics=True) as c:
        cid = await create_connection(c, tenant)
        before = await scrape(c)
        conn = connections.get("default")
        holder = sqlite3.connect(database_url.split("://", 1)[1].split("?", 1)[0],
                                 isolation_level=None, timeout=5)
        try:
            await conn.execute_script("PRAGMA busy_timeout = 300")
            holder.execute("BEGIN EXCLUSIVE")
            try:
                r = await c.post(f"{tenant.prefix}/{cid}/metrics/", json={},
                                 headers=tenant.headers("report"))
                g = await c.post("/graphql", headers=tenant.headers("admin"), json={
                    "query": 'mutation { createConnection(input: {name: "g", '
                             'warehouseType: "x"}) { __typename } }'})
            finally:
                holder.execute("ROLLBACK")
        finally:
            holder.close()
            await conn.execute_script("PRAGMA busy_timeout = 10000")
        assert (r.status_code, g.status_code) == (503, 503), (r.text, g.text)
        after = await scrape(c)
    counted = sum(value(after, "runwatch_database_fault_responses_total", transport=t)
                  - value(before, "runwatch_database_fault_responses_total", transport=t)
                  for t in ("http", "graphql"))
    assert counted == 2
    answered = {dict(k[1])["route"] for k in after if k[0] == "runwatch_http_requests_total"
                and dict(k[1])["status"] == "503"}
    assert answered >= {"/graphql"}, answered
    assert any(r.endswith("/warehouse-connections/{id}/metrics/") for r in answered), answered


def test_a_process_without_a_directory_makes_its_own_and_removes_it():
    """What `runwatch serve` and `runwatch worker` do when PROMETHEUS_MULTIPROC_DIR is unset."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    script = ("import os; from dataclasses import replace; from runwatch import metrics; "
              "from runwatch.settings import Settings; "
              "assert metrics.configure(replace(Settings(), metrics=True)); "
              "metrics.run_moved('pending', 'running'); "
              "d = os.environ['PROMETHEUS_MULTIPROC_DIR']; "
              "print(d, sorted(os.listdir(d)))")
    done = subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60,
                          capture_output=True, text=True)
    directory, files = done.stdout.split(" ", 1)
    assert "counter_" in files
    assert not Path(directory).exists()


async def test_transitions_are_counted_once_committed_and_from_the_status_they_left(
        settings, tenant):
    """A transition is counted when its transaction commits (a rolled-back one counts
    nothing), and the reaper's timeouts name the status the run was in, not "open"."""
    from runwatch.models import RunStatus
    from runwatch.resolvers import lifecycle
    from runwatch.services.reaper import reap_stuck_runs

    async with app_client(settings, metrics=True) as c:
        cid = await create_connection(c, tenant)
        started = datetime.now(UTC) - timedelta(minutes=10)
        run_id = await start_run(c, tenant, cid, started)
        before = await scrape(c)
        with pytest.raises(RuntimeError):
            async with lifecycle.transaction() as (conn, effects):
                moved = await lifecycle.time_out(
                    conn, effects, run_id=run_id, organisation_id=tenant.org_id,
                    finished_at=started, error="rolled back", now=datetime.now(UTC))
                assert moved is not None and moved.status == RunStatus.TIMED_OUT
                raise RuntimeError("the transaction fails after the move")
        rolled_back = await scrape(c)
        assert await reap_stuck_runs(now=datetime.now(UTC) + timedelta(days=30)) == 1
        after = await scrape(c)

    def delta(found: dict, **labels: str) -> float:
        return (value(found, "runwatch_run_transitions_total", **labels)
                - value(before, "runwatch_run_transitions_total", **labels))

    for status in ("open", "running"):
        assert delta(rolled_back, from_status=status, to_status="timed_out") == 0
    assert delta(after, from_status="running", to_status="timed_out") == 1
    assert delta(after, from_status="open", to_status="timed_out") == 0
