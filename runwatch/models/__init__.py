"""Tortoise models, one module per aggregate. Migrations in `migrations/` are the only way the
database schema changes."""

from runwatch.models.connection import Connection
from runwatch.models.organisation import Organisation, ServiceToken
from runwatch.models.pipeline import Pipeline, PipelineHourlyStats
from runwatch.models.run import OPEN_STATUSES, TERMINAL_STATUSES, Run, RunStatus

__all__ = [
    "OPEN_STATUSES",
    "TERMINAL_STATUSES",
    "Connection",
    "Organisation",
    "Pipeline",
    "PipelineHourlyStats",
    "Run",
    "RunStatus",
    "ServiceToken",
]
