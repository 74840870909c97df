"""Watcher checks: timeliness (executions that run or ran past their deadline) and freshness
(pipelines whose target data went stale).

`POST /timeliness` and `POST /freshness` only queue a check (a task row); the workers run
`check_timeliness` / `check_freshness` for that organisation, and the schedules run
`check_all` for every organisation.

Each finding is recorded once: a `TimelinessLog` per run, a `FreshnessLog` per (pipeline,
stale timestamp), both behind unique keys. The log row is inserted with `ON CONFLICT DO
NOTHING`, and the alert is enqueued in the same transaction only when the row is new, so a
finding is alerted exactly once however often (and however concurrently) the check runs.

Rules (the contract's, with the reference implementation's choices where it is silent):

- A check's settings come from the pipeline (`*_number` and `*_datepart`, both set), else
  from its pipeline type; without either the pipeline is not checked. A pipeline is checked
  only when neither it nor its type mutes the check (a pipeline without a type: only its own
  flag counts).
- Timeliness: executions started in `(now - lookback, now]`; deadline = start + number x
  datepart (calendar months and years). A running execution is late once `now` is past its
  deadline, a succeeded one when it finished after it; failed (and cancelled, timed out)
  ones are skipped (the reaper alerts on timeouts).
- Freshness: the latest of `last_target_insert`, `last_target_update` and
  `last_target_soft_delete` plus number x datepart must be later than now; otherwise that
  timestamp is stale (logged and alerted once; a newer stale timestamp is a new finding).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from runwatch.models import FreshnessLog, Organisation, RunStatus, TimelinessLog
from runwatch.resolvers import alerts, sql, tasks
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.dateparts import add
from runwatch.resolvers.pagination import Page, paginate
from runwatch.resolvers.run_input import Errors
from runwatch.resolvers.watcher_pipelines import require_writer

log = logging.getLogger("runwatch.checks")

DEFAULT_LOOKBACK_MINUTES = 60
MIN_LOOKBACK_MINUTES = 5
# Candidates are read in pages of this many runs (keyset on the run id).
PAGE = 1000
# Before any run: a lookback reaching past it reads from here.
BEGINNING = datetime(1, 1, 1, tzinfo=UTC)
LATE_STATUSES = (RunStatus.RUNNING, RunStatus.SUCCEEDED)


# --- requests (`POST /timeliness`, `POST /freshness`) ------------------------------------


def check_lookback(value: Any) -> int:
    """`lookback_minutes`: an integer >= 5, 60 when not given."""
    errors = Errors()
    if value is None:
        return DEFAULT_LOOKBACK_MINUTES
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add("lookback_minutes", "lookback_minutes must be an integer")
    elif value < MIN_LOOKBACK_MINUTES:
        errors.add("lookback_minutes",
                   f"lookback_minutes must be greater than or equal to {MIN_LOOKBACK_MINUTES}")
    errors.raise_any()
    return value


async def request_timeliness(*, caller: Caller, lookback_minutes: int | None = None) -> None:
    """`POST /timeliness`: queue a timeliness check of the caller's organisation of the
    executions started in the last `lookback_minutes` (60 when not given)."""
    require_writer(caller)
    lookback = check_lookback(lookback_minutes)
    await tasks.enqueue(kind=tasks.TIMELINESS, organisation_id=caller.organisation_id,
                        payload={"lookback_minutes": lookback})


async def request_freshness(*, caller: Caller) -> None:
    """`POST /freshness`: queue a freshness check of the caller's organisation."""
    require_writer(caller)
    await tasks.enqueue(kind=tasks.FRESHNESS, organisation_id=caller.organisation_id)


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    number: int
    datepart: str

    def after(self, moment: datetime) -> datetime | None:
        """`moment` + number x datepart; None when that is past what a datetime holds."""
        try:
            return add(moment, self.number, self.datepart)
        except (OverflowError, ValueError):
            return None

    def __str__(self) -> str:
        return f"{self.number} {self.datepart}{'' if self.number == 1 else 's'}"


def interval_of(row: dict[str, Any]) -> Interval | None:
    """The pipeline's setting (`p_number`, `p_part`), else its type's (`t_number`, `t_part`)."""
    for number, part in ((row["p_number"], row["p_part"]), (row["t_number"], row["t_part"])):
        if number is not None and part:
            return Interval(int(number), str(part))
    return None


def _start_of_window(now: datetime, lookback_minutes: int) -> datetime:
    try:
        return max(now - timedelta(minutes=lookback_minutes), BEGINNING)
    except OverflowError:
        return BEGINNING


# --- timeliness ----------------------------------------------------------------------------

# The candidates with their pipelines and types, one page per statement. Runs already logged
# are left out (the log is unique per run, so this is an index probe).
_TIMELINESS_CANDIDATES = """
SELECT r.id, r.pipeline_id, r.status, r.started_at, r.finished_at, p.name AS pipeline_name,
       p.timeliness_number AS p_number, p.timeliness_datepart AS p_part,
       t.timeliness_number AS t_number, t.timeliness_datepart AS t_part
FROM run r
JOIN pipeline p ON p.id = r.pipeline_id
LEFT JOIN pipeline_type t ON t.id = p.pipeline_type_id
WHERE r.organisation_id = ? AND r.started_at > ? AND r.started_at <= ? AND r.id > ?
  AND r.status IN (?, ?)
  AND p.mute_timeliness_check = ? AND (t.id IS NULL OR t.mute_timeliness_check = ?)
  AND (p.timeliness_number IS NOT NULL OR t.timeliness_number IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM timeliness_log l WHERE l.run_id = r.id)
ORDER BY r.id
LIMIT ?
"""
_INSERT_TIMELINESS = """
INSERT INTO timeliness_log (organisation_id, pipeline_id, run_id, run_status, deadline_at,
                            created_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO NOTHING
RETURNING *
"""


def late_status(status: str, finished_at: datetime | None, deadline: datetime,
                now: datetime) -> str | None:
    """The status a late execution is logged with, or None when it is not late."""
    if status == RunStatus.RUNNING.value and now > deadline:
        return RunStatus.RUNNING.value
    if status == RunStatus.SUCCEEDED.value and finished_at is not None \
            and finished_at > deadline:
        return RunStatus.SUCCEEDED.value
    return None


async def check_timeliness(
    *, organisation_id: int, lookback_minutes: int = DEFAULT_LOOKBACK_MINUTES,
    now: datetime | None = None,
) -> list[TimelinessLog]:
    """Log and alert the organisation's late executions started in the lookback window.
    Returns the logs this call created (a late execution already logged is not again)."""
    now = now or utcnow()
    since = _start_of_window(now, lookback_minutes)
    created: list[TimelinessLog] = []
    after = 0
    while True:
        rows = await sql.fetch(_TIMELINESS_CANDIDATES, [
            organisation_id, since, now, after,
            *(s.value for s in LATE_STATUSES), False, False, PAGE])
        for row in rows:
            interval = interval_of(row)
            started = sql.as_datetime(row["started_at"])
            deadline = interval.after(started) if interval and started else None
            if deadline is None:
                continue
            if late_status(str(row["status"]), sql.as_datetime(row["finished_at"]),
                           deadline, now) is None:
                continue
            entry = await _log_late_run(organisation_id, row, interval, deadline, now)
            if entry is not None:
                created.append(entry)
        if len(rows) < PAGE:
            return created
        after = int(rows[-1]["id"])


async def _log_late_run(organisation_id: int, row: dict[str, Any], interval: Interval,
                        deadline: datetime, now: datetime) -> TimelinessLog | None:
    async with in_transaction() as conn:
        # Read the run again, locked (PostgreSQL): an end recorded since the candidates were
        # read decides how (and whether) it is late.
        lock = " FOR UPDATE" if sql.is_postgres(conn) else ""
        current = await sql.fetch(
            f"SELECT status, finished_at FROM run WHERE id = ? AND organisation_id = ?{lock}",
            [row["id"], organisation_id], conn)
        if not current:
            return None
        finished_at = sql.as_datetime(current[0]["finished_at"])
        status = late_status(str(current[0]["status"]), finished_at, deadline, now)
        if status is None:
            return None
        inserted = await sql.fetch(_INSERT_TIMELINESS, [
            organisation_id, row["pipeline_id"], row["id"], status, deadline, now], conn)
        if not inserted:
            return None  # logged meanwhile by a concurrent check
        started = sql.as_datetime(row["started_at"])
        name = str(row["pipeline_name"])
        if status == RunStatus.RUNNING.value:
            what = f"is still running past its deadline {iso(deadline)}"
        else:
            what = f"finished at {iso(finished_at)}, after its deadline {iso(deadline)}"
        await alerts.enqueue_alert(
            conn, organisation_id=organisation_id, alert="timeliness", severity="warning",
            title=f"Execution {row['id']} of pipeline {name} is late",
            message=f"execution {row['id']} started at {iso(started)} and {what} "
                    f"(expected within {interval})",
            details={"runId": str(row["id"]), "pipelineId": str(row["pipeline_id"]),
                     "pipelineName": name, "status": status, "startedAt": iso(started),
                     "finishedAt": iso(finished_at), "deadlineAt": iso(deadline),
                     "timeliness": str(interval)})
    return TimelinessLog._init_from_db(**inserted[0])


# --- freshness -----------------------------------------------------------------------------

# Pipelines to check, with their settings and the newest stale timestamp already logged
# (an index probe of the unique (pipeline, last_dml_at) key).
_FRESHNESS_CANDIDATES = """
SELECT p.id, p.name, p.last_target_insert, p.last_target_update, p.last_target_soft_delete,
       p.freshness_number AS p_number, p.freshness_datepart AS p_part,
       t.freshness_number AS t_number, t.freshness_datepart AS t_part,
       (SELECT MAX(f.last_dml_at) FROM freshness_log f WHERE f.pipeline_id = p.id) AS logged
FROM pipeline p
LEFT JOIN pipeline_type t ON t.id = p.pipeline_type_id
WHERE p.organisation_id = ? AND p.id > ?
  AND p.mute_freshness_check = ? AND (t.id IS NULL OR t.mute_freshness_check = ?)
  AND (p.freshness_number IS NOT NULL OR t.freshness_number IS NOT NULL)
  AND (p.last_target_insert IS NOT NULL OR p.last_target_update IS NOT NULL
       OR p.last_target_soft_delete IS NOT NULL)
ORDER BY p.id
LIMIT ?
"""
_INSERT_FRESHNESS = """
INSERT INTO freshness_log (organisation_id, pipeline_id, last_dml_at, deadline_at, created_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (pipeline_id, last_dml_at) DO NOTHING
RETURNING *
"""
TARGET_COLUMNS = ("last_target_insert", "last_target_update", "last_target_soft_delete")


def latest_dml(row: dict[str, Any]) -> datetime | None:
    moments = [sql.as_datetime(row[c]) for c in TARGET_COLUMNS if row[c] is not None]
    return max(moments) if moments else None


async def check_freshness(
    *, organisation_id: int, now: datetime | None = None
) -> list[FreshnessLog]:
    """Log and alert the organisation's pipelines whose latest target change is older than
    their freshness setting allows. Returns the logs this call created."""
    now = now or utcnow()
    created: list[FreshnessLog] = []
    after = 0
    while True:
        rows = await sql.fetch(_FRESHNESS_CANDIDATES, [
            organisation_id, after, False, False, PAGE])
        for row in rows:
            interval = interval_of(row)
            latest = latest_dml(row)
            if interval is None or latest is None:
                continue
            deadline = interval.after(latest)
            if deadline is None or deadline > now:
                continue  # fresh
            logged = sql.as_datetime(row["logged"])
            if logged is not None and logged == latest:
                continue  # this stale timestamp is already logged
            entry = await _log_stale(organisation_id, row, interval, latest, deadline, now)
            if entry is not None:
                created.append(entry)
        if len(rows) < PAGE:
            return created
        after = int(rows[-1]["id"])


async def _log_stale(organisation_id: int, row: dict[str, Any], interval: Interval,
                     latest: datetime, deadline: datetime, now: datetime) -> FreshnessLog | None:
    async with in_transaction() as conn:
        inserted = await sql.fetch(_INSERT_FRESHNESS, [
            organisation_id, row["id"], latest, deadline, now], conn)
        if not inserted:
            return None  # logged meanwhile by a concurrent check
        name = str(row["name"])
        await alerts.enqueue_alert(
            conn, organisation_id=organisation_id, alert="freshness", severity="warning",
            title=f"Pipeline {name} is stale",
            message=f"the target of pipeline {name} last changed at {iso(latest)}; "
                    f"expected a change within {interval} (by {iso(deadline)})",
            details={"pipelineId": str(row["id"]), "pipelineName": name,
                     "lastDmlAt": iso(latest), "deadlineAt": iso(deadline),
                     "freshness": str(interval)})
    return FreshnessLog._init_from_db(**inserted[0])


# --- reads ---------------------------------------------------------------------------------


async def list_timeliness_logs(
    *, caller: Caller, first: int | None = None, after: str | None = None
) -> Page[TimelinessLog]:
    """The organisation's timeliness findings, newest first."""
    caller.require_scope(Scope.READ)
    return await paginate(TimelinessLog.filter(organisation_id=caller.organisation_id),
                          first=first, after=after, newest_first=True)


async def list_freshness_logs(
    *, caller: Caller, first: int | None = None, after: str | None = None
) -> Page[FreshnessLog]:
    """The organisation's freshness findings, newest first."""
    caller.require_scope(Scope.READ)
    return await paginate(FreshnessLog.filter(organisation_id=caller.organisation_id),
                          first=first, after=after, newest_first=True)


# --- schedules -----------------------------------------------------------------------------


async def check_all(*, kind: str, now: datetime | None = None) -> int:
    """The scheduled check of `kind` (`tasks.TIMELINESS`, with the default lookback, or
    `tasks.FRESHNESS`) for every organisation; returns the number of new findings.

    An organisation whose check fails does not stop the others: the failures are logged,
    and the first one is raised once every organisation had its turn (the task is retried;
    findings already recorded are not recorded again)."""
    checks: dict[str, Callable[[int], Awaitable[list[Any]]]] = {
        tasks.TIMELINESS: lambda org: check_timeliness(organisation_id=org, now=now),
        tasks.FRESHNESS: lambda org: check_freshness(organisation_id=org, now=now),
    }
    check = checks.get(kind) or checks.get(f"{kind}_check")
    if check is None:
        raise ValueError(f"unknown check {kind!r} (expected {' or '.join(checks)})")
    found = 0
    failure: Exception | None = None
    for organisation_id in await Organisation.all().order_by("id").values_list("id", flat=True):
        try:
            found += len(await check(organisation_id))
        except Exception as exc:  # one organisation's failure is not every organisation's
            log.exception("%s failed for organisation %s", kind, organisation_id)
            failure = failure or exc
    if failure is not None:
        raise failure
    return found
