"""Test fixtures: the real app on a real database, SQLite or PostgreSQL.

`RUNWATCH_TEST_DB=sqlite` (default) or `postgres` picks the database for the whole run;
`make test` runs the suite once on each. PostgreSQL comes from `RUNWATCH_TEST_POSTGRES_URL`
(default postgres://postgres@127.0.0.1:5432/postgres); each run creates and drops its own
database. When PostgreSQL is not reachable the run stops with an error saying so: it never
passes silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from tortoise import Tortoise, connections

from runwatch.app import create_app
from runwatch.db import apply_migrations
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.connections import create_connection
from runwatch.resolvers.organisations import create_organisation
from runwatch.resolvers.tokens import create_token
from runwatch.settings import Settings, normalise_database_url
from runwatch.ws_protocol import UVICORN_WS

DIALECT = os.environ.get("RUNWATCH_TEST_DB", "sqlite").lower()
ADMIN_PG_URL = os.environ.get(
    "RUNWATCH_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)


def pytest_report_header(config: pytest.Config) -> str:
    where = ADMIN_PG_URL.rsplit("/", 1)[0] if DIALECT == "postgres" else "a temporary file"
    return f"runwatch database: {DIALECT} ({where})"


async def _create_pg_database() -> tuple[str, str]:
    name = f"runwatch_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = await asyncpg.connect(ADMIN_PG_URL.replace("asyncpg://", "postgres://"), timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at {ADMIN_PG_URL} ({exc}). Start it, set "
            "RUNWATCH_TEST_POSTGRES_URL, or run with RUNWATCH_TEST_DB=sqlite.",
            returncode=3,
        )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = ADMIN_PG_URL.rsplit("/", 1)[0]
    return name, normalise_database_url(f"{base}/{name}")


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_PG_URL.replace("asyncpg://", "postgres://"), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    if DIALECT == "postgres":
        name, url = await _create_pg_database()
        await apply_migrations(url)
        yield url
        await _drop_pg_database(name)
    elif DIALECT == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = normalise_database_url(f"sqlite://{tmp}/runwatch-test.db")
            await apply_migrations(url)
            yield url
    else:
        pytest.exit(f"RUNWATCH_TEST_DB must be sqlite or postgres, not {DIALECT!r}", returncode=4)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return replace(
        Settings(),
        database_url=database_url,
        token_cache_seconds=0,
        workers_in_serve=False,
        # Tests run their webhook receivers on loopback.
        webhook_allow_private=True,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    application = create_app(settings)
    async with LifespanManager(application) as manager:
        yield manager.app


@contextlib.asynccontextmanager
async def app_client(settings: Settings, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app built with other settings (no lifespan: the ORM is already up)."""
    transport = httpx.ASGITransport(app=create_app(replace(settings, **changes)))
    async with httpx.AsyncClient(transport=transport, base_url="http://runwatch.test") as c:
        yield c


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://runwatch.test") as c:
        yield c


@pytest.fixture(autouse=True)
async def clean_database(app) -> AsyncIterator[None]:
    yield
    conn = connections.get("default")
    tables = [model._meta.db_table for model in Tortoise.apps["models"].values()]
    if conn.capabilities.dialect == "postgres":
        await conn.execute_script(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    else:  # children first: SQLite checks foreign keys row by row
        await conn.execute_script(
            "PRAGMA foreign_keys = OFF;" + "".join(f"DELETE FROM {t};" for t in tables)
            + "DELETE FROM sqlite_sequence; PRAGMA foreign_keys = ON;"
        )


@dataclass
class Tenant:
    """An organisation with one token per scope set, ready to call the API."""

    org_id: int
    tokens: dict[str, str]

    def headers(self, scopes: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scopes]}"}

    @property
    def prefix(self) -> str:
        return f"/api/v1/organisations/{self.org_id}/integrations/warehouse-connections"


SCOPE_SETS = ("admin", "read", "report", "write", "read,write,report")


async def make_tenant(name: str) -> Tenant:
    org = await create_organisation(name=name)
    tokens = {}
    for scopes in SCOPE_SETS:
        tokens[scopes] = (await create_token(organisation_id=org.id, scopes=scopes)).token
    return Tenant(org_id=org.id, tokens=tokens)


@pytest.fixture
async def tenant(app) -> Tenant:
    return await make_tenant("org-a")


@pytest.fixture
async def other_tenant(app) -> Tenant:
    return await make_tenant("org-b")


@pytest.fixture
def caller(tenant: Tenant) -> Caller:
    """An admin caller of `tenant`, for tests that call the resolvers directly."""
    return Caller(organisation_id=tenant.org_id, scopes=frozenset({Scope.ADMIN}))


@pytest.fixture
async def cid(caller: Caller) -> int:
    """A warehouse connection of `tenant` (with its delivery pipeline)."""
    connection = await create_connection(
        caller=caller, name="warehouse", warehouse_type="snowflake"
    )
    return connection.id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def uvicorn_on_loopback(app: Any, **options: Any) -> AsyncIterator[uvicorn.Server]:
    """`app` served by a real uvicorn on a free loopback port (no lifespan; runwatch's
    WebSocket protocol), stopped on the way out."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(),
                                           lifespan="off", log_level="warning",
                                           ws=UVICORN_WS, **options))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def live_url(app) -> AsyncIterator[str]:
    """The test app served by a real uvicorn on loopback (its lifespan already runs)."""
    async with uvicorn_on_loopback(app) as server:
        yield f"ws://127.0.0.1:{server.config.port}/graphql"
