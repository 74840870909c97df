"""Prepared operations: a document already parsed and validated is executed over HTTP without
strawberry's per-request machinery around graphql-core.

strawberry's `Schema.execute` builds, for every request, an execution context, fresh
instances of the six schema extensions and four phases of hooks around them (parse,
validate, execute, operation), and looks up the parser and validation caches; for a small
mutation such as `reportRun` that was about a third of the GraphQL layer's CPU
(`bench/README.md`, Performance notes). What those phases decide about a document is the
same on every request: parsed, valid, which operation, of what type. So the first time a
(query text, operation name) goes through strawberry's path and validates cleanly,
`BoundsExtension.on_validate` remembers it here; later HTTP requests with the same text run
`PreparedOperations.execute`, which does what the extensions do after validation, by calling
the same functions they call:

- the checks that depend on the variables (page sizes, list inputs, the cost budget:
  `CostBounds.variable_checks`), before any resolver runs;
- graphql-core's `execute` with the schema's executor class, as strawberry calls it;
- on the errors: the schema's `process_errors` (logging), the database-fault wording and 503
  (`runwatch.faults.reword_faults`), the domain codes (`runwatch.schema.errors.coded_errors`),
  no suggestions with introspection off (`CostBounds.without_suggestions`), the masking of
  unexpected errors (the schema's `MaskUnexpected`), in the order strawberry's hooks apply
  them; `extensions.cost` when a budget is set.

Everything else (a new or invalid document, GET, batches, WebSocket operations and
subscriptions) takes strawberry's path, which stays the reference: `tests/test_prepared.py`
runs the same requests through both and compares the answers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from graphql import DocumentNode, GraphQLError, GraphQLSchema, execute
from strawberry.execution import optimized_is_awaitable
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.utils.await_maybe import await_maybe

from runwatch.faults import reword_faults
from runwatch.schema.errors import coded_errors
from runwatch.schema.limits import CostBounds

# The same bound as the parser and validation caches: one entry per distinct query text.
MAX_PREPARED = 1024


class Prepared(NamedTuple):
    document: DocumentNode
    operation_type: OperationType
    operation_name: str | None  # the operation to run (the document's only one when unnamed)


class PreparedOperations:
    def __init__(
        self, *, graphql_schema: GraphQLSchema, bounds: CostBounds,
        process_errors: Callable[[list[GraphQLError]], None],
        mask: Callable[[list[GraphQLError]], list[GraphQLError]],
        executor_class: type, maxsize: int = MAX_PREPARED,
    ) -> None:
        self.graphql_schema = graphql_schema
        self.bounds = bounds
        self.process_errors = process_errors
        self.mask = mask
        self.executor_class = executor_class
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple[str, str | None], Prepared] = OrderedDict()

    def remember(self, query: str | None, provided_name: str | None, document: DocumentNode,
                 operation_type: OperationType, operation_name: str | None) -> None:
        """A document that strawberry's path parsed and validated without an error (called
        from `BoundsExtension.on_validate`). Subscriptions are never prepared."""
        if not isinstance(query, str) or operation_type is OperationType.SUBSCRIPTION:
            return
        key = (query, provided_name)
        if key in self._entries:
            return
        self._entries[key] = Prepared(document, operation_type, operation_name)
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def get(self, query: object, provided_name: object,
            allowed: Iterable[OperationType]) -> Prepared | None:
        """The prepared operation for this text and name, if there is one and the request's
        method allows its type (a mutation over GET takes strawberry's path and its 400)."""
        if not isinstance(query, str) or not (provided_name is None
                                              or isinstance(provided_name, str)):
            return None
        found = self._entries.get((query, provided_name))
        if found is None or found.operation_type not in allowed:
            return None
        return found

    def __len__(self) -> int:
        return len(self._entries)

    async def execute(
        self, prepared: Prepared, *, query: str, variables: dict[str, Any] | None,
        context: Any, operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        schema = self.graphql_schema
        extensions: dict[str, Any] = {}
        data: Any = None
        try:
            errors, cost = self.bounds.variable_checks(
                schema, prepared.document, query, prepared.operation_name, variables)
            if errors:
                self.process_errors(errors)
            else:
                result = await await_maybe(execute(
                    schema, prepared.document, variable_values=variables,
                    operation_name=prepared.operation_name, context_value=context,
                    executor_class=self.executor_class, is_awaitable=optimized_is_awaitable,
                    operation_extensions=operation_extensions,
                ))
                data, errors = result.data, result.errors
                if errors:
                    self.process_errors(errors)  # the originals, before any rewording
                    reword_faults(result, context)
                    errors = coded_errors(result.errors, context)
                if cost is not None:
                    extensions = {"cost": {"requested": cost, "budget": self.bounds.max_cost}}
        except Exception as exc:  # as strawberry: an error, masked below
            error = exc if isinstance(exc, GraphQLError) else GraphQLError(
                str(exc), original_error=exc)
            self.process_errors([error])
            data, errors = None, [error]
        if errors:
            self.bounds.without_suggestions(errors)
            errors = self.mask(errors)
        return ExecutionResult(data=data, errors=errors or None, extensions=extensions)


__all__ = ["MAX_PREPARED", "Prepared", "PreparedOperations"]
