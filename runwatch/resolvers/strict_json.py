"""Strict JSON: the one rule for every JSON value runwatch accepts, whatever the surface.

Python's `json` accepts more than RFC 8259 JSON: `NaN`, `Infinity`, `-Infinity`, numbers that
overflow to infinity (`1e999`), and strings holding lone UTF-16 surrogates (`"\\ud800"`). None
of them can be stored faithfully (PostgreSQL's jsonb refuses them, SQLite stores them and every
later read fails), and none can be answered (a strict client rejects them). Deep nesting is
refused too: a 5,000-deep array would overflow the parser's recursion before anything else.

`loads` is what every REST body reader calls; `problem` is what the resolvers call on JSON
values that arrive already parsed (GraphQL `JSON` scalars, nested inputs), so that no surface
can store what the other refuses. Neither imports a web framework.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Arrays and objects nested deeper than this are refused. Python's parser stops near 1,000
# levels, but values a little short of that parse and then fail deeper in the stack (encoding
# them again); real bodies nest a handful of levels.
MAX_DEPTH = 100


class NotStrictJSON(ValueError):
    """A body or value that is not strict JSON; `reason` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _constant(name: str) -> Any:
    raise NotStrictJSON(f"{name} is not a JSON number")


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotStrictJSON(f"the number {text[:40]} is too large to be stored")
    return value


# One decoder for every body: `json.loads` with these hooks builds a decoder (and its scanner)
# on every call, a few µs of each request.
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=finite_float)


def _decode(raw: bytes | bytearray | str) -> Any:
    """`json.loads(raw, parse_constant=_constant, parse_float=finite_float)`, through the one
    decoder: the same text read from bytes (UTF-8, 16 or 32 detected, surrogates passed),
    the same errors."""
    if isinstance(raw, str):
        if raw.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        return _DECODER.decode(raw)
    if not isinstance(raw, bytes | bytearray):
        raise TypeError("the JSON object must be str, bytes or bytearray, not "
                        f"{raw.__class__.__name__}")
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def loads(raw: bytes | str) -> Any:
    """Parse strict JSON, or raise `NotStrictJSON` (also for input that is not JSON at all)."""
    try:
        value = _decode(raw)
    except NotStrictJSON:
        raise
    except RecursionError:
        raise NotStrictJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotStrictJSON(str(exc)) from None
    reason = _shape_problem(value, raw)
    if reason is not None:
        raise NotStrictJSON(reason)
    return value


def problem(value: Any) -> str | None:
    """Why an already-parsed JSON value cannot be stored, or None: a non-finite number, a lone
    surrogate, nesting deeper than MAX_DEPTH, or something that is not a JSON type at all."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not _is_unicode(item):
                return "a string holds a lone surrogate (not valid Unicode)"
        elif isinstance(item, bool) or item is None or isinstance(item, int):
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "NaN and Infinity are not JSON numbers"
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            if isinstance(item, dict):
                for key, inner in item.items():
                    if not isinstance(key, str) or not _is_unicode(key):
                        return "an object key is not a valid string"
                    stack.append((inner, depth + 1))
            else:
                stack.extend((inner, depth + 1) for inner in item)
        else:
            return f"{type(item).__name__} is not a JSON value"
    return None


def _shape_problem(value: Any, raw: bytes | str) -> str | None:
    """`problem` for a freshly parsed value, cheap in the common case: NaN and overflowing
    numbers were refused by the parser; surrogates are found by one C-speed encode, and the
    nesting walk only runs when the text has enough brackets to be deep at all."""
    brackets = raw.count(b"[" if isinstance(raw, bytes) else "[") + raw.count(
        b"{" if isinstance(raw, bytes) else "{")
    if brackets > MAX_DEPTH:
        return problem(value)
    if not _may_hold_surrogates(raw):
        return None
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return "a string holds a lone surrogate (not valid Unicode)"
    return None


def _may_hold_surrogates(raw: bytes | str) -> bool:
    """Whether a parsed text can hold a lone surrogate at all: only through a `\\u` escape or,
    in bytes (which `json.loads` decodes with `surrogatepass`), an encoded surrogate: its
    first byte is 0xED in UTF-8, and UTF-16 or UTF-32 text (which `json.loads` detects) has
    NUL bytes. Most bodies have none of these, and skip re-encoding the whole value."""
    if isinstance(raw, bytes):
        return b"\\u" in raw or b"\xed" in raw or b"\x00" in raw
    return "\\u" in raw or not _is_unicode(raw)


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
