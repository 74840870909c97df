"""Watcher over GraphQL: pipeline types, dataset addresses and their lineage graph, anomaly
rules and results, freshness and timeliness logs, alert channels. (Executions are runs:
`Run.parent`, `Run.children`, `Run.anomalyResults`.)"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from runwatch.models import Address as AddressModel
from runwatch.models import AddressLineage as AddressLineageModel
from runwatch.models import AddressType as AddressTypeModel
from runwatch.models import AlertChannel as AlertChannelModel
from runwatch.models import AnomalyResult as AnomalyResultModel
from runwatch.models import AnomalyRule as AnomalyRuleModel
from runwatch.models import FreshnessLog as FreshnessLogModel
from runwatch.models import PipelineType as PipelineTypeModel
from runwatch.models import TimelinessLog as TimelinessLogModel
from runwatch.resolvers import addresses as addresses_api
from runwatch.resolvers import alerts as alerts_api
from runwatch.resolvers import anomalies as anomalies_api
from runwatch.resolvers import checks as checks_api
from runwatch.resolvers import watcher_pipelines as pipelines_api
from runwatch.resolvers.errors import InvalidInput
from runwatch.resolvers.pagination import Page
from runwatch.schema.context import Info
from runwatch.schema.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    as_data,
    filter_id,
    or_none,
    parse_id,
)
from runwatch.schema.types import Edge, PageInfo, Pipeline, _page_parts


@strawberry.type(description="A kind of pipeline with default freshness and timeliness.")
class PipelineType:
    id: strawberry.ID
    name: str
    freshness_number: int | None
    freshness_datepart: str | None
    mute_freshness_check: bool
    timeliness_number: int | None
    timeliness_datepart: str | None
    mute_timeliness_check: bool
    created_at: datetime
    updated_at: datetime | None

    @staticmethod
    def of(m: PipelineTypeModel) -> PipelineType:
        return PipelineType(
            id=strawberry.ID(str(m.id)), name=m.name, freshness_number=m.freshness_number,
            freshness_datepart=m.freshness_datepart,
            mute_freshness_check=m.mute_freshness_check,
            timeliness_number=m.timeliness_number, timeliness_datepart=m.timeliness_datepart,
            mute_timeliness_check=m.mute_timeliness_check, created_at=m.created_at,
            updated_at=m.updated_at)


@strawberry.type(description="A kind of dataset address and its group (e.g. postgres, "
                 "database).")
class AddressType:
    id: strawberry.ID
    name: str
    group_name: str
    created_at: datetime

    @staticmethod
    def of(m: AddressTypeModel) -> AddressType:
        return AddressType(id=strawberry.ID(str(m.id)), name=m.name, group_name=m.group_name,
                           created_at=m.created_at)


@strawberry.type(description="A dataset. `name` is its Watcher name; `namespace` + `name` "
                 "its OpenLineage identity.")
class Address:
    id: strawberry.ID
    name: str
    namespace: str | None
    database_name: str | None
    schema_name: str | None
    table_name: str | None
    primary_key: str | None
    address_metadata: JSON | None
    created_at: datetime
    updated_at: datetime | None
    address_type_id: strawberry.Private[int]

    @staticmethod
    def of(m: AddressModel) -> Address:
        return Address(
            id=strawberry.ID(str(m.id)), name=m.name, namespace=m.namespace,
            database_name=m.database_name, schema_name=m.schema_name, table_name=m.table_name,
            primary_key=m.primary_key, address_metadata=m.address_metadata,
            created_at=m.created_at, updated_at=m.updated_at,
            address_type_id=m.address_type_id)  # type: ignore[attr-defined]

    @strawberry.field
    async def address_type(self, info: Info) -> AddressType | None:
        info.context.require_caller()
        row = await info.context.loaders.address_type.load(self.address_type_id)
        return AddressType.of(row) if row else None


@strawberry.type(description="Data flows from `source` to `target`, drawn by `pipeline`.")
class LineageEdge:
    source_id: strawberry.ID
    target_id: strawberry.ID
    pipeline_id: strawberry.Private[int]

    @staticmethod
    def of(m: AddressLineageModel) -> LineageEdge:
        return LineageEdge(source_id=strawberry.ID(str(m.source_id)),  # type: ignore[attr-defined]
                           target_id=strawberry.ID(str(m.target_id)),  # type: ignore[attr-defined]
                           pipeline_id=m.pipeline_id)  # type: ignore[attr-defined]

    @strawberry.field
    async def pipeline(self, info: Info) -> Pipeline | None:
        info.context.require_caller()
        row = await info.context.loaders.pipeline.load(self.pipeline_id)
        return Pipeline.of(row) if row else None


@strawberry.type(description="The dataset graph around one address, to a depth.")
class LineageGraph:
    root: Address
    nodes: list[Address]
    edges: list[LineageEdge]


@strawberry.enum
class LineageDirection(Enum):
    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"
    BOTH = "both"


@strawberry.type(description="Flag runs whose metric leaves mean ± z·std of its baseline.")
class AnomalyRule:
    id: strawberry.ID
    pipeline_id: strawberry.ID
    metric_field: str
    z_threshold: float
    lookback_days: int
    minimum_executions: int
    active: bool
    created_at: datetime
    updated_at: datetime | None

    @staticmethod
    def of(m: AnomalyRuleModel) -> AnomalyRule:
        return AnomalyRule(
            id=strawberry.ID(str(m.id)),
            pipeline_id=strawberry.ID(str(m.pipeline_id)),  # type: ignore[attr-defined]
            metric_field=m.metric_field, z_threshold=m.z_threshold,
            lookback_days=m.lookback_days, minimum_executions=m.minimum_executions,
            active=m.active, created_at=m.created_at, updated_at=m.updated_at)


@strawberry.type(description="A flagged metric of a run, with the numbers that explain it.")
class AnomalyResult:
    id: strawberry.ID
    run_id: strawberry.ID
    pipeline_id: strawberry.ID
    metric_field: str
    value: float
    mean: float
    std_dev: float
    z_threshold: float
    lower_bound: float
    upper_bound: float
    points: int = strawberry.field(description="Runs in the baseline.")
    detected_at: datetime

    @staticmethod
    def of(m: AnomalyResultModel) -> AnomalyResult:
        return AnomalyResult(
            id=strawberry.ID(str(m.id)), run_id=strawberry.ID(str(m.run_id)),  # type: ignore[attr-defined]
            pipeline_id=strawberry.ID(str(m.pipeline_id)),  # type: ignore[attr-defined]
            metric_field=m.metric_field, value=m.value, mean=m.mean, std_dev=m.std_dev,
            z_threshold=m.z_threshold, lower_bound=m.lower_bound, upper_bound=m.upper_bound,
            points=m.points, detected_at=m.detected_at)


@strawberry.type(description="A run that missed its timeliness deadline.")
class TimelinessLog:
    id: strawberry.ID
    run_id: strawberry.ID
    pipeline_id: strawberry.ID
    run_status: str
    deadline_at: datetime
    created_at: datetime

    @staticmethod
    def of(m: TimelinessLogModel) -> TimelinessLog:
        return TimelinessLog(
            id=strawberry.ID(str(m.id)), run_id=strawberry.ID(str(m.run_id)),  # type: ignore[attr-defined]
            pipeline_id=strawberry.ID(str(m.pipeline_id)),  # type: ignore[attr-defined]
            run_status=m.run_status, deadline_at=m.deadline_at, created_at=m.created_at)


@strawberry.type(description="A pipeline whose target data went stale.")
class FreshnessLog:
    id: strawberry.ID
    pipeline_id: strawberry.ID
    last_dml_at: datetime
    deadline_at: datetime
    created_at: datetime

    @staticmethod
    def of(m: FreshnessLogModel) -> FreshnessLog:
        return FreshnessLog(
            id=strawberry.ID(str(m.id)),
            pipeline_id=strawberry.ID(str(m.pipeline_id)),  # type: ignore[attr-defined]
            last_dml_at=m.last_dml_at, deadline_at=m.deadline_at, created_at=m.created_at)


@strawberry.type(description="Where alerts go: a Slack-compatible incoming webhook or the "
                 "signed generic webhook.")
class AlertChannel:
    id: strawberry.ID
    name: str
    kind: str
    url: str
    enabled: bool
    created_at: datetime

    @staticmethod
    def of(m: AlertChannelModel) -> AlertChannel:
        return AlertChannel(id=strawberry.ID(str(m.id)), name=m.name, kind=m.kind.value,
                            url=m.url, enabled=m.enabled, created_at=m.created_at)


@strawberry.type
class AnomalyResultPage:
    edges: list[Edge[AnomalyResult]]
    nodes: list[AnomalyResult]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page) -> AnomalyResultPage:
        return cls(**_page_parts(page, AnomalyResult))


@strawberry.type
class TimelinessLogPage:
    edges: list[Edge[TimelinessLog]]
    nodes: list[TimelinessLog]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page) -> TimelinessLogPage:
        return cls(**_page_parts(page, TimelinessLog))


@strawberry.type
class FreshnessLogPage:
    edges: list[Edge[FreshnessLog]]
    nodes: list[FreshnessLog]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page) -> FreshnessLogPage:
        return cls(**_page_parts(page, FreshnessLog))


@strawberry.type
class WatcherQuery:
    @strawberry.field(description="The organisation's pipeline types.")
    async def pipeline_types(self, info: Info) -> list[PipelineType]:
        caller = info.context.require_caller()
        return [PipelineType.of(t) for t in await pipelines_api.list_types(caller=caller)]

    @strawberry.field
    async def pipeline_type(self, info: Info, id: strawberry.ID) -> PipelineType | None:
        caller = info.context.require_caller()
        row = await or_none(lambda: pipelines_api.get_type(
            caller=caller, type_id=parse_id(id, "pipeline type")))
        return PipelineType.of(row) if row else None

    @strawberry.field(description="The organisation's dataset addresses.")
    async def addresses(self, info: Info) -> list[Address]:
        caller = info.context.require_caller()
        return [Address.of(a) for a in await addresses_api.list_addresses(caller=caller)]

    @strawberry.field(description="One address by id, or by name (and OpenLineage namespace).")
    async def address(
        self, info: Info, id: strawberry.ID | None = None, name: str | None = None,
        namespace: str | None = None,
    ) -> Address | None:
        caller = info.context.require_caller()
        if id is not None:
            row = await or_none(lambda: addresses_api.get_address(
                caller=caller, address_id=parse_id(id, "address")))
        elif name is not None:
            # Both are stored lower-cased (the Watcher's wire convention), so both are matched so.
            row = await or_none(lambda: addresses_api.find_address(
                caller=caller, name=name.strip().lower(),
                namespace=None if namespace is None else namespace.strip().lower()))
        else:
            return None
        return Address.of(row) if row else None

    @strawberry.field(description="The dataset graph upstream and/or downstream of an address, "
                      "to `depth` hops (1-20), cycle-safe.")
    async def lineage(
        self, info: Info, address_id: strawberry.ID,
        direction: LineageDirection = LineageDirection.BOTH, depth: int = 3,
    ) -> LineageGraph | None:
        caller = info.context.require_caller()
        graph = await or_none(lambda: addresses_api.lineage_graph(
            caller=caller, address_id=parse_id(address_id, "address"),
            direction=direction.value, depth=depth))
        if graph is None:
            return None
        return LineageGraph(root=Address.of(graph.root),
                            nodes=[Address.of(a) for a in graph.nodes],
                            edges=[LineageEdge.of(e) for e in graph.edges])

    @strawberry.field
    async def anomaly_rules(
        self, info: Info, pipeline_id: strawberry.ID | None = None
    ) -> list[AnomalyRule]:
        caller = info.context.require_caller()
        rows = await anomalies_api.list_rules(
            caller=caller, pipeline_id=filter_id(pipeline_id, "pipeline"))
        return [AnomalyRule.of(r) for r in rows]

    @strawberry.field(description="Flagged metrics, newest first.")
    async def anomaly_results(
        self, info: Info, pipeline_id: strawberry.ID | None = None,
        run_id: strawberry.ID | None = None, first: int | None = None, after: str | None = None,
    ) -> AnomalyResultPage:
        caller = info.context.require_caller()
        return AnomalyResultPage.of(await anomalies_api.list_results(
            caller=caller, pipeline_id=filter_id(pipeline_id, "pipeline"),
            run_id=filter_id(run_id, "run"), first=first, after=after))

    @strawberry.field(description="Runs that missed their timeliness deadline, newest first.")
    async def timeliness_logs(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> TimelinessLogPage:
        caller = info.context.require_caller()
        return TimelinessLogPage.of(await checks_api.list_timeliness_logs(
            caller=caller, first=first, after=after))

    @strawberry.field(description="Stale target data found by freshness checks, newest first.")
    async def freshness_logs(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> FreshnessLogPage:
        caller = info.context.require_caller()
        return FreshnessLogPage.of(await checks_api.list_freshness_logs(
            caller=caller, first=first, after=after))

    @strawberry.field
    async def alert_channels(self, info: Info) -> list[AlertChannel]:
        caller = info.context.require_caller()
        page = await alerts_api.list_channels(caller=caller, first=200)
        return [AlertChannel.of(c) for c in page.items]


@strawberry.input
class AnomalyRuleInput:
    pipeline_id: strawberry.ID
    metric_field: str
    z_threshold: float | None = None
    lookback_days: int | None = None
    minimum_executions: int | None = None
    active: bool | None = None


@strawberry.input
class UpdateAnomalyRuleInput:
    id: strawberry.ID
    metric_field: str | None = strawberry.UNSET
    z_threshold: float | None = strawberry.UNSET
    lookback_days: int | None = strawberry.UNSET
    minimum_executions: int | None = strawberry.UNSET
    active: bool | None = strawberry.UNSET


@strawberry.input
class CreateAlertChannelInput:
    name: str
    kind: str = strawberry.field(description="slack or webhook")
    url: str


@strawberry.type
class AnomalyRuleSuccess:
    rule: AnomalyRule
    created: bool


@strawberry.type
class AlertChannelSuccess:
    channel: AlertChannel
    secret: str | None = strawberry.field(
        description="The signing secret of a webhook channel, shown only when it is created.")


@strawberry.type
class DoneSuccess:
    ok: bool = True


AnomalyRuleResult = Annotated[
    AnomalyRuleSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("AnomalyRuleResult")]
AlertChannelResult = Annotated[
    AlertChannelSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("AlertChannelResult")]
DoneResult = Annotated[
    DoneSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("DoneResult")]


@strawberry.type
class WatcherMutation:
    @strawberry.mutation(description="Create an anomaly rule (or find the pipeline's rule for "
                         "that metric).")
    async def create_anomaly_rule(self, info: Info, input: AnomalyRuleInput) -> AnomalyRuleResult:
        caller = info.context.require_caller()

        async def call() -> AnomalyRuleSuccess:
            rule, made = await anomalies_api.get_or_create_rule(
                caller=caller, rule=anomalies_api.RuleInput(
                    pipeline_id=parse_id(input.pipeline_id, "pipeline"),
                    metric_field=input.metric_field, z_threshold=input.z_threshold,
                    lookback_days=input.lookback_days,
                    minimum_executions=input.minimum_executions, active=input.active))
            return AnomalyRuleSuccess(rule=AnomalyRule.of(rule), created=made)

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation
    async def update_anomaly_rule(
        self, info: Info, input: UpdateAnomalyRuleInput
    ) -> AnomalyRuleResult:
        caller = info.context.require_caller()

        async def call() -> AnomalyRuleSuccess:
            rule = await anomalies_api.patch_rule(caller=caller, change=anomalies_api.RuleChange(
                id=parse_id(input.id, "anomaly detection rule"),
                **{k: v for k, v in {
                    "metric_field": input.metric_field, "z_threshold": input.z_threshold,
                    "lookback_days": input.lookback_days,
                    "minimum_executions": input.minimum_executions, "active": input.active,
                }.items() if v is not strawberry.UNSET}))
            return AnomalyRuleSuccess(rule=AnomalyRule.of(rule), created=False)

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Unflag metrics of a run; they count in baselines again.")
    async def unflag_anomaly(
        self, info: Info, pipeline_id: strawberry.ID, run_id: strawberry.ID,
        metric_fields: list[str],
    ) -> DoneResult:
        caller = info.context.require_caller()

        async def call() -> DoneSuccess:
            try:
                await anomalies_api.unflag(caller=caller, request=anomalies_api.Unflag(
                    pipeline_id=parse_id(pipeline_id, "pipeline"),
                    run_id=parse_id(run_id, "run"), metric_fields=metric_fields))
            except InvalidInput as exc:  # the REST body's `metric_field` is `metricFields` here
                raise InvalidInput({"metric_fields" if k == "metric_field" else k: v
                                    for k, v in exc.fields.items()}) from None
            return DoneSuccess()

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Queue a timeliness check of the last `lookbackMinutes`.")
    async def request_timeliness_check(self, info: Info, lookback_minutes: int = 60) -> DoneResult:
        caller = info.context.require_caller()

        async def call() -> DoneSuccess:
            await checks_api.request_timeliness(caller=caller, lookback_minutes=lookback_minutes)
            return DoneSuccess()

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Queue a freshness check.")
    async def request_freshness_check(self, info: Info) -> DoneResult:
        caller = info.context.require_caller()

        async def call() -> DoneSuccess:
            await checks_api.request_freshness(caller=caller)
            return DoneSuccess()

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Add an alert channel (Slack-compatible or signed webhook).")
    async def create_alert_channel(
        self, info: Info, input: CreateAlertChannelInput
    ) -> AlertChannelResult:
        caller = info.context.require_caller()

        async def call() -> AlertChannelSuccess:
            channel = await alerts_api.create_channel(
                caller=caller, name=input.name, kind=input.kind, url=input.url,
                allow_private=info.context.settings.webhook_allow_private)
            return AlertChannelSuccess(channel=AlertChannel.of(channel), secret=channel.secret)

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation
    async def set_alert_channel_enabled(
        self, info: Info, id: strawberry.ID, enabled: bool
    ) -> AlertChannelResult:
        caller = info.context.require_caller()

        async def call() -> AlertChannelSuccess:
            channel = await alerts_api.set_channel_enabled(
                caller=caller, channel_id=parse_id(id, "alert channel"), enabled=enabled)
            return AlertChannelSuccess(channel=AlertChannel.of(channel), secret=None)

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation
    async def delete_alert_channel(self, info: Info, id: strawberry.ID) -> DoneResult:
        caller = info.context.require_caller()

        async def call() -> DoneSuccess:
            await alerts_api.delete_channel(caller=caller, channel_id=parse_id(id, "alert channel"))
            return DoneSuccess()

        return await as_data(call)  # type: ignore[return-value]
