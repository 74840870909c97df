"""`serve --workers 2` against one process, on PostgreSQL: `python -m bench.scale`.

Both servers run at once on one fresh database (loopback only), each started the way an
operator would (`runwatch serve --workers N`, background workers off so that only the API is
measured); wrk loads them in turn, in interleaved rounds (bench/abab.py). The request is an
authenticated REST read of the warehouse-connection contract (a token look-up, a scoped query,
JSON out). Besides requests a second, each round reports the server's CPU time per request
(every process of the server's tree): on a 2-core machine wrk shares the cores with the
servers, so the throughput ratio is bounded by the machine, not only by the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from statistics import median

from bench import seed, sqlcheck
from bench.abab import interleave
from bench.harness import iso_z
from bench.procs import HOST, ROOT, BenchError, Server, ensure_wrk, run_wrk

ROUNDS = int(os.environ.get("BENCH_SCALE_ROUNDS", "6"))
SECONDS = float(os.environ.get("BENCH_SCALE_SECONDS", "5"))
WARMUP = 1.0
CONNECTIONS = int(os.environ.get("BENCH_SCALE_CONNECTIONS", "32"))
GOAL = 1.5
RESULTS = ROOT / "bench" / "results" / "scale.json"
LUA_SEQUENTIAL = ROOT / "bench" / "sequential_ids.lua"


class Serve(Server):
    def __init__(self, name: str, workers: int, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(name, "", env, log_dir)
        self.workers = workers

    def command(self) -> list[str]:
        return [sys.executable, "-m", "runwatch.cli", "serve", "--host", HOST, "--port",
                str(self.port), "--workers", str(self.workers), "--graceful-timeout", "2"]

    def tree_cpu_seconds(self) -> float:
        """CPU time of the server and all its descendants (Linux /proc)."""
        if self.proc is None:
            return 0.0
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry.name)] = int(fields[1])
                except (OSError, IndexError, ValueError):
                    continue
        tree, todo = set(), [self.proc.pid]
        while todo:
            pid = todo.pop()
            tree.add(pid)
            todo += [child for child, parent in parents.items() if parent == pid]
        from bench.procs import process_cpu_seconds

        return sum(process_cpu_seconds(pid) or 0.0 for pid in tree)


async def _seed() -> seed.Fixture:
    from tortoise import Tortoise

    try:
        # the harness's fixture: runs pre-created per wrk invocation ("baseline" slots serve
        # the one-process server here), so every PATCH is a real first report
        return await seed.setup(rounds=ROUNDS, warmup=WARMUP, duration=SECONDS,
                                groups=("report",))
    finally:
        await Tortoise.close_connections()


def main() -> int:
    ensure_wrk()
    servers: list[Serve] = []
    try:
        fixture = asyncio.run(_seed())
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": fixture.database_url,
               "RUNWATCH_WORKERS_IN_SERVE": "0", "RUNWATCH_RATE_LIMIT_PER_MINUTE": "0"}
        log_dir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
        servers = [Serve("two", 2, env, log_dir), Serve("one", 1, env, log_dir)]
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(timeout=60)
        org, cid = fixture.organisation_id, fixture.connections["rest"]
        path = (f"/api/v1/organisations/{org}/integrations/warehouse-connections/{cid}"
                "/metrics/{ID}/")
        body = json.dumps(sqlcheck.report_body(iso_z(fixture.now - timedelta(minutes=30))))
        slots = {"two": "runwatch", "one": "baseline"}
        cpu: dict[str, list[float]] = {"two": [], "one": []}

        def measure(server: Serve):  # type: ignore[no-untyped-def]
            def run(round_no: int) -> float:
                server.check_alive()
                result = None
                for phase, seconds in (("warmup", WARMUP), ("measure", SECONDS)):
                    ids = fixture.ranges[f"rest-{slots[server.name]}-r{round_no + 1}-{phase}"]
                    before = server.tree_cpu_seconds()
                    result = run_wrk(
                        f"{server.name} {round_no} {phase}", server.url + "/",
                        duration=seconds, connections=CONNECTIONS, script=LUA_SEQUENTIAL,
                        script_env={"BENCH_METHOD": "PATCH", "BENCH_PATH": path,
                                    "BENCH_BODY": body, "BENCH_TOKEN": fixture.report_token,
                                    "BENCH_FIRST_ID": str(ids.first),
                                    "BENCH_ID_COUNT": str(ids.count), "BENCH_CYCLE": "0",
                                    "BENCH_DELAY_MS": "0"})
                assert result is not None
                if not result.valid:
                    raise BenchError(f"{server.name}: {result.summary()} {result.problems}")
                cpu[server.name].append(
                    (server.tree_cpu_seconds() - before) * 1000 / max(1, result.requests))
                print(f"  round {round_no} {server.name:>3}: {result.summary()}", flush=True)
                return result.rps
            return run

        rps: dict[str, list[float]] = {"two": [], "one": []}

        def recorded(name: str, server: Serve):  # type: ignore[no-untyped-def]
            run = measure(server)

            def go(n: int) -> float:
                value = run(n)
                rps[name].append(value)
                return value
            return go

        comparison = interleave(recorded("two", servers[0]), recorded("one", servers[1]),
                                ROUNDS, goal=GOAL)
        cpu_ratio = interleave(lambda n: cpu["two"][n], lambda n: cpu["one"][n], ROUNDS)
        rows = [
            {"measure": "REST report req/s, --workers 2 / 1 process", "goal": f">= {GOAL}x",
             "median": comparison.median, "spread": comparison.spread,
             "verdict": comparison.verdict, "rounds": comparison.ratios, "unit": "x"},
            {"measure": "server CPU per request, --workers 2 / 1 process", "goal": "info",
             "median": cpu_ratio.median, "spread": cpu_ratio.spread, "verdict": "info",
             "rounds": cpu_ratio.ratios, "unit": "x"},
        ]
        for name in ("two", "one"):
            mid = median(cpu[name])
            rows.append({"measure": f"server CPU ms per request ({name})", "goal": "info",
                         "median": mid, "spread": (max(cpu[name]) - min(cpu[name])) / mid,
                         "verdict": "info", "rounds": cpu[name], "unit": "ms"})
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"rows": rows}, indent=2))
        print(f"\n{'measure':<52} {'median':>8} {'spread':>7}  verdict")
        for row in rows:
            print(f"{row['measure']:<52} {row['median']:8.2f} {row['spread']:7.2f}  "
                  f"{row['verdict']}")
        print(f"\nreq/s two: {[round(v) for v in rps['two']]}, one: "
              f"{[round(v) for v in rps['one']]}; cores: {os.cpu_count()} shared with wrk")
        return 0
    except BenchError as exc:
        print(f"bench.scale: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            server.stop()
        asyncio.run(seed.drop_database())


if __name__ == "__main__":
    sys.exit(main())
