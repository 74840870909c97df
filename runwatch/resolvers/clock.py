"""Time: every instant runwatch stores or compares is an aware UTC datetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from runwatch.resolvers.errors import InvalidInput

SECOND = timedelta(seconds=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_utc(moment: datetime, field: str) -> datetime:
    """The instant in UTC. A time without an offset is UTC (as over REST), never the server's
    local time; one that UTC cannot represent is invalid input, not a crash."""
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidInput.one(
            field, "This time is outside the range runwatch can store."
        ) from None


def floor_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, seconds precision unless the time has a fraction (the form
    every wire format of runwatch uses)."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def parse_iso(value: object) -> datetime | None:
    """An ISO 8601 date-time string as an aware UTC datetime (no offset: UTC); None when it
    is not one. Case does not matter (`2024-01-01t10:00:00z`: the Watcher lower-cases)."""
    if not isinstance(value, str) or ("T" not in value.upper() and " " not in value):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().upper())
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
