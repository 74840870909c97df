"""Connections: the connection type, its relations, and the connection queries and
mutations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from runwatch.models import Connection as ConnectionModel
from runwatch.resolvers import connections as connections_api
from runwatch.resolvers import secrets as secrets_api
from runwatch.schema.context import Info
from runwatch.schema.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    as_data,
    or_none,
    parse_id,
)
from runwatch.schema.pipeline import Pipeline
from runwatch.schema.run import Run, RunStatus, runs_page
from runwatch.schema.telemetry import Telemetry
from runwatch.schema.types import PIPELINES_DEFAULT, Page, short_list, short_list_help


@strawberry.type(description="A warehouse endpoint. Secrets are never stored or returned.")
class Connection:
    id: strawberry.ID
    name: str
    warehouse_type: str
    settings: JSON
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def of(m: ConnectionModel) -> Connection:
        return Connection(
            id=strawberry.ID(str(m.id)), name=m.name, warehouse_type=m.warehouse_type,
            settings=m.settings, created_at=m.created_at, updated_at=m.updated_at,
        )

    @strawberry.field
    async def telemetry(self, info: Info) -> Telemetry:
        info.context.require_caller()
        return Telemetry.of(await info.context.loaders.connection_telemetry.load(int(self.id)))

    @strawberry.field(description="The pipelines that deliver into this connection.")
    async def pipelines(
        self, info: Info,
        first: Annotated[int, strawberry.argument(
            description=short_list_help(PIPELINES_DEFAULT))] = PIPELINES_DEFAULT,
    ) -> list[Pipeline]:
        info.context.require_caller()
        rows = await info.context.loaders.pipelines_of_connection.load(int(self.id))
        return [Pipeline.of(p) for p in short_list(rows, first,
                                                   f"connection {self.id}'s pipelines")]

    @strawberry.field(description="Runs of this connection's pipelines, newest first.")
    async def runs(
        self, info: Info, first: int | None = None, after: str | None = None,
        status: list[RunStatus] | None = None,
    ) -> Page[Run]:
        return await runs_page(info, parent=int(self.id), first=first, after=after,
                               status=status, of_connection=True)


@strawberry.input
class CreateConnectionInput:
    name: str
    warehouse_type: str
    settings: JSON | None = strawberry.field(
        default=None, description="Non-secret settings; credentials are refused."
    )


@strawberry.input
class UpdateConnectionInput:
    id: strawberry.ID
    name: str | None = strawberry.UNSET
    warehouse_type: str | None = strawberry.UNSET
    settings: JSON | None = strawberry.UNSET


@strawberry.type
class ConnectionSuccess:
    connection: Connection


CreateConnectionResult = Annotated[
    ConnectionSuccess | InvalidInputError | PermissionDeniedError,
    strawberry.union("CreateConnectionResult"),
]
UpdateConnectionResult = Annotated[
    ConnectionSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("UpdateConnectionResult"),
]


@strawberry.type(description="A secret of a connection: its name and when it was set; the "
                 "value is write-only (only the organisation's gateways receive it).")
class ConnectionSecret:
    name: str
    set: bool
    updated_at: datetime


@strawberry.input(description="Secret values by environment-variable name (e.g. "
                  "GITHUB_TOKEN); null removes one, the others stay.")
class SetConnectionSecretsInput:
    connection_id: strawberry.ID
    secrets: JSON


@strawberry.type
class ConnectionSecretsSuccess:
    secrets: list[ConnectionSecret]


SetConnectionSecretsResult = Annotated[
    ConnectionSecretsSuccess | NotFoundError | InvalidInputError | PermissionDeniedError,
    strawberry.union("SetConnectionSecretsResult"),
]


def _secret(row: object) -> ConnectionSecret:
    return ConnectionSecret(name=row.name, set=True, updated_at=row.updated_at)  # type: ignore[attr-defined]


def _given(value: object) -> object:
    return connections_api.UNSET if value is strawberry.UNSET else value


@strawberry.type
class ConnectionQuery:
    @strawberry.field(description="One connection by the id its REST URL uses.")
    async def connection(self, info: Info, id: strawberry.ID) -> Connection | None:
        caller = info.context.require_caller()
        row = await or_none(lambda: connections_api.get_connection(
            caller=caller, connection_id=parse_id(id, "connection")))
        return Connection.of(row) if row else None

    @strawberry.field(description="Which secrets a connection has (never their values).")
    async def connection_secrets(self, info: Info,
                                 connection_id: strawberry.ID) -> list[ConnectionSecret]:
        caller = info.context.require_caller()
        cid = parse_id(connection_id, "connection")
        row = await or_none(lambda: connections_api.get_connection(caller=caller,
                                                                   connection_id=cid))
        if row is None:
            return []
        found = await secrets_api.secret_names(caller=caller, connection_ids=[row.id])
        return [_secret(r) for r in found[row.id]]

    @strawberry.field(description="The organisation's connections, oldest first.")
    async def connections(
        self, info: Info, first: int | None = None, after: str | None = None,
        warehouse_type: str | None = None, name_contains: str | None = None,
    ) -> Page[Connection]:
        caller = info.context.require_caller()
        page = await connections_api.list_connections(
            caller=caller, first=first, after=after, warehouse_type=warehouse_type,
            name_contains=name_contains)
        return Page.of(page, Connection.of)


@strawberry.type
class ConnectionMutation:
    @strawberry.mutation(description="Create a connection and its delivery pipeline.")
    async def create_connection(
        self, info: Info, input: CreateConnectionInput
    ) -> CreateConnectionResult:
        caller = info.context.require_caller()

        async def call() -> ConnectionSuccess:
            row = await connections_api.create_connection(
                caller=caller, name=input.name, warehouse_type=input.warehouse_type,
                settings=input.settings)
            return ConnectionSuccess(connection=Connection.of(row))

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Set or remove secret values of a connection, encrypted "
                         "at rest (RUNWATCH_SECRETS_KEYS); never returned by any read.")
    async def set_connection_secrets(
        self, info: Info, input: SetConnectionSecretsInput
    ) -> SetConnectionSecretsResult:
        caller = info.context.require_caller()

        async def call() -> ConnectionSecretsSuccess:
            rows = await secrets_api.set_secrets(
                caller=caller, connection_id=parse_id(input.connection_id, "connection"),
                secrets=input.secrets, keys=info.context.settings.secrets_keys)
            return ConnectionSecretsSuccess(secrets=[_secret(r) for r in rows])

        return await as_data(call)  # type: ignore[return-value]

    @strawberry.mutation(description="Change a connection's name, type or settings.")
    async def update_connection(
        self, info: Info, input: UpdateConnectionInput
    ) -> UpdateConnectionResult:
        caller = info.context.require_caller()

        async def call() -> ConnectionSuccess:
            row = await connections_api.update_connection(
                caller=caller, connection_id=parse_id(input.id, "connection"),
                name=_given(input.name), warehouse_type=_given(input.warehouse_type),
                settings=_given(input.settings))
            return ConnectionSuccess(connection=Connection.of(row))

        return await as_data(call)  # type: ignore[return-value]
