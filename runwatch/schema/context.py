"""The typed per-request context. DataLoaders live here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import strawberry
from strawberry.dataloader import DataLoader

from runwatch.models import (
    AddressType,
    AnomalyResult,
    Connection,
    Gateway,
    Pipeline,
    PipelineType,
    Run,
    WebhookAttempt,
    WebhookEndpoint,
)
from runwatch.resolvers import telemetry as telemetry_api
from runwatch.resolvers import webhooks as webhooks_api
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.errors import Unauthenticated
from runwatch.resolvers.telemetry import Telemetry, TelemetryOptions
from runwatch.settings import Settings


@dataclass
class Loaders:
    caller: Caller | None
    options: TelemetryOptions
    connection: DataLoader[int, Connection | None] = field(init=False)
    pipeline: DataLoader[int, Pipeline | None] = field(init=False)
    pipelines_of_connection: DataLoader[int, list[Pipeline]] = field(init=False)
    connection_telemetry: DataLoader[int, Telemetry | None] = field(init=False)
    pipeline_telemetry: DataLoader[int, Telemetry | None] = field(init=False)
    gateway: DataLoader[int, Gateway | None] = field(init=False)
    pipeline_type: DataLoader[int, PipelineType | None] = field(init=False)
    run: DataLoader[int, Run | None] = field(init=False)
    address_type: DataLoader[int, AddressType | None] = field(init=False)
    anomaly_results_of_run: DataLoader[int, list[AnomalyResult]] = field(init=False)
    children_of_run: DataLoader[int, list[Run]] = field(init=False)
    webhook_endpoint: DataLoader[int, WebhookEndpoint | None] = field(init=False)
    delivery_attempts: DataLoader[int, list[WebhookAttempt]] = field(init=False)

    def __post_init__(self) -> None:
        self.connection = DataLoader(self._connections)
        self.pipeline = DataLoader(self._pipelines)
        self.pipelines_of_connection = DataLoader(self._pipelines_of_connections)
        self.connection_telemetry = DataLoader(self._connection_telemetry)
        self.pipeline_telemetry = DataLoader(self._pipeline_telemetry)
        self.gateway = DataLoader(self._gateways)
        self.pipeline_type = DataLoader(self._pipeline_types)
        self.run = DataLoader(self._runs)
        self.address_type = DataLoader(self._address_types)
        self.anomaly_results_of_run = DataLoader(self._anomaly_results_of_runs)
        self.children_of_run = DataLoader(self._children_of_runs)
        self.webhook_endpoint = DataLoader(self._webhook_endpoints)
        self.delivery_attempts = DataLoader(self._delivery_attempts)

    def _org(self) -> int:
        if self.caller is None:
            raise Unauthenticated()
        self.caller.require_scope(Scope.READ)
        return self.caller.organisation_id

    async def _connections(self, ids: list[int]) -> list[Connection | None]:
        rows = {c.id: c for c in await Connection.filter(organisation_id=self._org(), id__in=ids)}
        return [rows.get(i) for i in ids]

    async def _pipelines(self, ids: list[int]) -> list[Pipeline | None]:
        rows = {p.id: p for p in await Pipeline.filter(organisation_id=self._org(), id__in=ids)}
        return [rows.get(i) for i in ids]

    async def _gateways(self, ids: list[int]) -> list[Gateway | None]:
        rows = {g.id: g for g in await Gateway.filter(organisation_id=self._org(), id__in=ids)}
        return [rows.get(i) for i in ids]

    async def _pipeline_types(self, ids: list[int]) -> list[PipelineType | None]:
        rows = {t.id: t for t in await PipelineType.filter(
            organisation_id=self._org(), id__in=ids)}
        return [rows.get(i) for i in ids]

    async def _runs(self, ids: list[int]) -> list[Run | None]:
        rows = {r.id: r for r in await Run.filter(organisation_id=self._org(), id__in=ids)}
        return [rows.get(i) for i in ids]

    async def _address_types(self, ids: list[int]) -> list[AddressType | None]:
        rows = {t.id: t for t in await AddressType.filter(
            organisation_id=self._org(), id__in=ids)}
        return [rows.get(i) for i in ids]

    async def _anomaly_results_of_runs(self, ids: list[int]) -> list[list[AnomalyResult]]:
        grouped: dict[int, list[AnomalyResult]] = {i: [] for i in ids}
        for result in await AnomalyResult.filter(
            organisation_id=self._org(), run_id__in=ids
        ).order_by("-id"):
            grouped[result.run_id].append(result)  # type: ignore[attr-defined]
        return [grouped[i] for i in ids]

    async def _children_of_runs(self, ids: list[int]) -> list[list[Run]]:
        grouped: dict[int, list[Run]] = {i: [] for i in ids}
        for run in await Run.filter(organisation_id=self._org(), parent_id__in=ids).order_by(
            "id"
        ):
            grouped[run.parent_id].append(run)  # type: ignore[attr-defined]
        return [grouped[i] for i in ids]

    async def _webhook_endpoints(self, ids: list[int]) -> list[WebhookEndpoint | None]:
        rows = {e.id: e for e in await WebhookEndpoint.filter(
            organisation_id=self._org(), id__in=ids)}
        return [rows.get(i) for i in ids]

    async def _delivery_attempts(self, ids: list[int]) -> list[list[WebhookAttempt]]:
        self._org()
        found = await webhooks_api.attempts_of(
            caller=self.caller, delivery_ids=ids  # type: ignore[arg-type]
        )
        return [found[i] for i in ids]

    async def _pipelines_of_connections(self, ids: list[int]) -> list[list[Pipeline]]:
        grouped: dict[int, list[Pipeline]] = {i: [] for i in ids}
        for p in await Pipeline.filter(
            organisation_id=self._org(), connection_id__in=ids
        ).order_by("id"):
            grouped[p.connection_id].append(p)  # type: ignore[attr-defined]
            self.pipeline.prime(p.id, p)
        return [grouped[i] for i in ids]

    async def _connection_telemetry(self, ids: list[int]) -> list[Telemetry | None]:
        self._org()
        found = await telemetry_api.telemetry_of_connections(
            caller=self.caller, connection_ids=ids, options=self.options  # type: ignore[arg-type]
        )
        return [found.get(i) for i in ids]

    async def _pipeline_telemetry(self, ids: list[int]) -> list[Telemetry | None]:
        self._org()
        found = await telemetry_api.telemetry_of_pipelines(
            caller=self.caller, pipelines=ids, options=self.options  # type: ignore[arg-type]
        )
        return [found.get(i) for i in ids]


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
