"""Gateways: types, queries and the admin mutations (create, issue a token, revoke)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from runwatch.models import Gateway as GatewayModel
from runwatch.resolvers import gateways as gateways_api
from runwatch.resolvers.clock import utcnow
from runwatch.schema.context import Info
from runwatch.schema.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    as_data,
    or_none,
    parse_id,
)
from runwatch.schema.types import Page


@strawberry.type(description="An agent that claims and executes runs, with its own tokens.")
class Gateway:
    id: strawberry.ID
    name: str
    created_at: datetime
    last_seen_at: datetime | None = strawberry.field(description="Its latest heartbeat.")
    version: str | None
    labels: JSON
    revoked_at: datetime | None

    @staticmethod
    def of(m: GatewayModel) -> Gateway:
        return Gateway(id=strawberry.ID(str(m.id)), name=m.name, created_at=m.created_at,
                       last_seen_at=m.last_seen_at, version=m.version, labels=m.labels,
                       revoked_at=m.revoked_at)

    @strawberry.field(description="Heartbeating within its lease (its claimed runs are safe).")
    def online(self, info: Info) -> bool:
        lease = timedelta(seconds=info.context.settings.gateway_lease_seconds)
        return (self.revoked_at is None and self.last_seen_at is not None
                and self.last_seen_at >= utcnow() - lease)


@strawberry.type
class GatewaySuccess:
    gateway: Gateway


@strawberry.type
class GatewayTokenSuccess:
    gateway: Gateway
    token: str = strawberry.field(
        description="The gateway's bearer token for the /api/agent/ routes, shown only once.")


@strawberry.input
class CreateGatewayInput:
    name: str


@strawberry.input
class IssueGatewayTokenInput:
    gateway_id: strawberry.ID
    revoke_others: bool = strawberry.field(
        default=False, description="Revoke the gateway's earlier tokens (rotation).")


GatewayTokenResult = Annotated[
    GatewayTokenSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("GatewayTokenResult"),
]
GatewayResult = Annotated[
    GatewaySuccess | NotFoundError | PermissionDeniedError, strawberry.union("GatewayResult"),
]


@strawberry.type
class GatewayQuery:
    @strawberry.field
    async def gateway(self, info: Info, id: strawberry.ID) -> Gateway | None:
        caller = info.context.require_caller()
        row = await or_none(lambda: gateways_api.get_gateway(
            caller=caller, gateway_id=parse_id(id, "gateway")))
        return Gateway.of(row) if row else None

    @strawberry.field(description="The organisation's gateways, oldest first.")
    async def gateways(
        self, info: Info, first: int | None = None, after: str | None = None,
        include_revoked: bool = False,
    ) -> Page[Gateway]:
        caller = info.context.require_caller()
        return Page.of(await gateways_api.list_gateways(
            caller=caller, first=first, after=after, include_revoked=include_revoked),
            Gateway.of)


@strawberry.type
class GatewayMutation:
    @strawberry.mutation(description="Create a gateway and its first token (admin).")
    async def create_gateway(self, info: Info, input: CreateGatewayInput) -> GatewayTokenResult:
        caller = info.context.require_caller()

        async def call() -> GatewayTokenSuccess:
            gateway, issued = await gateways_api.create_gateway(caller=caller, name=input.name)
            return GatewayTokenSuccess(gateway=Gateway.of(gateway), token=issued.token)

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Another token for a gateway (admin); optionally revoke "
                         "its earlier ones.")
    async def issue_gateway_token(
        self, info: Info, input: IssueGatewayTokenInput
    ) -> GatewayTokenResult:
        caller = info.context.require_caller()

        async def call() -> GatewayTokenSuccess:
            gateway_id = parse_id(input.gateway_id, "gateway")
            issued = await gateways_api.issue_gateway_token(
                caller=caller, gateway_id=gateway_id, revoke_others=input.revoke_others)
            gateway = await gateways_api.get_gateway(caller=caller, gateway_id=gateway_id)
            return GatewayTokenSuccess(gateway=Gateway.of(gateway), token=issued.token)

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Revoke a gateway and all its tokens (admin).")
    async def revoke_gateway(self, info: Info, id: strawberry.ID) -> GatewayResult:
        caller = info.context.require_caller()

        async def call() -> GatewaySuccess:
            gateway = await gateways_api.revoke_gateway(
                caller=caller, gateway_id=parse_id(id, "gateway"))
            return GatewaySuccess(gateway=Gateway.of(gateway))

        return await as_data(call)  # type: ignore[return-value]
