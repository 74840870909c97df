"""The task worker: claims due `Task` rows and runs them.

- one-off tasks: anomaly detection after a successful run, freshness and timeliness checks
  requested over the API;
- recurring schedules (one row each, due again after every run): the freshness and
  timeliness sweeps over every organisation, retention (when configured) and queue
  monitoring.

A task that fails is retried with backoff (up to `MAX_ATTEMPTS`), then marked failed with its
error; a schedule that fails is simply due again at its next tick. A task that failed because
the database was unavailable is not counted as an attempt: it is given back, due again in
`UNAVAILABLE_DELAY`, and the worker's own bookkeeping writes outlast a momentary loss
(`faults.retrying`) instead of leaving the task claimed until its hold runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runwatch.models import Task, TaskStatus
from runwatch.resolvers import anomalies, checks, queue, retention, signals, sql
from runwatch.resolvers import dbfaults as faults
from runwatch.resolvers import tasks as tasks_api
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.tasks import monitor_queue
from runwatch.settings import Settings

log = logging.getLogger("runwatch.tasks")

MAX_ATTEMPTS = 5
HOLD = timedelta(minutes=5)  # a claimed task is someone's for this long
UNAVAILABLE_DELAY = timedelta(seconds=2)  # a task the database failed is due again after this
SCHEDULE_TIMELINESS = "schedule:timeliness"
SCHEDULE_FRESHNESS = "schedule:freshness"
SCHEDULE_RETENTION = "schedule:retention"
SCHEDULE_QUEUE = "schedule:queue-monitor"


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    key: str | None
    organisation_id: int | None
    payload: dict[str, Any]
    attempts: int
    claim: str


async def claim(limit: int, now: datetime) -> list[Claimed]:
    token, rows = await queue.claim_due(
        "task", due_column="due_at", columns="id, kind, key, organisation_id, payload, attempts",
        limit=limit, hold=HOLD, now=now)
    return [Claimed(id=int(r["id"]), kind=r["kind"], key=r["key"],
                    organisation_id=r["organisation_id"], payload=sql.as_json(r["payload"]),
                    attempts=int(r["attempts"]), claim=token) for r in rows]


async def _settle(task: Claimed, **changes: Any) -> None:
    """Write a claimed task's outcome and end the claim, if it still stands; outlasts a
    momentary loss of the database (`faults.retrying`)."""
    await faults.retrying(lambda: Task.filter(id=task.id, claim=task.claim).update(
        claim=None, **changes))


class TaskRunner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schedules: dict[str, tuple[int, Callable[[], Awaitable[Any]]]] = {
            SCHEDULE_TIMELINESS: (settings.check_interval_seconds,
                                  lambda: checks.check_all(kind=tasks_api.TIMELINESS)),
            SCHEDULE_FRESHNESS: (settings.check_interval_seconds,
                                 lambda: checks.check_all(kind=tasks_api.FRESHNESS)),
            SCHEDULE_QUEUE: (settings.queue_monitor_interval_seconds, monitor_queue),
        }
        if settings.retention_days:
            self.schedules[SCHEDULE_RETENTION] = (
                settings.retention_interval_seconds,
                lambda: retention.clean_up_all(retention_days=settings.retention_days))
        self.schedules = {k: v for k, v in self.schedules.items() if v[0] > 0}

    async def ensure_schedules(self, now: datetime | None = None) -> None:
        now = now or utcnow()
        for key in self.schedules:
            await tasks_api.ensure_schedule(key, "schedule", now)

    async def run_one(self, task: Claimed) -> None:
        if task.key is not None:
            await self._run_schedule(task)
            return
        try:
            await self.handle(task)
        except Exception as exc:
            if faults.database_unavailable(exc):  # not the task's failure: again shortly
                log.warning("task %s (%s): database unavailable (%s: %s); due again in %ss",
                            task.id, task.kind, type(exc).__name__, exc,
                            UNAVAILABLE_DELAY.total_seconds())
                await faults.retrying(lambda: queue.release(
                    "task", task.id, task.claim, due_column="due_at",
                    due=utcnow() + UNAVAILABLE_DELAY))
                return
            log.exception("task %s (%s) failed", task.id, task.kind)  # recorded and retried
            attempts = task.attempts + 1
            final = attempts >= MAX_ATTEMPTS
            await _settle(task, attempts=attempts, last_error=f"{type(exc).__name__}: {exc}"[:2000],
                          status=TaskStatus.FAILED if final else TaskStatus.PENDING,
                          due_at=utcnow() + timedelta(seconds=30 * 2**attempts),
                          finished_at=utcnow() if final else None)
            return
        await _settle(task, status=TaskStatus.DONE, finished_at=utcnow(),
                      attempts=task.attempts + 1)

    async def handle(self, task: Claimed) -> Any:
        if task.kind == tasks_api.ANOMALY:
            return await anomalies.detect_for_run(
                organisation_id=task.organisation_id, run_id=int(task.payload["run_id"]))
        if task.kind == tasks_api.TIMELINESS:
            return await checks.check_timeliness(
                organisation_id=task.organisation_id,
                lookback_minutes=int(task.payload.get("lookback_minutes", 60)))
        if task.kind == tasks_api.FRESHNESS:
            return await checks.check_freshness(organisation_id=task.organisation_id)
        raise ValueError(f"unknown task kind {task.kind!r}")

    async def _run_schedule(self, task: Claimed) -> None:
        interval, work = self.schedules.get(task.key or "", (0, None))  # type: ignore[assignment]
        if work is None:  # a schedule this deployment does not run: leave it to others
            await Task.filter(id=task.id, claim=task.claim).update(
                claim=None, due_at=utcnow() + timedelta(minutes=5))
            return
        error = None
        try:
            await work()
        except Exception as exc:  # a schedule runs again at its next tick
            log.exception("schedule %s failed", task.key)
            error = f"{type(exc).__name__}: {exc}"[:2000]
        await _settle(task, due_at=utcnow() + timedelta(seconds=interval), last_error=error,
                      attempts=task.attempts + 1)

    async def run_due(self, *, now: datetime | None = None, limit: int = 20,
                      stop: asyncio.Event | None = None, drain_seconds: float = 0) -> int:
        """Claim and run what is due (one after the other); returns how many ran. Once `stop`
        is set, the task in hand gets `drain_seconds` to finish, and what is not done is given
        back, due at once, for another worker."""
        claimed = await claim(limit, now or utcnow())
        for index, task in enumerate(claimed):
            if stop is not None and stop.is_set():
                await give_back(claimed[index:])
                break
            if stop is None:
                await self.run_one(task)
            elif not await _finish_or_cancel(self.run_one(task), stop, drain_seconds):
                await give_back(claimed[index:])
                break
        return len(claimed)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.ensure_schedules()
        except Exception:  # the database may be away; retried below
            log.exception("could not create the task schedules")
        with signals.watching_work() as woken:
            while not stop.is_set():
                try:
                    if await self.run_due(stop=stop,
                                          drain_seconds=self.settings.graceful_timeout_seconds):
                        continue
                except Exception:  # the database may be away
                    log.exception("running tasks failed")
                stopped = asyncio.create_task(stop.wait())
                wake = asyncio.create_task(signals.wait(woken, self.settings.task_poll_seconds))
                await asyncio.wait({stopped, wake}, return_when=asyncio.FIRST_COMPLETED)
                for waiter in (stopped, wake):
                    waiter.cancel()


async def _finish_or_cancel(work: Awaitable[Any], stop: asyncio.Event, drain: float) -> bool:
    """Run `work`; once `stop` is set it has `drain` seconds more, then it is cancelled.
    True when it finished."""
    job = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({job, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not job.done():
        await asyncio.wait({job}, timeout=drain)
    if job.done():
        job.result()
        return True
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job
    return False


async def give_back(claimed: list[Claimed]) -> None:
    """Release claimed tasks unrun, due now (a stopping worker's); best effort: one the
    database does not take back is due again when its hold runs out."""
    for task in claimed:
        try:
            await queue.release("task", task.id, task.claim, due_column="due_at", due=utcnow())
        except Exception as exc:
            log.warning("task %s could not be given back (%s: %s); due again when its hold "
                        "runs out", task.id, type(exc).__name__, exc)
