"""How the Watcher wire reads a body's values: pydantic v2's lax mode, as the original's
request models (and etl-watcher-sdk's) read them.

- integers (ids, counts, `lookback_minutes`, ...) accept `5`, `"5"`, `5.0` and `true`;
  `"seven"` is `int_parsing`, `1.5` is `int_from_float`;
- booleans accept `true`, `"true"`, `"yes"`, `"on"`, `1`, ... ; `"maybe"` is `bool_parsing`;
- date-times accept ISO 8601 (`T` or a space), a date alone (midnight) and epoch seconds
  (or milliseconds), as numbers or strings;
- the contract's limits (`1-150` characters, `> 0`, `>= 0`, `>= 5`, `>= 90`, the rule
  ranges) fail with pydantic's own type and message (`string_too_long`, `greater_than`, ...).

Each field the contract types is validated (in the order of the original's models, so
several refusals come in its order) by a pydantic `TypeAdapter` (so the messages are
pydantic's own, not a copy); a value that passes is handed on converted (`"5"` -> 5). A null
or absent field is left as it is: what null means (not given, cleared, required) is the
domain's business, as is every rule beyond the wire's types (enums, ranges of ids, sizes,
watermarks). Strings were already trimmed and lower-cased by the shim, before their lengths
are checked, as the original does."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from runwatch.resolvers.anomalies import METRICS
from runwatch.resolvers.dateparts import DATEPARTS
from runwatch.resolvers.errors import InvalidInput


@dataclass(frozen=True)
class Spec:
    """A body's wire types: `fields` are read (and converted) whenever sent; `required` and
    `enums` are checked too when some field is refused, so that the 422 names every field
    pydantic would name (alone, they are the domain's to refuse, in the same words)."""

    fields: dict[str, TypeAdapter[Any]]
    required: tuple[str, ...] = ()
    enums: dict[str, TypeAdapter[Any]] = dataclass_field(default_factory=dict)


def _enum(name: str, values: Any) -> TypeAdapter[Any]:
    return TypeAdapter(Enum(name, {v: v for v in values}, type=str))  # type: ignore[misc]


_ID = TypeAdapter(int)
_FLAG = TypeAdapter(bool)
_WHEN = TypeAdapter(datetime)
_OBJECT = TypeAdapter(dict)
_NAME = TypeAdapter(Annotated[str, Field(min_length=1, max_length=150)])
_SHORT = TypeAdapter(Annotated[str, Field(max_length=50)])
_POSITIVE = TypeAdapter(Annotated[int, Field(gt=0)])
_COUNT = TypeAdapter(Annotated[int, Field(ge=0)])
_DATEPART = _enum("DatePart", DATEPARTS)
_METRIC_ENUM = Enum("Metric", {m: m for m in METRICS}, type=str)  # type: ignore[misc]
_METRIC = TypeAdapter(_METRIC_ENUM)

_CHECKS = {"freshness_number": _POSITIVE, "timeliness_number": _POSITIVE}
_PARTS = {"freshness_datepart": _DATEPART, "timeliness_datepart": _DATEPART}
_MUTES = {"mute_freshness_check": _FLAG, "mute_timeliness_check": _FLAG}

PIPELINE = Spec({"name": _NAME, "pipeline_type_name": _NAME, "pipeline_metadata": _OBJECT,
                 **_CHECKS}, ("name", "pipeline_type_name"), _PARTS)
PIPELINE_CHANGE = Spec({"id": _ID, "name": _NAME, "pipeline_type_id": _ID,
                        "pipeline_metadata": _OBJECT, **_CHECKS, **_MUTES,
                        "load_lineage": _FLAG, "active": _FLAG}, (), _PARTS)
PIPELINE_TYPE = Spec({"name": _NAME, **_CHECKS, **_MUTES}, ("name",), _PARTS)
PIPELINE_TYPE_CHANGE = Spec({"id": _ID, "name": _NAME, **_CHECKS, **_MUTES}, (), _PARTS)
START = Spec({"pipeline_id": _ID, "start_date": _WHEN, "parent_id": _ID}, ("pipeline_id",))
END = Spec({"id": _ID, "end_date": _WHEN, "completed_successfully": _FLAG,
            "inserts": _COUNT, "updates": _COUNT, "soft_deletes": _COUNT,
            "total_rows": _COUNT, "execution_metadata": _OBJECT},
           ("id", "end_date", "completed_successfully"))
_ADDRESS_PARTS = {"database_name": _SHORT, "schema_name": _SHORT, "table_name": _SHORT,
                  "primary_key": _SHORT, "address_metadata": _OBJECT}
ADDRESS = Spec({"name": _NAME, "address_type_name": _NAME, "address_type_group_name": _NAME,
                **_ADDRESS_PARTS}, ("name", "address_type_name", "address_type_group_name"))
ADDRESS_CHANGE = Spec({"id": _ID, "name": _NAME, "address_type_id": _ID, **_ADDRESS_PARTS})
ADDRESS_TYPE = Spec({"name": _NAME, "group_name": _NAME}, ("name", "group_name"))
ADDRESS_TYPE_CHANGE = Spec({"id": _ID, "name": _NAME, "group_name": _NAME})
LINEAGE = Spec({"pipeline_id": _ID}, ("pipeline_id", "source_addresses", "target_addresses"))
LINEAGE_SIDES = ("source_addresses", "target_addresses")
_RULE_SETTINGS = {
    "z_threshold": TypeAdapter(Annotated[float, Field(ge=1.0, le=10.0)]),
    "lookback_days": TypeAdapter(Annotated[int, Field(ge=1, le=365)]),
    "minimum_executions": TypeAdapter(Annotated[int, Field(ge=5, le=1000)]),
    "active": _FLAG,
}
RULE = Spec({"pipeline_id": _ID, **_RULE_SETTINGS}, ("pipeline_id", "metric_field"),
            {"metric_field": _METRIC})
RULE_CHANGE = Spec({"id": _ID, "pipeline_id": _ID, **_RULE_SETTINGS}, ("id",),
                   {"metric_field": _METRIC})
# A list's strings are not lower-cased (only top-level strings are): `["TOTAL_ROWS"]` is
# refused, as by the original.
UNFLAG = Spec({"pipeline_id": _ID, "pipeline_execution_id": _ID,
               "metric_field": TypeAdapter(list[_METRIC_ENUM])},  # type: ignore[valid-type]
              ("pipeline_id", "pipeline_execution_id", "metric_field"))
TIMELINESS = Spec({"lookback_minutes": TypeAdapter(Annotated[int, Field(ge=5)])})
CLEANUP = Spec({"retention_days": TypeAdapter(Annotated[int, Field(ge=90)]),
                "batch_size": _ID}, ("retention_days",))


class LaxError(InvalidInput):
    """Values the wire's types refuse: `detail` is the 422's list, pydantic's items (and,
    as for any invalid input, `fields` names each field with its messages)."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        fields: dict[str, list[str]] = {}
        for item in detail:
            fields.setdefault(".".join(str(p) for p in item["loc"][1:]), []).append(item["msg"])
        super().__init__(fields)
        self.detail = detail


def _read(body: dict[str, Any], spec: Spec, loc: list[Any],
          detail: list[dict[str, Any]]) -> dict[str, Any]:
    """`body` with `spec`'s fields converted; each refusal appended to `detail`."""
    read = dict(body)
    for key, adapter in spec.fields.items():
        value = body.get(key)
        if value is None:
            continue
        try:
            read[key] = adapter.validate_python(value)
        except ValidationError as exc:
            detail.extend({"loc": [*loc, key, *error["loc"]], "msg": error["msg"],
                           "type": error["type"]} for error in exc.errors())
    return read


def _also(body: dict[str, Any], spec: Spec, loc: list[Any]) -> list[dict[str, Any]]:
    """What pydantic would refuse beside the wire's types: required fields missing (null
    counts as missing, as the domain says) and values outside an enum."""
    also = [{"loc": [*loc, key], "msg": "Field required", "type": "missing"}
            for key in spec.required if body.get(key) is None]
    for key, adapter in spec.enums.items():
        if body.get(key) is None:
            continue
        try:
            adapter.validate_python(body[key])
        except ValidationError as exc:
            also.extend({"loc": [*loc, key, *error["loc"]], "msg": error["msg"],
                         "type": error["type"]} for error in exc.errors())
    return also


def _ordered(detail: list[dict[str, Any]], spec_order: list[str]) -> list[dict[str, Any]]:
    rank = {key: index for index, key in enumerate(spec_order)}
    return sorted(detail, key=lambda item: rank.get(str(item["loc"][1]), len(rank)))


def lax(body: dict[str, Any], spec: Spec) -> dict[str, Any]:
    """`body` with the values of `spec`'s fields converted as pydantic's lax mode converts
    them; raises LaxError naming every field refused (then with the missing and
    out-of-enum ones too, in the order of the body's model)."""
    detail: list[dict[str, Any]] = []
    read = _read(body, spec, ["body"], detail)
    if detail:
        order = [*spec.fields, *spec.required, *spec.enums]
        raise LaxError(_ordered(detail + _also(body, spec, ["body"]), order))
    return read


def lax_lineage(body: dict[str, Any]) -> dict[str, Any]:
    """`POST /address_lineage`: its `pipeline_id`, and each address of its two lists (a
    side that is not a list, or an item that is not an object, is left for the domain)."""
    detail: list[dict[str, Any]] = []
    read = _read(body, LINEAGE, ["body"], detail)
    also = _also(body, LINEAGE, ["body"])
    for side in LINEAGE_SIDES:
        items = body.get(side)
        if isinstance(items, list):
            read[side] = [_read(item, ADDRESS, ["body", side, index], detail)
                          if isinstance(item, dict) else item
                          for index, item in enumerate(items)]
            also.extend(problem for index, item in enumerate(items) if isinstance(item, dict)
                        for problem in _also(item, ADDRESS, ["body", side, index]))
    if detail:
        raise LaxError(_ordered(detail + also, ["pipeline_id", *LINEAGE_SIDES]))
    return read
