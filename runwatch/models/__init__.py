"""Tortoise models, one module per aggregate. Migrations in `migrations/` are the only way the
database schema changes."""

from runwatch.models.connection import Connection, ConnectionSecret, SecretRead
from runwatch.models.gateway import Gateway
from runwatch.models.organisation import Organisation, ServiceToken
from runwatch.models.pipeline import Pipeline, PipelineHourlyStats
from runwatch.models.run import (
    FAILED_STATUSES,
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    LogLevel,
    Run,
    RunLogLine,
    RunStatus,
    RunTelemetrySample,
)
from runwatch.models.tasks import AlertChannel, ChannelKind, Task, TaskStatus
from runwatch.models.watcher import (
    Address,
    AddressLineage,
    AddressType,
    AnomalyResult,
    AnomalyRule,
    FreshnessLog,
    PipelineType,
    TimelinessLog,
)
from runwatch.models.webhook import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

# Largest values of INTEGER and BIGINT columns (ids of runs and roll-ups are BIGINT, other ids
# INTEGER; counts are checked against these before they reach the database).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

__all__ = [
    "FAILED_STATUSES",
    "INT32_MAX",
    "INT64_MAX",
    "OPEN_STATUSES",
    "TERMINAL_STATUSES",
    "Address",
    "AddressLineage",
    "AddressType",
    "AlertChannel",
    "AnomalyResult",
    "AnomalyRule",
    "ChannelKind",
    "Connection",
    "ConnectionSecret",
    "DeliveryStatus",
    "FreshnessLog",
    "Gateway",
    "LogLevel",
    "Organisation",
    "Pipeline",
    "PipelineHourlyStats",
    "PipelineType",
    "Run",
    "RunLogLine",
    "RunStatus",
    "RunTelemetrySample",
    "SecretRead",
    "ServiceToken",
    "Task",
    "TaskStatus",
    "TimelinessLog",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
