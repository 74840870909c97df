"""The GraphQL schema: roots compose per-domain classes; `build_schema` is the one place that
attaches extensions (and the cost bounds, batching and introspection switches from settings)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache
from strawberry.schema.config import BatchingConfig, StrawberryConfig
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from runwatch.faults import DatabaseFaultErrors, graphql_fault
from runwatch.resolvers.errors import DomainError
from runwatch.resolvers.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from runwatch.schema.connection import ConnectionMutation, ConnectionQuery
from runwatch.schema.elt import EltMutation
from runwatch.schema.errors import (
    ConflictError,
    DomainErrorCodes,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from runwatch.schema.gateway import GatewayMutation, GatewayQuery
from runwatch.schema.input_plan import plan_inputs
from runwatch.schema.limits import MAX_BATCH_OPERATIONS, CostBounds
from runwatch.schema.live import LiveSubscription, SharedExecutor
from runwatch.schema.pipeline import PipelineQuery
from runwatch.schema.prepared import PreparedOperations
from runwatch.schema.run import RunMutation, RunQuery
from runwatch.schema.types import BIGINT_SCALAR, DATETIME_SCALAR, BigInt
from runwatch.schema.watcher import WatcherMutation, WatcherQuery
from runwatch.schema.webhook import WebhookMutation, WebhookQuery
from runwatch.settings import Settings


@strawberry.type
class Query(ConnectionQuery, PipelineQuery, RunQuery, GatewayQuery, WebhookQuery,
            WatcherQuery):
    pass


@strawberry.type
class Mutation(ConnectionMutation, RunMutation, EltMutation, GatewayMutation, WebhookMutation,
               WatcherMutation):
    pass


@strawberry.type
class Subscription(LiveSubscription):
    pass


def _is_unexpected(error: GraphQLError) -> bool:
    """Mask everything but the errors we raise on purpose (and parse/validation errors), and
    the database's faults (`DatabaseFaultErrors` words them)."""
    original = error.original_error
    return (original is not None and not isinstance(original, GraphQLError | DomainError)
            and not graphql_fault(error))


class MaskUnexpected(MaskErrors):
    """strawberry's `MaskErrors`, asking a result for its errors by attribute: the original's
    `isinstance` against a runtime-checkable Protocol walks the protocol for every result, 8 %
    of the CPU of a live update sent to many subscribers (py-spy under `bench.live`)."""

    def _process_result(self, result: object) -> None:
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]


class RunwatchSchema(strawberry.Schema):
    prepared: PreparedOperations  # set by build_schema

    async def execute(  # type: ignore[override]
        self, query: str | None, variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None, root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """A document validated before (over HTTP or a WebSocket) runs on the prepared path
        (`runwatch.schema.prepared`); any other goes through strawberry's."""
        prepared = self.prepared.get(
            query, operation_name, DEFAULT_ALLOWED_OPERATION_TYPES
            if allowed_operation_types is None else allowed_operation_types)
        if prepared is None or root_value is not None:
            return await super().execute(
                query, variable_values, context_value, root_value, operation_name,
                allowed_operation_types, operation_extensions)
        assert query is not None
        return await self.prepared.execute(
            prepared, query=query, variables=variable_values, context=context_value,
            operation_extensions=operation_extensions)

    def process_errors(self, errors, execution_context=None) -> None:  # type: ignore[no-untyped-def]
        """Log only unexpected errors; a domain failure is the caller's business, not ours."""
        super().process_errors([e for e in errors if _is_unexpected(e)], execution_context)


def build_schema(
    settings: Settings | None = None, *, max_page_size: int = MAX_PAGE_SIZE
) -> strawberry.Schema:
    """The schema for `settings` (the defaults when omitted, e.g. to print the SDL).

    Every extension is a class or factory, so each request gets fresh instances; the cost
    bounds' validation rule classes are built here, once, so that the validation cache's key
    stays the same from one request to the next (see `runwatch.schema.limits`)."""
    settings = settings or Settings()
    bounds = CostBounds(
        max_depth=settings.graphql_max_depth,
        max_aliases=settings.graphql_max_aliases,
        max_tokens=settings.graphql_max_tokens,
        max_page_size=max_page_size,
        introspection=settings.graphql_introspection,
        max_cost=settings.graphql_max_cost,
        default_page_size=DEFAULT_PAGE_SIZE,
        max_list_input=settings.graphql_max_list_input,
    )
    batching = (BatchingConfig(max_operations=MAX_BATCH_OPERATIONS)
                if settings.graphql_batching else None)
    schema = RunwatchSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(
            scalar_map={BigInt: BIGINT_SCALAR, datetime: DATETIME_SCALAR},
            batching_config=batching),
        types=[NotFoundError, InvalidInputError, ConflictError, PermissionDeniedError],
        execution_context_class=SharedExecutor,  # live updates: one execution per change
        # The rules of the four after validation are applied by the prepared path too, by the
        # same functions: none may gain a `resolve` hook (tests/test_prepared.py).
        extensions=[
            lambda: MaskUnexpected(should_mask_error=_is_unexpected),
            DomainErrorCodes,
            DatabaseFaultErrors,  # SERVICE_UNAVAILABLE (and a 503)
            lambda: ParserCache(maxsize=1024),
            lambda: ValidationCache(maxsize=1024),
            bounds.extension,  # after ValidationCache: it checks variables once validated
        ],
    )
    plan_inputs(schema)  # input objects built from a plan made once per type
    # A document validated once runs (over HTTP or a WebSocket) without the per-request
    # extension machinery, through the same rules (runwatch.schema.prepared).
    mask = MaskUnexpected(should_mask_error=_is_unexpected)
    schema.prepared = PreparedOperations(
        graphql_schema=schema._schema, bounds=bounds,
        process_errors=schema.process_errors, mask=mask._process_errors,
        executor_class=SharedExecutor)
    return schema
