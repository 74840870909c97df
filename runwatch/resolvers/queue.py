"""Claiming due rows: the one mechanism behind every kind of background work (webhook
deliveries, tasks). One UPDATE takes up to N due rows, stamps them with this worker's claim
and moves their due time past `hold`: on PostgreSQL the inner SELECT locks them with
`FOR UPDATE SKIP LOCKED`, so concurrent workers take different rows instead of waiting; on
SQLite the statement is atomic on its own. A worker that dies mid-work only delays its rows
until the hold runs out; a worker's result counts only while its claim stands."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

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
    async with in_transaction() as tx:
        rows = await sql.fetch(statement, [token, now + hold, status, now, limit], tx)
    return token, rows
