"""The soak's traffic generator: asyncio loops over one httpx client, 127.0.0.1 only.

Open-loop arrivals at a fixed rate per kind of traffic, with a cap on the operations of each
kind in flight: an operation starts every 1/rate seconds whatever the latency of the ones
before (a slow moment of a shared machine does not lower the rate), up to the cap; at the cap
the next waits for one to finish. A scheduler that fell behind (at the cap, or its own event
loop late) catches up at most `CATCH_UP_SECONDS` of arrivals and drops the older ones (counted
as skipped). So the load is steady and well below what the servers can take, and the
throughput falls below the target only when runwatch does not keep up: the soak measures
whether runwatch stays healthy under a constant load, not how much it can take.

The five kinds (an operation is one or more requests; a request that fails ends its operation):

- `report`: a loader's run. `POST .../warehouse-connections/{cid}/metrics/` pre-creates the run
  (201), `PATCH .../metrics/{run_id}/` reports it (204); 1 report in 25 carries an error.
- `append`: `PATCH /api/elt/runs/{id}` `{"appendLog": …}` (200) going round a set of running
  ELT runs (past 500 lines each run also drops its oldest line).
- `telemetry`: `GET .../warehouse-connections/{cid}/telemetry/` (200), round the connections
  that the reports feed.
- `watcher`: a Watcher job's round: `POST /pipeline` (its definition and next watermark: 200
  found), `POST /start_pipeline_execution` (201), `POST /end_pipeline_execution` (204),
  `GET /pipeline_execution/{id}` (200).
- `graphql`: the two list screens in turn, `POST /graphql` (200 without `errors`):
  `{ connections(first: 50) { nodes { telemetry { status } } } }` and
  `{ runs(first: 50) { nodes { id status pipeline { name } } } }`.

Every request goes to the next target in turn (round robin over the replicas: the requests of
one operation land on different replicas, as behind a load balancer). The recorder counts
every request per minute of the soak (by when it completed), kind, route and status code,
keeps every latency (per minute and kind), every 5xx with its route and answer, and every
other unexpected answer and transport error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.procs import HOST, BenchError

KINDS = ("report", "append", "telemetry", "watcher", "graphql")
REQUESTS_PER_OP = {"report": 2, "append": 1, "telemetry": 1, "watcher": 4, "graphql": 1}

WAREHOUSE = "/api/v1/organisations/{org}/integrations/warehouse-connections"
ROUTES = {
    "precreate": "POST " + WAREHOUSE + "/{cid}/metrics/",
    "report": "PATCH " + WAREHOUSE + "/{cid}/metrics/{run_id}/",
    "telemetry": "GET " + WAREHOUSE + "/{cid}/telemetry/",
    "append": "PATCH /api/elt/runs/{id}",
    "pipeline": "POST /pipeline",
    "start": "POST /start_pipeline_execution",
    "end": "POST /end_pipeline_execution",
    "execution": "GET /pipeline_execution/{id}",
    "graphql-connections": "POST /graphql connections(first: 50)",
    "graphql-runs": "POST /graphql runs(first: 50)",
}
CONNECTIONS_SCREEN = "{ connections(first: 50) { nodes { telemetry { status } } } }"
RUNS_SCREEN = "{ runs(first: 50) { nodes { id status pipeline { name } } } }"
LOG_MESSAGE = "loaded batch of events.page_views into the warehouse: 1000 rows in 85 ms"


CATCH_UP_SECONDS = 2.0


@dataclass(frozen=True)
class Mix:
    """Operations a second per kind, and how many of each kind may be in flight at once."""

    ops_per_second: dict[str, float]
    max_in_flight: dict[str, int]

    def scaled(self, factor: float) -> Mix:
        return Mix({k: v * factor for k, v in self.ops_per_second.items()},
                   {k: max(1, math.ceil(v * factor)) for k, v in self.max_in_flight.items()})

    def target_ops(self, kind: str) -> float:
        return self.ops_per_second[kind]

    def target_rps(self, kind: str | None = None) -> float:
        kinds = KINDS if kind is None else (kind,)
        return sum(self.target_ops(k) * REQUESTS_PER_OP[k] for k in kinds)

    def describe(self) -> str:
        return ", ".join(f"{k} {self.ops_per_second[k]:g} op/s ({self.target_rps(k):g} req/s, "
                         f"<= {self.max_in_flight[k]} in flight)" for k in KINDS)


# About 50 requests a second in all, with about 9.5 runs a second becoming terminal (each a
# webhook delivery) and 2 anomaly-detection tasks a second: a steady, moderate load. One
# uvicorn worker serves several times that on a quiet machine, but mode A's server (its
# workers inside) needs about 3 ms of CPU per request, and on a shared 2-CPU machine running
# a few test suites a process gets a fraction of a CPU: at 100 requests a second the server
# was at its share, queueing, and the soak measured the neighbours. `--rate` scales it. The
# caps leave each kind about 2 s of latency before its rate suffers.
DEFAULT_MIX = Mix(
    ops_per_second={"report": 7.5, "append": 15, "telemetry": 10, "watcher": 2, "graphql": 2},
    max_in_flight={"report": 16, "append": 24, "telemetry": 16, "watcher": 8, "graphql": 4},
)


@dataclass
class SoakFixture:
    """What the traffic works on (created through runwatch's REST API before it starts)."""

    organisation_id: int
    token: str
    connections: list[int]
    elt_runs: list[int]
    watcher_pipelines: list[tuple[str, int]]  # (name, id)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass
class Recorder:
    t0: float  # time.monotonic() when the traffic started
    minutes: int
    # (minute, kind, route, status) -> count; minute is 1-based, status -1 = transport error
    counts: Counter[tuple[int, str, str, int]] = field(default_factory=Counter)
    latencies: dict[tuple[int, str], list[float]] = field(
        default_factory=lambda: defaultdict(list))
    by_target: Counter[tuple[str, int]] = field(default_factory=Counter)  # (target, status)
    server_errors: list[dict[str, Any]] = field(default_factory=list)  # every 5xx
    unexpected: list[dict[str, Any]] = field(default_factory=list)  # the first 200 others
    unexpected_count: int = 0
    transport_errors: list[dict[str, Any]] = field(default_factory=list)
    ops: Counter[tuple[int, str]] = field(default_factory=Counter)  # completed operations
    skipped: Counter[str] = field(default_factory=Counter)  # arrivals dropped, per kind
    loop_lag_ms: dict[int, float] = field(default_factory=dict)  # the client's own lag, max

    def minute_of(self, moment: float) -> int:
        """1-based minute of the soak; minutes + 1 for what completed after the end."""
        return min(self.minutes + 1, int((moment - self.t0) // 60) + 1)

    def record(self, kind: str, route: str, target: str, status: int, seconds: float,
               done: float) -> None:
        minute = self.minute_of(done)
        self.counts[(minute, kind, route, status)] += 1
        self.latencies[(minute, kind)].append(seconds * 1000)
        self.by_target[(target, status)] += 1

    def problem(self, bucket: str, entry: dict[str, Any]) -> None:
        entry["minute"] = self.minute_of(time.monotonic())
        entry["at"] = iso(datetime.now(UTC))
        if bucket == "5xx":
            self.server_errors.append(entry)
        elif bucket == "transport":
            self.transport_errors.append(entry)
        else:
            self.unexpected_count += 1
            if len(self.unexpected) < 200:
                self.unexpected.append(entry)


class Traffic:
    def __init__(self, targets: list[str], fixture: SoakFixture, mix: Mix, *, minutes: int,
                 seed: int = 1) -> None:
        for target in targets:
            if urlsplit(target).hostname != HOST:
                raise BenchError(f"refusing to load {target}: the soak only targets {HOST}")
        self.targets = targets
        self._next_target = itertools.cycle(targets)
        self.fixture = fixture
        self.mix = mix
        self.minutes = minutes
        self.seed = seed
        self.stop = asyncio.Event()
        self.recorder = Recorder(t0=time.monotonic(), minutes=minutes)
        self._append_runs = itertools.cycle(fixture.elt_runs)
        self._report_n = itertools.count()
        self._telemetry_n = itertools.count()
        self._graphql_n = itertools.count()
        self.client: httpx.AsyncClient | None = None
        self.deadline = 0.0

    # ------------------------------------------------------------------ one request

    async def call(self, kind: str, route_key: str, method: str, path: str, *,
                   body: Any = None, expect: tuple[int, ...]) -> httpx.Response | None:
        assert self.client is not None
        target = next(self._next_target)
        route = ROUTES[route_key]
        started = time.monotonic()
        try:
            response = await self.client.request(method, target + path, json=body)
        except httpx.HTTPError as exc:
            done = time.monotonic()
            self.recorder.record(kind, route, target, -1, done - started, done)
            self.recorder.problem("transport", {
                "kind": kind, "route": route, "target": target, "method": method,
                "path": path, "error": f"{type(exc).__name__}: {exc}"})
            return None
        done = time.monotonic()
        status = response.status_code
        self.recorder.record(kind, route, target, status, done - started, done)
        if status >= 500:
            self.recorder.problem("5xx", {
                "kind": kind, "route": route, "target": target, "method": method,
                "path": path, "status": status, "answer": response.text[:500]})
            return None
        if status not in expect:
            self.recorder.problem("unexpected", {
                "kind": kind, "route": route, "target": target, "method": method,
                "path": path, "status": status, "answer": response.text[:500],
                "sent": json.dumps(body)[:300] if body is not None else None})
            return None
        if kind == "graphql":
            try:
                errors = response.json().get("errors")
            except ValueError:
                errors = "answer is not JSON"
            if errors:
                self.recorder.problem("unexpected", {
                    "kind": kind, "route": route, "target": target, "method": method,
                    "path": path, "status": status, "answer": response.text[:500]})
                return None
        return response

    # ------------------------------------------------------------------ operations

    async def op_report(self, rng: random.Random, loop: int) -> bool:
        f = self.fixture
        cid = f.connections[next(self._report_n) % len(f.connections)]
        base = WAREHOUSE.format(org=f.organisation_id) + f"/{cid}/metrics/"
        created = await self.call("report", "precreate", "POST", base, body={}, expect=(201,))
        if created is None:
            return False
        run_id = created.json()["run_id"]
        failed = rng.random() < 0.04
        report = {
            "completed_at": iso(datetime.now(UTC)),
            "events_delivered": 0 if failed else rng.randint(100, 5000),
            "batches_dlq": 0,
            "error": "warehouse rejected the load: connection reset by peer" if failed else None,
        }
        if not failed:
            report["evaluations"] = report["events_delivered"] // 2
        return await self.call("report", "report", "PATCH", f"{base}{run_id}/", body=report,
                               expect=(204,)) is not None

    async def op_append(self, rng: random.Random, loop: int) -> bool:
        run_id = next(self._append_runs)
        body = {"appendLog": {"level": "info" if rng.random() < 0.9 else "warn",
                              "message": LOG_MESSAGE}}
        return await self.call("append", "append", "PATCH", f"/api/elt/runs/{run_id}",
                               body=body, expect=(200,)) is not None

    async def op_telemetry(self, rng: random.Random, loop: int) -> bool:
        f = self.fixture
        cid = f.connections[next(self._telemetry_n) % len(f.connections)]
        path = WAREHOUSE.format(org=f.organisation_id) + f"/{cid}/telemetry/"
        return await self.call("telemetry", "telemetry", "GET", path,
                               expect=(200,)) is not None

    async def op_watcher(self, rng: random.Random, loop: int) -> bool:
        name, pipeline_id = self.fixture.watcher_pipelines[
            loop % len(self.fixture.watcher_pipelines)]  # `loop`: the operation's number
        now = datetime.now(UTC)
        found = await self.call("watcher", "pipeline", "POST", "/pipeline", body={
            "name": name, "pipeline_type_name": "soak",
            "pipeline_metadata": {"owner": "soak", "schedule": "continuous"},
            "next_watermark": iso(now)}, expect=(200,))
        if found is None:
            return False
        started = await self.call("watcher", "start", "POST", "/start_pipeline_execution", body={
            "pipeline_id": pipeline_id, "start_date": iso(now - timedelta(seconds=2)),
            "watermark": iso(now - timedelta(minutes=1)), "next_watermark": iso(now)},
            expect=(201,))
        if started is None:
            return False
        execution = started.json()["id"]
        rows = rng.randint(900, 1100)
        if await self.call("watcher", "end", "POST", "/end_pipeline_execution", body={
                "id": execution, "end_date": iso(datetime.now(UTC)),
                "completed_successfully": True, "total_rows": rows, "inserts": rows - 100,
                "updates": 100, "soft_deletes": 0}, expect=(204,)) is None:
            return False
        return await self.call("watcher", "execution", "GET", f"/pipeline_execution/{execution}",
                               expect=(200,)) is not None

    async def op_graphql(self, rng: random.Random, loop: int) -> bool:
        if next(self._graphql_n) % 2 == 0:
            key, query = "graphql-connections", CONNECTIONS_SCREEN
        else:
            key, query = "graphql-runs", RUNS_SCREEN
        return await self.call("graphql", key, "POST", "/graphql", body={"query": query},
                               expect=(200,)) is not None

    # ------------------------------------------------------------------ loops

    async def _op(self, kind: str, rng: random.Random, index: int,
                  slots: asyncio.Semaphore) -> None:
        try:
            if await getattr(self, f"op_{kind}")(rng, index):
                self.recorder.ops[(self.recorder.minute_of(time.monotonic()), kind)] += 1
        finally:
            slots.release()

    async def _scheduler(self, kind: str) -> None:
        """Start an operation of `kind` every 1/rate seconds (open loop), at most
        `max_in_flight` at once."""
        interval = 1 / self.mix.ops_per_second[kind]
        slots = asyncio.Semaphore(self.mix.max_in_flight[kind])
        rng = random.Random(f"{self.seed}-{kind}")
        running: set[asyncio.Task[None]] = set()
        next_at = time.monotonic() + rng.random() * interval  # kinds start apart
        index = 0
        try:
            while not self.stop.is_set() and next_at < self.deadline:
                delay = next_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), delay)
                    continue
                late = -delay
                if late > CATCH_UP_SECONDS:  # too far behind: drop the oldest arrivals
                    skipped = int((late - CATCH_UP_SECONDS) / interval)
                    self.recorder.skipped[kind] += skipped
                    next_at += skipped * interval
                await slots.acquire()
                task = asyncio.create_task(self._op(kind, rng, index, slots))
                running.add(task)
                task.add_done_callback(running.discard)
                index += 1
                next_at += interval
            if running:  # let the operations in flight finish
                await asyncio.wait(running, timeout=60)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _lag_monitor(self) -> None:
        """How late the client's own event loop wakes up (a busy client would inflate the
        latencies it measures): the worst per minute."""
        while not self.stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.2)
            lag = (time.monotonic() - t - 0.2) * 1000
            minute = self.recorder.minute_of(time.monotonic())
            self.recorder.loop_lag_ms[minute] = max(self.recorder.loop_lag_ms.get(minute, 0.0),
                                                    lag)

    async def run(self, *, on_start: Any = None) -> Recorder:
        """Run the mix for `minutes`, then let the operations in flight finish (bounded)."""
        in_flight = sum(self.mix.max_in_flight.values())
        # Idle connections expire on the client's side (2 s) before uvicorn closes them (its
        # keep-alive timeout, 5 s): with both at 5 s a request can go out on a connection the
        # server is closing that instant (an httpx ReadError that is no fault of runwatch).
        limits = httpx.Limits(max_connections=in_flight + 8,
                              max_keepalive_connections=in_flight + 8, keepalive_expiry=2.0)
        headers = {"Authorization": f"Bearer {self.fixture.token}",
                   "User-Agent": "runwatch-soak"}
        async with httpx.AsyncClient(limits=limits, headers=headers,
                                     timeout=httpx.Timeout(30.0, connect=5.0)) as client:
            self.client = client
            self.recorder = Recorder(t0=time.monotonic(), minutes=self.minutes)
            self.deadline = self.recorder.t0 + self.minutes * 60
            if on_start is not None:
                on_start(self.recorder.t0)
            tasks = [asyncio.create_task(self._scheduler(kind)) for kind in KINDS]
            lag = asyncio.create_task(self._lag_monitor())
            try:
                _done, pending = await asyncio.wait(
                    tasks, timeout=self.minutes * 60 + 90)  # the in-flight ones: 60 s more
                for task in pending:
                    task.cancel()
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # a bug of the generator: say so
            finally:
                self.stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, lag, return_exceptions=True)
            self.client = None
        return self.recorder
