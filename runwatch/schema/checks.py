"""Checks and anomalies: anomaly rules and their flagged results, timeliness and freshness
findings, and the mutations that manage rules and queue checks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from runwatch.models import AnomalyResult as AnomalyResultModel
from runwatch.models import AnomalyRule as AnomalyRuleModel
from runwatch.models import FreshnessLog as FreshnessLogModel
from runwatch.models import TimelinessLog as TimelinessLogModel
from runwatch.resolvers import anomalies as anomalies_api
from runwatch.resolvers import checks as checks_api
from runwatch.resolvers.errors import InvalidInput
from runwatch.schema.context import Info
from runwatch.schema.errors import (
    DoneResult,
    DoneSuccess,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    as_data,
    filter_id,
    parse_id,
)
from runwatch.schema.types import Page


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


@strawberry.type
class CheckQuery:
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
    ) -> Page[AnomalyResult]:
        caller = info.context.require_caller()
        return Page.of(await anomalies_api.list_results(
            caller=caller, pipeline_id=filter_id(pipeline_id, "pipeline"),
            run_id=filter_id(run_id, "run"), first=first, after=after), AnomalyResult.of)

    @strawberry.field(description="Runs that missed their timeliness deadline, newest first.")
    async def timeliness_logs(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Page[TimelinessLog]:
        caller = info.context.require_caller()
        return Page.of(await checks_api.list_timeliness_logs(
            caller=caller, first=first, after=after), TimelinessLog.of)

    @strawberry.field(description="Stale target data found by freshness checks, newest first.")
    async def freshness_logs(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Page[FreshnessLog]:
        caller = info.context.require_caller()
        return Page.of(await checks_api.list_freshness_logs(
            caller=caller, first=first, after=after), FreshnessLog.of)


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


@strawberry.type
class AnomalyRuleSuccess:
    rule: AnomalyRule
    created: bool


AnomalyRuleResult = Annotated[
    AnomalyRuleSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("AnomalyRuleResult")]
@strawberry.type
class CheckMutation:
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
