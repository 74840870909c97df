"""The Watcher contract over REST (`runwatch/rest_shim/watcher.py`): every documented endpoint
under its documented path, the wire conventions (lower-cased top-level strings, 422 validation
errors, 404 for unknown ids, 400 for an end before its start), the bodies of the document,
get-or-create, the watermark hand-off, change detection, lineage gating, the anomaly flow,
the checks, log cleanup, queue monitoring, authentication, tenancy and the configurable
prefix."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from runwatch.app import create_app
from runwatch.models import (
    Address,
    AddressLineage,
    AddressType,
    AnomalyResult,
    AnomalyRule,
    FreshnessLog,
    Pipeline,
    PipelineType,
    Run,
    Task,
    TimelinessLog,
)
from runwatch.resolvers import tasks as tasks_api
from runwatch.rest_shim import watcher as watcher_shim
from runwatch.services.tasks import TaskRunner
from tests.conftest import Tenant

T0 = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)

PIPELINE_KEYS = {
    "id", "name", "pipeline_type_id", "watermark", "next_watermark", "pipeline_metadata",
    "last_target_insert", "last_target_update", "last_target_soft_delete", "freshness_number",
    "freshness_datepart", "mute_freshness_check", "timeliness_number", "timeliness_datepart",
    "mute_timeliness_check", "load_lineage", "active", "created_at", "updated_at",
}
TYPE_KEYS = {
    "id", "name", "freshness_number", "freshness_datepart", "mute_freshness_check",
    "timeliness_number", "timeliness_datepart", "mute_timeliness_check", "created_at",
    "updated_at",
}
# The document's execution fields, plus runwatch's additions.
EXECUTION_KEYS = {
    "id", "parent_id", "pipeline_id", "start_date", "end_date", "duration_seconds",
    "completed_successfully", "inserts", "updates", "soft_deletes", "total_rows", "watermark",
    "next_watermark", "execution_metadata", "anomaly_flags", "throughput", "child_executions",
} | {"hour_recorded", "date_recorded", "status"}
# The document's address fields (with `address_metadata`, lost in its rendering), plus
# runwatch's `namespace`.
ADDRESS_KEYS = {
    "id", "name", "address_type_id", "database_name", "schema_name", "table_name",
    "primary_key", "address_metadata", "created_at", "updated_at",
} | {"namespace"}
ADDRESS_TYPE_KEYS = {"id", "name", "group_name", "created_at", "updated_at"}
RULE_KEYS = {
    "id", "pipeline_id", "metric_field", "z_threshold", "lookback_days", "minimum_executions",
    "active", "created_at", "updated_at",
}
COUNTERS = {
    "total_pipeline_executions_deleted", "total_timeliness_pipeline_execution_logs_deleted",
    "total_anomaly_detection_results_deleted", "total_pipeline_execution_closure_parent_deleted",
    "total_pipeline_execution_closure_child_deleted", "total_freshness_pipeline_logs_deleted",
} | {"kept_open", "kept_latest", "kept_failure_streak", "kept_freshness_logs"}  # issue 11


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------ helpers


async def call(client: httpx.AsyncClient, tenant: Tenant | None, method: str, path: str,
               body: Any = None, scopes: str = "write") -> httpx.Response:
    headers = tenant.headers(scopes) if tenant is not None else {}
    if body is None:
        return await client.request(method, path, headers=headers)
    return await client.request(method, path, json=body, headers=headers)


async def post(client, tenant, path, body=None, scopes="write") -> httpx.Response:
    return await call(client, tenant, "POST", path, body, scopes)


async def patch(client, tenant, path, body=None, scopes="write") -> httpx.Response:
    return await call(client, tenant, "PATCH", path, body, scopes)


async def get(client, tenant, path, scopes="read") -> httpx.Response:
    return await call(client, tenant, "GET", path, None, scopes)


async def make_pipeline(client, tenant, name: str = "load", type_name: str = "extraction",
                        **fields: Any) -> int:
    r = await post(client, tenant, "/pipeline",
                   {"name": name, "pipeline_type_name": type_name, **fields})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def start(client, tenant, pipeline_id: int, at: datetime | None = T0,
                **fields: Any) -> int:
    body: dict[str, Any] = {"pipeline_id": pipeline_id, **fields}
    if at is not None:
        body["start_date"] = iso(at)
    r = await post(client, tenant, "/start_pipeline_execution", body)
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"id"}
    return r.json()["id"]


async def end(client, tenant, execution_id: int, at: datetime, ok: bool = True,
              expect: int = 204, **fields: Any) -> httpx.Response:
    r = await post(client, tenant, "/end_pipeline_execution", {
        "id": execution_id, "end_date": iso(at), "completed_successfully": ok, **fields})
    assert r.status_code == expect, r.text
    return r


async def execution(client, tenant, execution_id: int) -> dict[str, Any]:
    r = await get(client, tenant, f"/pipeline_execution/{execution_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def pipeline(client, tenant, pipeline_id: int) -> dict[str, Any]:
    r = await get(client, tenant, f"/pipeline/{pipeline_id}")
    assert r.status_code == 200, r.text
    return r.json()


def own_pipeline(body: dict[str, Any], pid: int) -> dict[str, Any]:
    """A parametrized body's `pipeline_id: 1` as the id of the test's pipeline."""
    sent = body.get("pipeline_id")
    return {**body, "pipeline_id": pid} if type(sent) is int and sent == 1 else body


def assert_422(r: httpx.Response, field: str | None = None, msg: str | None = None) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], list) and body["detail"]
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type"}
        assert isinstance(item["loc"], list) and isinstance(item["msg"], str)
        assert isinstance(item["type"], str)
    if field is not None:
        assert any(item["loc"][-1] == field for item in body["detail"]), body
    if msg is not None:
        assert any(item["msg"] == msg for item in body["detail"]), body


def assert_404(r: httpx.Response, kind: str) -> None:
    assert r.status_code == 404, r.text
    assert r.json() == {"detail": f"{kind} not found"}


# ------------------------------------------------------------------------------- health, paths


async def test_health_needs_no_token(client):
    r = await client.get("/")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


SLASH_ROUTES = [
    ("GET", "/pipeline"), ("GET", "/pipeline_type"), ("GET", "/address"),
    ("GET", "/address_type"), ("GET", "/anomaly_detection_rule"),
]


@pytest.mark.parametrize("method,path", SLASH_ROUTES)
async def test_list_routes_with_and_without_trailing_slash(client, tenant, method, path):
    for p in (path, path + "/"):
        r = await get(client, tenant, p)
        assert r.status_code == 200, (p, r.text)
        assert r.json() == []


async def test_every_route_answers_with_and_without_trailing_slash(client, tenant):
    """Each documented path, with and without its trailing slash (no redirects)."""
    for suffix in ("", "/"):
        name = f"load{suffix or '-slash'}"
        r = await post(client, tenant, "/pipeline" + suffix,
                       {"name": name, "pipeline_type_name": "extraction"})
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        assert (await get(client, tenant, f"/pipeline/{pid}{suffix}")).status_code == 200
        r = await patch(client, tenant, "/pipeline" + suffix, {"id": pid, "active": True})
        assert r.status_code == 200, r.text
        r = await post(client, tenant, "/pipeline_type" + suffix, {"name": f"t{suffix}"})
        assert r.status_code == 201, r.text
        assert (await get(client, tenant, f"/pipeline_type/{r.json()['id']}{suffix}")
                ).status_code == 200
        r = await post(client, tenant, "/start_pipeline_execution" + suffix,
                       {"pipeline_id": pid, "start_date": iso(T0)})
        assert r.status_code == 201, r.text
        eid = r.json()["id"]
        r = await post(client, tenant, "/end_pipeline_execution" + suffix, {
            "id": eid, "end_date": iso(T0 + SECOND), "completed_successfully": False})
        assert r.status_code == 204, r.text
        assert (await get(client, tenant, f"/pipeline_execution/{eid}{suffix}")
                ).status_code == 200
        r = await post(client, tenant, "/address" + suffix, {
            "name": f"a{suffix}", "address_type_name": "pg", "address_type_group_name": "db"})
        assert r.status_code == 201, r.text
        aid = r.json()["id"]
        assert (await get(client, tenant, f"/address/{aid}{suffix}")).status_code == 200
        r = await patch(client, tenant, "/address" + suffix, {"id": aid, "primary_key": "id"})
        assert r.status_code == 200, r.text
        r = await post(client, tenant, "/address_type" + suffix,
                       {"name": f"at{suffix}", "group_name": "g"})
        assert r.status_code == 201, r.text
        assert (await get(client, tenant, f"/address_type/{r.json()['id']}{suffix}")
                ).status_code == 200
        r = await post(client, tenant, "/address_lineage" + suffix, {
            "pipeline_id": pid, "source_addresses": [], "target_addresses": []})
        assert r.status_code == 201, r.text
        r = await post(client, tenant, "/anomaly_detection_rule" + suffix,
                       {"pipeline_id": pid, "metric_field": "total_rows"})
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        assert (await get(client, tenant, f"/anomaly_detection_rule/{rid}{suffix}")
                ).status_code == 200
        r = await patch(client, tenant, "/anomaly_detection_rule" + suffix,
                        {"id": rid, "z_threshold": 2.5})
        assert r.status_code == 200, r.text
        r = await post(client, tenant, "/unflag_anomaly" + suffix, {
            "pipeline_id": pid, "pipeline_execution_id": eid, "metric_field": ["total_rows"]})
        assert_404(r, "anomaly")
        r = await post(client, tenant, "/timeliness" + suffix, {"lookback_minutes": 60})
        assert r.status_code == 200 and r.json() == {"status": "queued"}, r.text
        r = await post(client, tenant, "/freshness" + suffix)
        assert r.status_code == 200 and r.json() == {"status": "queued"}, r.text
        r = await post(client, tenant, "/log_cleanup" + suffix, {"retention_days": 90})
        assert r.status_code == 200 and set(r.json()) == COUNTERS, r.text
        r = await post(client, tenant, "/celery/monitor-queue" + suffix)
        assert r.status_code == 200 and r.json() == {"status": "success"}, r.text


async def test_an_undocumented_method_is_405(client, tenant):
    r = await call(client, tenant, "DELETE", "/pipeline", scopes="admin")
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST", "PATCH"}


# ------------------------------------------------------------------------- pipeline types


async def test_pipeline_type_get_or_create_and_bodies(client, tenant):
    body = {"name": " Extraction ", "freshness_number": 24, "freshness_datepart": "HOUR",
            "mute_freshness_check": False, "timeliness_number": 2,
            "timeliness_datepart": "hour", "mute_timeliness_check": True}
    r = await post(client, tenant, "/pipeline_type", body)
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"id"}
    type_id = r.json()["id"]
    # Found by name: 200, and never updated.
    r = await post(client, tenant, "/pipeline_type",
                   {"name": "extraction", "freshness_number": 1, "freshness_datepart": "day"})
    assert (r.status_code, r.json()) == (200, {"id": type_id})
    r = await get(client, tenant, f"/pipeline_type/{type_id}")
    assert r.status_code == 200
    t = r.json()
    assert set(t) == TYPE_KEYS
    assert t["name"] == "extraction"
    assert (t["freshness_number"], t["freshness_datepart"]) == (24, "hour")
    assert (t["timeliness_number"], t["timeliness_datepart"]) == (2, "hour")
    assert (t["mute_freshness_check"], t["mute_timeliness_check"]) == (False, True)
    assert t["created_at"].endswith("Z") and t["updated_at"] is None
    r = await get(client, tenant, "/pipeline_type")
    assert r.json() == [t]


async def test_pipeline_type_minimal_body(client, tenant):
    r = await post(client, tenant, "/pipeline_type", {"name": "transformation"})
    assert r.status_code == 201
    t = (await get(client, tenant, f"/pipeline_type/{r.json()['id']}")).json()
    assert t["freshness_number"] is None and t["freshness_datepart"] is None
    assert t["mute_freshness_check"] is False and t["mute_timeliness_check"] is False


@pytest.mark.parametrize("body,field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 151}, "name"),
    ({"name": 5}, "name"),
    ({"name": "t", "freshness_number": 1, "freshness_datepart": "fortnight"},
     "freshness_datepart"),
    ({"name": "t", "timeliness_number": 0, "timeliness_datepart": "hour"}, "timeliness_number"),
    ({"name": "t", "mute_freshness_check": "maybe"}, "mute_freshness_check"),
])
async def test_pipeline_type_validation(client, tenant, body, field):
    assert_422(await post(client, tenant, "/pipeline_type", body), field)
    assert await PipelineType.all().count() == 0


# ------------------------------------------------------------------------------- pipelines


async def test_create_pipeline_answers_the_documented_fields(client, tenant):
    r = await post(client, tenant, "/pipeline", {
        "name": "my data pipeline", "pipeline_type_name": "extraction",
        "next_watermark": "2024-01-02T00:00:00Z",
        "pipeline_metadata": {"description": "Daily data extraction pipeline"},
        "freshness_number": 24, "freshness_datepart": "hour",
        "timeliness_number": 2, "timeliness_datepart": "hour",
    })
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "active", "load_lineage", "watermark"}
    assert (body["active"], body["load_lineage"], body["watermark"]) == (True, True, None)
    p = await pipeline(client, tenant, body["id"])
    assert set(p) == PIPELINE_KEYS
    types = (await get(client, tenant, "/pipeline_type")).json()
    assert [t["name"] for t in types] == ["extraction"]  # created with the pipeline
    assert p["pipeline_type_id"] == types[0]["id"]
    assert p == {**p, "name": "my data pipeline", "watermark": None,
                 "next_watermark": "2024-01-02T00:00:00Z",
                 "pipeline_metadata": {"description": "Daily data extraction pipeline"},
                 "last_target_insert": None, "last_target_update": None,
                 "last_target_soft_delete": None,
                 "freshness_number": 24, "freshness_datepart": "hour",
                 "mute_freshness_check": False, "timeliness_number": 2,
                 "timeliness_datepart": "hour", "mute_timeliness_check": False,
                 "load_lineage": True, "active": True}
    assert p["created_at"].endswith("Z")
    assert (await get(client, tenant, "/pipeline")).json() == [p]


async def test_create_pipeline_without_next_watermark_answers_a_null_watermark(client, tenant):
    # The original's answer model always has `watermark`: null unless a next_watermark was
    # provided to a found pipeline.
    r = await post(client, tenant, "/pipeline", {"name": "p", "pipeline_type_name": "t"})
    assert r.status_code == 201
    assert r.json() == {"id": r.json()["id"], "active": True, "load_lineage": True,
                        "watermark": None}
    r = await post(client, tenant, "/pipeline", {"name": "p", "pipeline_type_name": "t"})
    assert r.status_code == 200
    assert set(r.json()) == {"id", "active", "load_lineage", "watermark"}
    assert r.json()["watermark"] is None


# The body etl-watcher-sdk's `sync_pipeline_config` sends for a config without
# `next_watermark` and without checks: every optional key, null.
SDK_SYNC_BODY = {"name": "load", "pipeline_type_name": "extraction", "pipeline_metadata": None,
                 "freshness_number": None, "freshness_datepart": None,
                 "timeliness_number": None, "timeliness_datepart": None,
                 "next_watermark": None}


async def test_a_null_next_watermark_stores_nothing(client, tenant):
    pid = await make_pipeline(client, tenant, next_watermark="a")
    r = await post(client, tenant, "/pipeline", SDK_SYNC_BODY)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": pid, "active": True, "load_lineage": True, "watermark": None}
    assert (await pipeline(client, tenant, pid))["next_watermark"] == "a"
    eid = await start(client, tenant, pid)
    await end(client, tenant, eid, T0 + SECOND, inserts=1)
    p = await pipeline(client, tenant, pid)
    assert (p["watermark"], p["next_watermark"]) == ("a", "a")
    # Null again after the hand-off: the chain is kept, and a value still moves it on.
    r = await post(client, tenant, "/pipeline", SDK_SYNC_BODY)
    assert (r.status_code, r.json()["watermark"]) == (200, None)
    assert (await pipeline(client, tenant, pid))["watermark"] == "a"
    r = await post(client, tenant, "/pipeline", {**SDK_SYNC_BODY, "next_watermark": "b"})
    assert (r.status_code, r.json()["watermark"]) == (200, "a")
    p = await pipeline(client, tenant, pid)
    assert (p["watermark"], p["next_watermark"]) == ("a", "b")


async def test_create_pipeline_uses_an_existing_type(client, tenant):
    r = await post(client, tenant, "/pipeline_type", {"name": "extraction"})
    type_id = r.json()["id"]
    pid = await make_pipeline(client, tenant, type_name="Extraction")
    assert (await pipeline(client, tenant, pid))["pipeline_type_id"] == type_id
    assert len((await get(client, tenant, "/pipeline_type")).json()) == 1


async def test_pipeline_get_or_create_by_name(client, tenant):
    pid = await make_pipeline(client, tenant, name="load")
    r = await post(client, tenant, "/pipeline", {"name": " LOAD ", "pipeline_type_name": "x"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == pid
    assert len((await get(client, tenant, "/pipeline")).json()) == 1


async def test_top_level_strings_are_trimmed_and_lower_cased(client, tenant):
    r = await post(client, tenant, "/pipeline", {
        "name": " My Pipeline ", "pipeline_type_name": "  ExTraction",
        "next_watermark": " 2024-01-02T00:00:00Z ", "freshness_number": 1,
        "freshness_datepart": " DAY ",
        "pipeline_metadata": {"Owner": "Data Team", "Nested": {"Key": "VALUE"}},
    })
    assert r.status_code == 201, r.text
    p = await pipeline(client, tenant, r.json()["id"])
    assert p["name"] == "my pipeline"
    assert p["freshness_datepart"] == "day"
    assert p["next_watermark"] == " 2024-01-02T00:00:00Z "  # as sent: not trimmed
    assert p["pipeline_metadata"] == {"Owner": "Data Team", "Nested": {"Key": "VALUE"}}
    types = (await get(client, tenant, "/pipeline_type")).json()
    assert types[0]["name"] == "extraction"


async def test_unknown_keys_are_ignored(client, tenant):
    r = await post(client, tenant, "/pipeline", {
        "name": "p", "pipeline_type_name": "t", "colour": "blue", "id": 999, "extra": {"a": 1}})
    assert r.status_code == 201, r.text
    r = await post(client, tenant, "/pipeline_type", {"name": "t2", "whatever": 1})
    assert r.status_code == 201, r.text
    r = await post(client, tenant, "/address_type", {"name": "a", "group_name": "g", "x": 1})
    assert r.status_code == 201, r.text


async def test_an_identical_post_does_not_change_updated_at(client, tenant):
    body = {"name": "p", "pipeline_type_name": "t", "pipeline_metadata": {"a": 1},
            "freshness_number": 2, "freshness_datepart": "day"}
    r = await post(client, tenant, "/pipeline", body)
    pid = r.json()["id"]
    before = await pipeline(client, tenant, pid)
    for _ in range(2):
        r = await post(client, tenant, "/pipeline", body)
        assert r.status_code == 200
    assert await pipeline(client, tenant, pid) == before


async def test_a_changed_metadata_updates_the_pipeline(client, tenant):
    body = {"name": "p", "pipeline_type_name": "t", "pipeline_metadata": {"a": 1}}
    pid = (await post(client, tenant, "/pipeline", body)).json()["id"]
    before = await pipeline(client, tenant, pid)
    r = await post(client, tenant, "/pipeline", {**body, "pipeline_metadata": {"a": 2, "B": "C"}})
    assert r.status_code == 200
    after = await pipeline(client, tenant, pid)
    assert after["pipeline_metadata"] == {"a": 2, "B": "C"}
    assert after["updated_at"] is not None and after["updated_at"] != before["updated_at"]
    # The same changed body again: no further change.
    r = await post(client, tenant, "/pipeline", {**body, "pipeline_metadata": {"a": 2, "B": "C"}})
    assert await pipeline(client, tenant, pid) == after


async def test_a_changed_check_config_updates_the_pipeline(client, tenant):
    body = {"name": "p", "pipeline_type_name": "t", "timeliness_number": 1,
            "timeliness_datepart": "hour"}
    pid = (await post(client, tenant, "/pipeline", body)).json()["id"]
    await post(client, tenant, "/pipeline", {**body, "timeliness_number": 3})
    p = await pipeline(client, tenant, pid)
    assert (p["timeliness_number"], p["timeliness_datepart"]) == (3, "hour")
    assert p["updated_at"] is not None


async def test_post_ignores_active_load_lineage_and_mute_flags(client, tenant):
    guarded = {"active": False, "load_lineage": False, "mute_freshness_check": True,
               "mute_timeliness_check": True, "watermark": "w"}
    r = await post(client, tenant, "/pipeline",
                   {"name": "p", "pipeline_type_name": "t", **guarded})
    assert r.status_code == 201, r.text
    assert (r.json()["active"], r.json()["load_lineage"]) == (True, True)
    pid = r.json()["id"]
    p = await pipeline(client, tenant, pid)
    assert (p["active"], p["load_lineage"], p["mute_freshness_check"],
            p["mute_timeliness_check"], p["watermark"]) == (True, True, False, False, None)
    r = await post(client, tenant, "/pipeline",
                   {"name": "p", "pipeline_type_name": "t", **guarded})
    assert r.status_code == 200
    assert await pipeline(client, tenant, pid) == p
    # Switched off by PATCH: POST does not switch it back on.
    r = await patch(client, tenant, "/pipeline", {"id": pid, "active": False,
                                                  "load_lineage": False})
    assert r.status_code == 200
    r = await post(client, tenant, "/pipeline", {"name": "p", "pipeline_type_name": "t",
                                                 "active": True, "load_lineage": True})
    assert r.status_code == 200
    assert (r.json()["active"], r.json()["load_lineage"]) == (False, False)


@pytest.mark.parametrize("body,field,msg", [
    ({"pipeline_type_name": "t"}, "name", "Field required"),
    ({"name": "p"}, "pipeline_type_name", "Field required"),
    ({"name": "", "pipeline_type_name": "t"}, "name", None),
    ({"name": "x" * 151, "pipeline_type_name": "t"}, "name", None),
    ({"name": 12, "pipeline_type_name": "t"}, "name", None),
    ({"name": "p", "pipeline_type_name": ["t"]}, "pipeline_type_name", None),
    ({"name": "p", "pipeline_type_name": "t", "freshness_number": 24}, "freshness_number",
     "Value error, Both freshness_number and freshness_datepart must be provided together"),
    ({"name": "p", "pipeline_type_name": "t", "freshness_datepart": "hour"},
     "freshness_number",
     "Value error, Both freshness_number and freshness_datepart must be provided together"),
    ({"name": "p", "pipeline_type_name": "t", "timeliness_number": 2}, "timeliness_number",
     "Value error, Both timeliness_number and timeliness_datepart must be provided together"),
    ({"name": "p", "pipeline_type_name": "t", "freshness_number": 1,
      "freshness_datepart": "fortnight"}, "freshness_datepart", None),
    ({"name": "p", "pipeline_type_name": "t", "freshness_number": 0,
      "freshness_datepart": "hour"}, "freshness_number", "Input should be greater than 0"),
    ({"name": "p", "pipeline_type_name": "t", "freshness_number": "24h",
      "freshness_datepart": "hour"}, "freshness_number",
     "Input should be a valid integer, unable to parse string as an integer"),
    ({"name": "p", "pipeline_type_name": "t", "pipeline_metadata": "text"},
     "pipeline_metadata", None),
    ({"name": "p", "pipeline_type_name": "t", "next_watermark": "x" * 51}, "next_watermark",
     None),
    ({"name": "p", "pipeline_type_name": "t", "next_watermark": {"a": 1}}, "next_watermark",
     None),
])
async def test_pipeline_validation(client, tenant, body, field, msg):
    assert_422(await post(client, tenant, "/pipeline", body), field, msg)
    assert await Pipeline.all().count() == 0


@pytest.mark.parametrize("part", ["minute", "hour", "day", "week", "month", "year"])
async def test_dateparts(client, tenant, part):
    r = await post(client, tenant, "/pipeline", {
        "name": "p", "pipeline_type_name": "t", "freshness_number": 1,
        "freshness_datepart": part.upper()})
    assert r.status_code == 201, r.text
    assert (await pipeline(client, tenant, r.json()["id"]))["freshness_datepart"] == part


@pytest.mark.parametrize("sent,stored", [
    (20240101, "20240101"), ("2024-01-01", "2024-01-01"), ("Batch-ABC", "Batch-ABC")])
async def test_watermarks_of_every_documented_type_are_kept_as_text(client, tenant, sent,
                                                                    stored):
    pid = await make_pipeline(client, tenant, next_watermark=sent)
    assert (await pipeline(client, tenant, pid))["next_watermark"] == stored


async def test_patch_pipeline(client, tenant):
    pid = await make_pipeline(client, tenant, name="old")
    new_type = (await post(client, tenant, "/pipeline_type", {"name": "other"})).json()["id"]
    r = await patch(client, tenant, "/pipeline", {
        "id": pid, "name": " Updated Pipeline Name ", "pipeline_type_id": new_type,
        "watermark": "2024-01-01T00:00:00Z", "next_watermark": "2024-01-02T00:00:00Z",
        "pipeline_metadata": {"Environment": "Production"},
        "freshness_number": 24, "freshness_datepart": "hour", "mute_freshness_check": True,
        "timeliness_number": 2, "timeliness_datepart": "hour", "mute_timeliness_check": True,
        "load_lineage": False,
    })
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == PIPELINE_KEYS
    assert body == {**body, "id": pid, "name": "updated pipeline name",
                    "pipeline_type_id": new_type, "watermark": "2024-01-01T00:00:00Z",
                    "next_watermark": "2024-01-02T00:00:00Z",
                    "pipeline_metadata": {"Environment": "Production"},
                    "freshness_number": 24, "freshness_datepart": "hour",
                    "mute_freshness_check": True, "timeliness_number": 2,
                    "timeliness_datepart": "hour", "mute_timeliness_check": True,
                    "load_lineage": False, "active": True}
    assert body["updated_at"] is not None
    assert await pipeline(client, tenant, pid) == body


async def test_patch_changes_only_the_fields_sent(client, tenant):
    pid = await make_pipeline(client, tenant, pipeline_metadata={"a": 1}, freshness_number=1,
                              freshness_datepart="day")
    before = await pipeline(client, tenant, pid)
    r = await patch(client, tenant, "/pipeline", {"id": pid, "mute_freshness_check": True})
    assert r.status_code == 200
    after = r.json()
    changed = {k for k in PIPELINE_KEYS if after[k] != before[k]}
    assert changed == {"mute_freshness_check", "updated_at"}


async def test_patch_finds_by_name_without_id(client, tenant):
    pid = await make_pipeline(client, tenant, name="by name")
    r = await patch(client, tenant, "/pipeline", {"name": " By Name ", "active": False})
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["active"]) == (pid, False)


async def test_patch_needs_id_or_name(client, tenant):
    await make_pipeline(client, tenant)
    r = await patch(client, tenant, "/pipeline", {"active": False})
    assert_422(r, "id", "Value error, Either 'id' or 'name' must be provided")


@pytest.mark.parametrize("body,field", [
    ({"id": "one"}, "id"),
    ({"id": 1, "active": "nope"}, "active"),
    ({"id": 1, "freshness_number": 3}, "freshness_number"),
    ({"id": 1, "pipeline_type_id": "x"}, "pipeline_type_id"),
    ({"id": 1, "name": ""}, "name"),
])
async def test_patch_validation(client, tenant, body, field):
    pid = await make_pipeline(client, tenant)
    body = {**body, "id": pid} if body["id"] == 1 else body  # 1: this pipeline
    before = await pipeline(client, tenant, pid)
    assert_422(await patch(client, tenant, "/pipeline", body), field)
    assert await pipeline(client, tenant, pid) == before


async def test_patch_unknown_pipeline_or_type_is_404(client, tenant):
    pid = await make_pipeline(client, tenant)
    assert_404(await patch(client, tenant, "/pipeline", {"id": pid + 100, "active": False}),
               "pipeline")
    assert_404(await patch(client, tenant, "/pipeline", {"name": "nobody", "active": False}),
               "pipeline")
    assert_404(await patch(client, tenant, "/pipeline", {"id": 2**40, "active": False}),
               "pipeline")
    assert_404(await patch(client, tenant, "/pipeline", {"id": pid, "pipeline_type_id": 999}),
               "pipeline type")


async def test_renaming_onto_an_existing_name_is_the_originals_400(client, tenant):
    await make_pipeline(client, tenant, name="a")
    b = await make_pipeline(client, tenant, name="b")
    r = await patch(client, tenant, "/pipeline", {"id": b, "name": "A"})
    assert (r.status_code, r.json()) == (400, {"detail": "Pipeline name already exists"})
    assert (await pipeline(client, tenant, b))["name"] == "b"
    types = [(await post(client, tenant, "/pipeline_type", {"name": n})).json()["id"]
             for n in ("t1", "t2")]
    r = await patch(client, tenant, "/pipeline_type", {"id": types[1], "name": "T1"})
    assert (r.status_code, r.json()) == (400, {"detail": "Pipeline type name already exists"})
    addresses = [(await post(client, tenant, "/address", {
        "name": n, "address_type_name": "pg", "address_type_group_name": "database"})).json()[
        "id"] for n in ("x", "y")]
    r = await patch(client, tenant, "/address", {"id": addresses[1], "name": "X"})
    assert (r.status_code, r.json()) == (400, {"detail": "Address name already exists"})
    assert (await get(client, tenant, f"/address/{addresses[1]}")).json()["name"] == "y"
    kinds = [(await post(client, tenant, "/address_type", {"name": n, "group_name": "g"})
              ).json()["id"] for n in ("k1", "k2")]
    r = await patch(client, tenant, "/address_type", {"id": kinds[1], "name": "k1"})
    assert (r.status_code, r.json()) == (400, {"detail": "Address type name already exists"})


# ------------------------------------------------- one rule for changing a pipeline (paths 3)


async def pipelines_of_each_kind(client, tenant) -> dict[str, int]:
    """A Watcher pipeline, an ELT pipeline and a connection's delivery pipeline."""
    from tests.helpers import create_connection
    watcher = await make_pipeline(client, tenant, name="job")
    r = await client.post("/api/elt/pipelines", json={"name": "sync"},
                          headers=tenant.headers("write"))
    assert r.status_code == 201, r.text
    elt = r.json()["pipeline"]["id"]
    cid = await create_connection(client, tenant, "warehouse")
    delivery = (await Pipeline.get(connection_id=cid, kind="delivery")).id
    return {"watcher": watcher, "elt": int(elt), "delivery": delivery}


UPDATE_PIPELINE = """mutation($input: UpdatePipelineInput!) { updatePipeline(input: $input) {
    __typename } }"""


async def change(client, tenant, surface: str, pid: int, name: str, scopes: str) -> str:
    """Rename pipeline `pid` through `surface`: what the caller got (`ok`, `denied`,
    `refused`: the delivery rule)."""
    if surface == "graphql":
        r = await client.post("/graphql", headers=tenant.headers(scopes), json={
            "query": UPDATE_PIPELINE, "variables": {"input": {"id": str(pid), "name": name}}})
        kind = r.json()["data"]["updatePipeline"]["__typename"]
        return {"PipelineSuccess": "ok", "PermissionDeniedError": "denied",
                "InvalidInputError": "refused"}[kind]
    if surface == "elt":
        r = await client.patch(f"/api/elt/pipelines/{pid}", json={"name": name},
                               headers=tenant.headers(scopes))
    else:
        r = await patch(client, tenant, "/pipeline", {"id": pid, "name": name}, scopes=scopes)
    return {200: "ok", 403: "denied", 400: "refused", 422: "refused"}[r.status_code]


@pytest.mark.parametrize("surface", ["watcher", "elt", "graphql"])
@pytest.mark.parametrize("kind,scopes,outcome", [
    ("watcher", "report", {"watcher": "ok", "elt": "denied", "graphql": "denied"}),
    ("watcher", "write", {"watcher": "ok", "elt": "ok", "graphql": "ok"}),
    ("elt", "report", {"watcher": "denied", "elt": "denied", "graphql": "denied"}),
    ("elt", "write", {"watcher": "ok", "elt": "ok", "graphql": "ok"}),
    ("delivery", "report", {"watcher": "denied", "elt": "denied", "graphql": "denied"}),
    ("delivery", "write", {"watcher": "refused", "elt": "refused", "graphql": "refused"}),
])
async def test_changing_a_pipeline_follows_one_rule_on_every_surface(
        client, tenant, surface, kind, scopes, outcome):
    """`check_pipeline_change`: a Watcher pipeline may be changed with `report` (its jobs')
    or `write`; any other kind needs `write`; a delivery pipeline keeps its name. The ELT
    and GraphQL surfaces need `write` for any pipeline, as before."""
    pid = (await pipelines_of_each_kind(client, tenant))[kind]
    before = (await Pipeline.get(id=pid)).name
    got = await change(client, tenant, surface, pid, "renamed", scopes)
    assert got == outcome[surface]
    assert (await Pipeline.get(id=pid)).name == ("renamed" if got == "ok" else before)


async def test_post_pipeline_changes_only_what_the_token_may_change(client, tenant):
    """`POST /pipeline` on the name of an ELT or delivery pipeline: found (its id) when
    nothing would change; a change of its definition or next watermark needs `write`."""
    ids = await pipelines_of_each_kind(client, tenant)
    for kind, name in (("elt", "sync"), ("delivery", "warehouse delivery")):
        body = {"name": name, "pipeline_type_name": "extraction", "next_watermark": "w"}
        before = await Pipeline.get(id=ids[kind])
        r = await post(client, tenant, "/pipeline", body, scopes="report")
        assert r.status_code == 403, r.text
        after = await Pipeline.get(id=ids[kind])
        assert (after.next_watermark, after.pipeline_type_id, after.updated_at) == (  # type: ignore[attr-defined]
            before.next_watermark, before.pipeline_type_id, before.updated_at)  # type: ignore[attr-defined]
        r = await post(client, tenant, "/pipeline", body, scopes="write")
        assert (r.status_code, r.json()["id"]) == (200, ids[kind])
        assert (await Pipeline.get(id=ids[kind])).next_watermark == "w"
        # Sent again unchanged: nothing to change, so `report` finds it.
        r = await post(client, tenant, "/pipeline", body, scopes="report")
        assert (r.status_code, r.json()["id"]) == (200, ids[kind]), r.text
    r = await post(client, tenant, "/pipeline", {"name": "job", "pipeline_type_name": "other",
                                                 "next_watermark": "w"}, scopes="report")
    assert (r.status_code, r.json()["id"]) == (200, ids["watcher"])


# ----------------------------------------------------------------------- watermark sequence


async def test_the_watermark_sequence(client, tenant):
    body = {"name": "load", "pipeline_type_name": "extraction",
            "next_watermark": "2024-01-02T00:00:00Z"}
    r = await post(client, tenant, "/pipeline", body)
    assert (r.status_code, r.json()["watermark"]) == (201, None)
    pid = r.json()["id"]
    # Before any successful end, the stored watermark is still null.
    r = await post(client, tenant, "/pipeline", body)
    assert (r.status_code, r.json()["watermark"]) == (200, None)
    eid = await start(client, tenant, pid, watermark=None, next_watermark="2024-01-02T00:00:00Z")
    await end(client, tenant, eid, T0 + 60 * SECOND, inserts=5, updates=0, soft_deletes=2,
              total_rows=7)
    p = await pipeline(client, tenant, pid)
    assert p["watermark"] == "2024-01-02T00:00:00Z"
    assert p["last_target_insert"] == iso(T0 + 60 * SECOND)
    assert p["last_target_update"] is None  # a count of 0 moves nothing
    assert p["last_target_soft_delete"] == iso(T0 + 60 * SECOND)
    assert p["load_lineage"] is False
    # The next run's POST answers the stored watermark (the previous next_watermark).
    r = await post(client, tenant, "/pipeline", {**body, "next_watermark": "2024-01-03T00:00:00Z"})
    assert r.status_code == 200
    assert r.json() == {"id": pid, "active": True, "load_lineage": False,
                        "watermark": "2024-01-02T00:00:00Z"}
    p = await pipeline(client, tenant, pid)
    assert (p["watermark"], p["next_watermark"]) == ("2024-01-02T00:00:00Z",
                                                     "2024-01-03T00:00:00Z")
    # A failed end changes none of the watermark, last_target_* or load_lineage.
    await patch(client, tenant, "/pipeline", {"id": pid, "load_lineage": True})
    before = await pipeline(client, tenant, pid)
    eid = await start(client, tenant, pid, at=T0 + DAY)
    await end(client, tenant, eid, T0 + DAY + 60 * SECOND, ok=False, inserts=10, updates=3)
    after = await pipeline(client, tenant, pid)
    for key in ("watermark", "next_watermark", "last_target_insert", "last_target_update",
                "last_target_soft_delete", "load_lineage"):
        assert after[key] == before[key], key
    # And the next successful end moves them on.
    eid = await start(client, tenant, pid, at=T0 + 2 * DAY)
    await end(client, tenant, eid, T0 + 2 * DAY + 60 * SECOND, updates=1)
    p = await pipeline(client, tenant, pid)
    assert p["watermark"] == "2024-01-03T00:00:00Z"
    assert p["last_target_insert"] == iso(T0 + 60 * SECOND)
    assert p["last_target_update"] == iso(T0 + 2 * DAY + 60 * SECOND)
    assert p["load_lineage"] is False


# ------------------------------------------------------------------------------- executions


async def test_execution_body_and_computed_fields(client, tenant):
    pid = await make_pipeline(client, tenant)
    # 01:30 at +02:00 is 23:30 UTC the day before.
    r = await post(client, tenant, "/start_pipeline_execution", {
        "pipeline_id": pid, "start_date": "2024-01-02T01:30:00+02:00",
        "watermark": "2024-01-01T00:00:00Z", "next_watermark": "2024-01-01T23:59:59Z",
        "parent_id": None})
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    running = await execution(client, tenant, eid)
    assert set(running) == EXECUTION_KEYS
    assert running == {
        **running, "id": eid, "parent_id": None, "pipeline_id": pid,
        "start_date": "2024-01-01T23:30:00Z", "end_date": None, "duration_seconds": None,
        "completed_successfully": None, "inserts": None, "updates": None,
        "soft_deletes": None, "total_rows": None, "watermark": "2024-01-01T00:00:00Z",
        "next_watermark": "2024-01-01T23:59:59Z", "execution_metadata": None,
        "anomaly_flags": None, "throughput": None, "child_executions": [],
        "hour_recorded": 23, "date_recorded": "2024-01-01", "status": "running"}
    started = datetime(2024, 1, 1, 23, 30, tzinfo=UTC)
    r = await post(client, tenant, "/end_pipeline_execution", {
        "id": eid, "end_date": iso(started + timedelta(seconds=90.6)),
        "completed_successfully": True, "total_rows": 1000, "inserts": 800, "updates": 200,
        "soft_deletes": 0, "execution_metadata": {"Partition": "2025-01-05"}})
    assert r.status_code == 204, r.text
    assert r.content == b""
    done = await execution(client, tenant, eid)
    assert set(done) == EXECUTION_KEYS
    assert done == {
        **done, "end_date": iso(started + timedelta(seconds=90.6)), "duration_seconds": 91,
        "completed_successfully": True, "inserts": 800, "updates": 200, "soft_deletes": 0,
        "total_rows": 1000, "execution_metadata": {"Partition": "2025-01-05"},
        "throughput": 10.989, "status": "succeeded", "hour_recorded": 23,
        "date_recorded": "2024-01-01"}


async def test_a_failed_end(client, tenant):
    pid = await make_pipeline(client, tenant)
    eid = await start(client, tenant, pid)
    await end(client, tenant, eid, T0 + 10 * SECOND, ok=False)
    e = await execution(client, tenant, eid)
    assert (e["completed_successfully"], e["status"], e["duration_seconds"]) == (False, "failed",
                                                                                 10)
    assert e["throughput"] is None and e["total_rows"] is None


@pytest.mark.parametrize("elapsed,rows,duration,throughput", [
    (timedelta(milliseconds=400), 100, 0, 0),
    (timedelta(seconds=3), 10, 3, 3.3333),
    (timedelta(seconds=2, milliseconds=500), 5, 2, 2.5),
    (timedelta(seconds=300), 1000, 300, 3.3333),
])
async def test_duration_is_rounded_and_throughput_has_4_decimals(client, tenant, elapsed, rows,
                                                                 duration, throughput):
    pid = await make_pipeline(client, tenant)
    eid = await start(client, tenant, pid)
    await end(client, tenant, eid, T0 + elapsed, total_rows=rows)
    e = await execution(client, tenant, eid)
    assert e["duration_seconds"] == duration
    assert e["throughput"] == throughput


async def test_start_without_start_date_is_now(client, tenant):
    pid = await make_pipeline(client, tenant)
    before = datetime.now(UTC)
    r = await post(client, tenant, "/start_pipeline_execution", {"pipeline_id": pid})
    after = datetime.now(UTC)
    assert r.status_code == 201
    e = await execution(client, tenant, r.json()["id"])
    started = datetime.fromisoformat(e["start_date"].replace("Z", "+00:00"))
    assert before - SECOND <= started <= after + SECOND
    assert e["hour_recorded"] == started.hour
    assert e["date_recorded"] == started.date().isoformat()


async def test_naive_start_date_is_utc(client, tenant):
    pid = await make_pipeline(client, tenant)
    r = await post(client, tenant, "/start_pipeline_execution",
                   {"pipeline_id": pid, "start_date": "2024-03-04T05:06:07"})
    e = await execution(client, tenant, r.json()["id"])
    assert (e["start_date"], e["hour_recorded"], e["date_recorded"]) == (
        "2024-03-04T05:06:07Z", 5, "2024-03-04")


async def test_an_execution_lists_its_direct_children(client, tenant):
    """NOTES: "lists its direct children (roots too)"; each child comes with
    `child_executions: []`, as in the contract's example (its own children are read from
    it)."""
    pid = await make_pipeline(client, tenant)
    root = await start(client, tenant, pid)
    alone = await start(client, tenant, pid)
    child_a = await start(client, tenant, pid, at=T0 + SECOND, parent_id=root)
    child_b = await start(client, tenant, pid, at=T0 + 2 * SECOND, parent_id=root)
    grandchild = await start(client, tenant, pid, at=T0 + 3 * SECOND, parent_id=child_a)
    great = await start(client, tenant, pid, at=T0 + 4 * SECOND, parent_id=grandchild)
    await end(client, tenant, child_b, T0 + 10 * SECOND, total_rows=5)
    # A root without children answers an empty list (the original's defect: nothing).
    assert (await execution(client, tenant, alone))["child_executions"] == []
    tree = await execution(client, tenant, root)
    assert tree["parent_id"] is None
    assert [c["id"] for c in tree["child_executions"]] == [child_a, child_b]
    a, b = tree["child_executions"]
    assert set(a) == EXECUTION_KEYS and a["parent_id"] == root
    assert b["completed_successfully"] is True and b["total_rows"] == 5
    assert a["child_executions"] == [] and b["child_executions"] == []  # not the grandchild
    # From the middle: its own direct children.
    sub = await execution(client, tenant, child_a)
    assert sub["parent_id"] == root
    assert [x["id"] for x in sub["child_executions"]] == [grandchild]
    assert sub["child_executions"][0]["child_executions"] == []
    deeper = await execution(client, tenant, grandchild)
    assert [x["id"] for x in deeper["child_executions"]] == [great]


@pytest.mark.parametrize("body,field", [
    ({}, "pipeline_id"),
    ({"pipeline_id": "one"}, "pipeline_id"),
    ({"pipeline_id": 1.5}, "pipeline_id"),
    ({"pipeline_id": 1, "start_date": "yesterday"}, "start_date"),
    ({"pipeline_id": 1, "start_date": "2024-13-01"}, "start_date"),
    ({"pipeline_id": 1, "start_date": [2024]}, "start_date"),
    ({"pipeline_id": 1, "parent_id": "x"}, "parent_id"),
    ({"pipeline_id": 1, "watermark": "w" * 51}, "watermark"),
])
async def test_start_validation(client, tenant, body, field):
    body = own_pipeline(body, await make_pipeline(client, tenant))
    assert_422(await post(client, tenant, "/start_pipeline_execution", body), field)
    assert await Run.all().count() == 0


async def test_start_unknown_pipeline_or_parent_is_404(client, tenant):
    pid = await make_pipeline(client, tenant)
    assert_404(await post(client, tenant, "/start_pipeline_execution",
                          {"pipeline_id": pid + 1}), "pipeline")
    assert_404(await post(client, tenant, "/start_pipeline_execution",
                          {"pipeline_id": 2**40}), "pipeline")
    assert_404(await post(client, tenant, "/start_pipeline_execution",
                          {"pipeline_id": pid, "parent_id": 12345}), "parent execution")
    assert await Run.all().count() == 0


@pytest.mark.parametrize("body,field", [
    ({"end_date": "2024-01-01T10:05:00Z", "completed_successfully": True}, "id"),
    ({"id": 1, "completed_successfully": True}, "end_date"),
    ({"id": 1, "end_date": "2024-01-01T10:05:00Z"}, "completed_successfully"),
    ({"id": 1, "end_date": "2024-01-01T10:05:00Z", "completed_successfully": "maybe"},
     "completed_successfully"),
    ({"id": 1, "end_date": "soon", "completed_successfully": True}, "end_date"),
    ({"id": 1, "end_date": "2024-01-01T10:05:00Z", "completed_successfully": True,
      "total_rows": -1}, "total_rows"),
    ({"id": 1, "end_date": "2024-01-01T10:05:00Z", "completed_successfully": True,
      "inserts": 1.5}, "inserts"),
    ({"id": 1, "end_date": "2024-01-01T10:05:00Z", "completed_successfully": True,
      "updates": "3 rows"}, "updates"),
    ({"id": 1, "end_date": "2024-01-01T10:05:00Z", "completed_successfully": True,
      "soft_deletes": -5}, "soft_deletes"),
    ({"id": 1, "end_date": "2024-01-01T10:05:00Z", "completed_successfully": True,
      "execution_metadata": [1]}, "execution_metadata"),
])
async def test_end_validation(client, tenant, body, field):
    pid = await make_pipeline(client, tenant)
    eid = await start(client, tenant, pid)
    body = {**body, "id": eid} if "id" in body else body  # 1: this execution
    assert_422(await post(client, tenant, "/end_pipeline_execution", body), field)
    assert (await execution(client, tenant, eid))["status"] == "running"


@pytest.mark.parametrize("offset", [timedelta(0), -SECOND, -DAY])
async def test_end_not_after_start_is_400(client, tenant, offset):
    pid = await make_pipeline(client, tenant)
    eid = await start(client, tenant, pid)
    r = await post(client, tenant, "/end_pipeline_execution", {
        "id": eid, "end_date": iso(T0 + offset), "completed_successfully": True})
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": "end_date must be greater than start_date"}
    assert (await execution(client, tenant, eid))["status"] == "running"


async def test_end_unknown_execution_is_404(client, tenant):
    for eid in (999, 2**62, 2**70):
        r = await post(client, tenant, "/end_pipeline_execution", {
            "id": eid, "end_date": iso(T0), "completed_successfully": True})
        assert_404(r, "pipeline execution")


# ------------------------------------------------------------------ long executions


async def test_an_execution_longer_than_the_orphan_window_ends_normally(client, tenant):
    """The Watcher has no timeout: a 2.5 h job outlives the deployment's orphan window (2 h),
    the reaper leaves it running, and its successful end moves the pipeline on."""
    from runwatch.services.reaper import reap_stuck_runs
    now = datetime.now(UTC).replace(microsecond=0)
    pid = await make_pipeline(client, tenant, next_watermark="w2")
    eid = await start(client, tenant, pid, now - timedelta(hours=2, minutes=30))
    assert (await Run.get(id=eid)).deadline_at is None
    assert await reap_stuck_runs(now=now) == 0
    assert (await execution(client, tenant, eid))["status"] == "running"
    await end(client, tenant, eid, now, inserts=3, updates=1, total_rows=4)
    body = await execution(client, tenant, eid)
    assert (body["completed_successfully"], body["duration_seconds"]) == (True, 9000)
    p = await pipeline(client, tenant, pid)
    assert (p["watermark"], p["last_target_insert"], p["last_target_update"]) == (
        "w2", iso(now), iso(now))


async def test_a_running_execution_past_its_timeliness_deadline_is_logged_late(client, tenant):
    from runwatch.resolvers.checks import check_timeliness
    from runwatch.services.reaper import reap_stuck_runs
    now = datetime.now(UTC).replace(microsecond=0)
    pid = await make_pipeline(client, tenant, timeliness_number=2, timeliness_datepart="hour")
    eid = await start(client, tenant, pid, now - timedelta(hours=2, minutes=30))
    assert await reap_stuck_runs(now=now) == 0
    logs = await check_timeliness(organisation_id=tenant.org_id, lookback_minutes=240, now=now)
    assert [(log.run_id, log.run_status) for log in logs] == [(eid, "running")]
    assert await TimelinessLog.filter(run_id=eid).count() == 1
    await end(client, tenant, eid, now)  # still ends: late is reported, not enforced


async def test_a_pipeline_maximum_runtime_still_times_an_execution_out(client, tenant):
    from runwatch.services.reaper import reap_stuck_runs
    now = datetime.now(UTC).replace(microsecond=0)
    pid = await make_pipeline(client, tenant, next_watermark="w2")
    await Pipeline.filter(id=pid).update(max_runtime_seconds=3600)
    eid = await start(client, tenant, pid, now - timedelta(hours=2, minutes=30))
    assert await reap_stuck_runs(now=now) == 1
    body = await execution(client, tenant, eid)
    assert (body["status"], body["completed_successfully"]) == ("timed_out", False)
    r = await end(client, tenant, eid, now, expect=409, inserts=1)
    assert "timed_out" in r.json()["detail"]
    assert (await pipeline(client, tenant, pid))["watermark"] is None


async def test_the_same_end_again_is_204_and_a_different_one_409(client, tenant):
    pid = await make_pipeline(client, tenant)
    eid = await start(client, tenant, pid)
    await end(client, tenant, eid, T0 + 5 * SECOND, total_rows=3)
    await end(client, tenant, eid, T0 + 5 * SECOND, total_rows=3)
    r = await end(client, tenant, eid, T0 + 6 * SECOND, total_rows=3, expect=409)
    assert set(r.json()) == {"detail"}
    # Lower-cased, but the time it quotes keeps its case.
    assert r.json()["detail"] == (f"run {eid} already completed (succeeded at "
                                  "2024-01-01T10:00:05Z); a completed run never changes.")
    assert (await execution(client, tenant, eid))["end_date"] == iso(T0 + 5 * SECOND)


async def test_watermarks_are_kept_as_sent(client, tenant):
    pid = await make_pipeline(client, tenant, next_watermark=" 2024 ")
    assert (await pipeline(client, tenant, pid))["next_watermark"] == " 2024 "
    eid = await start(client, tenant, pid, watermark=" Low ", next_watermark="High\t")
    body = await execution(client, tenant, eid)
    assert (body["watermark"], body["next_watermark"]) == (" Low ", "High\t")
    await end(client, tenant, eid, T0 + SECOND)
    assert (await pipeline(client, tenant, pid))["watermark"] == " 2024 "
    r = await patch(client, tenant, "/pipeline", {"id": pid, "watermark": "  x"})
    assert r.json()["watermark"] == "  x"


async def test_a_zero_duration_has_a_throughput_of_0(client, tenant):
    pid = await make_pipeline(client, tenant)
    for rows in (None, 10):
        eid = await start(client, tenant, pid)
        await end(client, tenant, eid, T0 + timedelta(milliseconds=300),
                  **({} if rows is None else {"total_rows": rows}))
        body = await execution(client, tenant, eid)
        assert (body["duration_seconds"], body["throughput"]) == (0, 0.0), rows
    eid = await start(client, tenant, pid)
    await end(client, tenant, eid, T0 + 2 * SECOND)
    assert (await execution(client, tenant, eid))["throughput"] is None  # no total_rows


# ------------------------------------------------------------------- addresses and types


async def test_address_get_or_create_and_bodies(client, tenant):
    r = await post(client, tenant, "/address", {
        "name": " Source_DB.Source_Schema.Source_Table ", "address_type_name": "Postgres",
        "address_type_group_name": "Database", "primary_key": "ID",
        "address_metadata": {"external_dependencies": [
            {"type": "looker_dashboard", "name": "Sales Dashboard"}]},
    })
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"id"}
    aid = r.json()["id"]
    a = (await get(client, tenant, f"/address/{aid}")).json()
    assert set(a) == ADDRESS_KEYS
    types = (await get(client, tenant, "/address_type")).json()
    assert [(t["name"], t["group_name"]) for t in types] == [("postgres", "database")]
    assert a == {**a, "id": aid, "name": "source_db.source_schema.source_table",
                 "address_type_id": types[0]["id"], "namespace": None,
                 # the database group fills the three parts from the name
                 "database_name": "source_db", "schema_name": "source_schema",
                 "table_name": "source_table", "primary_key": "id",
                 "address_metadata": {"external_dependencies": [
                     {"type": "looker_dashboard", "name": "Sales Dashboard"}]},
                 "updated_at": None}
    # Issue 11: found by name, the upsert updates the fields that changed (a new type is
    # created) and sets `updated_at`.
    r = await post(client, tenant, "/address", {
        "name": "source_db.source_schema.source_table", "address_type_name": "other",
        "address_type_group_name": "files", "primary_key": "changed"})
    assert (r.status_code, r.json()) == (200, {"id": aid})
    types = (await get(client, tenant, "/address_type")).json()
    assert [(t["name"], t["group_name"]) for t in types] == [("postgres", "database"),
                                                             ("other", "files")]
    b = (await get(client, tenant, f"/address/{aid}")).json()
    assert b == {**a, "address_type_id": types[1]["id"], "primary_key": "changed",
                 "updated_at": b["updated_at"]}
    assert b["updated_at"] is not None
    assert a["created_at"].endswith("Z")
    assert (await get(client, tenant, "/address")).json() == [b]


async def test_address_parts_sent_win_and_other_groups_fill_nothing(client, tenant):
    r = await post(client, tenant, "/address", {
        "name": "db.schema.table", "address_type_name": "pg",
        "address_type_group_name": "database", "table_name": "Real_Table"})
    a = (await get(client, tenant, f"/address/{r.json()['id']}")).json()
    assert (a["database_name"], a["schema_name"], a["table_name"]) == ("db", "schema",
                                                                       "real_table")
    r = await post(client, tenant, "/address", {
        "name": "bucket.folder.file", "address_type_name": "s3",
        "address_type_group_name": "files"})
    a = (await get(client, tenant, f"/address/{r.json()['id']}")).json()
    assert (a["database_name"], a["schema_name"], a["table_name"]) == (None, None, None)


@pytest.mark.parametrize("body,field", [
    ({"address_type_name": "pg", "address_type_group_name": "db"}, "name"),
    ({"name": "a", "address_type_group_name": "db"}, "address_type_name"),
    ({"name": "a", "address_type_name": "pg"}, "address_type_group_name"),
    ({"name": "a" * 151, "address_type_name": "pg", "address_type_group_name": "db"}, "name"),
    ({"name": "a", "address_type_name": "pg", "address_type_group_name": "db",
      "database_name": "d" * 51}, "database_name"),
    ({"name": "a", "address_type_name": "pg", "address_type_group_name": "db",
      "address_metadata": "x"}, "address_metadata"),
])
async def test_address_validation(client, tenant, body, field):
    assert_422(await post(client, tenant, "/address", body), field)
    assert await Address.all().count() == 0


async def test_patch_address(client, tenant):
    aid = (await post(client, tenant, "/address", {
        "name": "t", "address_type_name": "pg", "address_type_group_name": "db"})).json()["id"]
    other_type = (await post(client, tenant, "/address_type",
                             {"name": "mysql", "group_name": "database"})).json()["id"]
    r = await patch(client, tenant, "/address", {
        "id": aid, "name": "Updated_Table_Name", "database_name": "updated_db",
        "schema_name": "updated_schema", "table_name": "updated_table", "primary_key": "id",
        "address_metadata": {"Owner": "Team"}, "address_type_id": other_type})
    assert r.status_code == 200, r.text
    a = r.json()
    assert set(a) == ADDRESS_KEYS
    assert a == {**a, "id": aid, "name": "updated_table_name", "address_type_id": other_type,
                 "database_name": "updated_db", "schema_name": "updated_schema",
                 "table_name": "updated_table", "primary_key": "id",
                 "address_metadata": {"Owner": "Team"}}
    assert a["updated_at"] is not None
    assert (await get(client, tenant, f"/address/{aid}")).json() == a
    # By name, without id.
    r = await patch(client, tenant, "/address", {"name": "UPDATED_TABLE_NAME",
                                                 "primary_key": "pk"})
    assert (r.status_code, r.json()["primary_key"]) == (200, "pk")


async def test_patch_address_errors(client, tenant):
    aid = (await post(client, tenant, "/address", {
        "name": "t", "address_type_name": "pg", "address_type_group_name": "db"})).json()["id"]
    assert_422(await patch(client, tenant, "/address", {"primary_key": "x"}), "id",
               "Value error, Either 'id' or 'name' must be provided")
    assert_422(await patch(client, tenant, "/address", {"id": aid, "database_name": 5}),
               "database_name")
    assert_404(await patch(client, tenant, "/address", {"id": aid + 1, "primary_key": "x"}),
               "address")
    assert_404(await patch(client, tenant, "/address", {"name": "none", "primary_key": "x"}),
               "address")
    assert_404(await patch(client, tenant, "/address", {"id": aid, "address_type_id": 999}),
               "address type")


async def test_address_type_get_or_create_and_bodies(client, tenant):
    r = await post(client, tenant, "/address_type", {"name": " Postgres ",
                                                     "group_name": "DATABASE"})
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"id"}
    tid = r.json()["id"]
    r = await post(client, tenant, "/address_type", {"name": "postgres", "group_name": "files"})
    assert (r.status_code, r.json()) == (200, {"id": tid})
    t = (await get(client, tenant, f"/address_type/{tid}")).json()
    assert set(t) == ADDRESS_TYPE_KEYS
    assert (t["id"], t["name"], t["group_name"], t["updated_at"]) == (tid, "postgres",
                                                                      "database", None)
    assert (await get(client, tenant, "/address_type")).json() == [t]


@pytest.mark.parametrize("body,field", [
    ({"group_name": "g"}, "name"), ({"name": "n"}, "group_name"),
    ({"name": "n", "group_name": ""}, "group_name"),
])
async def test_address_type_validation(client, tenant, body, field):
    assert_422(await post(client, tenant, "/address_type", body), field)
    assert await AddressType.all().count() == 0


# ---------------------------------------------------------------------------------- lineage


def lineage_body(pid: int, sources: list[str], targets: list[str]) -> dict[str, Any]:
    def item(name: str) -> dict[str, str]:
        return {"name": name, "address_type_name": "Postgres",
                "address_type_group_name": "Database"}
    return {"pipeline_id": pid, "source_addresses": [item(s) for s in sources],
            "target_addresses": [item(t) for t in targets]}


async def test_lineage_created_then_refused_once_load_lineage_is_false(client, tenant):
    pid = await make_pipeline(client, tenant)
    r = await post(client, tenant, "/address_lineage", lineage_body(
        pid, ["Source_DB.Source_Schema.Source_Table", "db.s.other"], ["target_db.t.target"]))
    assert r.status_code == 201, r.text
    assert r.json() == {"pipeline_id": pid, "lineage_relationships_created": 2,
                        "message": f"lineage relationships created for pipeline {pid}"}
    names = sorted(a["name"] for a in (await get(client, tenant, "/address")).json())
    assert names == ["db.s.other", "source_db.source_schema.source_table", "target_db.t.target"]
    assert await AddressLineage.filter(pipeline_id=pid).count() == 2
    # Sent again with other addresses: the pipeline's edges are replaced.
    r = await post(client, tenant, "/address_lineage", lineage_body(pid, ["a.b.c"], ["d.e.f"]))
    assert (r.status_code, r.json()["lineage_relationships_created"]) == (201, 1)
    assert await AddressLineage.filter(pipeline_id=pid).count() == 1
    # A successful end switches load_lineage off: lineage is refused with 200.
    eid = await start(client, tenant, pid)
    await end(client, tenant, eid, T0 + SECOND)
    r = await post(client, tenant, "/address_lineage", lineage_body(pid, ["x.y.z"], ["d.e.f"]))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "pipeline_id": pid, "lineage_relationships_created": 0,
        "message": f"pipeline {pid} does not have load_lineage=true. "
                   "no lineage relationships created."}
    assert await AddressLineage.filter(pipeline_id=pid).count() == 1
    assert not await Address.filter(name="x.y.z").exists()


@pytest.mark.parametrize("body,field", [
    ({"source_addresses": [], "target_addresses": []}, "pipeline_id"),
    ({"pipeline_id": 1, "target_addresses": []}, "source_addresses"),
    ({"pipeline_id": 1, "source_addresses": "a", "target_addresses": []}, "source_addresses"),
    ({"pipeline_id": 1, "source_addresses": [{"name": "a"}], "target_addresses": []},
     "address_type_name"),
])
async def test_lineage_validation(client, tenant, body, field):
    body = own_pipeline(body, await make_pipeline(client, tenant))
    assert_422(await post(client, tenant, "/address_lineage", body), field)
    assert await Address.all().count() == 0


async def test_lineage_updates_the_addresses_it_names(client, tenant):
    """The SDK has no `POST /address`: a lineage is how a job sends its addresses' metadata,
    primary key and type, so a change there updates the stored address as `POST /address`
    does (the original gets-or-creates each address, updating a changed one)."""
    pid = await make_pipeline(client, tenant)

    def body(metadata: dict[str, Any], **fields: Any) -> dict[str, Any]:
        source = {"name": "app.public.orders", "address_type_name": "postgres",
                  "address_type_group_name": "database", "primary_key": "id",
                  "address_metadata": metadata, **fields}
        return {"pipeline_id": pid, "source_addresses": [source],
                "target_addresses": [{"name": "dwh.sales.orders",
                                      "address_type_name": "snowflake",
                                      "address_type_group_name": "database"}]}

    r = await post(client, tenant, "/address_lineage", body({"v": 1}))
    assert r.status_code == 201, r.text
    [source] = [a for a in (await get(client, tenant, "/address")).json()
                if a["name"] == "app.public.orders"]
    assert (source["address_metadata"], source["primary_key"], source["updated_at"]) == (
        {"v": 1}, "id", None)
    # The same lineage again: nothing changed, nothing written.
    await patch(client, tenant, "/pipeline", {"id": pid, "load_lineage": True})
    assert (await post(client, tenant, "/address_lineage", body({"v": 1}))).status_code == 201
    assert (await get(client, tenant, f"/address/{source['id']}")).json() == source
    # Changed metadata, primary key and type.
    await patch(client, tenant, "/pipeline", {"id": pid, "load_lineage": True})
    r = await post(client, tenant, "/address_lineage",
                   body({"v": 2, "Owner": "Team A"}, primary_key="Order_ID",
                        address_type_name="MySQL"))
    assert r.status_code == 201, r.text
    after = (await get(client, tenant, f"/address/{source['id']}")).json()
    assert (after["address_metadata"], after["primary_key"]) == (
        {"v": 2, "Owner": "Team A"}, "order_id")
    assert after["updated_at"] is not None
    types = {t["id"]: t["name"] for t in (await get(client, tenant, "/address_type")).json()}
    assert types[after["address_type_id"]] == "mysql"
    assert len((await get(client, tenant, "/address")).json()) == 2


async def test_lineage_of_an_unknown_pipeline_is_404(client, tenant):
    assert_404(await post(client, tenant, "/address_lineage", lineage_body(77, ["a"], ["b"])),
               "pipeline")


# ---------------------------------------------------------------------------- anomaly rules


async def test_rule_get_or_create_and_bodies(client, tenant):
    pid = await make_pipeline(client, tenant)
    r = await post(client, tenant, "/anomaly_detection_rule", {
        "pipeline_id": pid, "metric_field": " Total_Rows ", "z_threshold": 2.0,
        "lookback_days": 30, "minimum_executions": 30, "active": True})
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"id"}
    rid = r.json()["id"]
    r = await post(client, tenant, "/anomaly_detection_rule",
                   {"pipeline_id": pid, "metric_field": "total_rows", "z_threshold": 9})
    assert (r.status_code, r.json()) == (200, {"id": rid})
    rule = (await get(client, tenant, f"/anomaly_detection_rule/{rid}")).json()
    assert set(rule) == RULE_KEYS
    assert rule == {**rule, "id": rid, "pipeline_id": pid, "metric_field": "total_rows",
                    "z_threshold": 2.0, "lookback_days": 30, "minimum_executions": 30,
                    "active": True, "updated_at": None}
    # Defaults of the document.
    r = await post(client, tenant, "/anomaly_detection_rule",
                   {"pipeline_id": pid, "metric_field": "duration_seconds"})
    assert r.status_code == 201
    d = (await get(client, tenant, f"/anomaly_detection_rule/{r.json()['id']}")).json()
    assert (d["z_threshold"], d["lookback_days"], d["minimum_executions"], d["active"]) == (
        3.0, 30, 30, True)
    assert [x["id"] for x in (await get(client, tenant, "/anomaly_detection_rule")).json()] == [
        rid, r.json()["id"]]


async def test_patch_rule(client, tenant):
    pid = await make_pipeline(client, tenant)
    rid = (await post(client, tenant, "/anomaly_detection_rule",
                      {"pipeline_id": pid, "metric_field": "total_rows"})).json()["id"]
    r = await patch(client, tenant, "/anomaly_detection_rule", {
        "id": rid, "pipeline_id": pid, "metric_field": "Updates", "z_threshold": 2.5,
        "lookback_days": 30, "minimum_executions": 20, "active": False})
    assert r.status_code == 200, r.text
    rule = r.json()
    assert set(rule) == RULE_KEYS
    assert rule == {**rule, "id": rid, "pipeline_id": pid, "metric_field": "updates",
                    "z_threshold": 2.5, "lookback_days": 30, "minimum_executions": 20,
                    "active": False}
    assert rule["updated_at"] is not None
    assert (await get(client, tenant, f"/anomaly_detection_rule/{rid}")).json() == rule


@pytest.mark.parametrize("body,field", [
    ({"metric_field": "total_rows"}, "pipeline_id"),
    ({"pipeline_id": 1}, "metric_field"),
    ({"pipeline_id": 1, "metric_field": "colour"}, "metric_field"),
    ({"pipeline_id": 1, "metric_field": "total_rows", "z_threshold": 0.5}, "z_threshold"),
    ({"pipeline_id": 1, "metric_field": "total_rows", "z_threshold": 11}, "z_threshold"),
    ({"pipeline_id": 1, "metric_field": "total_rows", "lookback_days": 0}, "lookback_days"),
    ({"pipeline_id": 1, "metric_field": "total_rows", "lookback_days": 366}, "lookback_days"),
    ({"pipeline_id": 1, "metric_field": "total_rows", "minimum_executions": 4},
     "minimum_executions"),
    ({"pipeline_id": 1, "metric_field": "total_rows", "minimum_executions": 1001},
     "minimum_executions"),
    ({"pipeline_id": 1, "metric_field": "total_rows", "active": "maybe"}, "active"),
])
async def test_rule_validation(client, tenant, body, field):
    body = own_pipeline(body, await make_pipeline(client, tenant))
    assert_422(await post(client, tenant, "/anomaly_detection_rule", body), field)
    assert await AnomalyRule.all().count() == 0


async def test_rule_errors(client, tenant):
    pid = await make_pipeline(client, tenant)
    assert_404(await post(client, tenant, "/anomaly_detection_rule",
                          {"pipeline_id": pid + 1, "metric_field": "total_rows"}), "pipeline")
    rid = (await post(client, tenant, "/anomaly_detection_rule",
                      {"pipeline_id": pid, "metric_field": "total_rows"})).json()["id"]
    assert_422(await patch(client, tenant, "/anomaly_detection_rule", {"z_threshold": 2}), "id")
    assert_422(await patch(client, tenant, "/anomaly_detection_rule",
                           {"id": rid, "lookback_days": 0}), "lookback_days")
    assert_404(await patch(client, tenant, "/anomaly_detection_rule",
                           {"id": rid + 1, "active": False}),
               "anomaly detection rule")
    assert_404(await patch(client, tenant, "/anomaly_detection_rule",
                           {"id": rid, "pipeline_id": pid + 1}), "pipeline")
    # A second rule of the same pipeline and metric: refused, not a 500.
    other = (await post(client, tenant, "/anomaly_detection_rule",
                        {"pipeline_id": pid, "metric_field": "inserts"})).json()["id"]
    assert_422(await patch(client, tenant, "/anomaly_detection_rule",
                           {"id": other, "metric_field": "total_rows"}),
               "metric_field")


@pytest.mark.parametrize("scopes", ["report", "write"])
async def test_patch_rule_with_a_report_or_write_token(client, tenant, scopes):
    pid = await make_pipeline(client, tenant)
    rid = (await post(client, tenant, "/anomaly_detection_rule",
                      {"pipeline_id": pid, "metric_field": "total_rows"})).json()["id"]
    r = await patch(client, tenant, "/anomaly_detection_rule", {"id": rid, "active": False},
                    scopes=scopes)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False


# ----------------------------------------------------------------------------- anomaly flow


async def test_the_anomaly_flow(client, tenant, settings):
    pid = await make_pipeline(client, tenant)
    base = datetime(2024, 3, 1, 14, 0, tzinfo=UTC)
    for day, duration in enumerate((100, 110, 120, 130, 140)):
        eid = await start(client, tenant, pid, at=base + day * DAY + day * 60 * SECOND)
        await end(client, tenant, eid, base + day * DAY + day * 60 * SECOND
                  + duration * SECOND, total_rows=1000)
    r = await post(client, tenant, "/anomaly_detection_rule", {
        "pipeline_id": pid, "metric_field": "duration_seconds", "z_threshold": 1,
        "minimum_executions": 5})
    assert r.status_code == 201, r.text
    sixth = await start(client, tenant, pid, at=base + 5 * DAY + 10 * 60 * SECOND)
    await end(client, tenant, sixth, base + 5 * DAY + 10 * 60 * SECOND + 150 * SECOND,
              total_rows=1000)
    assert (await execution(client, tenant, sixth))["anomaly_flags"] is None
    assert await TaskRunner(settings).run_due() >= 1
    e = await execution(client, tenant, sixth)
    assert e["anomaly_flags"] == {"duration_seconds": True}
    assert await AnomalyResult.filter(run_id=sixth).count() == 1
    unflag = {"pipeline_id": pid, "pipeline_execution_id": sixth,
              "metric_field": ["duration_seconds"]}
    r = await post(client, tenant, "/unflag_anomaly", unflag)
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert (await execution(client, tenant, sixth))["anomaly_flags"] == {
        "duration_seconds": False}
    assert await AnomalyResult.filter(run_id=sixth).count() == 0
    assert_404(await post(client, tenant, "/unflag_anomaly", unflag), "anomaly")


async def test_unflag_errors(client, tenant):
    pid = await make_pipeline(client, tenant)
    eid = await start(client, tenant, pid)
    await end(client, tenant, eid, T0 + SECOND)
    assert_404(await post(client, tenant, "/unflag_anomaly", {
        "pipeline_id": pid, "pipeline_execution_id": eid, "metric_field": ["total_rows"]}),
        "anomaly")
    assert_404(await post(client, tenant, "/unflag_anomaly", {
        "pipeline_id": pid + 1, "pipeline_execution_id": eid, "metric_field": ["total_rows"]}),
        "pipeline execution")
    assert_404(await post(client, tenant, "/unflag_anomaly", {
        "pipeline_id": pid, "pipeline_execution_id": eid + 9, "metric_field": ["total_rows"]}),
        "pipeline execution")
    assert_422(await post(client, tenant, "/unflag_anomaly", {
        "pipeline_id": pid, "pipeline_execution_id": eid}), "metric_field")
    assert_422(await post(client, tenant, "/unflag_anomaly", {
        "pipeline_id": pid, "pipeline_execution_id": eid, "metric_field": ["colour"]}), 0)
    # The strings of a list are not lower-cased (only top-level strings are): refused as by
    # the original, at the item's place.
    r = await post(client, tenant, "/unflag_anomaly", {
        "pipeline_id": pid, "pipeline_execution_id": eid, "metric_field": ["TOTAL_ROWS"]})
    assert_422(r, 0)
    assert r.json()["detail"][0]["loc"] == ["body", "metric_field", 0]
    assert r.json()["detail"][0]["type"] == "enum"
    assert_422(await post(client, tenant, "/unflag_anomaly", {
        "pipeline_id": pid, "metric_field": ["total_rows"]}), "pipeline_execution_id")


# ------------------------------------------------------------------------------------ checks


async def test_timeliness_is_queued(client, tenant):
    r = await post(client, tenant, "/timeliness", {"lookback_minutes": 30})
    assert (r.status_code, r.json()) == (200, {"status": "queued"})
    r = await post(client, tenant, "/timeliness", {})
    assert (r.status_code, r.json()) == (200, {"status": "queued"})
    queued = await Task.filter(kind=tasks_api.TIMELINESS).order_by("id")
    assert [(t.organisation_id, t.payload) for t in queued] == [  # type: ignore[attr-defined]
        (tenant.org_id, {"lookback_minutes": 30}), (tenant.org_id, {"lookback_minutes": 60})]


@pytest.mark.parametrize("body", [{"lookback_minutes": 4}, {"lookback_minutes": 0},
                                  {"lookback_minutes": "sixty"}, {"lookback_minutes": 1.5}])
async def test_timeliness_validation(client, tenant, body):
    assert_422(await post(client, tenant, "/timeliness", body), "lookback_minutes")
    assert await Task.filter(kind=tasks_api.TIMELINESS).count() == 0


async def test_timeliness_needs_a_body(client, tenant):
    assert_422(await post(client, tenant, "/timeliness"))
    assert await Task.filter(kind=tasks_api.TIMELINESS).count() == 0


async def test_timeliness_lookback_of_5_is_accepted(client, tenant):
    r = await post(client, tenant, "/timeliness", {"lookback_minutes": 5})
    assert r.status_code == 200


async def test_freshness_is_queued(client, tenant):
    r = await post(client, tenant, "/freshness")
    assert (r.status_code, r.json()) == (200, {"status": "queued"})
    r = await post(client, tenant, "/freshness", {"ignored": True})
    assert (r.status_code, r.json()) == (200, {"status": "queued"})
    queued = await Task.filter(kind=tasks_api.FRESHNESS)
    assert len(queued) == 2
    assert {t.organisation_id for t in queued} == {tenant.org_id}  # type: ignore[attr-defined]


async def test_queued_checks_run_in_the_background(client, tenant, settings):
    pid = await make_pipeline(client, tenant, timeliness_number=1, timeliness_datepart="minute",
                              freshness_number=1, freshness_datepart="minute")
    now = datetime.now(UTC)
    late = await start(client, tenant, pid, at=now - 10 * 60 * SECOND)
    stale = await start(client, tenant, pid, at=now - DAY)
    await end(client, tenant, stale, now - DAY + SECOND, inserts=1)
    await post(client, tenant, "/timeliness", {"lookback_minutes": 60})
    await post(client, tenant, "/freshness")
    await TaskRunner(settings).run_due()
    assert await TimelinessLog.filter(run_id=late).count() == 1
    assert await FreshnessLog.filter(pipeline_id=pid).count() == 1


# ------------------------------------------------------------------------------- log cleanup


async def test_log_cleanup_deletes_and_counts(client, tenant, settings):
    pid = await make_pipeline(client, tenant)
    old = datetime.now(UTC) - 200 * DAY
    parent = await start(client, tenant, pid, at=old)
    child = await start(client, tenant, pid, at=old + SECOND, parent_id=parent)
    await end(client, tenant, child, old + 2 * SECOND)
    await end(client, tenant, parent, old + 3 * SECOND)
    lonely = await start(client, tenant, pid, at=old + DAY)
    await end(client, tenant, lonely, old + DAY + SECOND, ok=False)
    recent = await start(client, tenant, pid, at=datetime.now(UTC) - DAY)
    await end(client, tenant, recent, datetime.now(UTC) - DAY + SECOND)
    run = await Run.get(id=lonely)
    await TimelinessLog.create(organisation_id=tenant.org_id, pipeline_id=pid, run_id=run.id,
                               run_status="succeeded", deadline_at=old)
    await AnomalyResult.create(organisation_id=tenant.org_id, pipeline_id=pid, run_id=parent,
                               metric_field="total_rows", value=1, mean=1, std_dev=1,
                               z_threshold=1, lower_bound=0, upper_bound=2, points=5)
    await FreshnessLog.create(organisation_id=tenant.org_id, pipeline_id=pid,
                              last_dml_at=old, deadline_at=old + DAY)
    r = await post(client, tenant, "/log_cleanup", {"retention_days": 90, "batch_size": 1})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "total_pipeline_executions_deleted": 3,
        "total_timeliness_pipeline_execution_logs_deleted": 1,
        "total_anomaly_detection_results_deleted": 1,
        "total_pipeline_execution_closure_parent_deleted": 1,
        "total_pipeline_execution_closure_child_deleted": 1,
        "total_freshness_pipeline_logs_deleted": 1,
        # issue 11: what was kept, and why (nothing old here)
        "kept_open": 0, "kept_latest": 0, "kept_failure_streak": 0, "kept_freshness_logs": 0,
    }
    # Committed: the rows are gone, seen over REST and in the database.
    for eid in (parent, child, lonely):
        assert_404(await get(client, tenant, f"/pipeline_execution/{eid}"),
                   "pipeline execution")
    assert (await execution(client, tenant, recent))["status"] == "succeeded"
    assert await Run.filter(id__in=[parent, child, lonely]).count() == 0
    assert await TimelinessLog.all().count() == 0
    assert await AnomalyResult.all().count() == 0
    assert await FreshnessLog.all().count() == 0
    # Nothing left to delete.
    r = await post(client, tenant, "/log_cleanup", {"retention_days": 90})
    assert r.json() == dict.fromkeys(COUNTERS, 0)


async def test_log_cleanup_keeps_what_is_within_retention(client, tenant):
    pid = await make_pipeline(client, tenant)
    now = datetime.now(UTC)
    kept = await start(client, tenant, pid, at=now - 100 * DAY)
    await end(client, tenant, kept, now - 100 * DAY + SECOND)
    latest = await start(client, tenant, pid, at=now - DAY)
    await end(client, tenant, latest, now - DAY + SECOND)
    r = await post(client, tenant, "/log_cleanup", {"retention_days": 120})
    assert r.json()["total_pipeline_executions_deleted"] == 0
    assert await Run.all().count() == 2


@pytest.mark.parametrize("body,field", [
    ({}, "retention_days"), ({"retention_days": 89}, "retention_days"),
    ({"retention_days": "ninety"}, "retention_days"),
    ({"retention_days": 90, "batch_size": 0}, "batch_size"),
    ({"retention_days": 90, "batch_size": "big"}, "batch_size"),
])
async def test_log_cleanup_validation(client, tenant, body, field):
    assert_422(await post(client, tenant, "/log_cleanup", body), field)


async def test_log_cleanup_needs_a_body(client, tenant):
    assert_422(await post(client, tenant, "/log_cleanup"))


async def test_log_cleanup_of_one_organisation_leaves_the_others(client, tenant, other_tenant):
    old = datetime.now(UTC) - 200 * DAY
    pid = await make_pipeline(client, other_tenant)
    theirs = await start(client, other_tenant, pid, at=old)
    await end(client, other_tenant, theirs, old + SECOND)
    await start(client, other_tenant, pid, at=datetime.now(UTC) - SECOND)
    r = await post(client, tenant, "/log_cleanup", {"retention_days": 90})
    assert r.json() == dict.fromkeys(COUNTERS, 0)
    assert await Run.filter(id=theirs).exists()


# ---------------------------------------------------------------------------- queue monitor


async def test_monitor_queue(client, tenant):
    r = await post(client, tenant, "/celery/monitor-queue")
    assert (r.status_code, r.json()) == (200, {"status": "success"})


async def test_monitor_queue_answers_error_when_the_queue_cannot_be_read(client, tenant,
                                                                         monkeypatch):
    async def broken(**_: Any) -> dict[str, Any]:
        raise RuntimeError("database away")

    monkeypatch.setattr(watcher_shim, "check_queue", broken)
    r = await post(client, tenant, "/celery/monitor-queue")
    assert (r.status_code, r.json()) == (500, {"status": "error"})


async def test_monitor_queue_over_the_threshold_still_succeeds(client, tenant):
    for _ in range(55):
        await tasks_api.enqueue(kind=tasks_api.FRESHNESS, organisation_id=tenant.org_id)
    r = await post(client, tenant, "/celery/monitor-queue")
    assert (r.status_code, r.json()) == (200, {"status": "success"})


# ------------------------------------------------------------------- wire-level validation


async def test_unparsable_json_is_422(client, tenant):
    for raw in (b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"):
        r = await client.post("/pipeline", content=raw, headers={
            **tenant.headers("write"), "Content-Type": "application/json"})
        assert_422(r)
    assert await Pipeline.all().count() == 0


async def test_an_empty_body_is_422(client, tenant):
    r = await client.post("/pipeline", headers=tenant.headers("write"))
    assert_422(r)


@pytest.mark.parametrize("path,param", [
    ("/pipeline/abc", "pipeline_id"), ("/pipeline/1.5", "pipeline_id"),
    ("/pipeline_type/x", "pipeline_type_id"),
    ("/pipeline_execution/one", "pipeline_execution_id"),
    ("/address/1e3", "address_id"), ("/address_type/%20", "address_type_id"),
    ("/anomaly_detection_rule/null", "anomaly_detection_rule_id"),
])
async def test_non_integer_path_ids_are_422(client, tenant, path, param):
    r = await get(client, tenant, path)
    assert_422(r)
    assert r.json()["detail"][0]["loc"] == ["path", param]


@pytest.mark.parametrize("path,kind", [
    ("/pipeline/{}", "pipeline"), ("/pipeline_type/{}", "pipeline type"),
    ("/pipeline_execution/{}", "pipeline execution"), ("/address/{}", "address"),
    ("/address_type/{}", "address type"),
    ("/anomaly_detection_rule/{}", "anomaly detection rule"),
])
@pytest.mark.parametrize("object_id", ["999", "0", "-3", str(2**31), str(2**63), "9" * 40])
async def test_unknown_path_ids_are_404(client, tenant, path, kind, object_id):
    assert_404(await get(client, tenant, path.format(object_id)), kind)


async def test_malformed_and_padded_path_ids(client, tenant):
    pid = await make_pipeline(client, tenant)
    for raw in ("--5", "-", "5-", "+5", "0x1"):
        r = await get(client, tenant, f"/pipeline/{raw}")
        assert_422(r)
        assert r.json()["detail"][0]["loc"] == ["path", "pipeline_id"]
    # More digits than Python parses by default: simply no such id (not a 500).
    assert_404(await get(client, tenant, "/pipeline/" + "9" * 5000), "pipeline")
    assert_404(await get(client, tenant, "/pipeline_execution/-" + "9" * 5000),
               "pipeline execution")
    # Leading zeros do not change the number.
    r = await get(client, tenant, "/pipeline/" + "0" * 5000 + str(pid))
    assert (r.status_code, r.json()["id"]) == (200, pid)


async def test_nested_fields_are_located_with_integer_indexes(client, tenant):
    pid = await make_pipeline(client, tenant)
    r = await post(client, tenant, "/address_lineage", {
        "pipeline_id": pid, "target_addresses": [],
        "source_addresses": [{"name": "a", "address_type_name": "t",
                              "address_type_group_name": "g"}, {"name": "b"}]})
    assert_422(r)
    locs = [item["loc"] for item in r.json()["detail"]]
    assert ["body", "source_addresses", 1, "address_type_name"] in locs
    assert all(loc[:3] == ["body", "source_addresses", 1] for loc in locs)


@pytest.mark.parametrize("raw", [
    b'{"name": "p\\ud800", "pipeline_type_name": "t"}',
    b'{"name": "p", "pipeline_type_name": "t", "pipeline_metadata": {"a": ["\\udfff"]}}',
    b'{"name": "p", "pipeline_type_name": "t", "next_watermark": "\\ud83d"}',
])
async def test_lone_surrogates_are_422_and_never_stored(client, tenant, raw):
    r = await client.post("/pipeline", content=raw, headers={
        **tenant.headers("write"), "Content-Type": "application/json"})
    assert_422(r)
    assert await Pipeline.all().count() == 0
    # A paired surrogate escape is an ordinary character.
    r = await client.post("/pipeline", content=b'{"name": "p\\ud83d\\ude00", '
                          b'"pipeline_type_name": "t", "pipeline_metadata": {"e": "\\u00e9"}}',
                          headers={**tenant.headers("write"), "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    listed = (await get(client, tenant, "/pipeline")).json()
    assert [(p["name"], p["pipeline_metadata"]) for p in listed] == [("p\U0001f600",
                                                                      {"e": "\u00e9"})]


@pytest.fixture
async def lenient_client(app):
    """A client that sees a server error as the 500 a real server answers."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://runwatch.test") as c:
        yield c


async def test_a_start_date_at_the_end_of_time_is_not_a_server_error(lenient_client, client,
                                                                     tenant):
    pid = await make_pipeline(client, tenant)
    r = await post(lenient_client, tenant, "/start_pipeline_execution",
                   {"pipeline_id": pid, "start_date": "9999-12-31T23:00:00Z"})
    assert r.status_code in (201, 422), r.text


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_finite_watermarks_are_422(client, tenant, literal):
    r = await client.post("/pipeline", content=b'{"name": "p", "pipeline_type_name": "t", '
                          b'"next_watermark": ' + literal + b"}",
                          headers={**tenant.headers("write"), "Content-Type": "application/json"})
    # Not strict JSON: the whole body is refused before any field is read (issue 10).
    assert_422(r)
    assert r.json()["detail"][0]["type"] == "json_invalid", r.text


@pytest.mark.parametrize("path,body", [
    ("/pipeline", {"name": "Same", "pipeline_type_name": "new type"}),
    ("/pipeline_type", {"name": "same"}),
    ("/address", {"name": "db.s.t", "address_type_name": "pg",
                  "address_type_group_name": "database"}),
    ("/address_type", {"name": "same", "group_name": "g"}),
])
async def test_concurrent_get_or_create_makes_one_row(client, tenant, path, body):
    answers = await asyncio.gather(*(post(client, tenant, path, body) for _ in range(6)))
    assert sorted(r.status_code for r in answers) == [200] * 5 + [201], [
        r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1


async def test_concurrent_rule_get_or_create_makes_one_rule(client, tenant):
    pid = await make_pipeline(client, tenant)
    body = {"pipeline_id": pid, "metric_field": "total_rows"}
    answers = await asyncio.gather(*(post(client, tenant, "/anomaly_detection_rule", body)
                                     for _ in range(6)))
    assert sorted(r.status_code for r in answers) == [200] * 5 + [201]
    assert await AnomalyRule.all().count() == 1


# ----------------------------------------------------------------------------------- auth


def every_route() -> list[tuple[str, str, dict[str, Any] | None]]:
    pipeline_body = {"name": "p", "pipeline_type_name": "t"}
    return [
        ("POST", "/pipeline", pipeline_body), ("GET", "/pipeline", None),
        ("PATCH", "/pipeline", {"id": 1, "active": False}), ("GET", "/pipeline/1", None),
        ("POST", "/pipeline_type", {"name": "t"}), ("GET", "/pipeline_type", None),
        ("GET", "/pipeline_type/1", None),
        ("POST", "/start_pipeline_execution", {"pipeline_id": 1}),
        ("POST", "/end_pipeline_execution", {"id": 1, "end_date": iso(T0),
                                             "completed_successfully": True}),
        ("GET", "/pipeline_execution/1", None),
        ("POST", "/address", {"name": "a", "address_type_name": "t",
                              "address_type_group_name": "g"}),
        ("GET", "/address", None), ("PATCH", "/address", {"id": 1, "primary_key": "k"}),
        ("GET", "/address/1", None),
        ("POST", "/address_type", {"name": "t", "group_name": "g"}),
        ("GET", "/address_type", None), ("GET", "/address_type/1", None),
        ("POST", "/address_lineage", {"pipeline_id": 1, "source_addresses": [],
                                      "target_addresses": []}),
        ("POST", "/anomaly_detection_rule", {"pipeline_id": 1, "metric_field": "total_rows"}),
        ("GET", "/anomaly_detection_rule", None),
        ("PATCH", "/anomaly_detection_rule", {"id": 1, "active": False}),
        ("GET", "/anomaly_detection_rule/1", None),
        ("POST", "/unflag_anomaly", {"pipeline_id": 1, "pipeline_execution_id": 1,
                                     "metric_field": ["total_rows"]}),
        ("POST", "/timeliness", {"lookback_minutes": 60}), ("POST", "/freshness", None),
        ("POST", "/log_cleanup", {"retention_days": 90}),
        ("POST", "/celery/monitor-queue", None),
    ]


ROUTES = every_route()
READS = [r for r in ROUTES if r[0] == "GET"]
WRITES = [r for r in ROUTES if r[0] != "GET"]


def route_id(route: tuple[str, str, Any]) -> str:
    return f"{route[0]} {route[1]}"


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
async def test_every_route_needs_a_token(client, tenant, route):
    method, path, body = route
    r = await client.request(method, path, json=body)
    assert r.status_code == 401, r.text
    assert set(r.json()) == {"detail"}
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    r = await client.request(method, path, json=body,
                             headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401, r.text
    assert await Pipeline.all().count() == 0 and await Task.all().count() == 0


@pytest.mark.parametrize("route", READS, ids=route_id)
async def test_reads_need_the_read_scope(client, tenant, route):
    method, path, _ = route
    for scopes in ("report", "write"):
        r = await call(client, tenant, method, path, scopes=scopes)
        assert r.status_code == 403, (scopes, r.text)
        assert set(r.json()) == {"detail"}
    r = await call(client, tenant, method, path, scopes="read")
    assert r.status_code in (200, 404), r.text


@pytest.mark.parametrize("route", WRITES, ids=route_id)
async def test_writes_refuse_a_read_only_token(client, tenant, route):
    method, path, body = route
    r = await call(client, tenant, method, path, body, scopes="read")
    assert r.status_code == 403, r.text
    assert set(r.json()) == {"detail"}
    assert await Pipeline.all().count() == 0
    assert await Task.all().count() == 0
    assert await PipelineType.all().count() == 0
    assert await AddressType.all().count() == 0


@pytest.mark.parametrize("scopes", ["report", "write", "admin", "read,write,report"])
async def test_report_or_write_tokens_may_write(client, tenant, scopes):
    r = await post(client, tenant, "/pipeline", {"name": "p", "pipeline_type_name": "t"},
                   scopes=scopes)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await post(client, tenant, "/start_pipeline_execution",
                   {"pipeline_id": pid, "start_date": iso(T0)}, scopes=scopes)
    assert r.status_code == 201, r.text
    r = await post(client, tenant, "/end_pipeline_execution", {
        "id": r.json()["id"], "end_date": iso(T0 + SECOND), "completed_successfully": True},
        scopes=scopes)
    assert r.status_code == 204, r.text
    r = await patch(client, tenant, "/pipeline", {"id": pid, "active": False}, scopes=scopes)
    assert r.status_code == 200, r.text
    r = await post(client, tenant, "/timeliness", {}, scopes=scopes)
    assert r.status_code == 200, r.text
    r = await post(client, tenant, "/celery/monitor-queue", scopes=scopes)
    assert r.status_code == 200, r.text


async def test_another_organisations_objects_are_404_and_unchanged(client, tenant,
                                                                   other_tenant, settings):
    """Everything `tenant` owns, addressed by `other_tenant`: not found, nothing changed."""
    pid = await make_pipeline(client, tenant, next_watermark="w2")
    eid = await start(client, tenant, pid)
    await end(client, tenant, eid, T0 + SECOND, total_rows=1)
    running = await start(client, tenant, pid, at=T0 + DAY)
    type_id = (await pipeline(client, tenant, pid))["pipeline_type_id"]
    aid = (await post(client, tenant, "/address", {
        "name": "a.b.c", "address_type_name": "pg",
        "address_type_group_name": "database"})).json()["id"]
    atid = (await get(client, tenant, f"/address/{aid}")).json()["address_type_id"]
    rid = (await post(client, tenant, "/anomaly_detection_rule",
                      {"pipeline_id": pid, "metric_field": "total_rows"})).json()["id"]
    await Run.filter(id=eid).update(anomaly_flags={"total_rows": True})
    await patch(client, tenant, "/pipeline", {"id": pid, "load_lineage": True})

    async def snapshot() -> list[Any]:
        return [
            await pipeline(client, tenant, pid), await execution(client, tenant, eid),
            await execution(client, tenant, running),
            (await get(client, tenant, f"/pipeline_type/{type_id}")).json(),
            (await get(client, tenant, f"/address/{aid}")).json(),
            (await get(client, tenant, f"/address_type/{atid}")).json(),
            (await get(client, tenant, f"/anomaly_detection_rule/{rid}")).json(),
            await AddressLineage.all().count(),
        ]

    before = await snapshot()
    o = other_tenant
    assert_404(await get(client, o, f"/pipeline/{pid}"), "pipeline")
    assert_404(await get(client, o, f"/pipeline_type/{type_id}"), "pipeline type")
    assert_404(await get(client, o, f"/pipeline_execution/{eid}"), "pipeline execution")
    assert_404(await get(client, o, f"/address/{aid}"), "address")
    assert_404(await get(client, o, f"/address_type/{atid}"), "address type")
    assert_404(await get(client, o, f"/anomaly_detection_rule/{rid}"), "anomaly detection rule")
    for path in ("/pipeline", "/pipeline_type", "/address", "/address_type",
                 "/anomaly_detection_rule"):
        assert (await get(client, o, path)).json() == []
    assert_404(await patch(client, o, "/pipeline", {"id": pid, "active": False}), "pipeline")
    assert_404(await patch(client, o, "/pipeline", {"name": "load", "active": False}),
               "pipeline")
    assert_404(await post(client, o, "/start_pipeline_execution", {"pipeline_id": pid}),
               "pipeline")
    o_pid = await make_pipeline(client, o, name="theirs")
    assert_404(await post(client, o, "/start_pipeline_execution",
                          {"pipeline_id": o_pid, "parent_id": eid}), "parent execution")
    assert_404(await post(client, o, "/end_pipeline_execution", {
        "id": running, "end_date": iso(T0 + DAY + SECOND), "completed_successfully": True}),
        "pipeline execution")
    assert_404(await patch(client, o, "/address", {"id": aid, "primary_key": "x"}), "address")
    assert_404(await patch(client, o, "/pipeline", {"id": o_pid, "pipeline_type_id": type_id}),
               "pipeline type")
    o_aid = (await post(client, o, "/address", {
        "name": "x", "address_type_name": "t", "address_type_group_name": "g"})).json()["id"]
    assert_404(await patch(client, o, "/address", {"id": o_aid, "address_type_id": atid}),
               "address type")
    assert_404(await post(client, o, "/address_lineage", lineage_body(pid, ["q"], ["r"])),
               "pipeline")
    assert_404(await post(client, o, "/anomaly_detection_rule",
                          {"pipeline_id": pid, "metric_field": "inserts"}), "pipeline")
    assert_404(await patch(client, o, "/anomaly_detection_rule", {"id": rid, "active": False}),
               "anomaly detection rule")
    assert_404(await post(client, o, "/unflag_anomaly", {
        "pipeline_id": pid, "pipeline_execution_id": eid, "metric_field": ["total_rows"]}),
        "pipeline execution")
    # The same names in the other organisation are its own objects.
    r = await post(client, o, "/pipeline", {"name": "load", "pipeline_type_name": "extraction"})
    assert r.status_code == 201 and r.json()["id"] != pid
    r = await post(client, o, "/address", {"name": "a.b.c", "address_type_name": "pg",
                                           "address_type_group_name": "database"})
    assert r.status_code == 201 and r.json()["id"] != aid
    old = datetime.now(UTC) - 400 * DAY
    await Run.filter(id=eid).update(started_at=old, finished_at=old + SECOND)
    r = await post(client, o, "/log_cleanup", {"retention_days": 90})
    assert r.json()["total_pipeline_executions_deleted"] == 0
    assert await snapshot() == [
        before[0], {**before[1], "start_date": iso(old), "end_date": iso(old + SECOND)},
        *before[2:]]


# ------------------------------------------------------------------------- configurable prefix


async def test_the_prefix_is_configurable(app, settings, tenant):
    prefixed = create_app(replace(settings, watcher_prefix="/watcher"))
    transport = httpx.ASGITransport(app=prefixed)
    async with httpx.AsyncClient(transport=transport, base_url="http://runwatch.test") as c:
        r = await c.post("/watcher/pipeline", json={"name": "p", "pipeline_type_name": "t"},
                         headers=tenant.headers("write"))
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        for path in ("/watcher/pipeline", "/watcher/pipeline/", f"/watcher/pipeline/{pid}"):
            r = await c.get(path, headers=tenant.headers("read"))
            assert r.status_code == 200, (path, r.text)
        r = await c.get("/pipeline", headers=tenant.headers("read"))
        assert r.status_code == 404
        r = await c.post("/pipeline", json={"name": "q", "pipeline_type_name": "t"},
                         headers=tenant.headers("write"))
        assert r.status_code in (404, 405)
        r = await c.get("/watcher/")
        assert (r.status_code, r.json()["status"]) == (200, "ok")
        r = await c.get("/watcher")
        assert r.status_code == 200
        r = await c.get("/")
        assert r.status_code == 404
    assert await Pipeline.all().count() == 1



