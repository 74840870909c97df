"""In-process wake-ups: a change committed in this process wakes its local waiters at once
(live subscriptions of a run, idle webhook workers).

Only latency depends on them. Every waiter also re-reads the database on an interval, so
changes made by other replicas and workers are seen too, and nothing another process would
need is kept here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator

_run_waiters: defaultdict[int, set[asyncio.Event]] = defaultdict(set)
_work_waiters: set[asyncio.Event] = set()
# Live updates: the process's publisher (`runwatch.services.notify`), once it has started.
_run_publisher: Callable[[int, int], None] | None = None


def set_run_publisher(publisher: Callable[[int, int], None] | None) -> None:
    global _run_publisher
    _run_publisher = publisher


def run_changed(organisation_id: int, run_id: int) -> None:
    """A committed change of a run: published to every process's live subscribers (PostgreSQL
    NOTIFY, or in memory on SQLite) when the publisher runs; local waiters are woken too."""
    if _run_publisher is not None:
        _run_publisher(organisation_id, run_id)
    for event in _run_waiters.get(run_id, ()):
        event.set()


def work_enqueued() -> None:
    for event in _work_waiters:
        event.set()


@contextlib.contextmanager
def watching_run(run_id: int) -> Iterator[asyncio.Event]:
    event = asyncio.Event()
    _run_waiters[run_id].add(event)
    try:
        yield event
    finally:
        _run_waiters[run_id].discard(event)
        if not _run_waiters[run_id]:
            del _run_waiters[run_id]


@contextlib.contextmanager
def watching_work() -> Iterator[asyncio.Event]:
    event = asyncio.Event()
    _work_waiters.add(event)
    try:
        yield event
    finally:
        _work_waiters.discard(event)


async def wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` at most `timeout` seconds, then clear it; True when it was set."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False
    finally:
        event.clear()
