"""`sql.select` / `sql.first` load exactly what the ORM loads for the same look-up (every
field, converted the same way on both databases: times, JSON, enums), and find nothing in
another organisation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
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


async def test_insert_stores_and_loads_what_the_orm_create_does(tenant):
    """`sql.insert` against `Model.create` with the same values: every column the same
    (defaults, enums, JSON, dates), the times stamped by the ORM's clock, on both databases."""
    from runwatch.models import RunStatus

    pipeline = await Pipeline.create(organisation_id=tenant.org_id, name="ins", kind="watcher")
    values = {"organisation_id": tenant.org_id, "pipeline_id": pipeline.id,
              "status": RunStatus.RUNNING, "started_at": T0, "hour_recorded": 10,
              "date_recorded": T0.date(), "next_watermark": "7",
              "openlineage_facets": {"a": [1, None, "x"]}, "correlation_id": None}
    before = datetime.now(UTC)
    async with in_transaction() as conn:
        made = await sql.insert(Run, values, conn)
        created = await Run.create(**values, using_db=conn)
    after = datetime.now(UTC)
    stored, orm = await Run.get(id=made.id), await Run.get(id=created.id)
    stamps = ("id", "created_at", "updated_at")
    assert {k: v for k, v in fields(made).items() if k not in stamps} == \
        {k: v for k, v in fields(created).items() if k not in stamps}
    assert fields(made) == fields(stored)
    assert {k: v for k, v in fields(stored).items() if k not in stamps} == \
        {k: v for k, v in fields(orm).items() if k not in stamps}
    assert made.status == RunStatus.RUNNING and made.environment == "default"
    assert made.log_seq == 0 and made.openlineage_facets == {"a": [1, None, "x"]}
    assert before <= made.created_at == made.updated_at <= after

    # A status given as its text is converted as the ORM converts it; a null for a non-null
    # column and an unknown column are refused before any statement.
    async with in_transaction() as conn:
        text = await sql.insert(Run, {**values, "status": "pending"}, conn)
    assert (await Run.get(id=text.id)).status == RunStatus.PENDING
    for bad, error in (({**values, "status": None}, ValueError),
                       ({**values, "pipeline": pipeline}, TypeError)):
        with pytest.raises(error):
            async with in_transaction() as conn:
                await sql.insert(Run, bad, conn)
    assert await Run.filter(pipeline_id=pipeline.id).count() == 3


async def test_update_changes_what_the_orm_update_changes(tenant):
    """`sql.update` against the queryset's `update` with the same changes (text, JSON, a
    time, a boolean, a null): the same rows afterwards; an unknown field or a null for a
    non-null one is refused; another row is left alone."""
    a = await Pipeline.create(organisation_id=tenant.org_id, name="upd-a", kind="watcher")
    b = await Pipeline.create(organisation_id=tenant.org_id, name="upd-b", kind="watcher")
    untouched = fields(await Pipeline.create(organisation_id=tenant.org_id, name="upd-c",
                                             kind="watcher"))
    changes = {"next_watermark": "9", "pipeline_metadata": {"o": [1, "x", None]},
               "updated_at": T0, "load_lineage": False, "freshness_number": None}
    async with in_transaction() as conn:
        assert await sql.update(Pipeline, a.id, changes, conn) == 1
        await Pipeline.filter(id=b.id).using_db(conn).update(**changes)
    skip = ("id", "name", "created_at")
    after_a, after_b = fields(await Pipeline.get(id=a.id)), fields(await Pipeline.get(id=b.id))
    assert {k: v for k, v in after_a.items() if k not in skip} == \
        {k: v for k, v in after_b.items() if k not in skip}
    assert after_a["pipeline_metadata"] == {"o": [1, "x", None]}
    assert after_a["updated_at"] == T0 and after_a["load_lineage"] is False
    assert fields(await Pipeline.get(name="upd-c")) == untouched
    for bad, error in (({"name": None}, ValueError), ({"pipeline_type": 1}, TypeError)):
        with pytest.raises(error):
            async with in_transaction() as conn:
                await sql.update(Pipeline, a.id, bad, conn)
    assert fields(await Pipeline.get(id=a.id)) == after_a
