"""Watcher requests as a job sends them: a wire body, parsed at the edge as the REST shim
parses it (`runwatch.rest_shim.watcher`), then handed to the domain. For the tests that
exercise the domain with the contract's bodies."""

from __future__ import annotations

from typing import Any

from runwatch.models import AnomalyRule, Run
from runwatch.resolvers import anomalies, checks, executions
from runwatch.rest_shim.watcher import (
    execution_end_of,
    execution_start_of,
    lookback_of,
    rule_change_of,
    rule_of,
    unflag_of,
)


async def start_execution(*, raw: dict[str, Any], **kwargs: Any) -> Run:
    return await executions.start_execution(start=execution_start_of(raw), **kwargs)


async def end_execution(*, raw: dict[str, Any], **kwargs: Any) -> tuple[Run, bool]:
    return await executions.end_execution(end=execution_end_of(raw), **kwargs)


async def get_or_create_rule(*, raw: dict[str, Any], **kwargs: Any) -> tuple[AnomalyRule, bool]:
    return await anomalies.get_or_create_rule(rule=rule_of(raw), **kwargs)


async def patch_rule(*, raw: dict[str, Any], **kwargs: Any) -> AnomalyRule:
    return await anomalies.patch_rule(change=rule_change_of(raw), **kwargs)


async def unflag(*, raw: dict[str, Any], **kwargs: Any) -> int:
    return await anomalies.unflag(request=unflag_of(raw), **kwargs)


async def request_timeliness(*, raw: Any, **kwargs: Any) -> None:
    await checks.request_timeliness(lookback_minutes=lookback_of(raw), **kwargs)
