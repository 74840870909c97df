from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class TaskStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Task(Model):
    """Background work as a row with a due time (anomaly detection after a run, a freshness or
    timeliness check, a schedule's next tick). Workers claim due rows (`FOR UPDATE SKIP LOCKED`
    on PostgreSQL) with a claim that expires, so any number of them can run. A recurring task
    has a `key` (one row per schedule) and is due again after each run."""

    id = fields.BigIntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="tasks", null=True, on_delete=fields.CASCADE
    )
    kind = fields.CharField(max_length=40)
    key = fields.CharField(max_length=100, null=True, unique=True)
    payload = fields.JSONField(default=dict)
    status = fields.CharEnumField(TaskStatus, max_length=16, default=TaskStatus.PENDING)
    due_at = fields.DatetimeField()
    attempts = fields.IntField(default=0)
    claim = fields.CharField(max_length=32, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    finished_at = fields.DatetimeField(null=True)
    last_error = fields.TextField(null=True)

    class Meta:
        table = "task"
        indexes = (("status", "due_at"), ("status", "kind"))


class ChannelKind(StrEnum):
    SLACK = "slack"  # a Slack-compatible incoming webhook: {"text": ...}
    WEBHOOK = "webhook"  # runwatch's signed Standard Webhooks body


class AlertChannel(Model):
    """Where an organisation's alerts go (anomalies, freshness, timeliness, stuck runs, queue
    depth). Alerts are sent through the webhook delivery machinery (retries, attempts)."""

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="alert_channels", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=200)
    kind = fields.CharEnumField(ChannelKind, max_length=16)
    url = fields.CharField(max_length=2000)
    secret = fields.CharField(max_length=100, null=True)
    enabled = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "alert_channel"
        unique_together = (("organisation", "name"),)
