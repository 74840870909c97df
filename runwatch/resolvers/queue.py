"""Claiming due rows: the one mechanism behind every kind of background work (webhook
deliveries, tasks). One UPDATE takes up to N due rows, stamps them with this worker's claim
and moves their due time past `hold`: on PostgreSQL the inner SELECT locks them with
`FOR UPDATE SKIP LOCKED`, so concurrent workers take different rows instead of waiting; on
SQLite the statement is atomic on its own. A worker that dies mid-work only delays its rows
until the hold runs out; a worker's result counts only while its claim stands, and a worker
that cannot do the work now gives it back (`release`) rather than sit on it."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from runwatch.resolvers import dbfaults as faults
from runwatch.resolvers import sql

_CLAIM = """
UPDATE {table} SET claim = ?, {due} = ?
WHERE id IN (
  SELECT id FROM {table}
  WHERE status = ? AND {due} <= ?
  ORDER BY {due}, id
  LIMIT ?{lock}
)
RETURNING {columns}
"""


async def claim_due(
    table: str, *, due_column: str, columns: str, limit: int, hold: timedelta, now: datetime,
    status: str = "pending",
) -> tuple[str, list[dict[str, Any]]]:
    """Claim up to `limit` rows of `table` that are `status` and due; returns the claim token
    and the claimed rows (`columns` of them)."""
    token = secrets.token_hex(16)
    lock = " FOR UPDATE SKIP LOCKED" if sql.is_postgres(sql.client()) else ""
    statement = _CLAIM.format(table=table, due=due_column, columns=columns, lock=lock)
    held_until = now + hold
    try:
        async with in_transaction() as tx:
            rows = await sql.fetch(statement, [token, held_until, status, now, limit], tx)
    except Exception as exc:
        if not faults.database_unavailable(exc):
            raise
        # The answer was lost, perhaps after the commit: what this claim took (if anything) is
        # this worker's, not left held by nobody. The due time the claim set finds it by index.
        rows = await faults.retrying(lambda: sql.fetch(
            f"SELECT {columns} FROM {table} WHERE status = ? AND {due_column} = ? AND claim = ?",
            [status, held_until, token]))
    return token, rows


async def release(table: str, row_id: int, claim: str, *, due_column: str,
                  due: datetime) -> bool:
    """Give a claimed row back, due at `due`, if the claim still stands (nothing counted as an
    attempt); False when it no longer did."""
    statement = f"UPDATE {table} SET claim = NULL, {due_column} = ? WHERE id = ? AND claim = ?"
    return bool(await sql.execute(statement, [due, row_id, claim]))
