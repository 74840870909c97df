"""Where one request's time goes, before any load: runwatch in-process (its ASGI app over httpx,
no HTTP server, sequential requests, warm), the statements it issues (captured from the logger
`tortoise.db_client`) and PostgreSQL's own time for each (EXPLAIN ANALYZE, writes rolled back),
with the scans that read the most rows.

Nothing here knows runwatch's SQL: whatever runwatch issues is what gets explained, so the
profile follows runwatch as it changes. It explains the ratios; it is not one of them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import asyncpg
import httpx

from bench.seed import DSN, Fixture


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[tuple[str, list[Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and len(record.args) == 2:
            self.statements.append((str(record.args[0]), list(record.args[1] or [])))


class capture_sql:
    """Context manager: the statements Tortoise issues meanwhile (in `.statements`)."""

    def __enter__(self) -> _Capture:
        self.logger = logging.getLogger("tortoise.db_client")
        self.handler = _Capture()
        self.saved = (self.logger.level, self.logger.propagate)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        return self.handler

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]


@dataclass
class Scan:
    node: str  # "Seq Scan on run"
    rows_read: int  # rows returned + rows removed by filters, over all loops


@dataclass
class StatementProfile:
    sql: str
    db_ms: float
    scans: list[Scan] = field(default_factory=list)

    @property
    def head(self) -> str:
        return " ".join(self.sql.split())[:60]


@dataclass
class RequestProfile:
    name: str
    status: int
    wall_ms: float  # median in-process time of the whole request
    statements: list[StatementProfile]

    @property
    def db_ms(self) -> float:
        return sum(s.db_ms for s in self.statements)

    def lines(self) -> list[str]:
        out = [f"{self.name:<15} {self.wall_ms:8.2f} ms per request in-process "
               f"(HTTP {self.status}); PostgreSQL {self.db_ms:.2f} ms in "
               f"{len(self.statements)} statement(s)"]
        for s in self.statements:
            scans = ", ".join(f"{x.node} {x.rows_read:,} rows" for x in s.scans[:2])
            out.append(f"    {s.db_ms:8.2f} ms  {s.head}{'…' if len(s.sql) > 60 else ''}"
                       + (f"  [{scans}]" if scans else ""))
        return out


def _scans(plan: dict[str, Any]) -> list[Scan]:
    found: list[Scan] = []

    def walk(node: dict[str, Any]) -> None:
        relation = node.get("Relation Name")
        if relation and "Scan" in node.get("Node Type", ""):
            loops = int(node.get("Actual Loops", 1) or 1)
            rows = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
                    + node.get("Rows Removed by Index Recheck", 0)) * loops
            found.append(Scan(f"{node['Node Type']} on {relation}", int(rows)))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return sorted(found, key=lambda s: s.rows_read, reverse=True)


async def explain(conn: asyncpg.Connection, sql: str, params: list[Any]) -> StatementProfile:
    """EXPLAIN ANALYZE inside a transaction that is rolled back (writes leave no trace);
    the second of two executions (warm)."""
    result: StatementProfile | None = None
    for _ in range(2):
        tr = conn.transaction()
        await tr.start()
        try:
            raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *params)
        finally:
            await tr.rollback()
        doc = (json.loads(raw) if isinstance(raw, str) else raw)[0]
        result = StatementProfile(sql=sql, db_ms=float(doc["Execution Time"]),
                                  scans=_scans(doc["Plan"]))
    assert result is not None
    return result


async def profile_request(
    name: str, send: Callable[[], Awaitable[httpx.Response]], *, repeat: int,
    conn: asyncpg.Connection, rewrite: Callable[[list[Any]], list[Any]] | None = None,
) -> RequestProfile:
    """`send` makes one request (a fresh one each call); the statements of the last call are
    explained, their parameters passed through `rewrite` first (e.g. to target a fresh run)."""
    times: list[float] = []
    statements: list[tuple[str, list[Any]]] = []
    status = 0
    for _ in range(repeat):
        with capture_sql() as captured:
            t0 = time.perf_counter()
            response = await send()
            times.append((time.perf_counter() - t0) * 1000)
        status, statements = response.status_code, captured.statements
    explained = []
    for sql, params in statements:
        explained.append(await explain(conn, sql, rewrite(params) if rewrite else params))
    return RequestProfile(name=name, status=status, wall_ms=median(times), statements=explained)


async def profile(fixture: Fixture, completed_at: str) -> list[RequestProfile]:
    """Tortoise must be initialised on the benchmark database."""
    from runwatch.app import create_app
    from runwatch.settings import Settings, normalise_database_url

    app = create_app(Settings(database_url=normalise_database_url(fixture.database_url)),
                     run_background=False)
    org = fixture.organisation_id
    prefix = f"/api/v1/organisations/{org}/integrations/warehouse-connections"
    report_auth = {"Authorization": f"Bearer {fixture.report_token}"}
    read_auth = {"Authorization": f"Bearer {fixture.read_token}"}
    body = {"completed_at": completed_at, "events_delivered": 1234, "batches_dlq": 0,
            "error": None}
    conn = await asyncpg.connect(DSN, timeout=10)
    transport = httpx.ASGITransport(app=app)
    profiles: list[RequestProfile] = []
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            await client.get("/health")
            last: dict[str, int] = {}

            def rest() -> Awaitable[httpx.Response]:
                last["rest"] = fixture.preflight_id("rest")
                cid = fixture.connections["rest"]
                return client.patch(f"{prefix}/{cid}/metrics/{last['rest']}/", json=body,
                                    headers=report_auth)

            def graphql() -> Awaitable[httpx.Response]:
                last["graphql"] = fixture.preflight_id("graphql")
                return client.post("/graphql", headers=report_auth, json={
                    "query": "mutation($i: ReportRunInput!) "
                             "{ reportRun(input: $i) { __typename } }",
                    "variables": {"i": {"runId": str(last["graphql"]),
                                        "completedAt": completed_at, "eventsDelivered": 1234}},
                })

            def fresh(role: str) -> Callable[[list[Any]], list[Any]]:
                # The captured report completed its run; explain it against a fresh one.
                spare = fixture.preflight_id(role)
                return lambda params: [spare if p == last[role] else p for p in params]

            await rest()  # token cache warm, as under load
            profiles.append(await profile_request("REST report", rest, repeat=15, conn=conn,
                                                  rewrite=fresh("rest")))
            profiles.append(await profile_request("GraphQL report", graphql, repeat=15,
                                                  conn=conn, rewrite=fresh("graphql")))
            for role, label in (("small", "telemetry 10k"), ("large", "telemetry 1M")):
                path = f"{prefix}/{fixture.connections[role]}/telemetry/"
                await client.get(path, headers=read_auth)

                def telemetry(path: str = path) -> Awaitable[httpx.Response]:
                    return client.get(path, headers=read_auth)

                profiles.append(await profile_request(label, telemetry, repeat=3, conn=conn))
    finally:
        await conn.close()
    return profiles
