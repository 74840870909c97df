"""Query cost: the worst-case number of nodes an operation can return, before it runs.

As GitHub's node limit does: every list field multiplies what is below it by its page size
(`first` / `last` / `limit`, the default page size when absent or null, variables resolved);
a field returning a list of objects without a page-size argument counts as `unpaged` items
(`UNPAGED_LIST_SIZE`): the lists that can nest (`Run.children`, `Connection.pipelines`) take
`first` with a declared default and refuse to answer more (`schema.types.short_list`), so they
are counted as bounds; the others are bounded by construction (a run's anomaly results, the
recent errors, a delivery's attempts) or sit only at the root (one organisation's addresses,
rules, types, channels), where nothing multiplies them. The cost is the sum, over every list
field of the document (fragments and inline fragments expanded, each as often as it is
spread), of the product of
the page sizes along its path. `nodes` / `edges` of a page are the page itself: they add
nothing. Scalar lists (`[String!]`) return no nodes and cost nothing.

`{ runs(first: 200) { nodes { pipeline { runs(first: 200) { nodes { id } } } } } }` costs
200 + 200 × 200 = 40,200.

The walk is iterative (a document of thousands of nested inline fragments cannot reach the
recursion limit) and linear: the cost is linear in the multiplier above it, so each fragment
is costed once, at multiplier 1, and scaled where it is spread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    is_list_type,
)

PAGE_SIZE_ARGUMENTS = ("first", "last", "limit")
UNPAGED_LIST_SIZE = 20
PAGE_TYPE_SUFFIX = "Page"  # RunPage, LogLinePage…: their `nodes` and `edges` are the page


def _page_size(field: FieldNode, variables: Mapping[str, Any],
               defaults: Mapping[str, Any], default: int, maximum: int) -> int:
    """The page size a field that takes one asks for (`default` when absent or null)."""
    for argument in field.arguments or ():
        if argument.name.value not in PAGE_SIZE_ARGUMENTS:
            continue
        node = argument.value
        value: Any = None
        if isinstance(node, IntValueNode):
            value = int(node.value) if len(node.value) <= 20 else maximum
        elif isinstance(node, VariableNode):
            name = node.name.value
            value = variables[name] if name in variables else defaults.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return default
        return max(0, min(int(value), maximum))
    return default


def _declared_default(definition: Any, fallback: int) -> int:
    """The field's own default page size (`children(first: Int! = 20)`), else `fallback`
    (the pages' default)."""
    for name in PAGE_SIZE_ARGUMENTS:
        argument = definition.args.get(name)
        if argument is not None and isinstance(argument.default_value, int):
            return argument.default_value
    return fallback


def _takes_page_size(parent: Any, name: str) -> bool:
    definition = parent.fields.get(name) if hasattr(parent, "fields") else None
    return definition is not None and any(a in definition.args for a in PAGE_SIZE_ARGUMENTS)


def operation_cost(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None, *, default_page_size: int, max_page_size: int,
    unpaged: int,
) -> int:
    """The worst-case node count of `operation` (of a validated `document`)."""
    variables = variables or {}
    defaults: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        node = definition.default_value
        if isinstance(node, IntValueNode) and len(node.value) <= 20:
            defaults[definition.variable.name.value] = int(node.value)
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    root = {OperationType.QUERY: schema.query_type,
            OperationType.MUTATION: schema.mutation_type,
            OperationType.SUBSCRIPTION: schema.subscription_type}[operation.operation]
    memo: dict[str, int] = {}
    active: set[str] = set()

    # A frame: [owner, its type, selections left, cost so far, multiplier of the owner].
    # The owner's cost is multiplier × (1 if it counts as nodes) + multiplier × cost below.
    stack: list[list[Any]] = [[operation, root, iter(operation.selection_set.selections), 0, 1,
                               False]]
    total = 0
    while stack:
        frame = stack[-1]
        owner, parent, selections, cost, factor, counts = frame
        child = next(selections, None)
        if child is None:
            stack.pop()
            value = factor * cost + (factor if counts else 0)
            if isinstance(owner, FragmentDefinitionNode):
                memo[owner.name.value] = cost
                active.discard(owner.name.value)
            if stack:
                stack[-1][3] += value
            else:
                total = value
            continue
        if isinstance(child, FieldNode):
            name = child.name.value
            if name.startswith("__") or child.selection_set is None or parent is None:
                continue  # scalars and introspection (bounded by its own rule)
            definition = parent.fields.get(name) if hasattr(parent, "fields") else None
            if definition is None:
                continue
            named: GraphQLNamedType = get_named_type(definition.type)
            if not is_composite_type(named):
                continue
            size = (_page_size(child, variables, defaults,
                               _declared_default(definition, default_page_size), max_page_size)
                    if _takes_page_size(parent, name) else None)
            listed = is_list_type(get_nullable_type(definition.type))  # type: ignore[arg-type]
            if size is None and listed and not parent.name.endswith(PAGE_TYPE_SUFFIX):
                size = unpaged
            if size is None:
                stack.append([child, named, iter(child.selection_set.selections), 0, 1, False])
            else:
                stack.append([child, named, iter(child.selection_set.selections), 0, size,
                              True])
        elif isinstance(child, InlineFragmentNode):
            condition = (schema.get_type(child.type_condition.name.value)
                         if child.type_condition else parent)
            stack.append([child, condition, iter(child.selection_set.selections), 0, 1, False])
        elif isinstance(child, FragmentSpreadNode):
            name = child.name.value
            if name in memo:
                frame[3] += memo[name]
            elif name in fragments and name not in active:
                active.add(name)
                fragment = fragments[name]
                stack.append([fragment, schema.get_type(fragment.type_condition.name.value),
                              iter(fragment.selection_set.selections), 0, 1, False])
    return total


__all__ = ["operation_cost"]
