from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


OPEN_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING)
TERMINAL_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.TIMED_OUT,
)
# Outcomes that count as failures (an error, DLQ batches, or orphaned and timed out).
FAILED_STATUSES = (RunStatus.FAILED, RunStatus.TIMED_OUT)


class Run(Model):
    """One execution of a pipeline, with the typed metrics every contract maps onto.

    `pending -> running -> succeeded | failed | cancelled | timed_out`; terminal states never
    change again. `organisation` is denormalised from the pipeline so that every run lookup is
    scoped by one indexed column.
    """

    id = fields.BigIntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="runs", on_delete=fields.CASCADE
    )
    pipeline = fields.ForeignKeyField(
        "models.Pipeline", related_name="runs", on_delete=fields.CASCADE
    )
    parent = fields.ForeignKeyField(
        "models.Run", related_name="children", null=True, on_delete=fields.CASCADE
    )
    status = fields.CharEnumField(RunStatus, max_length=16, default=RunStatus.PENDING)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)
    # Metrics. Null means "not reported", which is different from zero.
    events_delivered = fields.BigIntField(null=True)
    events_evaluations = fields.BigIntField(null=True)
    events_custom = fields.BigIntField(null=True)
    dlq_batches = fields.IntField(null=True)
    rows_total = fields.BigIntField(null=True)
    rows_inserted = fields.BigIntField(null=True)
    rows_updated = fields.BigIntField(null=True)
    rows_deleted = fields.BigIntField(null=True)
    bytes = fields.BigIntField(null=True)
    error = fields.TextField(null=True)
    # When an open run times out: its start plus its pipeline's maximum runtime (or the
    # deployment's default), fixed when it starts. Null while pending.
    deadline_at = fields.DatetimeField(null=True)
    # ELT-runs fields.
    # db_default: the columns are added to tables that already hold runs.
    environment = fields.CharField(max_length=100, default="default", db_default="default")
    correlation_id = fields.CharField(max_length=200, null=True)
    # eltPulse's limits (run-types.ts createRunBodySchema): 256, 256, 2048. triggered_by holds
    # up to 256 sent, or a derived `backfill:partition:<column>:<value>` (19 + 256 + 1 + 2048).
    triggered_by = fields.CharField(max_length=2400, null=True)
    partition_column = fields.CharField(max_length=256, null=True)
    partition_value = fields.CharField(max_length=2048, null=True)
    target_gateway = fields.ForeignKeyField(
        "models.Gateway", related_name="targeted_runs", null=True, on_delete=fields.SET_NULL
    )
    # Who claimed it (pending -> running): a gateway, or else the token of a managed worker.
    gateway = fields.ForeignKeyField(
        "models.Gateway", related_name="claimed_runs", null=True, on_delete=fields.SET_NULL
    )
    claimed_by_token_id = fields.IntField(null=True)
    # Live telemetry summary (progress, currentPhase, currentResource, updatedAt); rows and
    # bytes loaded are the typed `rows_total` and `bytes` columns.
    telemetry_summary = fields.JSONField(null=True)
    # Capped logs and samples: the last sequence number given out and the one before the
    # current log (a replace starts a new log). The lines kept are the newest `cap` of
    # (base, seq]; `seq - base - cap` lines were dropped. O(1) per append, no counting.
    # Watcher fields: the UTC hour and date of the start (anomaly baselines compare runs of
    # the same hour of day), duration and throughput (total rows / second) of a finished run.
    hour_recorded = fields.SmallIntField(null=True)
    date_recorded = fields.DateField(null=True)
    duration_seconds = fields.BigIntField(null=True)
    throughput = fields.FloatField(null=True)
    watermark = fields.CharField(max_length=50, null=True)
    next_watermark = fields.CharField(max_length=50, null=True)
    execution_metadata = fields.JSONField(null=True)
    anomaly_flags = fields.JSONField(null=True)
    log_seq = fields.BigIntField(default=0, db_default=0)
    log_base = fields.BigIntField(default=0, db_default=0)
    sample_seq = fields.BigIntField(default=0, db_default=0)
    sample_base = fields.BigIntField(default=0, db_default=0)
    # OpenLineage fields: the client's run id (a UUID, unique per organisation), the
    # nominalTime facet's start, and the facets runwatch has no column for (size-capped).
    openlineage_run_id = fields.CharField(max_length=36, null=True)
    scheduled_at = fields.DatetimeField(null=True)
    openlineage_facets = fields.JSONField(null=True)

    class Meta:
        table = "run"
        unique_together = (("organisation", "correlation_id"),
                           ("organisation", "openlineage_run_id"))
        indexes = (
            ("pipeline_id", "status", "finished_at"),  # telemetry: edges, failures, streak
            ("pipeline_id", "status", "deadline_at"),  # telemetry: open runs past deadline
            ("status", "deadline_at"),  # the reaper
            ("gateway_id", "status"),  # the reaper: runs of gateways that went silent
            ("pipeline_id", "id"),  # a pipeline's runs, newest first
            ("organisation_id", "id"),  # an organisation's runs, newest first
            ("organisation_id", "status", "id"),  # gateways polling for pending runs
            ("pipeline_id", "hour_recorded", "started_at"),  # anomaly baselines
            ("parent_id",),  # execution trees
            ("organisation_id", "started_at"),  # timeliness windows, retention
        )


class LogLevel(StrEnum):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class RunLogLine(Model):
    """One structured log line of a run, ordered within the run by `seq` (see `Run.log_seq`)."""

    id = fields.BigIntField(primary_key=True)
    run = fields.ForeignKeyField("models.Run", related_name="log_lines", on_delete=fields.CASCADE)
    seq = fields.BigIntField()
    at = fields.DatetimeField()
    level = fields.CharEnumField(LogLevel, max_length=8)
    message = fields.TextField()

    class Meta:
        table = "run_log_line"
        unique_together = (("run", "seq"),)


class RunTelemetrySample(Model):
    """One point of a run's live telemetry time series, ordered within the run by `seq`."""

    id = fields.BigIntField(primary_key=True)
    run = fields.ForeignKeyField(
        "models.Run", related_name="telemetry_samples", on_delete=fields.CASCADE
    )
    seq = fields.BigIntField()
    at = fields.DatetimeField()
    rows = fields.BigIntField(null=True)
    bytes = fields.BigIntField(null=True)
    rows_delta = fields.BigIntField(null=True)
    bytes_delta = fields.BigIntField(null=True)
    progress = fields.FloatField(null=True)
    phase = fields.CharField(max_length=200, null=True)
    resource = fields.CharField(max_length=512, null=True)  # eltPulse's limit

    class Meta:
        table = "run_telemetry_sample"
        unique_together = (("run", "seq"),)
