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

    class Meta:
        table = "run"
        indexes = (
            ("pipeline_id", "status", "finished_at"),  # telemetry: edges, failures, streak
            ("pipeline_id", "status", "started_at"),  # telemetry: open runs past their window
            ("status", "started_at"),  # the reaper
            ("pipeline_id", "id"),  # a pipeline's runs, newest first
            ("organisation_id", "id"),  # an organisation's runs, newest first
        )
