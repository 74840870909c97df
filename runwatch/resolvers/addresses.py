"""Watcher addresses (datasets), their types, and the lineage graph that pipelines draw between
them: get-or-create by name, the three-part name fill for the `database` group, lineage
replacement gated by the pipeline's `load_lineage`, and a bounded, cycle-safe graph walk.

Choices where the contract is silent (recorded in the project docs):
- `POST /address` looks an address up by name first; a found address takes the fields sent
  that differ from the stored ones (the type named is got or created when it is not the
  address's own) and `updated_at`, as the original's upsert does. A lineage's addresses that
  exist are used as they are (the original's lineage does not update them).
- The three-part fill (`db.schema.table` -> database/schema/table names, each only when not
  sent) applies when the address's stored type has the group `database`, and only when the
  three parts are non-empty and each fits the 50-character columns; otherwise nothing is filled.
- Lineage names its addresses as `AddressInput`s, like `POST /address` (the Watcher shim
  trims and lower-cases their strings as it does the top-level ones). An address named twice
  in one request is taken from its first occurrence. At most 1000 addresses per side and
  10000 edges per call.
- Lineage edges are rows per pipeline: the graph deduplicates them by row, so two pipelines
  drawing the same source -> target appear as two edges (each with its pipeline).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from runwatch.models import INT32_MAX, Address, AddressLineage, AddressType, Pipeline
from runwatch.resolvers import inputs
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.errors import NameTaken, NotFound
from runwatch.resolvers.run_input import UNSET, Errors
from runwatch.resolvers.watcher_pipelines import (
    integer,
    metadata,
    patch_target,
    require_writer,
    text,
)

DATABASE_GROUP = "database"
PARTS = ("database_name", "schema_name", "table_name")
# Optional text fields of an address and their limits.
OPTIONAL_TEXT = {"database_name": 50, "schema_name": 50, "table_name": 50, "primary_key": 50,
                 "namespace": 500}
MAX_ADDRESSES_PER_SIDE = 1000
MAX_EDGES = 10_000
DIRECTIONS = ("upstream", "downstream", "both")
MAX_DEPTH = 20
# Ids per statement in the graph walk (well under both databases' parameter limits).
ID_CHUNK = 5000
# Attempts of a get-or-create transaction that lost a race to a concurrent create.
ATTEMPTS = 3
T = TypeVar("T")


def _refused(pipeline_id: int) -> str:
    return (f"pipeline {pipeline_id} does not have load_lineage=true. "
            "no lineage relationships created.")


def _applied(pipeline_id: int) -> str:
    return f"lineage relationships created for pipeline {pipeline_id}"


def _storable(object_id: Any) -> bool:
    """Whether an id can exist at all (an out-of-range one would overflow the parameter)."""
    return isinstance(object_id, int) and not isinstance(object_id, bool) \
        and 0 < object_id <= INT32_MAX


async def _retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run a transaction again when a concurrent one created a row it was creating (an
    address or a type of the same name): the rolled-back attempt then finds that row. A
    conflict is only reported once the other transaction committed, so a retry sees it."""
    for _ in range(ATTEMPTS - 1):
        try:
            return await attempt()
        except IntegrityError:
            continue
    return await attempt()


# --- inputs ----------------------------------------------------------------------------------
# Values are as sent; the resolvers check them, whatever the surface.


@dataclass(frozen=True, kw_only=True)
class AddressTypeInput:
    """`POST /address_type`: a type by name, and its group (both required)."""

    name: str | None = None
    group_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class AddressTypeChange:
    """`PATCH /address_type`: the type `id`, or else the one named `name`; `group_name` (and,
    found by `id`, `name`) change when given (None: not given)."""

    id: int | None = None
    name: str | None = None
    group_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class AddressInput:
    """An address by name, with the type it is created with when missing (`POST /address`,
    and each address a lineage names). The optional fields (None: not given) are set on
    create, and by `POST /address` on a found address when they differ."""

    name: str | None = None
    address_type_name: str | None = None
    address_type_group_name: str | None = None
    database_name: str | None = None
    schema_name: str | None = None
    table_name: str | None = None
    primary_key: str | None = None
    namespace: str | None = None
    address_metadata: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class AddressChange:
    """`PATCH /address`: the address `id`, or else the one named `name`; only the fields
    given change (`UNSET`: left as it is; None clears a nullable field). `address_type_id`
    changes only when not None. `Any`: the type named, or `UNSET`."""

    id: int | None = None
    name: str | Any | None = UNSET
    address_type_id: int | None = None
    database_name: str | Any | None = UNSET
    schema_name: str | Any | None = UNSET
    table_name: str | Any | None = UNSET
    primary_key: str | Any | None = UNSET
    namespace: str | Any | None = UNSET
    address_metadata: dict[str, Any] | Any | None = UNSET


@dataclass(frozen=True, kw_only=True)
class LineageInput:
    """`POST /address_lineage`: the pipeline's edges become every source x target pair.
    A side is a list of `AddressInput`s (None: not given; anything else as sent is refused
    by the resolver, as is an item that is not an `AddressInput`)."""

    pipeline_id: int | None = None
    sources: list[AddressInput] | Any | None = None
    targets: list[AddressInput] | Any | None = None


# --- address types ---------------------------------------------------------------------------


async def get_or_create_address_type(
    *, caller: Caller, given: AddressTypeInput, conn: Any = None
) -> tuple[AddressType, bool]:
    """`POST /address_type`: found by name (never updated) or created."""
    require_writer(caller)
    errors = Errors()
    name = text(given.name, "name", errors, required=True)
    group_name = text(given.group_name, "group_name", errors, required=True)
    errors.raise_any()
    found = await AddressType.filter(
        organisation_id=caller.organisation_id, name=name).using_db(conn).first()
    if found is not None:
        return found, False
    if conn is not None:  # inside the caller's transaction: it handles a concurrent create
        return await AddressType.create(
            organisation_id=caller.organisation_id, name=name, group_name=group_name,
            using_db=conn), True
    try:
        return await AddressType.create(
            organisation_id=caller.organisation_id, name=name, group_name=group_name), True
    except IntegrityError:  # created meanwhile by a concurrent call
        return await AddressType.get(organisation_id=caller.organisation_id, name=name), False


async def patch_address_type(*, caller: Caller, change: AddressTypeChange) -> AddressType:
    """`PATCH /address_type`: the row by `id`, or else by `name`; only the fields sent change.
    The addresses of the type keep their columns (the three-part fill is done on writes of
    an address)."""
    require_writer(caller)
    errors = Errors()
    lookup_name, changes = patch_target(  # None: not given, here
        change.id, UNSET if change.name is None else change.name, errors)
    if change.group_name is not None:
        changes["group_name"] = text(change.group_name, "group_name", errors, required=True)
    errors.raise_any()
    async with in_transaction() as conn:
        query = AddressType.filter(organisation_id=caller.organisation_id)
        if lookup_name is None:
            query = query.filter(id=change.id) if _storable(change.id) else None
        else:
            query = query.filter(name=lookup_name)
        row = await query.select_for_update().using_db(conn).first() \
            if query is not None else None
        if row is None:
            raise NotFound("address type", change.id if lookup_name is None else lookup_name)
        if changes:
            changes["updated_at"] = utcnow()
            try:
                await AddressType.filter(id=row.id).using_db(conn).update(**changes)
            except IntegrityError:
                raise NameTaken("address type") from None
            for key, value in changes.items():
                setattr(row, key, value)
    return row


async def list_address_types(*, caller: Caller) -> list[AddressType]:
    caller.require_scope(Scope.READ)
    return await AddressType.filter(organisation_id=caller.organisation_id).order_by("id")


async def get_address_type(*, caller: Caller, type_id: int) -> AddressType:
    caller.require_scope(Scope.READ)
    row = None
    if _storable(type_id):
        row = await AddressType.filter(
            id=type_id, organisation_id=caller.organisation_id).first()
    if row is None:
        raise NotFound("address type", type_id)
    return row


# --- addresses -------------------------------------------------------------------------------


def _address_input(given: AddressInput, errors: Errors, prefix: str = "") -> dict[str, Any]:
    """The validated fields of an address; optional fields only when given (not None)."""
    values: dict[str, Any] = {
        "name": text(given.name, f"{prefix}name", errors, required=True),
        "address_type_name": text(given.address_type_name, f"{prefix}address_type_name",
                                  errors, required=True),
        "address_type_group_name": text(given.address_type_group_name,
                                        f"{prefix}address_type_group_name", errors,
                                        required=True),
    }
    for key, limit in OPTIONAL_TEXT.items():
        if getattr(given, key) is not None:
            values[key] = text(getattr(given, key), f"{prefix}{key}", errors, limit=limit)
    if given.address_metadata is not None:
        values["address_metadata"] = metadata(given.address_metadata,
                                              f"{prefix}address_metadata", errors)
    return values


def _columns(values: dict[str, Any], group_name: str) -> dict[str, Any]:
    """The columns of a new address: the fields sent, plus the three-part fill."""
    columns = {k: values[k] for k in (*OPTIONAL_TEXT, "address_metadata") if k in values}
    if group_name.strip().lower() == DATABASE_GROUP:
        parts = [part.strip() for part in values["name"].split(".")]
        if len(parts) == len(PARTS) and all(0 < len(p) <= OPTIONAL_TEXT[k]
                                            for k, p in zip(PARTS, parts, strict=True)):
            for key, part in zip(PARTS, parts, strict=True):
                columns.setdefault(key, part)
    return columns


async def _get_or_create_address(
    caller: Caller, values: dict[str, Any], conn: Any
) -> tuple[Address, bool]:
    found = await Address.filter(
        organisation_id=caller.organisation_id, name=values["name"]
    ).select_for_update().using_db(conn).first()
    if found is not None:
        return await _update_address(caller, found, values, conn), False
    address_type, _ = await get_or_create_address_type(
        caller=caller, conn=conn, given=AddressTypeInput(
            name=values["address_type_name"], group_name=values["address_type_group_name"]))
    created = await Address.create(
        organisation_id=caller.organisation_id, name=values["name"],
        address_type_id=address_type.id, **_columns(values, address_type.group_name),
        using_db=conn)
    return created, True


async def _update_address(
    caller: Caller, address: Address, values: dict[str, Any], conn: Any,
    address_type: AddressType | None = None,
) -> Address:
    """A found address takes the fields sent that differ from the stored ones (its type: the
    one named, got or created), and `updated_at` when anything changed: `POST /address` and
    each address a lineage names alike. `address_type`: its current type, when the caller
    has read it already."""
    if address_type is None:
        type_id = address.address_type_id  # type: ignore[attr-defined]
        address_type = await AddressType.get(id=type_id).using_db(conn)
    if address_type.name != values["address_type_name"]:
        address_type, _ = await get_or_create_address_type(
            caller=caller, conn=conn, given=AddressTypeInput(
                name=values["address_type_name"],
                group_name=values["address_type_group_name"]))
    wanted = {"address_type_id": address_type.id,
              **_columns(values, address_type.group_name)}
    changes = {k: v for k, v in wanted.items() if getattr(address, k) != v}
    if changes:
        changes["updated_at"] = utcnow()
        await Address.filter(id=address.id).using_db(conn).update(**changes)
        for key, value in changes.items():
            setattr(address, key, value)
    return address


async def get_or_create_address(
    *, caller: Caller, given: AddressInput, conn: Any = None
) -> tuple[Address, bool]:
    """`POST /address`: found by name (200; the fields sent that changed are updated) or
    created (201), with its type when that is missing."""
    require_writer(caller)
    errors = Errors()
    values = _address_input(given, errors)
    errors.raise_any()
    if conn is not None:  # inside the caller's transaction: it handles a concurrent create
        return await _get_or_create_address(caller, values, conn)

    async def attempt() -> tuple[Address, bool]:
        async with in_transaction() as tx:
            return await _get_or_create_address(caller, values, tx)

    return await _retrying(attempt)


async def list_addresses(*, caller: Caller) -> list[Address]:
    caller.require_scope(Scope.READ)
    return await Address.filter(organisation_id=caller.organisation_id).order_by("id")


async def get_address(*, caller: Caller, address_id: int) -> Address:
    caller.require_scope(Scope.READ)
    row = None
    if _storable(address_id):
        row = await Address.filter(id=address_id, organisation_id=caller.organisation_id).first()
    if row is None:
        raise NotFound("address", address_id)
    return row


async def find_address(*, caller: Caller, name: str, namespace: str | None = None) -> Address:
    """An address by its name, and its namespace when one is given (an OpenLineage dataset is
    `namespace` + `name`). Matches the stored values exactly, after trimming."""
    caller.require_scope(Scope.READ)
    if inputs.has_nul(name) or (namespace is not None and inputs.has_nul(namespace)):
        # no stored name holds NUL (and PostgreSQL cannot even compare one)
        raise NotFound("address", name if namespace is None else f"{namespace}/{name}")
    query = Address.filter(organisation_id=caller.organisation_id, name=name.strip())
    if namespace is not None:
        query = query.filter(namespace=namespace.strip())
    row = await query.first()
    if row is None:
        raise NotFound("address", name if namespace is None else f"{namespace}/{name}")
    return row


async def patch_address(*, caller: Caller, change: AddressChange) -> Address:
    """`PATCH /address`: the row by `id`, or else by `name`; only the fields sent change (a
    nullable field sent as null is cleared)."""
    require_writer(caller)
    errors = Errors()
    address_id = change.id
    lookup_name, changes = patch_target(address_id, change.name, errors)
    for key, limit in OPTIONAL_TEXT.items():
        if getattr(change, key) is not UNSET:
            changes[key] = text(getattr(change, key), key, errors, limit=limit)
    if change.address_metadata is not UNSET:
        changes["address_metadata"] = metadata(change.address_metadata, "address_metadata",
                                               errors)
    if change.address_type_id is not None:
        type_id = integer(change.address_type_id, "address_type_id", errors)
        if type_id is not None:
            changes["address_type_id"] = type_id
    errors.raise_any()
    key = address_id if address_id is not None else lookup_name
    async with in_transaction() as conn:
        query = Address.filter(organisation_id=caller.organisation_id)
        if lookup_name is None:
            query = query.filter(id=address_id) if _storable(address_id) else None
        else:
            query = query.filter(name=lookup_name)
        address = None
        if query is not None:
            address = await query.select_for_update().using_db(conn).first()
        if address is None:
            raise NotFound("address", key)
        if "address_type_id" in changes and not (
            _storable(changes["address_type_id"]) and await AddressType.filter(
                id=changes["address_type_id"], organisation_id=caller.organisation_id
            ).using_db(conn).exists()
        ):
            raise NotFound("address type", changes["address_type_id"])
        if changes:
            changes["updated_at"] = utcnow()
            try:
                await Address.filter(id=address.id).using_db(conn).update(**changes)
            except IntegrityError:
                raise NameTaken("address") from None
            for field, value in changes.items():
                setattr(address, field, value)
    return address


# --- lineage ---------------------------------------------------------------------------------


@dataclass
class LineageResult:
    pipeline_id: int
    created: int
    message: str
    applied: bool


def _address_list(value: Any, key: str, errors: Errors) -> list[dict[str, Any]]:
    """The validated addresses of one side (`key`: its name in errors)."""
    if value is None:
        errors.add(key, "field required")
        return []
    if not isinstance(value, list):
        errors.add(key, f"{key} must be a list of addresses")
        return []
    if len(value) > MAX_ADDRESSES_PER_SIDE:
        errors.add(key, f"{key} must hold at most {MAX_ADDRESSES_PER_SIDE} addresses")
        return []
    items = []
    for index, item in enumerate(value):
        if not isinstance(item, AddressInput):
            errors.add(f"{key}.{index}", "an address must be an object")
            continue
        items.append(_address_input(item, errors, prefix=f"{key}.{index}."))
    return items


async def _ensure_addresses(
    caller: Caller, items: Iterable[dict[str, Any]], conn: Any, *, update: bool = False,
) -> dict[str, Address]:
    """Every address named (the first occurrence of a name wins), created with its type in
    a fixed number of statements plus one per new type; a found one is used as it is, or,
    with `update`, updated as `POST /address` updates it (the fields sent that changed, one
    statement per changed address): a Watcher lineage is how Watcher jobs send their
    addresses' metadata, primary key and type, so a change there reaches the stored address.
    OpenLineage events do not update (their type and namespace come from the dataset's
    namespace, which would retype an address another producer described)."""
    wanted: dict[str, dict[str, Any]] = {}
    for values in items:
        wanted.setdefault(values["name"], values)
    org = caller.organisation_id
    found = {a.name: a for a in await Address.filter(
        organisation_id=org, name__in=list(wanted)).using_db(conn)}
    if found and update:
        current = {t.id: t for t in await AddressType.filter(
            id__in={a.address_type_id for a in found.values()}).using_db(conn)}  # type: ignore[attr-defined]
        for name in sorted(found):  # one order: concurrent calls wait instead of deadlocking
            address = found[name]
            await _update_address(caller, address, wanted[name], conn,
                                  current[address.address_type_id])  # type: ignore[attr-defined]
    # Sorted, so that concurrent calls insert the same names in the same order (and wait for
    # each other rather than deadlock).
    missing = sorted((v for name, v in wanted.items() if name not in found),
                     key=lambda v: v["name"])
    if not missing:
        return found
    groups: dict[str, str] = {}
    for values in missing:
        groups.setdefault(values["address_type_name"], values["address_type_group_name"])
    types = {t.name: t for t in await AddressType.filter(
        organisation_id=org, name__in=list(groups)).using_db(conn)}
    for type_name, group_name in sorted(groups.items()):
        if type_name not in types:
            types[type_name] = await AddressType.create(
                organisation_id=org, name=type_name, group_name=group_name, using_db=conn)
    new = []
    for values in missing:
        address_type = types[values["address_type_name"]]
        new.append(Address(organisation_id=org, name=values["name"],
                           address_type_id=address_type.id,
                           **_columns(values, address_type.group_name)))
    await Address.bulk_create(new, using_db=conn)
    found.update({a.name: a for a in await Address.filter(
        organisation_id=org, name__in=[values["name"] for values in missing]).using_db(conn)})
    return found


async def _replace_lineage(
    caller: Caller, pipeline_id: int, sources: list[dict[str, Any]],
    targets: list[dict[str, Any]],
) -> LineageResult:
    async with in_transaction() as conn:
        pipeline = await Pipeline.filter(
            id=pipeline_id, organisation_id=caller.organisation_id
        ).select_for_update().using_db(conn).first()
        if pipeline is None:
            raise NotFound("pipeline", pipeline_id)
        if not pipeline.load_lineage:  # switched off meanwhile
            return LineageResult(pipeline_id, 0, _refused(pipeline_id), False)
        by_name = await _ensure_addresses(caller, [*sources, *targets], conn, update=True)
        pairs = dict.fromkeys(
            (by_name[s["name"]].id, by_name[t["name"]].id) for s in sources for t in targets)
        await AddressLineage.filter(pipeline_id=pipeline_id).using_db(conn).delete()
        if pairs:
            await AddressLineage.bulk_create(
                [AddressLineage(organisation_id=caller.organisation_id, pipeline_id=pipeline_id,
                                source_id=source, target_id=target) for source, target in pairs],
                using_db=conn)
    return LineageResult(pipeline_id, len(pairs), _applied(pipeline_id), True)


def pairs_problem(sources: int, targets: int) -> str | None:
    """Why `sources` x `targets` lineage pairs are too many for one call, or None: the one
    cap (`MAX_EDGES`) of every path that draws lineage (`POST /address_lineage`, OpenLineage
    events' inputs x outputs)."""
    if sources * targets > MAX_EDGES:
        return f"at most {MAX_EDGES} source x target pairs may be sent at once"
    return None


async def create_lineage(*, caller: Caller, lineage: LineageInput) -> LineageResult:
    """`POST /address_lineage`: refused (nothing changes) unless the pipeline's `load_lineage`
    is true; otherwise, in one transaction, every address (and type) is got-or-created and the
    pipeline's edges become every source x target pair."""
    require_writer(caller)
    errors = Errors()
    pipeline_id = integer(lineage.pipeline_id, "pipeline_id", errors, required=True)
    sources = _address_list(lineage.sources, "source_addresses", errors)
    targets = _address_list(lineage.targets, "target_addresses", errors)
    if too_many := pairs_problem(len(sources), len(targets)):
        errors.add("target_addresses", too_many)
    errors.raise_any()
    assert pipeline_id is not None
    pipeline = None
    if _storable(pipeline_id):
        pipeline = await Pipeline.filter(
            id=pipeline_id, organisation_id=caller.organisation_id).first()
    if pipeline is None:
        raise NotFound("pipeline", pipeline_id)
    if not pipeline.load_lineage:
        return LineageResult(pipeline_id, 0, _refused(pipeline_id), False)
    return await _retrying(lambda: _replace_lineage(caller, pipeline_id, sources, targets))


# --- graph -----------------------------------------------------------------------------------


@dataclass
class LineageGraph:
    root: Address
    nodes: list[Address]
    edges: list[AddressLineage]


def _chunks(ids: set[int]) -> Iterator[list[int]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), ID_CHUNK):
        yield ordered[start:start + ID_CHUNK]


def _hop_filters(down: set[int], up: set[int]) -> Iterator[Q]:
    """One filter per statement: the edges leaving `down` or entering `up`. A frontier of up
    to ID_CHUNK ids in all is one statement."""
    pieces = [("source_id__in", c) for c in _chunks(down)] + [
        ("target_id__in", c) for c in _chunks(up)]
    batch: list[Q] = []
    size = 0
    for lookup, ids in pieces:
        if batch and size + len(ids) > ID_CHUNK:
            yield Q(*batch, join_type="OR")
            batch, size = [], 0
        batch.append(Q(**{lookup: ids}))
        size += len(ids)
    if batch:
        yield Q(*batch, join_type="OR")


async def lineage_graph(
    *, caller: Caller, address_id: int, direction: str = "both", depth: int = 3
) -> LineageGraph:
    """The datasets feeding an address (`upstream`), fed by it (`downstream`) or both, to
    `depth` hops: one statement per hop, each address visited once per direction (cycles
    end), each edge once."""
    caller.require_scope(Scope.READ)
    errors = Errors()
    if direction not in DIRECTIONS:
        errors.add("direction", f"direction must be one of: {', '.join(DIRECTIONS)}")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        errors.add("depth", f"depth must be an integer from 1 to {MAX_DEPTH}")
    errors.raise_any()
    root = await get_address(caller=caller, address_id=address_id)
    org = caller.organisation_id
    down = {root.id} if direction in ("downstream", "both") else set()
    up = {root.id} if direction in ("upstream", "both") else set()
    seen_down, seen_up = set(down), set(up)
    edges: dict[int, AddressLineage] = {}
    for _ in range(depth):
        if not down and not up:
            break
        next_down: set[int] = set()
        next_up: set[int] = set()
        for condition in _hop_filters(down, up):
            for edge in await AddressLineage.filter(condition, organisation_id=org):
                edges.setdefault(edge.id, edge)
                if edge.source_id in down and edge.target_id not in seen_down:
                    next_down.add(edge.target_id)
                if edge.target_id in up and edge.source_id not in seen_up:
                    next_up.add(edge.source_id)
        seen_down |= next_down
        seen_up |= next_up
        down, up = next_down, next_up
    others = (seen_down | seen_up) - {root.id}
    nodes = [root]
    for chunk in _chunks(others):
        nodes.extend(await Address.filter(id__in=chunk, organisation_id=org))
    nodes[1:] = sorted(nodes[1:], key=lambda a: a.id)
    return LineageGraph(root=root, nodes=nodes, edges=[edges[k] for k in sorted(edges)])


__all__ = [
    "AddressChange",
    "AddressInput",
    "AddressTypeInput",
    "LineageGraph",
    "LineageInput",
    "LineageResult",
    "create_lineage",
    "find_address",
    "get_address",
    "get_address_type",
    "get_or_create_address",
    "get_or_create_address_type",
    "lineage_graph",
    "list_address_types",
    "list_addresses",
    "patch_address",
]

# Every address named found or created, inside the caller's transaction (OpenLineage events).
ensure_addresses = _ensure_addresses
