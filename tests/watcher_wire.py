"""Watcher executions as a job sends them: a wire body, parsed at the edge as the REST shim
parses it (`runwatch.rest_shim.watcher`), then handed to the domain. For the tests that
exercise the domain with the contract's bodies."""

from __future__ import annotations

from typing import Any

from runwatch.models import Run
from runwatch.resolvers import executions
from runwatch.rest_shim.watcher import execution_end_of, execution_start_of


async def start_execution(*, raw: dict[str, Any], **kwargs: Any) -> Run:
    return await executions.start_execution(start=execution_start_of(raw), **kwargs)


async def end_execution(*, raw: dict[str, Any], **kwargs: Any) -> tuple[Run, bool]:
    return await executions.end_execution(end=execution_end_of(raw), **kwargs)
