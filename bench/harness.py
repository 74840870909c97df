"""The benchmark: set up, start both servers, drive them with wrk, print ratios.

`python -m bench` (or `make bench`). See bench/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import urlencode

import httpx

from bench import abab, profile, seed, sqlcheck
from bench.procs import (
    HOST,
    ROOT,
    BenchError,
    Server,
    WorkerProcess,
    WrkResult,
    ensure_wrk,
    machine_busy,
    process_cpu_seconds,
    run_wrk,
)
from bench.seed import GROUPS, IdRange

BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
LUA_SEQUENTIAL = BENCH_DIR / "sequential_ids.lua"
LUA_WATCHER = BENCH_DIR / "watcher_round.lua"
SETUP_TIMEOUT = 600  # seconds for drop/create/migrate/seed/check (slow when the machine is busy)
GRAPHQL_REPORT = "mutation($i: ReportRunInput!) { reportRun(input: $i) { __typename } }"
APPEND_BODIES = {
    "log": {"appendLog": {"level": "info", "message": seed.LOG_MESSAGE}},
    "sample": {"appendTelemetrySample": {"rows": 10, "bytes": 100, "progress": 5}},
}
FINISH_BODY = {"status": "succeeded"}
GROUP_HELP = {
    "report": "1, 2: run reports (REST, GraphQL)",
    "telemetry": "3, 4, 3', 4': telemetry throughput and latency",
    "elt": "5-8: ELT appendLog / appendTelemetrySample, empty and at the cap",
    "webhooks": "9, 10: webhook burst, reporter latency against a slow receiver",
    "watcher": "11: the Watcher round (POST /pipeline, start, end, GET the execution)",
    "cost": "12: the GraphQL runs list screen with the query cost analysis on vs off",
}
# Scenario 12: the dashboard's runs list (as the soak sends it), over GET so that plain wrk
# can send it; its cost is 50 (the analysis walks it on every request).
RUNS_SCREEN = "{ runs(first: 50) { nodes { id status pipeline { name } } } }"
RUNS_SCREEN_PATH = "/graphql?" + urlencode({"query": RUNS_SCREEN})
# The end of a Watcher round outside wrk (the counts watcher_round.lua reports too).
WATCHER_END = sqlcheck.WATCHER_END


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
    only: tuple[str, ...] = GROUPS
    hook_delay_ms: float = 20
    slow_receiver_seconds: float = 10
    drain_timeout: float = 60

    @property
    def hook_rate_cap(self) -> float:
        """The most terminal PATCHes a second scenario 10's wrk can send."""
        return self.latency_connections * 1000 / self.hook_delay_ms


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="runwatch vs a raw asyncpg baseline, driven by wrk on 127.0.0.1; prints "
                    "ratios (see bench/README.md).",
    )
    parser.add_argument("--duration", type=float, default=3, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1, help="warm-up seconds before each")
    parser.add_argument("--rounds", type=int, default=6,
                        help="ABAB rounds, the side that goes first alternating (results: the "
                             "median ratio of the rounds and their spread)")
    parser.add_argument("--connections", type=int, default=16,
                        help="wrk connections for the throughput scenarios 1-3 and 5-8 (and "
                             "the concurrency of the webhook burst's PATCHes)")
    parser.add_argument("--latency-connections", type=int, default=4,
                        help="wrk connections for the latency scenarios 4 and 10")
    parser.add_argument("--hook-delay-ms", type=float, default=20,
                        help="scenario 10: each connection's pause before each terminal PATCH "
                             "(caps the rate, so that latency is measured below saturation)")
    parser.add_argument("--slow-receiver-seconds", type=float, default=10,
                        help="scenario 10: how long the slow receiver takes to answer")
    parser.add_argument("--drain-timeout", type=float, default=60,
                        help="scenarios 9, 10: the longest wait for webhook deliveries to drain")
    parser.add_argument("--only", default=",".join(GROUPS),
                        help="comma-separated groups of scenarios to run: "
                             + "; ".join(f"{g} ({h})" for g, h in GROUP_HELP.items())
                             + " (default: all)")
    parser.add_argument("--time-limit", type=int, default=1800,
                        help="hard stop after this many seconds (everything started is stopped)")
    parser.add_argument("--keep-db", action="store_true",
                        help=f"keep the {seed.DB_NAME} database afterwards (dropped by default)")
    parser.add_argument("--show-sql", action="store_true",
                        help="print the statements of one first report (runwatch and baseline), "
                             "of one ELT append of each kind and of one Watcher round (both)")
    a = parser.parse_args(argv)
    if a.rounds < 1 or a.duration < 1 or a.warmup < 1 or a.connections < 1:
        parser.error("--rounds, --duration, --warmup and --connections must be at least 1")
    if a.hook_delay_ms <= 0 or a.slow_receiver_seconds <= 0 or a.drain_timeout <= 0:
        parser.error("--hook-delay-ms, --slow-receiver-seconds and --drain-timeout must be "
                     "positive")
    only = tuple(g.strip().lower() for g in a.only.split(",") if g.strip())
    unknown = [g for g in only if g not in GROUPS]
    if unknown or not only:
        parser.error(f"--only: unknown group {unknown[0] if unknown else '(none)'!r}; "
                     f"known: {', '.join(GROUPS)}")
    return Options(a.duration, a.warmup, a.rounds, a.connections, a.latency_connections,
                   a.time_limit, a.keep_db, a.show_sql,
                   only=tuple(g for g in GROUPS if g in only), hook_delay_ms=a.hook_delay_ms,
                   slow_receiver_seconds=a.slow_receiver_seconds,
                   drain_timeout=a.drain_timeout)


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Log:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, message: str = "") -> None:
        print(f"[{self.elapsed():5.0f}s] {message}" if message else "", flush=True)


def run_async(coro: Any, timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------------------------- the bench


@dataclass
class Measured:
    scenario: str
    target: str  # "runwatch", "baseline", "10k", "1m", "empty", "cap", "fast", "slow"
    round: int
    result: WrkResult


@dataclass
class Row:
    scenario: str
    unit: str
    runwatch: float  # the median of the rounds
    baseline: float
    ratio: float  # the median of the round ratios (bench/abab.py)
    goal: str
    goal_value: float | None  # None: shown for information, no goal
    higher_is_better: bool
    valid: bool
    round_ratios: list[float] = field(default_factory=list)
    ratio_format: str = "ratio"  # "ratio", or "count" (a number of things, goal a maximum)
    ratio_unit: str = ""  # what the ratio column is in ("" for a ratio; "ms" for CPU/request)

    @property
    def comparison(self) -> abab.Comparison:
        return abab.of_ratios(self.round_ratios or [self.ratio], goal=self.goal_value,
                              higher_is_better=self.higher_is_better)

    @property
    def spread(self) -> float:
        return self.comparison.spread

    @property
    def verdict(self) -> str:
        """INVALID, or bench/abab.py's rule: unstable above a 15 % spread of the rounds,
        else PASS/MISS against the goal (info without one)."""
        if not self.valid:
            return "INVALID"
        return self.comparison.verdict

    def common(self) -> dict[str, Any]:
        """The row in the format every benchmark module writes (bench/all.py collects it)."""
        def num(x: float) -> float | None:
            return round(x, 4) if math.isfinite(x) else None

        unit = self.ratio_unit or ("count" if self.ratio_format == "count" else "")
        return {"measure": self.scenario, "goal": self.goal, "median": num(self.ratio),
                "spread": num(self.spread), "verdict": self.verdict,
                "rounds": [num(r) for r in self.round_ratios or [self.ratio]], "unit": unit}


class Check:
    """What the database must show after a wrk run (a GraphQL error is HTTP 200, an append
    that stored nothing would be too: wrk cannot see either)."""

    def before(self, ids: IdRange) -> Any:
        return None

    def after(self, ids: IdRange, result: WrkResult, state: Any, phase: str) -> None:
        raise NotImplementedError


class CompletedRuns(Check):
    """Every answered request completed a fresh run of the range."""

    def after(self, ids: IdRange, result: WrkResult, state: Any, phase: str) -> None:
        done = run_async(seed.completed_runs(ids.first, ids.count))
        result.runs_completed = done
        if done < result.requests:
            result.problems.append(
                f"{result.requests - done} answered requests completed no run "
                f"({result.requests} requests, {done} runs completed)")


class Appended(Check):
    """Every answered request stored one line (sample) on the set of runs; on runwatch, every
    run's stored series still matches its numbers (the cap holds, nothing lost)."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind, self.target = kind, target

    def before(self, ids: IdRange) -> Any:
        return run_async(seed.appended(self.kind, self.target, ids))

    def after(self, ids: IdRange, result: WrkResult, state: Any, phase: str) -> None:
        stored = run_async(seed.appended(self.kind, self.target, ids)) - state
        result.details["appended"] = stored
        if stored < result.requests:
            result.problems.append(
                f"{result.requests - stored} answered requests appended nothing "
                f"({result.requests} requests, {stored} appended)")
        if self.target == "runwatch":
            bad = run_async(seed.inconsistent_series(self.kind, ids), 60)
            result.details["inconsistent_runs"] = bad
            if bad:
                result.problems.append(f"{bad} runs' stored {self.kind} series no longer "
                                       "match their numbers")


class WatcherRounds(Check):
    """Every round the script counted (its GET answered 200) ended an execution of the
    Watcher pipelines (wrk cannot see which request of a round an answer was for)."""

    def __init__(self, pipelines: list[int]) -> None:
        self.pipelines = pipelines

    def before(self, ids: IdRange | None) -> Any:
        return run_async(seed.max_run_id())

    def after(self, ids: IdRange | None, result: WrkResult, state: Any, phase: str) -> None:
        started, ended = run_async(seed.watcher_executions(self.pipelines, state))
        result.details.update(rounds=result.rounds, executions_started=started,
                              executions_ended=ended)
        if result.rounds is None:
            result.problems.append("the round script reported no count of rounds")
        elif ended < result.rounds:
            result.problems.append(f"{result.rounds - ended} rounds ended no execution "
                                   f"({result.rounds} rounds, {ended} executions ended)")


class Bench:
    def __init__(self, opts: Options, fixture: seed.Fixture, servers: dict[str, Server],
                 log: Log) -> None:
        self.opts = opts
        self.f = fixture
        self.servers = servers
        self.log = log
        self.measured: list[Measured] = []
        self.completed_at = iso_z(fixture.now - timedelta(minutes=30))
        org = fixture.organisation_id
        self.prefix = f"/api/v1/organisations/{org}/integrations/warehouse-connections"
        self.burst: dict[str, Any] = {}
        self.burst_problems: list[str] = []
        assert fixture.elt is not None and fixture.watcher is not None
        self.elt = fixture.elt
        self.watcher = fixture.watcher

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

    @staticmethod
    def elt_path(target: str, run_id: str) -> str:
        return f"/elt/runs/{run_id}" if target == "baseline" else f"/api/elt/runs/{run_id}"

    def write_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.elt.write_token}"}

    # -- preflight: every request shape once, outside wrk -----------------------------------

    def preflight(self) -> None:
        groups = self.opts.only
        with httpx.Client(timeout=30) as client:
            if "report" in groups:
                self._preflight_report(client)
            if "telemetry" in groups:
                self._preflight_telemetry(client)
            if "elt" in groups:
                self._preflight_elt(client)
            if "watcher" in groups:
                self._preflight_watcher(client)
            if "cost" in groups:
                self._preflight_cost(client)

    def _preflight_cost(self, client: httpx.Client) -> None:
        """Both servers answer the screen with its 50 runs; only `runwatch` states a cost."""
        auth = {"Authorization": f"Bearer {self.f.read_token}"}
        for target, costed in (("runwatch", True), ("nocost", False)):
            r = client.get(self.servers[target].url + RUNS_SCREEN_PATH, headers=auth)
            body = r.json() if r.status_code == 200 else {}
            nodes = (body.get("data") or {}).get("runs", {}).get("nodes") or []
            if "errors" in body or len(nodes) != 50:
                raise BenchError(f"preflight: the runs screen on {target} answered "
                                 f"{r.status_code} {r.text[:300]}")
            if ("cost" in (body.get("extensions") or {})) != costed:
                raise BenchError(f"preflight: the runs screen on {target} "
                                 f"{'lacks' if costed else 'has'} a cost: {r.text[:300]}")

    def _preflight_report(self, client: httpx.Client) -> None:
        report_auth = {"Authorization": f"Bearer {self.f.report_token}",
                       "Content-Type": "application/json"}
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

    def _preflight_telemetry(self, client: httpx.Client) -> None:
        read_auth = {"Authorization": f"Bearer {self.f.read_token}"}
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

    def _preflight_elt(self, client: httpx.Client) -> None:
        runwatch, baseline = self.servers["runwatch"].url, self.servers["baseline"].url
        gateway = {"Authorization": f"Bearer {self.elt.gateway_token}"}
        for kind, dropped_key in (("log", "logEntriesDropped"),
                                  ("sample", "telemetrySamplesDropped")):
            # An empty run: nothing dropped; a run at its cap: the oldest entry dropped.
            for state, dropped in (("empty", 0), ("cap", 1)):
                run_id = self.f.preflight_id(f"{kind}-{state}")
                r = client.patch(f"{runwatch}/api/elt/runs/{run_id}", json=APPEND_BODIES[kind],
                                 headers=self.write_auth())
                got = r.json().get("run", {}).get(dropped_key) if r.status_code == 200 else None
                if got != dropped:
                    raise BenchError(f"preflight: runwatch {kind} append to a run {state} "
                                     f"answered {r.status_code} ({dropped_key} {got}, expected "
                                     f"{dropped}): {r.text[:300]}")
                bad = run_async(seed.inconsistent_series(kind, IdRange(run_id, 1)))
                if bad:
                    raise BenchError(f"preflight: run {run_id}'s {kind} series does not match "
                                     "its numbers after one append")
            r = client.patch(f"{baseline}/elt/runs/{self.f.preflight_id(f'{kind}-empty')}",
                             json=APPEND_BODIES[kind], headers=self.write_auth())
            if r.status_code != 204:
                raise BenchError(f"preflight: baseline {kind} append answered {r.status_code}: "
                                 f"{r.text[:300]}")
        r = client.patch(f"{runwatch}/api/agent/runs/{self.f.preflight_id('log-empty')}",
                         json=APPEND_BODIES["log"], headers=gateway)
        if r.status_code != 200:
            raise BenchError(f"preflight: runwatch appendLog through /api/agent (gateway token) "
                             f"answered {r.status_code}: {r.text[:300]}")
        self.log("preflight: appendLog and appendTelemetrySample 200 on runwatch (empty run: "
                 "0 dropped; run at its cap: 1 dropped, series consistent; /api/agent too), "
                 "204 on the baseline")

    def watcher_round_once(self, client: httpx.Client, base: str, mark: str) -> dict[str, Any]:
        """One Watcher round on the check pipeline (outside wrk): each answer, checked."""
        w = self.watcher
        auth = {"Authorization": f"Bearer {w.token}"}
        answers: dict[str, Any] = {}

        def expect(step: str, r: httpx.Response, status: int) -> Any:
            if r.status_code != status:
                raise BenchError(f"{base}: Watcher {step} answered {r.status_code} "
                                 f"(expected {status}): {r.text[:300]}")
            answers[step] = r.json() if r.content else None
            return answers[step]

        found = expect("POST /pipeline", client.post(f"{base}/pipeline", headers=auth, json={
            "name": w.check_name, "pipeline_type_name": seed.WATCHER_TYPE,
            "next_watermark": mark}), 200)
        if found.get("id") != w.check_pipeline:
            raise BenchError(f"{base}: POST /pipeline found {found}, expected "
                             f"pipeline {w.check_pipeline}")
        started = expect("start", client.post(f"{base}/start_pipeline_execution", headers=auth,
                                              json={"pipeline_id": w.check_pipeline,
                                                    "parent_id": w.check_parent}), 201)
        end_date = iso_z(datetime.now(UTC) + timedelta(seconds=1))
        expect("end", client.post(f"{base}/end_pipeline_execution", headers=auth,
                                  json={"id": started["id"], "end_date": end_date,
                                        **WATCHER_END}), 204)
        tree = expect("GET", client.get(f"{base}/pipeline_execution/{started['id']}",
                                        headers=auth), 200)
        if (tree.get("id") != started["id"] or tree.get("status") != "succeeded"
                or tree.get("parent_id") != w.check_parent
                or tree.get("child_executions") != []):
            raise BenchError(f"{base}: GET /pipeline_execution answered {tree}")
        return answers

    def _preflight_watcher(self, client: httpx.Client) -> None:
        """A round on each server; the second one's POST /pipeline must answer the watermark
        the first one's end moved (the next watermark it had sent); both answer the same
        shapes."""
        shapes = {}
        for n, target in enumerate(("runwatch", "baseline")):
            try:
                answers = self.watcher_round_once(client, self.servers[target].url,
                                                  f"preflight-{n}")
            except BenchError as exc:
                raise BenchError(f"preflight: {target} {exc}") from None
            if n == 1 and answers["POST /pipeline"].get("watermark") != "preflight-0":
                raise BenchError("preflight: the baseline's POST /pipeline answered watermark "
                                 f"{answers['POST /pipeline'].get('watermark')!r}, expected "
                                 "'preflight-0' (runwatch's end should have moved it)")
            shapes[target] = {step: sorted(a) if isinstance(a, dict) else a
                              for step, a in answers.items()}
        if shapes["runwatch"] != shapes["baseline"]:
            raise BenchError(f"preflight: the Watcher answers differ in shape: runwatch "
                             f"{shapes['runwatch']}, baseline {shapes['baseline']}")
        self.log("preflight: Watcher round 200/201/204/200 on both servers, same answer shapes, "
                 "the watermark moved by the end")

    # -- wrk runs ---------------------------------------------------------------------------

    def _wrk(self, scenario: str, target: str, server: str, round_no: int, *,
             path: str | None = None, method: str = "GET", slot: str | None = None,
             body: str = "", connections: int | None = None, token: str | None = None,
             cycle: bool = False, delay_ms: float | None = None, check: Check | None = None,
             around: Callable[[str], Any] | None = None,
             after_measure: Callable[[WrkResult], None] | None = None,
             script: Path | None = None, script_env: dict[str, str] | None = None,
             threads: int = 1, probe: Callable[[], str] | None = None) -> WrkResult:
        """Warm-up, then the measured run; returns (and records) the measured one.

        `slot`: the pre-created runs the requests go to (`{slot}-r{round}-{phase}` ranges, an
        id each; with `cycle`, the one range `slot` for both phases, round and round).
        `around(phase)` runs before each phase; `after_measure` after the measured run.
        `script` (with `script_env`, `threads`): another wrk script, its own parameters;
        `probe()`: what a request of the same kind answers now, after non-2xx answers."""
        srv = self.servers[server]
        result: WrkResult | None = None
        warmup_problems: list[str] = []
        if slot is not None and check is None:
            check = CompletedRuns()
        for phase, seconds in (("warmup", self.opts.warmup), ("measure", self.opts.duration)):
            label = f"{scenario} {target} r{round_no} {phase}"
            kwargs: dict[str, Any] = {"duration": seconds,
                                      "connections": connections or self.opts.connections}
            ids: IdRange | None = None
            if slot is not None:
                ids = self.f.ranges[slot if cycle else f"{slot}-r{round_no}-{phase}"]
                kwargs["script"] = LUA_SEQUENTIAL
                kwargs["script_env"] = {
                    "BENCH_METHOD": method, "BENCH_PATH": path or "/", "BENCH_BODY": body,
                    "BENCH_TOKEN": token or self.f.report_token,
                    "BENCH_FIRST_ID": str(ids.first), "BENCH_ID_COUNT": str(ids.count),
                    "BENCH_CYCLE": "1" if cycle else "0",
                    "BENCH_DELAY_MS": f"{delay_ms:g}" if delay_ms else "0",
                }
                url = srv.url + "/"
            elif script is not None:
                kwargs.update(script=script, script_env=script_env or {}, threads=threads)
                url = srv.url + "/"
            else:
                kwargs["headers"] = [f"Authorization: Bearer {self.f.read_token}"]
                url = srv.url + (path or "/")
            if around is not None:
                around(phase)
            state = check.before(ids) if check is not None else None
            pg_before = run_async(seed.pg_snapshot())
            db_before = self._db_cpu(pg_before)
            cpu_before = srv.cpu_seconds()
            result = run_wrk(label, url, **kwargs)
            cpu_after = srv.cpu_seconds()
            pg_after = run_async(seed.pg_snapshot())
            db_after = self._db_cpu(pg_after)
            if cpu_before is not None and cpu_after is not None and result.requests:
                result.server_cpu_ms = (cpu_after - cpu_before) * 1000 / result.requests
            if db_after and result.requests:
                # A backend that appeared meanwhile (a pool replacing a connection) spent all
                # its CPU during the run; one that went away is missed (rare).
                result.db_cpu_ms = (sum(cpu - db_before.get(pid, 0.0)
                                        for pid, cpu in db_after.items()) * 1000
                                    / result.requests)
            if result.requests:
                result.wal_bytes = ((pg_after.wal_position - pg_before.wal_position)
                                    / result.requests)
            if pg_before.checkpoints is not None and pg_after.checkpoints is not None:
                result.checkpoint = pg_after.checkpoints > pg_before.checkpoints
            srv.check_alive()
            if result.non_2xx:
                result.problems.append(probe() if probe is not None else self._probe(
                    srv, method, path or "/", body, token, ids, result, cycle))
            if phase == "measure" and after_measure is not None:
                after_measure(result)  # first: it observes the state right after the load
            if check is not None:
                check.after(ids, result, state, phase)
            if phase == "warmup" and not result.valid:
                self.log(f"{label}: {result.summary()}")
                warmup_problems.append(f"the warm-up was invalid ({result.errors} errors, "
                                       f"{'; '.join(result.problems) or 'see above'})")
        assert result is not None
        result.problems.extend(warmup_problems)
        self.measured.append(Measured(scenario, target, round_no, result))
        mark = "" if result.valid else "   <<<<<<<<<< INVALID"
        self.log(f"r{round_no} {scenario:<22} {target:<8} {result.summary()}{mark}")
        if result.details:
            self.log("    " + ", ".join(f"{k} {v}" for k, v in result.details.items()))
        return result

    def _probe(self, srv: Server, method: str, path: str, body: str, token: str | None,
               ids: IdRange | None, result: WrkResult, cycle: bool) -> str:
        """What a request of the same shape answers now (wrk counts non-2xx answers, it does
        not keep them): on the next run of the range, or the first of a cycled set."""
        run_id = 0
        if ids is not None:
            used = result.ids_used or 0
            run_id = ids.first if cycle else ids.first + min(used, ids.count - 1)
        # The token the wrk run used (see above): given, or the report (read) token.
        auth = token or (self.f.report_token if ids is not None else self.f.read_token)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {auth}"}
        try:
            r = httpx.request(method, srv.url + path.replace("{ID}", str(run_id)),
                              content=body.replace("{ID}", str(run_id)) or None,
                              headers=headers, timeout=10)
            answer = f"{r.status_code}: {' '.join(r.text.split())[:200]}"
        except httpx.HTTPError as exc:
            answer = type(exc).__name__
        return f"a request of the same shape now answers {answer}"

    @staticmethod
    def _db_cpu(snapshot: seed.PgSnapshot) -> dict[int, float]:
        """CPU seconds of each backend of the benchmark database that /proc can tell about
        (none when PostgreSQL runs elsewhere)."""
        seconds = {pid: process_cpu_seconds(pid) for pid in snapshot.backend_pids}
        return {pid: s for pid, s in seconds.items() if s is not None}

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

    def append(self, kind: str, target: str, round_no: int) -> None:
        """`target`: "runwatch" (runs without lines yet), "cap" (runwatch on runs at their cap)
        or "baseline"."""
        server = "baseline" if target == "baseline" else "runwatch"
        slot = f"{kind}-cap" if target == "cap" else f"{kind}-{target}-r{round_no}"
        scenario = "5 appendLog" if kind == "log" else "7 appendTelemetrySample"
        self._wrk(scenario, target, server, round_no, method="PATCH",
                  path=self.elt_path(server, "{ID}"), slot=slot, cycle=True,
                  body=json.dumps(APPEND_BODIES[kind]), token=self.elt.write_token,
                  check=Appended(kind, server))

    def runs_screen(self, target: str, round_no: int) -> None:
        self._wrk("12 GraphQL runs screen", target, target, round_no, path=RUNS_SCREEN_PATH)

    def watcher_round(self, target: str, round_no: int) -> None:
        """Scenario 11: each wrk connection (its own thread) a Watcher job going round its
        pipeline: POST /pipeline, start a child of the pipeline's running root, end it, GET
        it."""
        w = self.watcher
        srv = self.servers[target]

        def probe() -> str:
            try:
                with httpx.Client(timeout=10) as client:
                    self.watcher_round_once(client, srv.url, f"probe-{time.monotonic()}")
                return "one more round on the check pipeline now succeeds"
            except (BenchError, httpx.HTTPError) as exc:
                return f"one more round on the check pipeline now fails: {exc}"

        self._wrk("11 Watcher round", target, target, round_no, script=LUA_WATCHER,
                  threads=self.opts.connections, script_env={
                      "BENCH_TOKEN": w.token, "BENCH_TYPE": seed.WATCHER_TYPE,
                      "BENCH_PIPELINES": ",".join(map(str, w.pipelines)),
                      "BENCH_NAMES": ",".join(w.names),
                      "BENCH_PARENTS": ",".join(map(str, w.parents)),
                  }, check=WatcherRounds(w.pipelines), probe=probe)

    def run(self) -> None:
        groups = self.opts.only
        for round_no in range(1, self.opts.rounds + 1):
            # Alternate the order from one round to the next, so that drift (caches, autovacuum,
            # a noisy neighbour) does not always favour the same side.
            odd = round_no % 2 == 1
            pair = ("baseline", "runwatch") if odd else ("runwatch", "baseline")
            sizes = ("10k", "1m") if odd else ("1m", "10k")
            appends = ("baseline", "runwatch", "cap") if odd else ("cap", "runwatch", "baseline")
            if {"report", "telemetry", "elt", "watcher", "cost"} & set(groups):
                self.log(f"round {round_no} of {self.opts.rounds}")
            if "report" in groups:
                for target in pair:
                    self.rest_report(target, round_no)
                self.graphql_report(round_no)
            if "telemetry" in groups:
                for target in (*pair, "nocache"):
                    self.telemetry_throughput(target, round_no)
                for server in ("runwatch", "nocache"):
                    for size in sizes:
                        self.telemetry_latency(size, round_no, server)
            if "elt" in groups:
                for kind in ("log", "sample"):
                    for target in appends:
                        self.append(kind, target, round_no)
            if "watcher" in groups:
                for target in pair:
                    self.watcher_round(target, round_no)
            if "cost" in groups:
                for target in (("nocost", "runwatch") if odd else ("runwatch", "nocost")):
                    self.runs_screen(target, round_no)

    # -- webhooks (scenarios 9 and 10): their own runwatch server and the receiver ------------

    def receiver(self, **control: Any) -> dict[str, Any]:
        r = httpx.post(self.servers["receiver"].url + "/control", json=control, timeout=10)
        r.raise_for_status()
        return r.json()

    def receiver_stats(self, with_ids: bool = False) -> dict[str, Any]:
        r = httpx.get(self.servers["receiver"].url + "/stats",
                      params={"ids": "1"} if with_ids else None, timeout=10)
        r.raise_for_status()
        return r.json()

    def drain(self, what: str) -> float:
        """Wait (bounded) until the ELT organisation has no delivery left to send; returns
        how long it took. The receiver must be answering at once."""
        t0 = time.monotonic()
        deadline = t0 + self.opts.drain_timeout
        while True:
            pending = run_async(seed.pending_deliveries(self.elt.organisation_id))
            if pending == 0:
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: {pending} webhook deliveries still pending after "
                                 f"{self.opts.drain_timeout:g}s (--drain-timeout)")
            time.sleep(0.2)

    def webhook_setup(self) -> None:
        hooks = self.servers["hooks"].url
        hook_url = self.servers["receiver"].url + "/hook"
        r = httpx.put(f"{hooks}/api/elt/runs/webhook", json={"url": hook_url},
                      headers=self.write_auth(), timeout=30)
        webhook = r.json().get("webhook") if r.status_code == 200 else None
        if not webhook or not webhook.get("secret"):
            raise BenchError(f"PUT /api/elt/runs/webhook answered {r.status_code}: "
                             f"{r.text[:300]}")
        self.receiver(delay=0, secret=webhook["secret"], reset=True)
        self.log(f"webhook endpoint {webhook['id']} (organisation default) -> {hook_url}; the "
                 "receiver verifies its signatures")
        # One delivery end to end before anything is measured.
        run_id = self.f.preflight_id("hooks")
        r = httpx.patch(f"{hooks}/api/elt/runs/{run_id}", json=FINISH_BODY,
                        headers=self.write_auth(), timeout=30)
        if r.status_code != 200 or r.json()["run"]["status"] != "succeeded":
            raise BenchError(f"preflight: terminal PATCH answered {r.status_code}: "
                             f"{r.text[:300]}")
        waited = self.drain("preflight delivery")
        stats = self.receiver_stats()
        if stats["distinct"] != 1 or stats["bad_signatures"] or stats["duplicates"]:
            raise BenchError(f"preflight: the receiver saw {stats} after one delivery")
        self.log(f"preflight: terminal PATCH 200, its delivery received in {waited:.2f}s with a "
                 "valid signature")

    def webhook_burst(self) -> None:
        """Scenario 9: finish HOOK_BURST running runs, wait for every delivery, count what the
        receiver got."""
        ids = self.f.ranges["hooks-burst"]
        hooks = self.servers["hooks"]
        self.receiver(delay=0, reset=True)
        worker = self.servers["worker"]
        before_cpu, before_worker = hooks.cpu_seconds(), worker.cpu_seconds()

        async def finish_all() -> tuple[list[int | str], float]:
            gate = asyncio.Semaphore(self.opts.connections)
            limits = httpx.Limits(max_connections=self.opts.connections)
            async with httpx.AsyncClient(base_url=hooks.url, timeout=30, limits=limits,
                                         headers=self.write_auth()) as client:
                async def one(run_id: int) -> int | str:
                    async with gate:
                        try:
                            r = await client.patch(f"/api/elt/runs/{run_id}", json=FINISH_BODY)
                        except httpx.HTTPError as exc:
                            return type(exc).__name__
                        return r.status_code
                t0 = time.monotonic()
                statuses = await asyncio.gather(*(one(ids.first + n) for n in range(ids.count)))
                return list(statuses), time.monotonic() - t0

        t0 = time.monotonic()
        statuses, sent_seconds = run_async(finish_all(), 120)
        bad = [s for s in statuses if s != 200]
        if bad:
            self.burst_problems.append(f"{len(bad)} terminal PATCHes failed (e.g. {bad[0]})")
        deadline = t0 + self.opts.drain_timeout
        while True:
            got = run_async(seed.deliveries(ids))
            if got.delivered + got.failed >= ids.count or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        drained = time.monotonic() - t0
        after_cpu, after_worker = hooks.cpu_seconds(), worker.cpu_seconds()
        if None not in (before_cpu, after_cpu, before_worker, after_worker):
            after_cpu += after_worker - before_worker  # the API process and the worker
        got = run_async(seed.deliveries(ids, with_ids=True))
        stats = self.receiver_stats(with_ids=True)
        received = set(stats.pop("ids"))
        missing = len(got.message_ids - received)
        unknown = len(received - got.message_ids)
        self.burst = {
            "runs": ids.count, "patches_ok": ids.count - len(bad),
            "patch_seconds": round(sent_seconds, 2),
            "drain_seconds": round(drained, 2), "drained": got.delivered >= ids.count,
            "deliveries": got.total, "delivered": got.delivered, "failed": got.failed,
            "pending": got.pending, "attempts": got.attempts,
            "received_requests": stats["requests"], "received_distinct": stats["distinct"],
            "duplicates": stats["duplicates"], "bad_signatures": stats["bad_signatures"],
            "missing_id": stats["missing_id"], "not_received": missing,
            "received_unknown": unknown,
            "server_cpu_ms_per_run": (round((after_cpu - before_cpu) * 1000 / ids.count, 2)
                                      if before_cpu is not None and after_cpu is not None
                                      else None),
        }
        b = self.burst
        rate = b["delivered"] / drained if drained else float("nan")
        self.log(f"9 webhook burst: {b['patches_ok']}/{ids.count} terminal PATCHes 200 in "
                 f"{sent_seconds:.1f}s; {b['delivered']}/{b['deliveries']} deliveries delivered "
                 f"after {drained:.1f}s ({rate:.0f}/s; {b['failed']} failed, {b['pending']} "
                 f"pending, {b['attempts']} attempts); receiver: {b['received_requests']} "
                 f"requests, {b['received_distinct']} distinct webhook-ids, {b['duplicates']} "
                 f"duplicates, {b['bad_signatures']} bad signatures, {missing} not received, "
                 f"{unknown} unknown; server CPU {b['server_cpu_ms_per_run']} ms per run")

    def hook_latency(self, mode: str, round_no: int) -> None:
        """Scenario 10: terminal PATCH latency while the receiver answers at once ("fast") or
        after --slow-receiver-seconds ("slow"). Every wrk phase starts with no delivery
        queued (the receiver answers at once while the queue drains)."""
        delay = self.opts.slow_receiver_seconds if mode == "slow" else 0

        def around(phase: str) -> None:
            self.receiver(delay=0)  # releases any sleeping answer
            waited = self.drain(f"10 before {mode} r{round_no} {phase}")
            if waited > 0.5:
                self.log(f"    queue drained in {waited:.1f}s before {mode} r{round_no} {phase}")
            self.receiver(delay=delay, reset=True)

        def observe(result: WrkResult) -> None:
            stats = self.receiver_stats()
            pending = run_async(seed.pending_deliveries(self.elt.organisation_id))
            result.details.update(
                receiver_requests=stats["requests"], in_flight_at_end=stats["in_flight"],
                max_in_flight=stats["max_in_flight"], slow_answers=stats["slow_answers"],
                queued_at_end=pending)
            if mode == "slow" and (stats["in_flight"] < 1 or pending < 1):
                result.problems.append(
                    f"the slow receiver was not holding deliveries at the end of the run "
                    f"({stats['in_flight']} in flight, {pending} queued): not measured against "
                    "a slow receiver")

        self._wrk("10 terminal PATCH", mode, "hooks", round_no, method="PATCH",
                  path="/api/elt/runs/{ID}", slot=f"hooks-{mode}", body=json.dumps(FINISH_BODY),
                  token=self.elt.write_token, connections=self.opts.latency_connections,
                  delay_ms=self.opts.hook_delay_ms, around=around, after_measure=observe)

    def run_webhooks(self) -> None:
        self.webhook_setup()
        self.webhook_burst()
        for round_no in range(1, self.opts.rounds + 1):
            modes = ("fast", "slow") if round_no % 2 else ("slow", "fast")
            self.log(f"scenario 10, round {round_no} of {self.opts.rounds}")
            for mode in modes:
                self.hook_latency(mode, round_no)

    # -- results ----------------------------------------------------------------------------

    def _runs(self, scenario: str, target: str) -> list[WrkResult]:
        return [m.result for m in self.measured if m.scenario == scenario and m.target == target]

    def rows(self) -> list[Row]:
        def row(name: str, unit: str, runwatch: list[WrkResult], baseline: list[WrkResult],
                metric: str, goal: float | None, higher: bool) -> Row | None:
            if not runwatch or not baseline:
                return None  # not selected (--only)
            rw = [getattr(r, metric) for r in runwatch]
            bl = [getattr(r, metric) for r in baseline]
            ratios = [a / b if b else float("nan") for a, b in zip(rw, bl, strict=True)]
            return Row(
                scenario=name, unit=unit, runwatch=median(rw), baseline=median(bl),
                ratio=abab.of_ratios(ratios).median,
                goal="-" if goal is None else f"{'>=' if higher else '<='} {goal:.2f}",
                goal_value=goal,
                higher_is_better=higher,
                valid=all(r.valid for r in runwatch + baseline),
                round_ratios=ratios,
            )

        def cpu_row(name: str, runwatch: list[WrkResult], baseline: list[WrkResult],
                    goal: float) -> Row | None:
            """Server process CPU per request (ms), runwatch's rounds against a goal; the
            baseline's figure alongside for information."""
            rw = [r.server_cpu_ms for r in runwatch if r.server_cpu_ms is not None]
            bl = [r.server_cpu_ms for r in baseline if r.server_cpu_ms is not None]
            if not rw:
                return None
            return Row(scenario=name, unit="ms", runwatch=median(rw),
                       baseline=median(bl) if bl else float("nan"),
                       ratio=median(rw), goal=f"<= {goal:g} ms", goal_value=goal,
                       higher_is_better=False, valid=all(r.valid for r in runwatch),
                       round_ratios=rw, ratio_unit="ms")

        rest_bl = self._runs("1 REST report", "baseline")
        rows = [
            row("1 REST report", "req/s", self._runs("1 REST report", "runwatch"), rest_bl,
                "rps", 0.7, True),
            row("2 GraphQL reportRun", "req/s", self._runs("2 GraphQL reportRun", "runwatch"),
                rest_bl, "rps", 0.75, True),
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
        for number, kind, scenario in (("5", "log", "5 appendLog"),
                                       ("7", "sample", "7 appendTelemetrySample")):
            title = "appendLog" if kind == "log" else "appendTelemetrySample"
            short = "appendLog" if kind == "log" else "appendSample"
            rows.append(row(f"{number} {title}", "req/s", self._runs(scenario, "runwatch"),
                            self._runs(scenario, "baseline"), "rps", 0.5, True))
            rows.append(row(f"{int(number) + 1} {short} at cap/empty", "req/s",
                            self._runs(scenario, "cap"), self._runs(scenario, "runwatch"),
                            "rps", 0.9, True))
        rows.extend(self.burst_rows())
        for metric in ("p50", "p99"):
            rows.append(row(f"10 PATCH {metric} slow/fast", "ms",
                            self._runs("10 terminal PATCH", "slow"),
                            self._runs("10 terminal PATCH", "fast"), f"{metric}_ms", 1.3,
                            False))
        rows.append(row("11 Watcher round", "rounds/s", self._runs("11 Watcher round", "runwatch"),
                        self._runs("11 Watcher round", "baseline"), "rounds_ps", 0.8, True))
        rows.append(cpu_row("11 Watcher CPU/request", self._runs("11 Watcher round", "runwatch"),
                            self._runs("11 Watcher round", "baseline"), 0.9))
        rows.append(row("12 runs screen, cost on/off", "req/s",
                        self._runs("12 GraphQL runs screen", "runwatch"),
                        self._runs("12 GraphQL runs screen", "nocost"), "rps", 0.95, True))
        return [r for r in rows if r is not None]

    def burst_rows(self) -> list[Row]:
        b = self.burst
        if not b:
            return []
        valid = not self.burst_problems
        runs = b["runs"]
        return [
            Row("9 webhooks delivered", "count", b["delivered"], runs, b["delivered"] / runs,
                ">= 1.00", 1.0, True, valid),
            Row("9 webhook duplicates", "count", b["duplicates"], b["received_distinct"],
                b["duplicates"], "= 0", 0, False, valid, ratio_format="count"),
            Row("9 bad signatures", "count", b["bad_signatures"], b["received_requests"],
                b["bad_signatures"], "= 0", 0, False, valid, ratio_format="count"),
            Row("9 webhook ids not received", "count", b["not_received"] + b["received_unknown"],
                b["deliveries"], b["not_received"] + b["received_unknown"], "= 0", 0, False,
                valid, ratio_format="count"),
            Row("9 time to drain", "s", b["drain_seconds"], b["patch_seconds"],
                b["drain_seconds"] / b["patch_seconds"] if b["patch_seconds"] else float("nan"),
                "-", None, False, valid),
        ]


def ratio_text(ratio: float, fmt: str = "ratio") -> str:
    """Two decimals, three below 0.1 (so that a ratio far below its goal does not read 0.00);
    a count as a whole number."""
    if math.isnan(ratio):
        return "-"
    if fmt == "count":
        return f"{ratio:,.0f}"
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.3f}"


def format_table(rows: list[Row]) -> str:
    header = (f"{'scenario':<28} {'runwatch':>14} {'baseline':>14} {'median':>7} "
              f"{'spread':>6}   {'goal':<9} {'verdict':<8} rounds")
    lines = [header, "-" * len(header)]

    def fig(value: float, unit: str) -> str:
        if unit in ("req/s", "rounds/s"):
            return f"{value:,.1f} {unit}"
        if unit == "count":
            return f"{value:,.0f}"
        if unit == "s":
            return f"{value:.1f} s"
        return f"{value:.2f} {unit}"

    for r in rows:
        rounds = " ".join(ratio_text(x) for x in r.round_ratios)
        runwatch, baseline = fig(r.runwatch, r.unit), fig(r.baseline, r.unit)
        spread = r.spread
        spread_text = f"{spread * 100:.0f}%" if math.isfinite(spread) else "-"
        lines.append(f"{r.scenario:<28} {runwatch:>14} {baseline:>14} "
                     f"{ratio_text(r.ratio, r.ratio_format):>7} {spread_text:>6}   "
                     f"{r.goal:<9} {r.verdict:<8} {rounds}")
    lines.append("-" * len(header))
    lines.append("runwatch, baseline: the median of the rounds; median: the median of the round "
                 "ratios; spread: (max - min) / median of the round ratios, 'unstable' above "
                 f"{abab.UNSTABLE_SPREAD:.0%}.")
    shown = {r.scenario.split()[0] for r in rows}
    notes = [
        ({"1", "2", "3"}, "Scenarios 1-3: runwatch / raw baseline (2: over the REST baseline's "
                          "PATCH rate; 3: over the baseline's GET /pk)."),
        ({"4"}, "Scenario 4: runwatch's telemetry latency on 1,000,000 runs of history "
                "(runwatch column) / 10,000 runs (baseline column)."),
        ({"3'", "4'"}, "3', 4': the same against a runwatch with RUNWATCH_TELEMETRY_CACHE=0, so "
                       "that every read computes telemetry from the database."),
        ({"5", "7"}, "5, 7: PATCH /api/elt/runs/{id} appends over 256 open runs / the baseline's "
                     "one INSERT in its own transaction."),
        ({"6", "8"}, "6, 8: runwatch on runs at their cap (500 lines, 2,000 samples: each append "
                     "drops the oldest; runwatch column) / on runs far below it."),
        ({"9"}, "9: 1,000 runs finished; deliveries delivered (runwatch) of runs (baseline); "
                "duplicates / bad signatures / ids missing or unknown (runwatch) of what the "
                "receiver got (baseline); time to drain = first PATCH to last delivery "
                "(runwatch) vs to the last PATCH's answer (baseline)."),
        ({"10"}, "10: terminal PATCH latency while the receiver sleeps 10 s per delivery "
                 "(runwatch column) / while it answers at once (baseline column)."),
        ({"11"}, "11: Watcher rounds (POST /pipeline, start, end, GET the execution: 4 "
                 "requests) a second, 16 jobs / the baseline's raw asyncpg handlers issuing "
                 "the same statements. Watcher CPU/request: the runwatch server process's "
                 "CPU seconds / requests (ms; baseline column: the baseline's)."),
    ]
    for keys, text in notes:
        if keys & shown:
            lines.append(text)
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
                                       duration=opts.duration, groups=opts.only,
                                       hook_rate_cap=opts.hook_rate_cap,
                                       watcher_pipelines=opts.connections)
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


# The one runwatch default a benchmark cannot keep: the per-token rate limit (1,200 requests a
# minute on PostgreSQL) would refuse nearly every request here, where one token sends thousands
# a minute. A limit that is never reached keeps the limiter, and its cost per request, in the
# measured path. (A runwatch without the setting ignores it.)
RUNWATCH_BENCH_SETTINGS = {"RUNWATCH_RATE_LIMIT_PER_MINUTE": str(10**9)}


def print_sql(check: sqlcheck.SqlCheck) -> None:
    for title, statements in (("runwatch", check.runwatch), ("baseline", check.baseline)):
        print(f"--- {title}: {len(statements)} statements (+ BEGIN/COMMIT around all but the "
              "first)")
        for sql, params in statements:
            print(" ".join(sql.split()))
            print(f"    params: {sqlcheck.normalise_params(params)}")
    for kind, statements in check.elt_runwatch.items():
        print(f"--- runwatch {kind}: {len(statements)} statements (one transaction)")
        for sql, params in statements:
            print(" ".join(sql.split()))
            print(f"    params: {sqlcheck.normalise_params(params)}")
        print(f"--- baseline {kind}: 1 statement (its own transaction)")
        print(check.elt_baseline[kind])
    for title, rounds in (("runwatch", check.watcher_runwatch),
                          ("baseline", check.watcher_baseline)):
        for step, statements in rounds.items():
            print(f"--- {title} Watcher {step}: {len(statements)} statements")
            for sql, params in statements:
                print(" ".join(sql.split()))
                print(f"    params: {sqlcheck.normalise_params(params)}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def start_servers(servers: list[Server], log: Log) -> None:
    for server in servers:
        server.start()
    for server in servers:
        server.wait_ready("/health")
        where = "" if isinstance(server, WorkerProcess) else f" on {server.url}"
        log(f"{server.name} ready{where} ({' '.join(server.command()[1:])})")


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
        groups = opts.only
        log(f"runwatch benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{opts.rounds} rounds x ({opts.warmup:g}s warm-up + {opts.duration:g}s), "
            f"{opts.connections} connections (latency scenarios: {opts.latency_connections}), "
            f"scenarios: {', '.join(groups)}, hard limit {opts.time_limit}s")
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
        assert fixture.elt is not None
        for name, seconds in fixture.timings.items():
            log(f"  {name}: {seconds:.1f}s")
        for line in facts:
            log(f"  {line}")
        if check.ok:
            elt = "; ".join(f"{kind} {len(st)} statement(s), one of them inserting the "
                            "baseline's row"
                            for kind, st in check.elt_runwatch.items())
            watcher = ", ".join(f"{step} {len(st)}" for step, st in check.watcher_runwatch.items())
            log(f"SQL check: the baseline issues runwatch's {len(check.runwatch)} statements for "
                f"a first REST report (GraphQL reportRun issues {check.graphql_statements}); "
                f"ELT {elt}"
                + (f"; the Watcher round's statements, the same on both sides ({watcher})"
                   if watcher else ""))
        else:
            log("WARNING: the baseline's SQL no longer matches runwatch's:")
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
        database = {"DATABASE_URL": fixture.database_url, **RUNWATCH_BENCH_SETTINGS}
        by_name: dict[str, Server] = {}
        watcher = fixture.watcher
        assert watcher is not None
        if {"report", "telemetry", "elt", "watcher", "cost"} & set(groups):
            by_name["runwatch"] = Server("runwatch", "runwatch.app:create_app",
                                         {**env, **database}, log_dir)
            by_name["baseline"] = Server("baseline", "bench.baseline:create_app", {
                **env,
                "BASELINE_DATABASE_URL": fixture.database_url,
                "BASELINE_ORGANISATION_ID": str(fixture.organisation_id),
                "BASELINE_REPORT_TOKEN": fixture.report_token,
                "BASELINE_READ_TOKEN": fixture.read_token,
                "BASELINE_WRITE_TOKEN": fixture.elt.write_token,
                # Past any number runwatch's own appends reach (they start at 1 per run).
                "BASELINE_SEQ_START": "1000000000",
                "BASELINE_WATCHER_ORGANISATION_ID": str(watcher.organisation_id),
                "BASELINE_WATCHER_TOKEN": watcher.token,
                "BASELINE_WATCHER_TOKEN_ID": str(watcher.token_id),
            }, log_dir)
        if "cost" in groups:
            by_name["nocost"] = Server("nocost", "runwatch.app:create_app",
                                       {**env, **database, "RUNWATCH_GRAPHQL_MAX_COST": "0"},
                                       log_dir)
        if "telemetry" in groups:
            by_name["nocache"] = Server("nocache", "runwatch.app:create_app",
                                        {**env, **database, "RUNWATCH_TELEMETRY_CACHE": "0"},
                                        log_dir)
        main_servers = list(by_name.values())
        webhook_servers: list[Server] = []
        if "webhooks" in groups:
            # Started now with the others (not when its scenarios come), so that every server
            # runs the code the database was just migrated with; idle until then.
            # The fair setup of a deployment: the API process without background workers
            # (RUNWATCH_WORKERS_IN_SERVE=0) and one `runwatch worker` sending the deliveries,
            # so that a slow receiver's sends do not share the API's process.
            hooks_env = {**env, **database, "RUNWATCH_WEBHOOK_ALLOW_PRIVATE": "1"}
            webhook_servers = [
                Server("receiver", "bench.receiver:create_app", env, log_dir,
                       extra_args=("--timeout-graceful-shutdown", "1")),
                Server("hooks", "runwatch.app:create_app",
                       {**hooks_env, "RUNWATCH_WORKERS_IN_SERVE": "0"}, log_dir),
                WorkerProcess("hooks-worker", "", hooks_env, log_dir),
            ]
            by_name.update(receiver=webhook_servers[0], hooks=webhook_servers[1],
                           worker=webhook_servers[2])
        # Stopped in this order on any exit: the receiver before `hooks`.
        servers.extend([*main_servers, *webhook_servers])
        start_servers([*main_servers, *webhook_servers], log)

        bench = Bench(opts, fixture, by_name, log)
        bench.preflight()
        bench.run()

        if webhook_servers:
            # The other runwatch servers' workers would claim these deliveries too (and refuse
            # a loopback receiver): scenarios 9 and 10 run with their own server alone.
            for server in main_servers:
                server.stop()
            receiver, hooks, worker = webhook_servers
            try:
                bench.run_webhooks()
            finally:
                # Stop the receiver first: sleeping answers end at once, so runwatch's worker
                # does not wait for them (the deliveries still queued are fine).
                t0 = time.monotonic()
                receiver.stop()
                hooks.stop()
                worker.stop()
                log(f"receiver, webhook server and worker stopped in "
                    f"{time.monotonic() - t0:.1f}s")

        rows = bench.rows()
        valid = all(r.valid for r in rows)
        total = log.elapsed()
        print()
        print(format_table(rows))
        print()
        if not valid:
            print("!" * 78)
            print("INVALID: at least one scenario had non-2xx responses, socket errors, "
                  "requests that did not change what they should have, or a slow receiver that "
                  "was not slow; its figures are not results. See the INVALID lines above.")
            print("!" * 78)
        print(f"total time {total:.0f}s; absolute figures are for this machine only, the ratios "
              "are the result.")
        write_json(RESULTS_DIR / "harness.json", {"rows": [r.common() for r in rows]})
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
                          "graphql_statements": check.graphql_statements,
                          "elt_statements": {k: len(v) for k, v in check.elt_runwatch.items()},
                          "watcher_statements": {k: len(v)
                                                 for k, v in check.watcher_runwatch.items()}},
            "profile": [{"request": p.name, "status": p.status, "wall_ms": round(p.wall_ms, 3),
                         "db_ms": round(p.db_ms, 3),
                         "round_trips": [{"statement": h, "ms": round(ms, 3)}
                                         for h, ms in p.round_trips],
                         "statements": [{"sql": " ".join(st.sql.split()),
                                         "db_ms": round(st.db_ms, 3), "note": st.note,
                                         "scans": [asdict(x) for x in st.scans[:3]]}
                                        for st in p.statements]}
                        for p in prepared.profiles],
            "rows": [{**asdict(r), "verdict": r.verdict, "spread": r.spread} for r in rows],
            "webhook_burst": {**bench.burst, "problems": bench.burst_problems},
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


if __name__ == "__main__":
    sys.exit(main())
