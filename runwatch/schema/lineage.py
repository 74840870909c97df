"""Lineage: dataset addresses, their types, and the graph pipelines draw between them."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from strawberry.scalars import JSON

from runwatch.models import Address as AddressModel
from runwatch.models import AddressLineage as AddressLineageModel
from runwatch.models import AddressType as AddressTypeModel
from runwatch.resolvers import addresses as addresses_api
from runwatch.resolvers import openlineage as openlineage_api
from runwatch.schema.context import Info
from runwatch.schema.errors import or_none, parse_id
from runwatch.schema.pipeline import Pipeline


@strawberry.type(description="A kind of dataset address and its group (e.g. postgres, "
                 "database).")
class AddressType:
    id: strawberry.ID
    name: str
    group_name: str
    created_at: datetime

    @staticmethod
    def of(m: AddressTypeModel) -> AddressType:
        return AddressType(id=strawberry.ID(str(m.id)), name=m.name, group_name=m.group_name,
                           created_at=m.created_at)


@strawberry.type(description="A dataset. `name` is its Watcher name; `namespace` + `name` "
                 "its OpenLineage identity.")
class Address:
    id: strawberry.ID
    name: str
    namespace: str | None
    database_name: str | None
    schema_name: str | None
    table_name: str | None
    primary_key: str | None
    address_metadata: JSON | None
    created_at: datetime
    updated_at: datetime | None
    address_type_id: strawberry.Private[int]

    @staticmethod
    def of(m: AddressModel) -> Address:
        return Address(
            id=strawberry.ID(str(m.id)), name=m.name, namespace=m.namespace,
            database_name=m.database_name, schema_name=m.schema_name, table_name=m.table_name,
            primary_key=m.primary_key, address_metadata=m.address_metadata,
            created_at=m.created_at, updated_at=m.updated_at,
            address_type_id=m.address_type_id)  # type: ignore[attr-defined]

    @strawberry.field
    async def address_type(self, info: Info) -> AddressType | None:
        info.context.require_caller()
        row = await info.context.loaders.address_type.load(self.address_type_id)
        return AddressType.of(row) if row else None


@strawberry.type(description="Data flows from `source` to `target`, drawn by `pipeline`.")
class LineageEdge:
    source_id: strawberry.ID
    target_id: strawberry.ID
    pipeline_id: strawberry.Private[int]

    @staticmethod
    def of(m: AddressLineageModel) -> LineageEdge:
        return LineageEdge(source_id=strawberry.ID(str(m.source_id)),  # type: ignore[attr-defined]
                           target_id=strawberry.ID(str(m.target_id)),  # type: ignore[attr-defined]
                           pipeline_id=m.pipeline_id)  # type: ignore[attr-defined]

    @strawberry.field
    async def pipeline(self, info: Info) -> Pipeline | None:
        info.context.require_caller()
        row = await info.context.loaders.pipeline.load(self.pipeline_id)
        return Pipeline.of(row) if row else None


@strawberry.type(description="The dataset graph around one address, to a depth.")
class LineageGraph:
    root: Address
    nodes: list[Address]
    edges: list[LineageEdge]


@strawberry.type(description="An OpenLineage edge: `origin` -> `destination` (node ids).")
class LineageNodeEdge:
    origin: str
    destination: str


@strawberry.type(description="A job or dataset of the OpenLineage graph (Marquez's shape: `id` "
                 "is `job:<namespace>:<name>` or `dataset:<namespace>:<name>`).")
class LineageNode:
    id: str
    type: str
    data: JSON
    in_edges: list[LineageNodeEdge]
    out_edges: list[LineageNodeEdge]


@strawberry.enum
class LineageDirection(Enum):
    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"
    BOTH = "both"


@strawberry.type
class LineageQuery:
    @strawberry.field(description="The organisation's dataset addresses.")
    async def addresses(self, info: Info) -> list[Address]:
        caller = info.context.require_caller()
        return [Address.of(a) for a in await addresses_api.list_addresses(caller=caller)]

    @strawberry.field(description="One address by id, or by name (and OpenLineage namespace).")
    async def address(
        self, info: Info, id: strawberry.ID | None = None, name: str | None = None,
        namespace: str | None = None,
    ) -> Address | None:
        caller = info.context.require_caller()
        if id is not None:
            row = await or_none(lambda: addresses_api.get_address(
                caller=caller, address_id=parse_id(id, "address")))
        elif name is not None:
            # Both are stored lower-cased (the Watcher's wire convention), so both are matched so.
            row = await or_none(lambda: addresses_api.find_address(
                caller=caller, name=name.strip().lower(),
                namespace=None if namespace is None else namespace.strip().lower()))
        else:
            return None
        return Address.of(row) if row else None

    @strawberry.field(description="The dataset graph upstream and/or downstream of an address, "
                      "to `depth` hops (1-20), cycle-safe.")
    async def lineage(
        self, info: Info, address_id: strawberry.ID,
        direction: LineageDirection = LineageDirection.BOTH, depth: int = 3,
    ) -> LineageGraph | None:
        caller = info.context.require_caller()
        graph = await or_none(lambda: addresses_api.lineage_graph(
            caller=caller, address_id=parse_id(address_id, "address"),
            direction=direction.value, depth=depth))
        if graph is None:
            return None
        return LineageGraph(root=Address.of(graph.root),
                            nodes=[Address.of(a) for a in graph.nodes],
                            edges=[LineageEdge.of(e) for e in graph.edges])

    @strawberry.field(description="The jobs and datasets around an OpenLineage node "
                      "(`job:<namespace>:<name>` or `dataset:<namespace>:<name>`), to `depth` "
                      "hops (0-20); the same data as `GET /api/v1/lineage`. Null: not found.")
    async def lineage_graph(self, info: Info, node_id: str,
                            depth: int = 20) -> list[LineageNode] | None:
        caller = info.context.require_caller()
        nodes = await or_none(lambda: openlineage_api.lineage_graph(
            caller=caller, node_id=node_id, depth=depth))
        if nodes is None:
            return None
        return [LineageNode(
            id=n.id, type=n.type, data=n.data,
            in_edges=[LineageNodeEdge(**e) for e in n.in_edges],
            out_edges=[LineageNodeEdge(**e) for e in n.out_edges]) for n in nodes]
