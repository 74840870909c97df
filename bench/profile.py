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
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import asyncpg
import httpx

from bench.seed import DSN, LOG_MESSAGE, Fixture


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[tuple[str, list[Any]]] = []
        # Every call to the database driver meanwhile, BEGIN and COMMIT included: (the
        # statement's first words, wall ms from the call until its answer).
        self.round_trips: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and len(record.args) == 2:
            self.statements.append((str(record.args[0]), list(record.args[1] or [])))


_DRIVER_CALLS = ("execute", "fetch", "fetchrow", "fetchval")


def _head(sql: str, words: int = 3) -> str:
    if sql.startswith("SELECT pg_advisory_unlock_all()"):
        return "pool reset"  # asyncpg's, when a connection goes back to its pool
    return " ".join(sql.replace('"', "").split()[:words]).rstrip(";,")


class capture_sql:
    """Context manager: the statements Tortoise issues meanwhile (in `.statements`), and the
    time of every call to asyncpg (`.round_trips`: Tortoise's statements and the BEGIN /
    COMMIT of its transactions, each from the call until the answer)."""

    def __enter__(self) -> _Capture:
        self.logger = logging.getLogger("tortoise.db_client")
        self.handler = handler = _Capture()
        self.saved = (self.logger.level, self.logger.propagate)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.originals = {name: getattr(asyncpg.Connection, name) for name in _DRIVER_CALLS}

        def timed(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def call(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await original(conn, query, *args, **kwargs)
                finally:
                    handler.round_trips.append((_head(query),
                                                (time.perf_counter() - t0) * 1000))
            return call

        for name, original in self.originals.items():
            setattr(asyncpg.Connection, name, timed(original))
        return self.handler

    def __exit__(self, *exc: object) -> None:
        for name, original in self.originals.items():
            setattr(asyncpg.Connection, name, original)
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
    note: str | None = None  # why it could not be explained

    @property
    def head(self) -> str:
        return " ".join(self.sql.split())[:60]


@dataclass
class RequestProfile:
    name: str
    status: int
    wall_ms: float  # median in-process time of the whole request
    statements: list[StatementProfile]
    # Each call to the database driver in order, BEGIN and COMMIT included, with its median
    # wall time (from the call to the answer: the round trip, PostgreSQL's work, the driver);
    # the rest of wall_ms is Python (HTTP, routing, auth, validation, ORM, JSON).
    round_trips: list[tuple[str, float]] = field(default_factory=list)

    @property
    def round_trip_ms(self) -> float:
        return sum(ms for _, ms in self.round_trips)

    @property
    def db_ms(self) -> float:
        return sum(s.db_ms for s in self.statements if s.note is None)

    def lines(self) -> list[str]:
        out = [f"{self.name:<15} {self.wall_ms:8.2f} ms per request in-process "
               f"(HTTP {self.status}); PostgreSQL {self.db_ms:.2f} ms in "
               f"{len(self.statements)} statement(s)"]
        for s in self.statements:
            scans = ", ".join(f"{x.node} {x.rows_read:,} rows" for x in s.scans[:2])
            out.append(f"    {s.db_ms:8.2f} ms  {s.head}{'…' if len(s.sql) > 60 else ''}"
                       + (f"  [{scans}]" if scans else "")
                       + (f"  (not explained: {s.note})" if s.note else ""))
        if self.round_trips:
            trips = ", ".join(f"{head} {ms:.2f}" for head, ms in self.round_trips)
            out.append(f"    {len(self.round_trips)} round trips {self.round_trip_ms:.2f} ms "
                       f"({trips}); the other {self.wall_ms - self.round_trip_ms:.2f} ms: "
                       "Python")
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
        except asyncpg.PostgresError as exc:  # e.g. a unique value the request already used
            return StatementProfile(sql=sql, db_ms=0.0, note=f"{type(exc).__name__}: {exc}")
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
    trips: list[list[tuple[str, float]]] = []
    statements: list[tuple[str, list[Any]]] = []
    status = 0
    for _ in range(repeat):
        with capture_sql() as captured:
            t0 = time.perf_counter()
            response = await send()
            times.append((time.perf_counter() - t0) * 1000)
        status, statements = response.status_code, captured.statements
        trips.append(captured.round_trips)
    return await summarise(name, status, times, trips, statements, conn, rewrite)


async def summarise(
    name: str, status: int, times: list[float], trips: list[list[tuple[str, float]]],
    statements: list[tuple[str, list[Any]]], conn: asyncpg.Connection,
    rewrite: Callable[[list[Any]], list[Any]] | None = None,
) -> RequestProfile:
    """The profile of one kind of request from its calls: the median time, the statements of
    the last call explained, the round trips' medians."""
    explained = []
    for sql, params in statements:
        explained.append(await explain(conn, sql, rewrite(params) if rewrite else params))
    # Medians position by position, over the calls that made the same round trips as the last.
    same = [t for t in trips if [h for h, _ in t] == [h for h, _ in trips[-1]]]
    round_trips = [(column[0][0], median(ms for _, ms in column)) for column in zip(*same,
                                                                                    strict=True)]
    return RequestProfile(name=name, status=status, wall_ms=median(times), statements=explained,
                          round_trips=round_trips)


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
            # The in-process client's and ASGI's own cost: part of every figure below.
            profiles.append(await profile_request("GET /health", lambda: client.get("/health"),
                                                  repeat=30, conn=conn))
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
            # The history is seeded only when the telemetry scenarios run.
            telemetry_roles = ((("small", "telemetry 10k"), ("large", "telemetry 1M"))
                               if "telemetry" in fixture.groups else ())
            for role, label in telemetry_roles:
                path = f"{prefix}/{fixture.connections[role]}/telemetry/"
                await client.get(path, headers=read_auth)

                def telemetry(path: str = path) -> Awaitable[httpx.Response]:
                    return client.get(path, headers=read_auth)

                profiles.append(await profile_request(label, telemetry, repeat=3, conn=conn))
            if fixture.elt is not None:
                profiles.extend(await profile_elt(fixture, client, conn))
            if fixture.watcher is not None:
                profiles.extend(await profile_watcher(fixture, client, conn))
    finally:
        await conn.close()
    return profiles


APPEND_LOG = {"appendLog": {"level": "info", "message": LOG_MESSAGE}}
APPEND_SAMPLE = {"appendTelemetrySample": {"rows": 10, "bytes": 100, "progress": 5}}


async def profile_elt(fixture: Fixture, client: httpx.AsyncClient,
                      conn: asyncpg.Connection) -> list[RequestProfile]:
    """The ELT PATCHes: appends to an empty run and to one at its cap (the statements of the
    last of 15 appends to one run, explained against a spare run in the same state: a fresh
    empty one, or one seeded at the cap), and a terminal PATCH with an enabled webhook endpoint
    (a fresh run each, explained against a spare fresh run; message ids are unique, so the
    delivery's is replaced by a new one). The endpoint is removed afterwards, with the
    deliveries it got (nothing is ever sent)."""
    from runwatch.resolvers.caller import Caller, Scope
    from runwatch.resolvers.webhooks import remove_endpoint_for, set_endpoint

    elt = fixture.elt
    assert elt is not None
    write = {"Authorization": f"Bearer {elt.write_token}"}
    gateway = {"Authorization": f"Bearer {elt.gateway_token}"}
    profiles: list[RequestProfile] = []

    def swap(old: int, new: int) -> Callable[[list[Any]], list[Any]]:
        def rewrite(params: list[Any]) -> list[Any]:
            out = []
            for p in params:
                if p == old:
                    p = new
                elif isinstance(p, str) and p.startswith("msg_"):
                    p = f"msg_{uuid.uuid4().hex}"
                out.append(p)
            return out
        return rewrite

    for label, role, body, headers, prefix in (
        ("appendLog", "log-empty", APPEND_LOG, write, "/api/elt/runs"),
        ("appendLog cap", "log-cap", APPEND_LOG, write, "/api/elt/runs"),
        ("appendLog agent", "log-empty", APPEND_LOG, gateway, "/api/agent/runs"),
        ("sample", "sample-empty", APPEND_SAMPLE, write, "/api/elt/runs"),
        ("sample cap", "sample-cap", APPEND_SAMPLE, write, "/api/elt/runs"),
    ):
        run_id, spare = fixture.preflight_id(role), fixture.preflight_id(role)

        def append(path: str = f"{prefix}/{run_id}", body: Any = body,
                   headers: dict[str, str] = headers) -> Awaitable[httpx.Response]:
            return client.patch(path, json=body, headers=headers)

        await append()  # the token's cache entry warm, as under load
        profiles.append(await profile_request(label, append, repeat=15, conn=conn,
                                              rewrite=swap(run_id, spare)))

    caller = Caller(organisation_id=elt.organisation_id, scopes=frozenset({Scope.WRITE}))
    await set_endpoint(caller=caller, url="http://127.0.0.1:9/hook", allow_private=True)
    try:
        last: dict[str, int] = {}

        def finish() -> Awaitable[httpx.Response]:
            last["id"] = fixture.preflight_id("hooks")
            return client.patch(f"/api/elt/runs/{last['id']}", json={"status": "succeeded"},
                                headers=write)

        await finish()
        spare = fixture.preflight_id("hooks")
        profile_run = await profile_request(
            "terminal PATCH", finish, repeat=10, conn=conn,
            rewrite=lambda params: swap(last["id"], spare)(params))
        profiles.append(profile_run)
    finally:
        await remove_endpoint_for(caller=caller, pipeline_id=None)
    return profiles


async def profile_watcher(fixture: Fixture, client: httpx.AsyncClient,
                          conn: asyncpg.Connection, repeat: int = 10) -> list[RequestProfile]:
    """The Watcher round's four requests on the check pipeline (found, a new next watermark
    each round, a child of its running root), `repeat` rounds; the last round's statements
    explained (the end's against a spare running execution: the last one has ended)."""
    from datetime import UTC, datetime, timedelta

    from bench.seed import WATCHER_TYPE

    w = fixture.watcher
    assert w is not None
    auth = {"Authorization": f"Bearer {w.token}"}
    steps = ("Watcher pipeline", "Watcher start", "Watcher end", "Watcher GET")
    times: dict[str, list[float]] = {s: [] for s in steps}
    trips: dict[str, list[list[tuple[str, float]]]] = {s: [] for s in steps}
    last: dict[str, tuple[int, list[tuple[str, list[Any]]]]] = {}
    start_body = {"pipeline_id": w.check_pipeline, "parent_id": w.check_parent}
    run_id = 0
    for n in range(repeat + 1):  # the first round warms the token's cache entry
        for step in steps:
            if step == "Watcher pipeline":
                send = client.post("/pipeline", headers=auth, json={
                    "name": w.check_name, "pipeline_type_name": WATCHER_TYPE,
                    "next_watermark": f"profile-{uuid.uuid4().hex[:12]}"})
            elif step == "Watcher start":
                send = client.post("/start_pipeline_execution", headers=auth, json=start_body)
            elif step == "Watcher end":
                ended = datetime.now(UTC) + timedelta(seconds=1)
                send = client.post("/end_pipeline_execution", headers=auth, json={
                    "id": run_id, "end_date": ended.isoformat(), "completed_successfully": True,
                    "total_rows": 1000, "inserts": 600, "updates": 300, "soft_deletes": 100})
            else:
                send = client.get(f"/pipeline_execution/{run_id}", headers=auth)
            with capture_sql() as captured:
                t0 = time.perf_counter()
                response = await send
                elapsed = (time.perf_counter() - t0) * 1000
            if step == "Watcher start" and response.status_code == 201:
                run_id = int(response.json()["id"])
            if n:
                times[step].append(elapsed)
                trips[step].append(captured.round_trips)
                last[step] = (response.status_code, captured.statements)
    spare = await client.post("/start_pipeline_execution", headers=auth, json=start_body)
    spare_id = int(spare.json()["id"]) if spare.status_code == 201 else run_id

    def to_spare(params: list[Any]) -> list[Any]:
        return [spare_id if p == run_id and not isinstance(p, bool) else p for p in params]

    profiles = []
    for step in steps:
        status, statements = last[step]
        profiles.append(await summarise(step, status, times[step], trips[step], statements,
                                        conn, to_spare if step == "Watcher end" else None))
    return profiles
