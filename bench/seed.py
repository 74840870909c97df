"""The benchmark database: created from scratch, migrated, bootstrapped through runwatch's own
resolvers, then bulk-seeded with raw SQL (generate_series in single INSERTs: fast).

Layout (one organisation):

- connection `bench-rest`: the REST report scenario's runs (pre-created `running` runs).
- connection `bench-graphql`: the GraphQL reportRun scenario's runs.
- connection `bench-history-10k`: 10,000 runs of history, one a minute ending now.
- connection `bench-history-1m`: 1,000,000 runs of history at the same density.

A second organisation, `bench-elt`, holds the ELT-runs scenarios (so that its webhook endpoint
and its deliveries never touch the first organisation's reports): a `read,write` token, a gateway
(and its token), and two ELT pipelines:

- `bench-elt-series`: sets of `running` runs that appendLog / appendTelemetrySample PATCHes
  cycle over (`ELT_SERIES_RUNS` runs a set): empty runs (one set per round for runwatch, one for
  the baseline), and runs already holding a full series (500 log lines / 2,000 samples, seeded
  with their `log_seq`/`sample_seq` consistent with the rows kept).
- `bench-elt-hooks`: `running` runs that terminal PATCHes finish (the webhook burst's 1,000 and
  the reporter-latency ranges, one per wrk run).

A third organisation, `bench-watcher`, holds the Watcher round (scenario 11): a `read,report`
token (a Watcher job's: it writes with `report` and reads its execution back with `read`),
Watcher pipelines `bench-watcher-00` ... (one per wrk connection) and `bench-watcher-check`
(preflight, SQL check, profile), all of type `extraction`, created through
`get_or_create_pipeline`. Each has one `running` root execution (the job in progress whose
steps the round's executions are children of) and, when the scenario runs, a history of
`WATCHER_JOBS` ended jobs of `WATCHER_STEPS` child executions each, with the columns
`start_execution` / `end_execution` store.

History: about 1 in 50 runs failed with an error (no events), about 1 in 211 sent batches to the
dead-letter queue (failed, with events); the rest succeeded. `pipeline_hourly_stats` is filled
from the seeded runs by one INSERT ... SELECT ... GROUP BY (what runwatch's roll-up would have
written had the runs been reported one by one), and the pipelines' roll-up columns
(`last_success_at`, `last_delivery_at`; `consecutive_failures` on older schemas) are set from the
runs the same way.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

ADMIN_DSN = "postgres://postgres@127.0.0.1:5432/postgres"
# BENCH_DB_NAME: another name, so that two harnesses on one PostgreSQL (two checkouts) do not
# drop each other's database.
DB_NAME = os.environ.get("BENCH_DB_NAME", "runwatch_bench")
DSN = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"

# Pre-created runs per second of load: comfortably above what one uvicorn worker can report on
# loopback, so a scenario never runs out (and if it does, it fails loudly: see the Lua script).
RATE_CAP = 5000
SMALL_HISTORY = 10_000
LARGE_HISTORY = 1_000_000
PREFLIGHT_IDS = 50  # per PATCH connection: preflight checks and the SQL equivalence check

# The ELT scenarios. An append set: the runs one wrk run's PATCHes cycle over (one after the
# other, so the 16 requests in flight are always on 16 different runs: the append is measured,
# not one run's row lock).
ELT_SERIES_RUNS = 256
LOG_CAP = 500  # runwatch.resolvers.run_input.LOG_CAP
SAMPLE_CAP = 2000  # runwatch.resolvers.run_input.SAMPLE_CAP
# What appendLog sends, and what the seeded full logs hold (about the same length).
LOG_MESSAGE = "loaded batch of events.page_views into the warehouse: 1000 rows in 85 ms"
HOOK_BURST = 1000  # runs the webhook burst finishes
ELT_PREFLIGHT_IDS = 40  # per ELT kind: preflight, SQL check and request profile
# The Watcher round: a history per pipeline of ended jobs (a root execution with child
# executions), one an hour.
WATCHER_JOBS = 200
WATCHER_STEPS = 4
WATCHER_TYPE = "extraction"
# Groups of scenarios (`--only`): which servers, seeds and checks a run needs.
GROUPS = ("report", "telemetry", "elt", "webhooks", "watcher", "cost")


@dataclass
class EltFixture:
    """The second organisation: ELT runs, their logs and samples, webhooks."""

    organisation_id: int
    write_token: str
    write_token_id: int
    gateway_id: int
    gateway_token: str
    pipelines: dict[str, int]  # "series", "hooks" -> pipeline id


@dataclass
class WatcherFixture:
    """The third organisation: Watcher pipelines, one per wrk connection, and one for the
    checks outside wrk; each with a running root execution (`parents`)."""

    organisation_id: int
    token: str  # read,report
    token_id: int
    pipelines: list[int]  # the measured ones, one per wrk connection
    names: list[str]
    check_pipeline: int
    check_name: str
    parents: list[int] = field(default_factory=list)  # running root of each measured pipeline
    check_parent: int = 0

    @property
    def all_pipelines(self) -> list[int]:
        return [*self.pipelines, self.check_pipeline]


@dataclass(frozen=True)
class IdRange:
    first: int
    count: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1


@dataclass
class Fixture:
    database_url: str
    organisation_id: int
    report_token: str
    read_token: str
    connections: dict[str, int]  # role -> connection id
    pipelines: dict[str, int]  # role -> delivery pipeline id
    ranges: dict[str, IdRange] = field(default_factory=dict)  # slot -> pre-created run ids
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    timings: dict[str, float] = field(default_factory=dict)
    rollup_columns: list[str] = field(default_factory=list)
    elt: EltFixture | None = None
    watcher: WatcherFixture | None = None
    groups: tuple[str, ...] = GROUPS
    _preflight_next: dict[str, int] = field(default_factory=dict)

    def preflight_id(self, role: str) -> int:
        """A fresh pre-created run id for a one-off check outside wrk."""
        r = self.ranges[f"preflight-{role}"]
        n = self._preflight_next.get(role, 0)
        if n >= r.count:
            raise RuntimeError(f"out of preflight run ids for {role}")
        self._preflight_next[role] = n + 1
        return r.first + n


def slot_names(rounds: int) -> list[tuple[str, str]]:
    """(slot, connection role) for every wrk invocation that reports runs."""
    slots = []
    for scenario, role, servers in (("rest", "rest", ("baseline", "runwatch")),
                                    ("graphql", "graphql", ("runwatch",))):
        for server in servers:
            for round_no in range(1, rounds + 1):
                for phase in ("warmup", "measure"):
                    slots.append((f"{scenario}-{server}-r{round_no}-{phase}", role))
    return slots


def hook_slot_names(rounds: int) -> list[str]:
    """Every wrk invocation of the reporter-latency scenario (terminal PATCHes)."""
    return [f"hooks-{mode}-r{round_no}-{phase}" for mode in ("fast", "slow")
            for round_no in range(1, rounds + 1) for phase in ("warmup", "measure")]


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


async def bootstrap() -> tuple[int, str, str, dict[str, int], dict[str, int]]:
    """Organisation, tokens and connections through runwatch's resolvers (Tortoise must be
    initialised)."""
    from runwatch.models import Pipeline
    from runwatch.resolvers.caller import Caller, Scope
    from runwatch.resolvers.connections import create_connection
    from runwatch.resolvers.organisations import create_organisation
    from runwatch.resolvers.tokens import create_token

    org = await create_organisation(name="bench")
    report = await create_token(organisation_id=org.id, scopes="report", name="bench-report")
    read = await create_token(organisation_id=org.id, scopes="read", name="bench-read")
    writer = Caller(organisation_id=org.id, scopes=frozenset({Scope.WRITE}))
    connections: dict[str, int] = {}
    pipelines: dict[str, int] = {}
    for role, name in (("rest", "bench-rest"), ("graphql", "bench-graphql"),
                       ("small", "bench-history-10k"), ("large", "bench-history-1m")):
        connection = await create_connection(
            caller=writer, name=name, warehouse_type="postgres",
            settings={"database": "analytics", "schema": "events", "host": "warehouse.internal"},
        )
        connections[role] = connection.id
        pipeline = await Pipeline.get(connection_id=connection.id, kind="delivery")
        pipelines[role] = pipeline.id
    return org.id, report.token, read.token, connections, pipelines


async def bootstrap_elt() -> EltFixture:
    """The ELT organisation through runwatch's resolvers: a write token, a gateway, two ELT
    pipelines (no webhook endpoint yet: the webhook scenarios set it through the REST API)."""
    from runwatch.resolvers.caller import Caller, Scope
    from runwatch.resolvers.gateways import create_gateway
    from runwatch.resolvers.organisations import create_organisation
    from runwatch.resolvers.pipelines import PipelineFields, create_pipeline
    from runwatch.resolvers.tokens import create_token

    org = await create_organisation(name="bench-elt")
    write = await create_token(organisation_id=org.id, scopes="read,write", name="bench-write")
    admin = Caller(organisation_id=org.id, scopes=frozenset({Scope.ADMIN}))
    gateway, issued = await create_gateway(caller=admin, name="bench-gateway")
    pipelines = {}
    for role in ("series", "hooks"):
        pipeline = await create_pipeline(caller=admin, fields=PipelineFields(
            name=f"bench-elt-{role}", description=f"runwatch benchmark ({role})"))
        pipelines[role] = pipeline.id
    return EltFixture(organisation_id=org.id, write_token=write.token, write_token_id=write.id,
                      gateway_id=gateway.id, gateway_token=issued.token, pipelines=pipelines)


async def bootstrap_watcher(pipelines: int) -> WatcherFixture:
    """The Watcher organisation through runwatch's resolvers: its token and `pipelines`
    Watcher pipelines (+ the check pipeline), created as `POST /pipeline` creates them."""
    from runwatch.resolvers.caller import Caller, Scope
    from runwatch.resolvers.organisations import create_organisation
    from runwatch.resolvers.tokens import create_token
    from runwatch.resolvers.watcher_pipelines import PipelineDefinition, get_or_create_pipeline

    org = await create_organisation(name="bench-watcher")
    token = await create_token(organisation_id=org.id, scopes="read,report",
                               name="bench-watcher")
    caller = Caller(organisation_id=org.id, scopes=frozenset({Scope.READ, Scope.REPORT}),
                    token_id=token.id)
    names = [f"bench-watcher-{n:02d}" for n in range(pipelines)] + ["bench-watcher-check"]
    ids = []
    for name in names:
        pipeline, created = await get_or_create_pipeline(caller=caller, given=PipelineDefinition(
            name=name, pipeline_type_name=WATCHER_TYPE, next_watermark="0"))
        assert created, name
        ids.append(pipeline.id)
    return WatcherFixture(organisation_id=org.id, token=token.token, token_id=token.id,
                          pipelines=ids[:-1], names=names[:-1], check_pipeline=ids[-1],
                          check_name=names[-1])


# A Watcher history: for each pipeline (in the order of the array, numbered n from 1), jobs k
# = 0..jobs-1 started k + 2 hours ago (a root execution of 30 minutes, i = 0) with `steps`
# child executions of 4 minutes each (i = 1..steps), ids consecutive from $1; about 1 job in
# 50 failed (its last step and the root). Every column start_execution / end_execution fill.
WATCHER_HISTORY_SQL = """
INSERT INTO run (id, organisation_id, pipeline_id, parent_id, status, created_at, updated_at,
                 started_at, finished_at, deadline_at, environment, claimed_by_token_id,
                 hour_recorded, date_recorded, duration_seconds, throughput, rows_total,
                 rows_inserted, rows_updated, rows_deleted, log_seq, log_base, sample_seq,
                 sample_base)
SELECT id, $2::int, pipeline_id, CASE WHEN i = 0 THEN NULL ELSE root END,
       CASE WHEN k % 50 = 7 AND i IN (0, $6::int) THEN 'failed' ELSE 'succeeded' END,
       st, st + make_interval(secs => dur), st, st + make_interval(secs => dur),
       st + interval '2 hours', 'default', $3::int,
       extract(hour FROM st AT TIME ZONE 'UTC')::int, (st AT TIME ZONE 'UTC')::date,
       dur, round(rows::numeric / dur, 4)::float8, rows, rows * 6 / 10, rows * 3 / 10,
       rows / 10, 0, 0, 0, 0
FROM (
  SELECT $1::bigint + (p.n - 1) * $7::bigint + k * ($6::int + 1) + i AS id,
         $1::bigint + (p.n - 1) * $7::bigint + k * ($6::int + 1) AS root,
         p.pipeline_id, k, i,
         $4::timestamptz - make_interval(hours => k + 2)
           + CASE WHEN i = 0 THEN interval '0' ELSE make_interval(mins => 5 * i - 4) END AS st,
         CASE WHEN i = 0 THEN 1800 ELSE 240 END AS dur,
         1000 + (k % 97) * 10 AS rows
  FROM unnest($8::int[]) WITH ORDINALITY AS p(pipeline_id, n),
       generate_series(0, $5::int - 1) AS k, generate_series(0, $6::int) AS i
) a
"""


# Every run gets the columns runwatch's ORM fills by default (environment, the series'
# numbers) and, like `start_run`, a deadline fixed at its start (the default 2 h maximum
# runtime: the running runs, started an hour ago, are never timed out during a run).
HISTORY_SQL = """
INSERT INTO run (id, organisation_id, pipeline_id, status, created_at, updated_at, started_at,
                 finished_at, events_delivered, events_evaluations, events_custom, dlq_batches,
                 error, deadline_at, environment, log_seq, log_base, sample_seq, sample_base)
SELECT $1::bigint + ($3::int - 1 - i), $4::int, $5::int,
       CASE WHEN is_error OR is_dlq THEN 'failed' ELSE 'succeeded' END,
       fin - interval '45 seconds', fin, fin - interval '45 seconds', fin,
       events, events * 6 / 10, events * 3 / 10,
       CASE WHEN is_dlq THEN 2 ELSE 0 END,
       CASE WHEN is_error THEN 'warehouse rejected the load of run #' || i
                               || ': connection reset by peer' END,
       fin - interval '45 seconds' + interval '2 hours', 'default', 0, 0, 0, 0
FROM (
  SELECT i, fin, is_error, is_dlq,
         CASE WHEN is_error THEN 0 ELSE 1000 + (i % 97) * 10 END AS events
  FROM (
    SELECT i, $2::timestamptz - make_interval(mins => i) AS fin,
           i % 50 = 7 AS is_error, i % 211 = 3 AS is_dlq
    FROM generate_series(0, $3::int - 1) AS i
  ) a
) b
"""

RUNNING_SQL = """
INSERT INTO run (id, organisation_id, pipeline_id, status, created_at, updated_at, started_at,
                 deadline_at, environment, claimed_by_token_id, log_seq, log_base, sample_seq,
                 sample_base)
SELECT g, $3::int, $4::int, 'running', $5::timestamptz, $5::timestamptz, $5::timestamptz,
       $5::timestamptz + interval '2 hours', 'default', $6::int, $7::bigint, 0, $8::bigint, 0
FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS g
"""

# A full series for every run of a range: numbers 1..n (log_seq / sample_seq = n, base 0: the
# rows kept are exactly (max(base, seq - cap), seq]).
FULL_LOG_SQL = """
INSERT INTO run_log_line (run_id, seq, at, level, message)
SELECT r, s, $3::timestamptz + make_interval(secs => s), 'info', $5::text || ' #' || s
FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS r,
     generate_series(1, $4::int) AS s
"""
FULL_SAMPLES_SQL = """
INSERT INTO run_telemetry_sample (run_id, seq, at, rows, bytes, progress)
SELECT r, s, $3::timestamptz + make_interval(secs => s), s * 10, s * 100, s * 100.0 / $4::int
FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS r,
     generate_series(1, $4::int) AS s
"""

HOURLY_SQL = """
INSERT INTO pipeline_hourly_stats
    (pipeline_id, hour, runs_succeeded, runs_failed, events_total, events_evaluations,
     events_custom, dlq_batches)
SELECT pipeline_id,
       date_trunc('hour', finished_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*) FILTER (WHERE status = 'succeeded'),
       count(*) FILTER (WHERE status IN ('failed', 'timed_out')),
       coalesce(sum(events_delivered), 0),
       coalesce(sum(events_evaluations), 0),
       coalesce(sum(events_custom), 0),
       coalesce(sum(dlq_batches), 0)
FROM run
WHERE pipeline_id = ANY($1::int[]) AND finished_at IS NOT NULL
  AND status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
GROUP BY 1, 2
"""

# The pipeline's roll-up columns, each as runwatch would have left it after reporting the seeded
# runs one by one; only the columns the current schema has are set.
PIPELINE_ROLLUPS = {
    "last_success_at": """(
        SELECT max(r.finished_at) FROM run r
        WHERE r.pipeline_id = p.id AND r.status = 'succeeded')""",
    "last_delivery_at": """(
        SELECT max(r.finished_at) FROM run r
        WHERE r.pipeline_id = p.id AND r.events_delivered > 0
          AND r.status IN ('succeeded', 'failed', 'cancelled', 'timed_out'))""",
    "consecutive_failures": """(
        SELECT count(*) FROM run r
        WHERE r.pipeline_id = p.id AND r.status IN ('failed', 'timed_out')
          AND r.finished_at > coalesce(
            (SELECT max(s.finished_at) FROM run s
             WHERE s.pipeline_id = p.id AND s.status = 'succeeded'), '-infinity'))""",
}


async def seed_pipeline_rollups(conn: asyncpg.Connection, pipeline_ids: list[int]) -> list[str]:
    columns = {r["column_name"] for r in await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'pipeline'")}
    present = [c for c in PIPELINE_ROLLUPS if c in columns]
    if present:
        assignments = ", ".join(f"{c} = {PIPELINE_ROLLUPS[c]}" for c in present)
        await conn.execute(f"UPDATE pipeline p SET {assignments} WHERE p.id = ANY($1::int[])",
                           pipeline_ids)
    return present


async def seed(fixture: Fixture, *, rounds: int, warmup: float, duration: float,
               hook_rate_cap: float) -> None:
    """`hook_rate_cap`: the most terminal PATCHes a second the reporter-latency scenario can
    send (its wrk script waits between requests), which sizes its id ranges."""
    conn = await asyncpg.connect(DSN, timeout=10)
    groups = fixture.groups
    try:
        await conn.execute("SET synchronous_commit = off; SET TIME ZONE 'UTC'")
        now = fixture.now
        org = fixture.organisation_id

        t0 = time.monotonic()
        next_id = 1
        if "telemetry" in groups:
            for role, size in (("small", SMALL_HISTORY), ("large", LARGE_HISTORY)):
                await conn.execute(HISTORY_SQL, next_id, now, size, org,
                                   fixture.pipelines[role])
                fixture.ranges[f"history-{role}"] = IdRange(next_id, size)
                next_id += size
            fixture.timings["seed history runs"] = time.monotonic() - t0
        else:
            next_id = LARGE_HISTORY + SMALL_HISTORY  # the same ids whatever is selected

        t0 = time.monotonic()
        started_at = now - timedelta(hours=1)
        next_id = 10 ** math.ceil(math.log10(next_id + 1))  # a round number past the history
        # (range, organisation, pipeline, claimed by token, log lines, samples)
        to_insert: list[tuple[IdRange, int, int, int | None, int, int]] = []

        def add(slot: str, count: int, org_id: int, pipeline: int,
                token: int | None = None, logs: int = 0, samples: int = 0) -> None:
            nonlocal next_id
            fixture.ranges[slot] = r = IdRange(next_id, count)
            to_insert.append((r, org_id, pipeline, token, logs, samples))
            next_id += count

        for role in ("rest", "graphql"):
            add(f"preflight-{role}", PREFLIGHT_IDS, org, fixture.pipelines[role])
        if "report" in groups:
            for slot, role in slot_names(rounds):
                seconds = warmup if slot.endswith("warmup") else duration
                add(slot, math.ceil(seconds * RATE_CAP), org, fixture.pipelines[role])
        elt = fixture.elt
        if elt is not None:
            e_org, token = elt.organisation_id, elt.write_token_id
            series, hooks = elt.pipelines["series"], elt.pipelines["hooks"]
            # Runs that a managed worker (the write token) started: no gateway holds them, so
            # no gateway lease can time them out while the benchmark runs.
            for kind, cap_logs, cap_samples in (("log", LOG_CAP, 0), ("sample", 0, SAMPLE_CAP)):
                add(f"preflight-{kind}-empty", ELT_PREFLIGHT_IDS, e_org, series, token)
                add(f"preflight-{kind}-cap", ELT_PREFLIGHT_IDS, e_org, series, token,
                    cap_logs, cap_samples)
                if "elt" in groups:
                    for round_no in range(1, rounds + 1):
                        for target in ("runwatch", "baseline"):
                            add(f"{kind}-{target}-r{round_no}", ELT_SERIES_RUNS, e_org, series,
                                token)
                    # Runs stay at the cap whatever is appended (each append drops the
                    # oldest), so one set serves every round.
                    add(f"{kind}-cap", ELT_SERIES_RUNS, e_org, series, token, cap_logs,
                        cap_samples)
            add("preflight-hooks", ELT_PREFLIGHT_IDS, e_org, hooks, token)
            if "webhooks" in groups:
                add("hooks-burst", HOOK_BURST, e_org, hooks, token)
                for slot in hook_slot_names(rounds):
                    seconds = warmup if slot.endswith("warmup") else duration
                    add(slot, math.ceil(seconds * hook_rate_cap * 1.2) + 20, e_org, hooks,
                        token)
        watcher = fixture.watcher
        history: IdRange | None = None
        if watcher is not None:
            # The running root execution of each pipeline: the job whose steps the round's
            # executions are (started by the Watcher token).
            for n, pipeline in enumerate(watcher.all_pipelines):
                add(f"watcher-parent-{n}", 1, watcher.organisation_id, pipeline,
                    watcher.token_id)
            watcher.parents = [fixture.ranges[f"watcher-parent-{n}"].first
                               for n in range(len(watcher.pipelines))]
            watcher.check_parent = fixture.ranges[
                f"watcher-parent-{len(watcher.pipelines)}"].first
            if "watcher" in groups:
                per_pipeline = WATCHER_JOBS * (WATCHER_STEPS + 1)
                history = IdRange(next_id, per_pipeline * len(watcher.all_pipelines))
                fixture.ranges["watcher-history"] = history
                next_id += history.count
        for r, org_id, pipeline, token_id, logs, samples in to_insert:
            # one generate_series INSERT per range
            await conn.execute(RUNNING_SQL, r.first, r.count, org_id, pipeline, started_at,
                               token_id, logs, samples)
        if watcher is not None and history is not None:
            await conn.execute(WATCHER_HISTORY_SQL, history.first, watcher.organisation_id,
                               watcher.token_id, now, WATCHER_JOBS, WATCHER_STEPS,
                               WATCHER_JOBS * (WATCHER_STEPS + 1), watcher.all_pipelines)
            await conn.execute(HOURLY_SQL, watcher.all_pipelines)
            await seed_pipeline_rollups(conn, watcher.all_pipelines)
        await conn.execute("SELECT setval(pg_get_serial_sequence('run', 'id'), $1)", next_id)
        fixture.timings["seed running runs"] = time.monotonic() - t0

        t0 = time.monotonic()
        for r, _org, _pipeline, _token, logs, samples in to_insert:
            if logs:
                await conn.execute(FULL_LOG_SQL, r.first, r.count, started_at, logs,
                                   LOG_MESSAGE)
            if samples:
                await conn.execute(FULL_SAMPLES_SQL, r.first, r.count, started_at, samples)
        if elt is not None:
            fixture.timings["seed full logs and samples"] = time.monotonic() - t0

        if "telemetry" in groups:
            t0 = time.monotonic()
            history = [fixture.pipelines["small"], fixture.pipelines["large"]]
            await conn.execute(HOURLY_SQL, history)
            fixture.rollup_columns = await seed_pipeline_rollups(conn, history)
            fixture.timings["seed roll-ups"] = time.monotonic() - t0

        # Statistics for the planner, hint bits and the visibility map set (as autovacuum would
        # have on a live table), and the seeding's dirty pages flushed, so that no measured run
        # pays for the seeding (a checkpoint in the middle would add full-page writes to WAL).
        t0 = time.monotonic()
        await conn.execute("VACUUM (ANALYZE)")
        fixture.timings["vacuum + analyze"] = time.monotonic() - t0
        t0 = time.monotonic()
        await conn.execute("CHECKPOINT")
        fixture.timings["checkpoint"] = time.monotonic() - t0
    finally:
        await conn.close()


async def completed_runs(first: int, count: int) -> int:
    """How many runs of an id range are no longer open (each first report completes one)."""
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM run WHERE id >= $1 AND id < $1 + $2 "
            "AND status NOT IN ('pending', 'running')", first, count)
    finally:
        await conn.close()


# What a wrk run of appends did, read from the database: runwatch numbers every line it
# appends (the run's log_seq / sample_seq), the baseline only inserts rows.
_APPENDED = {
    ("log", "runwatch"):
        "SELECT coalesce(sum(log_seq), 0) FROM run WHERE id >= $1 AND id < $1 + $2",
    ("sample", "runwatch"):
        "SELECT coalesce(sum(sample_seq), 0) FROM run WHERE id >= $1 AND id < $1 + $2",
    ("log", "baseline"):
        "SELECT count(*) FROM run_log_line WHERE run_id >= $1 AND run_id < $1 + $2",
    ("sample", "baseline"):
        "SELECT count(*) FROM run_telemetry_sample WHERE run_id >= $1 AND run_id < $1 + $2",
}

# Runs of a range whose stored series does not match their numbers: the rows kept must be
# exactly the numbers (max(base, seq - cap), seq].
_INCONSISTENT = """
SELECT count(*) FROM run r
LEFT JOIN (SELECT run_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM {table}
           WHERE run_id >= $1 AND run_id < $1 + $2 GROUP BY run_id) s ON s.run_id = r.id
WHERE r.id >= $1 AND r.id < $1 + $2
  AND (coalesce(s.n, 0) <> least(r.{seq} - r.{base}, $3)
       OR (s.n > 0 AND (s.hi <> r.{seq} OR s.lo <> r.{seq} - s.n + 1)))
"""


async def appended(kind: str, target: str, ids: IdRange) -> int:
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        return int(await conn.fetchval(_APPENDED[(kind, target)], ids.first, ids.count))
    finally:
        await conn.close()


async def inconsistent_series(kind: str, ids: IdRange) -> int:
    """How many runs of the range break the series invariant (0 when all is well)."""
    table, seq, base, cap = (("run_log_line", "log_seq", "log_base", LOG_CAP) if kind == "log"
                             else ("run_telemetry_sample", "sample_seq", "sample_base",
                                   SAMPLE_CAP))
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        return int(await conn.fetchval(_INCONSISTENT.format(table=table, seq=seq, base=base),
                                       ids.first, ids.count, cap))
    finally:
        await conn.close()


@dataclass
class Deliveries:
    total: int  # deliveries of the range's runs
    delivered: int
    failed: int
    pending: int
    attempts: int  # HTTP attempts over all of them
    message_ids: set[str] = field(default_factory=set)


async def deliveries(ids: IdRange, *, with_ids: bool = False) -> Deliveries:
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS total, "
            "count(*) FILTER (WHERE status = 'delivered') AS delivered, "
            "count(*) FILTER (WHERE status = 'failed') AS failed, "
            "count(*) FILTER (WHERE status = 'pending') AS pending, "
            "coalesce(sum(attempts), 0) AS attempts "
            "FROM webhook_delivery WHERE run_id >= $1 AND run_id < $1 + $2",
            ids.first, ids.count)
        found = Deliveries(int(row["total"]), int(row["delivered"]), int(row["failed"]),
                           int(row["pending"]), int(row["attempts"]))
        if with_ids:
            found.message_ids = {r["message_id"] for r in await conn.fetch(
                "SELECT message_id FROM webhook_delivery WHERE run_id >= $1 AND run_id < $1 + $2",
                ids.first, ids.count)}
        return found
    finally:
        await conn.close()


async def pending_deliveries(organisation_id: int) -> int:
    """Deliveries of an organisation not yet delivered nor failed (queued or being sent)."""
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM webhook_delivery WHERE organisation_id = $1 "
            "AND status = 'pending'", organisation_id))
    finally:
        await conn.close()


async def max_run_id() -> int:
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM run"))
    finally:
        await conn.close()


async def watcher_executions(pipelines: list[int], after_id: int) -> tuple[int, int]:
    """(started, ended successfully) executions of the pipelines with an id past `after_id`."""
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS started, count(*) FILTER (WHERE status = 'succeeded') AS ended "
            "FROM run WHERE id > $1 AND pipeline_id = ANY($2::int[])", after_id, pipelines)
        return int(row["started"]), int(row["ended"])
    finally:
        await conn.close()


@dataclass
class PgSnapshot:
    """PostgreSQL's side of a wrk run: the benchmark database's backends, WAL, checkpoints."""

    backend_pids: list[int]
    wal_position: int  # bytes
    checkpoints: int | None


async def pg_snapshot() -> PgSnapshot:
    """The backends of the benchmark database now (the servers' pools), the WAL position and
    the number of checkpoints so far."""
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        pids = [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'", DB_NAME)]
        position = int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
        checkpoints = None
        for sql in ("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter",
                    "SELECT num_timed + num_requested FROM pg_stat_checkpointer"):  # PG 17
            try:
                checkpoints = int(await conn.fetchval(sql))
                break
            except asyncpg.PostgresError:
                continue
        return PgSnapshot(pids, position, checkpoints)
    finally:
        await conn.close()


async def describe(fixture: Fixture) -> list[str]:
    """A few facts about the seeded data, for the log."""
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        lines = []
        rows = await conn.fetch(
            "SELECT p.*, coalesce(c.name, p.name) AS label, "
            "(SELECT count(*) FROM run r WHERE r.pipeline_id = p.id) AS runs, "
            "(SELECT count(*) FROM pipeline_hourly_stats h WHERE h.pipeline_id = p.id) AS hours "
            "FROM pipeline p LEFT JOIN connection c ON c.id = p.connection_id ORDER BY p.id"
        )
        watcher = [row for row in rows if row["kind"] == "watcher"]
        if watcher:
            lines.append(f"{len(watcher)} Watcher pipelines ({watcher[0]['label']} ...): "
                         f"{sum(r['runs'] for r in watcher):,} executions, "
                         f"{sum(r['hours'] for r in watcher):,} hourly rows")
        for row in rows:
            if row["kind"] == "watcher":
                continue
            rollups = ", ".join(f"{c} {row[c]}" for c in fixture.rollup_columns)
            lines.append(
                f"{row['label']:<18} pipeline {row['id']}: {row['runs']:>9,} runs, "
                f"{row['hours']:>5,} hourly rows" + (f"; {rollups}" if rollups else "")
            )
        for table in ("run", "run_log_line", "run_telemetry_sample"):
            count = await conn.fetchval(f"SELECT count(*) FROM {table}")
            size = await conn.fetchval(
                f"SELECT pg_size_pretty(pg_total_relation_size('{table}'))")
            lines.append(f"{table} incl. indexes: {count:,} rows, {size}")
        return lines
    finally:
        await conn.close()


async def setup(*, rounds: int, warmup: float, duration: float,
                groups: tuple[str, ...] = GROUPS, hook_rate_cap: float = 200,
                watcher_pipelines: int = 16) -> Fixture:
    """Drop/create the database, migrate, bootstrap and seed. Tortoise is left initialised
    (the SQL equivalence check uses it; Tortoise's context lives in a context variable, so the
    check must run in the same task); the caller closes it."""
    from tortoise import Tortoise

    from runwatch.db import apply_migrations, tortoise_config
    from runwatch.settings import normalise_database_url

    url = normalise_database_url(DSN)
    t0 = time.monotonic()
    await recreate_database()
    await apply_migrations(url)
    migrated = time.monotonic() - t0
    await Tortoise.init(config=tortoise_config(url))
    org, report, read, connections, pipelines = await bootstrap()
    fixture = Fixture(database_url=DSN, organisation_id=org, report_token=report,
                      read_token=read, connections=connections, pipelines=pipelines,
                      groups=groups)
    fixture.elt = await bootstrap_elt()
    fixture.watcher = await bootstrap_watcher(watcher_pipelines)
    fixture.timings["create + migrate"] = migrated
    await seed(fixture, rounds=rounds, warmup=warmup, duration=duration,
               hook_rate_cap=hook_rate_cap)
    return fixture
