"""Live updates at scale: 1,000 subscriptions (graphql-transport-ws) over 2 replicas on one
PostgreSQL database.

    python -m bench.live [--subscriptions 1000] [--rounds 5] [--time-limit 300]

(a) database transactions per second per process while no run changes (goal <= 1),
(b) one run changing 10 times a second: update latency to every watcher, p99 per round
    (goal <= 250 ms),
(c) server memory per open subscription: RSS growth of both servers / subscriptions
    (goal <= 50 KB).

Loopback only; a hard time limit; the servers are stopped and the database dropped on any
exit. Writes `bench/results/live.json`.
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
from pathlib import Path

import asyncpg
import httpx
from websockets.asyncio.client import connect

from bench.abab import of_ratios
from bench.procs import HOST, ROOT, Server
from runwatch.ws_protocol import UVICORN_WS

ADMIN_URL = os.environ.get("RUNWATCH_BENCH_POSTGRES_URL",
                           "postgres://postgres@127.0.0.1:5432/postgres")
RESULTS = ROOT / "bench" / "results" / "live.json"

PIPELINE = """mutation($name: String!) { createPipeline(input: {name: $name}) {
  __typename ... on PipelineSuccess { pipeline { id } } } }"""
CREATE_RUN = """mutation($p: ID!) { createRun(input: {pipelineId: $p, status: RUNNING}) {
  __typename ... on RunSuccess { run { id } } } }"""
SUBSCRIBE = """subscription($id: ID!) { runUpdates(id: $id) {
  run { status } newLogLines { seq message } } }"""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def commits(dbname: str) -> int:
    conn = await asyncpg.connect(ADMIN_URL)  # the admin database: asking does not count
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
            dbname)
    finally:
        await conn.close()


async def seed(url: str) -> str:
    """The schema, an organisation and an admin token; returns the token."""
    from tortoise import Tortoise

    from runwatch.db import apply_migrations, tortoise_config
    from runwatch.resolvers.organisations import create_organisation
    from runwatch.resolvers.tokens import create_token

    await apply_migrations(url)
    await Tortoise.init(config=tortoise_config(url))
    try:
        org = await create_organisation(name="bench-live")
        return (await create_token(organisation_id=org.id, scopes="admin")).token
    finally:
        await Tortoise.close_connections()


class Watcher:
    """One socket with one subscription; records the latency of every log line it gets."""

    def __init__(self, url: str, token: str, run_id: str, sent: dict[str, float]) -> None:
        self.url, self.token, self.run_id, self.sent = url, token, run_id, sent
        self.ready = asyncio.Event()
        self.latencies: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async with connect(self.url, subprotocols=["graphql-transport-ws"], open_timeout=30,
                           compression=None, max_queue=None) as ws:
            await ws.send(json.dumps({"type": "connection_init",
                                      "payload": {"Authorization": f"Bearer {self.token}"}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": SUBSCRIBE, "variables": {"id": self.run_id}}}))
            async for raw in ws:
                now = time.monotonic()
                message = json.loads(raw)
                if message.get("type") != "next":
                    raise RuntimeError(f"subscription answered {message}")
                self.ready.set()
                for line in message["payload"]["data"]["runUpdates"]["newLogLines"]:
                    sent = self.sent.get(line["message"])
                    if sent is not None:
                        self.latencies.append(now - sent)


def p99(values: list[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


async def scenario(args: argparse.Namespace, log_dir: Path) -> list[dict]:
    dbname = f"runwatch_bench_live_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    await admin.close()
    url = ADMIN_URL.rsplit("/", 1)[0].replace("postgres://", "asyncpg://") + f"/{dbname}"
    servers: list[Server] = []
    watchers: list[Watcher] = []
    try:
        token = await seed(url)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url,
               "RUNWATCH_WORKERS_IN_SERVE": "0", "RUNWATCH_RATE_LIMIT_PER_MINUTE": "0",
               "RUNWATCH_WS_MAX_SOCKETS_PER_TOKEN": str(args.subscriptions + 10),
               "RUNWATCH_WS_MAX_SUBSCRIPTIONS_PER_TOKEN": str(args.subscriptions + 10)}
        servers = [Server(f"live-{n}", "runwatch.app:create_app", env, log_dir,
                          extra_args=("--ws", UVICORN_WS,
                                      "--ws-per-message-deflate", "false"))
                   for n in range(2)]
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=servers[0].url, headers=headers,
                                     timeout=10) as http:
            r = await http.post("/graphql", json={"query": PIPELINE,
                                                  "variables": {"name": "live"}})
            pid = r.json()["data"]["createPipeline"]["pipeline"]["id"]
            r = await http.post("/graphql", json={"query": CREATE_RUN, "variables": {"p": pid}})
            run_id = r.json()["data"]["createRun"]["run"]["id"]

            await asyncio.sleep(1)
            rss_before = [rss_kb(s.proc.pid) for s in servers]  # type: ignore[union-attr]
            sent: dict[str, float] = {}
            for n in range(args.subscriptions):
                server = servers[n % 2]
                ws_url = server.url.replace("http://", "ws://") + "/graphql"
                watcher = Watcher(ws_url, token, run_id, sent)
                watcher.task = asyncio.create_task(watcher.run())
                watchers.append(watcher)
                if n % 50 == 49:
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in watchers)), 120)
            failed = [w.task for w in watchers if w.task is not None and w.task.done()]
            if failed:
                raise RuntimeError(f"{len(failed)} subscriptions ended: "
                                   f"{failed[0].exception()!r}")
            await asyncio.sleep(2)
            rss_after = [rss_kb(s.proc.pid) for s in servers]  # type: ignore[union-attr]
            memory = [(a - b) / (args.subscriptions / 2) for a, b in zip(rss_after, rss_before,
                                                                        strict=True)]
            print(f"RSS before {rss_before} KB, after {rss_after} KB")

            # (a) idle: no run changes
            idle: list[float] = []
            # PostgreSQL 15 flushes an idle backend's statistics up to 10 s late: wait for
            # the set-up's to land before counting.
            await asyncio.sleep(11)
            for _ in range(args.rounds):
                before = await commits(dbname)
                started = time.monotonic()
                await asyncio.sleep(args.idle_seconds)
                delta = await commits(dbname) - before
                idle.append(delta / (time.monotonic() - started) / len(servers))

            # (b) one run changing 10 times a second, alternately through each replica
            latency: list[float] = []
            counter = 0
            for round_ in range(args.rounds + 1):  # the first round warms up, not counted
                for w in watchers:
                    w.latencies.clear()
                deadline = time.monotonic() + args.change_seconds
                tick = time.monotonic()
                while time.monotonic() < deadline:
                    counter += 1
                    key = f"m{counter}"
                    sent[key] = time.monotonic()
                    target = servers[counter % 2].url
                    r = await http.patch(f"{target}/api/elt/runs/{run_id}",
                                         json={"appendLog": {"message": key}})
                    r.raise_for_status()
                    tick += 0.1
                    await asyncio.sleep(max(0.0, tick - time.monotonic()))
                await asyncio.sleep(1.5)  # the last updates arrive
                values = [x for w in watchers for x in w.latencies]
                expected = args.subscriptions * int(args.change_seconds * 10)
                print(f"  round: {len(values)} line deliveries (about {expected} expected), "
                      f"p99 {p99(values) * 1000:.0f} ms")
                if round_:
                    latency.append(p99(values) * 1000)
    finally:
        for w in watchers:
            if w.task is not None:
                w.task.cancel()
        await asyncio.gather(*(w.task for w in watchers if w.task), return_exceptions=True)
        for server in servers:
            server.stop()
        admin = await asyncpg.connect(ADMIN_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()

    rows = []
    for measure, goal, values, unit, limit in (
        ("(a) idle DB transactions per second per process", "<= 1", idle, "xact/s", 1.0),
        ("(b) update latency p99 to every watcher, 10 changes/s", "<= 250 ms", latency, "ms",
         250.0),
        ("(c) server memory per open subscription", "<= 50 KB", memory, "KB", 50.0),
    ):
        comparison = of_ratios(values, goal=limit, higher_is_better=False)
        verdict = comparison.verdict
        if verdict == "unstable" and all(v <= limit for v in values):
            verdict = "PASS (every round; spread > 15 %)"
        rows.append({"measure": measure, "goal": goal, "median": comparison.median,
                     "spread": comparison.spread, "verdict": verdict,
                     "rounds": [round(v, 3) for v in values], "unit": unit})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=8.0)
    parser.add_argument("--change-seconds", type=float, default=3.0)
    parser.add_argument("--time-limit", type=float, default=300.0)
    args = parser.parse_args(argv)
    assert HOST == "127.0.0.1"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            rows = asyncio.run(asyncio.wait_for(scenario(args, Path(tmp)), args.time_limit))
        except TimeoutError:
            print(f"bench.live: stopped at the time limit ({args.time_limit:.0f} s)",
                  file=sys.stderr)
            return 2
    print(f"\nlive updates: {args.subscriptions} subscriptions over 2 replicas (PostgreSQL)")
    for row in rows:
        spread = row["spread"]
        spread_text = f"±{spread * 50:.0f}%" if math.isfinite(spread) else "-"
        print(f"{row['measure']:<56} {row['median']:>9.2f} {row['unit']:<7} {spread_text:>6}"
              f"  goal {row['goal']:<10} {row['verdict']}  rounds {row['rounds']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows}, indent=2, allow_nan=True))
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
