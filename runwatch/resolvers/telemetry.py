"""Telemetry: rolling 24 h / 7 d windows, status and recent errors.

Reads one SQL statement for any number of connections or pipelines (after a look-up of
revisions when a `TelemetryCache` is in use), and never scans run history: full hours come from
`pipeline_hourly_stats`; the partial hour at each window's start comes from the runs that
finished in it (an index range); orphaned runs the reaper has not turned into `timed_out` yet,
and the newest errors, come from index ranges too.

Status rule (also in the README), evaluated in order:

1. `error`: the last `error_streak` (default 3) outcomes of a pipeline all failed, or runs
   failed in the last 24 h and none succeeded ("not delivering").
2. `degraded`: some runs failed in the last 24 h, but not every recent one ("catching up").
3. `idle`: nothing was delivered in the last 24 h (also: never ran).
4. `active`: events were delivered in the last 24 h and nothing failed.

A run *failed* when it reported an error, sent batches to the dead-letter queue, or was
orphaned (started, never completed within the orphan window). Outcomes are ordered by when they
happened (a run's finish time, an orphan's deadline), not by when they were reported: the streak
is the failed runs that finished after the pipeline's last success.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from runwatch.models import (
    FAILED_STATUSES,
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    Connection,
    Pipeline,
    RunStatus,
)
from runwatch.resolvers import sql
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.errors import NotFound
from runwatch.resolvers.rollups import floor_hour

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
# The failure streak is counted up to this many runs (bounded work for a long outage).
STREAK_CAP = 100
# Before any run: stands in for "no success yet" so that the streak's range stays sargable.
BEGINNING = datetime(1, 1, 1, tzinfo=UTC)
# Status values as the SQL parameters compare them.
TERMINAL = tuple(s.value for s in TERMINAL_STATUSES)
FAILED = tuple(s.value for s in FAILED_STATUSES)
OPEN = tuple(s.value for s in OPEN_STATUSES)


class Status:
    ACTIVE = "active"
    DEGRADED = "degraded"
    ERROR = "error"
    IDLE = "idle"


@dataclass
class EventCounts:
    evaluations: int = 0
    custom_events: int = 0
    total: int = 0

    def add(self, total: int, evaluations: int, custom: int) -> None:
        self.total += int(total or 0)
        self.evaluations += int(evaluations or 0)
        self.custom_events += int(custom or 0)


@dataclass(frozen=True)
class RecentError:
    occurred_at: datetime
    message: str
    run_id: int
    pipeline_id: int


@dataclass
class Telemetry:
    status: str = Status.IDLE
    status_reason: str = "no runs reported in the last 7 days"
    last_delivery_at: datetime | None = None
    events_last_24h: EventCounts = field(default_factory=EventCounts)
    events_last_7d: EventCounts = field(default_factory=EventCounts)
    failed_deliveries_last_24h: int = 0
    succeeded_runs_last_24h: int = 0
    dlq_batches_last_24h: int = 0
    recent_errors: list[RecentError] = field(default_factory=list)
    # internal, for the status rule
    streak: int = 0
    ever_ran: bool = False


# (pipeline id, created_at, revision) of every pipeline of a key: created_at tells a pipeline
# from an earlier one that had the same id (ids are not reused, but restores and truncations do).
Fingerprint = tuple[tuple[int, str, int], ...]


class TelemetryCache:
    """A per-process memo of computed telemetry, validated on every read.

    An entry is used only while the revisions of the pipelines it was computed from are
    unchanged (every started run and every recorded outcome bumps its pipeline's revision, in
    the same transaction) and within the same wall-clock second (the windows slide with time).
    So a read never misses a recorded change, and windows advance with a one-second grain; a
    replica holds nothing another replica needs. Bounded: least recently used entries go first.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, tuple[Fingerprint, int, Telemetry]] = OrderedDict()

    def get(self, key: tuple, fingerprint: Fingerprint, second: int) -> Telemetry | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != fingerprint or entry[1] != second:
            return None
        self._entries.move_to_end(key)
        return entry[2]

    def put(self, key: tuple, fingerprint: Fingerprint, second: int, value: Telemetry) -> None:
        self._entries[key] = (fingerprint, second, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


@dataclass(frozen=True)
class TelemetryOptions:
    # The default maximum runtime of a run (a pipeline may set its own): a run still open
    # past its deadline is orphaned. The deadline is fixed when the run starts.
    orphan_window: timedelta = timedelta(hours=2)
    error_streak: int = 3
    recent_errors_limit: int = 10
    cache: TelemetryCache | None = field(default=None, compare=False)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + timedelta(hours=1)


def _error_message(row: dict) -> str:
    if row.get("error"):
        return str(row["error"])
    if row.get("dlq_batches"):
        n = int(row["dlq_batches"])
        return f"{n} batch{'es' if n != 1 else ''} sent to the dead-letter queue"
    return f"run {row['id']} failed"


def orphan_message(started_at: datetime, window: timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    span = f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
    return (
        f"loader did not report: run started at {iso(started_at)} and was not completed "
        f"within {span} (orphaned)"
    )


# One statement, one round trip: the pipelines selected (`p`), then one branch per source of
# facts. Every branch answers the same named columns, NULL where it has nothing to say; `kind`
# says which branch a row comes from.
class Kind:
    PIPELINE = "pipeline"  # a selected pipeline: its failure streak, last delivery and success
    HOURS = "hours"  # its full hours of both windows, from `pipeline_hourly_stats`
    WINDOW_START = "window_start"  # a run finished in the partial hour at a window's start
    ORPHAN = "orphan"  # a run past its deadline that the reaper has not timed out yet
    RECENT_ERROR = "recent_error"  # one of its newest failed runs


# The columns, with their SQL types: PostgreSQL types a UNION's column from its branches, and
# a NULL (which has none) is cast to the column's.
COLUMNS = {
    "kind": "TEXT",
    "pipeline_id": "BIGINT",
    "connection_id": "BIGINT",
    "failure_streak": "BIGINT",  # failed runs since the last success (up to STREAK_CAP)
    "events_total": "BIGINT",  # hours: the 7 days' (full hours); window_start: the run's
    "events_evaluations": "BIGINT",
    "events_custom": "BIGINT",
    "events_total_24h": "BIGINT",  # hours: the 24 hours' (full hours)
    "events_evaluations_24h": "BIGINT",
    "events_custom_24h": "BIGINT",
    "runs_failed_24h": "BIGINT",
    "runs_succeeded_24h": "BIGINT",
    "dlq_batches_24h": "BIGINT",
    "outcomes": "BIGINT",  # hours: runs that finished in the 7 days' full hours
    "dlq_batches": "BIGINT",  # a run's
    "last_delivery_at": "TIMESTAMPTZ",
    "last_success_at": "TIMESTAMPTZ",
    "started_at": "TIMESTAMPTZ",
    "finished_at": "TIMESTAMPTZ",
    "deadline_at": "TIMESTAMPTZ",
    "error": "TEXT",
    "run_id": "BIGINT",
    "status": "TEXT",
}


def _select(kind: str, **values: str) -> str:
    """`SELECT` of one branch: `values` maps the columns it answers to their expressions."""
    unknown = set(values) - set(COLUMNS)
    assert not unknown, unknown
    columns = [f"'{kind}' AS kind"] + [
        f"{values.get(name, f'CAST(NULL AS {sql_type})')} AS {name}"
        for name, sql_type in COLUMNS.items() if name != "kind"]
    return "SELECT " + ",\n       ".join(columns) + "\n"


_PIPELINES = _select(
    Kind.PIPELINE, pipeline_id="id", connection_id="connection_id",
    failure_streak="""(SELECT COUNT(*) FROM (
          SELECT 1 FROM run f
          WHERE f.pipeline_id = p.id AND f.status IN (?, ?)
            AND f.finished_at > COALESCE(p.last_success_at, ?)
          LIMIT ?) streak)""",
    last_delivery_at="last_delivery_at", last_success_at="last_success_at",
) + "FROM p\n"
_HOURS = _select(
    Kind.HOURS, pipeline_id="pipeline_id",
    events_total="SUM(events_total)",
    events_evaluations="SUM(events_evaluations)",
    events_custom="SUM(events_custom)",
    events_total_24h="SUM(CASE WHEN hour >= ? THEN events_total ELSE 0 END)",
    events_evaluations_24h="SUM(CASE WHEN hour >= ? THEN events_evaluations ELSE 0 END)",
    events_custom_24h="SUM(CASE WHEN hour >= ? THEN events_custom ELSE 0 END)",
    runs_failed_24h="SUM(CASE WHEN hour >= ? THEN runs_failed ELSE 0 END)",
    runs_succeeded_24h="SUM(CASE WHEN hour >= ? THEN runs_succeeded ELSE 0 END)",
    dlq_batches_24h="SUM(CASE WHEN hour >= ? THEN dlq_batches ELSE 0 END)",
    outcomes="SUM(runs_failed + runs_succeeded)",
) + """FROM pipeline_hourly_stats
WHERE pipeline_id IN (SELECT id FROM p) AND hour >= ?
GROUP BY pipeline_id
"""
# Used once per window: two ranges joined by OR would not use the index.
_WINDOW_START = _select(
    Kind.WINDOW_START, pipeline_id="pipeline_id", events_total="events_delivered",
    events_evaluations="events_evaluations", events_custom="events_custom",
    dlq_batches="dlq_batches", finished_at="finished_at", run_id="id", status="status",
) + """FROM run
WHERE pipeline_id IN (SELECT id FROM p) AND status IN ({terminal})
  AND finished_at >= ? AND finished_at < ?
"""
_ORPHANS = _select(
    Kind.ORPHAN, pipeline_id="pipeline_id", started_at="started_at",
    deadline_at="deadline_at", run_id="id", status="status",
) + """FROM run
WHERE pipeline_id IN (SELECT id FROM p) AND status IN (?, ?) AND deadline_at < ?
  AND deadline_at >= ?
"""
_RECENT_ERRORS = _select(
    Kind.RECENT_ERROR, pipeline_id="pipeline_id", dlq_batches="dlq_batches",
    finished_at="finished_at", error="error", run_id="id", status="status",
) + """FROM (
  SELECT id, pipeline_id, finished_at, error, dlq_batches, status,
         ROW_NUMBER() OVER (PARTITION BY pipeline_id ORDER BY finished_at DESC, id DESC) AS pos
  FROM run
  WHERE pipeline_id IN (SELECT id FROM p) AND status IN (?, ?) AND finished_at >= ?
) ranked
WHERE pos <= ?
"""
# `{selector}` picks the pipelines, `{terminal}` holds the terminal statuses' placeholders.
_TELEMETRY_SQL = """
WITH p AS (
  SELECT id, connection_id, last_success_at, last_delivery_at FROM pipeline
  WHERE organisation_id = ? AND {selector}
)
""" + "UNION ALL\n".join(
    (_PIPELINES, _HOURS, _WINDOW_START, _WINDOW_START, _ORPHANS, _RECENT_ERRORS))


def _int(value: object) -> int:
    return int(value or 0)  # SUM() is numeric on PostgreSQL, text-free int on SQLite


async def _telemetry(
    *, organisation_id: int, selector: str, selector_params: Sequence[object],
    group_of: str, now: datetime, options: TelemetryOptions,
) -> dict[int, Telemetry]:
    """Telemetry grouped by `group_of` ("connection_id" or "pipeline_id") in one query."""
    b24, b7 = now - DAY, now - WEEK
    s24, s7 = ceil_hour(b24), ceil_hour(b7)
    terminal = sql.placeholders(len(TERMINAL))
    statement = _TELEMETRY_SQL.format(selector=selector, terminal=terminal)
    params = [
        organisation_id, *selector_params,
        *FAILED, BEGINNING, STREAK_CAP,
        *[s24] * 6, s7,
        *TERMINAL, b24, s24, *TERMINAL, b7, s7,
        *OPEN, now, b7,
        *FAILED, b7, options.recent_errors_limit,
    ]
    rows = await sql.fetch(statement, params)

    result: dict[int, Telemetry] = {}
    group: dict[int, int] = {}  # pipeline id -> group key
    last_success: dict[int, datetime | None] = {}
    errors: dict[int, list[RecentError]] = {}
    for row in rows:  # first pass: the pipelines and their groups
        if row["kind"] == Kind.PIPELINE:
            key = int(row[group_of])
            group[int(row["pipeline_id"])] = key
            t = result.setdefault(key, Telemetry())
            errors.setdefault(key, [])
            t.streak = max(t.streak, _int(row["failure_streak"]))
            last_success[int(row["pipeline_id"])] = sql.as_datetime(row["last_success_at"])
            last = sql.as_datetime(row["last_delivery_at"])
            if last is not None and (t.last_delivery_at is None or last > t.last_delivery_at):
                t.last_delivery_at = last
    for row in rows:  # second pass: what the branches found for them
        kind = row["kind"]
        if kind == Kind.PIPELINE:
            continue
        pipeline_id = int(row["pipeline_id"])
        key = group[pipeline_id]
        t = result[key]
        t.ever_ran = True
        if kind == Kind.HOURS:
            t.events_last_7d.add(
                row["events_total"], row["events_evaluations"], row["events_custom"])
            t.events_last_24h.add(row["events_total_24h"], row["events_evaluations_24h"],
                                  row["events_custom_24h"])
            t.failed_deliveries_last_24h += _int(row["runs_failed_24h"])
            t.succeeded_runs_last_24h += _int(row["runs_succeeded_24h"])
            t.dlq_batches_last_24h += _int(row["dlq_batches_24h"])
            t.ever_ran = bool(_int(row["outcomes"])) or t.ever_ran
        elif kind == Kind.WINDOW_START:
            finished_at = sql.as_datetime(row["finished_at"])
            counts = (row["events_total"], row["events_evaluations"], row["events_custom"])
            if b7 <= finished_at < s7:
                t.events_last_7d.add(*counts)
            if b24 <= finished_at < s24:
                t.events_last_24h.add(*counts)
                t.dlq_batches_last_24h += _int(row["dlq_batches"])
                if row["status"] in FAILED:
                    t.failed_deliveries_last_24h += 1
                elif row["status"] == RunStatus.SUCCEEDED.value:
                    t.succeeded_runs_last_24h += 1
        elif kind == Kind.ORPHAN:
            started_at = sql.as_datetime(row["started_at"])
            deadline = sql.as_datetime(row["deadline_at"])
            succeeded_at = last_success[pipeline_id]
            if succeeded_at is None or deadline > succeeded_at:
                t.streak += 1
            if deadline >= b24:
                t.failed_deliveries_last_24h += 1
            errors[key].append(RecentError(
                occurred_at=deadline, message=orphan_message(started_at, deadline - started_at),
                run_id=int(row["run_id"]), pipeline_id=pipeline_id,
            ))
        elif kind == Kind.RECENT_ERROR:
            errors[key].append(RecentError(
                occurred_at=sql.as_datetime(row["finished_at"]),
                message=_error_message({"error": row["error"], "dlq_batches": row["dlq_batches"],
                                        "id": row["run_id"]}),
                run_id=int(row["run_id"]), pipeline_id=pipeline_id,
            ))
    for key, t in result.items():
        t.recent_errors = sorted(
            errors[key], key=lambda e: (e.occurred_at, e.run_id), reverse=True
        )[: options.recent_errors_limit]
        t.status, t.status_reason = decide_status(t, options)
    return result


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def decide_status(t: Telemetry, options: TelemetryOptions) -> tuple[str, str]:
    """The documented status rule; returns (status, human-readable reason)."""
    failed, succeeded = t.failed_deliveries_last_24h, t.succeeded_runs_last_24h
    latest = f" (latest: {t.recent_errors[0].message})" if t.recent_errors else ""
    if t.streak >= options.error_streak:
        runs = _plural(t.streak, "run") if t.streak < STREAK_CAP else f"{STREAK_CAP}+ runs"
        return Status.ERROR, f"the last {runs} all failed{latest}"
    if failed and not succeeded:
        return Status.ERROR, (
            f"not delivering: {_plural(failed, 'run')} failed in the last 24 hours "
            f"and none succeeded{latest}"
        )
    if failed:
        latest_outcome = (
            "the latest run succeeded" if t.streak == 0
            else "the latest run failed" if t.streak == 1
            else f"the latest {t.streak} runs failed"
        )
        return Status.DEGRADED, (
            f"{_plural(failed, 'failed run')} and {_plural(succeeded, 'successful run')} "
            f"in the last 24 hours; {latest_outcome}{latest}"
        )
    if t.events_last_24h.total == 0:
        if not t.ever_ran and t.last_delivery_at is None:
            return Status.IDLE, "no runs reported in the last 7 days"
        return Status.IDLE, "no events delivered in the last 24 hours"
    return Status.ACTIVE, (
        f"{t.events_last_24h.total:,} events delivered in the last 24 hours, no failures"
    )


async def _telemetry_by(
    *, organisation_id: int, group_of: str, keys: Sequence[int], now: datetime,
    options: TelemetryOptions,
) -> dict[int, Telemetry]:
    """Telemetry per key (connection or pipeline id); keys without pipelines are left out.

    Without a cache: one statement. With one: a look-up of the pipelines' revisions, then the
    statement only for the keys whose cached telemetry is not valid any more.
    """
    column = "connection_id" if group_of == "connection_id" else "id"
    ids = sorted(set(keys))
    if not ids:
        return {}
    cache = options.cache
    if cache is None:
        return await _telemetry(
            organisation_id=organisation_id,
            selector=f"{column} IN ({sql.placeholders(len(ids))})",
            selector_params=ids, group_of=group_of, now=now, options=options,
        )
    revisions: dict[int, list[tuple[int, str, int]]] = {}
    for row in await sql.fetch(
        f"SELECT id, connection_id, created_at, revision FROM pipeline "
        f"WHERE organisation_id = ? AND {column} IN ({sql.placeholders(len(ids))})",
        [organisation_id, *ids],
    ):
        key = int(row["connection_id"] if group_of == "connection_id" else row["id"])
        revisions.setdefault(key, []).append(
            (int(row["id"]), str(row["created_at"]), int(row["revision"]))
        )
    second = int(now.timestamp())
    found: dict[int, Telemetry] = {}
    stale: dict[int, Fingerprint] = {}
    for key, pairs in revisions.items():
        fingerprint = tuple(sorted(pairs))
        hit = cache.get((organisation_id, group_of, key), fingerprint, second)
        if hit is None:
            stale[key] = fingerprint
        else:
            found[key] = hit
    if stale:
        fresh = await _telemetry(
            organisation_id=organisation_id,
            selector=f"{column} IN ({sql.placeholders(len(stale))})",
            selector_params=sorted(stale), group_of=group_of, now=now, options=options,
        )
        for key, value in fresh.items():
            cache.put((organisation_id, group_of, key), stale[key], second, value)
            found[key] = value
    return found


async def telemetry_of_connections(
    *, caller: Caller, connection_ids: Sequence[int], options: TelemetryOptions,
    now: datetime | None = None,
) -> dict[int, Telemetry]:
    """Telemetry per connection of the caller's organisation; foreign ids are left out."""
    caller.require_scope(Scope.READ)
    found = await _telemetry_by(
        organisation_id=caller.organisation_id, group_of="connection_id",
        keys=connection_ids, now=now or utcnow(), options=options,
    )
    missing = [cid for cid in set(connection_ids) if cid not in found]
    if missing:  # a connection without pipelines still has (empty) telemetry
        for cid in await Connection.filter(
            organisation_id=caller.organisation_id, id__in=missing
        ).values_list("id", flat=True):
            found[cid] = Telemetry()
            found[cid].status, found[cid].status_reason = decide_status(found[cid], options)
    return found


async def telemetry_of_pipelines(
    *, caller: Caller, pipelines: Sequence[Pipeline | int], options: TelemetryOptions,
    now: datetime | None = None,
) -> dict[int, Telemetry]:
    """Telemetry per pipeline (models or ids) of the caller's organisation."""
    caller.require_scope(Scope.READ)
    return await _telemetry_by(
        organisation_id=caller.organisation_id, group_of="pipeline_id",
        keys=[p if isinstance(p, int) else p.id for p in pipelines], now=now or utcnow(),
        options=options,
    )


async def connection_telemetry(
    *, caller: Caller, connection_id: int, options: TelemetryOptions, now: datetime | None = None
) -> Telemetry:
    found = await telemetry_of_connections(
        caller=caller, connection_ids=[connection_id], options=options, now=now
    )
    if connection_id not in found:
        raise NotFound("connection", connection_id)
    return found[connection_id]
