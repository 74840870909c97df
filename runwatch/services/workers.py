"""The worker loop: every background job, until stopped.

Runs inside `runwatch serve` by default (embedded mode) and as `runwatch worker` processes in
deployments; all coordination goes through the database, so any number can run.

- the stuck-run reaper, every `RUNWATCH_REAPER_INTERVAL_SECONDS` (0 disables it here);
- webhook delivery, continuously (woken at once by an enqueue in this process);
- background tasks (anomaly detection, freshness and timeliness checks, their schedules,
  retention, queue monitoring), continuously.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from runwatch.services.reaper import reap_stuck_runs
from runwatch.services.tasks import TaskRunner
from runwatch.services.webhooks import sender_from
from runwatch.settings import Settings

log = logging.getLogger("runwatch.workers")


async def run_reaper(settings: Settings, stop: asyncio.Event) -> None:
    if settings.reaper_interval_seconds <= 0:
        log.info("reaper disabled (RUNWATCH_REAPER_INTERVAL_SECONDS=0)")
        return
    lease = timedelta(seconds=settings.gateway_lease_seconds)
    while not stop.is_set():
        try:
            reaped = await reap_stuck_runs(gateway_lease=lease)
            if reaped:
                log.info("timed out %d stuck run(s)", reaped)
        except Exception:  # a failed pass is retried on the next tick, never fatal
            log.exception("reaper pass failed; retrying in %ss", settings.reaper_interval_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.reaper_interval_seconds)


async def run_webhooks(settings: Settings, stop: asyncio.Event) -> None:
    async with sender_from(settings) as sender:
        await sender.run(stop, poll_seconds=settings.webhook_poll_seconds,
                         drain_seconds=settings.graceful_timeout_seconds)


async def run_workers(settings: Settings, stop: asyncio.Event) -> None:
    await asyncio.gather(run_reaper(settings, stop), run_webhooks(settings, stop),
                         TaskRunner(settings).run(stop))
