"""A run's live telemetry summary as the ELT contract shows it: the typed row and byte
counts (`rowsLoaded`, `bytesLoaded`) merged with the rest of the summary document."""

from __future__ import annotations

from typing import Any

from runwatch.models import Run


def summary_of(run: Run) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    if run.rows_total is not None:
        summary["rowsLoaded"] = run.rows_total
    if run.bytes is not None:
        summary["bytesLoaded"] = run.bytes
    summary.update(run.telemetry_summary or {})
    return summary
