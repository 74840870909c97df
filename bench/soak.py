"""`python -m bench.soak`: a bounded soak of mixed traffic against runwatch on PostgreSQL.

Mode A (`--replicas 1`): one server with its background workers inside (as `runwatch serve`).
Mode B (`--replicas 2`): two API replicas (`RUNWATCH_WORKERS_IN_SERVE=0`) and one
`runwatch worker` on the same database, the client going round the replicas.

A fresh database `runwatch_soak` (dropped at the end), bootstrapped through runwatch's
resolvers (organisation, one `read,write,report` token) and seeded through its REST API
(connections, ELT pipelines and running runs, Watcher pipelines with an anomaly rule, the
organisation's webhook endpoint on a loopback receiver). Then `--minutes` of the mix of
`bench/soak_traffic.py`, every server process's RSS sampled every 10 s, a bounded drain of
the background work, and the verdict: zero 5xx, memory flat per process (mean RSS of the last
minute against minute 10, at most 2 % and a slope of at most 2 % an hour, for a soak of 20
minutes or more; against minute 2 and 10 % for a shorter one), throughput steady (every
minute from the second within ±15% of the first), the background work done (every delivery
delivered once, every task done, the reaper's probe runs timed out) and, in mode B, both
replicas served. Results: `bench/results/soak-a.json` / `soak-b.json`, server logs in
`bench/results/logs/soak-*.log`.

Everything runs on 127.0.0.1. `--time-limit` (default minutes x 60 + 180 s) is a hard stop;
every process is stopped on every exit (SIGTERM, then SIGKILL) and the database dropped.
Exit status: 0 PASS, 1 FAIL (a rule not met), 2 the soak could not run, 3 time limit reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import signal
import statistics
import sys
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.procs import HOST, ROOT, BenchError, Server, machine_busy, process_cpu_seconds
from bench.seed import ADMIN_DSN
from bench.soak_traffic import (
    DEFAULT_MIX,
    KINDS,
    WAREHOUSE,
    Mix,
    Recorder,
    SoakFixture,
    Traffic,
    percentile,
)

DB_NAME = "runwatch_soak"
DSN = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
RESULTS_DIR = ROOT / "bench" / "results"
LOG_DIR = RESULTS_DIR / "logs"
RUNWATCH_BIN = ROOT / ".venv" / "bin" / "runwatch"
TRACE_FILE = RESULTS_DIR / "soak-worker-tracemalloc.jsonl"

CONNECTIONS = 20  # the connections screen lists them all (first: 50) with their telemetry
ELT_RUNS = 32  # running runs the appends go round (past 500 lines each append drops one)
WATCHER_JOBS = 4  # Watcher pipelines, each with an anomaly rule; the rounds go round them
PROBE_RUNS = 4  # running runs on a pipeline with maxRuntimeSeconds 60, for the reaper
PROBE_MAX_RUNTIME = 60
SAMPLE_SECONDS = 10

# Memory: growth of the last minute's mean RSS over the reference minute's, and the
# least-squares slope of the per-minute means between them (extrapolated to an hour). A soak of
# 20 minutes or more starts counting at minute 10 (warm-up over: caches, pools and the
# allocator's arenas have reached their working size) and allows 2 %; a shorter one starts at
# minute 2 and allows 10 %, a smoke test rather than a verdict on leaks.
MEMORY_LONG_SOAK = 20
MEMORY_LIMIT_LONG, MEMORY_LIMIT_SHORT = 0.02, 0.10


def memory_reference_minute(minutes: int) -> int:
    return 10 if minutes >= MEMORY_LONG_SOAK else 2


def memory_limit(minutes: int) -> float:
    return MEMORY_LIMIT_LONG if minutes >= MEMORY_LONG_SOAK else MEMORY_LIMIT_SHORT
THROUGHPUT_BAND = 0.15  # every minute from the 2nd within ±15% of the 1st


class HardStop(Exception):
    pass


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="A bounded soak of mixed traffic against runwatch on PostgreSQL "
                    "(loopback only); see bench/README.md, section Soak.")
    parser.add_argument("--minutes", type=int, default=10,
                        help="minutes of traffic (at least 2; default 10)")
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1,
                        help="1: mode A, one server with its workers inside; 2: mode B, two "
                             "API replicas and one `runwatch worker` (default 1)")
    parser.add_argument("--time-limit", type=int, default=None,
                        help="hard stop in seconds (default minutes x 60 + 180)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="scale every kind's rate (and cap) by this factor (default 1: about "
                             f"{DEFAULT_MIX.target_rps():.0f} requests a second)")
    parser.add_argument("--drain-timeout", type=int, default=60,
                        help="seconds to wait after the traffic for the background work to "
                             "finish (default 60)")
    parser.add_argument("--keep-db", action="store_true", help=f"keep {DB_NAME} at the end")
    parser.add_argument("--trace-worker", type=float, default=None, metavar="SECONDS",
                        help="mode B: run the worker under tracemalloc and write the biggest "
                             "allocation differences every SECONDS to "
                             f"{TRACE_FILE.relative_to(ROOT)} (slows the worker down)")
    opts = parser.parse_args(argv)
    if opts.minutes < 2:
        parser.error("--minutes must be at least 2 (minute 2 is the memory reference)")
    if opts.rate <= 0:
        parser.error("--rate must be positive")
    if opts.time_limit is None:
        opts.time_limit = opts.minutes * 60 + 180
    return opts


# ------------------------------------------------------------------------------ processes


class Worker(Server):
    """`runwatch worker` (the console script of the venv): no port, ready when it says so.
    With `trace` (seconds), the same worker under tracemalloc (`bench/traced_worker.py`)."""

    trace: float | None = None

    def command(self) -> list[str]:
        if self.trace:
            return [sys.executable, "-m", "bench.traced_worker", str(TRACE_FILE),
                    str(self.trace)]
        return [str(RUNWATCH_BIN), "worker"]

    def wait_ready(self, path: str = "", timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if "runwatch worker on" in self.log_path.read_text(errors="replace"):
                    return
            time.sleep(0.2)
        raise BenchError(f"{self.name} did not start within {timeout:.0f}s:\n{self.log_tail()}")


def base_env() -> dict[str, str]:
    """The environment without any runwatch setting: each process gets only what it needs."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("RUNWATCH_", "BASELINE_", "BENCH_")) and k != "DATABASE_URL"}


def runwatch_env(**extra: str) -> dict[str, str]:
    return {
        **base_env(),
        "DATABASE_URL": DSN,
        # The default per-token limit (1,200 a minute) would refuse most of the soak's
        # requests, all on one token; a limit never reached keeps the limiter in the path.
        "RUNWATCH_RATE_LIMIT_PER_MINUTE": str(10**9),
        # The webhook receiver is on loopback, which runwatch refuses by default.
        "RUNWATCH_WEBHOOK_ALLOW_PRIVATE": "1",
        **extra,
    }


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_counters() -> dict[str, float] | None:
    """All CPUs' total and idle jiffies (/proc/stat) and the 1-minute load average: how busy
    the whole machine was (neighbours included), to read the latencies against."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return {"total": sum(values), "idle": values[3] + values[4],
                "load1": os.getloadavg()[0]}
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------- database


async def recreate_database() -> None:
    admin = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await admin.close()


async def drop_database() -> None:
    admin = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    finally:
        await admin.close()


async def bootstrap() -> tuple[int, str]:
    """Database, migrations, the organisation and its token, through runwatch's own code."""
    from tortoise import Tortoise

    from runwatch.db import apply_migrations, tortoise_config
    from runwatch.resolvers.organisations import create_organisation
    from runwatch.resolvers.tokens import create_token
    from runwatch.settings import normalise_database_url

    url = normalise_database_url(DSN)
    await recreate_database()
    await apply_migrations(url)
    await Tortoise.init(config=tortoise_config(url))
    try:
        org = await create_organisation(name="soak")
        issued = await create_token(organisation_id=org.id, scopes="read,write,report",
                                    name="soak")
        return org.id, issued.token
    finally:
        await Tortoise.close_connections()


@dataclass
class Seeded:
    fixture: SoakFixture
    probe_runs: list[int]
    webhook_secret: str
    timings: dict[str, float] = field(default_factory=dict)


async def seed_rest(targets: list[str], organisation_id: int, token: str,
                    receiver_url: str, watcher_jobs: int) -> Seeded:
    """Everything the traffic works on, through runwatch's REST API (round the replicas)."""
    rr = iter(range(10**9))

    async def call(client: httpx.AsyncClient, method: str, path: str, body: Any,
                   expect: tuple[int, ...]) -> Any:
        target = targets[next(rr) % len(targets)]
        response = await client.request(method, target + path, json=body)
        if response.status_code not in expect:
            raise BenchError(f"seeding: {method} {path} answered {response.status_code} "
                             f"(expected {expect}): {response.text[:500]}")
        return response.json() if response.content else None

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        connections = []
        base = WAREHOUSE.format(org=organisation_id) + "/"
        for n in range(1, CONNECTIONS + 1):
            created = await call(client, "POST", base, {
                "name": f"soak-conn-{n:02d}", "type": "postgres", "database": "analytics",
                "schema": "events", "host": "warehouse.internal"}, (201,))
            connections.append(int(created["id"]))
        pipeline = await call(client, "POST", "/api/elt/pipelines", {
            "name": "soak-elt", "description": "runwatch soak: appendLog runs"}, (201,))
        elt_runs = []
        for _ in range(ELT_RUNS):
            run = await call(client, "POST", "/api/elt/runs", {
                "pipelineId": pipeline["pipeline"]["id"], "status": "running",
                "triggeredBy": "soak"}, (201,))
            elt_runs.append(int(run["run"]["id"]))
        probe = await call(client, "POST", "/api/elt/pipelines", {
            "name": "soak-reaper-probe", "maxRuntimeSeconds": PROBE_MAX_RUNTIME,
            "description": "runwatch soak: runs the reaper must time out"}, (201,))
        probe_runs = []
        for _ in range(PROBE_RUNS):
            run = await call(client, "POST", "/api/elt/runs", {
                "pipelineId": probe["pipeline"]["id"], "status": "running"}, (201,))
            probe_runs.append(int(run["run"]["id"]))
        watcher = []
        for n in range(1, watcher_jobs + 1):
            name = f"soak-job-{n}"
            created = await call(client, "POST", "/pipeline", {
                "name": name, "pipeline_type_name": "soak",
                "pipeline_metadata": {"owner": "soak", "schedule": "continuous"}}, (201,))
            await call(client, "POST", "/anomaly_detection_rule", {
                "pipeline_id": created["id"], "metric_field": "total_rows"}, (201,))
            watcher.append((name, int(created["id"])))
        hook = await call(client, "PUT", "/api/elt/runs/webhook",
                          {"url": receiver_url + "/hook"}, (200,))
        secret = hook["webhook"]["secret"]
    fixture = SoakFixture(organisation_id=organisation_id, token=token,
                          connections=connections, elt_runs=elt_runs,
                          watcher_pipelines=watcher)
    return Seeded(fixture=fixture, probe_runs=probe_runs, webhook_secret=secret)


TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


async def db_state(conn: asyncpg.Connection, probe_runs: list[int]) -> dict[str, Any]:
    deliveries = {r["status"]: r["n"] for r in await conn.fetch(
        "SELECT status, count(*) AS n FROM webhook_delivery GROUP BY status")}
    tasks: dict[str, dict[str, int]] = defaultdict(dict)
    for r in await conn.fetch(
            "SELECT kind, status, count(*) AS n FROM task WHERE key IS NULL "
            "GROUP BY kind, status"):
        tasks[r["kind"]][r["status"]] = r["n"]
    runs = {r["status"]: r["n"] for r in await conn.fetch(
        "SELECT status, count(*) AS n FROM run GROUP BY status")}
    probes = {r["status"]: r["n"] for r in await conn.fetch(
        "SELECT status, count(*) AS n FROM run WHERE id = ANY($1::bigint[]) GROUP BY status",
        probe_runs)}
    terminal = int(await conn.fetchval(
        "SELECT count(*) FROM run WHERE status = ANY($1::text[])", list(TERMINAL)))
    return {"deliveries": deliveries, "tasks": dict(tasks), "runs": runs,
            "terminal_runs": terminal, "probe_runs": probes,
            "log_lines": int(await conn.fetchval("SELECT count(*) FROM run_log_line")),
            "database_bytes": int(await conn.fetchval(
                "SELECT pg_database_size(current_database())"))}


# ------------------------------------------------------------------------------ the soak


@dataclass
class Proc:
    name: str  # as printed: server, replica1, replica2, worker
    server: Server


async def receiver_stats(client: httpx.AsyncClient, receiver: Server) -> dict[str, Any]:
    try:
        return (await client.get(receiver.url + "/stats", timeout=5)).json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def soak(opts: argparse.Namespace, procs: list[Proc], targets: list[str],
               receiver: Server, organisation_id: int, token: str, mix: Mix) -> dict[str, Any]:
    t0 = time.monotonic()
    seeded = await seed_rest(targets, organisation_id, token, receiver.url,
                             watcher_jobs=WATCHER_JOBS)
    async with httpx.AsyncClient(timeout=10) as client:
        (await client.post(receiver.url + "/control",
                           json={"secret": seeded.webhook_secret, "reset": True})
         ).raise_for_status()
    log(f"seeded through the REST API in {time.monotonic() - t0:.1f}s: {CONNECTIONS} "
        f"connections, {ELT_RUNS} running ELT runs, {len(seeded.fixture.watcher_pipelines)} "
        f"Watcher pipelines with an anomaly rule (total_rows), {PROBE_RUNS} reaper-probe runs "
        f"(maxRuntimeSeconds {PROBE_MAX_RUNTIME}), the webhook endpoint on {receiver.url}")

    traffic = Traffic(targets, seeded.fixture, mix, minutes=opts.minutes)
    started = asyncio.Event()
    samples: list[dict[str, Any]] = []
    conn = await asyncpg.connect(DSN, timeout=10)
    sampler_client = httpx.AsyncClient()

    async def sample(t: float, k: int | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"k": k, "t": round(t, 1), "rss_kb": {}, "cpu_s": {},
                                 "machine": machine_counters()}
        for p in procs:
            pid = p.server.proc.pid if p.server.proc else None
            alive = p.server.proc is not None and p.server.proc.poll() is None
            entry["rss_kb"][p.name] = rss_kb(pid) if pid and alive else None
            entry["cpu_s"][p.name] = process_cpu_seconds(pid) if pid and alive else None
        with contextlib.suppress(asyncpg.PostgresError, OSError, asyncio.TimeoutError):
            entry["db"] = await asyncio.wait_for(db_state(conn, seeded.probe_runs), 5)
        entry["receiver"] = await receiver_stats(sampler_client, receiver)
        return entry

    async def sampler() -> None:
        await started.wait()
        base = traffic.recorder.t0
        for k in range(opts.minutes * 60 // SAMPLE_SECONDS + 1):
            delay = base + k * SAMPLE_SECONDS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            samples.append(await sample(time.monotonic() - base, k))
            for p in procs:
                if p.server.proc is None or p.server.proc.poll() is not None:
                    log(f"WARNING: {p.name} is not running any more:\n{p.server.log_tail()}")
            if k and k % (60 // SAMPLE_SECONDS) == 0:
                minute = k * SAMPLE_SECONDS // 60
                rec = traffic.recorder
                done = sum(n for (m, _k, _r, s), n in rec.counts.items() if m == minute)
                bad = sum(n for (m, _k, _r, s), n in rec.counts.items()
                          if m == minute and (s >= 500 or s < 0))
                rss = ", ".join(f"{name} {kb / 1024:.0f} MB"
                                for name, kb in samples[-1]["rss_kb"].items() if kb)
                pending = samples[-1].get("db", {}).get("deliveries", {}).get("pending")
                log(f"minute {minute}: {done} requests ({done / 60:.1f}/s), 5xx or transport "
                    f"errors {bad}, RSS {rss}, deliveries pending {pending}")

    try:
        log(f"traffic for {opts.minutes} min: {mix.describe()}; target "
            f"{mix.target_rps():.0f} req/s over {', '.join(targets)}")
        sampler_task = asyncio.create_task(sampler())
        recorder = await traffic.run(on_start=lambda _t0: started.set())
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(sampler_task, 30)
        traffic_end = time.monotonic()
        log(f"traffic done ({traffic_end - recorder.t0:.0f}s); draining the background work "
            f"(at most {opts.drain_timeout}s)")

        drained_after = None
        state: dict[str, Any] = {}
        while time.monotonic() - traffic_end < opts.drain_timeout:
            state = await db_state(conn, seeded.probe_runs)
            pending_tasks = sum(s.get("pending", 0) for s in state["tasks"].values())
            if (not state["deliveries"].get("pending") and not pending_tasks
                    and state["probe_runs"].get("timed_out", 0) == PROBE_RUNS):
                drained_after = time.monotonic() - traffic_end
                break
            await asyncio.sleep(1)
        state = await db_state(conn, seeded.probe_runs)
        hooks = await receiver_stats(sampler_client, receiver)
        final = await sample(time.monotonic() - recorder.t0, None)
        log("drained in " + (f"{drained_after:.1f}s" if drained_after is not None
                             else f"more than {opts.drain_timeout}s (not drained)"))
    finally:
        await conn.close()
        await sampler_client.aclose()
    return {"seeded": seeded, "recorder": recorder, "samples": samples, "final_sample": final,
            "state": state, "receiver": hooks, "drained_after": drained_after}


# ------------------------------------------------------------------------------ verdict


def minute_samples(samples: list[dict[str, Any]], minute: int) -> list[dict[str, Any]]:
    """The samples of minute `minute` (1-based): the k-th sample is taken k x 10 s after the
    traffic started, and minute m holds k in ((m-1)·6, m·6] (sample 0 is the start)."""
    per = 60 // SAMPLE_SECONDS
    return [s for s in samples if (minute - 1) * per < s["k"] <= minute * per]


def rss_slope_per_hour(samples: list[dict[str, Any]], name: str, first: int,
                       last: int) -> float | None:
    """The least-squares slope of the per-minute mean RSS over minutes `first`..`last`, as a
    fraction of the first minute's mean per hour (None with fewer than three minutes)."""
    points = [(m, mean_rss_mb(minute_samples(samples, m), name)) for m in range(first, last + 1)]
    points = [(m, v) for m, v in points if v]
    if len(points) < 3:
        return None
    mx = statistics.fmean(m for m, _ in points)
    my = statistics.fmean(v for _, v in points)
    den = sum((m - mx) ** 2 for m, _ in points)
    slope = sum((m - mx) * (v - my) for m, v in points) / den  # MB per minute
    return slope * 60 / points[0][1]


def mean_rss_mb(samples: list[dict[str, Any]], name: str) -> float | None:
    values = [s["rss_kb"].get(name) for s in samples]
    values = [v for v in values if v]
    return statistics.fmean(values) / 1024 if values else None


def cpu_at(samples: list[dict[str, Any]], name: str, minute: int) -> float | None:
    """CPU seconds of a process at the end of minute `minute` (0: the start)."""
    k = minute * 60 // SAMPLE_SECONDS
    for s in samples:
        if s["k"] == k:
            return s["cpu_s"].get(name)
    return None


def machine_busy_in(samples: list[dict[str, Any]], minute: int) -> tuple[float | None,
                                                                            float | None]:
    """Fraction of all CPUs busy during minute `minute`, and the load average at its end."""
    per = 60 // SAMPLE_SECONDS
    at = {s["k"]: s.get("machine") for s in samples}
    a, b = at.get((minute - 1) * per), at.get(minute * per)
    if not a or not b or b["total"] <= a["total"]:
        return None, None
    return 1 - (b["idle"] - a["idle"]) / (b["total"] - a["total"]), b["load1"]


def latency_summary(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50": percentile(ordered, 50), "p95": percentile(ordered, 95),
            "p99": percentile(ordered, 99), "max": ordered[-1] if ordered else None}


def scan_log(path: Path) -> dict[str, Any]:
    """Tracebacks and ERROR lines of a server log, with the first few tracebacks' text."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"path": str(path), "missing": True}
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    errors = [line for line in lines if re.search(r"\bERROR\b|Exception in ASGI", line)]
    excerpts = []
    for i in tracebacks[:3]:
        end = i + 1
        while end < len(lines) and end - i < 80 and (lines[end].startswith((" ", "\t"))
                                                       or not lines[end].strip()
                                                       or lines[end].startswith("During")
                                                       or lines[end].startswith("The above")
                                                       or lines[end].startswith("Traceback")):
            end += 1
        excerpts.append("\n".join(lines[max(0, i - 2):min(len(lines), end + 1)]))
    return {"path": str(path.relative_to(ROOT)), "lines": len(lines),
            "tracebacks": len(tracebacks), "error_lines": len(errors),
            "first_errors": errors[:5], "excerpts": excerpts}


@dataclass
class Rule:
    rule: str
    value: str
    result: str  # PASS, FAIL, info

    @property
    def failed(self) -> bool:
        return self.result == "FAIL"


def evaluate(opts: argparse.Namespace, procs: list[Proc], targets: list[str], mix: Mix,
             run: dict[str, Any]) -> dict[str, Any]:
    rec: Recorder = run["recorder"]
    samples: list[dict[str, Any]] = run["samples"]
    minutes = list(range(1, opts.minutes + 1))
    rules: list[Rule] = []

    # per minute
    per_minute = []
    for m in minutes:
        counts = {k: 0 for k in KINDS}
        statuses: Counter[int] = Counter()
        for (minute, kind, _route, status), n in rec.counts.items():
            if minute == m:
                statuses[status] += n
                if status >= 0:
                    counts[kind] += n
        lat_all = [v for k in KINDS for v in rec.latencies.get((m, k), [])]
        in_minute = minute_samples(samples, m)
        requests = sum(counts.values())
        cpu = {}
        for p in procs:
            a, b = cpu_at(samples, p.name, m - 1), cpu_at(samples, p.name, m)
            cpu[p.name] = (None if a is None or b is None or not requests
                           else round((b - a) * 1000 / requests, 3))
        per_minute.append({
            "minute": m, "requests": requests, "rps": round(requests / 60, 2),
            "by_kind": counts, "ops": {k: rec.ops.get((m, k), 0) for k in KINDS},
            "statuses": {str(s): n for s, n in sorted(statuses.items())},
            "server_errors": sum(n for s, n in statuses.items() if s >= 500),
            "transport_errors": statuses.get(-1, 0),
            "latency_ms": {"all": latency_summary(lat_all),
                           **{k: latency_summary(rec.latencies.get((m, k), []))
                              for k in KINDS}},
            "rss_mb": {p.name: mean_rss_mb(in_minute, p.name) for p in procs},
            "cpu_ms_per_request": cpu,
            "client_lag_ms_max": round(rec.loop_lag_ms.get(m, 0.0), 1),
            "machine_busy": machine_busy_in(samples, m)[0],
            "load_average": machine_busy_in(samples, m)[1],
        })

    # every status code per route (after the end too)
    by_route: dict[str, Counter[int]] = defaultdict(Counter)
    for (_m, _kind, route, status), n in rec.counts.items():
        by_route[route][status] += n
    total_requests = sum(rec.counts.values())

    # 1. zero 5xx
    five = rec.server_errors
    if five:
        routes = Counter(e["route"] for e in five)
        value = f"{len(five)}: " + "; ".join(f"{r} x{n}" for r, n in routes.most_common())
    else:
        value = f"0 of {total_requests:,} requests"
    rules.append(Rule("5xx responses (any is a FAIL)", value, "FAIL" if five else "PASS"))
    rules.append(Rule(
        "transport errors (connect, read, timeout)",
        str(len(rec.transport_errors)) + ("" if not rec.transport_errors else ": " + "; ".join(
            sorted({f"{e['route']}: {e['error'][:80]}" for e in rec.transport_errors})[:3])),
        "FAIL" if rec.transport_errors else "PASS"))
    unexpected = rec.unexpected_count
    rules.append(Rule(
        "other unexpected answers (4xx, GraphQL errors)",
        str(unexpected) + ("" if not unexpected else ": " + "; ".join(
            sorted({f"{e['route']} {e['status']}" for e in rec.unexpected})[:3])),
        "FAIL" if unexpected else "PASS"))

    # 2. throughput steadiness
    series = [pm["requests"] for pm in per_minute]
    first = series[0]
    worst = max(abs(n - first) / first for n in series[1:]) if first else math.inf
    cv = statistics.pstdev(series) / statistics.fmean(series) if sum(series) else math.inf
    target = mix.target_rps() * 60
    rules.append(Rule(
        f"throughput: every minute from the 2nd within ±{THROUGHPUT_BAND:.0%} of the 1st",
        f"min {min(series):,} / max {max(series):,} req/min, worst {worst:+.1%} "
        f"(max deviation), CV {cv:.2%}; target {target:,.0f}/min, achieved "
        f"{statistics.fmean(series) / target:.1%} ({sum(rec.skipped.values()):,} arrivals "
        f"skipped)",
        "PASS" if worst <= THROUGHPUT_BAND else "FAIL"))

    # 3. memory growth, per process: from the reference minute to the last, and the slope
    ref_minute = memory_reference_minute(opts.minutes)
    limit = memory_limit(opts.minutes)
    memory = {}
    for p in procs:
        ref = mean_rss_mb(minute_samples(samples, ref_minute), p.name)
        last = mean_rss_mb(minute_samples(samples, opts.minutes), p.name)
        start = samples[0]["rss_kb"].get(p.name) if samples else None
        peak = max((s["rss_kb"].get(p.name) or 0) for s in samples) if samples else None
        growth = (last / ref - 1) if ref and last else None
        slope = rss_slope_per_hour(samples, p.name, ref_minute, opts.minutes)
        memory[p.name] = {"start_mb": start / 1024 if start else None,
                          "reference_minute": ref_minute, "reference_mb": ref,
                          "last_minute_mb": last, "peak_mb": peak / 1024 if peak else None,
                          "growth": growth, "slope_per_hour": slope}
        flat = slope is None or slope <= limit
        rules.append(Rule(
            f"memory growth <= {limit:.0%}, flat: {p.name} (last minute vs minute "
            f"{ref_minute}; least-squares slope over those minutes, per hour)",
            (f"{ref:.1f} -> {last:.1f} MB ({growth:+.1%}), slope "
             + (f"{slope:+.1%}/h" if slope is not None else "n/a")
             + f"; at start {start / 1024:.1f} MB, peak {peak / 1024:.1f} MB")
            if growth is not None else "no samples",
            "PASS" if growth is not None and growth <= limit and flat else "FAIL"))

    # 4. background work
    state, hooks = run["state"], run["receiver"]
    deliveries = state.get("deliveries", {})
    enqueued = sum(deliveries.values())
    delivered = deliveries.get("delivered", 0)
    terminal = state.get("terminal_runs", 0)
    hook_ok = (enqueued == terminal and delivered == enqueued and enqueued > 0
               and hooks.get("distinct") == delivered and hooks.get("duplicates") == 0
               and hooks.get("bad_signatures") == 0)
    who = "the worker (the replicas run none)" if opts.replicas == 2 else \
        "the server's in-process workers"
    rules.append(Rule(
        f"webhooks delivered by {who}",
        f"{delivered:,} delivered of {enqueued:,} enqueued for {terminal:,} terminal runs "
        f"({', '.join(f'{k} {v}' for k, v in sorted(deliveries.items()))}); receiver: "
        f"{hooks.get('distinct')} distinct, {hooks.get('duplicates')} duplicates, "
        f"{hooks.get('bad_signatures')} bad signatures",
        "PASS" if hook_ok else "FAIL"))
    tasks = state.get("tasks", {})
    anomaly = tasks.get("anomaly_detection", {})
    anomaly_total = sum(anomaly.values())
    rules.append(Rule(
        f"tasks done by {who}",
        ", ".join(f"{kind}: " + ", ".join(f"{s} {n}" for s, n in sorted(v.items()))
                  for kind, v in sorted(tasks.items())) or "none",
        "PASS" if anomaly_total and anomaly.get("done", 0) == anomaly_total
        and not any(v.get("failed") for v in tasks.values()) else "FAIL"))
    probes = state.get("probe_runs", {})
    rules.append(Rule(
        f"reaper run by {who}: probe runs past maxRuntimeSeconds timed out",
        f"{probes.get('timed_out', 0)} of {PROBE_RUNS} timed out",
        "PASS" if probes.get("timed_out", 0) == PROBE_RUNS else "FAIL"))
    rules.append(Rule(
        "background work drained after the traffic",
        f"in {run['drained_after']:.1f}s" if run["drained_after"] is not None
        else f"not within {opts.drain_timeout}s", "info"))

    # 5. mode B: both replicas served
    served = {}
    for target in targets:
        ok = sum(n for (t, s), n in rec.by_target.items() if t == target and 200 <= s < 300)
        allof = sum(n for (t, _s), n in rec.by_target.items() if t == target)
        served[target] = {"requests": allof, "2xx": ok}
    if opts.replicas == 2:
        total = sum(v["requests"] for v in served.values()) or 1
        rules.append(Rule(
            "both replicas served traffic",
            "; ".join(f"{name} {v['2xx']:,} 2xx ({v['requests'] / total:.1%} of requests)"
                      for name, v in zip(("replica1", "replica2"), served.values(),
                                         strict=True)),
            "PASS" if all(v["2xx"] > 0 for v in served.values()) else "FAIL"))

    # latency drift: information
    p95 = [pm["latency_ms"]["all"]["p95"] for pm in per_minute]
    if len(p95) >= 2 and p95[1] and p95[-1]:
        rules.append(Rule("latency p95, last minute vs minute 2",
                          f"{p95[1]:.1f} -> {p95[-1]:.1f} ms ({p95[-1] / p95[1] - 1:+.0%})",
                          "info"))

    by_kind = {}
    for kind in [*KINDS, "all"]:
        kinds = KINDS if kind == "all" else (kind,)
        values = [v for m in minutes for k in kinds for v in rec.latencies.get((m, k), [])]
        requests = sum(pm["requests"] if kind == "all" else pm["by_kind"][kind]
                       for pm in per_minute)
        by_kind[kind] = {
            "requests": requests, "rps": requests / (60 * opts.minutes),
            "target_rps": mix.target_rps(None if kind == "all" else kind),
            "latency_ms": latency_summary(values),
            "skipped_arrivals": (sum(rec.skipped.values()) if kind == "all"
                                 else rec.skipped.get(kind, 0)),
            "p95_first": per_minute[0]["latency_ms"][kind]["p95"],
            "p95_last": per_minute[-1]["latency_ms"][kind]["p95"],
        }

    logs = {p.name: scan_log(p.server.log_path) for p in procs}
    return {"per_minute": per_minute, "by_kind": by_kind,
            "by_route": {r: {str(s): n for s, n in sorted(c.items())}
                         for r, c in sorted(by_route.items())},
            "served": served, "memory": memory, "rules": rules, "logs": logs,
            "total_requests": total_requests}


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_tables(title: str, procs: list[Proc], evaluation: dict[str, Any]) -> None:
    print()
    print(title)
    head = (f"{'min':>3} {'requests':>8} {'req/s':>6} " +
            " ".join(f"{k[:9]:>9}" for k in KINDS) +
            f" {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'5xx':>4} {'err':>4} " +
            " ".join(f"{('RSS ' + p.name)[:13]:>13}" for p in procs) +
            " " + " ".join(f"{('CPU/req ' + p.name)[:16]:>16}" for p in procs) +
            f" {'machine':>8} {'load':>5}")
    print(head)
    for pm in evaluation["per_minute"]:
        lat = pm["latency_ms"]["all"]
        print(f"{pm['minute']:>3} {pm['requests']:>8,} {pm['rps']:>6.1f} " +
              " ".join(f"{pm['by_kind'][k]:>9,}" for k in KINDS) +
              f" {fmt(lat['p50'], '.1f'):>7} {fmt(lat['p95'], '.1f'):>7}"
              f" {fmt(lat['p99'], '.1f'):>7} {pm['server_errors']:>4} "
              f"{pm['transport_errors']:>4} " +
              " ".join(f"{fmt(pm['rss_mb'][p.name], '.1f') + ' MB':>13}" for p in procs) + " " +
              " ".join(f"{fmt(pm['cpu_ms_per_request'][p.name], '.2f') + ' ms':>16}"
                       for p in procs) +
              f" {fmt(pm['machine_busy'] and pm['machine_busy'] * 100, '.0f') + '%':>8}"
              f" {fmt(pm['load_average'], '.1f'):>5}")
    print()
    print(f"{'kind':<10} {'requests':>9} {'target/s':>8} {'done/s':>7} {'p50 ms':>7} "
          f"{'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} {'skipped':>7}  p95 minute 1 -> last")
    for kind, row in evaluation["by_kind"].items():
        lat = row["latency_ms"]
        print(f"{kind:<10} {row['requests']:>9,} {row['target_rps']:>8.1f} {row['rps']:>7.1f} "
              f"{fmt(lat['p50']):>7} {fmt(lat['p95']):>7} {fmt(lat['p99']):>7} "
              f"{fmt(lat['max'], '.0f'):>7} {row['skipped_arrivals']:>7,}  "
              f"{fmt(row['p95_first'])} -> {fmt(row['p95_last'])}")
    print()
    width = max(len(r.rule) for r in evaluation["rules"])
    print(f"{'rule':<{width}}  result  value")
    for r in evaluation["rules"]:
        print(f"{r.rule:<{width}}  {r.result:<6}  {r.value}")


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    mode = "a" if opts.replicas == 1 else "b"
    mix = DEFAULT_MIX.scaled(opts.rate)
    procs: list[Proc] = []
    receiver: Server | None = None
    database_touched = False
    exit_code = 2
    started_at = datetime.now(UTC)

    def on_alarm(signum: int, frame: Any) -> None:
        raise HardStop(f"hard time limit of {opts.time_limit}s reached")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, h) for s, h in
                ((signal.SIGALRM, on_alarm), (signal.SIGTERM, on_term))}
    signal.alarm(opts.time_limit)
    try:
        title = ("mode A: one server, background workers inside" if mode == "a" else
                 "mode B: two API replicas (RUNWATCH_WORKERS_IN_SERVE=0) + one runwatch worker")
        log(f"runwatch soak, {title}; {opts.minutes} min of traffic, hard limit "
            f"{opts.time_limit}s; {os.cpu_count()} CPUs, Python {platform.python_version()}")
        busy = machine_busy()
        if busy is not None:
            log(f"machine busy before start: {busy:.0%} of {os.cpu_count()} CPUs"
                + ("" if busy < 0.15 else " (other processes: latencies will be noisy)"))
        if not RUNWATCH_BIN.exists() and mode == "b":
            raise BenchError(f"{RUNWATCH_BIN} not found: install runwatch into .venv")

        log(f"database {DB_NAME} on {HOST}:5432: drop, create, migrate, bootstrap")
        database_touched = True
        t0 = time.monotonic()
        organisation_id, token = asyncio.run(asyncio.wait_for(bootstrap(), 120))
        log(f"  organisation {organisation_id} and a read,write,report token in "
            f"{time.monotonic() - t0:.1f}s")

        LOG_DIR.mkdir(parents=True, exist_ok=True)
        receiver = Server(f"soak-{mode}-receiver", "bench.receiver:create_app", base_env(),
                          LOG_DIR, extra_args=("--timeout-graceful-shutdown", "1"))
        if mode == "a":
            procs = [Proc("server", Server(f"soak-{mode}-server", "runwatch.app:create_app",
                                           runwatch_env(), LOG_DIR))]
        else:
            procs = [Proc(f"replica{n}", Server(
                f"soak-{mode}-replica{n}", "runwatch.app:create_app",
                runwatch_env(RUNWATCH_WORKERS_IN_SERVE="0"), LOG_DIR)) for n in (1, 2)]
            worker = Worker(f"soak-{mode}-worker", "", runwatch_env(), LOG_DIR)
            worker.trace = opts.trace_worker
            procs.append(Proc("worker", worker))
        receiver.start()
        for p in procs:
            p.server.start()
        receiver.wait_ready("/health")
        for p in procs:
            p.server.wait_ready("/health")
            log(f"  {p.name} ready (pid {p.server.proc.pid}"
                + (f", {p.server.url}" if not isinstance(p.server, Worker) else "")
                + f"), log {p.server.log_path.relative_to(ROOT)}")
        targets = [p.server.url for p in procs if not isinstance(p.server, Worker)]

        run = asyncio.run(soak(opts, procs, targets, receiver, organisation_id, token, mix))
        for p in procs:  # stopped before the verdict: their logs are complete
            p.server.stop()
        receiver.stop()
        evaluation = evaluate(opts, procs, targets, mix, run)
        rules: list[Rule] = evaluation["rules"]
        failed = any(r.failed for r in rules)
        print_tables(f"soak {title}: {opts.minutes} min, target {mix.target_rps():.0f} req/s "
                     f"({mix.describe()})", procs, evaluation)
        rec: Recorder = run["recorder"]
        if rec.server_errors:
            print("\n5xx responses (route, status, answer):")
            for e in rec.server_errors[:20]:
                print(f"  minute {e['minute']} {e['at']} {e['route']} -> {e['status']} on "
                      f"{e['target']}: {e['answer'][:200]}")
        for name, scanned in evaluation["logs"].items():
            if scanned.get("tracebacks") or scanned.get("error_lines"):
                print(f"\n{name} log {scanned['path']}: {scanned['tracebacks']} tracebacks, "
                      f"{scanned['error_lines']} ERROR lines; first:")
                for excerpt in scanned["excerpts"][:1]:
                    print("  " + excerpt.replace("\n", "\n  "))
        verdict = "FAIL" if failed else "PASS"
        print(f"\nverdict: {verdict}")

        out = RESULTS_DIR / f"soak-{mode}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        seeded = run["seeded"]
        out.write_text(json.dumps({
            "mode": mode.upper(), "title": title, "replicas": opts.replicas,
            "verdict": verdict, "started_at": started_at,
            "minutes": opts.minutes, "options": vars(opts),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "busy_before_start": busy},
            "mix": {"ops_per_second": mix.ops_per_second, "max_in_flight": mix.max_in_flight,
                    "target_rps": mix.target_rps(), "skipped_arrivals": dict(rec.skipped)},
            "rules_text": {
                "5xx": "any 5xx answer is a FAIL (listed with its route)",
                "throughput": f"every minute from the 2nd completes within "
                              f"±{THROUGHPUT_BAND:.0%} of the 1st minute's requests",
                "memory": f"per process, mean RSS of the last minute <= (1 + "
                          f"{memory_limit(opts.minutes):g}) x mean RSS of minute "
                          f"{memory_reference_minute(opts.minutes)}, and the slope between "
                          "them at most as much per hour",
            },
            "rules": [asdict(r) for r in rules],
            "per_minute": evaluation["per_minute"],
            "by_kind": evaluation["by_kind"],
            "status_codes_by_route": evaluation["by_route"],
            "served_by_target": evaluation["served"],
            "memory": evaluation["memory"],
            "background": {"state": run["state"], "receiver": run["receiver"],
                           "drained_after_s": run["drained_after"],
                           "probe_runs": seeded.probe_runs},
            "server_errors": rec.server_errors, "unexpected": rec.unexpected,
            "unexpected_count": rec.unexpected_count,
            "transport_errors": rec.transport_errors,
            "logs": evaluation["logs"],
            "samples": run["samples"], "final_sample": run["final_sample"],
        }, indent=2, default=str) + "\n")
        print(f"written to {out.relative_to(ROOT)}; server logs in "
              f"{LOG_DIR.relative_to(ROOT)}/soak-{mode}-*.log")
        exit_code = 1 if failed else 0
    except BenchError as exc:
        print(f"\nSOAK FAILED TO RUN: {exc}", file=sys.stderr, flush=True)
        exit_code = 2
    except HardStop as exc:
        print(f"\nSOAK STOPPED: {exc}; stopping everything it started", file=sys.stderr,
              flush=True)
        exit_code = 3
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything the soak started", file=sys.stderr)
        exit_code = 130
    except Exception:
        traceback.print_exc()
        print("\nSOAK FAILED (unexpected error above); stopping everything it started",
              file=sys.stderr, flush=True)
        exit_code = 2
    finally:
        signal.alarm(0)
        for p in procs:
            p.server.stop()
        if receiver is not None:
            receiver.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if database_touched and not opts.keep_db:
            try:
                asyncio.run(asyncio.wait_for(drop_database(), 30))
            except Exception as exc:  # best effort, and say so
                print(f"could not drop database {DB_NAME}: {exc}", file=sys.stderr)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
