"""Values at the edge: ids and filter strings, checked against what the columns can hold
before they reach the ORM (an id above 2**31 - 1 in an INTEGER parameter, a 101-character
string compared with a 100-character column, or NUL in PostgreSQL text each fail inside the
driver: a 500, not an answer).

The rules, the same on every surface:
- An id is a positive integer (or its decimal digits, as the ELT contract and GraphQL send it)
  that the kind's column can hold: INTEGER for most, BIGINT for runs and deliveries. An id no
  row can have is *not found*, exactly like an id that exists nowhere (`parse_id`); a filter by
  such an id matches nothing (`filter_id`); a reference to one in a body is the same field error
  as an unknown id (`check_reference` leaves the number for that message, `storable` guards the
  lookup).
- A string that filters a column is at most the column's length and holds no NUL: otherwise
  `InvalidInput` on that field (`filter_text`). NUL is refused in every stored string by the
  resolvers' text checks (`has_nul` is their one test), except free text (log lines, error
  summaries), where `scrub.clean_text` makes it visible instead.
"""

from __future__ import annotations

from typing import Any

from runwatch.models import INT32_MAX, INT64_MAX
from runwatch.resolvers.errors import InvalidInput, NotFound

# Objects with BIGINT ids; every other id is an INTEGER.
BIGINT_ID_KINDS = frozenset({"run", "webhook delivery", "pipeline execution"})
# Longest decimal form of any id (INT64_MAX has 19 digits); longer text is never an id, and
# int() is never asked to parse thousands of digits.
MAX_ID_DIGITS = 19
NUL_MESSAGE = "Null characters are not allowed."


def id_maximum(kind: str) -> int:
    return INT64_MAX if kind in BIGINT_ID_KINDS else INT32_MAX


def as_int(raw: Any) -> int | None:
    """An integer, or the decimal digits of one (no sign, at most 19 digits); else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= MAX_ID_DIGITS:
        return int(raw)
    return None


def storable(value: Any, kind: str) -> bool:
    """Whether a row of this kind can have this id at all."""
    number = as_int(value)
    return number is not None and 0 < number <= id_maximum(kind)


def parse_id(raw: Any, kind: str) -> int:
    """An id from a path, a GraphQL `ID` or a body: anything no row can have is not found."""
    if not storable(raw, kind):
        raise NotFound(kind, str(raw)[:40])
    return as_int(raw)  # type: ignore[return-value]


def filter_id(raw: Any, kind: str) -> int | None:
    """An id used as a filter: None when absent; 0 (which matches nothing) when no row can have
    it, the same answer as for an id that does not exist."""
    if raw is None or raw == "":
        return None
    return as_int(raw) if storable(raw, kind) else 0


def check_reference(value: Any, name: str, errors: Any) -> int | None:
    """An id named in a body (`connectionId`, `targetGatewayId`): an integer or its digits,
    else a field error. The number is returned even when no row can have it, so that the
    caller's "no such object" message names it; the caller guards its lookup with `storable`."""
    if value is None:
        return None
    number = as_int(value)
    if number is None:
        errors.add(name, "Expected an id.")
    return number


def has_nul(text: str) -> bool:
    return "\x00" in text


def filter_text(value: Any, name: str, limit: int) -> str | None:
    """A string compared with a column of `limit` characters: None when absent; a value the
    column cannot hold (too long, NUL) is invalid input on that field."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput.one(name, "Expected a string.")
    if has_nul(value):
        raise InvalidInput.one(name, NUL_MESSAGE)
    if len(value) > limit:
        raise InvalidInput.one(name, f"Ensure this value has no more than {limit} characters.")
    return value
