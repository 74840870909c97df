"""What Prometheus metrics cost on the hottest write: the REST run report (the harness's
scenario 1, the same request, script and pre-created running runs) on a runwatch with
`RUNWATCH_METRICS=1` against the same runwatch with metrics off, in interleaved rounds
(`bench/abab.py`). Goal: metrics-on throughput at least 0.95 of metrics-off.

    python -m bench.metrics_cost [--rounds 6] [--warmup 2] [--duration 5] [--connections 16]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and `wrk` (installed as the harness
does when missing). Uses its own database, `runwatch_bench_metrics`, dropped at the end; only
ever targets 127.0.0.1; every process runs under a timeout; `--time-limit` (default 600 s) is
a hard stop. Prints its table and writes `bench/results/metrics_cost.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import abab
from bench.harness import RESULTS_DIR, RUNWATCH_BENCH_SETTINGS, base_env
from bench.procs import BenchError, Server, ensure_wrk, run_wrk
from bench.seed import ADMIN_DSN, RUNNING_SQL

NAME = "metrics_cost"
DB_NAME = "runwatch_bench_metrics"
DSN = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
LUA = Path(__file__).resolve().parent / "sequential_ids.lua"
RATE_CAP = 4000  # pre-created runs per second of load (far above one worker's rate here)
GOAL = 0.95


@dataclass
class Fixture:
    organisation_id: int
    connection_id: int
    pipeline_id: int
    token: str
    next_id: int = 1_000_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="ABAB rounds (default 6)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per run")
    parser.add_argument("--duration", type=float, default=5, help="measured seconds per run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--time-limit", type=float, default=600, help="hard stop, seconds")
    return parser.parse_args(argv)


async def setup() -> Fixture:
    """A fresh database, migrated, with an organisation, a report token and a connection made
    through runwatch's own resolvers."""
    from tortoise import Tortoise

    from runwatch.db import apply_migrations, tortoise_config
    from runwatch.models import Pipeline
    from runwatch.resolvers.caller import Caller, Scope
    from runwatch.resolvers.connections import create_connection
    from runwatch.resolvers.organisations import create_organisation
    from runwatch.resolvers.tokens import create_token
    from runwatch.settings import normalise_database_url

    admin = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await admin.close()
    url = normalise_database_url(DSN)
    await apply_migrations(url)
    await Tortoise.init(config=tortoise_config(url))
    try:
        org = await create_organisation(name="bench-metrics")
        token = await create_token(organisation_id=org.id, scopes="report", name="bench")
        writer = Caller(organisation_id=org.id, scopes=frozenset({Scope.WRITE}))
        connection = await create_connection(caller=writer, name="bench-rest",
                                             warehouse_type="postgres")
        pipeline = await Pipeline.get(connection_id=connection.id, kind="delivery")
    finally:
        await Tortoise.close_connections()
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()
    return Fixture(org.id, connection.id, pipeline.id, token.token)


async def seed_runs(fixture: Fixture, count: int) -> int:
    """`count` running runs (started an hour ago, as the harness seeds them); the first id."""
    first = fixture.next_id
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        await conn.execute(RUNNING_SQL, first, count, fixture.organisation_id,
                           fixture.pipeline_id, datetime.now(UTC) - timedelta(hours=1), None,
                           0, 0)
        await conn.execute("SELECT setval(pg_get_serial_sequence('run', 'id'), $1)",
                           first + count)
    finally:
        await conn.close()
    fixture.next_id += count
    return first


async def retire_runs(first: int, count: int) -> None:
    """Delete the seeded runs a phase did not report, and refresh the planner's statistics.

    Seeding runs far ahead of the load (RATE_CAP) and leaving the unused ones running would
    pile up hundreds of thousands of open runs between autovacuum's visits, which no live
    deployment has (the reaper ends them); with the statistics read while the table was small,
    the planner then chose an index on (gateway_id, status) or (organisation_id, ...) over the
    primary key for the report's UPDATE and scanned every open run: whichever server met that
    plan first collapsed round after round, metrics on or off."""
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        await conn.execute("DELETE FROM run WHERE id BETWEEN $1 AND $2 AND status = 'running'",
                           first, first + count - 1)
        await conn.execute("ANALYZE run")
    finally:
        await conn.close()


async def drop_database() -> None:
    admin = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    finally:
        await admin.close()


class Bench:
    def __init__(self, opts: argparse.Namespace, fixture: Fixture, servers: dict[str, Server]):
        self.opts = opts
        self.f = fixture
        self.servers = servers
        self.completed_at = (datetime.now(UTC) - timedelta(minutes=30)).isoformat().replace(
            "+00:00", "Z")
        self.problems: list[str] = []
        self.rps: dict[str, list[float]] = {name: [] for name in servers}
        self.cpu_ms: dict[str, list[float]] = {name: [] for name in servers}

    def measure(self, name: str, round_no: int) -> float:
        server = self.servers[name]
        path = (f"/api/v1/organisations/{self.f.organisation_id}/integrations/"
                f"warehouse-connections/{self.f.connection_id}/metrics/{{ID}}/")
        body = json.dumps({"completed_at": self.completed_at, "events_delivered": 1234,
                           "batches_dlq": 0, "error": None})
        result = None
        for phase, seconds in (("warmup", self.opts.warmup), ("measure", self.opts.duration)):
            count = math.ceil(seconds * RATE_CAP)
            first = asyncio.run(seed_runs(self.f, count))
            cpu_before = server.cpu_seconds()
            result = run_wrk(f"{name} r{round_no} {phase}", server.url + "/",
                             duration=seconds, connections=self.opts.connections, script=LUA,
                             script_env={
                                 "BENCH_METHOD": "PATCH", "BENCH_PATH": path,
                                 "BENCH_BODY": body, "BENCH_TOKEN": self.f.token,
                                 "BENCH_FIRST_ID": str(first), "BENCH_ID_COUNT": str(count),
                                 "BENCH_CYCLE": "0", "BENCH_DELAY_MS": "0"})
            cpu_after = server.cpu_seconds()
            asyncio.run(retire_runs(first, count))
            if cpu_before is not None and cpu_after is not None and result.requests:
                result.server_cpu_ms = (cpu_after - cpu_before) * 1000 / result.requests
            server.check_alive()
            if not result.valid:
                self.problems.append(f"{result.label}: {result.summary()}")
        assert result is not None
        self.rps[name].append(result.rps)
        self.cpu_ms[name].append(result.server_cpu_ms or math.nan)
        print(f"  r{round_no} metrics {name:<3} {result.summary()}", flush=True)
        return result.rps


def middleware_cost(rounds: int, requests: int = 20_000) -> abab.Comparison:
    """In process, no network: the time one request spends in the metrics middleware and one
    transition hook (a trivial ASGI app behind it), metrics on minus off, in microseconds."""
    import os

    from runwatch import metrics
    from runwatch.settings import Settings

    directory = tempfile.mkdtemp(prefix="runwatch-bench-metrics-micro-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        metrics.run_moved("running", "succeeded", 1)

    class Route:  # what the middleware reads of a starlette Route
        path = "/api/runs/{run_id}"

        def __init__(self) -> None:
            self.endpoint = endpoint

        def matches(self, scope: Any) -> tuple[Any, dict]:
            raise AssertionError("routed: not reached")

    route = Route()

    async def router(scope: Any, receive: Any, send: Any) -> None:
        scope["endpoint"] = endpoint
        await endpoint(scope, receive, send)

    app = metrics.MetricsMiddleware(router, routes=[route])
    scope = {"type": "http", "method": "PATCH", "path": "/api/runs/1", "headers": []}

    async def noop(*_: Any) -> None:
        return None

    async def loop() -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await app(dict(scope), noop, noop)
        return (time.perf_counter() - started) / requests * 1e6

    metrics.configure(Settings(metrics=True))
    state = metrics._metrics

    def run(on: bool) -> float:
        metrics._metrics = state if on else None
        return asyncio.run(loop())

    try:
        return abab.interleave(lambda n: run(True), lambda n: run(False), rounds,
                               ratio=lambda a, b: a - b)
    finally:
        metrics._metrics = None
        shutil.rmtree(directory, ignore_errors=True)


def scrape_check(server: Server) -> str:
    """The metrics-on server's own count of the reports, as a check that it measured them."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "runwatch_run_transitions_total"
                    and sample.labels.get("to_status") == "succeeded"):
                return f"{sample.value:.0f} running->succeeded transitions counted"
    return "no transitions counted"


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(
        BenchError(f"time limit of {opts.time_limit:.0f} s reached")))
    signal.alarm(int(opts.time_limit))
    started = time.monotonic()
    ensure_wrk()
    log_dir = Path(tempfile.mkdtemp(prefix="runwatch-bench-metrics-"))
    multiproc = log_dir / "prometheus"
    multiproc.mkdir()
    servers: dict[str, Server] = {}
    comparison: abab.Comparison | None = None
    try:
        fixture = asyncio.run(asyncio.wait_for(setup(), 120))
        env = {**base_env(), **RUNWATCH_BENCH_SETTINGS, "DATABASE_URL": DSN}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        servers = {
            "on": Server("metrics-on", "runwatch.app:create_app",
                         {**env, "RUNWATCH_METRICS": "1",
                          "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}, log_dir),
            "off": Server("metrics-off", "runwatch.app:create_app", env, log_dir),
        }
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        if httpx.get(servers["off"].url + "/metrics", timeout=10).status_code != 404:
            raise BenchError("the metrics-off server answers /metrics")
        bench = Bench(opts, fixture, servers)
        print(f"{NAME}: REST report, metrics on vs off, {opts.rounds} ABAB rounds of "
              f"{opts.warmup:g} s warm-up + {opts.duration:g} s, {opts.connections} connections",
              flush=True)
        comparison = abab.interleave(lambda n: bench.measure("on", n),
                                     lambda n: bench.measure("off", n),
                                     opts.rounds, goal=GOAL)
        check = scrape_check(servers["on"])
    finally:
        for server in servers.values():
            server.stop()
        signal.alarm(0)
        try:
            asyncio.run(asyncio.wait_for(drop_database(), 60))
        except Exception as exc:  # the result stands; say what was left behind
            print(f"could not drop {DB_NAME}: {exc}", file=sys.stderr)
        shutil.rmtree(log_dir, ignore_errors=True)
    verdict = comparison.verdict if not bench.problems else "MISS"
    cpu = abab.of_ratios([off / on for on, off in zip(bench.cpu_ms["on"], bench.cpu_ms["off"],
                                                      strict=True)], goal=GOAL)
    micro = middleware_cost(opts.rounds)
    rows = [{"measure": "REST report throughput, metrics on / off",
             "goal": f">= {GOAL}", "median": comparison.median, "spread": comparison.spread,
             "verdict": verdict, "rounds": comparison.ratios, "unit": "ratio"},
            {"measure": "REST report server CPU/request, off / on",
             "goal": f">= {GOAL}", "median": cpu.median, "spread": cpu.spread,
             "verdict": cpu.verdict if not bench.problems else "MISS", "rounds": cpu.ratios,
             "unit": "ratio"},
            {"measure": "middleware + hook in process, on - off", "goal": "",
             "median": micro.median, "spread": micro.spread, "verdict": "info",
             "rounds": micro.ratios, "unit": "us/request"}]
    for name in ("on", "off"):
        values = sorted(bench.rps[name])
        mid = values[len(values) // 2] if values else math.nan
        rows.append({"measure": f"REST report req/s, metrics {name}", "goal": "",
                     "median": mid,
                     "spread": (values[-1] - values[0]) / mid if values and mid else math.nan,
                     "verdict": "info", "rounds": bench.rps[name], "unit": "req/s"})
    print()
    print(f"{'measure':<44} {'goal':>8} {'median':>9} {'spread':>8}  verdict")
    for row in rows:
        print(f"{row['measure']:<44} {row['goal']:>8} {row['median']:>9.3f} "
              f"{row['spread'] * 100:>7.1f}%  {row['verdict']}")
    print(f"rounds (on/off): {' '.join(f'{r:.3f}' for r in comparison.ratios)}")
    print(f"server CPU ms/request on: {' '.join(f'{v:.2f}' for v in bench.cpu_ms['on'])}; "
          f"off: {' '.join(f'{v:.2f}' for v in bench.cpu_ms['off'])}")
    print(f"check: {check}; {time.monotonic() - started:.0f} s in all")
    for problem in bench.problems:
        print(f"INVALID: {problem}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{NAME}.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
