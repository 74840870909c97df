"""The typed per-request context. DataLoaders live here and nowhere else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
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


@dataclass
class Loaders:
    """One DataLoader per relation a list can reach; each batch calls a read of
    `runwatch.resolvers.batch_reads` (or of the telemetry and webhook resolvers), which scopes
    it to the caller's organisation and checks the caller's scope."""

    caller: Caller | None
    options: TelemetryOptions
    connection: DataLoader[int, Connection | None] = field(init=False)
    pipeline: DataLoader[int, Pipeline | None] = field(init=False)
    run: DataLoader[int, Run | None] = field(init=False)
    gateway: DataLoader[int, Gateway | None] = field(init=False)
    pipeline_type: DataLoader[int, PipelineType | None] = field(init=False)
    address_type: DataLoader[int, AddressType | None] = field(init=False)
    webhook_endpoint: DataLoader[int, WebhookEndpoint | None] = field(init=False)
    pipelines_of_connection: DataLoader[int, list[Pipeline]] = field(init=False)
    children_of_run: DataLoader[int, list[Run]] = field(init=False)
    anomaly_results_of_run: DataLoader[int, list[AnomalyResult]] = field(init=False)
    endpoint_of_pipeline: DataLoader[int, WebhookEndpoint | None] = field(init=False)
    delivery_attempts: DataLoader[int, list[WebhookAttempt]] = field(init=False)
    connection_telemetry: DataLoader[int, Telemetry | None] = field(init=False)
    pipeline_telemetry: DataLoader[int, Telemetry | None] = field(init=False)
    runs_of_pipeline: DataLoader[PageKey[tuple[RunStatus, ...]], Page[Run]] = field(init=False)
    runs_of_connection: DataLoader[PageKey[tuple[RunStatus, ...]], Page[Run]] = field(
        init=False)
    log_page: DataLoader[PageKey[None], Page[RunLogLine]] = field(init=False)
    sample_page: DataLoader[PageKey[None], Page[RunTelemetrySample]] = field(init=False)
    deliveries_of_run: DataLoader[PageKey[None], Page[WebhookDelivery]] = field(init=False)
    deliveries_of_endpoint: DataLoader[PageKey[DeliveryStatus | None], Page[WebhookDelivery]] = (
        field(init=False))

    def __post_init__(self) -> None:
        by_id, read = self._by_id, batch_reads
        self.connection = by_id(read.connections)
        self.pipeline = by_id(read.pipelines)
        self.run = by_id(read.runs)
        self.gateway = by_id(read.gateways)
        self.pipeline_type = by_id(read.pipeline_types)
        self.address_type = by_id(read.address_types)
        self.webhook_endpoint = by_id(read.webhook_endpoints)
        self.pipelines_of_connection = DataLoader(self._pipelines_of_connections)
        self.children_of_run = self._lists(
            lambda ids: read.children_of_runs(caller=self._caller(), run_ids=ids))
        self.anomaly_results_of_run = self._lists(
            lambda ids: read.anomaly_results_of_runs(caller=self._caller(), run_ids=ids))
        self.endpoint_of_pipeline = self._found(
            lambda ids: read.endpoints_of_pipelines(caller=self._caller(), pipeline_ids=ids))
        self.delivery_attempts = self._lists(
            lambda ids: webhooks_api.attempts_of(caller=self._caller(), delivery_ids=ids))
        self.connection_telemetry = self._found(
            lambda ids: telemetry_api.telemetry_of_connections(
                caller=self._caller(), connection_ids=ids, options=self.options))
        self.pipeline_telemetry = self._found(
            lambda ids: telemetry_api.telemetry_of_pipelines(
                caller=self._caller(), pipelines=ids, options=self.options))
        self.runs_of_pipeline = DataLoader(_grouped(
            lambda ids, window, statuses: read.runs_of_pipelines(
                caller=self._caller(), pipeline_ids=ids, window=window, statuses=statuses)))
        self.runs_of_connection = DataLoader(_grouped(
            lambda ids, window, statuses: read.runs_of_connections(
                caller=self._caller(), connection_ids=ids, window=window, statuses=statuses)))
        self.log_page = DataLoader(_grouped(
            lambda ids, window, _: read.log_pages(caller=self._caller(), run_ids=ids,
                                                  window=window)))
        self.sample_page = DataLoader(_grouped(
            lambda ids, window, _: read.sample_pages(caller=self._caller(), run_ids=ids,
                                                     window=window)))
        self.deliveries_of_run = DataLoader(_grouped(
            lambda ids, window, _: read.deliveries_of_runs(caller=self._caller(), run_ids=ids,
                                                           window=window)))
        self.deliveries_of_endpoint = DataLoader(_grouped(
            lambda ids, window, status: read.deliveries_of_endpoints(
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

    def require_caller(self) -> Caller:
        if self.caller is None:
            raise Unauthenticated(
                "Authentication required: send 'Authorization: Bearer <token>' "
                "(create one with `runwatch token create`)."
            )
        return self.caller


Info = strawberry.Info[Context, None]
