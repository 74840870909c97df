"""`python -m bench.ratelimit`: rate limits shared across replicas (issue 14).

1. **Admitted per minute.** For each shared backend (PostgreSQL, Redis) two runwatch replicas
   (uvicorn processes, `RUNWATCH_RATE_LIMIT_PER_MINUTE=600`, the real 60 s window: nothing is
   scaled) count one token's budget in the same store. One client sends REST run reports with
   that token at twice the limit (20 a second), alternating between the two replicas, and
   counts the 2xx answers. The sliding window counter holds the limit once a key has one full
   window of history; a new key's first (partial) window has none, so in its first minute it
   can get up to twice the limit (1.5x at this client's rate, started mid-window), and the
   first whole window after it admits its limit in a burst shaped by the partial window before.
   So the client first sends through the rest of the current window and one whole window (61
   to 121 s of warm-up; its first minute is reported for information), then measures one
   minute in four rounds of 15 s, each scaled to a minute.
   Goal: 600 a minute within 5 %. Both backends are measured at the same time (their own
   replicas, one client each).
2. **Cost of the check on the report path.** A replica with the shared backend (A) against one
   with the in-process limiter (B), same database, a limit too high to refuse anything: the mean
   latency of 200 sequential REST run reports (PATCH …/metrics/{run_id}/), interleaved A B / B A
   over 8 rounds; the ratio A / B is for information.

Loopback only; every server is stopped at the end; the database `runwatch_bench_ratelimit` is
dropped. Writes `bench/results/ratelimit.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

import asyncpg
import httpx

from bench.abab import interleave, of_ratios
from bench.procs import ROOT, Server

ADMIN_DSN = "postgres://postgres@127.0.0.1:5432/postgres"
DB_NAME = "runwatch_bench_ratelimit"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 600
RATE = 20.0  # requests a second: twice the limit
ROUND_SECONDS = 15.0
ROUNDS = 4
COST_ROUNDS = 8
COST_REQUESTS = 200
RESULTS = ROOT / "bench" / "results" / "ratelimit.json"


def report_body() -> dict:
    """A report completing a run started just before (re-sent: the same report, answered 204)."""
    time.sleep(0.01)
    return {"completed_at": datetime.now(UTC).isoformat(), "events_delivered": 1234,
            "batches_dlq": 0, "error": None}


async def recreate_database(drop_only: bool = False) -> None:
    admin = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        if not drop_only:
            await admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await admin.close()


async def bootstrap() -> tuple[str, int, int]:
    """The schema, an organisation, a report token and a connection (through runwatch's own
    resolvers): (token, organisation id, connection id)."""
    from tortoise import Tortoise

    from runwatch.db import apply_migrations, tortoise_config
    from runwatch.resolvers.caller import Caller, Scope
    from runwatch.resolvers.connections import create_connection
    from runwatch.resolvers.organisations import create_organisation
    from runwatch.resolvers.tokens import create_token
    from runwatch.settings import normalise_database_url

    url = normalise_database_url(DATABASE_URL)
    await apply_migrations(url)
    await Tortoise.init(config=tortoise_config(url))
    try:
        org = await create_organisation(name="bench-ratelimit")
        token = await create_token(organisation_id=org.id, scopes="report", name="bench")
        writer = Caller(organisation_id=org.id, scopes=frozenset({Scope.WRITE}))
        connection = await create_connection(
            caller=writer, name="bench-ratelimit", warehouse_type="postgres",
            settings={"database": "analytics", "schema": "events", "host": "warehouse.internal"})
        return token.token, org.id, connection.id
    finally:
        await Tortoise.close_connections()


def server(name: str, backend: str, per_minute: int, prefix: str, logs: Path) -> Server:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": DATABASE_URL,
           "RUNWATCH_RATE_LIMIT_PER_MINUTE": str(per_minute),
           "RUNWATCH_RATE_LIMIT_BACKEND": backend, "RUNWATCH_REDIS_URL": REDIS_URL,
           "RUNWATCH_RATE_LIMIT_KEY_PREFIX": prefix, "RUNWATCH_WORKERS_IN_SERVE": "0",
           "RUNWATCH_TOKEN_CACHE_SECONDS": "10"}
    return Server(name, "runwatch.app:create_app", env, logs)


async def start_run(client: httpx.AsyncClient, base: str, auth: dict[str, str],
                    prefix: str) -> str:
    r = await client.post(f"{base}{prefix}metrics/", json={}, headers=auth)
    if r.status_code != 201:
        raise RuntimeError(f"starting a run answered {r.status_code}: {r.text[:200]}")
    return str(r.json()["run_id"])


async def flood(replicas: list[Server], auth: dict[str, str], prefix: str
                ) -> tuple[int, list[float], int]:
    """Send at RATE until one second past the next window boundary, then for ROUNDS rounds:
    (admitted in the first minute, admitted per minute in each round, refusals seen)."""
    async with httpx.AsyncClient(timeout=10) as client:
        run_id = await start_run(client, replicas[0].url, auth, prefix)
        url = f"{prefix}metrics/{run_id}/"
        body = report_body()
        # The run started, the budget is fresh (a new key prefix): the first request of the
        # budget is the start above. Measured: from 1 s into the second window boundary ahead,
        # so that one whole window (saturated) precedes the measured one.
        start = time.time()
        boundary = (math.floor(start / 60) + 2) * 60 + 1.0
        end = boundary + ROUND_SECONDS * ROUNDS
        admitted: list[float] = [start]  # the start of the run
        refused = 0
        sent = 0
        while True:
            due = start + sent / RATE
            now = time.time()
            if due >= end:
                break
            if due > now:
                await asyncio.sleep(due - now)
            base = replicas[sent % len(replicas)].url
            sent += 1
            r = await client.patch(base + url, json=body, headers=auth)
            if r.status_code == 204:
                admitted.append(time.time())
            elif r.status_code == 429:
                refused += 1
            else:
                raise RuntimeError(f"report answered {r.status_code}: {r.text[:200]}")
    first_minute = sum(1 for t in admitted if t < start + 60)
    rounds = []
    for n in range(ROUNDS):
        lo = boundary + n * ROUND_SECONDS
        count = sum(1 for t in admitted if lo <= t < lo + ROUND_SECONDS)
        rounds.append(count * 60 / ROUND_SECONDS)
    return first_minute, rounds, refused


def mean_latency_ms(client: httpx.Client, url: str, auth: dict[str, str],
                    body: dict) -> float:
    began = time.perf_counter()
    for _ in range(COST_REQUESTS):
        r = client.patch(url, json=body, headers=auth)
        if r.status_code != 204:
            raise RuntimeError(f"report answered {r.status_code}: {r.text[:200]}")
    return (time.perf_counter() - began) / COST_REQUESTS * 1000


def cost(shared: Server, memory: Server, auth: dict[str, str], prefix: str):
    with httpx.Client(timeout=10) as client:
        urls = {}
        for s in (shared, memory):
            r = client.post(f"{s.url}{prefix}metrics/", json={}, headers=auth)
            urls[s.name] = f"{s.url}{prefix}metrics/{r.json()['run_id']}/"
        body = report_body()
        for s in (shared, memory):  # warm: token cache, connections
            mean_latency_ms(client, urls[s.name], auth, body)
        return interleave(lambda n: mean_latency_ms(client, urls[shared.name], auth, body),
                          lambda n: mean_latency_ms(client, urls[memory.name], auth, body),
                          COST_ROUNDS, higher_is_better=False)


def row(measure: str, goal: str, comparison, rounds: list[float], unit: str,
        median_value: float | None = None, verdict: str | None = None) -> dict:
    spread = comparison.spread
    return {"measure": measure, "goal": goal,
            "median": median_value if median_value is not None else comparison.median,
            "spread": spread if math.isfinite(spread) else 0.0,
            "verdict": verdict or comparison.verdict, "rounds": rounds, "unit": unit}


async def main_async(args: argparse.Namespace) -> list[dict]:
    await recreate_database()
    servers: list[Server] = []
    logs = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    run_prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    try:
        token, org, cid = await bootstrap()
        auth = {"Authorization": f"Bearer {token}"}
        prefix = f"/api/v1/organisations/{org}/integrations/warehouse-connections/{cid}/"
        backends = args.backends
        replicas = {b: [server(f"{b}-{i}", b, LIMIT, run_prefix + "flood:", logs)
                        for i in (1, 2)] for b in backends}
        cost_servers = {b: server(f"{b}-cost", b, 10_000_000, run_prefix + "cost:", logs)
                        for b in (*backends, "memory")}
        servers = [*(s for group in replicas.values() for s in group), *cost_servers.values()]
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready()
        rows = []
        if not args.skip_flood:
            print(f"flooding at {RATE:.0f}/s against {LIMIT}/min, {len(backends)} backend(s) "
                  "at once, until 1 s past the second minute boundary ahead, then "
                  f"{ROUNDS} x {ROUND_SECONDS:.0f} s …", flush=True)
            results = await asyncio.gather(*(flood(replicas[b], auth, prefix)
                                             for b in backends))
            for backend, (first, rates, refused) in zip(backends, results, strict=True):
                closeness = of_ratios([r / LIMIT for r in rates], goal=0.95)
                verdict = closeness.verdict
                if verdict == "PASS" and closeness.median > 1.05:
                    verdict = "MISS"
                rows.append(row(f"admitted/min, {backend}, 2 replicas", "600 ± 5 %",
                                of_ratios(rates), rates, "requests/min",
                                median_value=median(rates), verdict=verdict))
                rows.append(row(f"admitted in a new token's first minute, {backend}",
                                "info (new key: < 2 x)", of_ratios([float(first)]),
                                [float(first)], "requests", verdict="info"))
                print(f"  {backend}: {refused} refused", flush=True)
        for backend in backends:
            comparison = await asyncio.to_thread(
                cost, cost_servers[backend], cost_servers["memory"], auth, prefix)
            rows.append(row(f"report latency, {backend} check / memory check", "info",
                            comparison, comparison.ratios, "ratio"))
        return rows
    finally:
        for s in servers:
            s.stop()
        await recreate_database(drop_only=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ratelimit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="postgres,redis",
                        type=lambda s: [b for b in s.split(",") if b],
                        help="shared backends to measure (postgres, redis)")
    parser.add_argument("--skip-flood", action="store_true",
                        help="only the cost of the check (about a minute)")
    parser.add_argument("--time-limit", type=float, default=600,
                        help="hard stop in seconds (default 600)")
    args = parser.parse_args(argv)
    try:
        rows = asyncio.run(asyncio.wait_for(main_async(args), args.time_limit))
    except TimeoutError:
        print(f"stopped after {args.time_limit:.0f} s", file=sys.stderr)
        return 1
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows}, indent=2))
    width = max(len(r["measure"]) for r in rows)
    print(f"{'measure':{width}}  {'goal':18} {'median':>9} {'spread':>7}  verdict  rounds")
    for r in rows:
        rounds = " ".join(f"{x:.0f}" if x > 10 else f"{x:.2f}" for x in r["rounds"])
        print(f"{r['measure']:{width}}  {r['goal']:18} {r['median']:9.2f} "
              f"{r['spread'] * 50:6.1f}%  {r['verdict']:8} {rounds}")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
