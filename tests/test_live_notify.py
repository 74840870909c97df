"""Live updates through the database itself (`runwatch.services.notify`): a change reported to
one server reaches the subscribers of another, a dropped listening connection loses no
update, nothing is read while nothing changes, and the subscribers of one run share one read
per change (PostgreSQL NOTIFY; in memory on SQLite)."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from runwatch.auth import Authenticator
from runwatch.models import Run, RunStatus
from runwatch.services import notify
from runwatch.ws_protocol import UVICORN_WS
from tests.conftest import ADMIN_PG_URL, DIALECT, _free_port
from tests.test_elt_graphql import make_pipeline, make_run, next_update, subscription

ROOT = Path(__file__).resolve().parent.parent
postgres_only = pytest.mark.skipif(DIALECT != "postgres", reason="PostgreSQL NOTIFY")


def pg_dsn(url: str) -> str:
    return url.replace("asyncpg://", "postgresql://").split("?")[0]


def auth(tenant) -> dict:
    return {"Authorization": f"Bearer {tenant.tokens['read']}"}


async def append(client, tenant, rid: str, message: str) -> None:
    r = await client.patch(f"/api/elt/runs/{rid}", json={"appendLog": {"message": message}},
                           headers=tenant.headers("write"))
    assert r.status_code == 200, r.text


async def settled(feed) -> int:
    """The feed's read count once the notifications of the run's own creation (published
    20 ms after their commits, maybe after the subscription began) have stopped arriving."""
    reads = feed.reads
    while True:
        await asyncio.sleep(0.3)
        if feed.reads == reads:
            return reads
        reads = feed.reads


async def test_subscribers_of_one_run_share_one_read_per_change(client, tenant, live_url):
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    async with (subscription(live_url, auth(tenant), rid) as a,
                subscription(live_url, auth(tenant), rid) as b,
                subscription(live_url, auth(tenant), rid) as c):
        for ws in (a, b, c):
            await next_update(ws)
        feed = notify.HUB.feeds[int(rid)]
        assert len(feed.subscribers) == 3
        before = await settled(feed)
        await append(client, tenant, rid, "one")
        for ws in (a, b, c):
            update = await asyncio.wait_for(next_update(ws), 3)
            assert update["newLogLines"] == [{"seq": 1, "message": "one"}]
        assert feed.reads - before == 1
    await asyncio.sleep(0.1)
    assert int(rid) not in notify.HUB.feeds  # the last subscriber gone, the feed too


async def test_sqlite_path_is_in_process(client, tenant, live_url):
    """On SQLite the hub publishes in memory (no listening connection); on PostgreSQL it
    listens on its own connection, not one of the ORM's."""
    assert notify.HUB.running
    if DIALECT == "postgres":
        assert notify.HUB.conn is not None and notify.HUB.listener_pid
    else:
        assert notify.HUB.dsn is None and notify.HUB.conn is None
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    async with subscription(live_url, auth(tenant), rid) as ws:
        await next_update(ws)
        started = time.monotonic()
        await append(client, tenant, rid, "now")
        update = await asyncio.wait_for(next_update(ws), 3)
        assert update["newLogLines"] == [{"seq": 1, "message": "now"}]
        assert time.monotonic() - started < 0.5  # not the poll's second


@postgres_only  # on SQLite the once-a-second re-read of watched runs would count
async def test_another_organisations_notification_is_ignored(client, tenant, live_url):
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    async with subscription(live_url, auth(tenant), rid) as ws:
        await next_update(ws)
        feed = notify.HUB.feeds[int(rid)]
        before = await settled(feed)
        notify.HUB._on_notification(None, 0, notify.CHANNEL,
                                    f"{tenant.org_id + 1000}:{rid},junk,{tenant.org_id}:x")
        await asyncio.sleep(0.2)
        assert feed.reads == before


@pytest.fixture
async def server_a(settings, app, tmp_path):
    """A second runwatch server (its own process) on the same PostgreSQL database."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": settings.database_url,
           "RUNWATCH_WORKERS_IN_SERVE": "0", "RUNWATCH_TOKEN_CACHE_SECONDS": "0"}
    log = open(tmp_path / "server-a.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "runwatch.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--ws", UVICORN_WS],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            for _ in range(150):
                try:
                    if (await c.get("/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, (tmp_path / "server-a.log").read_text()
                await asyncio.sleep(0.1)
            else:
                pytest.fail("server A did not start")
            yield c
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@postgres_only
async def test_a_change_on_server_a_reaches_a_subscriber_on_server_b(
        client, tenant, live_url, server_a):
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    async with subscription(live_url, auth(tenant), rid) as ws:  # server B: this process
        await next_update(ws)
        started = time.monotonic()
        await append(server_a, tenant, rid, "from A")
        update = await asyncio.wait_for(next_update(ws), 3)
        assert update["newLogLines"] == [{"seq": 1, "message": "from A"}]
        assert time.monotonic() - started < 1.0
        r = await server_a.patch(f"/api/elt/runs/{rid}", json={"status": "succeeded"},
                                 headers=tenant.headers("write"))
        assert r.status_code == 200, r.text
        last = await asyncio.wait_for(next_update(ws), 3)
        assert last["run"]["status"] == "SUCCEEDED"


@postgres_only
async def test_a_dropped_listening_connection_loses_no_update(
        client, tenant, live_url, settings, monkeypatch):
    hub = notify.HUB
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    # The reconnect waits until the run has changed, so the change surely falls in the gap.
    gate = asyncio.Event()
    connect = hub._connect

    async def gated_connect() -> None:
        await gate.wait()
        await connect()

    monkeypatch.setattr(hub, "_connect", gated_connect)
    reconnects = hub.reconnects
    async with subscription(live_url, auth(tenant), rid) as ws:
        await next_update(ws)
        admin = await asyncpg.connect(pg_dsn(settings.database_url))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", hub.listener_pid)
        finally:
            await admin.close()
        for _ in range(100):
            if hub.lost.is_set():
                break
            await asyncio.sleep(0.02)
        assert hub.lost.is_set()
        # meanwhile: a change whose notification nobody sends (as if it was lost), and one
        # through the domain (its notification waits for the connection)
        await Run.filter(id=int(rid)).update(error="changed meanwhile")
        await append(client, tenant, rid, "during the outage")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(next_update(ws), 0.3)
        gate.set()
        update = await asyncio.wait_for(next_update(ws), 5)
        assert update["newLogLines"] == [{"seq": 1, "message": "during the outage"}]
        assert hub.reconnects == reconnects + 1 and hub.conn is not None
        # and the new connection listens
        await append(client, tenant, rid, "after")
        update = await asyncio.wait_for(next_update(ws), 3)
        assert update["newLogLines"] == [{"seq": 2, "message": "after"}]


async def _commits(dbname: str) -> int:
    # asked from the admin database, so that asking does not count
    conn = await asyncpg.connect(ADMIN_PG_URL.replace("asyncpg://", "postgres://"))
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
            dbname)
    finally:
        await conn.close()


@postgres_only
async def test_no_queries_while_nothing_changes(client, tenant, live_url, settings,
                                                monkeypatch):
    dbname = pg_dsn(settings.database_url).rsplit("/", 1)[1]
    # The sockets re-check their token every second through the token cache, which the tests
    # turn off: here it keeps its default, as in production (one look-up per token per 10 s).
    # The app's authenticator was built at start-up, which the serving app keeps out of the
    # collector (`runwatch.malloc.startup_frozen`), where `gc.get_objects` does not look.
    gc.unfreeze()
    try:
        found = [o for o in gc.get_objects() if type(o) is Authenticator]
    finally:
        gc.freeze()
    assert found
    for authenticator in found:
        monkeypatch.setattr(authenticator, "ttl", 10)
    pid = await make_pipeline(client, tenant)
    runs = [await make_run(client, tenant, pid) for _ in range(3)]
    sockets = [subscription(live_url, auth(tenant), runs[i % 3]) for i in range(12)]
    opened = [await s.__aenter__() for s in sockets]
    try:
        for ws in opened:
            await next_update(ws)
        # PostgreSQL 15 flushes an idle backend's statistics up to 10 s late
        await asyncio.sleep(11)
        before = await _commits(dbname)
        await asyncio.sleep(3)
        idle = await _commits(dbname) - before
        # the listening connection's check (every 5 s) at most; 12 polling subscribers
        # were 36 reads in 3 s
        assert idle <= 2, idle
        await append(client, tenant, runs[0], "one change")
        for ws in opened[0::3]:
            assert (await asyncio.wait_for(next_update(ws), 3))["newLogLines"]
        run = await Run.get(id=int(runs[0]))
        assert run.status == RunStatus.RUNNING
    finally:
        for s in sockets:
            await s.__aexit__(None, None, None)


async def test_sockets_of_one_token_share_one_token_look_up(tenant, monkeypatch):
    """When a token's cache entry runs out, all its sockets re-check in the same second: one
    look-up serves them all (else 500 sockets were 500 queries every 10 s)."""
    from runwatch import auth

    calls = 0
    real = auth.identify

    async def counted(token: str):
        nonlocal calls
        calls += 1
        return await real(token)

    monkeypatch.setattr(auth, "identify", counted)
    authenticator = Authenticator(10)
    callers = await asyncio.gather(*(authenticator(tenant.tokens["read"]) for _ in range(50)))
    assert calls == 1 and len({c.organisation_id for c in callers}) == 1
    assert await authenticator("rw_nope_nope") is None


async def test_subscribers_in_step_share_one_execution_per_change(client, tenant, live_url,
                                                                   monkeypatch):
    """Subscribers of one run that were at the same point get one execution of their
    document per change between them (`SharedExecutor`); one who may see more (other scopes)
    gets its own, and every one gets the whole update."""
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

    from runwatch.schema.live import RunUpdate

    executed: list[object] = []
    original = StrawberryGraphQLCoreExecutionContext.execute_operation

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(self.root_value, RunUpdate):
            executed.append(self.root_value)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_operation", counted)
    rid = await make_run(client, tenant, await make_pipeline(client, tenant))
    admin = {"Authorization": f"Bearer {tenant.tokens['admin']}"}
    async with (subscription(live_url, auth(tenant), rid) as a,
                subscription(live_url, auth(tenant), rid) as b,
                subscription(live_url, auth(tenant), rid) as c,
                subscription(live_url, admin, rid) as d):
        for ws in (a, b, c, d):
            await next_update(ws)
        await settled(notify.HUB.feeds[int(rid)])
        executed.clear()
        await append(client, tenant, rid, "one")
        updates = [await asyncio.wait_for(next_update(ws), 3) for ws in (a, b, c, d)]
        for update in updates:
            assert update["newLogLines"] == [{"seq": 1, "message": "one"}]
            assert update == updates[0]
        assert len(executed) == 2, executed  # the read token's three, the admin's one
        assert executed[0] is executed[1]  # one update object for all four
        # and the next change again
        executed.clear()
        await append(client, tenant, rid, "two")
        for ws in (a, b, c, d):
            update = await asyncio.wait_for(next_update(ws), 3)
            assert update["newLogLines"] == [{"seq": 2, "message": "two"}]
        assert len(executed) == 2
