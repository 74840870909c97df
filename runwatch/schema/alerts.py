"""Alert channels: where checks and anomalies alert (a Slack-compatible incoming webhook or the
signed generic webhook)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from runwatch.models import AlertChannel as AlertChannelModel
from runwatch.resolvers import alerts as alerts_api
from runwatch.schema.context import Info
from runwatch.schema.errors import (
    DoneResult,
    DoneSuccess,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    as_data,
    parse_id,
)


@strawberry.type(description="Where alerts go: a Slack-compatible incoming webhook or the "
                 "signed generic webhook.")
class AlertChannel:
    id: strawberry.ID
    name: str
    kind: str
    url: str
    enabled: bool
    created_at: datetime

    @staticmethod
    def of(m: AlertChannelModel) -> AlertChannel:
        return AlertChannel(id=strawberry.ID(str(m.id)), name=m.name, kind=m.kind.value,
                            url=m.url, enabled=m.enabled, created_at=m.created_at)


@strawberry.input
class CreateAlertChannelInput:
    name: str
    kind: str = strawberry.field(description="slack or webhook")
    url: str


@strawberry.type
class AlertChannelSuccess:
    channel: AlertChannel
    secret: str | None = strawberry.field(
        description="The signing secret of a webhook channel, shown only when it is created.")


AlertChannelResult = Annotated[
    AlertChannelSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("AlertChannelResult")]
@strawberry.type
class AlertQuery:
    @strawberry.field
    async def alert_channels(self, info: Info) -> list[AlertChannel]:
        caller = info.context.require_caller()
        page = await alerts_api.list_channels(caller=caller, first=200)
        return [AlertChannel.of(c) for c in page.items]


@strawberry.type
class AlertMutation:
    @strawberry.mutation(description="Add an alert channel (Slack-compatible or signed webhook).")
    async def create_alert_channel(
        self, info: Info, input: CreateAlertChannelInput
    ) -> AlertChannelResult:
        caller = info.context.require_caller()

        async def call() -> AlertChannelSuccess:
            channel = await alerts_api.create_channel(
                caller=caller, name=input.name, kind=input.kind, url=input.url,
                allow_private=info.context.settings.webhook_allow_private)
            return AlertChannelSuccess(channel=AlertChannel.of(channel), secret=channel.secret)

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation
    async def set_alert_channel_enabled(
        self, info: Info, id: strawberry.ID, enabled: bool
    ) -> AlertChannelResult:
        caller = info.context.require_caller()

        async def call() -> AlertChannelSuccess:
            channel = await alerts_api.set_channel_enabled(
                caller=caller, channel_id=parse_id(id, "alert channel"), enabled=enabled)
            return AlertChannelSuccess(channel=AlertChannel.of(channel), secret=None)

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation
    async def delete_alert_channel(self, info: Info, id: strawberry.ID) -> DoneResult:
        caller = info.context.require_caller()

        async def call() -> DoneSuccess:
            await alerts_api.delete_channel(caller=caller, channel_id=parse_id(id, "alert channel"))
            return DoneSuccess()

        return await as_data(call)  # type: ignore[return-value]
