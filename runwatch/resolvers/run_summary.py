"""A run as the ELT contract shows it, on its REST wire and in its webhooks: its status among
eltPulse's five, and its live telemetry summary (the typed row and byte counts, `rowsLoaded`
and `bytesLoaded`, merged with the rest of the summary document)."""

from __future__ import annotations

from typing import Any

from runwatch.models import Run, RunStatus


def eltpulse_status(status: RunStatus) -> str:
    """eltPulse's five statuses: a run the reaper timed out is `failed` on its wire, with
    `timedOut: true` and its `errorSummary` saying why. eltPulse's clients know no other
    status: its web app counted `timed_out` as still active (its run panel polled such a run
    forever and kept "Run now" disabled) and could not filter it, and its webhook receivers
    switch on `run.succeeded | run.failed | run.cancelled`."""
    status = RunStatus(status)
    return RunStatus.FAILED.value if status == RunStatus.TIMED_OUT else status.value


def summary_of(run: Run) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    if run.rows_total is not None:
        summary["rowsLoaded"] = run.rows_total
    if run.bytes is not None:
        summary["bytesLoaded"] = run.bytes
    summary.update(run.telemetry_summary or {})
    return summary
