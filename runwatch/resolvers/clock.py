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
