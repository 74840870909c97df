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
appendLog and one appendTelemetrySample PATCH the check is that one of runwatch's statements
inserts the baseline's row (`INSERT INTO` the same table, the same columns: from VALUES, or from
a CTE that also updates the run and trims the series), and it reports how many statements
runwatch issues for each.

For the Watcher round (scenario 11) both sides make one round on the same pipeline
(`bench-watcher-check`, found, a new `next_watermark`, a child of its running root): runwatch
in-process, the baseline's handlers (`bench.baseline.watcher_*`) on one connection of their own,
recording what they issue. The statements of each request are compared the same way (an
INSERT's columns as a set too, each with its parameter), after the execution id, its anomaly
payload and the watermark each side sent are replaced by placeholders.

A mismatch is a warning, not a failure: runwatch's SQL changes, and the baseline must then be
brought up to date by hand (the message shows both texts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from bench import baseline
from bench.profile import capture_sql
from bench.seed import DSN, WATCHER_TYPE, Fixture

_SELECT = re.compile(r"^SELECT (.*?) FROM (.*)$", re.S)
_INSERT = re.compile(r"^INSERT INTO (\S+) \((.*?)\) VALUES \((.*?)\)(.*)$", re.S)


def normalise_sql(sql: str) -> str:
    text = " ".join(sql.split())
    match = _SELECT.match(text)
    if match:
        columns = sorted(c.strip() for c in match.group(1).split(","))
        text = f"SELECT {','.join(columns)} FROM {match.group(2)}"
    return text


def normalise_params(params: Any, placeholders: dict[Any, str] | None = None) -> list[Any]:
    """Datetimes by type only; values in `placeholders` (of the same type) replaced."""
    out = []
    for p in params or []:
        if isinstance(p, datetime):
            p = f"<{type(p).__name__}>"
        elif placeholders and not isinstance(p, bool) and (type(p), p) in placeholders:
            p = placeholders[(type(p), p)]
        out.append(p)
    return out


def normalise_statement(sql: str, params: Any,
                        placeholders: dict[Any, str] | None = None) -> tuple[str, list[Any]]:
    """normalise_sql, and an INSERT of `$n` values with its columns sorted (each keeping its
    parameter: Tortoise's column order is the model's, the comparison is of the set)."""
    text = normalise_sql(sql)
    values = normalise_params(params, placeholders)
    match = _INSERT.match(text)
    if match:
        columns = [c.strip() for c in match.group(2).split(",")]
        marks = [m.strip() for m in match.group(3).split(",")]
        if len(columns) == len(marks) and all(re.fullmatch(r"\$\d+", m) for m in marks):
            pairs = sorted(zip(columns, (values[int(m[1:]) - 1] for m in marks), strict=True))
            text = (f"INSERT INTO {match.group(1)} ({','.join(c for c, _ in pairs)}) VALUES "
                    f"({','.join(f'${n}' for n in range(1, len(pairs) + 1))}){match.group(4)}")
            values = [v for _, v in pairs]
    return text, values


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
    # The Watcher round: request -> statements, each side
    watcher_runwatch: dict[str, Statements] = field(default_factory=dict)
    watcher_baseline: dict[str, Statements] = field(default_factory=dict)


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
        watcher_runwatch: dict[str, Statements] = {}
        watcher_baseline: dict[str, Statements] = {}
        if fixture.watcher is not None:
            watcher_runwatch, watcher_baseline = await watcher_rounds(
                client, fixture, problems)
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
        # The INSERT's table and columns: runwatch may insert the row from a CTE (the run's
        # UPDATE, the INSERT and the trim in one statement) rather than from VALUES.
        want = normalise_sql(elt_baseline[kind]).split(" VALUES ")[0]
        if not any(want in normalise_sql(sql) for sql, _ in statements):
            problems.append(f"{kind}: none of runwatch's {len(statements)} statements inserts "
                            f"the baseline's row (same table, same columns):\n"
                            f"  baseline: {normalise_sql(elt_baseline[kind])}\n"
                            + "\n".join(f"  runwatch: {normalise_sql(sql)}"
                                        for sql, _ in statements))
    return SqlCheck(ok=not problems, runwatch=runwatch_statements, baseline=expected,
                    problems=problems, graphql_statements=graphql_statements,
                    elt_runwatch=elt_runwatch, elt_baseline=elt_baseline,
                    watcher_runwatch=watcher_runwatch, watcher_baseline=watcher_baseline)


WATCHER_STEPS = ("POST /pipeline", "start", "end", "GET")
WATCHER_END = {"completed_successfully": True, "total_rows": 1000, "inserts": 600,
               "updates": 300, "soft_deletes": 100}


def _watcher_placeholders(execution_id: int, mark: str) -> dict[Any, str]:
    payload = f'{{"run_id":{execution_id}}}'  # runwatch's compact JSON parameter
    return {(int, execution_id): "<execution>", (str, mark): "<next_watermark>",
            (str, payload): '{"run_id":<execution>}'}


async def watcher_rounds(client: httpx.AsyncClient, fixture: Fixture,
                         problems: list[str]) -> tuple[dict[str, Statements],
                                                       dict[str, Statements]]:
    """One round by runwatch (captured), one by the baseline's handlers (recorded), on the
    check pipeline; differences go to `problems`."""
    w = fixture.watcher
    assert w is not None
    auth = {"Authorization": f"Bearer {w.token}"}
    pipeline_body = {"name": w.check_name, "pipeline_type_name": WATCHER_TYPE}
    start_body = {"pipeline_id": w.check_pipeline, "parent_id": w.check_parent}

    def end_body(execution_id: int) -> dict[str, Any]:
        ended = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        return {"id": execution_id, "end_date": ended, **WATCHER_END}

    async def runwatch_round(mark: str) -> tuple[dict[str, Statements], int]:
        captured: dict[str, Statements] = {}
        answers = {}
        steps = (
            ("POST /pipeline", lambda _: client.post(
                "/pipeline", json={**pipeline_body, "next_watermark": mark}, headers=auth)),
            ("start", lambda _: client.post("/start_pipeline_execution", json=start_body,
                                            headers=auth)),
            ("end", lambda run_id: client.post("/end_pipeline_execution",
                                               json=end_body(run_id), headers=auth)),
            ("GET", lambda run_id: client.get(f"/pipeline_execution/{run_id}", headers=auth)),
        )
        run_id = 0
        for step, send in steps:
            with capture_sql() as capture:
                answer = await send(run_id)
            answers[step] = answer.status_code
            if step == "start" and answer.status_code == 201:
                run_id = int(answer.json()["id"])
            captured[step] = capture.statements
        if answers != {"POST /pipeline": 200, "start": 201, "end": 204, "GET": 200}:
            problems.append(f"Watcher round on runwatch answered {answers}")
        return captured, run_id

    await runwatch_round("sqlcheck-warm")  # the token's cache entry warm
    rw_mark = "sqlcheck-runwatch"
    runwatch, rw_id = await runwatch_round(rw_mark)

    conn = await asyncpg.connect(DSN, timeout=10)
    recorded: dict[str, Statements] = {}
    bl_id = 0
    bl_mark = "sqlcheck-baseline"
    try:
        org = w.organisation_id
        for step in WATCHER_STEPS:
            log: Statements = []
            db = baseline.Db(conn, log)
            now = datetime.now(UTC)
            try:
                if step == "POST /pipeline":
                    await baseline.watcher_pipeline(
                        db, org, {**pipeline_body, "next_watermark": bl_mark}, now)
                elif step == "start":
                    _, answer = await baseline.watcher_start(db, org, w.token_id, start_body,
                                                             now)
                    bl_id = int(answer["id"])
                elif step == "end":
                    await baseline.watcher_end(db, org, end_body(bl_id), now)
                else:
                    await baseline.watcher_execution(db, org, bl_id)
            except baseline.Fail as exc:
                problems.append(f"Watcher {step} on the baseline answered {exc.status}: "
                                f"{exc.detail}")
            except (asyncpg.PostgresError, LookupError, TypeError, ValueError) as exc:
                # e.g. a column the baseline reads that runwatch's schema no longer has
                problems.append(f"Watcher {step} on the baseline failed: "
                                f"{type(exc).__name__}: {exc}")
                recorded[step] = log
                break
            recorded[step] = log
    finally:
        await conn.close()

    rw_marks = _watcher_placeholders(rw_id, rw_mark)
    bl_marks = _watcher_placeholders(bl_id, bl_mark)
    for step in WATCHER_STEPS:
        got, want = runwatch.get(step, []), recorded.get(step, [])
        if len(got) != len(want):
            problems.append(f"Watcher {step}: runwatch issued {len(got)} statements, the "
                            f"baseline {len(want)}:\n"
                            + "\n".join(f"  runwatch: {normalise_sql(sql)[:300]}"
                                        for sql, _ in got)
                            + "\n" + "\n".join(f"  baseline: {normalise_sql(sql)[:300]}"
                                               for sql, _ in want))
            continue
        for n, ((got_sql, got_params), (want_sql, want_params)) in enumerate(
            zip(got, want, strict=True), 1
        ):
            got_text, got_values = normalise_statement(got_sql, got_params, rw_marks)
            want_text, want_values = normalise_statement(want_sql, want_params, bl_marks)
            if got_text != want_text:
                problems.append(f"Watcher {step} statement {n} differs:\n  runwatch: "
                                f"{got_text}\n  baseline: {want_text}")
            elif got_values != want_values:
                problems.append(f"Watcher {step} statement {n} parameters differ: runwatch "
                                f"{got_values}, baseline {want_values}")
    return runwatch, recorded
