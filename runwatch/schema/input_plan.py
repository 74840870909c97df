"""Input objects built from a plan made once per type, when the schema is built.

strawberry builds an input object from its GraphQL value field by field, and for every field
of every request it works out again what never changes: the field's GraphQL name (camel-casing
the Python name), its resolved type and whether that type needs converting at all. For
`reportRun`'s input that is seven fields, about 4 % of the request's CPU (cProfile under
`bench.perf`). `plan_inputs` works it out once per input type and installs the result as the
type's `from_input`, strawberry's hook for inputs that build their own value
(`StrawberryObjectDefinition.from_input`).

The plan builds the same value strawberry would:

- every field without a default starts as `None` (graphql-core has already refused a missing
  required field), a field the client sent gets its converted value, the class is called with
  those keyword arguments;
- a scalar or enum value (or an optional one) is taken as graphql-core parsed it, which is what
  strawberry's conversion returns for a leaf;
- anything else (a list, a nested input, a lazy type) goes through strawberry's own
  `convert_argument` with the type resolved once, so lists are still copied and nested inputs
  use their own plans.

`Maybe` fields would need strawberry's null check, which it skips for types with their own
`from_input`: a type with one is left to strawberry (no runwatch input has one today).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING
from typing import Any

import strawberry
from strawberry.relay.types import GlobalID
from strawberry.scalars import is_scalar
from strawberry.types.arguments import InputContext, convert_argument
from strawberry.types.base import (
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
)
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition

Field = tuple[str, str, Any]  # (GraphQL name, Python name, type to convert with, or None)


class InputPlan:
    """`from_input` for one input type: its fields' names and types, worked out once."""

    def __init__(self, definition: StrawberryObjectDefinition, schema: strawberry.Schema) -> None:
        registry = schema.schema_converter.scalar_registry
        names = schema.config.name_converter
        self.defaults = {f.python_name: None for f in definition.fields
                         if f.default_value is MISSING and f.default_factory is MISSING}
        self.fields: tuple[Field, ...] = tuple(
            (names.from_field(f), f.python_name,
             _conversion(f.resolve_type(type_definition=definition), registry))
            for f in definition.fields)

    def __call__(self, cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
        kwargs = dict(self.defaults)
        for graphql_name, python_name, type_ in self.fields:
            if graphql_name in value:
                raw = value[graphql_name]
                kwargs[python_name] = raw if type_ is None else convert_argument(
                    raw, type_, context.scalar_registry, context.config, context.info,
                    path=(*context.path, graphql_name))
        return cls(**kwargs)


def _conversion(type_: Any, registry: Mapping[object, Any]) -> Any:
    """None when a value of `type_` is taken as it is (a leaf, or an optional leaf), else the
    type to hand to `convert_argument`."""
    inner = type_.of_type if type(type_) is StrawberryOptional else type_
    if inner is GlobalID:  # strawberry decodes it
        return type_
    if (is_scalar(inner, registry) or isinstance(inner, StrawberryEnumDefinition)
            or has_enum_definition(inner)):
        return None
    return type_


def _has_maybe(definition: StrawberryObjectDefinition) -> bool:
    return any(isinstance(f.type, StrawberryMaybe) for f in definition.fields)


def plan_inputs(schema: strawberry.Schema) -> int:
    """Install a plan on every input type of `schema` that has neither its own `from_input`
    nor a `Maybe` field; returns how many. Building another schema re-plans (the plans hold
    nothing of a schema but its name rule and scalars, the same for every runwatch schema)."""
    planned = 0
    for entry in schema.schema_converter.type_map.values():
        definition = entry.definition
        if not isinstance(definition, StrawberryObjectDefinition) or not definition.is_input:
            continue
        if (definition.from_input is not None
                and not isinstance(definition.from_input, InputPlan)) or _has_maybe(definition):
            continue
        definition.from_input = InputPlan(definition, schema)
        planned += 1
    return planned

__all__ = ["InputPlan", "plan_inputs"]
