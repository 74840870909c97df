"""Tortoise models, one module per aggregate. Migrations in `migrations/` are the only way the
database schema changes."""

from runwatch.models.connection import Connection
from runwatch.models.organisation import Organisation, ServiceToken
from runwatch.models.pipeline import Pipeline, PipelineHourlyStats
from runwatch.models.run import OPEN_STATUSES, TERMINAL_STATUSES, Run, RunStatus

# Largest ids the id columns hold: runs and roll-ups use BIGINT, everything else INTEGER.
INT_ID_MAX = 2**31 - 1
BIGINT_ID_MAX = 2**63 - 1

__all__ = [
    "BIGINT_ID_MAX",
    "INT_ID_MAX",
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
