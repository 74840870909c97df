"""The benchmark: set up, start both servers, drive them with wrk, print ratios.

`python -m bench` (or `make bench`). See bench/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import mean
from typing import Any

import httpx

from bench import profile, seed, sqlcheck
from bench.procs import (
    HOST,
    ROOT,
    BenchError,
    Server,
    WrkResult,
    ensure_wrk,
    machine_busy,
    run_wrk,
)

BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
LUA_SEQUENTIAL = BENCH_DIR / "sequential_ids.lua"
SETUP_TIMEOUT = 180  # seconds for drop/create/migrate/seed/check
GRAPHQL_REPORT = "mutation($i: ReportRunInput!) { reportRun(input: $i) { __typename } }"


class HardTimeout(Exception):
    pass


@dataclass
class Options:
    duration: float
    warmup: float
    rounds: int
    connections: int
    latency_connections: int
    time_limit: int
    keep_db: bool
    show_sql: bool


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="runwatch vs a raw asyncpg baseline, driven by wrk on 127.0.0.1; prints "
                    "ratios (see bench/README.md).",
    )
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds before each")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (results are the mean)")
    parser.add_argument("--connections", type=int, default=16,
                        help="wrk connections for the throughput scenarios 1-3")
    parser.add_argument("--latency-connections", type=int, default=4,
                        help="wrk connections for the latency scenario 4")
    parser.add_argument("--time-limit", type=int, default=480,
                        help="hard stop after this many seconds (everything started is stopped)")
    parser.add_argument("--keep-db", action="store_true",
                        help=f"keep the {seed.DB_NAME} database afterwards (dropped by default)")
    parser.add_argument("--show-sql", action="store_true",
                        help="print the statements of one first report (runwatch and baseline)")
    a = parser.parse_args(argv)
    if a.rounds < 1 or a.duration < 1 or a.warmup < 1 or a.connections < 1:
        parser.error("--rounds, --duration, --warmup and --connections must be at least 1")
    return Options(a.duration, a.warmup, a.rounds, a.connections, a.latency_connections,
                   a.time_limit, a.keep_db, a.show_sql)


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Log:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, message: str = "") -> None:
        print(f"[{self.elapsed():5.0f}s] {message}" if message else "", flush=True)


# ------------------------------------------------------------------------------- the bench


@dataclass
class Measured:
    scenario: str
    target: str  # "runwatch", "baseline", "10k", "1m"
    round: int
    result: WrkResult


@dataclass
class Row:
    scenario: str
    unit: str
    runwatch: float
    baseline: float
    ratio: float
    goal: str
    goal_value: float | None  # None: shown for information, no goal
    higher_is_better: bool
    valid: bool
    round_ratios: list[float] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if not self.valid:
            return "INVALID"
        if self.goal_value is None:
            return "info"
        if self.higher_is_better:
            ok = self.ratio >= self.goal_value
        else:
            ok = self.ratio <= self.goal_value
        return "PASS" if ok else "MISS"


class Bench:
    def __init__(self, opts: Options, fixture: seed.Fixture, runwatch: Server,
                 baseline: Server, nocache: Server, log: Log) -> None:
        self.opts = opts
        self.f = fixture
        self.servers = {"runwatch": runwatch, "baseline": baseline, "nocache": nocache}
        self.log = log
        self.measured: list[Measured] = []
        self.completed_at = iso_z(fixture.now - timedelta(minutes=30))
        org = fixture.organisation_id
        self.prefix = f"/api/v1/organisations/{org}/integrations/warehouse-connections"

    # -- request shapes ---------------------------------------------------------------------

    def report_body(self) -> str:
        return json.dumps(sqlcheck.report_body(self.completed_at))

    def graphql_body(self, run_id: str) -> str:
        return json.dumps({"query": GRAPHQL_REPORT, "variables": {"i": {
            "runId": run_id, "completedAt": self.completed_at, "eventsDelivered": 1234}}})

    def report_path(self, target: str, run_id: str) -> str:
        cid = self.f.connections["rest"]
        if target == "baseline":
            return f"/metrics/{cid}/{run_id}"
        return f"{self.prefix}/{cid}/metrics/{run_id}/"

    def telemetry_path(self, role: str) -> str:
        return f"{self.prefix}/{self.f.connections[role]}/telemetry/"

    def pk_path(self) -> str:
        return f"/pk/{self.f.connections['small']}"

    # -- preflight: every request shape once, outside wrk -----------------------------------

    def preflight(self) -> None:
        report_auth = {"Authorization": f"Bearer {self.f.report_token}",
                       "Content-Type": "application/json"}
        read_auth = {"Authorization": f"Bearer {self.f.read_token}"}
        with httpx.Client(timeout=30) as client:
            for target in ("runwatch", "baseline"):
                url = self.servers[target].url + self.report_path(
                    target, str(self.f.preflight_id("rest")))
                r = client.patch(url, content=self.report_body(), headers=report_auth)
                if r.status_code != 204:
                    raise BenchError(f"preflight: {target} REST report answered "
                                     f"{r.status_code}: {r.text[:300]}")
            r = client.post(self.servers["runwatch"].url + "/graphql", headers=report_auth,
                            content=self.graphql_body(str(self.f.preflight_id("graphql"))))
            typename = None
            if r.status_code == 200:
                data = r.json().get("data") or {}
                typename = (data.get("reportRun") or {}).get("__typename")
            if typename != "ReportRunSuccess":
                raise BenchError(f"preflight: GraphQL reportRun answered {r.status_code} "
                                 f"{r.text[:300]} (expected __typename ReportRunSuccess)")
            self.log("preflight: REST report 204 on both servers; GraphQL reportRun "
                     "__typename = ReportRunSuccess")
            telemetry = {}
            for role in ("small", "large"):
                r = client.get(self.servers["runwatch"].url + self.telemetry_path(role),
                               headers=read_auth)
                if r.status_code != 200:
                    raise BenchError(f"preflight: telemetry ({role}) answered {r.status_code}: "
                                     f"{r.text[:300]}")
                telemetry[role] = t = r.json()
                self.log(f"preflight: telemetry {role:>5}: status {t['status']}, events 24h "
                         f"{t['events_last_24h']['total']:,}, 7d {t['events_last_7d']['total']:,},"
                         f" failed 24h {t['failed_deliveries_last_24h']}, recent_errors "
                         f"{len(t['recent_errors'])}")
            small, large = telemetry["small"], telemetry["large"]
            same = ["status", "events_last_24h", "failed_deliveries_last_24h", "recent_errors"]
            if any(small[k] != large[k] for k in same):
                self.log("WARNING: the 10k and 1M connections should read the same 24 h "
                         "telemetry (same density, same recent runs); they differ")
            r = client.get(self.servers["baseline"].url + self.pk_path(), headers=read_auth)
            if r.status_code != 200 or r.json().get("id") != self.f.connections["small"]:
                raise BenchError(f"preflight: baseline pk answered {r.status_code}: "
                                 f"{r.text[:300]}")
            self.log("preflight: telemetry 200 on both history sizes; baseline /pk 200")

    # -- wrk runs ---------------------------------------------------------------------------

    def _wrk(self, scenario: str, target: str, server: str, round_no: int, *,
             path: str | None = None, method: str = "GET", slot: str | None = None,
             body: str = "", connections: int | None = None) -> WrkResult:
        """Warm-up, then the measured run; returns (and records) the measured one."""
        srv = self.servers[server]
        result: WrkResult | None = None
        warmup_problems: list[str] = []
        for phase, seconds in (("warmup", self.opts.warmup), ("measure", self.opts.duration)):
            label = f"{scenario} {target} r{round_no} {phase}"
            kwargs: dict[str, Any] = {"duration": seconds,
                                      "connections": connections or self.opts.connections}
            if slot is not None:
                ids = self.f.ranges[f"{slot}-r{round_no}-{phase}"]
                kwargs["script"] = LUA_SEQUENTIAL
                kwargs["script_env"] = {
                    "BENCH_METHOD": method, "BENCH_PATH": path or "/", "BENCH_BODY": body,
                    "BENCH_TOKEN": self.f.report_token, "BENCH_FIRST_ID": str(ids.first),
                    "BENCH_ID_COUNT": str(ids.count),
                }
                url = srv.url + "/"
            else:
                kwargs["headers"] = [f"Authorization: Bearer {self.f.read_token}"]
                url = srv.url + (path or "/")
            cpu_before = srv.cpu_seconds()
            result = run_wrk(label, url, **kwargs)
            cpu_after = srv.cpu_seconds()
            if cpu_before is not None and cpu_after is not None and result.requests:
                result.server_cpu_ms = (cpu_after - cpu_before) * 1000 / result.requests
            srv.check_alive()
            if slot is not None:
                # Every answered request must have completed a fresh run: a GraphQL error
                # (NotFoundError, InvalidInputError...) is HTTP 200 and wrk cannot see it.
                done = asyncio.run(asyncio.wait_for(seed.completed_runs(ids.first, ids.count), 30))
                result.runs_completed = done
                if done < result.requests:
                    result.problems.append(
                        f"{result.requests - done} answered requests completed no run "
                        f"({result.requests} requests, {done} runs completed)")
            if phase == "warmup" and not result.valid:
                self.log(f"{label}: {result.summary()}")
                warmup_problems.append(f"the warm-up was invalid ({result.errors} errors, "
                                       f"{'; '.join(result.problems) or 'see above'})")
        assert result is not None
        result.problems.extend(warmup_problems)
        self.measured.append(Measured(scenario, target, round_no, result))
        mark = "" if result.valid else "   <<<<<<<<<< INVALID"
        self.log(f"r{round_no} {scenario:<22} {target:<8} {result.summary()}{mark}")
        return result

    def rest_report(self, target: str, round_no: int) -> None:
        self._wrk("1 REST report", target, target, round_no, method="PATCH",
                  path=self.report_path(target, "{ID}"), slot=f"rest-{target}",
                  body=self.report_body())

    def graphql_report(self, round_no: int) -> None:
        self._wrk("2 GraphQL reportRun", "runwatch", "runwatch", round_no, method="POST",
                  path="/graphql", slot="graphql-runwatch", body=self.graphql_body("{ID}"))

    def telemetry_throughput(self, target: str, round_no: int) -> None:
        path = self.pk_path() if target == "baseline" else self.telemetry_path("small")
        self._wrk("3 telemetry throughput", target, target, round_no, path=path)

    def telemetry_latency(self, size: str, round_no: int, server: str = "runwatch") -> None:
        """`server` "nocache" runs with RUNWATCH_TELEMETRY_CACHE=0: every read computes."""
        role = "small" if size == "10k" else "large"
        target = size if server == "runwatch" else f"{size} {server}"
        self._wrk("4 telemetry latency", target, server, round_no,
                  path=self.telemetry_path(role), connections=self.opts.latency_connections)

    def run(self) -> None:
        for round_no in range(1, self.opts.rounds + 1):
            # Alternate the order from one round to the next, so that drift (caches, autovacuum,
            # a noisy neighbour) does not always favour the same side.
            pair = ("baseline", "runwatch") if round_no % 2 else ("runwatch", "baseline")
            sizes = ("10k", "1m") if round_no % 2 else ("1m", "10k")
            self.log(f"round {round_no} of {self.opts.rounds}")
            for target in pair:
                self.rest_report(target, round_no)
            self.graphql_report(round_no)
            for target in (*pair, "nocache"):
                self.telemetry_throughput(target, round_no)
            for server in ("runwatch", "nocache"):
                for size in sizes:
                    self.telemetry_latency(size, round_no, server)

    # -- results ----------------------------------------------------------------------------

    def _runs(self, scenario: str, target: str) -> list[WrkResult]:
        return [m.result for m in self.measured if m.scenario == scenario and m.target == target]

    def rows(self) -> list[Row]:
        def row(name: str, unit: str, runwatch: list[WrkResult], baseline: list[WrkResult],
                metric: str, goal: float | None, higher: bool) -> Row:
            rw = [getattr(r, metric) for r in runwatch]
            bl = [getattr(r, metric) for r in baseline]
            rw_mean, bl_mean = mean(rw), mean(bl)
            return Row(
                scenario=name, unit=unit, runwatch=rw_mean, baseline=bl_mean,
                ratio=rw_mean / bl_mean if bl_mean else float("nan"),
                goal="-" if goal is None else f"{'>=' if higher else '<='} {goal:.2f}",
                goal_value=goal,
                higher_is_better=higher,
                valid=all(r.valid for r in runwatch + baseline),
                round_ratios=[a / b if b else float("nan") for a, b in zip(rw, bl, strict=True)],
            )

        rest_bl = self._runs("1 REST report", "baseline")
        return [
            row("1 REST report", "req/s", self._runs("1 REST report", "runwatch"), rest_bl,
                "rps", 0.7, True),
            row("2 GraphQL reportRun", "req/s", self._runs("2 GraphQL reportRun", "runwatch"),
                rest_bl, "rps", 0.4, True),
            row("3 telemetry throughput", "req/s",
                self._runs("3 telemetry throughput", "runwatch"),
                self._runs("3 telemetry throughput", "baseline"), "rps", 0.5, True),
            row("4 telemetry p50 1M/10k", "ms", self._runs("4 telemetry latency", "1m"),
                self._runs("4 telemetry latency", "10k"), "p50_ms", 1.3, False),
            row("4 telemetry p99 1M/10k", "ms", self._runs("4 telemetry latency", "1m"),
                self._runs("4 telemetry latency", "10k"), "p99_ms", 1.3, False),
            row("3' throughput, no cache", "req/s",
                self._runs("3 telemetry throughput", "nocache"),
                self._runs("3 telemetry throughput", "baseline"), "rps", None, True),
            row("4' p50 1M/10k, no cache", "ms", self._runs("4 telemetry latency", "1m nocache"),
                self._runs("4 telemetry latency", "10k nocache"), "p50_ms", 1.3, False),
            row("4' p99 1M/10k, no cache", "ms", self._runs("4 telemetry latency", "1m nocache"),
                self._runs("4 telemetry latency", "10k nocache"), "p99_ms", 1.3, False),
        ]


def ratio_text(ratio: float) -> str:
    """Two decimals, three below 0.1 (so that a ratio far below its goal does not read 0.00)."""
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.3f}"


def format_table(rows: list[Row]) -> str:
    header = (f"{'scenario':<24} {'runwatch':>13} {'baseline':>13} {'ratio':>7}   "
              f"{'goal':<8} {'result':<8} rounds")
    lines = [header, "-" * len(header)]
    def fig(value: float, unit: str) -> str:
        return f"{value:,.1f} {unit}" if unit == "req/s" else f"{value:.2f} {unit}"

    for r in rows:
        rounds = " ".join(ratio_text(x) for x in r.round_ratios)
        runwatch, baseline = fig(r.runwatch, r.unit), fig(r.baseline, r.unit)
        lines.append(f"{r.scenario:<24} {runwatch:>13} {baseline:>13} {ratio_text(r.ratio):>7}   "
                     f"{r.goal:<8} {r.verdict:<8} {rounds}")
    lines.append("-" * len(header))
    lines.append("Scenarios 1-3: runwatch / raw baseline (2: over the REST baseline's PATCH rate; "
                 "3: over the baseline's GET /pk).")
    lines.append("Scenario 4: runwatch's telemetry latency on 1,000,000 runs of history (runwatch "
                 "column) / 10,000 runs (baseline column).")
    lines.append("3', 4': the same against a runwatch with RUNWATCH_TELEMETRY_CACHE=0, so that "
                 "every read computes telemetry from the database.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ orchestration


@dataclass
class Prepared:
    fixture: seed.Fixture
    check: sqlcheck.SqlCheck
    facts: list[str]
    profiles: list[profile.RequestProfile]


async def prepare(opts: Options) -> Prepared:
    """Database, seed, SQL check, request profile: one task (Tortoise's context is a context
    variable, so everything that uses it runs here)."""
    from tortoise import Tortoise

    async def run() -> Prepared:
        try:
            fixture = await seed.setup(rounds=opts.rounds, warmup=opts.warmup,
                                       duration=opts.duration)
            completed_at = iso_z(fixture.now - timedelta(minutes=30))
            check = await sqlcheck.check(fixture, completed_at)
            profiles = await profile.profile(fixture, completed_at)
            facts = await seed.describe(fixture)
        finally:
            with contextlib.suppress(Exception):
                await Tortoise.close_connections()
        return Prepared(fixture, check, facts, profiles)

    return await asyncio.wait_for(run(), SETUP_TIMEOUT)


def base_env() -> dict[str, str]:
    """The environment for servers: runwatch's settings left at their defaults."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("RUNWATCH_", "BASELINE_", "BENCH_")) and k != "DATABASE_URL"}


def print_sql(check: sqlcheck.SqlCheck) -> None:
    for title, statements in (("runwatch", check.runwatch), ("baseline", check.baseline)):
        print(f"--- {title}: {len(statements)} statements (+ BEGIN/COMMIT around all but the "
              "first)")
        for sql, params in statements:
            print(" ".join(sql.split()))
            print(f"    params: {sqlcheck.normalise_params(params)}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    log = Log()
    servers: list[Server] = []
    database_touched = False
    exit_code = 2
    started_at = datetime.now(UTC)
    busy: float | None = None

    def on_alarm(signum: int, frame: Any) -> None:
        raise HardTimeout(f"hard time limit of {opts.time_limit}s reached")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, h) for s, h in
                ((signal.SIGALRM, on_alarm), (signal.SIGTERM, on_term))}
    signal.alarm(opts.time_limit)
    try:
        log(f"runwatch benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{opts.rounds} rounds x ({opts.warmup:g}s warm-up + {opts.duration:g}s), "
            f"{opts.connections} connections (scenario 4: {opts.latency_connections}), "
            f"hard limit {opts.time_limit}s")
        wrk = ensure_wrk()
        log(f"load generator: {wrk}")
        busy = machine_busy()
        if busy is not None:
            note = ("" if busy < 0.15 else
                    ": other processes are using the CPUs, so figures will be noisy (the "
                    "interleaved rounds and ratios absorb some of it)")
            log(f"machine busy before start: {busy:.0%} of {os.cpu_count()} CPUs{note}")

        log(f"setting up database {seed.DB_NAME} on {HOST}:5432 (drop, create, migrate, seed)")
        database_touched = True
        prepared = asyncio.run(prepare(opts))
        fixture, check, facts = prepared.fixture, prepared.check, prepared.facts
        for name, seconds in fixture.timings.items():
            log(f"  {name}: {seconds:.1f}s")
        for line in facts:
            log(f"  {line}")
        if check.ok:
            log(f"SQL check: the baseline issues runwatch's {len(check.runwatch)} statements for "
                f"a first REST report (GraphQL reportRun issues {check.graphql_statements})")
        else:
            log("WARNING: the baseline's SQL no longer matches runwatch's for a first report:")
            for problem in check.problems:
                log(f"  {problem}")
        if opts.show_sql:
            print_sql(check)
        log("request profile (runwatch in-process, sequential, warm; PostgreSQL time from "
            "EXPLAIN ANALYZE):")
        for request in prepared.profiles:
            for line in request.lines():
                log(f"  {line}")

        log_dir = RESULTS_DIR / "logs"
        env = base_env()
        runwatch = Server("runwatch", "runwatch.app:create_app",
                          {**env, "DATABASE_URL": fixture.database_url}, log_dir)
        nocache = Server("nocache", "runwatch.app:create_app",
                         {**env, "DATABASE_URL": fixture.database_url,
                          "RUNWATCH_TELEMETRY_CACHE": "0"}, log_dir)
        baseline = Server("baseline", "bench.baseline:create_app", {
            **env,
            "BASELINE_DATABASE_URL": fixture.database_url,
            "BASELINE_ORGANISATION_ID": str(fixture.organisation_id),
            "BASELINE_REPORT_TOKEN": fixture.report_token,
            "BASELINE_READ_TOKEN": fixture.read_token,
        }, log_dir)
        for server in (runwatch, baseline, nocache):
            servers.append(server)
            server.start()
        for server in (runwatch, baseline, nocache):
            server.wait_ready("/health")
            log(f"{server.name} ready on {server.url} ({' '.join(server.command()[1:])})")

        bench = Bench(opts, fixture, runwatch, baseline, nocache, log)
        bench.preflight()
        bench.run()

        rows = bench.rows()
        valid = all(r.valid for r in rows)
        total = log.elapsed()
        print()
        print(format_table(rows))
        print()
        if not valid:
            print("!" * 78)
            print("INVALID: at least one scenario had non-2xx responses, socket errors or "
                  "requests that completed no fresh run; its figures are not results. See the "
                  "INVALID lines above.")
            print("!" * 78)
        print(f"total time {total:.0f}s; absolute figures are for this machine only, the ratios "
              "are the result.")
        out = RESULTS_DIR / "latest.json"
        write_json(out, {
            "started_at": started_at,
            "total_seconds": round(total, 1),
            "valid": valid,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "busy_before_start": busy},
            "options": asdict(opts),
            "setup_seconds": {k: round(v, 2) for k, v in fixture.timings.items()},
            "sql_check": {"ok": check.ok, "problems": check.problems,
                          "runwatch_statements": len(check.runwatch),
                          "graphql_statements": check.graphql_statements},
            "profile": [{"request": p.name, "status": p.status, "wall_ms": round(p.wall_ms, 3),
                         "db_ms": round(p.db_ms, 3),
                         "statements": [{"sql": " ".join(st.sql.split()),
                                         "db_ms": round(st.db_ms, 3),
                                         "scans": [asdict(x) for x in st.scans[:3]]}
                                        for st in p.statements]}
                        for p in prepared.profiles],
            "rows": [{**asdict(r), "verdict": r.verdict} for r in rows],
            "runs": [{"scenario": m.scenario, "target": m.target, "round": m.round,
                      **{k: v for k, v in asdict(m.result).items() if k != "raw"}}
                     for m in bench.measured],
        })
        print(f"written to {out.relative_to(ROOT)}")
        exit_code = 0 if valid else 1
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr, flush=True)
        exit_code = 2
    except HardTimeout as exc:
        print(f"\nBENCHMARK STOPPED: {exc}; stopping everything it started", file=sys.stderr,
              flush=True)
        exit_code = 3
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything the benchmark started", file=sys.stderr)
        exit_code = 130
    except Exception:  # anything else: report it, then clean up
        traceback.print_exc()
        print("\nBENCHMARK FAILED (unexpected error above); stopping everything it started",
              file=sys.stderr, flush=True)
        exit_code = 2
    finally:
        signal.alarm(0)
        for server in servers:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if database_touched and not opts.keep_db:
            try:
                asyncio.run(asyncio.wait_for(seed.drop_database(), 30))
            except Exception as exc:  # best effort, and say so
                print(f"could not drop database {seed.DB_NAME}: {exc}", file=sys.stderr)
    return exit_code
