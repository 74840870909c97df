"""GraphQL cost bounds, checked before any resolver runs.

Depth, aliases, tokens and page size (`first`) are bounded; introspection can be switched off.
A document over a bound is rejected with `extensions.code` `QUERY_TOO_COMPLEX` (a page size
over the maximum: `BAD_USER_INPUT`, the code the resolver's own range check has always used),
with `extensions.limit` / `extensions.maximum` naming the bound and its configured value.

Why not strawberry's `QueryDepthLimiter` / `MaxAliasesLimiter`: they build a new validation
rule *class* in `__init__`. Extensions are constructed per request (they must be passed as a
class or factory), so every request gets a fresh class, and `ValidationCache` keys its LRU on
`(schema, document, validation_rules)`: a fresh class in that tuple makes every key new and
the cache never hits (strawberry#4635). Here the rule classes are built once per schema
(`CostBounds`) and the per-request extension only appends those same classes. Their walks are
also iterative and memoised per fragment, so a chain of fragments that each spread the next
twice cannot make validation exponential (nor hit the recursion limit).

Variable values are not part of the validation cache key, so `first: $n` cannot be checked by
a cached rule: `BoundsExtension.on_validate` checks it per request, after the (cached)
validation and still before execution.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionNode,
    ValidationRule,
    VariableNode,
    get_operation_ast,
)
from graphql.validation import MaxIntrospectionDepthRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import SchemaExtension

from runwatch.schema.cost import PAGE_SIZE_ARGUMENTS, UNPAGED_LIST_SIZE, operation_cost

TOO_COMPLEX = "QUERY_TOO_COMPLEX"
TOO_COSTLY = "QUERY_TOO_COSTLY"
INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
BAD_PAGE_SIZE = "BAD_USER_INPUT"
# With batching on, the most operations one request may carry (each is bounded on its own).
MAX_BATCH_OPERATIONS = 10
PAGE_SIZE_ARGUMENT = "first"

Owner = OperationDefinitionNode | FragmentDefinitionNode | FieldNode | InlineFragmentNode


def too_complex(message: str, limit: str, maximum: int,
                nodes: Iterable[Any] | None = None) -> GraphQLError:
    return GraphQLError(
        message, list(nodes) if nodes else None,
        extensions={"code": TOO_COMPLEX, "limit": limit, "maximum": maximum},
    )


def _selections(owner: Owner) -> tuple[SelectionNode, ...]:
    return tuple(owner.selection_set.selections) if owner.selection_set else ()


def measure(operation: OperationDefinitionNode,
            fragments: Mapping[str, FragmentDefinitionNode],
            memo: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(depth, aliases) of an operation: depth counts nested fields (`{ a { b } }` is 2;
    introspection fields `__…` add none: they have their own depth rule), aliases count every
    aliased field as often as it would be resolved (a fragment spread twice counts twice).

    Iterative, and each fragment is measured once (`memo`), so the cost is linear in the
    document. A fragment that spreads itself counts as empty (NoFragmentCycles reports it)."""
    # A frame: the owner, its remaining selections, the greatest depth and the aliases so far.
    stack: list[list[Any]] = [[operation, iter(_selections(operation)), 0, 0]]
    active: set[str] = set()
    result = (0, 0)
    while stack:
        frame = stack[-1]
        child = next(frame[1], None)
        if child is None:
            stack.pop()
            owner, _, depth, aliases = frame
            if isinstance(owner, FieldNode):
                aliases += 1 if owner.alias else 0
                depth = 0 if owner.name.value.startswith("__") else depth + 1
            elif isinstance(owner, FragmentDefinitionNode):
                memo[owner.name.value] = (depth, aliases)
                active.discard(owner.name.value)
            if stack:
                stack[-1][2] = max(stack[-1][2], depth)
                stack[-1][3] += aliases
            else:
                result = (depth, aliases)
            continue
        if isinstance(child, FieldNode | InlineFragmentNode):
            stack.append([child, iter(_selections(child)), 0, 0])
        elif isinstance(child, FragmentSpreadNode):
            name = child.name.value
            if name in memo:
                frame[2] = max(frame[2], memo[name][0])
                frame[3] += memo[name][1]
            elif name in fragments and name not in active:
                active.add(name)
                stack.append([fragments[name], iter(_selections(fragments[name])), 0, 0])
    return result


def page_size_arguments(operation: OperationDefinitionNode,
                        fragments: Mapping[str, FragmentDefinitionNode]) -> Iterator[ArgumentNode]:
    """Every `first` argument the operation would use, through its fragments (each once)."""
    owners: list[Owner] = [operation]
    seen: set[str] = set()
    while owners:
        for selection in _selections(owners.pop()):
            if isinstance(selection, FieldNode):
                for argument in selection.arguments or ():
                    if argument.name.value == PAGE_SIZE_ARGUMENT:
                        yield argument
                owners.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                owners.append(selection)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in fragments and name not in seen:
                    seen.add(name)
                    owners.append(fragments[name])


def _int_literal(node: Any) -> int | None:
    """An Int literal's value; None for anything else, and for a literal too long to be an
    Int at all (graphql-core's own rules refuse it: converting thousands of digits raises)."""
    if not isinstance(node, IntValueNode) or len(node.value) > 20:
        return None
    return int(node.value)


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def _page_size_error(value: float, maximum: int, node: Any) -> GraphQLError:
    """Worded like the resolver's own range check (`BAD_USER_INPUT` with `fieldErrors`), which
    it runs ahead of: an out-of-range `first` is the same error whichever catches it."""
    problem = f"must be at most {maximum} (the maximum page size), got {value}"
    return GraphQLError(
        f"{PAGE_SIZE_ARGUMENT}: {problem}", [node],
        extensions={"code": BAD_PAGE_SIZE, "fieldErrors": {PAGE_SIZE_ARGUMENT: [problem]},
                    "limit": "maxPageSize", "maximum": maximum},
    )


SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


def _without_suggestions(error: GraphQLError) -> None:
    """Drop graphql-core's "Did you mean 'secret'?" (fields, arguments, types, enum values):
    with introspection off, it would tell the schema away one guess at a time. Idempotent, so
    it may edit an error shared through the validation cache."""
    if "Did you mean" in error.message:
        error.message = SUGGESTION.sub("", error.message)


def _literal_error(error: GraphQLError) -> GraphQLError:
    """graphql-core words a literal its scalar cannot parse (an Int of 5,000 digits) with the
    parser's exception attached, which would be masked as unexpected: the same error, clean."""
    if error.original_error is None or isinstance(error.original_error, GraphQLError):
        return error
    node = error.nodes[0] if error.nodes else None
    found = (f"an integer literal of {len(node.value):,} digits"
             if isinstance(node, IntValueNode) else "a literal it cannot represent")
    return GraphQLError(f"{error.message.split(', but encountered')[0]}, found {found}.",
                        error.nodes, extensions={"code": BAD_PAGE_SIZE})


class _IntrospectionDisabled(NoSchemaIntrospectionCustomRule):
    def report_error(self, error: GraphQLError) -> None:
        super().report_error(GraphQLError(error.message, error.nodes,
                                          extensions={"code": INTROSPECTION_DISABLED}))


@dataclass(frozen=True)
class CostBounds:
    """The bounds of one schema, and the validation rule classes that enforce them.

    Build it once per schema (the rule classes must stay the same objects for the validation
    cache to hit) and pass `extension` as the schema extension factory."""

    max_depth: int
    max_aliases: int
    max_tokens: int
    max_page_size: int
    introspection: bool = True
    # The cost budget (worst-case nodes, `runwatch.schema.cost`; 0: not checked), the page
    # size a list gets when `first` is absent, what a list without a page size counts, and
    # the longest list a variable may carry.
    max_cost: int = 0
    default_page_size: int = 50
    max_list_input: int = 0
    # How many (document, operation, page-size variables) answers of the per-request checks
    # are kept (`checked`); 0 turns the cache off.
    cache_size: int = 1024
    rules: tuple[type[ValidationRule], ...] = field(init=False)
    _checks: OrderedDict[Any, tuple[tuple[GraphQLError, ...], int | None]] = field(
        init=False, repr=False, compare=False)
    _page_variables: OrderedDict[str, frozenset[str]] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", self._build_rules())
        object.__setattr__(self, "_checks", OrderedDict())
        object.__setattr__(self, "_page_variables", OrderedDict())

    def _build_rules(self) -> tuple[type[ValidationRule], ...]:
        bounds = self

        class CostBoundsRule(ValidationRule):
            """Depth and aliases per operation; `first` literals anywhere."""

            def enter_document(self, node: DocumentNode, *_: Any) -> None:
                fragments = _fragments(node)
                memo: dict[str, tuple[int, int]] = {}
                for operation in node.definitions:
                    if not isinstance(operation, OperationDefinitionNode):
                        continue
                    depth, aliases = measure(operation, fragments, memo)
                    what = (f"Operation '{operation.name.value}'" if operation.name
                            else "The operation")
                    if depth > bounds.max_depth:
                        self.report_error(too_complex(
                            f"{what} is nested {depth} levels deep, more than the maximum "
                            f"depth of {bounds.max_depth}.",
                            "maxDepth", bounds.max_depth, [operation]))
                    if aliases > bounds.max_aliases:
                        self.report_error(too_complex(
                            f"{what} uses {aliases} aliases, more than the maximum of "
                            f"{bounds.max_aliases} aliases.",
                            "maxAliases", bounds.max_aliases, [operation]))

            def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
                if node.name.value == PAGE_SIZE_ARGUMENT:
                    value = _int_literal(node.value)
                    if value is not None and value > bounds.max_page_size:
                        self.report_error(_page_size_error(value, bounds.max_page_size, node))

        if self.introspection:
            return (CostBoundsRule, MaxIntrospectionDepthRule)
        return (CostBoundsRule, _IntrospectionDisabled)

    def page_size_variable_errors(
        self, document: DocumentNode, operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> list[GraphQLError]:
        """`first: $n` over the maximum, with `$n` from this request's variables (or its
        default). Not cacheable with the document: it is checked for every request."""
        operation = get_operation_ast(document, operation_name)
        if operation is None or not operation.variable_definitions:
            return []
        defaults = {d.variable.name.value: _int_literal(d.default_value)
                    for d in operation.variable_definitions}
        variables = variables or {}
        errors = []
        for argument in page_size_arguments(operation, _fragments(document)):
            if not isinstance(argument.value, VariableNode):
                continue
            name = argument.value.name.value
            value = variables[name] if name in variables else defaults.get(name)
            if (isinstance(value, int | float) and not isinstance(value, bool)
                    and value > self.max_page_size):
                errors.append(_page_size_error(value, self.max_page_size, argument))
        return errors

    def cost(self, schema: GraphQLSchema, document: DocumentNode,
             operation_name: str | None, variables: Mapping[str, Any] | None) -> int | None:
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            return None
        return operation_cost(schema, document, operation, variables,
                              default_page_size=self.default_page_size,
                              max_page_size=self.max_page_size, unpaged=UNPAGED_LIST_SIZE)

    def too_costly(self, cost: int) -> GraphQLError:
        return GraphQLError(
            f"The operation could return up to {cost:,} nodes, more than the budget of "
            f"{self.max_cost:,} (the product of the page sizes along each path, summed: "
            "ask for smaller pages or fewer nested lists).",
            extensions={"code": TOO_COSTLY, "cost": cost, "budget": self.max_cost},
        )

    def list_input_errors(self, variables: Mapping[str, Any] | None) -> list[GraphQLError]:
        """A variable carrying a list longer than `max_list_input` (at any depth)."""
        if not self.max_list_input or not variables:
            return []
        pending: list[tuple[str, Any]] = list(variables.items())
        while pending:
            name, value = pending.pop()
            if isinstance(value, list):
                if len(value) > self.max_list_input:
                    return [GraphQLError(
                        f"Variable '${name}' carries a list of {len(value):,} items, more "
                        f"than the maximum of {self.max_list_input:,}.",
                        extensions={"code": BAD_PAGE_SIZE, "limit": "maxListInput",
                                    "maximum": self.max_list_input})]
                pending.extend((name, item) for item in value)
            elif isinstance(value, dict):
                pending.extend((name, item) for item in value.values())
        return []

    def checked(
        self, schema: GraphQLSchema, document: DocumentNode, query: str | None,
        operation_name: str | None, variables: Mapping[str, Any] | None,
    ) -> tuple[list[GraphQLError], int | None]:
        """The page-size errors of `first: $n` and the cost (None when not checked or not
        reached), for a validated document: what `BoundsExtension.on_validate` checks.

        Both depend on the document, the operation and the values of the variables that
        are used as page sizes, and on nothing else: that triple is the cache key (each
        value with its type, so that `true` is not `1`), in a bounded LRU per schema. A
        request whose page-size variables cannot be keyed (a list where a number belongs)
        is checked without the cache. The cached answer is the same check: a cache hit
        still refuses a document over the budget."""
        names = self._page_size_variables(document, query)
        key: Any = None
        if query is not None and self.cache_size:
            values = variables or {}
            try:
                key = (query, operation_name, tuple(
                    (n, type(values[n]).__name__, values[n]) for n in sorted(names)
                    if n in values))
                hash(key)
            except TypeError:
                key = None
        if key is not None and key in self._checks:
            self._checks.move_to_end(key)
            errors, cost = self._checks[key]
            return list(errors), cost
        found = self.page_size_variable_errors(document, operation_name, variables)
        cost = None
        if not found and self.max_cost:
            cost = self.cost(schema, document, operation_name, variables)
        if key is not None:
            self._checks[key] = (tuple(found), cost)
            if len(self._checks) > self.cache_size:
                self._checks.popitem(last=False)
        return found, cost

    def _page_size_variables(self, document: DocumentNode, query: str | None) -> frozenset[str]:
        """The variables used as page sizes (`first` / `last` / `limit`) anywhere in the
        document: a superset of what the checks of any one operation read."""
        if query is not None and query in self._page_variables:
            self._page_variables.move_to_end(query)
            return self._page_variables[query]
        names: set[str] = set()
        for definition in document.definitions:
            owners: list[Any] = [definition]
            while owners:
                owner = owners.pop()
                for selection in _selections(owner):
                    if isinstance(selection, FieldNode):
                        for argument in selection.arguments or ():
                            if (argument.name.value in PAGE_SIZE_ARGUMENTS
                                    and isinstance(argument.value, VariableNode)):
                                names.add(argument.value.name.value)
                        owners.append(selection)
                    elif isinstance(selection, InlineFragmentNode):
                        owners.append(selection)
        found = frozenset(names)
        if query is not None and self.cache_size:
            self._page_variables[query] = found
            if len(self._page_variables) > self.cache_size:
                self._page_variables.popitem(last=False)
        return found

    def variable_checks(
        self, schema: GraphQLSchema, document: DocumentNode, query: str | None,
        operation_name: str | None, variables: Mapping[str, Any] | None,
    ) -> tuple[list[GraphQLError], int | None]:
        """What a validated document's variables may still break, checked on every request
        before execution: page sizes, list inputs, the cost budget. Returns the errors (none:
        an empty list) and the cost to report (`extensions.cost`) when a budget is set."""
        errors, cost = self.checked(schema, document, query, operation_name, variables)
        errors = errors or self.list_input_errors(variables)
        if errors or not self.max_cost:
            return list(errors), None
        if cost is not None and cost > self.max_cost:
            return [self.too_costly(cost)], None
        return [], cost

    def without_suggestions(self, errors: Iterable[GraphQLError]) -> None:
        """With introspection off, no error says "Did you mean …?"."""
        if not self.introspection:
            for error in errors:
                _without_suggestions(error)

    @property
    def extension(self) -> Callable[[], SchemaExtension]:
        return lambda: BoundsExtension(self)


class BoundsExtension(SchemaExtension):
    """Per request: the token limit for the parser, the (shared) rule classes for validation,
    and the page-size check of variable values. List it after `ValidationCache`."""

    def __init__(self, bounds: CostBounds) -> None:
        self.bounds = bounds
        self.cost: int | None = None

    def get_results(self) -> dict[str, Any]:
        if self.cost is None:
            return {}
        return {"cost": {"requested": self.cost, "budget": self.bounds.max_cost}}

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.bounds.max_tokens
        context.validation_rules = (*context.validation_rules, *self.bounds.rules)
        # The parser's error for too many tokens gets our wording and code. With ParserCache
        # it is raised from that extension's hook (so it arrives here, thrown at the yield,
        # and no `on_parse` after-yield would see it); without, it is a pre-execution error.
        try:
            yield
        except GraphQLSyntaxError as error:
            self._word_token_limit(error)
            raise
        for error in context.pre_execution_errors or ():
            self._word_token_limit(error)
        self.bounds.without_suggestions([*(context.pre_execution_errors or ()),
                                         *(getattr(context.result, "errors", None) or ())])

    def _word_token_limit(self, error: GraphQLError) -> None:
        if (isinstance(error, GraphQLSyntaxError)
                and error.description.startswith("Document contains more than")):
            maximum = self.bounds.max_tokens
            error.message = f"The document exceeds the maximum of {maximum} tokens."
            error.extensions = {"code": TOO_COMPLEX, "limit": "maxTokens", "maximum": maximum}

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.pre_execution_errors is None:
            # No validation cache ran before this extension: validate here, as strawberry
            # would, so that the errors set below do not skip validation.
            from strawberry.schema.schema import validate_document

            assert context.graphql_document is not None
            context.pre_execution_errors = validate_document(
                context.schema._schema, context.graphql_document, context.validation_rules)
        if any(e.original_error is not None and not isinstance(e.original_error, GraphQLError)
               for e in context.pre_execution_errors):
            context.pre_execution_errors = [_literal_error(e)
                                            for e in context.pre_execution_errors]
        if not context.pre_execution_errors:
            assert context.graphql_document is not None
            # A clean document: its next requests over HTTP take the prepared path
            # (`runwatch.schema.prepared`), which runs `variable_checks` itself.
            prepared = getattr(context.schema, "prepared", None)
            if prepared is not None:
                prepared.remember(context.query, context._provided_operation_name,
                                  context.graphql_document, context.operation_type,
                                  context.operation_name)
            errors, self.cost = self.bounds.variable_checks(
                context.schema._schema, context.graphql_document, context.query,
                context.operation_name, context.variables)
            if errors:  # a new list: the one from the validation cache is shared
                context.pre_execution_errors = errors
        yield


__all__ = ["MAX_BATCH_OPERATIONS", "BoundsExtension", "CostBounds"]
