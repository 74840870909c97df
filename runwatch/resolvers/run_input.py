"""Validation of what runners send about a run: status changes, log lines, live telemetry.

A change is a typed `RunChange`. The REST shim parses its wire body into one
(`parse_change`), GraphQL builds it from its typed input; either way `check_change` checks
its values, so both surfaces accept and refuse exactly the same things with the same
messages. Top-level
names are snake_case (`append_log`); inside the telemetry documents the keys are the
contract's own (`rowsLoaded`, `rowsDelta`), because those documents are returned as sent.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runwatch.models import LogLevel, RunStatus
from runwatch.resolvers import inputs
from runwatch.resolvers.clock import parse_iso
from runwatch.resolvers.errors import InvalidInput
from runwatch.resolvers.runs import MAX_COUNT, clean_error
from runwatch.resolvers.scrub import clean_text

LOG_CAP = 500
SAMPLE_CAP = 2000
MAX_MESSAGE_CHARS = 4000
# Byte counts outgrow MAX_COUNT; 2**53 keeps them exact in JavaScript clients.
MAX_BYTES = 2**53
# Label limits, eltPulse's (datapulse run-types.ts): a sample's phase and resource, the
# summary's currentPhase and currentResource. (The reference's sample phase is 128: ours is
# wider, and wider refuses nothing it accepts.)
MAX_PHASE_CHARS, MAX_RESOURCE_CHARS = 200, 512
MAX_CURRENT_PHASE_CHARS, MAX_CURRENT_RESOURCE_CHARS = 256, 512
SUMMARY_KEYS = ("rowsLoaded", "bytesLoaded", "progress", "currentPhase", "currentResource")
SAMPLE_KEYS = ("at", "rows", "bytes", "rowsDelta", "bytesDelta", "progress", "phase",
               "resource")
CHANGE_KEYS = ("status", "log_entries", "append_log", "error_summary", "finished_at",
               "telemetry_summary", "append_telemetry_sample", "telemetry_samples")
LEVEL_ALIASES = {"warning": LogLevel.WARN}
UNSET: Any = object()


@dataclass(frozen=True)
class LogEntry:
    at: datetime
    level: LogLevel
    message: str


@dataclass(frozen=True)
class Sample:
    at: datetime
    rows: int | None = None
    bytes: int | None = None
    rows_delta: int | None = None
    bytes_delta: int | None = None
    progress: float | None = None
    phase: str | None = None
    resource: str | None = None


@dataclass
class SummaryPatch:
    """A shallow merge into the live summary: `rows`/`bytes` are the typed columns
    (`rowsLoaded`/`bytesLoaded`), `document` the other keys; a key set to None is removed."""

    rows: Any = UNSET
    bytes: Any = UNSET
    document: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunChange:
    """One PATCH of a run, validated. UNSET/None fields are not part of the change."""

    status: RunStatus | None = None
    log_entries: list[LogEntry] | None = None  # replaces the log
    append_log: LogEntry | None = None
    error_summary: Any = UNSET  # str or None (clears)
    finished_at: datetime | None = None
    summary: SummaryPatch | None = None
    samples: list[Sample] | None = None  # replaces the samples
    append_sample: Sample | None = None
    checked: bool = False  # by `check_change` (which `parse_change` calls)
    # Lines the server adds to the change (`late_summary`), after the caller's.
    notes: list[LogEntry] = field(default_factory=list)

    @property
    def new_log_lines(self) -> list[LogEntry]:
        return [*(self.log_entries or []), *([self.append_log] if self.append_log else []),
                *self.notes]

    def late_summary(self, now: datetime) -> RunChange:
        """This change with its `errorSummary` as an error line instead: what a finished run
        that already has a summary takes of a different one (the first summary is kept,
        this one is not lost, and the rest of the change applies)."""
        note = LogEntry(at=now, level=LogLevel.ERROR, message=clean_text(
            f"errorSummary not applied (the run keeps its first one): {self.error_summary}",
            MAX_MESSAGE_CHARS))
        return dataclasses.replace(self, error_summary=UNSET, notes=[*self.notes, note])

    @property
    def new_samples(self) -> list[Sample]:
        return [*(self.samples or []), *([self.append_sample] if self.append_sample else [])]


class Errors:
    """Collects field errors, then raises them all at once."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.fields.setdefault(name, []).append(message)

    def raise_any(self) -> None:
        if self.fields:
            raise InvalidInput(self.fields)


def _object(value: Any, name: str, errors: Errors, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        errors.add(name, "Expected an object.")
        return {}
    for key in value:
        if key not in keys:
            errors.add(f"{name}.{key}", f"Unknown field (expected one of: {', '.join(keys)}).")
    return value


def _int(value: Any, name: str, errors: Errors, *, minimum: int, maximum: int) -> int | None:
    if value is None:
        return None
    # JSON numbers: eltPulse's clients (JavaScript) may send 12.0 or a computed 12.5 for a
    # count; a finite number is accepted and rounded down (floor), as a count cannot be half.
    if isinstance(value, float) and math.isfinite(value) and abs(value) <= 2**63:
        value = math.floor(value)
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(name, "A valid integer is required.")
        return None
    if not minimum <= value <= maximum:
        errors.add(name, f"Must be between {minimum} and {maximum}.")
        return None
    return value


def _progress(value: Any, name: str, errors: Errors) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors.add(name, "A number from 0 to 100 is required.")
        return None
    if not 0 <= value <= 100:
        errors.add(name, "Progress must be between 0 and 100.")
        return None
    return value


def _label(value: Any, name: str, errors: Errors, limit: int) -> str | None:
    """A short text (phase, resource): NUL refused, over-long refused, secrets scrubbed."""
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(name, "Not a valid string.")
        return None
    if inputs.has_nul(value):
        errors.add(name, "Null characters are not allowed.")
        return None
    if len(value) > limit:
        errors.add(name, f"Ensure this field has no more than {limit} characters.")
        return None
    return clean_text(value, limit)


def _time(value: Any, name: str, errors: Errors, default: datetime) -> datetime:
    if value is None:
        return default
    parsed = parse_iso(value) if not isinstance(value, datetime) else value
    if parsed is None:
        errors.add(name, "Expected an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z.")
        return default
    return parsed


# --- parsing: a JSON-shaped change (domain names) -> a RunChange, its values not checked yet --


def _entry(value: Any, name: str, errors: Errors, *, now: datetime,
           stamp: bool) -> LogEntry | None:
    """`{level, message}` (appendLog: the server stamps `at`) or `{at, level, message}`."""
    keys = ("level", "message") if stamp else ("at", "level", "message")
    raw = _object(value, name, errors, keys)
    if not isinstance(value, dict):
        return None
    level_raw = raw.get("level", "info")
    level = None
    if isinstance(level_raw, str):
        text = level_raw.strip().lower()
        level = LEVEL_ALIASES.get(text) or (LogLevel(text) if text in set(LogLevel) else None)
    if level is None:
        errors.add(f"{name}.level", "Expected one of: info, warn, error.")
    message = raw.get("message")
    if not isinstance(message, str):
        errors.add(f"{name}.message", "This field is required and must be a string.")
        return None
    at = now if stamp else _time(raw.get("at"), f"{name}.at", errors, now)
    if level is None:
        return None
    return LogEntry(at=at, level=level, message=message)


def _sample(value: Any, name: str, errors: Errors, *, now: datetime) -> Sample | None:
    raw = _object(value, name, errors, SAMPLE_KEYS)
    if not isinstance(value, dict):
        return None
    return Sample(at=_time(raw.get("at"), f"{name}.at", errors, now), rows=raw.get("rows"),
                  bytes=raw.get("bytes"), rows_delta=raw.get("rowsDelta"),
                  bytes_delta=raw.get("bytesDelta"), progress=raw.get("progress"),
                  phase=raw.get("phase"), resource=raw.get("resource"))


def _summary(value: Any, name: str, errors: Errors) -> SummaryPatch | None:
    if isinstance(value, dict) and "updatedAt" in value:
        # GET returns the server's `updatedAt` in the summary; clients send it back: ignored
        # (the server stamps its own)
        value = {k: v for k, v in value.items() if k != "updatedAt"}
    raw = _object(value, name, errors, SUMMARY_KEYS)
    if not isinstance(value, dict):
        return None
    return SummaryPatch(
        rows=raw.get("rowsLoaded", UNSET), bytes=raw.get("bytesLoaded", UNSET),
        document={k: raw[k] for k in ("progress", "currentPhase", "currentResource")
                  if k in raw})


def _series(value: Any, name: str, errors: Errors, item: Any) -> list[Any]:
    if not isinstance(value, list):
        errors.add(name, "Expected a list.")
        return []
    parsed = [item(entry, f"{name}[{i}]") for i, entry in enumerate(value)]
    return [p for p in parsed if p is not None]


def parse_change(raw: dict[str, Any], *, now: datetime) -> RunChange:
    """A run change given with domain names (the REST PATCH's body, keys renamed), parsed
    and checked (`check_change`); raises InvalidInput naming every offending field at once.
    Unknown keys are refused."""
    errors = Errors()
    for key in raw:
        if key not in CHANGE_KEYS:
            errors.add(key, "Unknown field.")
    change = RunChange()
    if raw.get("status") is not None:
        status = raw["status"]
        if isinstance(status, RunStatus):
            change.status = status
        elif isinstance(status, str) and status.strip().lower() in set(RunStatus):
            change.status = RunStatus(status.strip().lower())
        else:
            errors.add("status", "Expected one of: pending, running, succeeded, failed, "
                                 "cancelled.")
    if raw.get("log_entries") is not None:
        change.log_entries = _series(
            raw["log_entries"], "log_entries", errors,
            lambda v, n: _entry(v, n, errors, now=now, stamp=False))
    if raw.get("append_log") is not None:
        change.append_log = _entry(raw["append_log"], "append_log", errors, now=now,
                                   stamp=True)
    if "error_summary" in raw:
        if raw["error_summary"] is not None and not isinstance(raw["error_summary"], str):
            errors.add("error_summary", "Not a valid string.")
        else:
            change.error_summary = raw["error_summary"]
    if raw.get("finished_at") is not None:
        change.finished_at = _time(raw["finished_at"], "finished_at", errors, now)
    if raw.get("telemetry_summary") is not None:
        change.summary = _summary(raw["telemetry_summary"], "telemetry_summary", errors)
    if raw.get("append_telemetry_sample") is not None:
        change.append_sample = _sample(raw["append_telemetry_sample"],
                                       "append_telemetry_sample", errors, now=now)
    if raw.get("telemetry_samples") is not None:
        change.samples = _series(raw["telemetry_samples"], "telemetry_samples", errors,
                                 lambda v, n: _sample(v, n, errors, now=now))
    return check_change(change, errors)


# --- checking: the values of a RunChange, however it was made (REST, GraphQL, the client) ----


def _check_entry(entry: LogEntry, name: str, errors: Errors) -> LogEntry:
    """Messages are scrubbed of secrets and truncated visibly (not refused)."""
    if not isinstance(entry.message, str):
        errors.add(f"{name}.message", "This field is required and must be a string.")
        return entry
    return LogEntry(at=entry.at, level=entry.level,
                    message=clean_text(entry.message, MAX_MESSAGE_CHARS))


def _check_sample(point: Sample, name: str, errors: Errors) -> Sample:
    return Sample(
        at=point.at,
        rows=_int(point.rows, f"{name}.rows", errors, minimum=0, maximum=MAX_COUNT),
        bytes=_int(point.bytes, f"{name}.bytes", errors, minimum=0, maximum=MAX_BYTES),
        rows_delta=_int(point.rows_delta, f"{name}.rowsDelta", errors,
                        minimum=-MAX_COUNT, maximum=MAX_COUNT),
        bytes_delta=_int(point.bytes_delta, f"{name}.bytesDelta", errors,
                         minimum=-MAX_BYTES, maximum=MAX_BYTES),
        progress=_progress(point.progress, f"{name}.progress", errors),
        phase=_label(point.phase, f"{name}.phase", errors, MAX_PHASE_CHARS),
        resource=_label(point.resource, f"{name}.resource", errors, MAX_RESOURCE_CHARS),
    )


def _check_summary(patch: SummaryPatch, name: str, errors: Errors) -> SummaryPatch:
    checked = SummaryPatch()
    if patch.rows is not UNSET:
        checked.rows = _int(patch.rows, f"{name}.rowsLoaded", errors,
                            minimum=0, maximum=MAX_COUNT)
    if patch.bytes is not UNSET:
        checked.bytes = _int(patch.bytes, f"{name}.bytesLoaded", errors,
                             minimum=0, maximum=MAX_BYTES)
    for key, value in patch.document.items():
        if key == "progress":
            checked.document[key] = _progress(value, f"{name}.progress", errors)
        elif key in ("currentPhase", "currentResource"):
            limit = (MAX_CURRENT_PHASE_CHARS if key == "currentPhase"
                     else MAX_CURRENT_RESOURCE_CHARS)
            checked.document[key] = _label(value, f"{name}.{key}", errors, limit)
        else:
            errors.add(f"{name}.{key}",
                       f"Unknown field (expected one of: {', '.join(SUMMARY_KEYS)}).")
    return checked


def _check_series(items: list[Any] | None, name: str, errors: Errors, cap: int,
                  check: Any) -> list[Any] | None:
    if items is None:
        return None
    if len(items) > cap:
        errors.add(name, f"At most {cap} items (the newest are kept by appends; "
                         f"a replacement must fit).")
        return []
    return [check(item, f"{name}[{i}]", errors) for i, item in enumerate(items)]


def check_change(change: RunChange, errors: Errors | None = None) -> RunChange:
    """The values of a run change, checked and normalised: counts and progress in range,
    short texts bounded, messages and the error summary scrubbed of secrets and truncated,
    replacements within their caps. Raises InvalidInput naming every offending field (with
    `errors`: those too)."""
    errors = errors if errors is not None else Errors()
    checked = RunChange(status=change.status, finished_at=change.finished_at, checked=True,
                        notes=list(change.notes))
    checked.log_entries = _check_series(change.log_entries, "log_entries", errors, LOG_CAP,
                                        _check_entry)
    if change.append_log is not None:
        checked.append_log = _check_entry(change.append_log, "append_log", errors)
    if change.error_summary is not UNSET:
        text = change.error_summary
        if text is not None and not isinstance(text, str):
            errors.add("error_summary", "Not a valid string.")
        else:
            checked.error_summary = clean_error(text)
    if change.summary is not None:
        checked.summary = _check_summary(change.summary, "telemetry_summary", errors)
    if change.append_sample is not None:
        checked.append_sample = _check_sample(change.append_sample, "append_telemetry_sample",
                                              errors)
    checked.samples = _check_series(change.samples, "telemetry_samples", errors, SAMPLE_CAP,
                                    _check_sample)
    errors.raise_any()
    return checked


def check_bounded_text(value: Any, name: str, errors: Errors, limit: int) -> str | None:
    """An optional identifier-like text field of a run (environment, correlationId, …)."""
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(name, "Not a valid string.")
        return None
    value = value.strip()
    if inputs.has_nul(value):
        errors.add(name, "Null characters are not allowed.")
    elif len(value) > limit:
        errors.add(name, f"Ensure this field has no more than {limit} characters.")
    return value or None


def check_int_id(value: Any, name: str, errors: Errors) -> int | None:
    """An id given in a body: an integer or a string of digits (ELT ids are strings on the
    wire). One no row can have is left to the caller's not-found check."""
    return inputs.check_reference(value, name, errors)
