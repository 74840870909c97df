"""`sql.select` / `sql.first` load exactly what the ORM loads for the same look-up (every
field, converted the same way on both databases: times, JSON, enums), and find nothing in
another organisation."""

from __future__ import annotations

from datetime import UTC, datetime

from tortoise.transactions import in_transaction

from runwatch.models import Pipeline, Run
from runwatch.resolvers import sql
from runwatch.resolvers.caller import Caller, Scope
from tests.watcher_wire import end_execution, get_or_create_pipeline, start_execution

T0 = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)


def fields(instance: object) -> dict:
    meta = instance._meta  # type: ignore[attr-defined]
    return {name: getattr(instance, name) for name in meta.db_fields if hasattr(instance, name)}


async def test_first_and_select_load_what_the_orm_loads(tenant, other_tenant):
    caller = Caller(organisation_id=tenant.org_id, scopes=frozenset({Scope.ADMIN}))
    pipeline, _ = await get_or_create_pipeline(caller=caller, raw={
        "name": "load", "pipeline_type_name": "extraction", "next_watermark": "w1",
        "pipeline_metadata": {"owner": "data", "tags": ["a", "b"]}})
    root = await start_execution(caller=caller, raw={"pipeline_id": pipeline.id,
                                                     "start_date": T0.isoformat()})
    child = await start_execution(caller=caller, raw={
        "pipeline_id": pipeline.id, "parent_id": root.id, "start_date": T0.isoformat()})
    await end_execution(caller=caller, raw={
        "id": child.id, "end_date": "2024-01-01T10:05:00Z", "completed_successfully": True,
        "total_rows": 10, "inserts": 3, "execution_metadata": {"k": [1, 2.5, None]}})

    found = await sql.first(Run, "id = ? AND organisation_id = ? LIMIT 1",
                            [child.id, tenant.org_id])
    assert found is not None
    assert fields(found) == fields(await Run.get(id=child.id))
    assert isinstance(found.finished_at, datetime) and found.finished_at.tzinfo is not None
    assert found.execution_metadata == {"k": [1, 2.5, None]}

    async with in_transaction() as conn:  # FOR UPDATE: PostgreSQL's lock, left out on SQLite
        locked = await sql.first(Pipeline, "organisation_id = ? AND name = ? LIMIT 1 FOR UPDATE",
                                 [tenant.org_id, "load"], conn)
    assert locked is not None
    assert fields(locked) == fields(await Pipeline.get(id=pipeline.id))

    children = await sql.select(Run, "organisation_id = ? AND parent_id IN (?) ORDER BY id",
                                [tenant.org_id, root.id])
    assert [c.id for c in children] == [child.id]

    assert await sql.first(Run, "id = ? AND organisation_id = ? LIMIT 1",
                           [child.id, other_tenant.org_id]) is None
