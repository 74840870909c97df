"""The PostgreSQL pool gives connections back without asyncpg's reset query (one round trip
less for every statement outside a transaction), and that is safe: asyncpg still rolls back
a transaction left open, and runwatch leaves no other session state on a pooled connection."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tortoise import connections

from tests.conftest import DIALECT

ROOT = Path(__file__).resolve().parent.parent / "runwatch"

postgres_only = pytest.mark.skipif(DIALECT != "postgres", reason="asyncpg's pool")


def _pool():  # type: ignore[no-untyped-def]
    pool = connections.get("default")._pool
    assert pool is not None
    return pool


@postgres_only
async def test_a_connection_goes_back_to_the_pool_without_a_reset_round_trip(tenant):
    pool = _pool()
    sent: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
        assert await conn.fetchval("SELECT 1") == 1
    assert sent == ["SELECT 1"]  # nothing on release: not asyncpg's "... RESET ALL"

    # the ORM's own statements still run (and the pool still hands connections out)
    _, rows = await connections.get("default").execute_query(
        "SELECT count(*) AS n FROM organisation WHERE id = $1", [tenant.org_id])
    assert rows[0]["n"] == 1


@postgres_only
async def test_a_transaction_left_open_is_still_rolled_back_on_release(app):
    pool = _pool()
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMPORARY TABLE pool_probe (x int) ON COMMIT DROP")
        assert conn.is_in_transaction()
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    # every idle connection: none is left inside that transaction
    for _ in range(pool.get_size()):
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            if await conn.fetchval("SELECT pg_backend_pid()") == pid:
                assert await conn.fetchval("SELECT to_regclass('pool_probe')") is None


# Statements that would leave state on a session beyond its transaction. A `SET` that opens a
# statement (not `UPDATE … SET`), session advisory locks, LISTEN, cursors declared WITH HOLD.
# runwatch writes SQL keywords in capitals.
SESSION_STATE = re.compile(
    r"""["']\s*(SET\s+(?!LOCAL\b)(SESSION\s+)?[a-z_.]+\s*(=|TO\b)|LISTEN\b|DECLARE\b)"""
    r"""|pg_advisory_lock|WITH HOLD""")
# (The live listener LISTENs with asyncpg's add_listener on a connection of its own.)


def test_runwatch_leaves_no_session_state_on_pooled_connections():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("models/migrations/"):
            continue  # run once, on a connection of their own
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SESSION_STATE.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "session state on pooled connections (see runwatch.db._keep_session):\n" \
        + "\n".join(found)
