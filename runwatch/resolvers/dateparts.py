"""`number x datepart` intervals of the Watcher contract (freshness and timeliness), with
calendar months and years (Jan 31 + 1 month = Feb 28/29)."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

DATEPARTS = ("minute", "hour", "day", "week", "month", "year")
_FIXED = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1),
          "week": timedelta(weeks=1)}


def add(moment: datetime, number: int, datepart: str) -> datetime:
    if datepart in _FIXED:
        return moment + number * _FIXED[datepart]
    months = number * (12 if datepart == "year" else 1)
    if datepart not in ("month", "year"):
        raise ValueError(f"unknown datepart {datepart!r}")
    total = moment.month - 1 + months
    year, month = moment.year + total // 12, total % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)
