"""The Watcher domain, through its resolvers: pipeline types and pipelines (get-or-create,
stable change detection, the watermark hand-off, PATCH), executions (start, end, duration and
throughput, replays, roll-ups, webhooks) and execution trees, with tenancy throughout.

The resolvers get already-normalised raw dicts, as the REST shim hands them over."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from runwatch.models import (
    AnomalyRule,
    Pipeline,
    PipelineHourlyStats,
    PipelineType,
    Run,
    RunStatus,
    Task,
    WebhookDelivery,
)
from runwatch.resolvers import tasks, webhooks
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.errors import (
    Conflict,
    InvalidInput,
    InvalidRange,
    NotFound,
    PermissionDenied,
)
from runwatch.resolvers.executions import duration_and_throughput, execution_tree
from runwatch.resolvers.watcher_pipelines import (
    DEFINITION,
    digest,
    get_type,
    get_watcher_pipeline,
    list_types,
    list_watcher_pipelines,
)
from runwatch.rest_shim.watcher_input import LaxError
from tests.watcher_wire import (
    end_execution,
    get_or_create_pipeline,
    get_or_create_type,
    patch_address_type,
    patch_pipeline,
    patch_type,
    start_execution,
)

T0 = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
HUGE_IDS = (2**31, 2**31 + 7, 2**63, 2**70)
BOTH_FRESHNESS = "Both freshness_number and freshness_datepart must be provided together"
BOTH_TIMELINESS = "Both timeliness_number and timeliness_datepart must be provided together"


@pytest.fixture
def other(other_tenant) -> Caller:
    """An admin caller of another organisation."""
    return Caller(organisation_id=other_tenant.org_id, scopes=frozenset({Scope.ADMIN}))


async def make_pipeline(caller: Caller, name: str = "load", type_name: str = "extraction",
                        **fields: Any) -> tuple[Pipeline, bool]:
    return await get_or_create_pipeline(
        caller=caller, raw={"name": name, "pipeline_type_name": type_name, **fields})


async def fresh(pipeline: Pipeline) -> Pipeline:
    return await Pipeline.get(id=pipeline.id)


async def start(caller: Caller, pipeline_id: int, at: datetime | str | None = T0,
                **fields: Any) -> Run:
    raw: dict[str, Any] = {"pipeline_id": pipeline_id, **fields}
    if at is not None:
        raw["start_date"] = at
    return await start_execution(caller=caller, raw=raw)


async def end(caller: Caller, run_id: int, at: datetime | str, ok: bool = True,
              **fields: Any) -> tuple[Run, bool]:
    return await end_execution(caller=caller, raw={
        "id": run_id, "end_date": at, "completed_successfully": ok, **fields})


def messages(exc: pytest.ExceptionInfo[InvalidInput], field: str) -> list[str]:
    return exc.value.fields[field]


# --- pipeline types ------------------------------------------------------------------------


async def test_type_get_or_create_by_name(caller):
    created, was_created = await get_or_create_type(caller=caller, raw={
        "name": "extraction", "freshness_number": 24, "freshness_datepart": "hour",
        "mute_timeliness_check": True})
    assert was_created is True
    assert (created.freshness_number, created.freshness_datepart) == (24, "hour")
    assert created.mute_timeliness_check is True and created.mute_freshness_check is False
    assert (created.timeliness_number, created.timeliness_datepart) == (None, None)

    found, was_created = await get_or_create_type(caller=caller, raw={"name": "extraction"})
    assert was_created is False and found.id == created.id


async def test_an_existing_type_is_never_updated(caller):
    created, _ = await get_or_create_type(caller=caller, raw={
        "name": "extraction", "freshness_number": 24, "freshness_datepart": "hour"})
    found, was_created = await get_or_create_type(caller=caller, raw={
        "name": "extraction", "freshness_number": 1, "freshness_datepart": "minute",
        "timeliness_number": 2, "timeliness_datepart": "day", "mute_freshness_check": True})
    assert was_created is False and found.id == created.id
    stored = await PipelineType.get(id=created.id)
    assert (stored.freshness_number, stored.freshness_datepart) == (24, "hour")
    assert (stored.timeliness_number, stored.timeliness_datepart) == (None, None)
    assert stored.mute_freshness_check is False
    assert stored.updated_at is None
    assert await PipelineType.filter(organisation_id=caller.organisation_id).count() == 1


@pytest.mark.parametrize("name", [None, "", "   ", "x" * 151, 5, ["a"]])
async def test_type_name_must_be_1_to_150_characters(caller, name):
    with pytest.raises(InvalidInput) as exc:
        await get_or_create_type(caller=caller, raw={"name": name})
    assert "name" in exc.value.fields
    assert await PipelineType.all().count() == 0


async def test_type_name_of_150_characters_is_accepted(caller):
    row, created = await get_or_create_type(caller=caller, raw={"name": "x" * 150})
    assert created and row.name == "x" * 150


@pytest.mark.parametrize("part", ["minute", "hour", "day", "week", "month", "year"])
async def test_type_dateparts_include_minute(caller, part):
    row, _ = await get_or_create_type(caller=caller, raw={
        "name": "t", "freshness_number": 3, "freshness_datepart": part,
        "timeliness_number": 4, "timeliness_datepart": part})
    stored = await PipelineType.get(id=row.id)
    assert (stored.freshness_datepart, stored.timeliness_datepart) == (part, part)


@pytest.mark.parametrize("part", ["second", "fortnight", "", 3, "hours"])
async def test_type_unknown_datepart_is_refused(caller, part):
    with pytest.raises(InvalidInput) as exc:
        await get_or_create_type(caller=caller, raw={
            "name": "t", "freshness_number": 3, "freshness_datepart": part})
    assert "freshness_datepart" in exc.value.fields


@pytest.mark.parametrize("number", [0, -1, "three", 1.5, "1.5", 2**31])
async def test_type_number_must_be_a_positive_integer(caller, number):
    with pytest.raises(InvalidInput) as exc:
        await get_or_create_type(caller=caller, raw={
            "name": "t", "timeliness_number": number, "timeliness_datepart": "hour"})
    assert "timeliness_number" in exc.value.fields


@pytest.mark.parametrize("raw, field, message", [
    ({"freshness_number": 3}, "freshness_number", BOTH_FRESHNESS),
    ({"freshness_datepart": "day"}, "freshness_number", BOTH_FRESHNESS),
    ({"timeliness_number": 3, "timeliness_datepart": None}, "timeliness_number",
     BOTH_TIMELINESS),
    ({"timeliness_datepart": "hour"}, "timeliness_number", BOTH_TIMELINESS),
])
async def test_type_number_and_datepart_come_together(caller, raw, field, message):
    with pytest.raises(InvalidInput) as exc:
        await get_or_create_type(caller=caller, raw={"name": "t", **raw})
    assert messages(exc, field) == [message]
    assert await PipelineType.all().count() == 0


async def test_type_mute_flags_must_be_booleans(caller):
    with pytest.raises(InvalidInput) as exc:
        await get_or_create_type(caller=caller, raw={"name": "t", "mute_freshness_check": "maybe"})
    assert "mute_freshness_check" in exc.value.fields


async def test_types_are_per_organisation(caller, other):
    mine, created_mine = await get_or_create_type(caller=caller, raw={"name": "extraction"})
    theirs, created_theirs = await get_or_create_type(caller=other, raw={"name": "extraction"})
    assert created_mine and created_theirs and mine.id != theirs.id

    assert [t.id for t in await list_types(caller=caller)] == [mine.id]
    assert [t.id for t in await list_types(caller=other)] == [theirs.id]
    assert (await get_type(caller=caller, type_id=mine.id)).id == mine.id
    with pytest.raises(NotFound):
        await get_type(caller=caller, type_id=theirs.id)


async def test_list_types_is_ordered_by_id(caller):
    ids = [(await get_or_create_type(caller=caller, raw={"name": n}))[0].id
           for n in ("c", "a", "b")]
    assert [t.id for t in await list_types(caller=caller)] == ids


@pytest.mark.parametrize("type_id", [0, -1, 999_999, *HUGE_IDS])
async def test_unknown_type_id_is_not_found(caller, type_id):
    with pytest.raises(NotFound):
        await get_type(caller=caller, type_id=type_id)


# --- pipelines: get-or-create and change detection ------------------------------------------


async def test_create_pipeline(caller):
    pipeline, created = await make_pipeline(
        caller, next_watermark="2024-01-02", pipeline_metadata={"env": "prod"},
        freshness_number=24, freshness_datepart="hour")
    assert created is True
    assert pipeline.watermark is None  # the answer's watermark: null on create
    stored = await fresh(pipeline)
    assert stored.kind == "watcher"
    assert stored.organisation_id == caller.organisation_id
    assert stored.watermark is None and stored.next_watermark == "2024-01-02"
    assert stored.pipeline_metadata == {"env": "prod"}
    assert (stored.freshness_number, stored.freshness_datepart) == (24, "hour")
    assert (stored.timeliness_number, stored.timeliness_datepart) == (None, None)
    assert stored.active is True and stored.load_lineage is True
    assert stored.mute_freshness_check is False and stored.mute_timeliness_check is False
    assert stored.updated_at is None
    assert stored.input_digest and len(stored.input_digest) == 64
    assert (stored.last_target_insert, stored.last_target_update,
            stored.last_target_soft_delete) == (None, None, None)


async def test_create_pipeline_creates_its_type_when_missing(caller):
    pipeline, _ = await make_pipeline(caller, type_name="extraction")
    pipeline_type = await PipelineType.get(organisation_id=caller.organisation_id,
                                           name="extraction")
    assert (await fresh(pipeline)).pipeline_type_id == pipeline_type.id
    # No config of its own: the type is created bare, not from the pipeline's settings.
    assert pipeline_type.freshness_number is None


async def test_create_pipeline_uses_an_existing_type(caller):
    existing, _ = await get_or_create_type(caller=caller, raw={
        "name": "extraction", "freshness_number": 2, "freshness_datepart": "day"})
    pipeline, _ = await make_pipeline(caller, type_name="extraction",
                                      freshness_number=5, freshness_datepart="hour")
    assert (await fresh(pipeline)).pipeline_type_id == existing.id
    assert await PipelineType.all().count() == 1
    stored_type = await PipelineType.get(id=existing.id)
    assert (stored_type.freshness_number, stored_type.freshness_datepart) == (2, "day")


async def test_found_by_name(caller):
    created, _ = await make_pipeline(caller)
    found, was_created = await make_pipeline(caller)
    assert was_created is False and found.id == created.id
    assert await Pipeline.filter(organisation_id=caller.organisation_id).count() == 1


async def test_identical_repeated_post_writes_nothing(caller):
    raw = {"name": "load", "pipeline_type_name": "extraction", "next_watermark": "w1",
           "pipeline_metadata": {"env": "prod", "owners": ["a", "b"]},
           "freshness_number": 24, "freshness_datepart": "hour",
           "timeliness_number": 30, "timeliness_datepart": "minute"}
    created, _ = await get_or_create_pipeline(caller=caller, raw=dict(raw))
    before = await fresh(created)

    # The same definition, its keys in another order (also inside the metadata).
    reordered = dict(reversed(list(raw.items())))
    reordered["pipeline_metadata"] = {"owners": ["a", "b"], "env": "prod"}
    found, was_created = await get_or_create_pipeline(caller=caller, raw=reordered)
    assert was_created is False
    after = await fresh(found)
    assert after.updated_at is None
    assert after.input_digest == before.input_digest
    assert after.revision == before.revision
    assert after.pipeline_metadata == before.pipeline_metadata


async def test_changed_metadata_updates(caller):
    created, _ = await make_pipeline(caller, pipeline_metadata={"env": "dev"},
                                     freshness_number=24, freshness_datepart="hour")
    before = await fresh(created)
    found, was_created = await make_pipeline(caller, pipeline_metadata={"env": "prod"},
                                             freshness_number=24, freshness_datepart="hour")
    assert was_created is False
    after = await fresh(found)
    assert after.pipeline_metadata == {"env": "prod"}
    assert after.updated_at is not None
    assert after.input_digest != before.input_digest
    assert (after.freshness_number, after.freshness_datepart) == (24, "hour")
    # The answer carries the change too.
    assert found.pipeline_metadata == {"env": "prod"}


async def test_changed_freshness_config_updates(caller):
    created, _ = await make_pipeline(caller, freshness_number=24, freshness_datepart="hour",
                                     timeliness_number=2, timeliness_datepart="hour")
    before = await fresh(created)
    await make_pipeline(caller, freshness_number=3, freshness_datepart="minute",
                        timeliness_number=2, timeliness_datepart="hour")
    after = await fresh(created)
    assert (after.freshness_number, after.freshness_datepart) == (3, "minute")
    assert (after.timeliness_number, after.timeliness_datepart) == (2, "hour")
    assert after.updated_at is not None and after.input_digest != before.input_digest
    first_update = after.updated_at

    # Sent again unchanged: nothing is written.
    await make_pipeline(caller, freshness_number=3, freshness_datepart="minute",
                        timeliness_number=2, timeliness_datepart="hour")
    again = await fresh(created)
    assert again.updated_at == first_update and again.input_digest == after.input_digest


async def test_only_the_fields_sent_change(caller):
    created, _ = await make_pipeline(caller, pipeline_metadata={"env": "prod"},
                                     freshness_number=24, freshness_datepart="hour",
                                     timeliness_number=2, timeliness_datepart="hour")
    # Only the timeliness config this time: metadata and freshness are kept.
    await make_pipeline(caller, timeliness_number=9, timeliness_datepart="day")
    after = await fresh(created)
    assert (after.timeliness_number, after.timeliness_datepart) == (9, "day")
    assert after.pipeline_metadata == {"env": "prod"}
    assert (after.freshness_number, after.freshness_datepart) == (24, "hour")


async def test_changed_type_name_moves_the_pipeline_to_that_type(caller):
    created, _ = await make_pipeline(caller, type_name="extraction")
    await make_pipeline(caller, type_name="transform")
    after = await fresh(created)
    transform = await PipelineType.get(organisation_id=caller.organisation_id, name="transform")
    assert after.pipeline_type_id == transform.id


async def test_post_never_changes_active_lineage_watermark_or_mutes(caller):
    guarded = {"active": False, "load_lineage": False, "watermark": "forced",
               "mute_freshness_check": True, "mute_timeliness_check": True}
    created, _ = await make_pipeline(caller, pipeline_metadata={"v": 1}, **guarded)
    stored = await fresh(created)
    assert (stored.active, stored.load_lineage, stored.watermark) == (True, True, None)
    assert (stored.mute_freshness_check, stored.mute_timeliness_check) == (False, False)

    # Set them by PATCH, then POST with other values and a changed definition.
    await patch_pipeline(caller=caller, raw={
        "id": created.id, "active": False, "load_lineage": False, "watermark": "w0",
        "mute_freshness_check": True})
    await make_pipeline(caller, pipeline_metadata={"v": 2}, active=True, load_lineage=True,
                        watermark="other", mute_freshness_check=False,
                        mute_timeliness_check=True)
    after = await fresh(created)
    assert after.pipeline_metadata == {"v": 2}
    assert (after.active, after.load_lineage, after.watermark) == (False, False, "w0")
    assert (after.mute_freshness_check, after.mute_timeliness_check) == (True, False)


async def test_guarded_fields_are_not_part_of_the_digest(caller):
    created, _ = await make_pipeline(caller, pipeline_metadata={"v": 1})
    before = await fresh(created)
    await make_pipeline(caller, pipeline_metadata={"v": 1}, active=False, load_lineage=False,
                        watermark="x", mute_freshness_check=True)
    after = await fresh(created)
    assert after.updated_at is None and after.input_digest == before.input_digest


async def test_pipeline_validation(caller):
    with pytest.raises(InvalidInput) as exc:
        await get_or_create_pipeline(caller=caller, raw={"pipeline_type_name": "t"})
    assert "name" in exc.value.fields
    with pytest.raises(InvalidInput) as exc:
        await get_or_create_pipeline(caller=caller, raw={"name": "p"})
    assert "pipeline_type_name" in exc.value.fields
    with pytest.raises(InvalidInput) as exc:
        await make_pipeline(caller, name="x" * 151)
    assert "name" in exc.value.fields
    with pytest.raises(InvalidInput) as exc:
        await make_pipeline(caller, type_name="x" * 151)
    assert "pipeline_type_name" in exc.value.fields
    with pytest.raises(InvalidInput) as exc:
        await make_pipeline(caller, freshness_number=3)
    assert messages(exc, "freshness_number") == [BOTH_FRESHNESS]
    with pytest.raises(InvalidInput) as exc:
        await make_pipeline(caller, timeliness_datepart="hour")
    assert messages(exc, "timeliness_number") == [BOTH_TIMELINESS]
    with pytest.raises(InvalidInput) as exc:
        await make_pipeline(caller, pipeline_metadata=["not", "an", "object"])
    assert "pipeline_metadata" in exc.value.fields
    with pytest.raises(InvalidInput) as exc:
        await make_pipeline(caller, next_watermark="x" * 51)
    assert "next_watermark" in exc.value.fields
    with pytest.raises(InvalidInput) as exc:
        await make_pipeline(caller, next_watermark=True)
    assert "next_watermark" in exc.value.fields
    assert await Pipeline.all().count() == 0
    assert await PipelineType.all().count() == 0


async def test_minute_datepart_on_pipelines(caller):
    pipeline, _ = await make_pipeline(caller, timeliness_number=45, timeliness_datepart="minute")
    assert (await fresh(pipeline)).timeliness_datepart == "minute"


# --- the digest --------------------------------------------------------------------------------


def digest_in_subprocess(definition_json: str, seed: str) -> str:
    code = ("import json, sys; from runwatch.resolvers.watcher_pipelines import digest; "
            "print(digest(json.loads(sys.argv[1])))")
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run([sys.executable, "-c", code, definition_json], env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


async def test_digest_is_stable_across_processes(caller):
    raw = {"name": "load", "pipeline_type_name": "extraction",
           "pipeline_metadata": {"b": [1, 2, {"z": None, "a": "x"}], "a": "é"},
           "freshness_number": 24, "freshness_datepart": "hour"}
    pipeline, _ = await get_or_create_pipeline(caller=caller, raw=raw)
    stored = (await fresh(pipeline)).input_digest

    definition = {k: raw[k] for k in DEFINITION if k in raw}
    assert digest(definition) == stored
    # Other processes (other hash seeds), the keys in another order: the same digest.
    reordered = {"freshness_datepart": "hour", "freshness_number": 24,
                 "pipeline_metadata": {"a": "é", "b": [1, 2, {"a": "x", "z": None}]},
                 "pipeline_type_name": "extraction"}
    for seed in ("1", "4242"):
        assert digest_in_subprocess(json.dumps(reordered), seed) == stored
        assert digest_in_subprocess(json.dumps(definition), seed) == stored


def test_digest_is_independent_of_key_order_and_sensitive_to_values():
    a = {"pipeline_type_name": "t", "pipeline_metadata": {"x": 1, "y": {"p": 1, "q": 2}}}
    b = {"pipeline_metadata": {"y": {"q": 2, "p": 1}, "x": 1}, "pipeline_type_name": "t"}
    assert digest(a) == digest(b)
    assert digest(a) != digest({**a, "pipeline_metadata": {"x": 2, "y": {"p": 1, "q": 2}}})
    assert digest(a) != digest({**a, "freshness_number": None})
    # List order is data, not layout.
    assert digest({"pipeline_metadata": {"l": [1, 2]}}) != digest({"pipeline_metadata":
                                                                  {"l": [2, 1]}})


# --- watermarks --------------------------------------------------------------------------------


async def test_the_watermark_sequence(caller):
    pipeline, created = await make_pipeline(caller, next_watermark="a")
    assert created and pipeline.watermark is None

    run = await start(caller, pipeline.id, T0)
    await end(caller, run.id, T0 + 60 * SECOND, ok=True, total_rows=1)
    assert (await fresh(pipeline)).watermark == "a"

    found, created = await make_pipeline(caller, next_watermark="b")
    assert created is False and found.id == pipeline.id
    assert found.watermark == "a"  # the answer: the stored watermark
    stored = await fresh(pipeline)
    assert (stored.watermark, stored.next_watermark) == ("a", "b")

    assert stored.load_lineage is False  # the successful end turned it off
    await patch_pipeline(caller=caller, raw={"id": pipeline.id, "load_lineage": True})

    # A failed end hands nothing over.
    failed = await start(caller, pipeline.id, T0 + 120 * SECOND)
    await end(caller, failed.id, T0 + 180 * SECOND, ok=False, inserts=5, updates=5,
              soft_deletes=5)
    stored = await fresh(pipeline)
    assert (stored.watermark, stored.next_watermark) == ("a", "b")
    assert (stored.last_target_insert, stored.last_target_update,
            stored.last_target_soft_delete) == (None, None, None)
    assert stored.load_lineage is True

    ok = await start(caller, pipeline.id, T0 + 240 * SECOND)
    await end(caller, ok.id, T0 + 300 * SECOND, ok=True)
    stored = await fresh(pipeline)
    assert (stored.watermark, stored.next_watermark) == ("b", "b")


async def test_successful_end_sets_last_target_for_counts_above_zero(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    ended_at = T0 + 10 * SECOND
    await end(caller, run.id, ended_at, inserts=3, updates=0)  # soft_deletes not sent
    stored = await fresh(pipeline)
    assert stored.last_target_insert == ended_at
    assert stored.last_target_update is None and stored.last_target_soft_delete is None
    assert stored.load_lineage is False

    second = await start(caller, pipeline.id, T0 + 60 * SECOND)
    later = T0 + 90 * SECOND
    await end(caller, second.id, later, inserts=0, updates=2, soft_deletes=1)
    stored = await fresh(pipeline)
    assert stored.last_target_insert == ended_at  # kept: no inserts this time
    assert stored.last_target_update == later and stored.last_target_soft_delete == later


async def test_failed_end_changes_no_pipeline_state(caller):
    pipeline, _ = await make_pipeline(caller, next_watermark="n1")
    run = await start(caller, pipeline.id, T0)
    ended, changed = await end(caller, run.id, T0 + 5 * SECOND, ok=False, inserts=1,
                               updates=1, soft_deletes=1)
    assert changed and ended.status == RunStatus.FAILED
    stored = await fresh(pipeline)
    assert (stored.watermark, stored.next_watermark) == (None, "n1")
    assert (stored.last_target_insert, stored.last_target_update,
            stored.last_target_soft_delete) == (None, None, None)
    assert stored.load_lineage is True


@pytest.mark.parametrize("sent, stored", [
    (42, "42"),
    (0, "0"),
    ("2024-01-02", "2024-01-02"),
    ("2024-01-02T00:00:00Z", "2024-01-02T00:00:00Z"),
    ("MixedCase-Mark", "MixedCase-Mark"),
])
async def test_watermarks_are_stored_as_text_as_sent(caller, sent, stored):
    pipeline, _ = await make_pipeline(caller, next_watermark=sent)
    assert (await fresh(pipeline)).next_watermark == stored
    run = await start(caller, pipeline.id, T0)
    await end(caller, run.id, T0 + SECOND)
    assert (await fresh(pipeline)).watermark == stored


async def test_execution_watermarks_are_stored_as_text(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0, watermark=7, next_watermark="Next-2024")
    stored = await Run.get(id=run.id)
    assert (stored.watermark, stored.next_watermark) == ("7", "Next-2024")


# --- PATCH ---------------------------------------------------------------------------------


async def test_patch_by_id(caller):
    pipeline, _ = await make_pipeline(caller, pipeline_metadata={"a": 1},
                                      freshness_number=1, freshness_datepart="day")
    patched = await patch_pipeline(caller=caller, raw={
        "id": pipeline.id, "name": "renamed", "mute_freshness_check": True,
        "mute_timeliness_check": True, "load_lineage": False, "active": False,
        "watermark": "w", "next_watermark": 9, "timeliness_number": 15,
        "timeliness_datepart": "minute"})
    assert patched.id == pipeline.id and patched.name == "renamed"
    stored = await fresh(pipeline)
    assert stored.name == "renamed"
    assert (stored.mute_freshness_check, stored.mute_timeliness_check) == (True, True)
    assert (stored.load_lineage, stored.active) == (False, False)
    assert (stored.watermark, stored.next_watermark) == ("w", "9")
    assert (stored.timeliness_number, stored.timeliness_datepart) == (15, "minute")
    # Not sent: kept.
    assert stored.pipeline_metadata == {"a": 1}
    assert (stored.freshness_number, stored.freshness_datepart) == (1, "day")
    assert stored.updated_at is not None


async def test_patch_by_name_when_no_id(caller):
    pipeline, _ = await make_pipeline(caller, name="by-name")
    patched = await patch_pipeline(caller=caller, raw={"name": "by-name", "active": False,
                                                       "pipeline_metadata": {"k": "v"}})
    assert patched.id == pipeline.id
    stored = await fresh(pipeline)
    assert stored.name == "by-name" and stored.active is False
    assert stored.pipeline_metadata == {"k": "v"}


async def test_patch_needs_id_or_name(caller):
    await make_pipeline(caller)
    for raw in ({}, {"active": False}, {"id": None, "name": None, "active": False}):
        with pytest.raises(InvalidInput) as exc:
            await patch_pipeline(caller=caller, raw=raw)
        assert messages(exc, "id") == ["Either 'id' or 'name' must be provided"]


async def test_patch_with_nothing_to_change_returns_the_pipeline(caller):
    pipeline, _ = await make_pipeline(caller)
    patched = await patch_pipeline(caller=caller, raw={"id": pipeline.id})
    assert patched.id == pipeline.id
    assert (await fresh(pipeline)).updated_at is None


@pytest.mark.parametrize("raw", [
    {"id": 999_999, "active": False},
    {"id": 0, "active": False},
    {"id": -3, "active": False},
    {"name": "nobody", "active": False},
    *({"id": big, "active": False} for big in HUGE_IDS),
])
async def test_patch_unknown_pipeline_is_not_found(caller, raw):
    await make_pipeline(caller)
    with pytest.raises(NotFound):
        await patch_pipeline(caller=caller, raw=raw)


async def test_patch_pipeline_type(caller):
    pipeline, _ = await make_pipeline(caller, type_name="extraction")
    other_type, _ = await get_or_create_type(caller=caller, raw={"name": "transform"})
    await patch_pipeline(caller=caller, raw={"id": pipeline.id,
                                             "pipeline_type_id": other_type.id})
    assert (await fresh(pipeline)).pipeline_type_id == other_type.id


@pytest.mark.parametrize("type_id", [999_999, *HUGE_IDS])
async def test_patch_unknown_pipeline_type_is_not_found(caller, type_id):
    pipeline, _ = await make_pipeline(caller)
    before = await fresh(pipeline)
    with pytest.raises(NotFound) as exc:
        await patch_pipeline(caller=caller, raw={"id": pipeline.id, "active": False,
                                                 "pipeline_type_id": type_id})
    assert exc.value.kind == "pipeline type"
    after = await fresh(pipeline)
    assert after.pipeline_type_id == before.pipeline_type_id and after.active is True


async def test_patch_rename_to_an_existing_name_is_invalid(caller):
    await make_pipeline(caller, name="taken")
    pipeline, _ = await make_pipeline(caller, name="mine")
    with pytest.raises(InvalidInput) as exc:
        await patch_pipeline(caller=caller, raw={"id": pipeline.id, "name": "taken",
                                                 "active": False})
    assert "name" in exc.value.fields
    stored = await fresh(pipeline)
    assert stored.name == "mine" and stored.active is True and stored.updated_at is None
    # The connection is still usable afterwards (PostgreSQL: the transaction was rolled back).
    await patch_pipeline(caller=caller, raw={"id": pipeline.id, "name": "free"})
    assert (await fresh(pipeline)).name == "free"


@pytest.mark.parametrize("raw, field", [
    ({"freshness_number": 3}, "freshness_number"),
    ({"timeliness_datepart": "day"}, "timeliness_number"),
    ({"freshness_number": 0, "freshness_datepart": "day"}, "freshness_number"),
    ({"freshness_number": 1, "freshness_datepart": "second"}, "freshness_datepart"),
    ({"active": "nope"}, "active"),
    ({"load_lineage": 2}, "load_lineage"),
    ({"mute_timeliness_check": "sure"}, "mute_timeliness_check"),
    ({"pipeline_type_id": "two"}, "pipeline_type_id"),
    ({"pipeline_metadata": "text"}, "pipeline_metadata"),
    ({"watermark": "x" * 51}, "watermark"),
    ({"name": "x" * 151}, "name"),
    ({"name": ""}, "name"),
])
async def test_patch_validation(caller, raw, field):
    pipeline, _ = await make_pipeline(caller)
    with pytest.raises(InvalidInput) as exc:
        await patch_pipeline(caller=caller, raw={"id": pipeline.id, **raw})
    assert field in exc.value.fields
    assert (await fresh(pipeline)).updated_at is None


async def test_patch_id_must_be_an_integer(caller):
    pipeline, _ = await make_pipeline(caller)
    with pytest.raises(InvalidInput) as exc:
        await patch_pipeline(caller=caller, raw={"id": f"#{pipeline.id}", "active": False})
    assert "id" in exc.value.fields


# --- executions: start --------------------------------------------------------------------


async def test_start_records_the_utc_hour_and_date(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, "2024-01-01T10:15:00Z")
    stored = await Run.get(id=run.id)
    assert stored.status == RunStatus.RUNNING
    assert stored.started_at == datetime(2024, 1, 1, 10, 15, tzinfo=UTC)
    assert (stored.hour_recorded, stored.date_recorded) == (10, date(2024, 1, 1))
    assert stored.pipeline_id == pipeline.id and stored.parent_id is None


@pytest.mark.parametrize("sent, hour, day, instant", [
    ("2024-01-01T23:30:00-02:00", 1, date(2024, 1, 2), datetime(2024, 1, 2, 1, 30, tzinfo=UTC)),
    ("2024-01-02T00:30:00+03:00", 21, date(2024, 1, 1),
     datetime(2024, 1, 1, 21, 30, tzinfo=UTC)),
    ("2024-01-01T23:30:00", 23, date(2024, 1, 1), datetime(2024, 1, 1, 23, 30, tzinfo=UTC)),
    (datetime(2024, 1, 1, 23, 30), 23, date(2024, 1, 1),
     datetime(2024, 1, 1, 23, 30, tzinfo=UTC)),
    (datetime(2024, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2))), 1, date(2024, 1, 2),
     datetime(2024, 1, 2, 1, 30, tzinfo=UTC)),
    ("2024-06-30T23:59:59.5+00:00", 23, date(2024, 6, 30),
     datetime(2024, 6, 30, 23, 59, 59, 500000, tzinfo=UTC)),
])
async def test_start_hour_and_date_are_utc_of_the_start(caller, sent, hour, day, instant):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, sent)
    stored = await Run.get(id=run.id)
    assert stored.started_at == instant
    assert (stored.hour_recorded, stored.date_recorded) == (hour, day)


async def test_start_without_start_date_uses_now(caller):
    pipeline, _ = await make_pipeline(caller)
    given = datetime(2024, 3, 1, 5, 45, tzinfo=UTC)
    run = await start_execution(caller=caller, raw={"pipeline_id": pipeline.id}, now=given)
    stored = await Run.get(id=run.id)
    assert stored.started_at == given
    assert (stored.hour_recorded, stored.date_recorded) == (5, date(2024, 3, 1))

    before = datetime.now(UTC)
    run = await start_execution(caller=caller, raw={"pipeline_id": pipeline.id})
    after = datetime.now(UTC)
    stored = await Run.get(id=run.id)
    assert before <= stored.started_at <= after
    assert stored.hour_recorded == stored.started_at.hour
    assert stored.date_recorded == stored.started_at.date()


@pytest.mark.parametrize("pipeline_id", [999_999, 0, -1, *HUGE_IDS])
async def test_start_unknown_pipeline_is_not_found(caller, pipeline_id):
    with pytest.raises(NotFound):
        await start(caller, pipeline_id)
    assert await Run.all().count() == 0


@pytest.mark.parametrize("parent_id", [999_999, 0, -1, *HUGE_IDS])
async def test_start_unknown_parent_is_not_found(caller, parent_id):
    pipeline, _ = await make_pipeline(caller)
    with pytest.raises(NotFound):
        await start(caller, pipeline.id, parent_id=parent_id)
    assert await Run.all().count() == 0


@pytest.mark.parametrize("raw, field", [
    ({}, "pipeline_id"),
    ({"pipeline_id": "one"}, "pipeline_id"),
    ({"pipeline_id": 1.5}, "pipeline_id"),
    ({"pipeline_id": 1, "start_date": "yesterday"}, "start_date"),
    ({"pipeline_id": 1, "start_date": "2024-13-01"}, "start_date"),
    ({"pipeline_id": 1, "parent_id": "two"}, "parent_id"),
    ({"pipeline_id": 1, "watermark": "x" * 51}, "watermark"),
])
async def test_start_validation(caller, raw, field):
    with pytest.raises(InvalidInput) as exc:
        await start_execution(caller=caller, raw=raw)
    assert field in exc.value.fields


# --- executions: end --------------------------------------------------------------------------


async def test_end_success(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    ended, changed = await end(caller, run.id, T0 + 300 * SECOND, total_rows=1000,
                               inserts=800, updates=200, soft_deletes=0,
                               execution_metadata={"partition": "2025-01-05"})
    assert changed is True
    stored = await Run.get(id=run.id)
    assert stored.status == RunStatus.SUCCEEDED == ended.status
    assert stored.finished_at == T0 + 300 * SECOND
    assert (stored.rows_total, stored.rows_inserted, stored.rows_updated,
            stored.rows_deleted) == (1000, 800, 200, 0)
    assert stored.duration_seconds == 300 and stored.throughput == 3.3333
    assert stored.execution_metadata == {"partition": "2025-01-05"}
    assert ended.duration_seconds == 300 and ended.throughput == 3.3333


async def test_end_failure(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    ended, changed = await end(caller, run.id, T0 + 60 * SECOND, ok=False)
    assert changed and ended.status == RunStatus.FAILED
    assert (await Run.get(id=run.id)).status == RunStatus.FAILED


async def test_end_with_offset_end_date(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, "2024-01-01T10:00:00Z")
    ended, _ = await end(caller, run.id, "2024-01-01T08:05:00-02:00", total_rows=600)
    assert ended.duration_seconds == 300 and ended.throughput == 2.0


@pytest.mark.parametrize("elapsed, rows, duration, throughput", [
    (timedelta(seconds=299, milliseconds=600), 1000, 300, 3.3333),
    (timedelta(seconds=300, milliseconds=400), 1000, 300, 3.3333),
    (timedelta(milliseconds=400), 1000, 0, 0.0),
    (timedelta(milliseconds=400), None, 0, 0.0),  # NOTES: 0 when the duration is 0
    (timedelta(seconds=300), None, 300, None),
    (timedelta(seconds=300), 0, 300, 0.0),
    (timedelta(seconds=7), 10, 7, 1.4286),
    (timedelta(days=2), 172_800, 172_800, 1.0),
])
async def test_duration_and_throughput_of_an_end(caller, elapsed, rows, duration, throughput):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    counts = {} if rows is None else {"total_rows": rows}
    ended, _ = await end(caller, run.id, T0 + elapsed, **counts)
    stored = await Run.get(id=run.id)
    assert stored.duration_seconds == duration == ended.duration_seconds
    assert stored.throughput == throughput == ended.throughput
    assert duration_and_throughput(T0, T0 + elapsed, rows) == (duration, throughput)


@pytest.mark.parametrize("raw, field", [
    ({"completed_successfully": None}, "completed_successfully"),
    ({"completed_successfully": "maybe"}, "completed_successfully"),
    ({"completed_successfully": 2}, "completed_successfully"),
    ({"total_rows": -1}, "total_rows"),
    ({"inserts": -5}, "inserts"),
    ({"updates": 1.5}, "updates"),
    ({"soft_deletes": "-1"}, "soft_deletes"),
    ({"total_rows": "ten"}, "total_rows"),
    ({"end_date": None}, "end_date"),
    ({"end_date": "soon"}, "end_date"),
    ({"id": None}, "id"),
    ({"id": "one"}, "id"),
    ({"execution_metadata": [1]}, "execution_metadata"),
])
async def test_end_validation(caller, raw, field):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    body = {"id": run.id, "end_date": T0 + SECOND, "completed_successfully": True, **raw}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(InvalidInput) as exc:
        await end_execution(caller=caller, raw=body)
    assert type(exc.value) in (InvalidInput, LaxError)  # not InvalidRange
    assert field in exc.value.fields
    assert (await Run.get(id=run.id)).status == RunStatus.RUNNING


async def test_completed_successfully_is_required(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    with pytest.raises(InvalidInput) as exc:
        await end_execution(caller=caller, raw={"id": run.id, "end_date": T0 + SECOND})
    assert messages(exc, "completed_successfully") == ["field required"]


async def test_zero_counts_are_accepted(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    ended, _ = await end(caller, run.id, T0 + SECOND, total_rows=0, inserts=0, updates=0,
                         soft_deletes=0)
    assert (ended.rows_total, ended.rows_inserted, ended.rows_updated,
            ended.rows_deleted) == (0, 0, 0, 0)
    stored = await fresh(pipeline)
    assert (stored.last_target_insert, stored.last_target_update,
            stored.last_target_soft_delete) == (None, None, None)


@pytest.mark.parametrize("offset", [timedelta(0), -SECOND, -timedelta(days=1)])
async def test_end_not_after_start_is_an_invalid_range(caller, offset):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    with pytest.raises(InvalidRange) as exc:
        await end(caller, run.id, T0 + offset)
    assert messages(exc, "end_date") == ["end_date must be greater than start_date"]
    stored = await Run.get(id=run.id)
    assert stored.status == RunStatus.RUNNING and stored.finished_at is None


async def test_end_equal_to_start_through_another_offset_is_an_invalid_range(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, "2024-01-01T10:00:00Z")
    with pytest.raises(InvalidRange):
        await end(caller, run.id, "2024-01-01T12:00:00+02:00")


@pytest.mark.parametrize("run_id", [999_999, 0, -1, *HUGE_IDS])
async def test_end_unknown_execution_is_not_found(caller, run_id):
    with pytest.raises(NotFound):
        await end(caller, run_id, T0)


async def test_the_same_end_replayed_changes_nothing(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    body = {"total_rows": 10, "inserts": 4, "updates": 6}
    _, changed = await end(caller, run.id, T0 + 30 * SECOND, **body)
    assert changed is True
    again, changed = await end(caller, run.id, T0 + 30 * SECOND, **body)
    assert changed is False and again.id == run.id and again.status == RunStatus.SUCCEEDED
    # The same instant written another way is the same end.
    _, changed = await end(caller, run.id, "2024-01-01T12:00:30+02:00", **body)
    assert changed is False
    stats = await PipelineHourlyStats.filter(pipeline_id=pipeline.id)
    assert [(s.runs_succeeded, s.runs_failed) for s in stats] == [(1, 0)]


@pytest.mark.parametrize("change", [
    {"ok": False},
    {"at": T0 + 31 * SECOND},
    {"total_rows": 11},
    {"inserts": None},
])
async def test_a_different_end_of_an_ended_execution_is_a_conflict(caller, change):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    body: dict[str, Any] = {"total_rows": 10, "inserts": 4}
    await end(caller, run.id, T0 + 30 * SECOND, **body)
    after_first = await fresh(pipeline)
    at = change.pop("at", T0 + 30 * SECOND)
    ok = change.pop("ok", True)
    body.update(change)
    with pytest.raises(Conflict):
        await end(caller, run.id, at, ok=ok, **{k: v for k, v in body.items() if v is not None})
    stored = await Run.get(id=run.id)
    assert stored.status == RunStatus.SUCCEEDED and stored.finished_at == T0 + 30 * SECOND
    assert stored.rows_total == 10
    assert (await fresh(pipeline)).updated_at == after_first.updated_at
    stats = await PipelineHourlyStats.filter(pipeline_id=pipeline.id)
    assert [(s.runs_succeeded, s.runs_failed) for s in stats] == [(1, 0)]


async def test_roll_ups_count_each_end_once(caller):
    pipeline, _ = await make_pipeline(caller)
    runs = [await start(caller, pipeline.id, T0 + i * SECOND) for i in range(3)]
    await end(caller, runs[0].id, T0 + 100 * SECOND)
    await end(caller, runs[1].id, T0 + 100 * SECOND, ok=False)
    await end(caller, runs[2].id, T0 + 100 * SECOND)
    await end(caller, runs[2].id, T0 + 100 * SECOND)  # replay
    stats = await PipelineHourlyStats.filter(pipeline_id=pipeline.id)
    assert [(s.hour, s.runs_succeeded, s.runs_failed) for s in stats] == [(T0, 2, 1)]
    stored = await fresh(pipeline)
    assert stored.last_success_at == T0 + 100 * SECOND


async def test_a_webhook_delivery_is_enqueued_when_an_endpoint_exists(caller):
    pipeline, _ = await make_pipeline(caller)
    await webhooks.set_endpoint(caller=caller, url="http://127.0.0.1:9/x", allow_private=True)
    ok_run = await start(caller, pipeline.id, T0)
    await end(caller, ok_run.id, T0 + 10 * SECOND)
    await end(caller, ok_run.id, T0 + 10 * SECOND)  # replay: no second delivery
    failed_run = await start(caller, pipeline.id, T0)
    await end(caller, failed_run.id, T0 + 10 * SECOND, ok=False)

    deliveries = await WebhookDelivery.filter(organisation_id=caller.organisation_id
                                              ).order_by("id")
    assert [(d.run_id, d.event_type) for d in deliveries] == [
        (ok_run.id, "run.succeeded"), (failed_run.id, "run.failed")]
    payload = deliveries[0].payload
    assert payload["pipelineName"] == "load" and payload["status"] == "succeeded"


async def test_no_webhook_delivery_without_an_endpoint(caller, other):
    # Another organisation's endpoint does not apply.
    await webhooks.set_endpoint(caller=other, url="http://127.0.0.1:9/x", allow_private=True)
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    await end(caller, run.id, T0 + 10 * SECOND)
    assert await WebhookDelivery.all().count() == 0


# --- execution trees ----------------------------------------------------------------------


def shape(node) -> list:
    return [node.run.id, [shape(child) for child in node.children]]


async def test_a_root_without_children(caller):
    pipeline, _ = await make_pipeline(caller)
    root = await start(caller, pipeline.id, T0)
    tree = await execution_tree(caller=caller, run_id=root.id)
    assert tree.run.id == root.id and tree.children == []


async def test_direct_children_ordered_by_id(caller):
    """NOTES: an execution lists its direct children (roots too); a child's own children
    are not read (the original reads closure depth 1 and gives each child an empty list)."""
    pipeline, _ = await make_pipeline(caller)
    other_pipeline, _ = await make_pipeline(caller, name="other")
    root = await start(caller, pipeline.id, T0)
    a = await start(caller, pipeline.id, T0, parent_id=root.id)
    b = await start(caller, other_pipeline.id, T0, parent_id=root.id)
    b1 = await start(caller, pipeline.id, T0, parent_id=b.id)
    a1 = await start(caller, pipeline.id, T0, parent_id=a.id)
    a2 = await start(caller, pipeline.id, T0, parent_id=a.id)
    a1x = await start(caller, pipeline.id, T0, parent_id=a1.id)
    unrelated = await start(caller, pipeline.id, T0)
    await end(caller, b.id, T0 + SECOND)

    tree = await execution_tree(caller=caller, run_id=root.id)
    assert shape(tree) == [root.id, [[a.id, []], [b.id, []]]]
    assert tree.children[1].run.status == RunStatus.SUCCEEDED
    assert tree.children[1].run.pipeline_id == other_pipeline.id
    assert shape(await execution_tree(caller=caller, run_id=a.id)) == [
        a.id, [[a1.id, []], [a2.id, []]]]
    assert shape(await execution_tree(caller=caller, run_id=a1.id)) == [a1.id, [[a1x.id, []]]]
    assert shape(await execution_tree(caller=caller, run_id=b.id)) == [b.id, [[b1.id, []]]]
    assert shape(await execution_tree(caller=caller, run_id=unrelated.id)) == [unrelated.id, []]


@pytest.mark.parametrize("run_id", [999_999, 0, *HUGE_IDS])
async def test_unknown_execution_tree_is_not_found(caller, run_id):
    with pytest.raises(NotFound):
        await execution_tree(caller=caller, run_id=run_id)


# --- tenancy --------------------------------------------------------------------------------


async def test_pipeline_names_are_per_organisation(caller, other):
    mine, created_mine = await make_pipeline(caller, name="shared", next_watermark="m")
    theirs, created_theirs = await make_pipeline(other, name="shared", next_watermark="t")
    assert created_mine and created_theirs and mine.id != theirs.id
    assert (await fresh(mine)).next_watermark == "m"
    assert (await fresh(theirs)).next_watermark == "t"
    mine_type = await PipelineType.get(id=(await fresh(mine)).pipeline_type_id)
    theirs_type = await PipelineType.get(id=(await fresh(theirs)).pipeline_type_id)
    assert mine_type.organisation_id == caller.organisation_id
    assert theirs_type.organisation_id == other.organisation_id


async def test_another_organisations_pipelines_are_not_found(caller, other):
    mine, _ = await make_pipeline(caller, name="mine")
    theirs, _ = await make_pipeline(other, name="theirs")
    assert [p.id for p in await list_watcher_pipelines(caller=caller)] == [mine.id]
    assert [p.id for p in await list_watcher_pipelines(caller=other)] == [theirs.id]
    assert (await get_watcher_pipeline(caller=caller, pipeline_id=mine.id)).id == mine.id
    with pytest.raises(NotFound):
        await get_watcher_pipeline(caller=caller, pipeline_id=theirs.id)
    with pytest.raises(NotFound):
        await patch_pipeline(caller=caller, raw={"id": theirs.id, "active": False})
    with pytest.raises(NotFound):
        await patch_pipeline(caller=caller, raw={"name": "theirs", "active": False})
    assert (await fresh(theirs)).active is True
    with pytest.raises(NotFound):
        await start(caller, theirs.id)
    assert await Run.all().count() == 0


async def test_another_organisations_type_is_not_found_on_patch(caller, other):
    mine, _ = await make_pipeline(caller)
    their_type, _ = await get_or_create_type(caller=other, raw={"name": "theirs"})
    with pytest.raises(NotFound):
        await patch_pipeline(caller=caller, raw={"id": mine.id,
                                                 "pipeline_type_id": their_type.id})
    assert (await fresh(mine)).pipeline_type_id != their_type.id


async def test_another_organisations_executions_are_not_found(caller, other):
    theirs, _ = await make_pipeline(other)
    their_run = await start(other, theirs.id, T0)
    mine, _ = await make_pipeline(caller)
    with pytest.raises(NotFound):
        await end(caller, their_run.id, T0 + SECOND)
    with pytest.raises(NotFound):
        await execution_tree(caller=caller, run_id=their_run.id)
    with pytest.raises(NotFound):
        await start(caller, mine.id, T0, parent_id=their_run.id)
    assert (await Run.get(id=their_run.id)).status == RunStatus.RUNNING
    # Their children never show in my trees, and mine never in theirs.
    my_root = await start(caller, mine.id, T0)
    await start(other, theirs.id, T0, parent_id=their_run.id)
    assert (await execution_tree(caller=caller, run_id=my_root.id)).children == []
    assert len((await execution_tree(caller=other, run_id=their_run.id)).children) == 1


@pytest.mark.parametrize("pipeline_id", [999_999, 0, *HUGE_IDS])
async def test_unknown_pipeline_id_is_not_found(caller, pipeline_id):
    with pytest.raises(NotFound):
        await get_watcher_pipeline(caller=caller, pipeline_id=pipeline_id)



# --- edges: JSON that cannot be stored, pending runs, concurrency, scopes --------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
async def test_metadata_that_is_not_json_is_invalid_input(caller, bad):
    pipeline, _ = await make_pipeline(caller)
    with pytest.raises(InvalidInput) as exc:
        await make_pipeline(caller, name="other", pipeline_metadata={"x": [1, bad]})
    assert "pipeline_metadata" in exc.value.fields
    with pytest.raises(InvalidInput) as exc:
        await patch_pipeline(caller=caller, raw={"id": pipeline.id,
                                                 "pipeline_metadata": {"x": bad}})
    assert "pipeline_metadata" in exc.value.fields
    run = await start(caller, pipeline.id, T0)
    with pytest.raises(InvalidInput) as exc:
        await end(caller, run.id, T0 + SECOND, execution_metadata={"x": bad})
    assert "execution_metadata" in exc.value.fields
    assert (await Run.get(id=run.id)).status == RunStatus.RUNNING
    assert await Pipeline.filter(name="other").count() == 0


@pytest.mark.parametrize("name", [5, "", "x" * 151, ["load"]])
async def test_patch_by_malformed_name_is_invalid_input(caller, name):
    await make_pipeline(caller)
    with pytest.raises(InvalidInput) as exc:
        await patch_pipeline(caller=caller, raw={"name": name, "active": False})
    assert "name" in exc.value.fields


async def test_patch_rename_to_a_name_of_another_organisation(caller, other):
    await make_pipeline(other, name="theirs")
    mine, _ = await make_pipeline(caller, name="mine")
    await patch_pipeline(caller=caller, raw={"id": mine.id, "name": "theirs"})
    assert (await fresh(mine)).name == "theirs"


async def test_a_pending_run_cannot_be_ended(caller):
    pipeline, _ = await make_pipeline(caller)
    pending = await Run.create(organisation_id=caller.organisation_id,
                               pipeline_id=pipeline.id, status=RunStatus.PENDING)
    with pytest.raises(Conflict):
        await end(caller, pending.id, T0 + SECOND)
    stored = await Run.get(id=pending.id)
    assert stored.status == RunStatus.PENDING and stored.finished_at is None
    assert await PipelineHourlyStats.all().count() == 0
    assert (await fresh(pipeline)).load_lineage is True


async def test_pipeline_updated_at_of_an_end_is_when_it_was_reported(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    reported = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
    await end_execution(caller=caller, now=reported, raw={
        "id": run.id, "end_date": T0 + SECOND, "completed_successfully": True, "inserts": 1})
    stored = await fresh(pipeline)
    assert stored.updated_at == reported
    assert stored.last_target_insert == T0 + SECOND
    assert (await Run.get(id=run.id)).updated_at is not None


async def test_anomaly_detection_is_enqueued_after_successes_with_active_rules(caller):
    pipeline, _ = await make_pipeline(caller)
    plain, _ = await make_pipeline(caller, name="no-rules")
    await AnomalyRule.create(organisation_id=caller.organisation_id, pipeline_id=pipeline.id,
                             metric_field="total_rows")
    ok_run = await start(caller, pipeline.id, T0)
    await end(caller, ok_run.id, T0 + SECOND, total_rows=5)
    await end(caller, ok_run.id, T0 + SECOND, total_rows=5)  # replay
    failed_run = await start(caller, pipeline.id, T0)
    await end(caller, failed_run.id, T0 + SECOND, ok=False)
    plain_run = await start(caller, plain.id, T0)
    await end(caller, plain_run.id, T0 + SECOND)
    queued = await Task.filter(kind=tasks.ANOMALY)
    assert [(t.organisation_id, t.payload) for t in queued] == [
        (caller.organisation_id, {"run_id": ok_run.id})]


async def test_concurrent_get_or_create_creates_once(caller):
    pipelines = await asyncio.gather(*(make_pipeline(caller, name="c", type_name="ct")
                                       for _ in range(6)))
    assert len({p.id for p, _ in pipelines}) == 1
    assert sorted(created for _, created in pipelines) == [False] * 5 + [True]
    types = await asyncio.gather(*(get_or_create_type(caller=caller, raw={"name": "tt"})
                                   for _ in range(6)))
    assert len({t.id for t, _ in types}) == 1
    assert sorted(created for _, created in types) == [False] * 5 + [True]
    assert await Pipeline.filter(name="c").count() == 1
    assert await PipelineType.filter(organisation_id=caller.organisation_id).count() == 2


async def test_concurrent_ends_end_once(caller):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    same = await asyncio.gather(*(end(caller, run.id, T0 + SECOND, total_rows=3)
                                  for _ in range(4)))
    assert sorted(changed for _, changed in same) == [False, False, False, True]

    second = await start(caller, pipeline.id, T0)
    outcomes = await asyncio.gather(*(end(caller, second.id, T0 + SECOND, total_rows=n)
                                      for n in range(4)), return_exceptions=True)
    assert sum(isinstance(o, tuple) and o[1] for o in outcomes) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, tuple))
    stats = await PipelineHourlyStats.filter(pipeline_id=pipeline.id)
    assert [(s.runs_succeeded, s.runs_failed) for s in stats] == [(2, 0)]


async def test_writes_need_a_writer_token(caller, tenant):
    pipeline, _ = await make_pipeline(caller)
    run = await start(caller, pipeline.id, T0)
    reader = Caller(organisation_id=tenant.org_id, scopes=frozenset({Scope.READ}))
    for call in (
        lambda: get_or_create_type(caller=reader, raw={"name": "t"}),
        lambda: make_pipeline(reader, name="r"),
        lambda: patch_pipeline(caller=reader, raw={"id": pipeline.id, "active": False}),
        lambda: start(reader, pipeline.id),
        lambda: end(reader, run.id, T0 + SECOND),
    ):
        with pytest.raises(PermissionDenied):
            await call()
    assert [p.id for p in await list_watcher_pipelines(caller=reader)] == [pipeline.id]
    assert (await execution_tree(caller=reader, run_id=run.id)).run.id == run.id

    reporter = Caller(organisation_id=tenant.org_id, scopes=frozenset({Scope.REPORT}))
    child = await start(reporter, pipeline.id, T0, parent_id=run.id)
    _, changed = await end(reporter, child.id, T0 + SECOND)
    assert changed
    writer = Caller(organisation_id=tenant.org_id, scopes=frozenset({Scope.WRITE}))
    assert (await make_pipeline(writer, name="w"))[1] is True


# ------------------------------------------------------- PATCH /pipeline_type, /address_type


async def test_patch_type_by_name_changes_settings_and_mutes(caller, other):
    """Issue 11: the original's `PATCH /pipeline_type` (by `id`, or else `name`)."""
    created, _ = await get_or_create_type(caller=caller, raw={"name": "extraction"})
    changed = await patch_type(caller=caller, raw={
        "name": "extraction", "freshness_number": 3, "freshness_datepart": "hour",
        "mute_freshness_check": True})
    stored = await PipelineType.get(id=created.id)
    assert changed.id == created.id
    assert (stored.freshness_number, stored.freshness_datepart, stored.mute_freshness_check,
            stored.mute_timeliness_check) == (3, "hour", True, False)
    assert stored.updated_at is not None
    await patch_type(caller=caller, raw={"id": created.id, "freshness_number": None,
                                         "freshness_datepart": None})
    stored = await PipelineType.get(id=created.id)
    assert (stored.freshness_number, stored.freshness_datepart) == (None, None)
    with pytest.raises(InvalidInput) as exc:
        await patch_type(caller=caller, raw={"id": created.id, "timeliness_number": 2})
    assert exc.value.fields == {"timeliness_number": [BOTH_TIMELINESS]}
    with pytest.raises(InvalidInput) as exc:
        await patch_type(caller=caller, raw={"mute_timeliness_check": True})
    assert exc.value.fields == {"id": ["Either 'id' or 'name' must be provided"]}
    with pytest.raises(NotFound):
        await patch_type(caller=other, raw={"id": created.id, "mute_timeliness_check": True})
    assert (await PipelineType.get(id=created.id)).mute_timeliness_check is False


async def test_patch_address_type_renames_and_regroups(caller, other):
    from runwatch.models import AddressType
    from tests.watcher_wire import get_or_create_address_type
    created, _ = await get_or_create_address_type(caller=caller,
                                                  raw={"name": "s3", "group_name": "files"})
    await patch_address_type(caller=caller, raw={"name": "s3", "group_name": "lake"})
    await patch_address_type(caller=caller, raw={"id": created.id, "name": "gcs"})
    stored = await AddressType.get(id=created.id)
    assert (stored.name, stored.group_name) == ("gcs", "lake")
    with pytest.raises(NotFound):
        await patch_address_type(caller=other, raw={"name": "gcs", "group_name": "x"})
