"""`python -m bench.telemetry10m` (`make bench-10m`): telemetry latency at 10,000,000 runs of
history against 10,000, telemetry cache off, p50 and p99 (goal: 10M / 10k <= 1.3 each).

Its own database (`runwatch_bench10m`, dropped at the end on every exit unless --keep-db):
migrated with runwatch's migrations, the organisation, tokens and connections created through
runwatch's resolvers (`bench.seed.bootstrap`), then the two histories seeded with the harness's
own `INSERT ... SELECT generate_series` (`bench.seed.HISTORY_SQL`: every column runwatch's ORM
fills; one run a minute ending now), the large one in blocks of a million so that progress
shows and the time limit is checked between blocks; the hourly roll-ups and the pipelines'
roll-up columns as the harness fills them; VACUUM (ANALYZE) and CHECKPOINT. Then one runwatch
(`RUNWATCH_TELEMETRY_CACHE=0`: every read computes from the database) and wrk on 127.0.0.1,
`GET .../telemetry/` with 4 connections, 10M and 10k alternating in short rounds
(bench/abab.py). Reports the database's disk use. Writes `bench/results/telemetry10m.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench import abab, seed
from bench.procs import HOST, ROOT, BenchError, Server, WrkResult, ensure_wrk, run_wrk

DB_NAME = "runwatch_bench10m"
DSN = f"postgres://postgres@{HOST}:5432/{DB_NAME}"
LARGE = 10_000_000
SMALL = seed.SMALL_HISTORY
BLOCK = 1_000_000
GOAL = 1.3
RESULTS = ROOT / "bench" / "results"


class HardTimeout(Exception):
    pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry10m", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=LARGE,
                        help="runs of the large history (default 10,000,000)")
    parser.add_argument("--rounds", type=int, default=6, help="ABAB rounds")
    parser.add_argument("--duration", type=float, default=3, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1, help="warm-up seconds before each")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument("--time-limit", type=int, default=3000,
                        help="hard stop, seconds (the database is dropped anyway)")
    parser.add_argument("--keep-db", action="store_true", help=f"keep {DB_NAME} at the end")
    opts = parser.parse_args(argv)
    if opts.runs < SMALL or opts.rounds < 1 or opts.duration < 1 or opts.warmup < 1:
        parser.error("--runs must be at least 10,000; --rounds, --duration, --warmup >= 1")
    return opts


def log(message: str, started: float = time.monotonic()) -> None:
    print(f"[{time.monotonic() - started:6.0f}s] {message}", flush=True)


async def _admin(sql: str) -> None:
    admin = await asyncpg.connect(seed.ADMIN_DSN, timeout=10)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


def blocks(total: int, size: int = BLOCK) -> list[tuple[int, int]]:
    """(minute offset, count) blocks covering minutes 0..total-1 back from now."""
    return [(m, min(size, total - m)) for m in range(0, total, size)]


async def setup(large: int, deadline: float) -> dict[str, Any]:
    """Create, migrate, bootstrap and seed; returns what the measurement needs."""
    from tortoise import Tortoise

    from runwatch.db import apply_migrations, tortoise_config
    from runwatch.settings import normalise_database_url

    await _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{DB_NAME}"')
    url = normalise_database_url(DSN)
    await apply_migrations(url)
    await Tortoise.init(config=tortoise_config(url))
    try:
        org, _report, read, connections, pipelines = await seed.bootstrap()
    finally:
        await Tortoise.close_connections()
    now = datetime.now(UTC)
    conn = await asyncpg.connect(DSN, timeout=10)
    timings: dict[str, float] = {}
    try:
        await conn.execute("SET synchronous_commit = off; SET TIME ZONE 'UTC'")
        t0 = time.monotonic()
        # The small history first (ids 1..10k), then the large one past it. HISTORY_SQL numbers
        # a block's runs backwards from its first id; block k of the large history (minutes
        # m..m+n-1 back from now) gets the ids that keep the whole history in time order.
        await conn.execute(seed.HISTORY_SQL, 1, now, SMALL, org, pipelines["small"])
        first = SMALL + 1
        for m, n in blocks(large):
            if time.monotonic() > deadline:
                raise HardTimeout(f"seeding not done by the time limit ({m:,} runs seeded)")
            at = await conn.fetchval("SELECT $1::timestamptz - make_interval(mins => $2::int)",
                                     now, m)
            await conn.execute(seed.HISTORY_SQL, first + large - m - n, at, n, org,
                               pipelines["large"])
            log(f"  seeded {m + n:,} of {large:,} runs ({time.monotonic() - t0:.0f}s)")
        timings["seed runs"] = time.monotonic() - t0
        t0 = time.monotonic()
        history = [pipelines["small"], pipelines["large"]]
        await conn.execute(seed.HOURLY_SQL, history)
        await seed.seed_pipeline_rollups(conn, history)
        await conn.execute("SELECT setval(pg_get_serial_sequence('run', 'id'), $1)",
                           first + large)
        timings["roll-ups"] = time.monotonic() - t0
        t0 = time.monotonic()
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
        timings["vacuum + analyze + checkpoint"] = time.monotonic() - t0
        counts = {row["pipeline_id"]: row["n"] for row in await conn.fetch(
            "SELECT pipeline_id, count(*) AS n FROM run GROUP BY 1")}
        disk = await conn.fetchval("SELECT pg_database_size(current_database())")
        run_size = await conn.fetchval("SELECT pg_total_relation_size('run')")
    finally:
        await conn.close()
    if counts.get(pipelines["large"]) != large or counts.get(pipelines["small"]) != SMALL:
        raise BenchError(f"seeded {counts} runs, expected {large:,} and {SMALL:,}")
    return {"organisation_id": org, "read_token": read, "connections": connections,
            "timings": timings, "disk_bytes": disk, "run_table_bytes": run_size}


def measure(server: Server, path: str, token: str, opts: argparse.Namespace,
            label: str) -> WrkResult:
    kwargs: dict[str, Any] = {"connections": opts.connections,
                              "headers": [f"Authorization: Bearer {token}"]}
    run_wrk(f"{label} warmup", server.url + path, duration=opts.warmup, **kwargs)
    result = run_wrk(label, server.url + path, duration=opts.duration, **kwargs)
    server.check_alive()
    if not result.valid:
        raise BenchError(f"{label}: {result.summary()} (non-2xx or socket errors)")
    return result


def row(measure_name: str, comparison: abab.Comparison) -> dict[str, Any]:
    def num(x: float) -> float | None:
        return round(x, 4) if math.isfinite(x) else None

    return {"measure": measure_name, "goal": f"<= {GOAL:.2f}", "median": num(comparison.median),
            "spread": num(comparison.spread), "verdict": comparison.verdict,
            "rounds": [num(r) for r in comparison.ratios], "unit": ""}


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    deadline = started + opts.time_limit - 120  # leaves time to measure and drop
    server: Server | None = None
    touched = False
    code = 2

    def on_alarm(signum: int, frame: Any) -> None:
        raise HardTimeout(f"hard time limit of {opts.time_limit}s reached")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, h) for s, h in
                ((signal.SIGALRM, on_alarm), (signal.SIGTERM, on_term))}
    signal.alarm(opts.time_limit)
    try:
        log(f"telemetry at {opts.runs:,} runs vs {SMALL:,}, cache off: {opts.rounds} rounds x "
            f"({opts.warmup:g}s warm-up + {opts.duration:g}s), {opts.connections} connections, "
            f"hard limit {opts.time_limit}s")
        log(f"load generator: {ensure_wrk()}")
        log(f"database {DB_NAME}: create, migrate, seed")
        touched = True
        fx = asyncio.run(setup(opts.runs, deadline))
        for name, seconds in fx["timings"].items():
            log(f"  {name}: {seconds:.1f}s")
        log(f"  disk: database {fx['disk_bytes'] / 2**30:.2f} GiB, of which table run with "
            f"its indexes {fx['run_table_bytes'] / 2**30:.2f} GiB")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RUNWATCH_", "BASELINE_", "BENCH_")) and k != "DATABASE_URL"}
        server = Server("telemetry10m", "runwatch.app:create_app", {
            **env, "DATABASE_URL": DSN, "RUNWATCH_TELEMETRY_CACHE": "0",
            "RUNWATCH_RATE_LIMIT_PER_MINUTE": str(10**9)}, RESULTS / "logs")
        server.start()
        server.wait_ready("/health")
        prefix = (f"/api/v1/organisations/{fx['organisation_id']}/integrations/"
                  "warehouse-connections")
        paths = {size: f"{prefix}/{fx['connections'][role]}/telemetry/"
                 for size, role in (("large", "large"), ("small", "small"))}
        results: dict[str, list[WrkResult]] = {"large": [], "small": []}

        def side(size: str) -> Any:
            def run(n: int) -> float:
                result = measure(server, paths[size], fx["read_token"], opts,
                                 f"r{n + 1} {size}")
                results[size].append(result)
                log(f"r{n + 1} {'10M' if size == 'large' else '10k':<4} {result.summary()}")
                return result.p50_ms
            return run

        p50 = abab.interleave(side("large"), side("small"), opts.rounds, goal=GOAL,
                              higher_is_better=False)
        p99 = abab.of_ratios([a.p99_ms / b.p99_ms if b.p99_ms else math.nan
                              for a, b in zip(results["large"], results["small"], strict=True)],
                             goal=GOAL, higher_is_better=False)
        label = f"{opts.runs / 1e6:g}M" if opts.runs >= 1_000_000 else f"{opts.runs:,}"
        rows = [row(f"telemetry p50 {label}/10k, no cache", p50),
                row(f"telemetry p99 {label}/10k, no cache", p99)]
        print()
        print(f"{'measure':<32} {'goal':<8} {'median':>7} {'spread':>7}  verdict   rounds")
        for r, c in zip(rows, (p50, p99), strict=True):
            spread = f"{c.spread * 100:.0f}%" if math.isfinite(c.spread) else "-"
            print(f"{r['measure']:<32} {r['goal']:<8} {c.median:>7.2f} {spread:>7}  "
                  f"{c.verdict:<9} {' '.join(f'{x:.2f}' for x in c.ratios)}")
        print(f"disk: {fx['disk_bytes'] / 2**30:.2f} GiB database "
              f"({fx['run_table_bytes'] / 2**30:.2f} GiB table run with its indexes)")
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / "telemetry10m.json"
        out.write_text(json.dumps({
            "rows": rows, "runs": opts.runs, "disk_bytes": fx["disk_bytes"],
            "run_table_bytes": fx["run_table_bytes"], "setup_seconds": fx["timings"],
            "absolute_ms": {size: [{"p50": r.p50_ms, "p99": r.p99_ms, "rps": r.rps}
                                   for r in rs] for size, rs in results.items()},
        }, indent=2) + "\n")
        print(f"written to {out.relative_to(ROOT)}")
        code = 1 if any(r["verdict"] == "MISS" for r in rows) else 0
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr, flush=True)
    except HardTimeout as exc:
        print(f"\nBENCHMARK STOPPED: {exc}", file=sys.stderr, flush=True)
        code = 3
    except KeyboardInterrupt:
        code = 130
    finally:
        signal.alarm(0)
        if server is not None:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if touched and not opts.keep_db:
            with contextlib.suppress(Exception):
                asyncio.run(asyncio.wait_for(_admin(
                    f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'), 60))
                log(f"database {DB_NAME} dropped")
    return code


if __name__ == "__main__":
    sys.exit(main())
