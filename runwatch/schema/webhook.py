"""Delivery: webhook endpoints, their deliveries and attempts: types, queries, mutations."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from runwatch.models import WebhookAttempt as WebhookAttemptModel
from runwatch.models import WebhookDelivery as WebhookDeliveryModel
from runwatch.models import WebhookEndpoint as WebhookEndpointModel
from runwatch.resolvers import webhooks as webhooks_api
from runwatch.resolvers.batch_reads import Window
from runwatch.resolvers.caller import Scope
from runwatch.resolvers.errors import PermissionDenied
from runwatch.schema.context import Info
from runwatch.schema.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    as_data,
    filter_id,
    or_none,
    parse_id,
)
from runwatch.schema.pipeline import Pipeline
from runwatch.schema.run import Run
from runwatch.schema.types import Page


@strawberry.enum(description="Where a webhook delivery stands.")
class WebhookDeliveryStatus(Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@strawberry.type(description="One HTTP attempt of a delivery.")
class WebhookAttempt:
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    response_excerpt: str | None = strawberry.field(
        description="The start of the receiver's answer.")

    @staticmethod
    def of(m: WebhookAttemptModel) -> WebhookAttempt:
        return WebhookAttempt(attempted_at=m.attempted_at, status_code=m.status_code,
                              duration_ms=m.duration_ms, error=m.error,
                              response_excerpt=m.response_excerpt)


@strawberry.type(description="Where terminal-run events go: the organisation's default "
                 "endpoint, or a pipeline's own (which wins).")
class WebhookEndpoint:
    id: strawberry.ID
    url: str
    event_types: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    pipeline_id: strawberry.Private[int | None]
    signing_secret: strawberry.Private[str]

    @staticmethod
    def of(m: WebhookEndpointModel) -> WebhookEndpoint:
        return WebhookEndpoint(
            id=strawberry.ID(str(m.id)), url=m.url, event_types=list(m.event_types),
            enabled=m.enabled, created_at=m.created_at, updated_at=m.updated_at,
            pipeline_id=m.pipeline_id,  # type: ignore[attr-defined]
            signing_secret=m.secret)

    @strawberry.field(description="The Standard Webhooks signing secret (`whsec_…`); needs "
                      "the `write` scope.")
    def secret(self, info: Info) -> str:
        caller = info.context.require_caller()
        if not caller.has(Scope.WRITE):
            raise PermissionDenied("Reading a signing secret needs the 'write' scope.")
        return self.signing_secret

    @strawberry.field(description="The pipeline whose endpoint this is; null for the "
                      "organisation's default.")
    async def pipeline(self, info: Info) -> Pipeline | None:
        if self.pipeline_id is None:
            return None
        info.context.require_caller()
        row = await info.context.loaders.pipeline.load(self.pipeline_id)
        return Pipeline.of(row) if row else None

    @strawberry.field(description="Deliveries to this endpoint, newest first.")
    async def deliveries(
        self, info: Info, first: int | None = None, after: str | None = None,
        status: WebhookDeliveryStatus | None = None,
    ) -> Page[WebhookDelivery]:
        info.context.require_caller()
        page = await info.context.loaders.deliveries_of_endpoint.load(
            (int(self.id), Window(first, after), _status(status)))
        return Page.of(page, WebhookDelivery.of)


def _status(status: WebhookDeliveryStatus | None) -> webhooks_api.DeliveryStatus | None:
    return None if status is None else webhooks_api.DeliveryStatus(status.value)


@strawberry.type(description="One event for one endpoint, sent and retried by workers.")
class WebhookDelivery:
    id: strawberry.ID
    event_type: str
    message_id: str = strawberry.field(description="The `webhook-id` header of every attempt.")
    payload: JSON
    status: WebhookDeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    run_id: strawberry.Private[int | None]
    endpoint_id: strawberry.Private[int]

    @staticmethod
    def of(m: WebhookDeliveryModel) -> WebhookDelivery:
        return WebhookDelivery(
            id=strawberry.ID(str(m.id)), event_type=m.event_type, message_id=m.message_id,
            payload=m.payload, status=WebhookDeliveryStatus(m.status.value),
            attempt_count=m.attempts, next_attempt_at=m.next_attempt_at,
            created_at=m.created_at, delivered_at=m.delivered_at,
            last_status_code=m.last_status_code, last_error=m.last_error,
            run_id=m.run_id,  # type: ignore[attr-defined]
            endpoint_id=m.endpoint_id)  # type: ignore[attr-defined]

    @strawberry.field(description="Every attempt, oldest first.")
    async def attempts(self, info: Info) -> list[WebhookAttempt]:
        info.context.require_caller()
        rows = await info.context.loaders.delivery_attempts.load(int(self.id))
        return [WebhookAttempt.of(a) for a in rows]

    @strawberry.field
    async def endpoint(self, info: Info) -> WebhookEndpoint | None:
        info.context.require_caller()
        row = await info.context.loaders.webhook_endpoint.load(self.endpoint_id)
        return WebhookEndpoint.of(row) if row else None

    @strawberry.field
    async def run(self, info: Info) -> Run | None:
        if self.run_id is None:
            return None
        info.context.require_caller()
        row = await info.context.loaders.run.load(self.run_id)
        return Run.of(row) if row else None


@strawberry.input
class SetWebhookEndpointInput:
    url: str
    pipeline_id: strawberry.ID | None = strawberry.field(
        default=None, description="A pipeline's own endpoint; omit for the organisation's "
        "default.")
    event_types: list[str] | None = strawberry.field(
        default=None, description="run.succeeded, run.failed, run.cancelled, run.timed_out "
        "(omitted: a new endpoint gets the first three, a changed one keeps its own; a "
        "timed-out run is run.failed with timedOut: true unless run.timed_out is listed).")
    enabled: bool | None = None


@strawberry.type
class WebhookEndpointSuccess:
    endpoint: WebhookEndpoint


@strawberry.type
class DeleteWebhookEndpointSuccess:
    id: strawberry.ID


@strawberry.type
class WebhookDeliverySuccess:
    delivery: WebhookDelivery


WebhookEndpointResult = Annotated[
    WebhookEndpointSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("WebhookEndpointResult"),
]
DeleteWebhookEndpointResult = Annotated[
    DeleteWebhookEndpointSuccess | NotFoundError | PermissionDeniedError,
    strawberry.union("DeleteWebhookEndpointResult"),
]
WebhookDeliveryResult = Annotated[
    WebhookDeliverySuccess | NotFoundError | PermissionDeniedError,
    strawberry.union("WebhookDeliveryResult"),
]


@strawberry.type
class WebhookQuery:
    @strawberry.field
    async def webhook_endpoint(self, info: Info, id: strawberry.ID) -> WebhookEndpoint | None:
        caller = info.context.require_caller()
        row = await or_none(lambda: webhooks_api.get_endpoint(
            caller=caller, endpoint_id=parse_id(id, "webhook endpoint")))
        return WebhookEndpoint.of(row) if row else None

    @strawberry.field(description="The organisation's webhook endpoints, oldest first.")
    async def webhook_endpoints(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Page[WebhookEndpoint]:
        caller = info.context.require_caller()
        return Page.of(await webhooks_api.list_endpoints(caller=caller, first=first, after=after),
                       WebhookEndpoint.of)

    @strawberry.field
    async def webhook_delivery(self, info: Info, id: strawberry.ID) -> WebhookDelivery | None:
        caller = info.context.require_caller()
        row = await or_none(lambda: webhooks_api.get_delivery(
            caller=caller, delivery_id=parse_id(id, "webhook delivery")))
        return WebhookDelivery.of(row) if row else None

    @strawberry.field(description="Webhook deliveries newest first, filtered.")
    async def webhook_deliveries(
        self, info: Info, first: int | None = None, after: str | None = None,
        endpoint_id: strawberry.ID | None = None, run_id: strawberry.ID | None = None,
        status: WebhookDeliveryStatus | None = None,
    ) -> Page[WebhookDelivery]:
        caller = info.context.require_caller()
        page = await webhooks_api.list_deliveries(
            caller=caller, first=first, after=after, where=webhooks_api.DeliveryFilter(
                endpoint_id=filter_id(endpoint_id, "webhook endpoint"),
                run_id=filter_id(run_id, "run"), status=_status(status)))
        return Page.of(page, WebhookDelivery.of)


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(description="Create or change the organisation's default webhook "
                         "endpoint or a pipeline's (a new endpoint gets a new secret).")
    async def set_webhook_endpoint(
        self, info: Info, input: SetWebhookEndpointInput
    ) -> WebhookEndpointResult:
        caller = info.context.require_caller()

        async def call() -> WebhookEndpointSuccess:
            endpoint = await webhooks_api.set_endpoint(
                caller=caller, url=input.url,
                pipeline_id=None if input.pipeline_id is None
                else parse_id(input.pipeline_id, "pipeline"),
                event_types=input.event_types, enabled=input.enabled,
                allow_private=info.context.settings.webhook_allow_private)
            return WebhookEndpointSuccess(endpoint=WebhookEndpoint.of(endpoint))

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Delete an endpoint and its delivery history.")
    async def delete_webhook_endpoint(
        self, info: Info, id: strawberry.ID
    ) -> DeleteWebhookEndpointResult:
        caller = info.context.require_caller()

        async def call() -> DeleteWebhookEndpointSuccess:
            deleted = await webhooks_api.delete_endpoint(
                caller=caller, endpoint_id=parse_id(id, "webhook endpoint"))
            return DeleteWebhookEndpointSuccess(id=strawberry.ID(str(deleted)))

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="A new signing secret for an endpoint.")
    async def rotate_webhook_secret(
        self, info: Info, id: strawberry.ID
    ) -> WebhookEndpointResult:
        caller = info.context.require_caller()

        async def call() -> WebhookEndpointSuccess:
            endpoint = await webhooks_api.rotate_secret(
                caller=caller, endpoint_id=parse_id(id, "webhook endpoint"))
            return WebhookEndpointSuccess(endpoint=WebhookEndpoint.of(endpoint))

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Send a delivery again (same event, same webhook-id).")
    async def redeliver_webhook(self, info: Info, id: strawberry.ID) -> WebhookDeliveryResult:
        caller = info.context.require_caller()

        async def call() -> WebhookDeliverySuccess:
            delivery = await webhooks_api.redeliver(
                caller=caller, delivery_id=parse_id(id, "webhook delivery"))
            return WebhookDeliverySuccess(delivery=WebhookDelivery.of(delivery))

        return await as_data(call)  # type: ignore[return-value]
