"""The DateTime scalar's input parser (`runwatch.schema.types._parse_datetime`): the common
form read by the standard library, everything else by strawberry's parser (dateutil), with
the same values, the same forms accepted and the same errors as strawberry's alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DateTimeDefinition

from runwatch.schema.types import _COMMON_DATETIME, _parse_datetime

STRAWBERRY = DateTimeDefinition.parse_value


def outcome(parse, value):  # type: ignore[no-untyped-def]
    try:
        parsed = parse(value)
    except StrawberryInputCoercionError as exc:
        return ("refused", str(exc))
    return ("parsed", parsed, parsed.utcoffset())


@pytest.mark.parametrize("value", [
    "2026-04-20T11:00:00Z", "2026-04-20T11:00:00.5Z", "2026-04-20T11:00:00.123456Z",
    "2026-04-20T11:00:00+02:00", "2026-04-20T11:00:00-00:00", "2026-04-20T11:00:00.1-09:30",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2024-02-29T12:00:00Z",
])
def test_the_common_form_reads_as_strawberry_reads_it(value: str) -> None:
    assert _COMMON_DATETIME.fullmatch(value)
    assert outcome(_parse_datetime, value) == outcome(STRAWBERRY, value)


@pytest.mark.parametrize("value", [
    # other forms: strawberry's parser alone
    "2026-04-20T24:00:00Z", "2026-04-20", "2026-04-20T11:00Z", "20260420T110000Z",
    "2026-04-20T11:00:00.1234567Z", "2026-04-20T11:00:00,5Z", "2026-04-20 11:00:00Z",
    "2026-04-20T11:00:00+0200", "2026-04-20T11:00:00+02", "2026-W17-1T11:00:00Z",
    "2026-04-20T11:00:00", "２０２６-04-20T11:00:00Z",
    # the common form's shape with an impossible value: strawberry's error
    "2026-13-20T11:00:00Z", "2026-02-30T11:00:00Z", "2026-04-20T25:00:00Z",
    "2026-04-20T11:60:00Z", "2026-04-20T11:00:00+24:00",
    # not times at all
    "", "now", "2026-04-20T11:00:00ZZ", 1776682800, None, ["2026-04-20T11:00:00Z"],
])
def test_every_other_value_gets_strawberrys_answer(value: object) -> None:
    assert outcome(_parse_datetime, value) == outcome(STRAWBERRY, value)


@settings(max_examples=300, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       offset_minutes=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
       digits=st.integers(min_value=0, max_value=6), zulu=st.booleans())
def test_any_time_in_the_common_form_reads_the_same(
        moment: datetime, offset_minutes: int, digits: int, zulu: bool) -> None:
    text = f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S")  # %Y: no padding
    if digits:
        text += "." + f"{moment.microsecond:06d}"[:digits]
    if zulu:
        text += "Z"
    else:
        sign = "-" if offset_minutes < 0 else "+"
        hours, minutes = divmod(abs(offset_minutes), 60)
        text += f"{sign}{hours:02d}:{minutes:02d}"
    assert _COMMON_DATETIME.fullmatch(text)
    assert outcome(_parse_datetime, text) == outcome(STRAWBERRY, text)


def test_the_instant_is_the_same_whatever_the_offset() -> None:
    parsed = _parse_datetime("2026-04-20T13:00:00+02:00")
    assert isinstance(parsed, datetime)
    assert parsed == datetime(2026, 4, 20, 11, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(hours=2)
    assert _parse_datetime("2026-04-20T11:00:00Z").tzinfo is UTC
