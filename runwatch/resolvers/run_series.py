"""A run's capped series: its log lines (newest 500) and telemetry samples (newest 2000).

Each series is a table of rows numbered per run (`seq`). The run row holds the last number
given out and the number before the current series began (a replacement starts a new one):
an append reserves its number in the UPDATE that locks the run, inserts one row and deletes
at most the one row that fell out of the cap. No count, no read of the series, no JSON
rewritten, whatever the series' length; concurrent appends queue on the run's row lock, so
none is lost. `seq - base - cap` rows were dropped, which the API shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from runwatch.models import RunLogLine, RunTelemetrySample
from runwatch.resolvers import sql
from runwatch.resolvers.run_input import LOG_CAP, SAMPLE_CAP, LogEntry, Sample

# Rows per INSERT statement (keeps every statement under both databases' parameter limits).
_CHUNK = 250


@dataclass(frozen=True)
class Series:
    table: str
    seq_column: str
    base_column: str
    cap: int
    columns: tuple[str, ...]  # value columns, in the order of the item's fields

    def dropped(self, seq: int, base: int) -> int:
        return max(0, seq - base - self.cap)

    def kept(self, seq: int, base: int) -> int:
        return min(seq - base, self.cap)


LOGS = Series(RunLogLine._meta.db_table, "log_seq", "log_base", LOG_CAP,
              ("at", "level", "message"))
SAMPLES = Series(RunTelemetrySample._meta.db_table, "sample_seq", "sample_base", SAMPLE_CAP,
                 ("at", "rows", "bytes", "rows_delta", "bytes_delta", "progress", "phase",
                  "resource"))


def item_values(item: LogEntry | Sample) -> tuple[Any, ...]:
    """An item's column values, in the order of its series' `columns`."""
    if isinstance(item, LogEntry):
        return (item.at, item.level.value, item.message)
    return (item.at, item.rows, item.bytes, item.rows_delta, item.bytes_delta, item.progress,
            item.phase, item.resource)


async def write(
    conn: BaseDBAsyncClient, series: Series, *, run_id: int, old_seq: int, old_base: int,
    replace: bool, items: Sequence[LogEntry | Sample],
) -> None:
    """Store `items` as numbers old_seq+1.. (the caller's UPDATE reserved them and holds the
    run's lock) and trim the series to its cap. `replace` empties the series first."""
    if replace:
        await sql.execute(f"DELETE FROM {series.table} WHERE run_id = ?", [run_id], conn)
    new_seq = old_seq + len(items)
    base = old_seq if replace else old_base
    first_kept = max(base, new_seq - series.cap)  # rows numbered after this one are kept
    numbered = [(old_seq + 1 + i, item) for i, item in enumerate(items)]
    numbered = [(seq, item) for seq, item in numbered if seq > first_kept]
    columns = ("run_id", "seq", *series.columns)
    row_marks = "(" + sql.placeholders(len(columns)) + ")"
    for start in range(0, len(numbered), _CHUNK):
        chunk = numbered[start:start + _CHUNK]
        params: list[Any] = []
        for seq, item in chunk:
            params.extend((run_id, seq, *item_values(item)))
        await sql.execute(
            f"INSERT INTO {series.table} ({', '.join(columns)}) VALUES "
            + ", ".join([row_marks] * len(chunk)),
            params, conn,
        )
    oldest_stored = max(old_base, old_seq - series.cap)  # rows after this one exist now
    if not replace and first_kept > oldest_stored:
        # The rows that fell out of the cap: at most len(items), through the unique index.
        await sql.execute(
            f"DELETE FROM {series.table} WHERE run_id = ? AND seq > ? AND seq <= ?",
            [run_id, oldest_stored, first_kept], conn,
        )


async def log_lines(run_ids: Sequence[int]) -> dict[int, list[RunLogLine]]:
    """Every kept log line of these runs, oldest first."""
    found: dict[int, list[RunLogLine]] = {run_id: [] for run_id in run_ids}
    if run_ids:
        for line in await RunLogLine.filter(run_id__in=list(run_ids)).order_by("run_id", "seq"):
            found[line.run_id].append(line)  # type: ignore[attr-defined]
    return found


async def telemetry_samples(run_ids: Sequence[int]) -> dict[int, list[RunTelemetrySample]]:
    """Every kept telemetry sample of these runs, oldest first."""
    found: dict[int, list[RunTelemetrySample]] = {run_id: [] for run_id in run_ids}
    if run_ids:
        for point in await RunTelemetrySample.filter(run_id__in=list(run_ids)).order_by(
            "run_id", "seq"
        ):
            found[point.run_id].append(point)  # type: ignore[attr-defined]
    return found
