"""Live updates: run changes published once per process and fanned out in memory.

The domain reports every committed change of a run (its status, log lines, samples, summary)
through `signals.run_changed(org, run)` (`lifecycle.Effects`). The `Hub` of this process
takes it from there:

- **PostgreSQL**: changes are coalesced (one notification per run per `coalesce` seconds)
  and sent with `pg_notify('runwatch_runs', 'org:run,org:run,…')` on one dedicated asyncpg
  connection per process (not from the ORM pool), which also `LISTEN`s. Every process gets
  every notification, its own included, and wakes the runs its subscribers watch.
- **SQLite** (one process owns the file): the same interface, in memory, no database.

Subscribers of one run share a `RunFeed`: a change is one read of the run (and of its new
lines and samples, when there are any) for all of them, so the database load of live updates
follows the rate of changes, not the number of watchers.

A dropped listening connection (a restart, a failover, `pg_terminate_backend`) is noticed at
once (asyncpg's termination callback) or by the check every `check_seconds` on that
connection; it is reopened with backoff, and then every feed re-reads once, which repairs
any notification missed meanwhile. Changes published while it was down are sent after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from runwatch.models import Run, RunLogLine, RunTelemetrySample
from runwatch.resolvers import run_reads, signals
from runwatch.settings import Settings

log = logging.getLogger("runwatch.live")

CHANNEL = "runwatch_runs"
PAYLOAD_LIMIT = 7900  # PostgreSQL refuses payloads of 8000 bytes or more


@dataclass
class Snapshot:
    """One shared read of a run: the run, and the recent lines and samples (every one after
    `log_from` / `sample_from`)."""

    run: Run
    log_from: int
    sample_from: int
    lines: list[RunLogLine]
    samples: list[RunTelemetrySample]
    # What the subscription layer builds from this read, shared by the subscribers that
    # were at the same point (`runwatch.schema.live`): built once, not once per subscriber.
    shared: dict[Any, Any] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class Subscriber:
    """One watcher of a feed: the feed's generation (shared read) it has taken. A count,
    not an event of its own: one subscriber costs a few bytes, and the feed's one `pulse`
    wakes them all."""

    seen: int = 0


class RunFeed:
    """The watchers of one run in this process and the shared read that wakes them."""

    def __init__(self, hub: Hub, org_id: int, run_id: int) -> None:
        self.hub = hub
        self.org_id = org_id
        self.run_id = run_id
        self.subscribers: set[Subscriber] = set()
        self.snapshot: Snapshot | None = None
        self.log_seq: int | None = None  # what the feed has read up to
        self.sample_seq: int | None = None
        self.lines: list[RunLogLine] = []  # the last lines read, every one after `lines_from`
        self.lines_from = 0
        self.samples: list[RunTelemetrySample] = []
        self.samples_from = 0
        self.dirty = False
        self.reader: asyncio.Task[None] | None = None
        self.reads = 0
        self.generation = 0  # shared reads published (`snapshot`)
        self.pulse = asyncio.Event()  # set and cleared at once: wakes every waiting subscriber

    def prime(self, run: Run) -> None:
        """Start the feed's cursors at a subscriber's first read of the run."""
        if self.log_seq is None:
            self.log_seq, self.sample_seq = run.log_seq, run.sample_seq
            self.lines_from, self.samples_from = run.log_seq, run.sample_seq

    def changed(self) -> None:
        self.dirty = True
        if self.reader is None or self.reader.done():
            self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while self.dirty and self.subscribers:
            self.dirty = False
            try:
                snapshot = await self._read_once()
            except Exception:  # the database is away: the next change or reconnect retries
                log.warning("live: reading run %s failed", self.run_id, exc_info=True)
                self.hub.retry_later(self)
                return
            if snapshot is None:
                continue
            self.snapshot = snapshot
            self.generation += 1
            self.pulse.set()
            self.pulse.clear()

    async def wait(self, subscriber: Subscriber) -> None:
        """Until there is a shared read `subscriber` has not taken (at once when one came
        while it was busy); it is then taken."""
        while subscriber.seen == self.generation:
            await self.pulse.wait()
        subscriber.seen = self.generation

    async def _read_once(self) -> Snapshot | None:
        self.reads += 1
        run = await Run.filter(id=self.run_id, organisation_id=self.org_id).first()
        if run is None:
            return None
        self.prime(run)
        log_from, sample_from = self.log_seq, self.sample_seq
        assert log_from is not None and sample_from is not None
        lines: list[RunLogLine] = []
        samples: list[RunTelemetrySample] = []
        if run.log_seq > log_from:
            lines = await RunLogLine.filter(run_id=self.run_id, seq__gt=log_from).order_by(
                "seq").limit(run_reads.LIVE_BATCH)
        if run.sample_seq > sample_from:
            samples = await RunTelemetrySample.filter(
                run_id=self.run_id, seq__gt=sample_from).order_by("seq").limit(
                run_reads.LIVE_BATCH)
        self.log_seq = lines[-1].seq if lines else max(log_from, run.log_seq)
        self.sample_seq = samples[-1].seq if samples else max(sample_from, run.sample_seq)
        if self.log_seq < run.log_seq or self.sample_seq < run.sample_seq:
            self.dirty = True  # more than one batch: read the rest next
        # The last LIVE_BATCH lines and samples stay in memory, so that a subscriber a few
        # updates behind (a slow socket) catches up from here, not with reads of its own.
        self.lines.extend(lines)
        if len(self.lines) > run_reads.LIVE_BATCH:
            dropped = self.lines[: len(self.lines) - run_reads.LIVE_BATCH]
            self.lines_from = dropped[-1].seq
            del self.lines[: len(dropped)]
        self.samples.extend(samples)
        if len(self.samples) > run_reads.LIVE_BATCH:
            dropped_samples = self.samples[: len(self.samples) - run_reads.LIVE_BATCH]
            self.samples_from = dropped_samples[-1].seq
            del self.samples[: len(dropped_samples)]
        if not self.lines:
            self.lines_from = self.log_seq
        if not self.samples:
            self.samples_from = self.sample_seq
        return Snapshot(run=run, log_from=self.lines_from, sample_from=self.samples_from,
                        lines=list(self.lines), samples=list(self.samples))


class Hub:
    """This process's publisher and listener (PostgreSQL), or in-memory fan-out (SQLite)."""

    def __init__(self) -> None:
        self.feeds: dict[int, RunFeed] = {}
        self.dsn: str | None = None  # PostgreSQL: the listening connection's DSN
        self.coalesce = 0.02
        self.check_seconds = 5.0
        self.conn: Any = None  # asyncpg.Connection
        self.lock = asyncio.Lock()
        self.pending: dict[int, int] = {}  # run -> org, to publish
        self.flusher: asyncio.Task[None] | None = None
        self.keeper: asyncio.Task[None] | None = None
        self.lost = asyncio.Event()
        self.running = False
        self.users = 0
        self.reconnects = 0
        self.notifications = 0

    # --- life ---------------------------------------------------------------------------

    async def start(self, settings: Settings) -> None:
        """Start publishing and listening; an app started while another runs in the same
        process (tests) shares it, and the last one to stop stops it."""
        self.users += 1
        if self.users > 1:
            return
        try:
            await self._start(settings)
        except BaseException:
            self.users -= 1
            self.running = False
            raise

    async def _start(self, settings: Settings) -> None:
        self.coalesce = settings.live_coalesce_ms / 1000
        self.check_seconds = settings.live_listener_check_seconds
        self.running = True
        if settings.database_url.startswith("asyncpg"):
            parts = urlsplit(settings.database_url)
            self.dsn = urlunsplit(("postgresql", parts.netloc, parts.path, "", ""))
            await self._connect()  # fails start-up when PostgreSQL is not there
            self.keeper = asyncio.create_task(self._keep())
        else:
            # SQLite: a `runwatch worker` process may share the file, so each watched run
            # (not each subscriber) is also re-read every RUNWATCH_LIVE_POLL_SECONDS.
            self.dsn = None
            self.keeper = asyncio.create_task(self._sweep(settings.live_poll_seconds))
        signals.set_run_publisher(self.publish)

    async def _sweep(self, seconds: float) -> None:
        while self.running:
            await asyncio.sleep(seconds)
            for feed in list(self.feeds.values()):
                feed.changed()

    async def stop(self) -> None:
        self.users = max(0, self.users - 1)
        if self.users:
            return
        self.running = False
        signals.set_run_publisher(None)
        for task in (self.keeper, self.flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.keeper = self.flusher = None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), 2)
            self.conn = None
        self.pending.clear()

    @property
    def listener_pid(self) -> int | None:
        return self.conn.get_server_pid() if self.conn is not None else None

    async def _connect(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn, timeout=10)
        await conn.add_listener(CHANNEL, self._on_notification)
        conn.add_termination_listener(lambda _conn: self.lost.set())
        self.conn = conn
        self.lost.clear()

    async def _keep(self) -> None:
        """Check the listening connection; reopen it with backoff, then re-read every feed."""
        while self.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lost.wait(), self.check_seconds)
            if not self.lost.is_set():
                try:
                    async with self.lock:
                        await asyncio.wait_for(self.conn.execute("SELECT 1"), 5)
                    continue
                except Exception:
                    self.lost.set()
            old, self.conn = self.conn, None
            if old is not None:
                with contextlib.suppress(Exception):
                    old.terminate()
            delay = 0.05
            while self.running:
                try:
                    await self._connect()
                    break
                except Exception as exc:
                    log.warning("live: listening connection failed (%s); retry in %.1f s",
                                exc, delay)
                    await asyncio.sleep(delay * (1 + random.random() / 2))
                    delay = min(delay * 2, 5.0)
            self.reconnects += 1
            log.info("live: listening connection reopened; re-reading %d runs",
                     len(self.feeds))
            for feed in list(self.feeds.values()):
                feed.changed()
            if self.pending:
                self._schedule_flush()

    # --- publishing ---------------------------------------------------------------------

    def publish(self, org_id: int, run_id: int) -> None:
        """A committed change of `run_id` (of organisation `org_id`)."""
        if self.dsn is None:  # in-process
            feed = self.feeds.get(run_id)
            if feed is not None and feed.org_id == org_id:
                feed.changed()
            return
        self.pending[run_id] = org_id
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(self.coalesce)
        while self.pending and self.running:
            if self.conn is None or self.lost.is_set():
                return  # sent after the reconnect
            batch, self.pending = self.pending, {}
            payloads = list(_payloads(batch))
            try:
                async with self.lock:
                    for payload in payloads:
                        await self.conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            except Exception:
                for run_id, org_id in batch.items():
                    self.pending.setdefault(run_id, org_id)
                self.lost.set()
                return

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.notifications += 1
        for item in payload.split(","):
            org, _, run = item.partition(":")
            try:
                org_id, run_id = int(org), int(run)
            except ValueError:
                continue
            feed = self.feeds.get(run_id)
            if feed is not None and feed.org_id == org_id:
                feed.changed()

    def retry_later(self, feed: RunFeed) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(min(self.check_seconds, 1.0), feed.changed)

    # --- subscribing --------------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, org_id: int, run_id: int) -> Iterator[tuple[RunFeed, Subscriber]]:
        feed = self.feeds.get(run_id)
        if feed is None or feed.org_id != org_id:
            feed = self.feeds[run_id] = RunFeed(self, org_id, run_id)
        subscriber = Subscriber(seen=feed.generation)  # woken by the next change
        feed.subscribers.add(subscriber)
        try:
            yield feed, subscriber
        finally:
            feed.subscribers.discard(subscriber)
            if not feed.subscribers and self.feeds.get(run_id) is feed:
                del self.feeds[run_id]


def _payloads(batch: dict[int, int]) -> Iterator[str]:
    items = [f"{org}:{run}" for run, org in batch.items()]
    current: list[str] = []
    size = 0
    for item in items:
        if current and size + len(item) + 1 > PAYLOAD_LIMIT:
            yield ",".join(current)
            current, size = [], 0
        current.append(item)
        size += len(item) + 1
    if current:
        yield ",".join(current)


HUB = Hub()  # one per process

__all__ = ["CHANNEL", "HUB", "Hub", "RunFeed", "Snapshot", "Subscriber"]
