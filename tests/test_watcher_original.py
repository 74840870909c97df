"""What a client written against the original Watcher server sees from runwatch (issue 11):
pydantic's validation messages, `POST /address` as an upsert that updates, `PATCH
/address_type` and `PATCH /pipeline_type`, the end of an already-ended execution, honest log
cleanup, anomaly histories with equal start times. Each test states the original's documented
behaviour (NOTES.md, Watcher section) or runwatch's documented deviation from it (README)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from runwatch.models import Pipeline
from tests.test_watcher_rest import end, execution, get, make_pipeline, patch, pipeline, post, start

T0 = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def messages(r: Any) -> list[tuple[list[Any], str, str]]:
    assert r.status_code == 422, r.text
    return [(item["loc"], item["msg"], item["type"]) for item in r.json()["detail"]]


# ------------------------------------------------------------ 1. pydantic's wording, its case


@pytest.mark.parametrize("path", ["/pipeline", "/address"])
async def test_patch_without_id_or_name_has_pydantics_value_error(client, tenant, path):
    r = await patch(client, tenant, path, {"watermark": "X"})
    assert messages(r) == [(["body", "id"],
                            "Value error, Either 'id' or 'name' must be provided",
                            "value_error")]


@pytest.mark.parametrize("check", ["freshness", "timeliness"])
@pytest.mark.parametrize("path,base", [
    ("/pipeline", {"name": "p", "pipeline_type_name": "t"}),
    ("/pipeline_type", {"name": "t"}),
])
async def test_half_a_check_config_has_pydantics_value_error(client, tenant, path, base, check):
    r = await post(client, tenant, path, {**base, f"{check}_number": 3})
    assert (["body", f"{check}_number"],
            f"Value error, Both {check}_number and {check}_datepart must be provided together",
            "value_error") in messages(r)


async def test_missing_fields_and_wrong_types_have_pydantics_messages(client, tenant):
    r = await post(client, tenant, "/pipeline", {"pipeline_type_name": "T"})
    assert messages(r) == [(["body", "name"], "Field required", "missing")]
    r = await post(client, tenant, "/end_pipeline_execution",
                   {"id": "seven", "end_date": "2024-01-01T00:00:00Z",
                    "completed_successfully": "yes"})
    assert messages(r) == [(["body", "id"], "Input should be a valid integer, unable to "
                            "parse string as an integer", "int_parsing")]  # "yes" is true
    r = await patch(client, tenant, "/pipeline", {"name": "p", "active": "maybe"})
    assert messages(r) == [(["body", "active"], "Input should be a valid boolean, unable to "
                            "interpret input", "bool_parsing")]
    r = await post(client, tenant, "/pipeline", {"name": "p", "pipeline_type_name": "t",
                                                 "freshness_number": 1,
                                                 "freshness_datepart": "fortnight"})
    assert messages(r) == [(["body", "freshness_datepart"], "Input should be 'minute', "
                            "'hour', 'day', 'week', 'month' or 'year'", "enum")]
    r = await post(client, tenant, "/log_cleanup", {"retention_days": 30})
    assert messages(r) == [(["body", "retention_days"],
                            "Input should be greater than or equal to 90",
                            "greater_than_equal")]


# The original's request models read values in pydantic's lax mode; a model of the same
# field types, here, says what the original answers (runwatch's 422 must carry the same
# `type` and `msg` at the same `loc`).
class StartModel(BaseModel):
    pipeline_id: int
    start_date: datetime | None = None
    parent_id: int | None = None


class EndModel(BaseModel):
    id: int
    end_date: datetime
    completed_successfully: bool
    inserts: Annotated[int, Field(ge=0)] | None = None
    total_rows: Annotated[int, Field(ge=0)] | None = None


class PipelineModel(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=150)]
    pipeline_type_name: Annotated[str, Field(min_length=1, max_length=150)]
    freshness_number: Annotated[int, Field(gt=0)] | None = None
    freshness_datepart: str | None = None


class RuleModel(BaseModel):
    pipeline_id: int
    metric_field: str
    z_threshold: Annotated[float, Field(ge=1.0, le=10.0)] = 3.0
    lookback_days: Annotated[int, Field(ge=1, le=365)] = 30
    active: bool = True


class LookbackModel(BaseModel):
    lookback_minutes: Annotated[int, Field(ge=5)] = 60


LAX_REFUSED = [
    ("/start_pipeline_execution", StartModel, {"pipeline_id": "seven"}),
    ("/start_pipeline_execution", StartModel, {"pipeline_id": 1.5}),
    ("/start_pipeline_execution", StartModel, {"pipeline_id": "1", "parent_id": "x"}),
    ("/start_pipeline_execution", StartModel, {"pipeline_id": 1, "start_date": "yesterday"}),
    ("/start_pipeline_execution", StartModel, {"pipeline_id": 1, "start_date": "2024-02-30"}),
    ("/end_pipeline_execution", EndModel,
     {"id": 1, "end_date": "2024-01-02", "completed_successfully": "maybe"}),
    ("/end_pipeline_execution", EndModel,
     {"id": 1, "end_date": "2024-01-02", "completed_successfully": 2}),
    ("/end_pipeline_execution", EndModel,
     {"id": 1, "end_date": "2024-01-02", "completed_successfully": True, "inserts": -1}),
    ("/end_pipeline_execution", EndModel,
     {"id": 1, "end_date": "2024-01-02", "completed_successfully": True, "total_rows": 2.5}),
    ("/end_pipeline_execution", EndModel,
     {"id": 1, "end_date": "2024-01-02", "completed_successfully": True, "inserts": "-3",
      "total_rows": "lots"}),
    ("/pipeline", PipelineModel, {"name": "x" * 151, "pipeline_type_name": "t"}),
    ("/pipeline", PipelineModel, {"name": "p", "pipeline_type_name": "  "}),
    ("/pipeline", PipelineModel, {"name": 5, "pipeline_type_name": "t"}),
    ("/pipeline", PipelineModel, {"name": "p", "pipeline_type_name": "t",
                                  "freshness_number": 0, "freshness_datepart": "hour"}),
    ("/pipeline", PipelineModel, {"name": "p", "pipeline_type_name": "t",
                                  "freshness_number": "1.5", "freshness_datepart": "hour"}),
    ("/anomaly_detection_rule", RuleModel,
     {"pipeline_id": 1, "metric_field": "total_rows", "z_threshold": "11"}),
    ("/anomaly_detection_rule", RuleModel,
     {"pipeline_id": 1, "metric_field": "total_rows", "lookback_days": "0"}),
    ("/anomaly_detection_rule", RuleModel,
     {"pipeline_id": 1, "metric_field": "total_rows", "active": "maybe"}),
    ("/timeliness", LookbackModel, {"lookback_minutes": "4"}),
    ("/timeliness", LookbackModel, {"lookback_minutes": "sixty"}),
]


@pytest.mark.parametrize("path,model,body", LAX_REFUSED)
async def test_refused_values_have_pydantics_lax_type_and_message(client, tenant, path, model,
                                                                   body):
    normalised = {k: v.strip().lower() if isinstance(v, str) else v for k, v in body.items()}
    with pytest.raises(ValidationError) as refused:
        model.model_validate(normalised)
    expected = [(["body", *e["loc"]], e["msg"], e["type"]) for e in refused.value.errors()]
    assert messages(await post(client, tenant, path, body)) == expected


async def test_lax_values_are_accepted_as_the_original_reads_them(client, tenant):
    pid = await make_pipeline(client, tenant, next_watermark="w1")
    r = await post(client, tenant, "/start_pipeline_execution",
                   {"pipeline_id": str(pid), "start_date": "2024-01-01"})
    assert r.status_code == 201, r.text
    root = r.json()["id"]
    r = await post(client, tenant, "/start_pipeline_execution",
                   {"pipeline_id": float(pid), "parent_id": f" {root} ",
                    "start_date": 1704103200})  # epoch seconds: 2024-01-01T10:00:00Z
    assert r.status_code == 201, r.text
    child = r.json()["id"]
    r = await post(client, tenant, "/end_pipeline_execution", {
        "id": str(child), "end_date": "1704103260", "completed_successfully": "yes",
        "inserts": "5", "total_rows": 6.0, "updates": True})
    assert r.status_code == 204, r.text
    r = await post(client, tenant, "/end_pipeline_execution", {
        "id": root, "end_date": "2024-01-02", "completed_successfully": "true"})
    assert r.status_code == 204, r.text
    body = await execution(client, tenant, root)
    assert (body["start_date"], body["end_date"], body["completed_successfully"]) == (
        "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", True)
    [kid] = body["child_executions"]
    assert (kid["start_date"], kid["end_date"], kid["duration_seconds"]) == (
        "2024-01-01T10:00:00Z", "2024-01-01T10:01:00Z", 60)
    assert (kid["inserts"], kid["updates"], kid["total_rows"]) == (5, 1, 6)
    assert (await pipeline(client, tenant, pid))["watermark"] == "w1"
    r = await patch(client, tenant, "/pipeline", {"id": str(pid), "active": "off",
                                                  "freshness_number": "2",
                                                  "freshness_datepart": "day"})
    assert r.status_code == 200, r.text
    assert (r.json()["active"], r.json()["freshness_number"]) == (False, 2)
    r = await post(client, tenant, "/timeliness", {"lookback_minutes": "30"})
    assert r.status_code == 200, r.text
    r = await post(client, tenant, "/log_cleanup", {"retention_days": "90.0"})
    assert r.status_code == 200, r.text


async def test_unreadable_bodies_have_fastapis_messages(client, tenant):
    headers = {**tenant.headers("write"), "content-type": "application/json"}
    r = await client.post("/pipeline", content=b"{nope", headers=headers)
    assert messages(r) == [(["body", 0], "JSON decode error", "json_invalid")]
    r = await client.post("/pipeline", content=b"", headers=headers)
    assert messages(r) == [(["body"], "Field required", "missing")]
    r = await client.post("/pipeline", content=b"[1]", headers=headers)
    assert messages(r) == [(["body"], "Input should be a valid dictionary or object to extract "
                                      "fields from", "model_attributes_type")]
    r = await get(client, tenant, "/pipeline/abc")
    assert messages(r) == [(["path", "pipeline_id"], "Input should be a valid integer, unable "
                            "to parse string as an integer", "int_parsing")]


async def test_top_level_strings_are_still_lower_cased(client, tenant):
    """NOTES.md: top-level strings are lower-cased; only the nested messages keep their case."""
    pid = await make_pipeline(client, tenant, name="Mixed Case", type_name="Extraction")
    assert (await pipeline(client, tenant, pid))["name"] == "mixed case"


# ------------------------------------------------------------ 2. upserts that update


async def test_post_address_on_an_existing_name_updates_the_changed_fields(client, tenant):
    body = {"name": "Warehouse.Sales.Orders", "address_type_name": "postgres",
            "address_type_group_name": "database"}
    r = await post(client, tenant, "/address", body)
    assert r.status_code == 201
    aid = r.json()["id"]
    first = (await get(client, tenant, f"/address/{aid}")).json()
    assert first["updated_at"] is None and first["primary_key"] is None
    # The same body again: found, nothing changed, `updated_at` stays null.
    r = await post(client, tenant, "/address", body)
    assert (r.status_code, r.json()) == (200, {"id": aid})
    assert (await get(client, tenant, f"/address/{aid}")).json() == first
    # A new type, a primary key and metadata: stored, the type created, `updated_at` set.
    r = await post(client, tenant, "/address", {
        **body, "address_type_name": "Snowflake", "primary_key": "order_id",
        "address_metadata": {"Owner": "Sales"}})
    assert (r.status_code, r.json()) == (200, {"id": aid})
    after = (await get(client, tenant, f"/address/{aid}")).json()
    types = {t["name"]: t for t in (await get(client, tenant, "/address_type")).json()}
    assert set(types) == {"postgres", "snowflake"}
    assert types["snowflake"]["group_name"] == "database"
    assert after["address_type_id"] == types["snowflake"]["id"]
    assert after["primary_key"] == "order_id"
    assert after["address_metadata"] == {"Owner": "Sales"}  # nested: its case kept
    assert (after["database_name"], after["schema_name"], after["table_name"]) == (
        "warehouse", "sales", "orders")
    assert after["updated_at"] is not None and after["created_at"] == first["created_at"]


async def test_post_pipeline_updates_only_fields_sent_and_changed(client, tenant):
    pid = await make_pipeline(client, tenant, name="p", type_name="t",
                              pipeline_metadata={"a": 1})
    assert (await pipeline(client, tenant, pid))["updated_at"] is None
    r = await post(client, tenant, "/pipeline", {"name": "p", "pipeline_type_name": "t",
                                                 "pipeline_metadata": {"a": 1}})
    assert r.status_code == 200
    assert (await pipeline(client, tenant, pid))["updated_at"] is None
    r = await post(client, tenant, "/pipeline", {"name": "p", "pipeline_type_name": "t2",
                                                 "freshness_number": 2,
                                                 "freshness_datepart": "Day"})
    assert r.status_code == 200
    after = await pipeline(client, tenant, pid)
    assert (after["freshness_number"], after["freshness_datepart"]) == (2, "day")
    assert after["pipeline_metadata"] == {"a": 1}  # not sent: kept
    assert after["updated_at"] is not None


@pytest.mark.parametrize("path,body,change", [
    ("/pipeline_type", {"name": "t"}, {"freshness_number": 1, "freshness_datepart": "hour",
                                       "mute_freshness_check": True}),
    ("/address_type", {"name": "s3", "group_name": "files"}, {"group_name": "database"}),
])
async def test_post_type_on_an_existing_name_never_updates(client, tenant, path, body, change):
    r = await post(client, tenant, path, body)
    assert r.status_code == 201
    tid = r.json()["id"]
    before = (await get(client, tenant, f"{path}/{tid}")).json()
    r = await post(client, tenant, path, {**body, **change})
    assert (r.status_code, r.json()) == (200, {"id": tid})
    assert (await get(client, tenant, f"{path}/{tid}")).json() == before


# ------------------------------------------------------------ 3. PATCH the types


async def test_patch_pipeline_type_by_name_or_id_changes_settings_and_mutes(client, tenant):
    r = await post(client, tenant, "/pipeline_type", {"name": "extraction"})
    tid = r.json()["id"]
    r = await patch(client, tenant, "/pipeline_type", {
        "name": "Extraction", "freshness_number": 2, "freshness_datepart": "Day",
        "mute_timeliness_check": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["freshness_number"], body["freshness_datepart"],
            body["mute_timeliness_check"], body["mute_freshness_check"]) == (
        tid, 2, "day", True, False)
    assert body["updated_at"] is not None
    r = await patch(client, tenant, "/pipeline_type", {
        "id": tid, "timeliness_number": 30, "timeliness_datepart": "minute",
        "mute_timeliness_check": False})
    assert r.status_code == 200
    stored = (await get(client, tenant, f"/pipeline_type/{tid}")).json()
    assert (stored["timeliness_number"], stored["timeliness_datepart"],
            stored["mute_timeliness_check"], stored["freshness_number"]) == (30, "minute",
                                                                            False, 2)
    r = await patch(client, tenant, "/pipeline_type", {"id": tid, "freshness_number": 1})
    assert (["body", "freshness_number"], "Value error, Both freshness_number and "
            "freshness_datepart must be provided together", "value_error") in messages(r)
    r = await patch(client, tenant, "/pipeline_type", {"mute_freshness_check": True})
    assert messages(r)[0][1] == "Value error, Either 'id' or 'name' must be provided"
    r = await patch(client, tenant, "/pipeline_type", {"name": "nope", "mute_freshness_check":
                                                       True})
    assert (r.status_code, r.json()) == (404, {"detail": "pipeline type not found"})


async def test_a_muted_type_mutes_its_pipelines_timeliness(client, tenant, settings):
    """The point of PATCH /pipeline_type: muting a type after creating it is seen by the
    timeliness check (pipeline and type must both be unmuted); unmuting it brings it back."""
    from runwatch.models import TimelinessLog
    from runwatch.services.tasks import TaskRunner
    pid = await make_pipeline(client, tenant, name="p", type_name="t", timeliness_number=1,
                              timeliness_datepart="minute")
    await start(client, tenant, pid, datetime.now(UTC) - timedelta(minutes=10))
    r = await patch(client, tenant, "/pipeline_type", {"name": "t",
                                                       "mute_timeliness_check": True})
    assert r.status_code == 200
    assert (await post(client, tenant, "/timeliness", {"lookback_minutes": 60})).status_code \
        == 200
    await TaskRunner(settings).run_due()
    assert await TimelinessLog.all().count() == 0
    await patch(client, tenant, "/pipeline_type", {"name": "t", "mute_timeliness_check": False})
    await post(client, tenant, "/timeliness", {"lookback_minutes": 60})
    await TaskRunner(settings).run_due()
    assert await TimelinessLog.filter(pipeline_id=pid).count() == 1


async def test_patch_address_type_by_name_or_id(client, tenant, other_tenant):
    r = await post(client, tenant, "/address_type", {"name": "s3", "group_name": "files"})
    tid = r.json()["id"]
    r = await patch(client, tenant, "/address_type", {"name": "S3", "group_name": "Database"})
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["group_name"]) == (tid, "database")
    assert r.json()["updated_at"] is not None
    r = await patch(client, tenant, "/address_type", {"id": tid, "name": "gcs"})
    assert (r.status_code, r.json()["name"]) == (200, "gcs")
    # Another organisation's type is not found.
    r = await patch(client, other_tenant, "/address_type", {"id": tid, "name": "x"})
    assert (r.status_code, r.json()) == (404, {"detail": "address type not found"})
    r = await patch(client, tenant, "/address_type", {"group_name": "x"})
    assert messages(r)[0][1] == "Value error, Either 'id' or 'name' must be provided"


async def test_update_pipeline_type_over_graphql(client, tenant):
    r = await post(client, tenant, "/pipeline_type", {"name": "t"})
    tid = r.json()["id"]
    query = """mutation($input: UpdatePipelineTypeInput!) { updatePipelineType(input: $input) {
      __typename ... on PipelineTypeSuccess { pipelineType { id freshnessNumber
        freshnessDatepart muteFreshnessCheck } }
      ... on InvalidInputError { fieldErrors { field messages } } } }"""
    r = await client.post("/graphql", headers=tenant.headers("report"), json={
        "query": query, "variables": {"input": {
            "id": str(tid), "freshnessNumber": 6, "freshnessDatepart": "hour",
            "muteFreshnessCheck": True}}})
    result = r.json()["data"]["updatePipelineType"]
    assert result == {"__typename": "PipelineTypeSuccess", "pipelineType": {
        "id": str(tid), "freshnessNumber": 6, "freshnessDatepart": "hour",
        "muteFreshnessCheck": True}}
    r = await client.post("/graphql", headers=tenant.headers("report"), json={
        "query": query, "variables": {"input": {"id": str(tid), "freshnessNumber": 6}}})
    assert r.json()["data"]["updatePipelineType"]["__typename"] == "InvalidInputError"
    r = await client.post("/graphql", headers=tenant.headers("read"), json={
        "query": query.replace("... on InvalidInputError", "... on Error { message } "
                               "... on InvalidInputError"),
        "variables": {"input": {"id": str(tid), "muteFreshnessCheck": False}}})
    assert r.json()["data"]["updatePipelineType"]["__typename"] == "PermissionDeniedError"


# ------------------------------------------------------------ 4. ending an ended execution


async def sync(client, tenant, mark: str, **fields: Any) -> dict[str, Any]:
    r = await post(client, tenant, "/pipeline", {"name": "orders", "pipeline_type_name": "t",
                                                 "next_watermark": mark, **fields})
    assert r.status_code in (200, 201), r.text
    return r.json()


async def test_watermark_hand_off_for_executions_started_and_ended_once(client, tenant):
    """The original's hand-off (NOTES.md): `POST /pipeline` answers the stored watermark;
    a successful end copies the pipeline's `next_watermark` (as it is when the end arrives)
    into `watermark`, stamps `last_target_*` with the end date for each count above 0, and
    turns `load_lineage` off; a failed end changes none of these."""
    assert (await sync(client, tenant, "2024-01-01"))["watermark"] is None
    pid = (await sync(client, tenant, "2024-01-01"))["id"]
    await patch(client, tenant, "/pipeline", {"id": pid, "load_lineage": True})
    first = await start(client, tenant, pid, T0)
    await end(client, tenant, first, T0 + 60 * SECOND, inserts=5, updates=0)
    p = await pipeline(client, tenant, pid)
    assert (p["watermark"], p["load_lineage"]) == ("2024-01-01", False)
    assert p["last_target_insert"] == "2024-01-01T10:01:00Z"
    assert (p["last_target_update"], p["last_target_soft_delete"]) == (None, None)
    assert (await sync(client, tenant, "2024-01-02"))["watermark"] == "2024-01-01"
    # Two executions overlap; the next watermark moves between their starts: each end takes
    # the pipeline's `next_watermark` of that moment.
    a = await start(client, tenant, pid, T0 + 3600 * SECOND)
    b = await start(client, tenant, pid, T0 + 3660 * SECOND)
    assert (await sync(client, tenant, "2024-01-03"))["watermark"] == "2024-01-01"
    await end(client, tenant, a, T0 + 3700 * SECOND, updates=2)
    p = await pipeline(client, tenant, pid)
    assert (p["watermark"], p["last_target_update"]) == ("2024-01-03", "2024-01-01T11:01:40Z")
    assert p["last_target_insert"] == "2024-01-01T10:01:00Z"
    await sync(client, tenant, "2024-01-04")
    await end(client, tenant, b, T0 + 3800 * SECOND, ok=False, soft_deletes=3)
    p = await pipeline(client, tenant, pid)
    assert (p["watermark"], p["last_target_soft_delete"]) == ("2024-01-03", None)
    assert (await execution(client, tenant, b))["completed_successfully"] is False


async def test_a_second_end_is_a_no_op_or_a_conflict(client, tenant):
    """Deviation (README): the original applies a second end (its hand-off moves again) and
    answers 204; runwatch never changes a finished run: the same end again is a 204 no-op,
    a different one 409, and the pipeline does not move."""
    pid = (await sync(client, tenant, "1"))["id"]
    run = await start(client, tenant, pid, T0)
    await end(client, tenant, run, T0 + 10 * SECOND, inserts=1)
    await sync(client, tenant, "2")
    before = await pipeline(client, tenant, pid)
    await end(client, tenant, run, T0 + 10 * SECOND, inserts=1)  # the same end: 204
    assert await pipeline(client, tenant, pid) == before
    r = await end(client, tenant, run, T0 + 20 * SECOND, expect=409, inserts=1)
    assert r.json()["detail"]
    assert await pipeline(client, tenant, pid) == before
    assert before["watermark"] == "1"
    assert (await execution(client, tenant, run))["end_date"] == "2024-01-01T10:00:10Z"


# ------------------------------------------------------------ 5. log cleanup, honestly


async def test_cleanup_says_what_it_kept_and_an_open_execution_stays(client, tenant):
    """The original deletes an open execution started 95 days ago (retention 90). runwatch
    never deletes an open run, and says so (`kept_open`); a Watcher execution has no
    default deadline (the original has no timeout), so it stays open until its job ends it,
    unless its pipeline sets a maximum runtime: then the reaper times it out (finished at
    its deadline, 95 days ago) and the next cleanup deletes it like the original. The
    latest run of a pipeline stays (`kept_latest`)."""
    from runwatch.services.reaper import reap_stuck_runs
    now = datetime.now(UTC)
    pid = await make_pipeline(client, tenant, name="busy")
    stuck = await start(client, tenant, pid, now - timedelta(days=95))
    recent = await start(client, tenant, pid, now - timedelta(hours=1))
    await end(client, tenant, recent, now - timedelta(minutes=30))
    lonely_pid = await make_pipeline(client, tenant, name="lonely")
    last = await start(client, tenant, lonely_pid, now - timedelta(days=200))
    await end(client, tenant, last, now - timedelta(days=200) + SECOND)

    r = await post(client, tenant, "/log_cleanup", {"retention_days": 90})
    assert r.status_code == 200
    answer = r.json()
    assert answer["total_pipeline_executions_deleted"] == 0
    assert (answer["kept_open"], answer["kept_latest"]) == (1, 1)
    assert (await execution(client, tenant, stuck))["end_date"] is None
    assert await reap_stuck_runs(now=now) == 0  # no deadline: still open, still kept

    # With a maximum runtime set on its pipeline (GraphQL updatePipeline), a new execution
    # that never ends is timed out and then cleaned.
    await Pipeline.filter(id=pid).update(max_runtime_seconds=3600)
    capped = await start(client, tenant, pid, now - timedelta(days=95))
    newer = await start(client, tenant, pid, now - timedelta(minutes=20))  # the latest now
    await end(client, tenant, newer, now - timedelta(minutes=10))
    assert await reap_stuck_runs(now=now) == 1
    timed_out = await execution(client, tenant, capped)
    assert timed_out["status"] == "timed_out" and timed_out["completed_successfully"] is False
    assert timed_out["end_date"] < (now - timedelta(days=90)).isoformat()

    r = await post(client, tenant, "/log_cleanup", {"retention_days": 90})
    answer = r.json()
    assert answer["total_pipeline_executions_deleted"] == 1
    assert (answer["kept_open"], answer["kept_latest"]) == (1, 1)
    assert (await get(client, tenant, f"/pipeline_execution/{capped}")).status_code == 404
    assert (await get(client, tenant, f"/pipeline_execution/{stuck}")).status_code == 200
    assert (await get(client, tenant, f"/pipeline_execution/{last}")).status_code == 200


# ------------------------------------------------------------ 6. equal start times


async def test_executions_with_one_start_time_still_form_a_history(client, tenant, settings):
    """Loaders that stamp every execution of a batch with the batch's start time (the
    original's own fixtures do) get their outlier flagged: runs with the same start and a
    lower id are its history; the run itself is left out by its id."""
    from runwatch.models import AnomalyResult
    from runwatch.services.tasks import TaskRunner
    pid = await make_pipeline(client, tenant)
    r = await post(client, tenant, "/anomaly_detection_rule", {
        "pipeline_id": pid, "metric_field": "total_rows", "z_threshold": 2,
        "minimum_executions": 5})
    assert r.status_code == 201
    ids = []
    for rows in (100, 104, 98, 101, 97, 5000):
        eid = await start(client, tenant, pid, T0)
        await end(client, tenant, eid, T0 + 30 * SECOND, total_rows=rows)
        ids.append(eid)
    await TaskRunner(settings).run_due()
    flags = [(await execution(client, tenant, eid))["anomaly_flags"] for eid in ids]
    assert flags == [None] * 5 + [{"total_rows": True}]
    [result] = await AnomalyResult.filter(run_id=ids[-1])
    assert result.points == 5 and result.mean == pytest.approx(100.0)
