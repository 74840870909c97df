"""Where the GraphQL layer's time goes, in-process: GraphQL `reportRun` against the REST report
doing the same domain call, and the Watcher round's requests, on PostgreSQL.

    python -m bench.perf                    # ABAB rounds, the table, bench/results/perf.json
    python -m bench.perf --profile gql      # cProfile of GraphQL reportRun (or rest, watcher)
    python -m bench.perf --layers           # the layers alone: the domain's report_run stubbed

runwatch runs in-process (its ASGI app over httpx's ASGITransport: no HTTP server, no wrk),
sequentially and warm, on a database of its own (`runwatch_bench_perf`, dropped at the end).
What both sides of a comparison share (the ORM, PostgreSQL, the middleware, the client) is the
same; what differs is the surface, so the ratio says what the GraphQL layer costs on top of
the REST shim. It explains `python -m bench`'s scenario 2; it does not replace it (no server,
no concurrency, the client's own cost in every figure). Bounded: `--time-limit` (default 240 s).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.abab import Comparison, of_ratios

ADMIN_DSN = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB_NAME = "runwatch_bench_perf"
RESULTS = Path(__file__).parent / "results" / "perf.json"
REPORT = "mutation($i: ReportRunInput!) { reportRun(input: $i) { __typename } }"
STARTED = "2000-01-01T00:00:00Z"  # every run starts long before any report's completion


class World:
    """The app in-process and what the requests need: a token, a connection with running
    runs to report (each a first report), a Watcher pipeline with its running root."""

    def __init__(self, client: httpx.AsyncClient, token: str, prefix: str, cid: int) -> None:
        self.client = client
        self.app: Any = None  # the ASGI app itself (`--layers` calls it without a client)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.json_auth = {**self.auth, "content-type": "application/json"}
        self.prefix = prefix
        self.cid = cid
        self.runs: list[int] = []
        self.pipeline_id = 0
        self.parent_id = 0
        self.mark = 0

    async def more_runs(self, n: int) -> None:
        for _ in range(n):
            r = await self.client.post(f"{self.prefix}/{self.cid}/metrics/",
                                       json={"started_at": STARTED}, headers=self.auth)
            assert r.status_code == 201, r.text
            self.runs.append(r.json()["run_id"])

    async def graphql_report(self) -> None:
        body = json.dumps({"query": REPORT, "variables": {"i": {
            "runId": str(self.runs.pop()), "completedAt": now(), "eventsDelivered": 1234}}})
        r = await self.client.post("/graphql", content=body, headers=self.json_auth)
        assert r.json()["data"]["reportRun"]["__typename"] == "ReportRunSuccess", r.text

    async def rest_report(self) -> None:
        r = await self.client.patch(f"{self.prefix}/{self.cid}/metrics/{self.runs.pop()}/",
                                    json={"completed_at": now(), "events_delivered": 1234},
                                    headers=self.auth)
        assert r.status_code == 204, r.text

    async def watcher_round(self) -> None:
        self.mark += 1
        c = self.client
        r = await c.post("/pipeline", headers=self.auth, json={
            "name": "perf-watcher", "pipeline_type_name": "extraction",
            "next_watermark": str(self.mark)})
        assert r.status_code == 200, r.text
        r = await c.post("/start_pipeline_execution", headers=self.auth, json={
            "pipeline_id": self.pipeline_id, "parent_id": self.parent_id})
        assert r.status_code == 201, r.text
        execution = r.json()["id"]
        ended = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        r = await c.post("/end_pipeline_execution", headers=self.auth, json={
            "id": execution, "end_date": ended, "completed_successfully": True,
            "total_rows": 1000, "inserts": 600, "updates": 300, "soft_deletes": 100})
        assert r.status_code == 204, r.text
        r = await c.get(f"/pipeline_execution/{execution}", headers=self.auth)
        assert r.status_code == 200, r.text


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def _timed(action: Callable[[], Awaitable[None]], n: int) -> tuple[float, float]:
    """(wall ms, CPU ms) per call of `action`, over n calls in a row."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await action()
    return ((time.perf_counter() - wall) * 1000 / n, (time.process_time() - cpu) * 1000 / n)


async def _world(stack: Any) -> World:
    from asgi_lifespan import LifespanManager

    from runwatch.app import create_app
    from runwatch.db import apply_migrations
    from runwatch.resolvers.organisations import create_organisation
    from runwatch.resolvers.tokens import create_token
    from runwatch.settings import Settings, normalise_database_url

    admin = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await admin.close()
    url = normalise_database_url(ADMIN_DSN.rsplit("/", 1)[0] + "/" + DB_NAME)
    await apply_migrations(url)
    # As the harness runs it: defaults, but a rate limit never reached (still in the path).
    settings = replace(Settings.from_env({"DATABASE_URL": url}), workers_in_serve=False,
                       rate_limit_per_minute=1_000_000_000)
    app = await stack.enter_async_context(LifespanManager(create_app(settings)))
    client = await stack.enter_async_context(httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.app), base_url="http://runwatch.bench"))
    org = await create_organisation(name="perf")
    token = (await create_token(organisation_id=org.id, scopes="read,write,report")).token
    prefix = f"/api/v1/organisations/{org.id}/integrations/warehouse-connections"
    r = await client.post(prefix + "/", json={"name": "perf", "type": "snowflake"},
                          headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    world = World(client, token, prefix, r.json()["id"])
    world.app = app.app
    r = await client.post("/pipeline", headers=world.auth, json={
        "name": "perf-watcher", "pipeline_type_name": "extraction"})
    assert r.status_code in (200, 201), r.text
    world.pipeline_id = r.json()["id"]
    r = await client.post("/start_pipeline_execution", headers=world.auth,
                          json={"pipeline_id": world.pipeline_id})
    assert r.status_code == 201, r.text
    world.parent_id = r.json()["id"]
    return world


async def _drop() -> None:
    admin = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    finally:
        await admin.close()


class _Call:
    """One request to the ASGI app itself, no client: the scope built once, the body given
    in one message; `__call__` answers the response's status."""

    def __init__(self, app: Any, method: str, path: str, body: bytes, token: str) -> None:
        self.app, self.body = app, body
        self.scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
            "headers": [(b"host", b"runwatch.bench"), (b"authorization", token.encode()),
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]}
        self.answer = b""

    async def __call__(self) -> int:
        status = 0
        sent = False
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:  # the app only asks again to see a disconnect: there is none
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                chunks.append(message.get("body", b""))

        await self.app(dict(self.scope), receive, send)
        self.answer = b"".join(chunks)
        return status


async def layers(world: World, args: argparse.Namespace) -> list[dict[str, Any]]:
    """What the HTTP and GraphQL layers cost without the domain: the domain's `report_run`
    (which both surfaces call) answers at once, and the app is called as ASGI, so that each
    figure is the middleware, the surface and nothing else. CPU µs per request, ABAB rounds;
    the rows: each side's CPU and GraphQL's extra over REST's."""
    from runwatch.models import Run
    from runwatch.resolvers import runs as runs_api

    run_id = world.runs[-1]
    stored = await Run.get(id=run_id)

    async def answered_at_once(**_: Any) -> tuple[Run, bool]:
        return stored, True

    gql = _Call(world.app, "POST", "/graphql", json.dumps({"query": REPORT, "variables": {"i": {
        "runId": str(run_id), "completedAt": now(), "eventsDelivered": 1234}}}).encode(),
        world.auth["Authorization"])
    rest = _Call(world.app, "PATCH", f"{world.prefix}/{world.cid}/metrics/{run_id}/",
                 json.dumps({"completed_at": now(), "events_delivered": 1234}).encode(),
                 world.auth["Authorization"])
    original = runs_api.report_run
    runs_api.report_run = answered_at_once  # type: ignore[assignment]
    try:
        if await gql() != 200 or b'"ReportRunSuccess"' not in gql.answer:
            raise RuntimeError(f"GraphQL reportRun answered {gql.answer[:300]!r}")
        if await rest() != 204:
            raise RuntimeError(f"the REST report answered {rest.answer[:300]!r}")
        n = args.requests * 10
        for _ in range(n):  # warm: the document prepared, the caches filled
            await gql()
            await rest()
        cpu: dict[str, list[float]] = {"gql": [], "rest": []}
        for k in range(args.rounds):
            sides = [("gql", gql), ("rest", rest)]
            for name, call in (sides if k % 2 == 0 else sides[::-1]):
                started = time.process_time()
                for _ in range(n):
                    await call()
                cpu[name].append((time.process_time() - started) * 1e6 / n)
    finally:
        runs_api.report_run = original  # type: ignore[assignment]
    extra = [g - r for g, r in zip(cpu["gql"], cpu["rest"], strict=True)]
    return [
        row("layers: GraphQL reportRun, CPU µs per request (domain stubbed)", "info",
            of_ratios(cpu["gql"], goal=None, higher_is_better=False), "µs"),
        row("layers: REST report, CPU µs per request (domain stubbed)", "info",
            of_ratios(cpu["rest"], goal=None, higher_is_better=False), "µs"),
        row("layers: GraphQL's extra over REST, CPU µs per request", "info",
            of_ratios(extra, goal=None, higher_is_better=False), "µs"),
    ]


def row(measure: str, goal: str, comparison: Comparison, unit: str) -> dict[str, Any]:
    return {"measure": measure, "goal": goal, "median": comparison.median,
            "spread": comparison.spread, "verdict": comparison.verdict,
            "rounds": comparison.ratios, "unit": unit}


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import contextlib

    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(_drop)
        world = await _world(stack)
        n = args.requests
        if args.layers:
            await world.more_runs(1)
            return await layers(world, args)
        await world.more_runs(2 * n * args.rounds + 2 * args.warmup + 2 * n)
        for _ in range(args.warmup):
            await world.graphql_report()
            await world.rest_report()
            await world.watcher_round()
        if args.profile:
            action = {"gql": world.graphql_report, "rest": world.rest_report,
                      "watcher": world.watcher_round}[args.profile]
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(n):
                await action()
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(
                "runwatch|strawberry|graphql|starlette|tortoise", 60)
            return []
        gql: list[tuple[float, float]] = []
        rest: list[tuple[float, float]] = []
        watcher: list[tuple[float, float]] = []
        for k in range(args.rounds):  # A B / B A: neither side always first
            sides = [(gql, world.graphql_report), (rest, world.rest_report)]
            for into, action in (sides if k % 2 == 0 else sides[::-1]):
                into.append(await _timed(action, n))
            watcher.append(await _timed(world.watcher_round, max(1, n // 4)))
        # reportRun / REST report as a rate (REST's time over GraphQL's): 1.0 is "GraphQL
        # costs nothing on top of the REST shim".
        wall = of_ratios([r[0] / g[0] for g, r in zip(gql, rest, strict=True)], goal=None)
        cpu = of_ratios([r[1] / g[1] for g, r in zip(gql, rest, strict=True)], goal=None)
        gql_cpu = of_ratios([g[1] for g in gql], goal=None)
        watcher_cpu = of_ratios([w[1] / 4 for w in watcher], goal=None, higher_is_better=False)
        return [
            row("GraphQL reportRun / REST report, in-process rate (wall)", "info", wall,
                "ratio"),
            row("GraphQL reportRun / REST report, in-process rate (CPU)", "info", cpu, "ratio"),
            row("GraphQL reportRun, in-process CPU per request (client included)", "info",
                gql_cpu, "ms"),
            row("Watcher request (round / 4), in-process CPU (client included)", "info",
                watcher_cpu, "ms"),
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100, help="requests per side a round")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--profile", choices=("gql", "rest", "watcher"))
    parser.add_argument("--layers", action="store_true",
                        help="the middleware and surfaces alone: the domain's report_run "
                        "stubbed, the app called as ASGI (--requests × 10 a side a round)")
    parser.add_argument("--time-limit", type=float, default=240)
    args = parser.parse_args(argv)
    try:
        rows = asyncio.run(asyncio.wait_for(run(args), args.time_limit))
    except TimeoutError:
        print(f"time limit of {args.time_limit:.0f} s reached", file=sys.stderr)
        return 3
    if args.profile:
        return 0
    print(f"{'measure':<68} {'median':>8} {'spread':>8}  verdict  rounds")
    for r in rows:
        rounds = " ".join(f"{x:.2f}" for x in r["rounds"])
        print(f"{r['measure']:<68} {r['median']:>8.3f} {r['spread'] * 100:>7.1f}%  "
              f"{r['verdict']:<8} {rounds}")
    results = RESULTS.with_name("perf-layers.json") if args.layers else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"rows": rows}, indent=2))
    print(f"written to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
