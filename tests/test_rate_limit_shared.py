"""Rate limits across replicas (issue 14): two app instances, each with its own limiter object,
share one budget per token when the counts live in PostgreSQL or Redis; HTTP and WebSocket
operations spend the same budget; an unreachable Redis admits (fail open); SQLite keeps the
per-process limiter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import uvicorn
from tortoise import connections
from websockets.asyncio.client import connect

from runwatch.app import create_app
from runwatch.resolvers.rate_limits import (
    PostgresRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    sliding_wait,
)
from runwatch.settings import Settings, SettingsError
from runwatch.ws_protocol import UVICORN_WS
from tests.conftest import DIALECT

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 5
QUERY = {"query": "{ __typename }"}


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: nothing listens there


def backends() -> list:
    return [
        pytest.param("postgres", marks=pytest.mark.skipif(
            DIALECT != "postgres", reason="the postgres store needs a PostgreSQL database")),
        pytest.param("redis", marks=pytest.mark.skipif(
            not _redis_up(), reason="no Redis at 127.0.0.1:6379")),
    ]


@pytest.fixture
async def fresh_windows(app) -> AsyncIterator[None]:
    """Token ids restart with each test's clean database: so do the PostgreSQL counters."""
    await connections.get("default").execute_script("DELETE FROM rate_limit_window")
    yield


def shared(settings: Settings, backend: str) -> Settings:
    return replace(settings, rate_limit_per_minute=LIMIT, rate_limit_backend=backend,
                   redis_url=REDIS_URL, rate_limit_key_prefix=f"test:{uuid.uuid4().hex}:")


@contextlib.asynccontextmanager
async def replica(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """One more app instance (its own limiter), in-process, the ORM already up."""
    application = create_app(settings)
    transport = httpx.ASGITransport(app=application)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://runwatch.test") as c:
            c.app = application  # type: ignore[attr-defined]
            yield c
    finally:
        limiter = application.state.limiter
        if hasattr(limiter, "close"):
            await limiter.close()


@contextlib.asynccontextmanager
async def served(client: httpx.AsyncClient) -> AsyncIterator[str]:
    """The replica's app behind a real uvicorn on loopback: its WebSocket URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(client.app, host="127.0.0.1", port=port,  # type: ignore[attr-defined]
                                           lifespan="off", log_level="warning",
                                           ws=UVICORN_WS))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started
    try:
        yield f"ws://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("backend", backends())
async def test_one_budget_across_two_replicas(settings, tenant, backend, fresh_windows):
    config = shared(settings, backend)
    async with replica(config) as a, replica(config) as b:
        assert a.app.state.limiter is not b.app.state.limiter  # type: ignore[attr-defined]
        statuses = []
        for i in range(2 * LIMIT):
            r = await (a if i % 2 else b).post("/graphql", json=QUERY,
                                                 headers=tenant.headers("read"))
            statuses.append(r.status_code)
        assert statuses == [200] * LIMIT + [429] * LIMIT
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        # Another token has its own budget; REST answers in its contract's shape.
        r = await a.get("/api/elt/runs", headers=tenant.headers("admin"))
        assert r.status_code == 200
        for _ in range(LIMIT):
            r = await b.get("/api/elt/runs", headers=tenant.headers("admin"))
        assert r.status_code == 429 and "error" in r.json()


@pytest.mark.parametrize("backend", backends())
async def test_websocket_and_http_share_the_budget(settings, tenant, backend, fresh_windows):
    config = shared(settings, backend)
    auth = tenant.headers("read")
    async with replica(config) as a, replica(config) as b, served(b) as url:
        for _ in range(LIMIT - 2):  # HTTP on one replica…
            assert (await a.post("/graphql", json=QUERY, headers=auth)).status_code == 200
        # …the handshake (one) and one operation on the other's socket spend the rest.
        async with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=5,
                           additional_headers=auth) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
            answers = []
            for n in ("1", "2"):
                await ws.send(json.dumps({"id": n, "type": "subscribe", "payload": QUERY}))
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
                if answers[-1]["type"] == "next":
                    await asyncio.wait_for(ws.recv(), 5)  # complete
        assert answers[0]["type"] == "next", answers
        assert answers[1]["type"] == "error", answers
        assert answers[1]["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
        r = await a.post("/graphql", json=QUERY, headers=auth)
        assert r.status_code == 429


async def test_an_unreachable_redis_admits_and_warns_once(settings, tenant, caplog):
    down = f"redis://127.0.0.1:{_closed_port()}/0"
    limiter = RedisRateLimiter(1, url=down)
    try:
        with caplog.at_level(logging.WARNING, logger="runwatch.rate_limits"):
            assert [await limiter.check(("token", 1)) for _ in range(3)] == [0.0] * 3
        assert limiter.failures == 3
        warnings = [r for r in caplog.records if r.name == "runwatch.rate_limits"]
        assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    finally:
        await limiter.close()
    # Through an app: requests are served, not refused nor failed.
    async with replica(replace(settings, rate_limit_per_minute=1, rate_limit_backend="redis",
                               redis_url=down)) as c:
        for _ in range(3):
            assert (await c.post("/graphql", json=QUERY,
                                 headers=tenant.headers("read"))).status_code == 200
        assert c.app.state.limiter.failures == 3  # type: ignore[attr-defined]


async def test_sqlite_keeps_the_per_process_limiter(settings, tenant):
    env = {"DATABASE_URL": "sqlite:///tmp/x.db"}
    assert Settings.from_env(env).rate_limit_backend == "memory"
    assert Settings.from_env({**env, "RUNWATCH_REDIS_URL": REDIS_URL}).rate_limit_backend \
        == "redis"
    pg = {"DATABASE_URL": "postgres://u@127.0.0.1:5432/db"}
    assert Settings.from_env(pg).rate_limit_backend == "postgres"
    assert Settings.from_env({**pg, "RUNWATCH_RATE_LIMIT_BACKEND": "memory"}) \
        .rate_limit_backend == "memory"
    for bad, word in [({**env, "RUNWATCH_RATE_LIMIT_BACKEND": "postgres"}, "PostgreSQL"),
                      ({**env, "RUNWATCH_RATE_LIMIT_BACKEND": "redis"}, "RUNWATCH_REDIS_URL"),
                      ({**env, "RUNWATCH_RATE_LIMIT_BACKEND": "disk"}, "memory, postgres"),
                      ({**env, "RUNWATCH_REDIS_URL": "127.0.0.1:6379"}, "redis://")]:
        with pytest.raises(SettingsError, match=word):
            Settings.from_env(bad)
    # Each process counts for itself: two replicas admit the limit each.
    config = replace(settings, rate_limit_per_minute=2, rate_limit_backend="memory")
    async with replica(config) as a, replica(config) as b:
        assert isinstance(a.app.state.limiter, RateLimiter)  # type: ignore[attr-defined]
        codes = [(await c.post("/graphql", json=QUERY, headers=tenant.headers("read")))
                 .status_code for c in (a, b, a, b, a, b)]
        assert codes == [200, 200, 200, 200, 429, 429]


@pytest.mark.parametrize("backend", backends())
async def test_the_window_slides(backend, fresh_windows):
    """Past a full window, the previous window's count still weighs on the next one in
    proportion to its overlap: no burst of twice the limit at a boundary."""
    now = [1000 * 60.0 + 59.0]  # one second before a boundary
    kwargs = {"window": 60.0, "prefix": f"test:{uuid.uuid4().hex}:", "clock": lambda: now[0]}
    limiter = (PostgresRateLimiter(10, **kwargs) if backend == "postgres"
               else RedisRateLimiter(10, url=REDIS_URL, **kwargs))
    try:
        assert [await limiter.check("k") for _ in range(10)] == [0.0] * 10
        assert await limiter.check("k") > 0
        now[0] += 2  # one second into the next window: 10 * 59/60 still counts
        wait = await limiter.check("k")
        assert 0 < wait <= 6.1
        now[0] += 30  # half way: 5 left from before, 5 admitted
        assert [await limiter.check("k") for _ in range(6)].count(0.0) == 5
        assert limiter.failures == 0
    finally:
        await limiter.close()


def _limiter(backend: str, limit: int, **kwargs):  # type: ignore[no-untyped-def]
    return (PostgresRateLimiter(limit, **kwargs) if backend == "postgres"
            else RedisRateLimiter(limit, url=REDIS_URL, **kwargs))


@pytest.mark.parametrize("backend", backends())
async def test_replicas_lease_places_and_never_pass_the_limit(backend, fresh_windows):
    """A limit of 1,000 a minute: each replica takes 10 places a round trip, and two
    replicas together admit at most the limit and lose at most 9 places each."""
    now = [1000 * 60.0 + 30.0]  # half way into a window, nothing in the previous one
    kwargs = {"window": 60.0, "prefix": f"test:{uuid.uuid4().hex}:", "clock": lambda: now[0]}
    replicas = [_limiter(backend, 1000, **kwargs), _limiter(backend, 1000, **kwargs)]
    trips = [0]
    for limiter in replicas:
        assert limiter.lease == 10
        counted = limiter._count

        async def count(*args, _counted=counted):  # type: ignore[no-untyped-def]
            trips[0] += 1
            return await _counted(*args)

        limiter._count = count  # type: ignore[method-assign]
    try:
        admitted = 0
        for i in range(1100):
            if await replicas[i % 2].check("k") == 0.0:
                admitted += 1
        assert 1000 - 2 * 9 <= admitted <= 1000
        assert trips[0] < 1100 / 5  # about one round trip per 10 admitted, then the refusals
        assert all(limiter.failures == 0 for limiter in replicas)
    finally:
        for limiter in replicas:
            await limiter.close()


@pytest.mark.parametrize("backend", backends())
async def test_near_the_limit_places_are_taken_one_at_a_time(backend, fresh_windows):
    """A limit of 205 and a lease of 2: after 102 leases one place is left, and it is taken
    alone (exact at the limit); the next request is refused with a Retry-After."""
    now = [1000 * 60.0 + 30.0]
    kwargs = {"window": 60.0, "prefix": f"test:{uuid.uuid4().hex}:", "clock": lambda: now[0]}
    limiter = _limiter(backend, 205, **kwargs)
    try:
        assert limiter.lease == 2
        assert [await limiter.check("k") for _ in range(205)] == [0.0] * 205
        assert await limiter.check("k") > 0
        now[0] += 60  # the next window: half the last one's 205 weighs, leases again
        assert [await limiter.check("k") for _ in range(100)] == [0.0] * 100
    finally:
        await limiter.close()


def test_retry_after_arithmetic():
    # Full previous window, none yet in this one, 1 s in: one place frees after 6 s more.
    assert sliding_wait(10, 0, 1.0, 60.0, 10) == pytest.approx(5.0)
    # This window full: wait to the next one and for its weight to fall far enough.
    assert sliding_wait(0, 10, 30.0, 60.0, 10) == pytest.approx(30.0 + 6.0)


@pytest.mark.skipif(DIALECT != "postgres", reason="PostgreSQL's table persistence")
async def test_postgres_counters_are_not_written_to_the_wal():
    """Every request updates a counter row: an unlogged table spares each one a WAL record
    and a flush at commit (migration 0010)."""
    _, rows = await connections.get("default").execute_query(
        "SELECT relpersistence::text AS relpersistence FROM pg_class "
        "WHERE relname = 'rate_limit_window'")
    assert rows[0]["relpersistence"] == "u"
