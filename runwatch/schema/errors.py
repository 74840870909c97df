"""Expected failures are data: mutation results are unions of a success type and these."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from runwatch.auth import MESSAGES, auth_problem
from runwatch.naming import camel_field
from runwatch.resolvers import inputs
from runwatch.resolvers.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

T = TypeVar("T")


@strawberry.interface(description="Every expected failure has a human-readable message.")
class Error:
    message: str


@strawberry.type
class NotFoundError(Error):
    kind: str
    id: str


@strawberry.type
class FieldError:
    field: str
    messages: list[str]


@strawberry.type
class InvalidInputError(Error):
    field_errors: list[FieldError]


@strawberry.type
class ConflictError(Error):
    pass


@strawberry.type
class PermissionDeniedError(Error):
    pass


def error_data(exc: DomainError) -> Error:
    """The union member for an expected failure of a mutation."""
    if isinstance(exc, NotFound):
        return NotFoundError(message=exc.message, kind=exc.kind, id=str(exc.object_id))
    if isinstance(exc, InvalidInput):
        return InvalidInputError(
            message=exc.message,
            field_errors=[
                FieldError(field=camel_field(k), messages=v) for k, v in exc.fields.items()
            ],
        )
    if isinstance(exc, Conflict):
        return ConflictError(message=exc.message)
    if isinstance(exc, PermissionDenied):
        return PermissionDeniedError(message=exc.message)
    raise exc  # Unauthenticated and anything unexpected are errors, not data


CODES = {
    Unauthenticated: "UNAUTHENTICATED",
    PermissionDenied: "FORBIDDEN",
    InvalidInput: "BAD_USER_INPUT",
    Conflict: "CONFLICT",
    NotFound: "NOT_FOUND",
}


def graphql_error(exc: DomainError, located: GraphQLError | None = None) -> GraphQLError:
    """A GraphQL error for a domain failure, with `extensions.code` for clients to branch on."""
    code = next((c for kind, c in CODES.items() if isinstance(exc, kind)), "BAD_REQUEST")
    extensions: dict[str, Any] = {"code": code}
    if isinstance(exc, InvalidInput):
        extensions["fieldErrors"] = {camel_field(k): v for k, v in exc.fields.items()}
    if located is None:
        return GraphQLError(exc.message, extensions=extensions, original_error=exc)
    return GraphQLError(
        exc.message, nodes=located.nodes, source=located.source, positions=located.positions,
        path=located.path, original_error=exc, extensions=extensions,
    )


class DomainErrorCodes(SchemaExtension):
    """Gives every domain failure that reached the top level its `extensions.code`."""

    def on_execute(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = coded_errors(result.errors, self.execution_context.context)


def coded_errors(errors: list[GraphQLError], context: object) -> list[GraphQLError]:
    """An execution's errors, each domain failure with its `extensions.code` (the one rule
    of both `DomainErrorCodes` and the prepared path, `runwatch.schema.prepared`)."""
    if not any(isinstance(e.original_error, DomainError) for e in errors):
        return errors
    hint = _auth_hint(context)
    return [graphql_error(_with_hint(e.original_error, hint), e)
            if isinstance(e.original_error, DomainError) else e
            for e in errors]


def _auth_hint(context: object) -> str | None:
    """Why the request has no caller, in words that say what to do (no token, an unknown
    one, a header not in the Bearer form): see `runwatch.auth.MESSAGES`."""
    if getattr(context, "caller", None) is not None:
        return None
    request = getattr(context, "request", None)
    problem = auth_problem(getattr(request, "state", None)) if request is not None else None
    return MESSAGES.get(problem) if problem else None


def _with_hint(exc: DomainError, hint: str | None) -> DomainError:
    return Unauthenticated(hint) if hint and isinstance(exc, Unauthenticated) else exc


async def as_data(call: Callable[[], Awaitable[T]]) -> T | Error:
    """Run a mutation's resolver call, turning expected failures into union members."""
    try:
        return await call()
    except Unauthenticated:
        raise
    except DomainError as exc:
        return error_data(exc)


async def or_none(call: Callable[[], Awaitable[T]]) -> T | None:
    """Run a query's resolver call: not found is null, other failures are GraphQL errors."""
    try:
        return await call()
    except NotFound:
        return None


def filter_id(raw: strawberry.ID | str | None, kind: str) -> int | None:
    """An id used as a filter: one no row can have filters everything out (an empty list, the
    same answer as for an id that does not exist)."""
    return inputs.filter_id(None if raw is None else str(raw), kind)


def parse_id(raw: strawberry.ID | str, kind: str) -> int:
    """GraphQL ids are the same integers the REST URLs use; anything else is not found
    (`runwatch.resolvers.inputs.parse_id`, the one id rule)."""
    return inputs.parse_id(str(raw), kind)


@strawberry.type
class DoneSuccess:
    """A mutation with nothing to return did its work (checks and alert channels)."""

    ok: bool = True


DoneResult = Annotated[
    DoneSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("DoneResult")]
