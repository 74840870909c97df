"""Telemetry: rolling windows over a connection's or a pipeline's runs."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from runwatch.resolvers.telemetry import EventCounts as EventCountsData
from runwatch.resolvers.telemetry import Telemetry as TelemetryData
from runwatch.schema.types import BigInt


@strawberry.enum(description="Delivery status; the rule is documented in the README.")
class DeliveryStatus(Enum):
    ACTIVE = "active"
    DEGRADED = "degraded"
    ERROR = "error"
    IDLE = "idle"


@strawberry.type
class EventCounts:
    evaluations: BigInt  # type: ignore[valid-type]
    custom_events: BigInt  # type: ignore[valid-type]
    total: BigInt  # type: ignore[valid-type]

    @staticmethod
    def of(c: EventCountsData) -> EventCounts:
        return EventCounts(evaluations=c.evaluations, custom_events=c.custom_events, total=c.total)


@strawberry.type
class RecentError:
    occurred_at: datetime
    message: str
    run_id: strawberry.ID


@strawberry.type(description="Rolling windows over a connection's or a pipeline's runs.")
class Telemetry:
    status: DeliveryStatus
    status_reason: str
    last_delivery_at: datetime | None
    events_last_24h: EventCounts
    events_last_7d: EventCounts
    failed_deliveries_last_24h: int
    dlq_batches_last_24h: int
    recent_errors: list[RecentError]

    @staticmethod
    def of(found: TelemetryData | None) -> Telemetry:
        """`None` (nothing found: no pipelines) reads as empty telemetry."""
        t = found or TelemetryData()
        return Telemetry(
            status=DeliveryStatus(t.status),
            status_reason=t.status_reason,
            last_delivery_at=t.last_delivery_at,
            events_last_24h=EventCounts.of(t.events_last_24h),
            events_last_7d=EventCounts.of(t.events_last_7d),
            failed_deliveries_last_24h=t.failed_deliveries_last_24h,
            dlq_batches_last_24h=t.dlq_batches_last_24h,
            recent_errors=[
                RecentError(occurred_at=e.occurred_at, message=e.message,
                            run_id=strawberry.ID(str(e.run_id)))
                for e in t.recent_errors
            ],
        )
