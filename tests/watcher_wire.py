"""Watcher requests as a job sends them: a wire body, parsed at the edge as the REST shim
parses it (`runwatch.rest_shim.watcher`), then handed to the domain. For the tests that
exercise the domain with the contract's bodies."""

from __future__ import annotations

from typing import Any

from runwatch.models import Address, AddressType, AnomalyRule, Pipeline, PipelineType, Run
from runwatch.resolvers import addresses, anomalies, checks, executions, watcher_pipelines
from runwatch.resolvers.addresses import LineageResult
from runwatch.rest_shim.watcher import (
    address_change_of,
    address_of,
    address_type_change_of,
    address_type_of,
    execution_end_of,
    execution_start_of,
    lineage_of,
    lookback_of,
    pipeline_change_of,
    pipeline_of,
    pipeline_type_change_of,
    pipeline_type_of,
    rule_change_of,
    rule_of,
    unflag_of,
)


async def get_or_create_type(*, raw: dict[str, Any], **kwargs: Any) -> tuple[PipelineType, bool]:
    return await watcher_pipelines.get_or_create_type(given=pipeline_type_of(raw), **kwargs)


async def patch_type(*, raw: dict[str, Any], **kwargs: Any) -> PipelineType:
    return await watcher_pipelines.patch_type(change=pipeline_type_change_of(raw), **kwargs)


async def patch_address_type(*, raw: dict[str, Any], **kwargs: Any) -> AddressType:
    return await addresses.patch_address_type(change=address_type_change_of(raw), **kwargs)


async def get_or_create_pipeline(*, raw: dict[str, Any], **kwargs: Any) -> tuple[Pipeline, bool]:
    return await watcher_pipelines.get_or_create_pipeline(given=pipeline_of(raw), **kwargs)


async def patch_pipeline(*, raw: dict[str, Any], **kwargs: Any) -> Pipeline:
    return await watcher_pipelines.patch_pipeline(change=pipeline_change_of(raw), **kwargs)


async def get_or_create_address_type(
    *, raw: dict[str, Any], **kwargs: Any
) -> tuple[AddressType, bool]:
    return await addresses.get_or_create_address_type(given=address_type_of(raw), **kwargs)


async def get_or_create_address(*, raw: dict[str, Any], **kwargs: Any) -> tuple[Address, bool]:
    return await addresses.get_or_create_address(given=address_of(raw), **kwargs)


async def patch_address(*, raw: dict[str, Any], **kwargs: Any) -> Address:
    return await addresses.patch_address(change=address_change_of(raw), **kwargs)


async def create_lineage(*, raw: dict[str, Any], **kwargs: Any) -> LineageResult:
    return await addresses.create_lineage(lineage=lineage_of(raw), **kwargs)


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
