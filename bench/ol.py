"""OpenLineage ingestion against the Watcher's own start/end of an execution.

One runwatch (uvicorn, one worker, a fresh embedded SQLite or `--postgres`) on loopback; one
client sends, alternately in ABAB rounds (`bench/abab.py`):

- A: a run through OpenLineage: START then COMPLETE (one input, one output with
  `outputStatistics`) to `POST /api/v1/lineage`;
- B: the same run through the Watcher: `POST /start_pipeline_execution` then
  `POST /end_pipeline_execution` (the same lifecycle, no lineage).

The figure is A's runs per second over B's, per round (goal: at least 0.5: an event also
finds its job, its run by UUID, its datasets and its edges). Then a read: `GET
/api/v1/lineage` around the job, for information (reads per second, against the same
round's Watcher `GET /pipeline/{id}` reads). Bounded: `--rounds` (default 8) rounds of
`--runs` (default 40) runs; a hard stop of `--time-limit` seconds (default 240).

    python -m bench.ol [--rounds N] [--runs N] [--postgres] [--time-limit S]

Writes bench/results/ol.json for `make bench`.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.abab import Comparison, interleave
from bench.harness import RUNWATCH_BENCH_SETTINGS, base_env
from bench.procs import ROOT, Server

RESULTS = ROOT / "bench" / "results" / "ol.json"
PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.30.0/client/python"
PG = "postgres://db:5432"


def ol_event(kind: str, run_id: str, at: datetime) -> dict[str, Any]:
    return {"eventType": kind, "eventTime": at.isoformat(), "producer": PRODUCER,
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json"
                         "#/definitions/RunEvent",
            "run": {"runId": run_id}, "job": {"namespace": "bench", "name": "ol_job"},
            "inputs": [{"namespace": PG, "name": "shop.public.orders"}],
            "outputs": [{"namespace": PG, "name": "shop.mart.daily",
                         "outputFacets": {"outputStatistics": {"rowCount": 1000}}}]}


def setup(env: dict[str, str]) -> str:
    """Migrate the database and make an organisation with an admin token (the CLI's way)."""
    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "runwatch.cli", *args], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise SystemExit(f"runwatch {' '.join(args)}: {out.stderr[-2000:]}")
        return out.stdout.strip()

    cli("migrate")
    org = cli("org", "create", "bench-ol").split()[-1]
    return cli("token", "create", "--org", org, "--scope", "admin").splitlines()[-1].strip()


def check(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise SystemExit(f"{response.request.method} {response.request.url}: "
                         f"{response.status_code} {response.text[:300]}")
    return response


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ol")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--time-limit", type=float, default=240)
    opts = parser.parse_args(argv)

    def timed_out(*_: Any) -> None:
        raise SystemExit(f"bench.ol: the time limit ({opts.time_limit:.0f} s) was reached")

    signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(int(opts.time_limit))
    with tempfile.TemporaryDirectory(prefix="bench-ol-") as tmp:
        db_url = f"sqlite://{tmp}/ol.db"
        pg_name = None
        if opts.postgres:
            import asyncio

            pg_name = f"runwatch_bench_ol_{uuid.uuid4().hex[:8]}"

            async def create() -> None:
                conn = await asyncpg.connect("postgres://postgres@127.0.0.1:5432/postgres")
                await conn.execute(f'CREATE DATABASE "{pg_name}"')
                await conn.close()

            asyncio.run(create())
            db_url = f"postgres://postgres@127.0.0.1:5432/{pg_name}"
        env = {**base_env(), **RUNWATCH_BENCH_SETTINGS, "DATABASE_URL": db_url,
               "RUNWATCH_WORKERS_IN_SERVE": "0",
               "PYTHONPATH": str(ROOT)}
        token = setup(env)
        server = Server("runwatch", "runwatch.app:create_app", env, Path(tmp))
        server.start()
        try:
            server.wait_ready()
            rows = measure(server.url, token, opts)
        except SystemExit:
            print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            server.stop()
            if pg_name:
                import asyncio

                async def drop() -> None:
                    conn = await asyncpg.connect("postgres://postgres@127.0.0.1:5432/postgres")
                    await conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
                    await conn.close()

                asyncio.run(drop())
    signal.alarm(0)
    print(f"{'measure':<44} {'goal':>6} {'median':>8} {'spread':>8}  verdict  rounds")
    for row in rows:
        print(f"{row['measure']:<44} {row['goal']:>6} {row['median']:>8.2f} "
              f"{row['spread'] * 100:>7.0f}%  {row['verdict']:<8} "
              + " ".join(f"{r:.2f}" for r in row["rounds"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows}, indent=2))
    print(f"written: {RESULTS.relative_to(ROOT)}")
    return 0


def measure(base: str, token: str, opts: argparse.Namespace) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        pipeline = check(client.post("/pipeline", json={
            "name": "watcher_job", "pipeline_type_name": "bench"}), 201).json()["id"]
        now = datetime.now(UTC)

        def openlineage(_: int) -> float:
            started = time.perf_counter()
            for _ in range(opts.runs):
                run_id = str(uuid.uuid4())
                check(client.post("/api/v1/lineage", json=ol_event("START", run_id, now)), 201)
                check(client.post("/api/v1/lineage", json=ol_event(
                    "COMPLETE", run_id, now + timedelta(seconds=1))), 201)
            return opts.runs / (time.perf_counter() - started)

        def watcher(_: int) -> float:
            started = time.perf_counter()
            for _ in range(opts.runs):
                run = check(client.post("/start_pipeline_execution", json={
                    "pipeline_id": pipeline, "start_date": now.isoformat()}), 201).json()["id"]
                check(client.post("/end_pipeline_execution", json={
                    "id": run, "end_date": (now + timedelta(seconds=1)).isoformat(),
                    "completed_successfully": True, "total_rows": 1000}), 204)
            return opts.runs / (time.perf_counter() - started)

        def graph_reads(_: int) -> float:
            started = time.perf_counter()
            for _ in range(opts.runs):
                check(client.get("/api/v1/lineage", params={"nodeId": "job:bench:ol_job"}), 200)
            return opts.runs / (time.perf_counter() - started)

        def pipeline_reads(_: int) -> float:
            started = time.perf_counter()
            for _ in range(opts.runs):
                check(client.get(f"/pipeline/{pipeline}"), 200)
            return opts.runs / (time.perf_counter() - started)

        openlineage(0), watcher(0)  # warm-up
        writes = interleave(openlineage, watcher, opts.rounds, goal=0.5)
        reads = interleave(graph_reads, pipeline_reads, opts.rounds)
    return [row("OpenLineage run (START+COMPLETE) / Watcher start+end", ">=0.5", writes),
            row("GET /api/v1/lineage / Watcher GET /pipeline/{id}", "info", reads)]


def row(name: str, goal: str, comparison: Comparison) -> dict[str, Any]:
    spread = comparison.spread
    return {"measure": name, "goal": goal, "median": round(comparison.median, 4),
            "spread": round(spread, 4) if spread == spread else 0.0,
            "verdict": comparison.verdict, "rounds": [round(r, 4) for r in comparison.ratios],
            "unit": "ratio"}


if __name__ == "__main__":
    sys.exit(main())
