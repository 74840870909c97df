"""Keyset (cursor) pagination over a primary key: stable under inserts, O(page) per call."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Generic, TypeVar

from tortoise import fields
from tortoise.queryset import QuerySet

from runwatch.models import INT32_MAX, INT64_MAX
from runwatch.resolvers.errors import InvalidInput

T = TypeVar("T")
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_next_page: bool

    def cursor(self, item: T) -> str:
        return encode_cursor(item.id)  # type: ignore[attr-defined]

    @property
    def end_cursor(self) -> str | None:
        return self.cursor(self.items[-1]) if self.items else None


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(f"id:{pk}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        kind, _, raw = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind != "id":
            raise ValueError
        pk = int(raw)
        if not 0 <= pk <= INT64_MAX:
            raise ValueError
        return pk
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput.one("after", "not a cursor returned by this API") from None


async def paginate(
    query: QuerySet[T], *, first: int | None, after: str | None, newest_first: bool
) -> Page[T]:
    size = DEFAULT_PAGE_SIZE if first is None else first
    if size < 1 or size > MAX_PAGE_SIZE:
        raise InvalidInput.one("first", f"must be between 1 and {MAX_PAGE_SIZE}")
    if after is not None:
        # Clamp to what the id column holds, so a crafted cursor cannot overflow a parameter.
        wide = isinstance(query.model._meta.pk, fields.BigIntField)
        pk = min(decode_cursor(after), INT64_MAX if wide else INT32_MAX)
        query = query.filter(id__lt=pk) if newest_first else query.filter(id__gt=pk)
    rows = await query.order_by("-id" if newest_first else "id").limit(size + 1)
    return Page(items=list(rows[:size]), has_next_page=len(rows) > size)
