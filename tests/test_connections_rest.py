"""REST contract of warehouse connections and of pre-creating runs.

POST/GET/PATCH `.../warehouse-connections/[{id}/]` and POST `.../{id}/metrics/`, as the Lambda's
recurring task and the frontends call them: DRF-style bodies (`{"detail": ...}` for 401/403/
404/405, `{"field": [...]}` for 400), non-secret settings as top-level keys, cursor pagination.

The response-shape assertions at the top are shared with `test_warehouse_report.py`.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from runwatch.models import Connection, Run, RunStatus
from tests.conftest import Tenant
from tests.helpers import create_connection, iso

# ----------------------------------------------------------------------------------------------
# shared assertions


def assert_detail(r: httpx.Response, status: int, message: str | None = None) -> str:
    """`{"detail": "<non-empty message>"}` with this status; returns the message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["detail"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    if message is not None:
        assert body["detail"] == message, body
    return body["detail"]


def assert_not_found(r: httpx.Response) -> None:
    assert_detail(r, 404, "Not found.")


def _names(key: str) -> set[str]:
    """A key and, for a nested setting's path (`auth.api_key`, `hosts[1].token`), its parts."""
    return {key, *re.split(r"[.\[\]]+", key)}


def assert_field_error(r: httpx.Response, *fields: str) -> dict[str, Any]:
    """400 `{"field": ["message", ...]}` naming (one of) `fields`; returns the body."""
    assert r.status_code == 400, r.text
    body = r.json()
    assert isinstance(body, dict) and body, body
    assert any(set(fields) & _names(k) for k in body), f"none of {fields} in {body}"
    for messages in body.values():
        assert isinstance(messages, list) and messages, body
        assert all(isinstance(m, str) and m for m in messages), body
    return body


def assert_utc_timestamp(text: Any) -> datetime:
    assert isinstance(text, str) and text.endswith("Z"), text
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0), text
    return moment


def param_id(value: Any) -> str:
    """Readable test ids for parameter tables of bodies and field names."""
    if isinstance(value, dict):
        return ",".join(f"{k}={param_id(v)}" for k, v in value.items())[:60]
    if isinstance(value, list):
        return "|".join(map(param_id, value))
    if isinstance(value, timedelta):
        return f"{value.total_seconds():+g}s"
    return repr(value)[:30] if not isinstance(value, str) else value[:30]


# ----------------------------------------------------------------------------------------------
# local helpers

SETTINGS = {"account": "xy12345.eu-west-1", "warehouse": "LOAD_WH", "database": "ANALYTICS",
            "options": {"schema": "EVENTS", "retries": 3, "tags": ["a", "b"]}}


async def post_connection(
    client: httpx.AsyncClient, tenant: Tenant, body: Any, scopes: str = "write"
) -> httpx.Response:
    return await client.post(tenant.prefix + "/", json=body, headers=tenant.headers(scopes))


async def get_json(client: httpx.AsyncClient, url: str, tenant: Tenant) -> dict[str, Any]:
    r = await client.get(url, headers=tenant.headers("read"))
    assert r.status_code == 200, r.text
    return r.json()


async def stored_connections(tenant: Tenant) -> list[Connection]:
    return await Connection.filter(organisation_id=tenant.org_id).order_by("id")


async def post_run(
    client: httpx.AsyncClient, tenant: Tenant, cid: Any, body: Any = None, *,
    scopes: str = "report", slash: bool = True,
) -> httpx.Response:
    url = f"{tenant.prefix}/{cid}/metrics" + ("/" if slash else "")
    kwargs = {} if body is None else {"json": body}
    return await client.post(url, headers=tenant.headers(scopes), **kwargs)


# ----------------------------------------------------------------------------------------------
# create


async def test_create_returns_the_connection_with_settings_as_top_level_keys(client, tenant):
    r = await post_connection(client, tenant, {"name": "Analytics", "type": "snowflake",
                                               **SETTINGS})
    assert r.status_code == 201, r.text
    body = r.json()
    assert type(body["id"]) is int and body["id"] > 0
    created = assert_utc_timestamp(body.pop("created_at"))
    updated = assert_utc_timestamp(body.pop("updated_at"))
    assert updated >= created
    assert body == {"id": body["id"], "name": "Analytics", "type": "snowflake", **SETTINGS}

    (row,) = await stored_connections(tenant)
    assert (row.id, row.name, row.warehouse_type, row.settings) == (
        body["id"], "Analytics", "snowflake", SETTINGS)


async def test_create_without_settings(client, tenant):
    r = await post_connection(client, tenant, {"name": "bare", "type": "bigquery"})
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"id", "name", "type", "created_at", "updated_at"}


@pytest.mark.parametrize("secret, key", [
    ({"password": "hunter2"}, "password"),
    ({"PASSWORD": "hunter2"}, "PASSWORD"),
    ({"db_passwd": "hunter2"}, "db_passwd"),
    ({"private_key": "-----BEGIN PRIVATE KEY-----"}, "private_key"),
    ({"client_secret": "hunter2"}, "client_secret"),
    ({"aws_access_key_id": "AKIA0000"}, "aws_access_key_id"),
    ({"auth": {"api_key": "hunter2"}}, "api_key"),
    ({"auth": {"method": "key", "details": {"token": "hunter2"}}}, "token"),
    ({"hosts": [{"host": "a"}, {"credentials": "hunter2"}]}, "credentials"),
], ids=param_id)
async def test_secrets_in_settings_are_refused_and_nothing_is_stored(
    client, tenant, secret, key
):
    r = await post_connection(client, tenant, {"name": "w", "type": "snowflake",
                                               "account": "acc", **secret})
    assert_field_error(r, key)
    assert "hunter2" not in r.text
    assert await stored_connections(tenant) == []
    assert (await get_json(client, tenant.prefix + "/", tenant))["results"] == []


async def test_duplicate_name_is_a_name_error(client, tenant, other_tenant):
    await create_connection(client, tenant, "warehouse")
    r = await post_connection(client, tenant, {"name": "warehouse", "type": "redshift"})
    assert_field_error(r, "name")
    assert len(await stored_connections(tenant)) == 1
    # names are unique per organisation only
    assert (await post_connection(client, other_tenant, {"name": "warehouse",
                                                         "type": "redshift"})).status_code == 201


@pytest.mark.parametrize("body, field", [
    ({"type": "snowflake"}, "name"),
    ({"name": "", "type": "snowflake"}, "name"),
    ({"name": "   ", "type": "snowflake"}, "name"),
    ({"name": 42, "type": "snowflake"}, "name"),
    ({"name": "x" * 201, "type": "snowflake"}, "name"),
    ({"name": "w"}, "type"),
    ({"name": "w", "type": ""}, "type"),
    ({"name": "w", "type": 7}, "type"),
    ({"name": "w", "type": "snow flake; drop"}, "type"),
    ({"name": "w", "type": "snowflake", "id": 99}, "id"),
    ({"name": "w", "type": "snowflake", "created_at": "2026-01-01T00:00:00Z"}, "created_at"),
    ({"name": "w", "type": "snowflake", "updated_at": "2026-01-01T00:00:00Z"}, "updated_at"),
    ({"name": "w", "type": "snowflake", "organisation": 1}, "organisation"),
    ({"name": "w", "type": "snowflake", "settings": {"a": 1}}, "settings"),
    ({"name": "w", "type": "snowflake", "notes": "x" * 17_000}, "settings"),  # over 16 KiB
], ids=param_id)
async def test_invalid_connection_is_refused_naming_the_field(client, tenant, body, field):
    assert_field_error(await post_connection(client, tenant, body), field)
    assert await stored_connections(tenant) == []


@pytest.mark.parametrize("body, field", [
    ({"name": "a\x00b", "type": "snowflake"}, "name"),
    ({"name": "w", "type": "snowflake", "notes": "x\x00y"}, "notes"),
    ({"name": "w", "type": "snowflake", "k\x00": 1}, "k\x00"),
], ids=["name", "setting-value", "setting-key"])
async def test_nul_characters_are_never_a_500(client, tenant, body, field):
    """PostgreSQL text and jsonb cannot hold U+0000: a 400 naming the field, or a connection
    that reads back exactly as sent; never a 500."""
    r = await post_connection(client, tenant, body)
    if r.status_code == 400:
        assert_field_error(r, field)
        assert await stored_connections(tenant) == []
    else:
        assert r.status_code == 201, r.text
        assert await get_json(client, f"{tenant.prefix}/{r.json()['id']}/", tenant) == r.json()


async def test_concurrent_creations_of_one_name_create_one_connection(client, tenant):
    body = {"name": "race", "type": "snowflake"}
    responses = await asyncio.gather(*(post_connection(client, tenant, body) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [201] + [400] * 9
    for r in responses:
        if r.status_code == 400:
            assert_field_error(r, "name")
    assert len(await stored_connections(tenant)) == 1


async def test_missing_name_and_type_are_both_reported(client, tenant):
    body = assert_field_error(await post_connection(client, tenant, {"account": "a"}), "name")
    assert "type" in body


@pytest.mark.parametrize("raw, key", [
    (b'{"name": "w", ', "detail"),
    (b"[" * 100_000 + b"]" * 100_000, "detail"),  # nested beyond the parser's depth
    (b"\xff\xfe", "detail"),
    (b'["name", "type"]', "non_field_errors"),
    (b'"snowflake"', "non_field_errors"),
], ids=["truncated", "deeply-nested", "bom", "list", "string"])
async def test_a_body_that_is_not_a_json_object_is_a_400(client, tenant, raw, key):
    r = await client.post(tenant.prefix + "/", content=raw,
                          headers={**tenant.headers("write"), "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert key in r.json(), r.text


@pytest.mark.parametrize("scopes, status", [
    ("read", 403), ("report", 403), ("write", 201), ("admin", 201), ("read,write,report", 201),
])
async def test_creating_a_connection_needs_the_write_scope(client, tenant, scopes, status):
    r = await post_connection(client, tenant, {"name": "w", "type": "snowflake"}, scopes)
    if status == 403:
        assert_detail(r, 403)
        assert await stored_connections(tenant) == []
    else:
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer rw_nope_nope"}])
async def test_anonymous_or_unknown_token_is_401(client, tenant, headers):
    r = await client.post(tenant.prefix + "/", json={"name": "w", "type": "snowflake"},
                          headers=headers)
    assert_detail(r, 401)
    r = await client.get(tenant.prefix + "/", headers=headers)
    assert_detail(r, 401)
    assert await stored_connections(tenant) == []


async def test_creating_under_another_organisation_is_not_found(client, tenant, other_tenant):
    r = await client.post(other_tenant.prefix + "/", json={"name": "w", "type": "snowflake"},
                          headers=tenant.headers("write"))
    assert_not_found(r)
    assert await stored_connections(tenant) == await stored_connections(other_tenant) == []


# ----------------------------------------------------------------------------------------------
# list and pagination


async def test_empty_list(client, tenant):
    assert await get_json(client, tenant.prefix + "/", tenant) == {"next": None, "results": []}


@pytest.mark.parametrize("slash", ["/", ""])
async def test_list_is_oldest_first_and_only_the_callers(client, tenant, other_tenant, slash):
    ids = [await create_connection(client, tenant, f"w{i}", account=f"a{i}") for i in range(3)]
    await create_connection(client, other_tenant, "foreign")
    body = await get_json(client, tenant.prefix + slash, tenant)
    assert body["next"] is None
    assert [c["id"] for c in body["results"]] == ids
    assert [c["account"] for c in body["results"]] == ["a0", "a1", "a2"]
    single = await get_json(client, f"{tenant.prefix}/{ids[1]}/", tenant)
    assert body["results"][1] == single


async def test_limit_pages_through_every_connection_by_next_url(client, tenant):
    ids = [await create_connection(client, tenant, f"w{i}") for i in range(3)]
    seen, url, pages = [], tenant.prefix + "/?limit=1", 0
    while url is not None:
        page = await get_json(client, url, tenant)
        assert len(page["results"]) == 1, page
        seen += [c["id"] for c in page["results"]]
        url, pages = page["next"], pages + 1
        if url is not None:
            assert httpx.URL(url).params["limit"] == "1"
    assert (seen, pages) == (ids, 3)


async def test_limit_larger_than_the_list(client, tenant):
    ids = [await create_connection(client, tenant, f"w{i}") for i in range(2)]
    page = await get_json(client, tenant.prefix + "/?limit=2", tenant)
    assert [c["id"] for c in page["results"]] == ids and page["next"] is None


@pytest.mark.parametrize("query, field", [
    ("limit=abc", "limit"), ("limit=-1", "limit"), ("limit=1.5", "limit"),
    ("cursor=not-a-cursor", "cursor"),
])
async def test_bad_list_parameters_name_the_parameter(client, tenant, query, field):
    await create_connection(client, tenant)
    r = await client.get(f"{tenant.prefix}/?{query}", headers=tenant.headers("read"))
    assert_field_error(r, field)


# ----------------------------------------------------------------------------------------------
# read and update one


@pytest.mark.parametrize("slash", ["/", ""])
async def test_get_one(client, tenant, slash):
    created = (await post_connection(client, tenant, {"name": "w", "type": "snowflake",
                                                      **SETTINGS})).json()
    assert await get_json(client, f"{tenant.prefix}/{created['id']}{slash}", tenant) == created


@pytest.mark.parametrize("case", ["unknown", "zero", "non-numeric", "huge", "foreign-own-url",
                                  "foreign-token-on-our-url"])
async def test_get_one_not_found(client, tenant, other_tenant, case):
    cid = await create_connection(client, tenant)
    foreign = await create_connection(client, other_tenant)
    prefix, caller, ident = {
        "unknown": (tenant.prefix, tenant, cid + 1000),
        "zero": (tenant.prefix, tenant, 0),
        "non-numeric": (tenant.prefix, tenant, "abc"),
        "huge": (tenant.prefix, tenant, "99999999999999999999999"),
        "foreign-own-url": (tenant.prefix, tenant, foreign),
        "foreign-token-on-our-url": (tenant.prefix, other_tenant, cid),
    }[case]
    assert_not_found(await client.get(f"{prefix}/{ident}/", headers=caller.headers("read")))


async def test_patch_renames_and_keeps_the_rest(client, tenant):
    created = (await post_connection(client, tenant, {"name": "old", "type": "snowflake",
                                                      **SETTINGS})).json()
    url = f"{tenant.prefix}/{created['id']}/"
    r = await client.patch(url, json={"name": "new"}, headers=tenant.headers("write"))
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["name"] == "new"
    assert assert_utc_timestamp(patched["updated_at"]) >= assert_utc_timestamp(
        created["updated_at"])
    unchanged = {k: v for k, v in created.items() if k not in {"name", "updated_at"}}
    assert {k: v for k, v in patched.items() if k not in {"name", "updated_at"}} == unchanged
    assert await get_json(client, url, tenant) == patched


async def test_patch_merges_settings_and_null_removes_a_key(client, tenant):
    cid = await create_connection(client, tenant, account="a", warehouse="W")
    r = await client.patch(f"{tenant.prefix}/{cid}", json={"warehouse": None, "role": "LOADER"},
                           headers=tenant.headers("write"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["account"], body["role"], "warehouse" in body) == ("a", "LOADER", False)


@pytest.mark.parametrize("patch, field", [
    ({"name": ""}, "name"),
    ({"name": "taken"}, "name"),
    ({"type": "Not A Type!"}, "type"),
    ({"password": "hunter2"}, "password"),
    ({"auth": {"api_key": "hunter2"}}, "api_key"),
    ({"id": 5}, "id"),
], ids=param_id)
async def test_invalid_patch_changes_nothing(client, tenant, patch, field):
    await create_connection(client, tenant, "taken")
    cid = await create_connection(client, tenant, "mine", account="a")
    before = await get_json(client, f"{tenant.prefix}/{cid}/", tenant)
    r = await client.patch(f"{tenant.prefix}/{cid}/", json=patch, headers=tenant.headers("write"))
    assert_field_error(r, field)
    assert "hunter2" not in r.text
    assert await get_json(client, f"{tenant.prefix}/{cid}/", tenant) == before


async def test_patch_needs_write_and_an_own_connection(client, tenant, other_tenant):
    cid = await create_connection(client, tenant, "mine")
    url = f"{tenant.prefix}/{cid}/"
    assert_detail(await client.patch(url, json={"name": "x"}, headers=tenant.headers("read")), 403)
    assert_not_found(await client.patch(url, json={"name": "x"},
                                        headers=other_tenant.headers("write")))
    assert_not_found(await client.patch(f"{tenant.prefix}/{cid + 1000}/", json={"name": "x"},
                                        headers=tenant.headers("write")))
    assert (await get_json(client, url, tenant))["name"] == "mine"


# ----------------------------------------------------------------------------------------------
# pre-creating runs: POST .../{id}/metrics/


@pytest.mark.parametrize("slash", [True, False])
@pytest.mark.parametrize("body", [None, {}, {"started_at": None}])
async def test_start_run_now(client, tenant, slash, body):
    cid = await create_connection(client, tenant)
    r = await post_run(client, tenant, cid, body, slash=slash)
    assert r.status_code == 201, r.text
    data = r.json()
    assert set(data) == {"run_id", "started_at"} and type(data["run_id"]) is int
    started = assert_utc_timestamp(data["started_at"])
    run = await Run.get(id=data["run_id"])
    assert (run.status, run.started_at, run.finished_at) == (RunStatus.RUNNING, started, None)
    assert run.organisation_id == tenant.org_id


@pytest.mark.parametrize("offset", [timedelta(hours=-2), timedelta(days=-3), timedelta(0)])
async def test_start_run_at_a_given_time(client, tenant, offset):
    cid = await create_connection(client, tenant)
    started = datetime.now(UTC) + offset
    r = await post_run(client, tenant, cid, {"started_at": iso(started)})
    assert r.status_code == 201, r.text
    assert assert_utc_timestamp(r.json()["started_at"]) == started
    assert (await Run.get(id=r.json()["run_id"])).started_at == started


async def test_start_run_accepts_an_offset_and_answers_in_utc(client, tenant):
    cid = await create_connection(client, tenant)
    r = await post_run(client, tenant, cid, {"started_at": "2026-01-10T12:30:00+02:00"})
    assert r.status_code == 201, r.text
    assert r.json()["started_at"] == "2026-01-10T10:30:00Z"


@pytest.mark.parametrize("body, field", [
    ({"started_at": timedelta(minutes=30)}, "started_at"),  # in the future, beyond clock skew
    ({"started_at": timedelta(days=400)}, "started_at"),
    ({"started_at": "soon"}, "started_at"),
    ({"started_at": 1700000000}, "started_at"),
    ({"started_at": "2026-02-30T00:00:00Z"}, "started_at"),
    ({"started_at": "0001-01-01T00:00:00+01:00"}, "started_at"),
    ({"run_id": 5}, "run_id"),
], ids=param_id)
async def test_start_run_refuses_bad_input(client, tenant, body, field):
    cid = await create_connection(client, tenant)
    if isinstance(body.get("started_at"), timedelta):
        body = {"started_at": iso(datetime.now(UTC) + body["started_at"])}
    assert_field_error(await post_run(client, tenant, cid, body), field)
    assert await Run.all().count() == 0


@pytest.mark.parametrize("scopes, status", [
    ("read", 403), ("write", 403), ("report", 201), ("admin", 201),
])
async def test_start_run_needs_the_report_scope(client, tenant, scopes, status):
    cid = await create_connection(client, tenant)
    r = await post_run(client, tenant, cid, scopes=scopes)
    if status == 403:
        assert_detail(r, 403)
        assert await Run.all().count() == 0
    else:
        assert r.status_code == 201, r.text


async def test_start_run_on_an_unknown_or_foreign_connection(client, tenant, other_tenant):
    cid = await create_connection(client, tenant)
    foreign = await create_connection(client, other_tenant)
    for ident in (cid + 1000, foreign, "abc"):
        assert_not_found(await post_run(client, tenant, ident))
    assert_not_found(await client.post(f"{tenant.prefix}/{cid}/metrics/",
                                       headers=other_tenant.headers("report")))
    assert await Run.all().count() == 0


# ----------------------------------------------------------------------------------------------
# methods


def method_cases() -> list[tuple[str, str]]:
    return [
        ("DELETE", "{p}/{c}/"), ("PUT", "{p}/{c}/"), ("POST", "{p}/{c}/"), ("PUT", "{p}/"),
        ("DELETE", "{p}/"), ("PATCH", "{p}"), ("GET", "{p}/{c}/metrics/"),
        ("GET", "{p}/{c}/metrics/{r}/"), ("PUT", "{p}/{c}/metrics/{r}"),
        ("DELETE", "{p}/{c}/metrics/{r}/"), ("POST", "{p}/{c}/telemetry/"),
    ]


async def _method_target(client, tenant, template: str) -> str:
    cid = await create_connection(client, tenant)
    run_id = (await post_run(client, tenant, cid)).json()["run_id"]
    return template.format(p=tenant.prefix, c=cid, r=run_id)


@pytest.mark.parametrize("method, template", method_cases())
async def test_wrong_method_is_405(client, tenant, method, template):
    url = await _method_target(client, tenant, template)
    r = await client.request(method, url, json={}, headers=tenant.headers())
    assert_detail(r, 405)
    assert method in r.json()["detail"]


@pytest.mark.parametrize("template, allowed", [
    ("{p}/", {"GET", "POST"}),
    ("{p}/{c}/", {"GET", "PATCH"}),
    ("{p}/{c}/metrics/{r}/", {"PATCH"}),
])
async def test_405_allow_header_lists_every_method_of_the_path(client, tenant, template, allowed):
    url = await _method_target(client, tenant, template)
    r = await client.request("DELETE", url, headers=tenant.headers())
    assert r.status_code == 405, r.text
    listed = {m.strip() for m in r.headers.get("allow", "").split(",")} - {"HEAD"}
    assert listed == allowed, r.headers.get("allow")
