"""Checks that the baseline issues exactly the SQL runwatch issues for a first run report, and
that its ELT appends insert the very row runwatch's appends insert.

runwatch runs in-process (its ASGI app over httpx, on the benchmark database, token cache
warmed by a first report) while the logger `tortoise.db_client` is at DEBUG; the statements it
logs for one more report are compared with `bench.baseline.report_statements` for the same run.
Whitespace is normalised, an ORM SELECT's column list is compared as a set (Tortoise orders it
differently from one process to the next) and timestamps are compared by type only (`updated_at`
is "now"). BEGIN/COMMIT are not logged by Tortoise; both sides run one transaction.

The ELT baseline is not meant to issue runwatch's statements (it inserts one row; runwatch also
locks and numbers the run and trims the series, which is what the ratio measures), so for one
appendLog and one appendTelemetrySample PATCH the check is that one of runwatch's statements is
the baseline's INSERT (same table, same columns), and it reports how many statements runwatch
issues for each.

A mismatch is a warning, not a failure: runwatch's SQL changes, and the baseline must then be
brought up to date by hand (the message shows both texts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from bench import baseline
from bench.profile import capture_sql
from bench.seed import Fixture

_SELECT = re.compile(r"^SELECT (.*?) FROM (.*)$", re.S)


def normalise_sql(sql: str) -> str:
    text = " ".join(sql.split())
    match = _SELECT.match(text)
    if match:
        columns = sorted(c.strip() for c in match.group(1).split(","))
        text = f"SELECT {','.join(columns)} FROM {match.group(2)}"
    return text


def normalise_params(params: Any) -> list[Any]:
    return [f"<{type(p).__name__}>" if isinstance(p, datetime) else p for p in (params or [])]


Statements = list[tuple[str, list[Any]]]


@dataclass
class SqlCheck:
    ok: bool
    runwatch: Statements
    baseline: Statements
    problems: list[str]
    graphql_statements: int
    # ELT appends: kind ("appendLog", "appendTelemetrySample") -> runwatch's statements, and
    # the baseline's one statement
    elt_runwatch: dict[str, Statements] = field(default_factory=dict)
    elt_baseline: dict[str, str] = field(default_factory=dict)


APPEND_BODIES = {
    "appendLog": {"appendLog": {"level": "info", "message": "bench"}},
    "appendTelemetrySample": {"appendTelemetrySample": {"rows": 10, "bytes": 100,
                                                        "progress": 5}},
}


def report_body(completed_at: str) -> dict[str, Any]:
    return {"completed_at": completed_at, "events_delivered": 1234, "batches_dlq": 0,
            "error": None}


async def check(fixture: Fixture, completed_at: str) -> SqlCheck:
    """Tortoise must be initialised on the benchmark database."""
    from runwatch.app import create_app
    from runwatch.settings import Settings, normalise_database_url

    app = create_app(Settings(database_url=normalise_database_url(fixture.database_url)),
                     run_background=False)
    org, cid = fixture.organisation_id, fixture.connections["rest"]
    headers = {"Authorization": f"Bearer {fixture.report_token}"}
    prefix = f"/api/v1/organisations/{org}/integrations/warehouse-connections/{cid}/metrics"
    body = report_body(completed_at)
    problems: list[str] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        # Warm the token cache (the first request authenticates against the database).
        warm = await client.patch(f"{prefix}/{fixture.preflight_id('rest')}/", json=body,
                                  headers=headers)
        if warm.status_code != 204:
            problems.append(f"warm-up report answered {warm.status_code}: {warm.text[:200]}")
        run_id = fixture.preflight_id("rest")
        graphql_id = fixture.preflight_id("graphql")
        with capture_sql() as capture:
            response = await client.patch(f"{prefix}/{run_id}/", json=body, headers=headers)
            rest_count = len(capture.statements)
            graphql = await client.post("/graphql", headers=headers, json={
                "query": "mutation($i: ReportRunInput!) { reportRun(input: $i) { __typename } }",
                "variables": {"i": {"runId": str(graphql_id), "completedAt": completed_at,
                                    "eventsDelivered": 1234}},
            })
        elt_runwatch: dict[str, Statements] = {}
        if fixture.elt is not None:
            elt_headers = {"Authorization": f"Bearer {fixture.elt.write_token}"}
            for kind, role in (("appendLog", "log-empty"),
                               ("appendTelemetrySample", "sample-empty")):
                # The first PATCH warms the write token's cache entry.
                for _ in range(2):
                    with capture_sql() as elt_capture:
                        answer = await client.patch(
                            f"/api/elt/runs/{fixture.preflight_id(role)}",
                            json=APPEND_BODIES[kind], headers=elt_headers)
                    if answer.status_code != 200:
                        problems.append(f"{kind} PATCH answered {answer.status_code}: "
                                        f"{answer.text[:200]}")
                elt_runwatch[kind] = elt_capture.statements
    if response.status_code != 204:
        problems.append(f"captured report answered {response.status_code}: {response.text[:200]}")
    if graphql.status_code != 200:
        problems.append(f"captured GraphQL report answered {graphql.status_code}")
    runwatch_statements = capture.statements[:rest_count]
    graphql_statements = len(capture.statements) - rest_count

    parsed = baseline.parse_report(body)
    assert parsed is not None
    expected = baseline.report_statements(
        org, cid, run_id, fixture.pipelines["rest"], parsed, datetime.now(UTC)
    )
    if len(expected) != len(runwatch_statements):
        problems.append(f"runwatch issued {len(runwatch_statements)} statements, the baseline "
                        f"{len(expected)}")
    for n, ((got_sql, got_params), (want_sql, want_params)) in enumerate(
        zip(runwatch_statements, expected, strict=False), 1
    ):
        if normalise_sql(got_sql) != normalise_sql(want_sql):
            problems.append(f"statement {n} differs:\n  runwatch: {normalise_sql(got_sql)}\n"
                            f"  baseline: {normalise_sql(want_sql)}")
        elif normalise_params(got_params) != normalise_params(want_params):
            problems.append(f"statement {n} parameters differ: runwatch "
                            f"{normalise_params(got_params)}, baseline "
                            f"{normalise_params(want_params)}")
    elt_baseline = {"appendLog": baseline.INSERT_LOG_LINE,
                    "appendTelemetrySample": baseline.INSERT_SAMPLE}
    for kind, statements in elt_runwatch.items():
        want = normalise_sql(elt_baseline[kind])
        if not any(normalise_sql(sql) == want for sql, _ in statements):
            problems.append(f"{kind}: none of runwatch's {len(statements)} statements is the "
                            f"baseline's INSERT:\n  baseline: {want}\n"
                            + "\n".join(f"  runwatch: {normalise_sql(sql)}"
                                        for sql, _ in statements))
    return SqlCheck(ok=not problems, runwatch=runwatch_statements, baseline=expected,
                    problems=problems, graphql_statements=graphql_statements,
                    elt_runwatch=elt_runwatch, elt_baseline=elt_baseline)
