"""Following a run live: `subscription { runUpdates(id) { … } }` over WebSocket
(graphql-transport-ws or graphql-ws).

Each update carries the run as it is now and the log lines and samples added since the
previous update. A change committed in this process wakes the subscription at once; changes
made by other replicas or workers are seen by a cheap re-read of the run's row every
`RUNWATCH_LIVE_POLL_SECONDS` (PostgreSQL NOTIFY would serialise every committing append on
the notification queue, which the log-append path cannot afford). The subscription ends with
the update that shows the run finished.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from runwatch.models import Run as RunModel
from runwatch.resolvers import elt_runs as elt_runs_api
from runwatch.resolvers import run_reads, signals
from runwatch.resolvers.errors import DomainError
from runwatch.resolvers.lifecycle import is_terminal
from runwatch.schema.context import Info
from runwatch.schema.errors import graphql_error, parse_id
from runwatch.schema.run import Run
from runwatch.schema.run_series import LogLine, TelemetrySample
from runwatch.schema.types import BigInt


@strawberry.type(description="What changed in a run since the previous update.")
class RunUpdate:
    run: Run
    new_log_lines: list[LogLine]
    new_samples: list[TelemetrySample]


def _mark(run: RunModel) -> tuple:
    return (run.status, run.updated_at, run.log_seq, run.sample_seq)


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
                yield update
        except DomainError as exc:  # the schema's error codes, as for queries
            raise graphql_error(exc) from None


async def _follow(
    info: Info, id: strawberry.ID, logs_after: int | None, samples_after: int | None
) -> AsyncGenerator[RunUpdate, None]:
    """The updates of one run: now, then after every change, until it has finished."""
    caller = info.context.require_caller()
    run_id = parse_id(id, "run")
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
