"""The benchmark database: created from scratch, migrated, bootstrapped through runwatch's own
resolvers, then bulk-seeded with raw SQL (generate_series in single INSERTs: fast).

Layout (one organisation):

- connection `bench-rest`: the REST report scenario's runs (pre-created `running` runs).
- connection `bench-graphql`: the GraphQL reportRun scenario's runs.
- connection `bench-history-10k`: 10,000 runs of history, one a minute ending now.
- connection `bench-history-1m`: 1,000,000 runs of history at the same density.

History: about 1 in 50 runs failed with an error (no events), about 1 in 211 sent batches to the
dead-letter queue (failed, with events); the rest succeeded. `pipeline_hourly_stats` is filled
from the seeded runs by one INSERT ... SELECT ... GROUP BY (what runwatch's roll-up would have
written had the runs been reported one by one), and the pipelines' roll-up columns
(`last_success_at`, `last_delivery_at`; `consecutive_failures` on older schemas) are set from the
runs the same way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

ADMIN_DSN = "postgres://postgres@127.0.0.1:5432/postgres"
DB_NAME = "runwatch_bench"
DSN = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"

# Pre-created runs per second of load: comfortably above what one uvicorn worker can report on
# loopback, so a scenario never runs out (and if it does, it fails loudly: see the Lua script).
RATE_CAP = 5000
SMALL_HISTORY = 10_000
LARGE_HISTORY = 1_000_000
PREFLIGHT_IDS = 50  # per PATCH connection: preflight checks and the SQL equivalence check


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


HISTORY_SQL = """
INSERT INTO run (id, organisation_id, pipeline_id, status, created_at, updated_at, started_at,
                 finished_at, events_delivered, events_evaluations, events_custom, dlq_batches,
                 error)
SELECT $1::bigint + ($3::int - 1 - i), $4::int, $5::int,
       CASE WHEN is_error OR is_dlq THEN 'failed' ELSE 'succeeded' END,
       fin - interval '45 seconds', fin, fin - interval '45 seconds', fin,
       events, events * 6 / 10, events * 3 / 10,
       CASE WHEN is_dlq THEN 2 ELSE 0 END,
       CASE WHEN is_error THEN 'warehouse rejected the load of run #' || i
                               || ': connection reset by peer' END
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
INSERT INTO run (id, organisation_id, pipeline_id, status, created_at, updated_at, started_at)
SELECT g, $3::int, $4::int, 'running', $5::timestamptz, $5::timestamptz, $5::timestamptz
FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS g
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


async def seed(fixture: Fixture, *, rounds: int, warmup: float, duration: float) -> None:
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        await conn.execute("SET synchronous_commit = off; SET TIME ZONE 'UTC'")
        now = fixture.now
        org = fixture.organisation_id

        t0 = time.monotonic()
        next_id = 1
        for role, size in (("small", SMALL_HISTORY), ("large", LARGE_HISTORY)):
            await conn.execute(HISTORY_SQL, next_id, now, size, org, fixture.pipelines[role])
            fixture.ranges[f"history-{role}"] = IdRange(next_id, size)
            next_id += size
        fixture.timings["seed history runs"] = time.monotonic() - t0

        t0 = time.monotonic()
        started_at = now - timedelta(hours=1)
        next_id = 10 ** math.ceil(math.log10(next_id + 1))  # a round number past the history
        to_insert: list[tuple[IdRange, str]] = []
        for role in ("rest", "graphql"):
            fixture.ranges[f"preflight-{role}"] = r = IdRange(next_id, PREFLIGHT_IDS)
            to_insert.append((r, role))
            next_id += PREFLIGHT_IDS
        for slot, role in slot_names(rounds):
            seconds = warmup if slot.endswith("warmup") else duration
            fixture.ranges[slot] = r = IdRange(next_id, math.ceil(seconds * RATE_CAP))
            to_insert.append((r, role))
            next_id += r.count
        for r, role in to_insert:  # one generate_series INSERT per range
            await conn.execute(RUNNING_SQL, r.first, r.count, org, fixture.pipelines[role],
                               started_at)
        await conn.execute("SELECT setval(pg_get_serial_sequence('run', 'id'), $1)", next_id)
        fixture.timings["seed running runs"] = time.monotonic() - t0

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


async def describe(fixture: Fixture) -> list[str]:
    """A few facts about the seeded data, for the log."""
    conn = await asyncpg.connect(DSN, timeout=10)
    try:
        lines = []
        rows = await conn.fetch(
            "SELECT p.*, c.name AS connection_name, "
            "(SELECT count(*) FROM run r WHERE r.pipeline_id = p.id) AS runs, "
            "(SELECT count(*) FROM pipeline_hourly_stats h WHERE h.pipeline_id = p.id) AS hours "
            "FROM pipeline p JOIN connection c ON c.id = p.connection_id ORDER BY p.id"
        )
        for row in rows:
            rollups = ", ".join(f"{c} {row[c]}" for c in fixture.rollup_columns)
            lines.append(
                f"{row['connection_name']:<18} pipeline {row['id']}: {row['runs']:>9,} runs, "
                f"{row['hours']:>5,} hourly rows; {rollups}"
            )
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('run'))")
        lines.append(f"run table incl. indexes: {size}")
        return lines
    finally:
        await conn.close()


async def setup(*, rounds: int, warmup: float, duration: float) -> Fixture:
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
                      read_token=read, connections=connections, pipelines=pipelines)
    fixture.timings["create + migrate"] = migrated
    await seed(fixture, rounds=rounds, warmup=warmup, duration=duration)
    return fixture
