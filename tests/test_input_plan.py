"""Input objects built from a plan (`runwatch.schema.input_plan`) equal strawberry's own build,
for every input type of the schema, with every field sent and with only the required ones."""

from __future__ import annotations

from typing import Any

import pytest
from strawberry.types.arguments import InputContext, convert_argument
from strawberry.types.base import StrawberryList, StrawberryObjectDefinition, StrawberryOptional

from runwatch.schema import build_schema
from runwatch.schema.input_plan import InputPlan

SCHEMA = build_schema()
INPUTS = sorted(
    (entry.definition for entry in SCHEMA.schema_converter.type_map.values()
     if isinstance(entry.definition, StrawberryObjectDefinition) and entry.definition.is_input),
    key=lambda d: d.name)


def _value(definition: StrawberryObjectDefinition, *, every: bool, depth: int = 0) -> dict:
    """An input value: each leaf a distinct object (both builds pass leaves through), lists of
    one item, nested inputs filled the same way."""
    names = SCHEMA.config.name_converter
    value: dict[str, Any] = {}
    for field in definition.fields:
        type_ = field.resolve_type(type_definition=definition)
        optional = isinstance(type_, StrawberryOptional)
        if optional and not every:
            continue
        value[names.from_field(field)] = _of(type_, every=every, depth=depth)
    return value


def _of(type_: Any, *, every: bool, depth: int) -> Any:
    if isinstance(type_, StrawberryOptional):
        return _of(type_.of_type, every=every, depth=depth)
    if isinstance(type_, StrawberryList):
        return [_of(type_.of_type, every=every, depth=depth)]
    definition = getattr(type_, "__strawberry_definition__", None)
    if isinstance(definition, StrawberryObjectDefinition) and definition.is_input:
        return _value(definition, every=every, depth=depth + 1) if depth < 3 else None
    return object()


def _strawberry_build(definition: StrawberryObjectDefinition, value: dict) -> Any:
    plans = {d.name: d.from_input for d in INPUTS}
    try:
        for d in INPUTS:
            d.from_input = None
        return convert_argument(value, definition.origin, SCHEMA.schema_converter.scalar_registry,
                                SCHEMA.config)
    finally:
        for d in INPUTS:
            d.from_input = plans[d.name]


def test_every_input_type_has_a_plan() -> None:
    assert INPUTS, "the schema has input types"
    assert all(isinstance(d.from_input, InputPlan) for d in INPUTS), [
        d.name for d in INPUTS if not isinstance(d.from_input, InputPlan)]


@pytest.mark.parametrize("every", [True, False], ids=["every-field", "required-only"])
@pytest.mark.parametrize("definition", INPUTS, ids=lambda d: d.name)
def test_a_plan_builds_what_strawberry_builds(definition: StrawberryObjectDefinition,
                                              every: bool) -> None:
    value = _value(definition, every=every)
    context = InputContext(info=None, config=SCHEMA.config,
                           scalar_registry=SCHEMA.schema_converter.scalar_registry, path=())
    planned = definition.from_input(definition.origin, value, context)
    assert planned == _strawberry_build(definition, value)
    assert type(planned) is definition.origin


def test_a_list_is_a_copy_and_a_nested_input_is_built() -> None:
    """What a plan hands on to strawberry: lists (copied: graphql-core shares a default list
    between requests) and nested inputs (built by their own plan)."""
    listed = [(d, f) for d in INPUTS for f in d.fields
              if isinstance(f.resolve_type(type_definition=d), StrawberryOptional | StrawberryList)
              and _is_list(f.resolve_type(type_definition=d))]
    assert listed, "some input has a list field"
    definition, field = listed[0]
    name = SCHEMA.config.name_converter.from_field(field)
    value = _value(definition, every=True)
    context = InputContext(info=None, config=SCHEMA.config,
                           scalar_registry=SCHEMA.schema_converter.scalar_registry, path=())
    built = definition.from_input(definition.origin, value, context)
    assert getattr(built, field.python_name) == value[name]
    assert getattr(built, field.python_name) is not value[name]


def _is_list(type_: Any) -> bool:
    if isinstance(type_, StrawberryOptional):
        type_ = type_.of_type
    return isinstance(type_, StrawberryList)
