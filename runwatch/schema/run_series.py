"""A run's logs and samples: its log lines, its telemetry samples and the summary its runner
keeps."""

from __future__ import annotations

from datetime import datetime

import strawberry

from runwatch.models import LogLevel as LogLevelModel
from runwatch.models import Run as RunModel
from runwatch.models import RunLogLine as RunLogLineModel
from runwatch.models import RunTelemetrySample as RunTelemetrySampleModel
from runwatch.resolvers.run_summary import summary_of
from runwatch.schema.types import BigInt

LogLevel = strawberry.enum(LogLevelModel, description="A log line's level.")


@strawberry.type(description="One structured log line of a run.")
class LogLine:
    seq: BigInt  # type: ignore[valid-type]
    at: datetime
    level: LogLevel  # type: ignore[valid-type]
    message: str

    @staticmethod
    def of(m: RunLogLineModel) -> LogLine:
        return LogLine(seq=m.seq, at=m.at, level=m.level, message=m.message)


@strawberry.type(description="One point of a run's live telemetry.")
class TelemetrySample:
    seq: BigInt  # type: ignore[valid-type]
    at: datetime
    rows: BigInt | None  # type: ignore[valid-type]
    bytes: BigInt | None  # type: ignore[valid-type]
    rows_delta: BigInt | None  # type: ignore[valid-type]
    bytes_delta: BigInt | None  # type: ignore[valid-type]
    progress: float | None
    phase: str | None
    resource: str | None

    @staticmethod
    def of(m: RunTelemetrySampleModel) -> TelemetrySample:
        return TelemetrySample(
            seq=m.seq, at=m.at, rows=m.rows, bytes=m.bytes, rows_delta=m.rows_delta,
            bytes_delta=m.bytes_delta, progress=m.progress, phase=m.phase, resource=m.resource)


@strawberry.type(description="A run's live telemetry summary (shallow-merged by its runner).")
class RunTelemetrySummary:
    rows_loaded: BigInt | None  # type: ignore[valid-type]
    bytes_loaded: BigInt | None  # type: ignore[valid-type]
    progress: float | None
    current_phase: str | None
    current_resource: str | None
    updated_at: datetime | None

    @staticmethod
    def of(m: RunModel) -> RunTelemetrySummary:
        summary = summary_of(m)
        updated = summary.get("updatedAt")
        return RunTelemetrySummary(
            rows_loaded=summary.get("rowsLoaded"), bytes_loaded=summary.get("bytesLoaded"),
            progress=summary.get("progress"), current_phase=summary.get("currentPhase"),
            current_resource=summary.get("currentResource"),
            updated_at=datetime.fromisoformat(updated.replace("Z", "+00:00"))
            if isinstance(updated, str) else None,
        )
