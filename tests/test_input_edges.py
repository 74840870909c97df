"""Edge cases of input that once misbehaved: time zones, huge counts, credentials hiding in
settings, concurrent settings changes, token revocation."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from runwatch.models import Connection, Run
from runwatch.resolvers.errors import NotFound
from runwatch.resolvers.tokens import authenticate, create_token, revoke_token
from tests.helpers import create_connection, graphql, iso, report, start_run

START_RUN = """mutation($input: StartRunInput!) { startRun(input: $input) {
  __typename ... on StartRunSuccess { run { id startedAt } }
  ... on InvalidInputError { fieldErrors { field messages } } } }"""


@pytest.fixture
def tokyo() -> Iterator[None]:
    """The server process in a time zone far from UTC."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


async def test_graphql_times_without_offset_are_utc_not_server_local(client, tenant, tokyo):
    cid = await create_connection(client, tenant)
    naive = (datetime.now(UTC) - timedelta(minutes=10)).replace(tzinfo=None, microsecond=0)
    data = await graphql(client, tenant, START_RUN, input={
        "connectionId": str(cid), "startedAt": naive.isoformat()})
    run_id = int(data["data"]["startRun"]["run"]["id"])
    assert (await Run.get(id=run_id)).started_at == naive.replace(tzinfo=UTC)


async def test_graphql_times_outside_utc_range_are_invalid_input(client, tenant):
    cid = await create_connection(client, tenant)
    data = await graphql(client, tenant, START_RUN, input={
        "connectionId": str(cid), "startedAt": "0001-01-01T00:00:00+01:00"})
    result = data["data"]["startRun"]
    assert result["__typename"] == "InvalidInputError", data
    assert result["fieldErrors"][0]["field"] == "startedAt"


async def test_started_after_with_an_offset_is_the_same_instant(client, tenant):
    cid = await create_connection(client, tenant)
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    await start_run(client, tenant, cid, started)
    query = "query($after: DateTime!) { runs(startedAfter: $after) { nodes { id } } }"
    for offset in (0, 2, -5):
        moment = started.astimezone(timezone(timedelta(hours=offset)))
        data = await graphql(client, tenant, query, after=moment.isoformat())
        assert len(data["data"]["runs"]["nodes"]) == 1, (offset, data)


@pytest.mark.parametrize("field", ["events_delivered", "evaluations", "custom_events"])
async def test_counts_beyond_a_trillion_are_refused(client, tenant, field):
    cid = await create_connection(client, tenant)
    run_id = await start_run(client, tenant, cid, datetime.now(UTC) - timedelta(minutes=10))
    body = {"completed_at": iso(datetime.now(UTC)), "events_delivered": 10**12 + 1}
    body[field] = 10**12 + 1
    r = await report(client, tenant, cid, run_id, **body)
    assert r.status_code == 400 and field in r.json(), r.text


@pytest.mark.parametrize("given, key", [
    ({"db_password_2": "x"}, "db_password_2"),
    ({"passwordHash": "x"}, "passwordHash"),
    ({"pwd": "x"}, "pwd"),
    ({"dsn": "postgres://loader:hunter2@db.internal:5432/events"}, "dsn"),
    ({"hosts": [{"url": "https://u:p@example.test/"}]}, "hosts[0].url"),
])
async def test_credentials_in_settings_are_refused(client, tenant, given, key):
    r = await client.post(tenant.prefix + "/", json={"name": "w", "type": "snowflake", **given},
                          headers=tenant.headers("write"))
    assert r.status_code == 400 and key in r.json(), r.text
    assert await Connection.all().count() == 0


async def test_a_url_without_a_password_is_a_setting(client, tenant):
    cid = await create_connection(client, tenant, endpoint="https://user@example.test/path")
    assert (await Connection.get(id=cid)).settings == {"endpoint": "https://user@example.test/path"}


async def test_concurrent_settings_patches_all_land(client, tenant):
    cid = await create_connection(client, tenant)
    url = f"{tenant.prefix}/{cid}/"
    answers = await asyncio.gather(*(
        client.patch(url, json={f"key_{i}": i}, headers=tenant.headers("write"))
        for i in range(12)
    ))
    assert all(r.status_code == 200 for r in answers)
    assert (await Connection.get(id=cid)).settings == {f"key_{i}": i for i in range(12)}


async def test_renaming_a_connection_renames_its_delivery_pipeline(client, tenant):
    cid = await create_connection(client, tenant, name="old")
    r = await client.patch(f"{tenant.prefix}/{cid}/", json={"name": "new"},
                           headers=tenant.headers("write"))
    assert r.status_code == 200, r.text
    data = await graphql(client, tenant, 'query($id: ID!) { connection(id: $id) { pipelines '
                         '{ name } } }', id=str(cid))
    assert data["data"]["connection"]["pipelines"] == [{"name": "new delivery"}]


async def test_revoking_by_token_needs_the_whole_token(tenant):
    issued = await create_token(organisation_id=tenant.org_id, scopes="read")
    key_only = issued.token.rsplit("_", 1)[0] + "_not-the-secret"
    with pytest.raises(NotFound):
        await revoke_token(token=key_only)
    assert await authenticate(issued.token) is not None
    await revoke_token(token=issued.token)
    assert await authenticate(issued.token) is None
