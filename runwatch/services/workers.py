"""The worker loop: runs every background job on its interval until stopped.

Runs inside `runwatch serve` by default (embedded mode) and as `runwatch worker` processes in
deployments; all coordination goes through the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from runwatch.services.reaper import reap_orphaned_runs
from runwatch.settings import Settings

log = logging.getLogger("runwatch.workers")


async def run_workers(settings: Settings, stop: asyncio.Event) -> None:
    if settings.reaper_interval_seconds <= 0:
        log.info("reaper disabled (RUNWATCH_REAPER_INTERVAL_SECONDS=0)")
        await stop.wait()
        return
    window = timedelta(seconds=settings.orphan_window_seconds)
    while not stop.is_set():
        try:
            reaped = await reap_orphaned_runs(orphan_window=window)
            if reaped:
                log.info("timed out %d orphaned run(s)", reaped)
        except Exception:  # a failed pass is retried on the next tick, never fatal
            log.exception("reaper pass failed; retrying in %ss", settings.reaper_interval_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.reaper_interval_seconds)
