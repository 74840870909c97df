"""Log cleanup (`POST /log_cleanup` and the scheduled retention): old executions and their
logs, deleted by date, in batches, each batch its own committed transaction.

What is deleted, per organisation, with `cutoff = now - retention_days`:

- runs (executions) that ended before the cutoff: finished before it, or started before it
  when they never finished (never an open run: pending and running runs stay), with what
  belongs to them: log lines and telemetry samples (foreign-key cascade), timeliness logs and
  anomaly results (deleted first, to be counted);
- freshness logs whose stale timestamp (`last_dml_at`) is before the cutoff.

What is kept although old:

- the latest run (highest id) of every pipeline, so a pipeline never loses its last
  execution;
- the newest `telemetry.STREAK_CAP` runs of a pipeline's current failure streak (failed or
  timed out, finished after its last success): telemetry counts them, so it reads the same
  before and after a cleanup;
- a freshness log whose timestamp is still the pipeline's last target change: it is what
  keeps the freshness check from logging and alerting that stale timestamp again;
- the roll-ups: `pipeline_hourly_stats` rows and the pipeline's roll-up columns are never
  touched (telemetry reads them, not run history).

The answer says what was kept and why, beside the contract's six counters: `kept_open`,
`kept_latest`, `kept_failure_streak`, `kept_freshness_logs` (old rows left after the
cleanup). An open run is never deleted. One with a deadline (start + maximum runtime) does not
stay open: the reaper times it out at that deadline, with the deadline as its `finished_at`,
so it is deleted by the next cleanup (unless it is its pipeline's latest run). A Watcher
execution has no deadline unless its pipeline sets a maximum runtime (the Watcher has no
timeout): one its job never ends stays open, and kept.

Children of a deleted run that are kept (too recent, or kept for a reason above) lose their
parent (`parent_id` set to null first: the foreign key would otherwise cascade to them).

The contract's closure-table counters: runwatch has no closure table (a run has a
`parent_id`), so `total_pipeline_execution_closure_parent_deleted` counts the deleted runs
that were parents of other runs, and `total_pipeline_execution_closure_child_deleted` the
deleted runs that had a parent (one whose parent was deleted by an earlier batch of the same
cleanup still counts).

The reference implementation never committed its deletes; here each batch commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from runwatch.models import FAILED_STATUSES, TERMINAL_STATUSES, Organisation
from runwatch.resolvers import sql
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.errors import InvalidInput
from runwatch.resolvers.run_input import Errors
from runwatch.resolvers.telemetry import STREAK_CAP

log = logging.getLogger("runwatch.retention")

MIN_RETENTION_DAYS = 90
DEFAULT_BATCH_SIZE = 10_000
# One transaction deletes at most this many rows; a larger batch size is split (same result).
MAX_BATCH = 100_000
# Ids per IN (...) list: far below every driver's parameter limit.
CHUNK = 500
# Before any run: a retention reaching past it deletes nothing.
BEGINNING = datetime(1, 1, 1, tzinfo=UTC)
TERMINAL = tuple(s.value for s in TERMINAL_STATUSES)
FAILED = tuple(s.value for s in FAILED_STATUSES)


@dataclass
class KeptCounts:
    """What a cleanup kept although it is older than the retention, and why (runwatch's
    counters beside the contract's six)."""

    kept_open: int = 0  # still pending or running (until it ends, or its deadline passes)
    kept_latest: int = 0  # the latest run of its pipeline
    kept_failure_streak: int = 0  # in its pipeline's current failure streak (telemetry)
    kept_freshness_logs: int = 0  # marks a pipeline's current stale timestamp

    def add(self, other: KeptCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class CleanupCounts:
    total_pipeline_executions_deleted: int = 0
    total_timeliness_pipeline_execution_logs_deleted: int = 0
    total_anomaly_detection_results_deleted: int = 0
    total_pipeline_execution_closure_parent_deleted: int = 0
    total_pipeline_execution_closure_child_deleted: int = 0
    total_freshness_pipeline_logs_deleted: int = 0
    kept: KeptCounts = field(default_factory=KeptCounts)

    def as_dict(self) -> dict[str, int]:
        """The contract's six counters."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "kept"}

    def answer(self) -> dict[str, int]:
        """The six counters, then what was kept and why (`kept_*`)."""
        return {**self.as_dict(), **asdict(self.kept)}

    def add(self, other: CleanupCounts) -> None:
        for f in fields(self):
            if f.name == "kept":
                self.kept.add(other.kept)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def _check(retention_days: Any, batch_size: Any, errors: Errors) -> None:
    if retention_days is None:
        errors.add("retention_days", "field required")
    elif isinstance(retention_days, bool) or not isinstance(retention_days, int):
        errors.add("retention_days", "retention_days must be an integer")
    elif retention_days < MIN_RETENTION_DAYS:
        errors.add("retention_days", f"retention_days must be greater than or equal to "
                                     f"{MIN_RETENTION_DAYS}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        errors.add("batch_size", "batch_size must be an integer")
    elif batch_size < 1:
        errors.add("batch_size", "batch_size must be greater than or equal to 1")


def parse_cleanup(raw: dict[str, Any]) -> tuple[int, int]:
    """`POST /log_cleanup`'s body: `retention_days` (required, >= 90) and `batch_size`
    (>= 1, default 10000). Raises InvalidInput naming each offending field."""
    if not isinstance(raw, dict):
        raise InvalidInput.one("body", "field required")
    errors = Errors()
    retention_days = raw.get("retention_days")
    batch_size = raw.get("batch_size")
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    _check(retention_days, batch_size, errors)
    errors.raise_any()
    return retention_days, batch_size  # type: ignore[return-value]


def cutoff_of(now: datetime, retention_days: int) -> datetime:
    try:
        return max(now - timedelta(days=retention_days), BEGINNING)
    except OverflowError:
        return BEGINNING


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start:start + CHUNK])


# A batch of old runs, oldest id first (keyset on the id). Kept: open runs, the latest run of
# each pipeline, the newest STREAK_CAP runs of a pipeline's current failure streak (the same
# predicate as telemetry's streak).
_OLD_RUNS = """
SELECT r.id, r.parent_id
FROM run r
JOIN pipeline p ON p.id = r.pipeline_id
WHERE r.organisation_id = ? AND r.id > ? AND r.status IN ({terminal})
  AND COALESCE(r.finished_at, r.started_at, r.created_at) < ?
  AND r.id < (SELECT MAX(l.id) FROM run l WHERE l.pipeline_id = r.pipeline_id)
  AND NOT (
    r.status IN ({failed}) AND r.finished_at IS NOT NULL
    AND r.finished_at > COALESCE(p.last_success_at, ?)
    AND (SELECT COUNT(*) FROM (
           SELECT 1 FROM run s
           WHERE s.pipeline_id = r.pipeline_id AND s.status IN ({failed})
             AND s.finished_at > COALESCE(p.last_success_at, ?)
             AND (s.finished_at > r.finished_at
                  OR (s.finished_at = r.finished_at AND s.id > r.id))
           LIMIT ?) newer) < ?
  )
ORDER BY r.id
LIMIT ?
"""

# What stays of the old history once the batches are done, and why: open runs (by start),
# the latest run of each pipeline, the rest of the old terminal runs (a failure streak's, or
# skipped by a concurrent cleanup), and the old freshness logs.
_KEPT = """
SELECT
  (SELECT COUNT(*) FROM run r WHERE r.organisation_id = ? AND r.status NOT IN ({terminal})
     AND COALESCE(r.started_at, r.created_at) < ?) AS kept_open,
  (SELECT COUNT(*) FROM run r WHERE r.organisation_id = ? AND r.status IN ({terminal})
     AND COALESCE(r.finished_at, r.started_at, r.created_at) < ?
     AND r.id = (SELECT MAX(l.id) FROM run l WHERE l.pipeline_id = r.pipeline_id))
     AS kept_latest,
  (SELECT COUNT(*) FROM run r WHERE r.organisation_id = ? AND r.status IN ({terminal})
     AND COALESCE(r.finished_at, r.started_at, r.created_at) < ?
     AND r.id < (SELECT MAX(l.id) FROM run l WHERE l.pipeline_id = r.pipeline_id))
     AS kept_failure_streak,
  (SELECT COUNT(*) FROM freshness_log f WHERE f.organisation_id = ? AND f.last_dml_at < ?)
     AS kept_freshness_logs
"""

# A batch of old freshness logs; the one that still marks a pipeline's current stale
# timestamp stays (deleting it would log and alert that timestamp again).
_OLD_FRESHNESS_LOGS = """
DELETE FROM freshness_log WHERE id IN (
  SELECT f.id FROM freshness_log f
  WHERE f.organisation_id = ? AND f.last_dml_at < ?
    AND NOT EXISTS (
      SELECT 1 FROM pipeline p
      WHERE p.id = f.pipeline_id
        AND (p.last_target_insert = f.last_dml_at OR p.last_target_update = f.last_dml_at
             OR p.last_target_soft_delete = f.last_dml_at))
  ORDER BY f.id
  LIMIT ?)
"""


@dataclass
class _Batch:
    counts: CleanupCounts
    selected: int
    last_id: int


async def _delete_run_batch(
    *, organisation_id: int, cutoff: datetime, after: int, limit: int,
    orphaned: set[int],
) -> _Batch:
    """Delete one batch of old runs (ids above `after`) in its own transaction.

    `orphaned`: runs whose parent an earlier batch deleted (they had a parent: they count as
    closure children when they are deleted in turn); updated here."""
    counts = CleanupCounts()
    async with in_transaction() as conn:
        statement = _OLD_RUNS.format(terminal=sql.placeholders(len(TERMINAL)),
                                     failed=sql.placeholders(len(FAILED)))
        if sql.is_postgres(conn):
            # Concurrent cleanups skip each other's rows; a child being inserted for one of
            # these runs waits and then fails on its foreign key instead of being cascaded.
            statement += " FOR UPDATE OF r SKIP LOCKED"
        rows = await sql.fetch(statement, [
            organisation_id, after, *TERMINAL, cutoff, *FAILED, BEGINNING, *FAILED, BEGINNING,
            STREAK_CAP, STREAK_CAP, limit], conn)
        if not rows:
            return _Batch(counts, 0, after)
        ids = [int(r["id"]) for r in rows]
        batch = set(ids)
        parents: set[int] = set()
        keep_children: list[int] = []
        for chunk in _chunks(ids):
            # Detach every child first (the child counter uses `parent_id` as read above):
            # kept children must not go with their parent, and SQLite would cascade to the
            # children in the batch before deleting them itself, leaving them out of the count.
            marks = sql.placeholders(len(chunk))
            children = await sql.fetch(
                f"SELECT id, parent_id FROM run WHERE parent_id IN ({marks})", chunk, conn)
            if not children:
                continue
            await sql.execute(f"UPDATE run SET parent_id = NULL WHERE parent_id IN ({marks})",
                              chunk, conn)
            for child in children:
                parents.add(int(child["parent_id"]))
                if int(child["id"]) not in batch:
                    keep_children.append(int(child["id"]))
        for chunk in _chunks(ids):
            marks = sql.placeholders(len(chunk))
            counts.total_timeliness_pipeline_execution_logs_deleted += await _delete(
                conn, f"DELETE FROM timeliness_log WHERE organisation_id = ? AND run_id IN "
                      f"({marks})", [organisation_id, *chunk])
            counts.total_anomaly_detection_results_deleted += await _delete(
                conn, f"DELETE FROM anomaly_result WHERE organisation_id = ? AND run_id IN "
                      f"({marks})", [organisation_id, *chunk])
            # Log lines and telemetry samples go with their run (ON DELETE CASCADE).
            counts.total_pipeline_executions_deleted += await _delete(
                conn, f"DELETE FROM run WHERE organisation_id = ? AND id IN ({marks})",
                [organisation_id, *chunk])
        counts.total_pipeline_execution_closure_parent_deleted = len(parents)
        counts.total_pipeline_execution_closure_child_deleted = sum(
            1 for r in rows if r["parent_id"] is not None or int(r["id"]) in orphaned)
    orphaned.difference_update(ids)
    orphaned.update(keep_children)
    return _Batch(counts, len(rows), ids[-1])


async def _delete(conn: BaseDBAsyncClient, statement: str, params: list[Any]) -> int:
    """The rows a DELETE removed from its own table. Counted from RETURNING: SQLite's change
    count also holds the rows the foreign keys cascaded to (log lines, samples)."""
    return len(await sql.fetch(f"{statement} RETURNING id", params, conn))


async def _delete_freshness_batch(*, organisation_id: int, cutoff: datetime,
                                  limit: int) -> int:
    async with in_transaction() as conn:
        return await _delete(conn, _OLD_FRESHNESS_LOGS, [organisation_id, cutoff, limit])


async def clean_up(
    *, organisation_id: int, retention_days: int, batch_size: int = DEFAULT_BATCH_SIZE,
    now: datetime | None = None,
) -> CleanupCounts:
    """Delete the organisation's data older than `retention_days` (see the module's
    docstring for what is deleted and what is kept), `batch_size` rows per committed
    transaction; returns the contract's six counters and what was kept (`kept`).

    There is no closure table: `total_pipeline_execution_closure_parent_deleted` counts the
    deleted runs that were parents of other runs, `total_pipeline_execution_closure_child_
    deleted` the deleted runs that had a parent. Kept children of a deleted run are detached
    (`parent_id` null) first."""
    errors = Errors()
    _check(retention_days, batch_size, errors)
    errors.raise_any()
    cutoff = cutoff_of(now or utcnow(), retention_days)
    limit = min(batch_size, MAX_BATCH)
    counts = CleanupCounts()
    orphaned: set[int] = set()
    after = 0
    while True:
        batch = await _delete_run_batch(organisation_id=organisation_id, cutoff=cutoff,
                                        after=after, limit=limit, orphaned=orphaned)
        counts.add(batch.counts)
        if batch.selected < limit:
            break
        after = batch.last_id
    while True:
        deleted = await _delete_freshness_batch(organisation_id=organisation_id,
                                                cutoff=cutoff, limit=limit)
        counts.total_freshness_pipeline_logs_deleted += deleted
        if deleted < limit:
            break
    [kept] = await sql.fetch(_KEPT.format(terminal=sql.placeholders(len(TERMINAL))), [
        organisation_id, *TERMINAL, cutoff, organisation_id, *TERMINAL, cutoff,
        organisation_id, *TERMINAL, cutoff, organisation_id, cutoff])
    counts.kept = KeptCounts(**{f.name: int(kept[f.name]) for f in fields(KeptCounts)})
    return counts


async def request_cleanup(*, caller: Caller, retention_days: int,
                          batch_size: int = DEFAULT_BATCH_SIZE) -> CleanupCounts:
    """Log cleanup on request (Watcher's `POST /log_cleanup`), for the caller's organisation:
    Watcher jobs (`report`) and people (`write`) may ask for it."""
    caller.require_any(Scope.REPORT, Scope.WRITE)
    return await clean_up(organisation_id=caller.organisation_id,
                          retention_days=retention_days, batch_size=batch_size)


async def clean_up_all(
    *, retention_days: int, batch_size: int = DEFAULT_BATCH_SIZE, now: datetime | None = None
) -> CleanupCounts:
    """The scheduled retention: `clean_up` for every organisation, counters summed.

    An organisation whose cleanup fails does not stop the others: the failure is logged, and
    the first one is raised once every organisation had its turn (what was deleted stays
    deleted: each batch is committed)."""
    now = now or utcnow()
    total = CleanupCounts()
    failure: Exception | None = None
    for organisation_id in await Organisation.all().order_by("id").values_list("id", flat=True):
        try:
            total.add(await clean_up(organisation_id=organisation_id,
                                     retention_days=retention_days, batch_size=batch_size,
                                     now=now))
        except Exception as exc:  # one organisation's failure is not every organisation's
            log.exception("log cleanup failed for organisation %s", organisation_id)
            failure = failure or exc
    if failure is not None:
        raise failure
    return total
