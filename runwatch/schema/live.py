"""Following a run live: `subscription { runUpdates(id) { … } }` over WebSocket
(graphql-transport-ws or graphql-ws).

Each update carries the run as it is now and the log lines and samples added since the
previous update. Every committed change, made by any replica or worker, wakes the
subscription promptly: changes are published once per process (`runwatch.services.notify`:
coalesced PostgreSQL NOTIFY sent after the commit, or in memory on SQLite), and the
subscribers of one run in one process share one read per change. The subscription ends with
the update that shows the run finished. With `RUNWATCH_LIVE_NOTIFY=0` each subscription
re-reads its run every `RUNWATCH_LIVE_POLL_SECONDS` instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Hashable
from datetime import datetime
from typing import Any, NamedTuple

import strawberry
from graphql import ExecutionResult, OperationType
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from runwatch.models import Run as RunModel
from runwatch.resolvers import elt_runs as elt_runs_api
from runwatch.resolvers import run_reads, signals
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.errors import DomainError
from runwatch.resolvers.lifecycle import is_terminal
from runwatch.schema.context import Info
from runwatch.schema.errors import graphql_error, parse_id
from runwatch.schema.run import Run
from runwatch.schema.run_series import LogLine, TelemetrySample
from runwatch.schema.types import BigInt
from runwatch.services import notify


@strawberry.type(description="What changed in a run since the previous update.")
class RunUpdate:
    run: Run
    new_log_lines: list[LogLine]
    new_samples: list[TelemetrySample]
    # Set on an update shared by the subscribers that were at the same point of one shared
    # read: their execution results by document, variables and visibility (`SharedExecutor`).
    results: strawberry.Private[dict[Hashable, tuple[Any, Any]] | None] = None


def _update(shared: notify.Snapshot | None, log_seq: int, sample_seq: int, run: RunModel,
            lines: list, samples: list) -> RunUpdate:
    """The update to send. Built from a shared read alone (`shared`) it depends only on that
    read and on where the subscriber was (`log_seq`, `sample_seq`), so every subscriber that
    was there gets the same object, and `SharedExecutor` executes it once for all of them."""
    if shared is not None:
        found = shared.shared.get((log_seq, sample_seq))
        if found is not None:
            return found  # type: ignore[no-any-return]
    update = RunUpdate(run=Run.of(run), new_log_lines=[LogLine.of(x) for x in lines],
                       new_samples=[TelemetrySample.of(x) for x in samples])
    if shared is not None:
        update.results = {}
        shared.shared[(log_seq, sample_seq)] = update
    return update


class SharedExecutor(StrawberryGraphQLCoreExecutionContext):
    """Executes a subscription event once for every subscriber it is shared with.

    A shared `RunUpdate` remembers its results by the operation (the parsed document is one
    object per query text: the schema's parser cache), the variables and what the caller may
    see (organisation, scopes, gateway: no resolver reads more of the caller). Any other event,
    query or mutation executes as usual."""

    def execute_operation(self, serially: bool | None = None) -> Any:
        results = getattr(self.root_value, "results", None)
        caller = getattr(self.context_value, "caller", None)
        if results is None or caller is None:
            return super().execute_operation(serially)
        try:
            # graphql-core's coerced values (a plain dict before 3.3)
            values = getattr(self.variable_values, "coerced", self.variable_values) or {}
            variables = tuple(sorted(values.items()))
            key = (id(self.operation), variables, caller.organisation_id, caller.scopes,
                   caller.gateway_id)
            hash(key)
        except (TypeError, AttributeError):  # a variable that cannot be a key: execute alone
            return super().execute_operation(serially)
        found = results.get(key)
        if found is not None and found[0] is self.operation:  # (held, so its id is its own)
            return _shared(found[1])
        result = super().execute_operation(serially)
        if self.is_awaitable(result):
            # One execution for all: a task, so that the first subscriber leaving does not
            # cancel it for the others.
            result = asyncio.ensure_future(result)
        results[key] = (self.operation, result)
        return _shared(result)

    def build_response(self, data: dict[str, Any] | None) -> Any:
        response = super().build_response(data)
        if self.operation.operation is not OperationType.SUBSCRIPTION and isinstance(
                response, ExecutionResult):  # (not incremental results: work may follow)
            # graphql-core's executor holds bound methods of itself (`async_helpers`): a
            # reference cycle that kept every request's executor, context, Request and
            # resolved values alive until the cyclic collector ran, about 0.1 ms of CPU per
            # GraphQL request under load (bench/README.md). The operation is complete here
            # (no @defer or @stream in this schema); a subscription's executor is copied for
            # every event and keeps its helpers.
            self.async_helpers = None  # type: ignore[assignment]
        return response


def _shared(result: Any) -> Any:
    return asyncio.shield(result) if isinstance(result, asyncio.Future) else result


class _Seen(NamedTuple):
    """What a subscriber keeps of the run it last sent while it waits (not the model: one
    per subscriber until the first shared read)."""

    status: str
    updated_at: datetime
    log_seq: int
    sample_seq: int


def _mark(run: RunModel | _Seen) -> _Seen:
    return _Seen(run.status, run.updated_at, run.log_seq, run.sample_seq)


def _older(read: RunModel, seen: RunModel | _Seen) -> bool:
    """A shared read that started before this subscriber's own read."""
    return (read.updated_at < seen.updated_at or read.log_seq < seen.log_seq
            or read.sample_seq < seen.sample_seq)


@strawberry.type
class LiveSubscription:
    @strawberry.subscription(description="Follow one run: an update now, then one whenever it "
                             "changes, until it has finished. `logsAfter` / `samplesAfter` "
                             "(a seq) also sends what came after them first.")
    async def run_updates(
        self, info: Info, id: strawberry.ID,
        logs_after: BigInt | None = None,  # type: ignore[valid-type]
        samples_after: BigInt | None = None,  # type: ignore[valid-type]
    ) -> AsyncGenerator[RunUpdate, None]:
        try:
            async for update in _follow(info, id, logs_after, samples_after):
                info.context.renew_loaders()  # each event's nested fields read afresh
                yield update
        except DomainError as exc:  # the schema's error codes, as for queries
            raise graphql_error(exc) from None


async def _follow(
    info: Info, id: strawberry.ID, logs_after: int | None, samples_after: int | None
) -> AsyncGenerator[RunUpdate, None]:
    """The updates of one run: now, then after every change, until it has finished."""
    caller = info.context.require_caller()
    run_id = parse_id(id, "run")
    caller.require_scope(Scope.READ)  # as every read of lines and samples (a gateway: no)
    if not notify.HUB.running:  # live notifications off: each subscription polls its run
        async for update in _poll(info, caller, run_id, logs_after, samples_after):
            yield update
        return
    # Subscribers of one run share its feed: one read per change for all of them, woken by
    # the process's listener (`runwatch.services.notify`).
    run = await elt_runs_api.get_visible_run(caller=caller, run_id=run_id)
    with notify.HUB.watch(run.organisation_id, run_id) as (feed,  # type: ignore[attr-defined]
                                                          subscriber):
        run = await elt_runs_api.get_visible_run(caller=caller, run_id=run_id)
        feed.prime(run)
        log_seq = run.log_seq if logs_after is None else int(logs_after)
        sample_seq = run.sample_seq if samples_after is None else int(samples_after)
        mark: _Seen | None = None
        lines: list = []
        samples: list = []
        shared: notify.Snapshot | None = None  # the shared read this update comes from alone
        while True:
            if log_seq < run.log_seq or sample_seq < run.sample_seq or mark is None:
                if log_seq < run.log_seq and not lines:
                    lines = await run_reads.lines_after(caller=caller, run_id=run_id,
                                                        seq=log_seq)
                    shared = None
                if sample_seq < run.sample_seq and not samples:
                    samples = await run_reads.samples_after(caller=caller, run_id=run_id,
                                                            seq=sample_seq)
                    shared = None
            if _mark(run) != mark or lines or samples:
                update = _update(shared, log_seq, sample_seq, run, lines, samples)
                log_seq = lines[-1].seq if lines else max(log_seq, run.log_seq)
                sample_seq = samples[-1].seq if samples else max(sample_seq, run.sample_seq)
                mark = _mark(run)
                yield update
                del update  # sent: nothing of it is kept while waiting
                lines, samples, shared = [], [], None
                if is_terminal(run.status) and log_seq >= run.log_seq and (
                    sample_seq >= run.sample_seq
                ):
                    return
                if log_seq < run.log_seq or sample_seq < run.sample_seq:
                    continue  # more than one batch was waiting
            run = mark  # type: ignore[assignment]  # (the same values: see the yield)
            await feed.wait(subscriber)
            snapshot = feed.snapshot
            if snapshot is None or _older(snapshot.run, run):
                continue
            run, shared = snapshot.run, snapshot
            # What the shared read brought, when this subscriber was not behind it (else
            # its own read above catches up).
            if log_seq >= snapshot.log_from:
                lines = [x for x in snapshot.lines if x.seq > log_seq]
            if sample_seq >= snapshot.sample_from:
                samples = [x for x in snapshot.samples if x.seq > sample_seq]


async def _poll(
    info: Info, caller: Caller, run_id: int, logs_after: int | None, samples_after: int | None
) -> AsyncGenerator[RunUpdate, None]:
    """Without live notifications (`RUNWATCH_LIVE_NOTIFY=0`): re-read the run every
    `RUNWATCH_LIVE_POLL_SECONDS` (and when this process changes it)."""
    poll = info.context.settings.live_poll_seconds
    with signals.watching_run(run_id) as changed:
        run = await elt_runs_api.get_visible_run(caller=caller, run_id=run_id)
        log_seq = run.log_seq if logs_after is None else int(logs_after)
        sample_seq = run.sample_seq if samples_after is None else int(samples_after)
        mark = None
        while True:
            if _mark(run) != mark or log_seq < run.log_seq or sample_seq < run.sample_seq:
                lines = await run_reads.lines_after(caller=caller, run_id=run_id,
                                                    seq=log_seq)
                samples = await run_reads.samples_after(caller=caller, run_id=run_id,
                                                        seq=sample_seq)
                # Nothing after the mark means nothing left to send (lines may also
                # have been trimmed or replaced meanwhile).
                log_seq = lines[-1].seq if lines else run.log_seq
                sample_seq = samples[-1].seq if samples else run.sample_seq
                mark = _mark(run)
                yield RunUpdate(run=Run.of(run),
                                new_log_lines=[LogLine.of(x) for x in lines],
                                new_samples=[TelemetrySample.of(x) for x in samples])
                if is_terminal(run.status) and log_seq >= run.log_seq and (
                    sample_seq >= run.sample_seq
                ):
                    return
                if log_seq < run.log_seq or sample_seq < run.sample_seq:
                    continue  # more than one batch was waiting
            await signals.wait(changed, poll)
            run = await elt_runs_api.get_visible_run(caller=caller, run_id=run_id)
