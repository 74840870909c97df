"""ELT mutations: pipelines (create, update) and runs (create, update with the REST PATCH's
fields, cancel). Typed inputs become the domain's typed inputs (`NewRun`, `PipelineFields`,
`RunChange`); the resolvers check their values, so both surfaces validate alike."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from runwatch.models import LogLevel as LogLevelModel
from runwatch.models import RunStatus as RunStatusModel
from runwatch.resolvers import elt_runs as elt_runs_api
from runwatch.resolvers import pipelines as pipelines_api
from runwatch.resolvers.clock import to_utc, utcnow
from runwatch.resolvers.pipelines import PipelineFields
from runwatch.resolvers.run_input import (
    UNSET,
    Errors,
    LogEntry,
    RunChange,
    Sample,
    SummaryPatch,
    check_int_id,
)
from runwatch.schema.context import Info
from runwatch.schema.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    as_data,
    parse_id,
)
from runwatch.schema.pipeline import Pipeline
from runwatch.schema.run import HoldsRun, RunStatus
from runwatch.schema.run_series import LogLevel
from runwatch.schema.types import BigInt


def _given(value: Any) -> Any:
    """A field a client set (null included), or the domain's UNSET when it left it out."""
    return UNSET if value is strawberry.UNSET else value


@strawberry.input
class CreatePipelineInput:
    name: str
    description: str | None = None
    max_runtime_seconds: int | None = strawberry.field(
        default=None, description="Runs still open this long after their start time out "
        "(at least 60; null: the deployment's default).")
    connection_id: strawberry.ID | None = None
    tool: str | None = strawberry.field(default=None, description="What runs it: dlt, sling, …")
    source_type: str | None = None
    destination_type: str | None = None
    source_configuration: JSON | None = strawberry.field(
        default=None, description="Non-secret source settings (at most 64 KiB of JSON); "
        "credentials belong in the connection's secrets.")
    pipeline_code: str | None = None
    config_yaml: str | None = None
    workspace_yaml: str | None = None
    group_name: str | None = None
    enabled: bool | None = None


@strawberry.input
class UpdatePipelineInput:
    id: strawberry.ID
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    max_runtime_seconds: int | None = strawberry.UNSET
    tool: str | None = strawberry.UNSET
    source_type: str | None = strawberry.UNSET
    destination_type: str | None = strawberry.UNSET
    source_configuration: JSON | None = strawberry.UNSET
    pipeline_code: str | None = strawberry.UNSET
    config_yaml: str | None = strawberry.UNSET
    workspace_yaml: str | None = strawberry.UNSET
    group_name: str | None = strawberry.UNSET
    enabled: bool | None = strawberry.UNSET


DEFINITION = ("tool", "source_type", "destination_type", "source_configuration",
              "pipeline_code", "config_yaml", "workspace_yaml", "group_name")


@strawberry.type
class PipelineSuccess:
    pipeline: Pipeline


PipelineResult = Annotated[
    PipelineSuccess | NotFoundError | InvalidInputError | ConflictError | PermissionDeniedError,
    strawberry.union("PipelineResult"),
]


@strawberry.input
class CreateRunInput:
    pipeline_id: strawberry.ID
    environment: str | None = None
    correlation_id: str | None = strawberry.field(
        default=None, description="Unique in the organisation.")
    triggered_by: str | None = strawberry.field(
        default=None, description="At most 256 characters. Without it, a run with a "
        "partition is `backfill:partition:<column>:<value>`.")
    partition_column: str | None = strawberry.field(
        default=None, description="At most 256 characters. Without it, a partitionValue "
        "takes the pipeline's saved column (sourceConfiguration._partitionConfig of type "
        "date or key); none saved is an error.")
    partition_value: str | None = strawberry.field(
        default=None, description="At most 2048 characters.")
    target_gateway_id: strawberry.ID | None = strawberry.field(
        default=None, description="Reserve the run for one gateway.")
    status: RunStatus | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="PENDING (default: for a gateway to claim) or RUNNING.")


@strawberry.input(description="A log line; `at` defaults to now.")
class LogLineInput:
    message: str
    level: LogLevel = LogLevel.INFO  # type: ignore[valid-type,attr-defined]
    at: datetime | None = None


@strawberry.input(description="Shallow-merged into the live summary; a field set to null "
                  "is removed. The server stamps updatedAt.")
class TelemetrySummaryInput:
    rows_loaded: BigInt | None = strawberry.UNSET  # type: ignore[valid-type]
    bytes_loaded: BigInt | None = strawberry.UNSET  # type: ignore[valid-type]
    progress: float | None = strawberry.UNSET
    current_phase: str | None = strawberry.UNSET
    current_resource: str | None = strawberry.UNSET


@strawberry.input(description="One telemetry point; `at` defaults to now.")
class TelemetrySampleInput:
    at: datetime | None = None
    rows: BigInt | None = None  # type: ignore[valid-type]
    bytes: BigInt | None = None  # type: ignore[valid-type]
    rows_delta: BigInt | None = None  # type: ignore[valid-type]
    bytes_delta: BigInt | None = None  # type: ignore[valid-type]
    progress: float | None = None
    phase: str | None = None
    resource: str | None = None


@strawberry.input(description="What the REST PATCH of a run expresses, all applied at once "
                  "or not at all.")
class UpdateRunInput:
    id: strawberry.ID
    status: RunStatus | None = None  # type: ignore[valid-type]
    append_log: LogLineInput | None = None
    log_entries: list[LogLineInput] | None = strawberry.field(
        default=None, description="Replaces the log (at most 500 lines).")
    error_summary: str | None = strawberry.UNSET
    finished_at: datetime | None = None
    telemetry_summary: TelemetrySummaryInput | None = None
    append_telemetry_sample: TelemetrySampleInput | None = None
    telemetry_samples: list[TelemetrySampleInput] | None = strawberry.field(
        default=None, description="Replaces the samples (at most 2000).")


@strawberry.type
class RunSuccess(HoldsRun):
    pass


RunResult = Annotated[
    RunSuccess | NotFoundError | InvalidInputError | ConflictError | PermissionDeniedError,
    strawberry.union("RunResult"),
]

def _time(value: datetime | None, field: str, now: datetime) -> datetime:
    return to_utc(value, field) if value is not None else now


def _line(value: LogLineInput, now: datetime, *, stamped: bool, field: str) -> LogEntry:
    """A log line; an appended one is stamped by the server (its `at` is ignored)."""
    return LogEntry(at=now if stamped else _time(value.at, f"{field}.at", now),
                    level=LogLevelModel(value.level), message=value.message)


def _point(value: TelemetrySampleInput, now: datetime, field: str) -> Sample:
    return Sample(at=_time(value.at, f"{field}.at", now), rows=value.rows, bytes=value.bytes,
                  rows_delta=value.rows_delta, bytes_delta=value.bytes_delta,
                  progress=value.progress, phase=value.phase, resource=value.resource)


def _summary(value: TelemetrySummaryInput) -> SummaryPatch:
    """Set fields merge in, null ones are removed, the ones left out stay as they are."""
    document = {"progress": value.progress, "currentPhase": value.current_phase,
                "currentResource": value.current_resource}
    return SummaryPatch(rows=_given(value.rows_loaded), bytes=_given(value.bytes_loaded),
                        document={k: v for k, v in document.items()
                                  if v is not strawberry.UNSET})


def change_of(input: UpdateRunInput, now: datetime) -> RunChange:
    """The typed input as the domain's RunChange (`check_change` checks its values)."""
    return RunChange(
        status=RunStatusModel(input.status) if input.status is not None else None,
        append_log=_line(input.append_log, now, stamped=True, field="append_log")
        if input.append_log is not None else None,
        log_entries=[_line(e, now, stamped=False, field=f"log_entries[{i}]")
                     for i, e in enumerate(input.log_entries)]
        if input.log_entries is not None else None,
        error_summary=_given(input.error_summary),
        finished_at=to_utc(input.finished_at, "finished_at")
        if input.finished_at is not None else None,
        summary=_summary(input.telemetry_summary)
        if input.telemetry_summary is not None else None,
        append_sample=_point(input.append_telemetry_sample, now, "append_telemetry_sample")
        if input.append_telemetry_sample is not None else None,
        samples=[_point(p, now, f"telemetry_samples[{i}]")
                 for i, p in enumerate(input.telemetry_samples)]
        if input.telemetry_samples is not None else None,
    )


@strawberry.type
class EltMutation:
    @strawberry.mutation(description="Create a pipeline (names are unique per organisation).")
    async def create_pipeline(self, info: Info, input: CreatePipelineInput) -> PipelineResult:
        caller = info.context.require_caller()

        async def call() -> PipelineSuccess:
            errors = Errors()
            connection_id = check_int_id(input.connection_id, "connection_id", errors)
            errors.raise_any()
            definition = {name: getattr(input, name) for name in DEFINITION
                          if getattr(input, name) is not None}
            if input.enabled is not None:
                definition["enabled"] = input.enabled
            row = await pipelines_api.create_pipeline(caller=caller, fields=PipelineFields(
                name=input.name, description=input.description,
                max_runtime_seconds=input.max_runtime_seconds, connection_id=connection_id,
                **definition))
            return PipelineSuccess(pipeline=Pipeline.of(row))

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Change a pipeline's name, description or maximum "
                         "runtime.")
    async def update_pipeline(self, info: Info, input: UpdatePipelineInput) -> PipelineResult:
        caller = info.context.require_caller()

        async def call() -> PipelineSuccess:
            row = await pipelines_api.update_pipeline(
                caller=caller, pipeline_id=parse_id(input.id, "pipeline"),
                fields=PipelineFields(
                    name=_given(input.name), description=_given(input.description),
                    max_runtime_seconds=_given(input.max_runtime_seconds),
                    **{name: _given(getattr(input, name)) for name in (*DEFINITION,
                                                                        "enabled")}))
            return PipelineSuccess(pipeline=Pipeline.of(row))

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Create a run: pending for a gateway to claim, or "
                         "running for a worker that starts it itself.")
    async def create_run(self, info: Info, input: CreateRunInput) -> RunResult:
        caller = info.context.require_caller()

        async def call() -> RunSuccess:
            errors = Errors()
            new = elt_runs_api.NewRun(
                pipeline_id=check_int_id(input.pipeline_id, "pipeline_id", errors) or 0,
                environment=input.environment, correlation_id=input.correlation_id,
                triggered_by=input.triggered_by, partition_column=input.partition_column,
                partition_value=input.partition_value,
                target_gateway_id=check_int_id(
                    input.target_gateway_id, "target_gateway_id", errors),
                status=RunStatusModel(input.status.value) if input.status
                else RunStatusModel.PENDING)
            errors.raise_any()
            row = await elt_runs_api.create_run(
                caller=caller, new=new, default_max_runtime=info.context.options.orphan_window)
            return RunSuccess(row=row)

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Change a run: status (the state machine), logs, live "
                         "telemetry, error summary.")
    async def update_run(self, info: Info, input: UpdateRunInput) -> RunResult:
        caller = info.context.require_caller()

        async def call() -> RunSuccess:
            change = change_of(input, utcnow())
            row = await elt_runs_api.update_run(
                caller=caller, run_id=parse_id(input.id, "run"), change=change,
                default_max_runtime=info.context.options.orphan_window)
            return RunSuccess(row=row)

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Cancel a pending or running run; its gateway sees "
                         "cancel: true on its next call.")
    async def cancel_run(self, info: Info, id: strawberry.ID) -> RunResult:
        caller = info.context.require_caller()

        async def call() -> RunSuccess:
            row = await elt_runs_api.cancel_run(caller=caller, run_id=parse_id(id, "run"))
            return RunSuccess(row=row)

        return await as_data(call)  # type: ignore[return-value]
