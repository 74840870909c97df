"""Reading a run's log lines and telemetry samples page by page (GraphQL), and what changed
since a given point (live subscriptions)."""

from __future__ import annotations

from runwatch.models import RunLogLine, RunTelemetrySample
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.pagination import Page, paginate

# A live update carries at most this many new lines or samples; the next update the rest.
LIVE_BATCH = 500


async def log_page(
    *, caller: Caller, run_id: int, first: int | None = None, after: str | None = None
) -> Page[RunLogLine]:
    """A run's kept log lines, oldest first (ids grow with `seq` within a run)."""
    caller.require_scope(Scope.READ)
    query = RunLogLine.filter(run_id=run_id, run__organisation_id=caller.organisation_id)
    return await paginate(query, first=first, after=after, newest_first=False)


async def sample_page(
    *, caller: Caller, run_id: int, first: int | None = None, after: str | None = None
) -> Page[RunTelemetrySample]:
    """A run's kept telemetry samples, oldest first."""
    caller.require_scope(Scope.READ)
    query = RunTelemetrySample.filter(
        run_id=run_id, run__organisation_id=caller.organisation_id)
    return await paginate(query, first=first, after=after, newest_first=False)


async def lines_after(*, caller: Caller, run_id: int, seq: int) -> list[RunLogLine]:
    caller.require_scope(Scope.READ)
    return await RunLogLine.filter(
        run_id=run_id, run__organisation_id=caller.organisation_id, seq__gt=seq
    ).order_by("seq").limit(LIVE_BATCH)


async def samples_after(*, caller: Caller, run_id: int, seq: int) -> list[RunTelemetrySample]:
    caller.require_scope(Scope.READ)
    return await RunTelemetrySample.filter(
        run_id=run_id, run__organisation_id=caller.organisation_id, seq__gt=seq
    ).order_by("seq").limit(LIVE_BATCH)
