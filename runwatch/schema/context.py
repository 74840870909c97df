"""The typed per-request context. DataLoaders live here and nowhere else: one set per HTTP
request, per WebSocket operation (`Context.for_operation`) and per subscription event
(`Context.renew_loaders`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import strawberry
from strawberry.dataloader import DataLoader

from runwatch.models import (
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
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from runwatch.resolvers import batch_reads
from runwatch.resolvers import telemetry as telemetry_api
from runwatch.resolvers import webhooks as webhooks_api
from runwatch.resolvers.batch_reads import Window
from runwatch.resolvers.caller import Caller
from runwatch.resolvers.errors import DomainError, Unauthenticated
from runwatch.resolvers.pagination import Page
from runwatch.resolvers.telemetry import Telemetry, TelemetryOptions
from runwatch.settings import Settings

V = TypeVar("V")
F = TypeVar("F", bound=Hashable)

# A page of a parent's children: (parent id, the page's window, the children's filter).
PageKey = tuple[int, Window, F]

# Attributes of Loaders that are not loaders (for its repr).
_OWN = frozenset({"caller", "options"})


def _grouped(
    read: Callable[[list[int], Window, F], Awaitable[dict[int, Page[V]]]],
) -> Callable[[list[PageKey[F]]], Awaitable[list[Page[V] | BaseException]]]:
    """A batch function for pages per parent: one read per distinct (window, filter), and a
    bad window's error for its own keys only."""

    async def load(keys: list[PageKey[F]]) -> list[Page[V] | BaseException]:
        groups: dict[tuple[Window, F], list[int]] = {}
        for parent, window, where in keys:
            groups.setdefault((window, where), []).append(parent)
        found: dict[tuple[Window, F], dict[int, Page[V]] | BaseException] = {}
        for (window, where), parents in groups.items():
            try:
                found[window, where] = await read(parents, window, where)
            except DomainError as exc:  # a bad window: the answer of these keys only
                found[window, where] = exc
        answers: list[Page[V] | BaseException] = []
        for parent, window, where in keys:
            pages = found[window, where]
            answers.append(pages if isinstance(pages, BaseException) else pages[parent])
        return answers

    return load


class Loaders:
    """One DataLoader per relation a list can reach; each batch calls a read of
    `runwatch.resolvers.batch_reads` (or of the telemetry and webhook resolvers), which scopes
    it to the caller's organisation and checks the caller's scope.

    Each loader is created the first time a resolver asks for it (`cached_property`), so a
    request pays only for the loaders it uses: a mutation such as `reportRun` uses none, and
    used to build all twenty on every request. Within a request a loader is still one object,
    so batching and its per-request cache are unchanged."""

    def __init__(self, caller: Caller | None, options: TelemetryOptions) -> None:
        self.caller = caller
        self.options = options

    def __repr__(self) -> str:
        return f"Loaders(caller={self.caller!r}, built={sorted(self.__dict__.keys() - _OWN)})"

    @cached_property
    def connection(self) -> DataLoader[int, Connection | None]:
        return self._by_id(batch_reads.connections)

    @cached_property
    def pipeline(self) -> DataLoader[int, Pipeline | None]:
        return self._by_id(batch_reads.pipelines)

    @cached_property
    def run(self) -> DataLoader[int, Run | None]:
        return self._by_id(batch_reads.runs)

    @cached_property
    def gateway(self) -> DataLoader[int, Gateway | None]:
        return self._by_id(batch_reads.gateways)

    @cached_property
    def pipeline_type(self) -> DataLoader[int, PipelineType | None]:
        return self._by_id(batch_reads.pipeline_types)

    @cached_property
    def address_type(self) -> DataLoader[int, AddressType | None]:
        return self._by_id(batch_reads.address_types)

    @cached_property
    def webhook_endpoint(self) -> DataLoader[int, WebhookEndpoint | None]:
        return self._by_id(batch_reads.webhook_endpoints)

    @cached_property
    def pipelines_of_connection(self) -> DataLoader[int, list[Pipeline]]:
        return DataLoader(self._pipelines_of_connections)

    @cached_property
    def children_of_run(self) -> DataLoader[int, list[Run]]:
        return self._lists(
            lambda ids: batch_reads.children_of_runs(caller=self._caller(), run_ids=ids))

    @cached_property
    def anomaly_results_of_run(self) -> DataLoader[int, list[AnomalyResult]]:
        return self._lists(
            lambda ids: batch_reads.anomaly_results_of_runs(caller=self._caller(), run_ids=ids))

    @cached_property
    def endpoint_of_pipeline(self) -> DataLoader[int, WebhookEndpoint | None]:
        return self._found(lambda ids: batch_reads.endpoints_of_pipelines(
            caller=self._caller(), pipeline_ids=ids))

    @cached_property
    def delivery_attempts(self) -> DataLoader[int, list[WebhookAttempt]]:
        return self._lists(
            lambda ids: webhooks_api.attempts_of(caller=self._caller(), delivery_ids=ids))

    @cached_property
    def connection_telemetry(self) -> DataLoader[int, Telemetry | None]:
        return self._found(lambda ids: telemetry_api.telemetry_of_connections(
            caller=self._caller(), connection_ids=ids, options=self.options))

    @cached_property
    def pipeline_telemetry(self) -> DataLoader[int, Telemetry | None]:
        return self._found(lambda ids: telemetry_api.telemetry_of_pipelines(
            caller=self._caller(), pipelines=ids, options=self.options))

    @cached_property
    def runs_of_pipeline(self) -> DataLoader[PageKey[tuple[RunStatus, ...]], Page[Run]]:
        return DataLoader(_grouped(
            lambda ids, window, statuses: batch_reads.runs_of_pipelines(
                caller=self._caller(), pipeline_ids=ids, window=window, statuses=statuses)))

    @cached_property
    def runs_of_connection(self) -> DataLoader[PageKey[tuple[RunStatus, ...]], Page[Run]]:
        return DataLoader(_grouped(
            lambda ids, window, statuses: batch_reads.runs_of_connections(
                caller=self._caller(), connection_ids=ids, window=window, statuses=statuses)))

    @cached_property
    def log_page(self) -> DataLoader[PageKey[None], Page[RunLogLine]]:
        return DataLoader(_grouped(
            lambda ids, window, _: batch_reads.log_pages(caller=self._caller(), run_ids=ids,
                                                         window=window)))

    @cached_property
    def sample_page(self) -> DataLoader[PageKey[None], Page[RunTelemetrySample]]:
        return DataLoader(_grouped(
            lambda ids, window, _: batch_reads.sample_pages(caller=self._caller(), run_ids=ids,
                                                            window=window)))

    @cached_property
    def deliveries_of_run(self) -> DataLoader[PageKey[None], Page[WebhookDelivery]]:
        return DataLoader(_grouped(
            lambda ids, window, _: batch_reads.deliveries_of_runs(
                caller=self._caller(), run_ids=ids, window=window)))

    @cached_property
    def deliveries_of_endpoint(
        self,
    ) -> DataLoader[PageKey[DeliveryStatus | None], Page[WebhookDelivery]]:
        return DataLoader(_grouped(
            lambda ids, window, status: batch_reads.deliveries_of_endpoints(
                caller=self._caller(), endpoint_ids=ids, window=window, status=status)))

    def _caller(self) -> Caller:
        if self.caller is None:
            raise Unauthenticated()
        return self.caller

    def _by_id(
        self, read: Callable[..., Awaitable[dict[int, V]]]
    ) -> DataLoader[int, V | None]:
        return self._found(lambda ids: read(caller=self._caller(), ids=ids))

    @staticmethod
    def _found(
        read: Callable[[list[int]], Awaitable[dict[int, V]]],
    ) -> DataLoader[int, V | None]:
        async def load(ids: list[int]) -> list[V | None]:
            found = await read(ids)
            return [found.get(i) for i in ids]

        return DataLoader(load)

    @staticmethod
    def _lists(
        read: Callable[[list[int]], Awaitable[dict[int, list[V]]]],
    ) -> DataLoader[int, list[V]]:
        async def load(ids: list[int]) -> list[list[V]]:
            found = await read(ids)
            return [found.get(i, []) for i in ids]

        return DataLoader(load)

    async def _pipelines_of_connections(self, ids: list[int]) -> list[list[Pipeline]]:
        found = await batch_reads.pipelines_of_connections(
            caller=self._caller(), connection_ids=ids)
        for rows in found.values():
            for p in rows:
                self.pipeline.prime(p.id, p)
        return [found.get(i, []) for i in ids]


@dataclass
class Context:
    caller: Caller | None
    options: TelemetryOptions
    loaders: Loaders
    settings: Settings = field(default_factory=Settings)
    request: Any = None
    response: Any = None
    # Set by the WebSocket protocols from the client's `connection_init` payload.
    connection_params: dict[str, Any] | None = None

    def for_operation(self) -> Context:
        """A copy for one operation of a socket, with its own DataLoaders: a loader's cache
        lasts one operation, as over HTTP (where each request builds its context)."""
        return dataclasses.replace(self, loaders=Loaders(caller=self.caller,
                                                         options=self.options))

    def adopt(self, caller: Caller) -> None:
        """`caller` from now on (a token's scopes looked up again), with loaders for it."""
        self.caller = caller
        self.loaders = Loaders(caller=caller, options=self.options)

    def renew_loaders(self) -> None:
        """Fresh DataLoaders: what a subscription does before each event, so that an event's
        nested fields are read as they are now, not as the previous event saw them."""
        self.loaders = Loaders(caller=self.caller, options=self.options)

    def require_caller(self) -> Caller:
        if self.caller is None:
            raise Unauthenticated(
                "Authentication required: send 'Authorization: Bearer <token>' "
                "(create one with `runwatch token create`)."
            )
        return self.caller


Info = strawberry.Info[Context, None]
