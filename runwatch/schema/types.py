"""What every domain module of the schema shares: the BigInt scalar and the one generic page.

The domain modules import in one order, each only from modules before it:

    types, telemetry, gateway, pipeline_types, checks, alerts, run_series
      <- run <- pipeline <- connection, webhook, lineage <- watcher, elt, live

The object graph has cycles the import order cannot have (a run's pipeline lists its runs; a
pipeline's webhook endpoint names the pipeline; a delivery's run lists its deliveries). Each
edge that points up the order names its type with a `strawberry.LazyType` declared once at the
top of the module (`PipelineRef`, ...): strawberry resolves it when the schema is built, and the
field's resolver builds the object from the same handle. There are four such edges:
`Run.pipeline`, `Run.webhookDeliveries`, `Pipeline.connection`, `Pipeline.webhookEndpoint`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Generic, NewType, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.schema.types.base_scalars import DateTimeDefinition

from runwatch.resolvers.clock import iso
from runwatch.resolvers.errors import InvalidInput
from runwatch.resolvers.pagination import MAX_PAGE_SIZE
from runwatch.resolvers.pagination import Page as DomainPage

T = TypeVar("T")
M = TypeVar("M")

BigInt = NewType("BigInt", int)


def _parse_bigint(value: object) -> int:
    """GraphQLError, not ValueError: a bad value is the client's error, shown as such (an
    error the schema did not raise on purpose is masked)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise GraphQLError("BigInt must be an integer")
    try:
        parsed = int(value)
    except ValueError:
        raise GraphQLError("BigInt must be an integer") from None
    if not -(2**63) <= parsed < 2**63:
        raise GraphQLError("BigInt must fit in 64 bits")
    return parsed


BIGINT_SCALAR = strawberry.scalar(
    name="BigInt",
    serialize=int,
    parse_value=_parse_bigint,
    description="A 64-bit integer (counts of events, rows and bytes exceed GraphQL's Int).",
)


_PARSE_DATETIME = DateTimeDefinition.parse_value  # strawberry's: dateutil's isoparse
_COMMON_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})")


def _parse_datetime(value: object) -> object:
    """The form clients send (`2026-04-20T11:00:00.5Z`, `…+02:00`) by the standard library's
    parser, which reads it as dateutil does (tests/test_scalars.py) in a fiftieth of the time
    (4.5 µs of every request that carries a time); anything else, and any value it refuses,
    by strawberry's own parser, so the forms accepted and the errors are strawberry's."""
    if isinstance(value, str) and _COMMON_DATETIME.fullmatch(value):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    return _PARSE_DATETIME(value)


# Datetimes read as the REST shims write them (`2026-04-20T11:00:00Z`: UTC with a `Z`), so that
# a person comparing the two surfaces sees the same text; any ISO 8601 offset is accepted.
DATETIME_SCALAR = strawberry.scalar(
    name="DateTime",
    serialize=iso,
    parse_value=_parse_datetime,
    description="Date with time, ISO 8601: answers are in UTC with a `Z`, as over REST; "
    "inputs may carry any offset.",
)


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Page(Generic[T]):
    """`Page[Run]` is the SDL's `RunPage` (and its edges `RunEdge`): strawberry names a
    generic type after its argument."""

    edges: list[Edge[T]]
    nodes: list[T]
    page_info: PageInfo

    @staticmethod
    def of(page: DomainPage[M], node: Callable[[M], T]) -> Page[T]:
        nodes = [node(item) for item in page.items]
        return Page(
            edges=[Edge(cursor=page.cursor(item), node=n)
                   for item, n in zip(page.items, nodes, strict=True)],
            nodes=nodes,
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )


# A short list that is not paged (a run's children, a connection's pipelines) still has a
# bound the query cost can count: at most `first` items (the field's default, and at most the
# maximum). A longer list is an error that says how to ask for it, never a silent cut. A run's
# children default to 20, so that an execution tree asked four levels deep stays within the
# cost budget (20 + 20² + 20³ + 20⁴ = 168,420).
CHILDREN_DEFAULT = 20
PIPELINES_DEFAULT = 50
SHORT_LIST_MAX = MAX_PAGE_SIZE  # as a page: the cost analysis counts at most this


def short_list_help(default: int) -> str:
    return (f"At most this many items ({default} when not given, at most {SHORT_LIST_MAX}); "
            "a longer list is an error that says so.")


def short_list(items: list[M], first: int, what: str) -> list[M]:
    if not 0 <= first <= SHORT_LIST_MAX:
        raise InvalidInput.one("first", f"first must be between 0 and {SHORT_LIST_MAX}.")
    if len(items) > first:
        raise InvalidInput.one("first", f"{what} has {len(items)} items, more than first: "
                                        f"{first}; ask for them with a larger first (at most "
                                        f"{SHORT_LIST_MAX}).")
    return items
