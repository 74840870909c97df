"""The GraphQL schema: roots compose per-domain classes; `build_schema` is the one place that
attaches extensions."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig

from runwatch.resolvers.errors import DomainError
from runwatch.schema.connection import ConnectionMutation, ConnectionQuery
from runwatch.schema.errors import ConflictError, InvalidInputError, NotFoundError
from runwatch.schema.errors import PermissionDeniedError
from runwatch.schema.pipeline import PipelineQuery
from runwatch.schema.run import RunMutation, RunQuery
from runwatch.schema.types import BIGINT_SCALAR, BigInt


@strawberry.type
class Query(ConnectionQuery, PipelineQuery, RunQuery):
    pass


@strawberry.type
class Mutation(ConnectionMutation, RunMutation):
    pass


def _is_unexpected(error: GraphQLError) -> bool:
    """Mask everything but the errors we raise on purpose (and parse/validation errors)."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError | DomainError)


def build_schema() -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        config=StrawberryConfig(scalar_map={BigInt: BIGINT_SCALAR}),
        types=[NotFoundError, InvalidInputError, ConflictError, PermissionDeniedError],
        extensions=[
            lambda: MaskErrors(should_mask_error=_is_unexpected),
            lambda: ParserCache(maxsize=1024),
            lambda: ValidationCache(maxsize=1024),
        ],
    )
