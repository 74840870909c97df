"""The GraphQL schema: roots compose per-domain classes; `build_schema` is the one place that
attaches extensions."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig

from runwatch.resolvers.errors import DomainError
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
from runwatch.schema.live import LiveSubscription
from runwatch.schema.pipeline import PipelineQuery
from runwatch.schema.run import RunMutation, RunQuery
from runwatch.schema.types import BIGINT_SCALAR, BigInt
from runwatch.schema.watcher import WatcherMutation, WatcherQuery
from runwatch.schema.webhook import WebhookMutation, WebhookQuery


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
    """Mask everything but the errors we raise on purpose (and parse/validation errors)."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError | DomainError)


class RunwatchSchema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:  # type: ignore[no-untyped-def]
        """Log only unexpected errors; a domain failure is the caller's business, not ours."""
        super().process_errors([e for e in errors if _is_unexpected(e)], execution_context)


def build_schema() -> strawberry.Schema:
    return RunwatchSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(scalar_map={BigInt: BIGINT_SCALAR}),
        types=[NotFoundError, InvalidInputError, ConflictError, PermissionDeniedError],
        extensions=[
            lambda: MaskErrors(should_mask_error=_is_unexpected),
            DomainErrorCodes,
            lambda: ParserCache(maxsize=1024),
            lambda: ValidationCache(maxsize=1024),
        ],
    )
