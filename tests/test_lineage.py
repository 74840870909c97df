"""Watcher addresses, address types and lineage, through the resolvers (both databases)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from runwatch.models import Address, AddressLineage, AddressType
from runwatch.resolvers.addresses import (
    find_address,
    get_address,
    get_address_type,
    lineage_graph,
    list_address_types,
    list_addresses,
)
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.errors import InvalidInput, NotFound, PermissionDenied
from tests.conftest import Tenant
from tests.watcher_wire import (
    create_lineage,
    get_or_create_address,
    get_or_create_address_type,
    get_or_create_pipeline,
    patch_address,
    patch_pipeline,
)

SQL_LOGGER = "tortoise.db_client"
NOT_STATEMENTS = ("Created connection", "Closed connection")
# a token's last-used stamp (its first use, then at most once a minute): not a screen's cost
LAST_USED = 'UPDATE "service_token" SET "last_used_at"'


def item(name: str, type_name: str = "postgres", group: str = "database", **extra) -> dict:
    return {"name": name, "address_type_name": type_name, "address_type_group_name": group,
            **extra}


@pytest.fixture
def other(other_tenant: Tenant) -> Caller:
    return Caller(organisation_id=other_tenant.org_id, scopes=frozenset({Scope.ADMIN}))


async def pipeline(caller: Caller, name: str = "p") -> int:
    p, _ = await get_or_create_pipeline(
        caller=caller, raw={"name": name, "pipeline_type_name": "t"})
    return p.id


async def draw(caller: Caller, name: str, sources: list[str], targets: list[str]) -> int:
    """A pipeline `name` whose lineage is sources x targets; returns its id."""
    pid = await pipeline(caller, name)
    result = await create_lineage(caller=caller, raw={
        "pipeline_id": pid, "source_addresses": [item(s) for s in sources],
        "target_addresses": [item(t) for t in targets]})
    assert result.applied
    return pid


async def address_id(caller: Caller, name: str) -> int:
    return (await find_address(caller=caller, name=name)).id


def names(graph) -> list[str]:
    return sorted(a.name for a in graph.nodes)


async def edge_names(edges) -> list[tuple[str, str]]:
    by_id = {a.id: a.name for a in await Address.all()}
    return sorted((by_id[e.source_id], by_id[e.target_id]) for e in edges)


# --- address types ---------------------------------------------------------------------------


async def test_address_type_get_or_create(caller: Caller) -> None:
    first, created = await get_or_create_address_type(
        caller=caller, raw={"name": "postgres", "group_name": "database"})
    assert created and first.group_name == "database"
    again, created = await get_or_create_address_type(
        caller=caller, raw={"name": "postgres", "group_name": "files"})
    assert not created and again.id == first.id
    assert (await AddressType.get(id=first.id)).group_name == "database"  # never updated
    await get_or_create_address_type(caller=caller, raw={"name": "mysql", "group_name": "database"})
    assert [t.name for t in await list_address_types(caller=caller)] == ["postgres", "mysql"]
    assert (await get_address_type(caller=caller, type_id=first.id)).name == "postgres"
    with pytest.raises(NotFound, match="address type 999999 not found"):
        await get_address_type(caller=caller, type_id=999999)
    with pytest.raises(NotFound):
        await get_address_type(caller=caller, type_id=2**40)


async def test_address_type_validation(caller: Caller) -> None:
    with pytest.raises(InvalidInput) as info:
        await get_or_create_address_type(caller=caller, raw={})
    assert info.value.fields == {"name": ["field required"], "group_name": ["field required"]}
    with pytest.raises(InvalidInput) as info:
        await get_or_create_address_type(caller=caller, raw={"name": "x" * 151, "group_name": ""})
    assert info.value.fields == {"name": ["String should have at most 150 characters"],
                                 "group_name": ["String should have at least 1 character"]}


async def test_concurrent_creates_make_one_row(caller: Caller) -> None:
    types = await asyncio.gather(*(get_or_create_address_type(
        caller=caller, raw={"name": "pg", "group_name": "database"}) for _ in range(5)))
    assert sum(created for _, created in types) == 1
    assert len({t.id for t, _ in types}) == 1
    addresses = await asyncio.gather(*(get_or_create_address(
        caller=caller, raw=item("db.s.t", "snowflake")) for _ in range(5)))
    assert sum(created for _, created in addresses) == 1
    assert len({a.id for a, _ in addresses}) == 1
    assert await AddressType.filter(name="snowflake").count() == 1


# --- addresses -------------------------------------------------------------------------------


async def test_address_three_part_name_fills_parts_for_database_group(caller: Caller) -> None:
    meta = {"external_dependencies": [{"type": "looker_dashboard", "name": "Sales Dashboard"}]}
    address, created = await get_or_create_address(caller=caller, raw=item(
        "source_db.source_schema.source_table", primary_key="id", address_metadata=meta))
    assert created
    assert (address.database_name, address.schema_name, address.table_name) == (
        "source_db", "source_schema", "source_table")
    stored = await Address.get(id=address.id).prefetch_related("address_type")
    assert stored.address_metadata == meta and stored.primary_key == "id"
    assert (stored.address_type.name, stored.address_type.group_name) == ("postgres", "database")
    assert stored.created_at is not None and stored.updated_at is None


async def test_address_parts_sent_win_over_the_fill(caller: Caller) -> None:
    address, _ = await get_or_create_address(
        caller=caller, raw=item("a.b.c", schema_name="explicit"))
    assert (address.database_name, address.schema_name, address.table_name) == (
        "a", "explicit", "c")


@pytest.mark.parametrize("name,group", [
    ("a.b.c", "files"),  # other group
    ("a.b", "database"),  # two parts
    ("a.b.c.d", "database"),  # four parts
    ("a..c", "database"),  # an empty part
    ("a." + "b" * 60 + ".c", "database"),  # a part longer than its column
])
async def test_address_no_fill(caller: Caller, name: str, group: str) -> None:
    address, created = await get_or_create_address(caller=caller, raw=item(name, "kind", group))
    assert created
    assert (address.database_name, address.schema_name, address.table_name) == (None, None, None)


async def test_fill_follows_the_stored_type_group(caller: Caller) -> None:
    await get_or_create_address_type(caller=caller, raw={"name": "s3", "group_name": "files"})
    address, _ = await get_or_create_address(caller=caller, raw=item("a.b.c", "s3", "database"))
    assert address.database_name is None
    assert (await AddressType.get(name="s3")).group_name == "files"


async def test_found_address_takes_the_changed_fields(caller: Caller) -> None:
    """Issue 11: `POST /address` is the original's upsert: a found address takes the fields
    sent that changed, its new type (created) and `updated_at`."""
    first, created = await get_or_create_address(caller=caller, raw=item("db.s.t"))
    assert created and first.updated_at is None
    again, created = await get_or_create_address(caller=caller, raw=item(
        "db.s.t", "mysql", "database", table_name="other", namespace="mysql://h",
        address_metadata={"x": 1}))
    assert not created and again.id == first.id
    stored = await Address.get(id=first.id)
    assert (stored.table_name, stored.namespace, stored.address_metadata) == (
        "other", "mysql://h", {"x": 1})
    mysql = await AddressType.get(name="mysql")
    assert stored.address_type_id == mysql.id and stored.updated_at is not None
    assert [a.id for a in await list_addresses(caller=caller)] == [first.id]
    assert (await get_address(caller=caller, address_id=first.id)).name == "db.s.t"
    with pytest.raises(NotFound, match="address 424242 not found"):
        await get_address(caller=caller, address_id=424242)


async def test_address_validation_names_fields(caller: Caller) -> None:
    with pytest.raises(InvalidInput) as info:
        await get_or_create_address(caller=caller, raw={})
    assert info.value.fields == {
        "name": ["field required"], "address_type_name": ["field required"],
        "address_type_group_name": ["field required"]}
    with pytest.raises(InvalidInput) as info:
        await get_or_create_address(caller=caller, raw=item(
            "n" * 151, database_name="d" * 51, schema_name=3, table_name="t" * 51,
            primary_key="k" * 51, namespace="x" * 501, address_metadata=[1]))
    # The wire's types first, in pydantic's words (`namespace`, runwatch's, is not one).
    assert set(info.value.fields) == {
        "name", "database_name", "schema_name", "table_name", "primary_key", "address_metadata"}
    assert info.value.fields["table_name"] == ["String should have at most 50 characters"]
    assert info.value.fields["schema_name"] == ["Input should be a valid string"]
    assert info.value.fields["address_metadata"] == ["Input should be a valid dictionary"]
    with pytest.raises(InvalidInput) as info:
        await get_or_create_address(caller=caller, raw=item("n", namespace="x" * 501))
    assert info.value.fields["namespace"] == ["namespace must be a string of 1 to 500 characters"]
    assert await Address.all().count() == 0


async def test_namespace_lookup(caller: Caller) -> None:
    pg, _ = await get_or_create_address(caller=caller, raw=item(
        "db.public.orders", namespace="postgres://db.example:5432"))
    assert pg.namespace == "postgres://db.example:5432"
    assert (await find_address(caller=caller, name="db.public.orders")).id == pg.id
    assert (await find_address(caller=caller, name=" db.public.orders ",
                               namespace="postgres://db.example:5432")).id == pg.id
    with pytest.raises(NotFound):
        await find_address(caller=caller, name="db.public.orders", namespace="mysql://other")
    with pytest.raises(NotFound):
        await find_address(caller=caller, name="db.public.missing")


async def test_patch_address_by_id_and_by_name(caller: Caller) -> None:
    address, _ = await get_or_create_address(caller=caller, raw=item("db.s.t", primary_key="id"))
    mysql, _ = await get_or_create_address_type(
        caller=caller, raw={"name": "mysql", "group_name": "database"})
    patched = await patch_address(caller=caller, raw={
        "id": address.id, "name": "updated_table_name", "database_name": "updated_db",
        "address_type_id": mysql.id, "address_metadata": {"k": "v"}, "namespace": "mysql://h"})
    assert patched.updated_at is not None
    stored = await Address.get(id=address.id)
    assert (stored.name, stored.database_name, stored.schema_name, stored.table_name) == (
        "updated_table_name", "updated_db", "s", "t")
    assert (stored.address_type_id, stored.address_metadata, stored.namespace,
            stored.primary_key) == (mysql.id, {"k": "v"}, "mysql://h", "id")
    assert stored.updated_at is not None

    by_name = await patch_address(caller=caller, raw={
        "name": "updated_table_name", "table_name": "t2", "primary_key": None})
    assert by_name.id == address.id
    stored = await Address.get(id=address.id)
    assert (stored.name, stored.table_name, stored.primary_key) == ("updated_table_name", "t2",
                                                                    None)


async def test_patch_address_errors(caller: Caller, other: Caller) -> None:
    address, _ = await get_or_create_address(caller=caller, raw=item("db.s.t"))
    await get_or_create_address(caller=caller, raw=item("db.s.u"))
    foreign_type, _ = await get_or_create_address_type(
        caller=other, raw={"name": "pg", "group_name": "database"})
    with pytest.raises(InvalidInput) as info:
        await patch_address(caller=caller, raw={"table_name": "x"})
    assert info.value.fields == {"id": ["Either 'id' or 'name' must be provided"]}
    with pytest.raises(InvalidInput) as info:
        await patch_address(caller=caller, raw={"id": "one", "table_name": "x" * 51})
    assert set(info.value.fields) == {"id", "table_name"}
    with pytest.raises(NotFound, match="address type"):
        await patch_address(caller=caller, raw={"id": address.id,
                                                 "address_type_id": foreign_type.id})
    with pytest.raises(InvalidInput) as info:
        await patch_address(caller=caller, raw={"id": address.id, "name": "db.s.u"})
    assert info.value.fields == {"name": ["An address with this name already exists"]}
    with pytest.raises(NotFound):
        await patch_address(caller=caller, raw={"name": "missing"})
    with pytest.raises(NotFound):
        await patch_address(caller=caller, raw={"id": 2**40})
    with pytest.raises(NotFound):  # another organisation's address
        await patch_address(caller=other, raw={"id": address.id, "table_name": "x"})
    stored = await Address.get(id=address.id)
    assert (stored.name, stored.table_name, stored.updated_at) == ("db.s.t", "t", None)


async def test_scopes(tenant: Tenant) -> None:
    reader = Caller(organisation_id=tenant.org_id, scopes=frozenset({Scope.READ}))
    reporter = Caller(organisation_id=tenant.org_id, scopes=frozenset({Scope.REPORT}))
    with pytest.raises(PermissionDenied):
        await get_or_create_address(caller=reader, raw=item("a.b.c"))
    with pytest.raises(PermissionDenied):
        await create_lineage(caller=reader, raw={})
    address, created = await get_or_create_address(caller=reporter, raw=item("a.b.c"))
    assert created
    assert (await get_address(caller=reader, address_id=address.id)).id == address.id


# --- lineage ---------------------------------------------------------------------------------


async def test_lineage_gated_by_load_lineage(caller: Caller) -> None:
    pid = await pipeline(caller)
    await patch_pipeline(caller=caller, raw={"id": pid, "load_lineage": False})
    result = await create_lineage(caller=caller, raw={
        "pipeline_id": pid, "source_addresses": [item("a.b.c")],
        "target_addresses": [item("d.e.f")]})
    assert (result.pipeline_id, result.created, result.applied) == (pid, 0, False)
    assert result.message == (
        f"pipeline {pid} does not have load_lineage=true. no lineage relationships created.")
    assert await Address.all().count() == 0 and await AddressLineage.all().count() == 0

    await patch_pipeline(caller=caller, raw={"id": pid, "load_lineage": True})
    result = await create_lineage(caller=caller, raw={
        "pipeline_id": pid, "source_addresses": [item("a.b.c")],
        "target_addresses": [item("d.e.f")]})
    assert (result.pipeline_id, result.created, result.applied) == (pid, 1, True)
    assert result.message == f"lineage relationships created for pipeline {pid}"
    source = await Address.get(name="a.b.c")
    assert (source.database_name, source.schema_name, source.table_name) == ("a", "b", "c")


async def test_lineage_every_source_target_pair(caller: Caller) -> None:
    pid = await pipeline(caller)
    result = await create_lineage(caller=caller, raw={
        "pipeline_id": pid,
        "source_addresses": [item("s.x.one"), item("s.x.two"), item("s.x.one")],
        "target_addresses": [item("t.y.a", "s3", "files"), item("t.y.b"), item("t.y.c")]})
    assert result.created == 6
    edges = await AddressLineage.filter(pipeline_id=pid)
    assert len(edges) == 6 and all(e.organisation_id == caller.organisation_id for e in edges)
    assert await edge_names(edges) == sorted(
        (s, t) for s in ("s.x.one", "s.x.two") for t in ("t.y.a", "t.y.b", "t.y.c"))
    assert await Address.all().count() == 5
    files = await Address.get(name="t.y.a").prefetch_related("address_type")
    assert files.address_type.group_name == "files" and files.database_name is None


async def test_lineage_replaces_the_pipelines_edges(caller: Caller) -> None:
    pid = await pipeline(caller, "p1")
    keep = await draw(caller, "p2", ["a.b.c"], ["x.y.z"])
    await create_lineage(caller=caller, raw={
        "pipeline_id": pid, "source_addresses": [item("a.b.c"), item("a.b.d")],
        "target_addresses": [item("x.y.z")]})
    result = await create_lineage(caller=caller, raw={
        "pipeline_id": pid, "source_addresses": [item("a.b.d")],
        "target_addresses": [item("x.y.w")]})
    assert result.created == 1
    assert await edge_names(await AddressLineage.filter(pipeline_id=pid)) == [("a.b.d", "x.y.w")]
    assert await edge_names(await AddressLineage.filter(pipeline_id=keep)) == [("a.b.c", "x.y.z")]
    again = await create_lineage(caller=caller, raw={
        "pipeline_id": pid, "source_addresses": [], "target_addresses": [item("x.y.w")]})
    assert again.applied and again.created == 0
    assert not await AddressLineage.filter(pipeline_id=pid).exists()


async def test_lineage_items_are_normalised_and_keep_extra_fields(caller: Caller) -> None:
    pid = await pipeline(caller)
    await get_or_create_address(caller=caller, raw=item("src.public.orders"))
    result = await create_lineage(caller=caller, raw={
        "pipeline_id": pid,
        "source_addresses": [item("  Src.Public.ORDERS ", " Postgres ", "DATABASE")],
        "target_addresses": [item("WH.Mart.Orders", "Snowflake", "Database",
                                  namespace="snowflake://acct", primary_key="ID",
                                  address_metadata={"Owner": "Team A"})]})
    assert result.created == 1
    assert await Address.all().count() == 2
    target = await Address.get(name="wh.mart.orders").prefetch_related("address_type")
    assert (target.namespace, target.primary_key, target.address_metadata) == (
        "snowflake://acct", "id", {"Owner": "Team A"})
    assert (target.database_name, target.table_name) == ("wh", "orders")
    assert target.address_type.name == "snowflake"


async def test_lineage_validation_names_fields(caller: Caller, other: Caller) -> None:
    with pytest.raises(InvalidInput) as info:
        await create_lineage(caller=caller, raw={})
    assert info.value.fields == {"pipeline_id": ["field required"],
                                 "source_addresses": ["field required"],
                                 "target_addresses": ["field required"]}
    with pytest.raises(InvalidInput) as info:
        await create_lineage(caller=caller, raw={
            "pipeline_id": "one", "source_addresses": [{"name": "a"}, 5],
            "target_addresses": {"name": "b"}})
    # A value of the wrong type: the wire's refusals, with the missing fields beside them.
    assert info.value.fields == {
        "pipeline_id": ["Input should be a valid integer, unable to parse string as an integer"],
        "source_addresses.0.address_type_name": ["Field required"],
        "source_addresses.0.address_type_group_name": ["Field required"]}
    with pytest.raises(InvalidInput) as info:
        await create_lineage(caller=caller, raw={
            "pipeline_id": "1", "source_addresses": [{"name": "a"}, 5],
            "target_addresses": {"name": "b"}})
    assert info.value.fields == {
        "source_addresses.0.address_type_name": ["field required"],
        "source_addresses.0.address_type_group_name": ["field required"],
        "source_addresses.1": ["an address must be an object"],
        "target_addresses": ["target_addresses must be a list of addresses"]}
    with pytest.raises(NotFound, match="pipeline 999999 not found"):
        await create_lineage(caller=caller, raw={
            "pipeline_id": 999999, "source_addresses": [], "target_addresses": []})
    with pytest.raises(InvalidInput) as info:
        await create_lineage(caller=caller, raw={
            "pipeline_id": 1, "source_addresses": [item(f"s{i}") for i in range(101)],
            "target_addresses": [item(f"t{i}") for i in range(100)]})
    assert list(info.value.fields) == ["target_addresses"]
    foreign = await pipeline(other, "theirs")
    with pytest.raises(NotFound, match=f"pipeline {foreign} not found"):
        await create_lineage(caller=caller, raw={
            "pipeline_id": foreign, "source_addresses": [item("a.b.c")],
            "target_addresses": [item("d.e.f")]})
    assert await Address.all().count() == 0


async def test_concurrent_lineage_shares_new_addresses(caller: Caller) -> None:
    """Pipelines drawing lineage at once over the same new addresses and type (in different
    orders): every call applies, each address and type exists once."""
    pids = [await pipeline(caller, f"p{i}") for i in range(6)]
    names_ = [f"db.s.t{i}" for i in range(6)]
    results = await asyncio.gather(*(create_lineage(caller=caller, raw={
        "pipeline_id": pid,
        "source_addresses": [item(n, "fresh") for n in (names_[:3] if i % 2 else names_[2::-1])],
        "target_addresses": [item(n, "fresh") for n in names_[3:]]})
        for i, pid in enumerate(pids)))
    assert [r.created for r in results] == [9] * 6
    assert await Address.all().count() == 6
    assert await AddressType.filter(name="fresh").count() == 1
    assert await AddressLineage.all().count() == 54


# --- graph -----------------------------------------------------------------------------------


async def chain(caller: Caller) -> None:
    """a -> b -> c -> d, each edge drawn by its own pipeline."""
    for i, (s, t) in enumerate([("a", "b"), ("b", "c"), ("c", "d")]):
        await draw(caller, f"p{i}", [s], [t])


async def test_graph_chain_depths(caller: Caller) -> None:
    await chain(caller)
    a, b, d = [await address_id(caller, n) for n in "abd"]
    down1 = await lineage_graph(caller=caller, address_id=a, direction="downstream", depth=1)
    assert down1.root.id == a and down1.nodes[0].id == a
    assert names(down1) == ["a", "b"] and await edge_names(down1.edges) == [("a", "b")]
    down2 = await lineage_graph(caller=caller, address_id=a, direction="downstream", depth=2)
    assert names(down2) == ["a", "b", "c"]
    down3 = await lineage_graph(caller=caller, address_id=a, direction="downstream")
    assert names(down3) == ["a", "b", "c", "d"] and len(down3.edges) == 3
    assert names(await lineage_graph(caller=caller, address_id=a, direction="upstream")) == ["a"]
    up = await lineage_graph(caller=caller, address_id=d, direction="upstream", depth=2)
    assert names(up) == ["b", "c", "d"]
    assert await edge_names(up.edges) == [("b", "c"), ("c", "d")]
    both = await lineage_graph(caller=caller, address_id=b, direction="both", depth=1)
    assert names(both) == ["a", "b", "c"]
    assert await edge_names(both.edges) == [("a", "b"), ("b", "c")]
    both2 = await lineage_graph(caller=caller, address_id=b, depth=2)
    assert names(both2) == ["a", "b", "c", "d"] and len(both2.edges) == 3


async def test_graph_both_does_not_walk_sideways(caller: Caller) -> None:
    """Upstream of b then downstream again (b's siblings) is not b's lineage."""
    await draw(caller, "p", ["a"], ["b", "sibling"])
    b = await address_id(caller, "b")
    graph = await lineage_graph(caller=caller, address_id=b, direction="both", depth=5)
    assert names(graph) == ["a", "b"]
    assert await edge_names(graph.edges) == [("a", "b")]


async def test_graph_diamond(caller: Caller) -> None:
    await draw(caller, "p1", ["a"], ["b", "c"])
    await draw(caller, "p2", ["b", "c"], ["d"])
    a, d = await address_id(caller, "a"), await address_id(caller, "d")
    down = await lineage_graph(caller=caller, address_id=a, direction="downstream", depth=5)
    assert names(down) == ["a", "b", "c", "d"]
    assert await edge_names(down.edges) == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    assert len({n.id for n in down.nodes}) == len(down.nodes)
    up = await lineage_graph(caller=caller, address_id=d, direction="upstream", depth=1)
    assert names(up) == ["b", "c", "d"]


async def test_graph_cycle_terminates_each_edge_once(caller: Caller) -> None:
    await draw(caller, "p1", ["a"], ["b"])
    await draw(caller, "p2", ["b"], ["a"])
    a = await address_id(caller, "a")
    for direction in ("downstream", "upstream", "both"):
        graph = await lineage_graph(caller=caller, address_id=a, direction=direction, depth=20)
        assert names(graph) == ["a", "b"]
        assert await edge_names(graph.edges) == [("a", "b"), ("b", "a")]
        assert len({e.id for e in graph.edges}) == 2


async def test_graph_one_query_per_hop(caller: Caller, caplog) -> None:
    await draw(caller, "fan", ["root"], [f"mid{i}" for i in range(20)])
    await draw(caller, "fan2", [f"mid{i}" for i in range(20)], [f"leaf{i}" for i in range(5)])
    root = await address_id(caller, "root")
    with caplog.at_level(logging.DEBUG, logger=SQL_LOGGER):
        start = len(caplog.records)
        graph = await lineage_graph(caller=caller, address_id=root, direction="both", depth=4)
        records = caplog.records[start:]
    statements = [r for r in records if r.name == SQL_LOGGER and r.levelno == logging.DEBUG
                  and not r.getMessage().startswith(NOT_STATEMENTS)
                  and LAST_USED not in r.getMessage()]
    assert len(graph.nodes) == 26 and len(graph.edges) == 120
    # The root, two hops that find something (the third finds nothing and ends the walk),
    # and the nodes.
    assert len(statements) == 5, [r.getMessage() for r in statements]


async def test_graph_wide_frontiers_are_split_without_changing_the_answer(
    caller: Caller, monkeypatch
) -> None:
    import runwatch.resolvers.addresses as addresses

    await draw(caller, "fan", ["root"], [f"mid{i}" for i in range(7)])
    await draw(caller, "fan2", [f"mid{i}" for i in range(7)], ["leaf", "root"])
    await draw(caller, "feed", ["up1", "up2"], ["root"])
    root = await address_id(caller, "root")
    whole = await lineage_graph(caller=caller, address_id=root, depth=5)
    monkeypatch.setattr(addresses, "ID_CHUNK", 3)
    split = await lineage_graph(caller=caller, address_id=root, depth=5)
    assert [n.id for n in split.nodes] == [n.id for n in whole.nodes]
    assert [e.id for e in split.edges] == [e.id for e in whole.edges]
    assert names(whole) == sorted(["root", "leaf", "up1", "up2", *(f"mid{i}" for i in range(7))])
    assert len(whole.edges) == 7 + 14 + 2


async def test_graph_validation(caller: Caller) -> None:
    a, _ = await get_or_create_address(caller=caller, raw=item("a"))
    for depth in (0, 21, True, "3"):
        with pytest.raises(InvalidInput) as info:
            await lineage_graph(caller=caller, address_id=a.id, depth=depth)
        assert info.value.fields == {"depth": ["depth must be an integer from 1 to 20"]}
    with pytest.raises(InvalidInput) as info:
        await lineage_graph(caller=caller, address_id=a.id, direction="sideways")
    assert list(info.value.fields) == ["direction"]
    with pytest.raises(NotFound):
        await lineage_graph(caller=caller, address_id=999999)
    single = await lineage_graph(caller=caller, address_id=a.id, depth=20)
    assert [n.id for n in single.nodes] == [a.id] and single.edges == []


# --- tenancy ---------------------------------------------------------------------------------


async def test_tenancy(caller: Caller, other: Caller) -> None:
    await chain(caller)
    ours = await find_address(caller=caller, name="b")
    mine, created = await get_or_create_address(caller=caller, raw=item("db.s.t"))
    theirs, created_too = await get_or_create_address(caller=other, raw=item("db.s.t"))
    assert created and created_too and mine.id != theirs.id
    assert mine.address_type_id != theirs.address_type_id
    await draw(other, "p0", ["db.s.t"], ["b"])  # the other org has its own `b`

    assert [a.name for a in await list_addresses(caller=other)] == ["db.s.t", "b"]
    assert [t.name for t in await list_address_types(caller=other)] == ["postgres"]
    with pytest.raises(NotFound):
        await get_address(caller=other, address_id=ours.id)
    with pytest.raises(NotFound):
        await get_address_type(caller=other, type_id=mine.address_type_id)
    with pytest.raises(NotFound):
        await lineage_graph(caller=other, address_id=ours.id)
    with pytest.raises(NotFound):
        await find_address(caller=other, name="a")

    graph = await lineage_graph(caller=caller, address_id=ours.id, depth=5)
    assert names(graph) == ["a", "b", "c", "d"]
    assert all(n.organisation_id == caller.organisation_id for n in graph.nodes)
    their_b = await find_address(caller=other, name="b")
    assert their_b.id != ours.id
    theirs_graph = await lineage_graph(caller=other, address_id=their_b.id, depth=5)
    assert names(theirs_graph) == ["b", "db.s.t"] and len(theirs_graph.edges) == 1
