"""The Watcher's part of the schema, composed from its domains: pipeline types, lineage, checks
and anomalies, alert channels. (Executions are runs: `Run.parent`, `Run.children`,
`Run.anomalyResults`.)"""

from __future__ import annotations

import strawberry

from runwatch.schema.alerts import AlertMutation, AlertQuery
from runwatch.schema.checks import CheckMutation, CheckQuery
from runwatch.schema.lineage import LineageQuery
from runwatch.schema.pipeline_types import PipelineTypeMutation, PipelineTypeQuery


@strawberry.type
class WatcherQuery(PipelineTypeQuery, LineageQuery, CheckQuery, AlertQuery):
    pass


@strawberry.type
class WatcherMutation(CheckMutation, AlertMutation, PipelineTypeMutation):
    pass
