"""Reads for many parents at once: what a list's relation fields load (the GraphQL DataLoaders
call these), each scoped to the caller's organisation, each a fixed number of statements
whatever the number of parents.

Two shapes:

- objects by id, and the children of many parents (a pipeline's runs' parents, a connection's
  pipelines): one `IN (...)` query;
- a page per parent (`Pipeline.runs(first, after)`, `Run.logEntries`, ...): the same keyset
  pagination as `pagination.paginate`, for every parent in one statement. `ROW_NUMBER() OVER
  (PARTITION BY parent ORDER BY id)` numbers each parent's rows past the cursor and keeps the
  first `first + 1` of each (the extra row tells whether a next page exists); SQLite (3.25+)
  and PostgreSQL both have window functions. The statement selects ids only; the rows are
  then read through the ORM: two statements per distinct `(first, after, filter)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tortoise import fields
from tortoise.models import Model

from runwatch.models import (
    INT32_MAX,
    INT64_MAX,
    AddressType,
    AnomalyResult,
    Connection,
    DeliveryStatus,
    Gateway,
    Pipeline,
    PipelineType,
    Run,
    RunLogLine,
    RunStatus,
    RunTelemetrySample,
    WebhookDelivery,
    WebhookEndpoint,
)
from runwatch.resolvers import sql, webhooks
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.errors import InvalidInput
from runwatch.resolvers.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, decode_cursor

M = TypeVar("M", bound=Model)


# ----------------------------------------------------------------------------- by id


async def _by_id(caller: Caller, model: type[M], ids: Sequence[int]) -> dict[int, M]:
    caller.require_scope(Scope.READ)
    rows = await model.filter(organisation_id=caller.organisation_id, id__in=list(set(ids)))
    return {row.pk: row for row in rows}


async def connections(*, caller: Caller, ids: Sequence[int]) -> dict[int, Connection]:
    return await _by_id(caller, Connection, ids)


async def pipelines(*, caller: Caller, ids: Sequence[int]) -> dict[int, Pipeline]:
    return await _by_id(caller, Pipeline, ids)


async def runs(*, caller: Caller, ids: Sequence[int]) -> dict[int, Run]:
    return await _by_id(caller, Run, ids)


async def gateways(*, caller: Caller, ids: Sequence[int]) -> dict[int, Gateway]:
    return await _by_id(caller, Gateway, ids)


async def pipeline_types(*, caller: Caller, ids: Sequence[int]) -> dict[int, PipelineType]:
    return await _by_id(caller, PipelineType, ids)


async def address_types(*, caller: Caller, ids: Sequence[int]) -> dict[int, AddressType]:
    return await _by_id(caller, AddressType, ids)


async def webhook_endpoints(*, caller: Caller, ids: Sequence[int]) -> dict[int, WebhookEndpoint]:
    """Endpoints by id, readable as every read of them is (`webhooks.require_viewer`)."""
    webhooks.require_viewer(caller)
    rows = await WebhookEndpoint.filter(organisation_id=caller.organisation_id,
                                        id__in=list(set(ids)))
    return {row.pk: row for row in rows}


# ----------------------------------------------------------------------------- children


async def _children(
    caller: Caller, model: type[M], parent: str, parents: Sequence[int], order: str
) -> dict[int, list[M]]:
    caller.require_scope(Scope.READ)
    grouped: dict[int, list[M]] = {p: [] for p in parents}
    for row in await model.filter(
        organisation_id=caller.organisation_id, **{f"{parent}__in": list(set(parents))}
    ).order_by(order):
        grouped[getattr(row, parent)].append(row)
    return grouped


async def pipelines_of_connections(
    *, caller: Caller, connection_ids: Sequence[int]
) -> dict[int, list[Pipeline]]:
    """Each connection's pipelines, oldest first."""
    return await _children(caller, Pipeline, "connection_id", connection_ids, "id")


async def children_of_runs(*, caller: Caller, run_ids: Sequence[int]) -> dict[int, list[Run]]:
    """Each run's direct children, oldest first."""
    return await _children(caller, Run, "parent_id", run_ids, "id")


async def anomaly_results_of_runs(
    *, caller: Caller, run_ids: Sequence[int]
) -> dict[int, list[AnomalyResult]]:
    """Each run's flagged metrics, newest first."""
    return await _children(caller, AnomalyResult, "run_id", run_ids, "-id")


async def endpoints_of_pipelines(
    *, caller: Caller, pipeline_ids: Sequence[int]
) -> dict[int, WebhookEndpoint]:
    """Each pipeline's own webhook endpoint (pipelines without one are left out), readable as
    every read of them is (`webhooks.require_viewer`)."""
    webhooks.require_viewer(caller)
    rows = await WebhookEndpoint.filter(
        organisation_id=caller.organisation_id, pipeline_id__in=list(set(pipeline_ids)))
    return {row.pipeline_id: row for row in rows}  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class Window:
    """`first` and `after` of a page per parent, checked as `paginate` checks them."""

    first: int | None = None
    after: str | None = None

    def size(self) -> int:
        size = DEFAULT_PAGE_SIZE if self.first is None else self.first
        if size < 1 or size > MAX_PAGE_SIZE:
            raise InvalidInput.one("first", f"must be between 1 and {MAX_PAGE_SIZE}")
        return size

    def bound(self, model: type[Model]) -> int | None:
        """The cursor's id, clamped to what the id column holds."""
        if self.after is None:
            return None
        wide = isinstance(model._meta.pk, fields.BigIntField)
        return min(decode_cursor(self.after), INT64_MAX if wide else INT32_MAX)


@dataclass(frozen=True)
class _Source:
    """Where a windowed read finds its rows: `parent` (a column expression) partitions them,
    `organisation` scopes them, `joins` reach either when the table has not got it."""

    model: type[Model]
    parent: str
    organisation: str
    joins: str = ""


async def _pages(
    source: _Source, *, caller: Caller, parents: Sequence[int], window: Window,
    newest_first: bool, where: str = "", params: Sequence[Any] = (),
) -> dict[int, Page[Any]]:
    caller.require_scope(Scope.READ)
    size, bound = window.size(), window.bound(source.model)
    parents = sorted(set(parents))
    pages: dict[int, Page[Any]] = {p: Page(items=[], has_next_page=False) for p in parents}
    if not parents:
        return pages
    table = source.model._meta.db_table
    direction, beyond = ("DESC", "<") if newest_first else ("ASC", ">")
    conditions = [f"{source.parent} IN ({sql.placeholders(len(parents))})",
                  f"{source.organisation} = ?"]
    values: list[Any] = [*parents, caller.organisation_id]
    if where:
        conditions.append(where)
        values.extend(params)
    if bound is not None:
        conditions.append(f"{table}.id {beyond} ?")
        values.append(bound)
    statement = (
        f"SELECT id, parent FROM (SELECT {table}.id AS id, {source.parent} AS parent, "
        f"ROW_NUMBER() OVER (PARTITION BY {source.parent} ORDER BY {table}.id {direction}) "
        f"AS position FROM {table} {source.joins} WHERE {' AND '.join(conditions)}) windowed "
        f"WHERE position <= ?"
    )
    found = await sql.fetch(statement, [*values, size + 1])
    if not found:
        return pages
    rows = {row.pk: row for row in await source.model.filter(
        id__in=[int(r["id"]) for r in found])}
    grouped: dict[int, list[Any]] = {p: [] for p in parents}
    for r in found:
        grouped[int(r["parent"])].append(rows[int(r["id"])])
    for parent, items in grouped.items():
        items.sort(key=lambda row: row.pk, reverse=newest_first)
        pages[parent] = Page(items=items[:size], has_next_page=len(items) > size)
    return pages


_RUNS_OF_PIPELINES = _Source(Run, "run.pipeline_id", "run.organisation_id")
_RUNS_OF_CONNECTIONS = _Source(Run, "pipeline.connection_id", "run.organisation_id",
                               "JOIN pipeline ON pipeline.id = run.pipeline_id")
_LOG_LINES = _Source(RunLogLine, "run_log_line.run_id", "run.organisation_id",
                     "JOIN run ON run.id = run_log_line.run_id")
_SAMPLES = _Source(RunTelemetrySample, "run_telemetry_sample.run_id", "run.organisation_id",
                   "JOIN run ON run.id = run_telemetry_sample.run_id")
_DELIVERIES_OF_RUNS = _Source(WebhookDelivery, "webhook_delivery.run_id",
                              "webhook_delivery.organisation_id")
_DELIVERIES_OF_ENDPOINTS = _Source(WebhookDelivery, "webhook_delivery.endpoint_id",
                                   "webhook_delivery.organisation_id")


def _status_filter(column: str, statuses: Sequence[RunStatus] | None) -> tuple[str, list[str]]:
    if not statuses:
        return "", []
    values = sorted({RunStatus(s).value for s in statuses})
    return f"{column} IN ({sql.placeholders(len(values))})", values


async def runs_of_pipelines(
    *, caller: Caller, pipeline_ids: Sequence[int], window: Window,
    statuses: Sequence[RunStatus] | None = None,
) -> dict[int, Page[Run]]:
    """A page of each pipeline's runs, newest first (as `runs.list_runs(pipeline_id=)`)."""
    where, params = _status_filter("run.status", statuses)
    return await _pages(_RUNS_OF_PIPELINES, caller=caller, parents=pipeline_ids, window=window,
                        newest_first=True, where=where, params=params)


async def runs_of_connections(
    *, caller: Caller, connection_ids: Sequence[int], window: Window,
    statuses: Sequence[RunStatus] | None = None,
) -> dict[int, Page[Run]]:
    """A page of the runs of each connection's pipelines, newest first (as
    `runs.list_runs(connection_id=)`)."""
    where, params = _status_filter("run.status", statuses)
    return await _pages(_RUNS_OF_CONNECTIONS, caller=caller, parents=connection_ids,
                        window=window, newest_first=True, where=where, params=params)


async def log_pages(
    *, caller: Caller, run_ids: Sequence[int], window: Window
) -> dict[int, Page[RunLogLine]]:
    """A page of each run's kept log lines, oldest first (as `run_reads.log_page`)."""
    return await _pages(_LOG_LINES, caller=caller, parents=run_ids, window=window,
                        newest_first=False)


async def sample_pages(
    *, caller: Caller, run_ids: Sequence[int], window: Window
) -> dict[int, Page[RunTelemetrySample]]:
    """A page of each run's kept telemetry samples, oldest first."""
    return await _pages(_SAMPLES, caller=caller, parents=run_ids, window=window,
                        newest_first=False)


async def deliveries_of_runs(
    *, caller: Caller, run_ids: Sequence[int], window: Window
) -> dict[int, Page[WebhookDelivery]]:
    """A page of each run's webhook deliveries, newest first."""
    return await _pages(_DELIVERIES_OF_RUNS, caller=caller, parents=run_ids, window=window,
                        newest_first=True)


async def deliveries_of_endpoints(
    *, caller: Caller, endpoint_ids: Sequence[int], window: Window,
    status: DeliveryStatus | None = None,
) -> dict[int, Page[WebhookDelivery]]:
    """A page of each endpoint's deliveries, newest first, optionally of one status."""
    where, params = ("", []) if status is None else (
        "webhook_delivery.status = ?", [DeliveryStatus(status).value])
    return await _pages(_DELIVERIES_OF_ENDPOINTS, caller=caller, parents=endpoint_ids,
                        window=window, newest_first=True, where=where, params=params)
