"""The protocol, without I/O: the requests each operation makes, how an answer is read, and
the retry rule. `sync` and `aio` only carry these requests over httpx and sleep when told.

An exchange is a generator: it yields a `Request` (answered with an `Answer`, or with the
transport exception when the connection failed) or a `Sleep` (answered with None), and
returns the operation's result or raises one of `errors`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runwatch.client.errors import (
    AuthError,
    Cancelled,
    Conflict,
    GraphQLError,
    NotFound,
    RetriesExhausted,
    RunwatchError,
    ValidationError,
)

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
MAX_ERROR_CHARS = 2000  # a failure's message as reported (the server scrubs and caps it too)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None
    # Safe to send twice: a retry after an answer that may have been lost (a read timeout, a
    # 502/504) cannot store anything twice. A request that is not is retried only when it
    # surely was not applied: the connection was refused, or the server answered 429/503.
    idempotent: bool = True
    # Statuses that mean "already done" on a retry (a replayed terminal change: 409).
    done_on_retry: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Sleep:
    seconds: float


class RefusedConnection(Exception):
    """What a wrapper sends into an exchange when no connection was made (nothing sent)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts and total time; exponential backoff with jitter (at most
    `max_delay`), or exactly the server's `Retry-After` when it gives one (when that is past
    the time left, the client gives up at once rather than retry early)."""

    attempts: int = 5
    total_seconds: float = 30.0
    base_delay: float = 0.25
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(retry_after, 0.0)
        backoff = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        return backoff * (0.5 + random.random() / 2)


def retry_after_of(headers: dict[str, str]) -> float | None:
    """`Retry-After` in seconds (an HTTP date is accepted too); None when absent or bad."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return (parsedate_to_datetime(raw) - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError):
        return None


def decode(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def error_for(status: int, body: Any) -> RunwatchError:
    """An unsuccessful answer -> its exception, the server's body attached."""
    detail = body.get("detail", body.get("error")) if isinstance(body, dict) else body
    message = f"HTTP {status}: {detail if isinstance(detail, str) else json.dumps(detail)}"
    if status in (401, 403):
        return AuthError(message, status=status, body=body)
    if status == 404:
        return NotFound(message, status=status, body=body)
    if status in (400, 422):
        return ValidationError(message, status=status, body=body)
    if status == 409:
        if isinstance(body, dict) and body.get("cancel") is True:
            return Cancelled(message, status=status, body=body)
        return Conflict(message, status=status, body=body)
    return RunwatchError(message, status=status, body=body)


def exchange(request: Request, policy: RetryPolicy,
             ) -> Generator[Request | Sleep, Any, Any]:
    """Send `request` until it is answered for good; return the decoded body (None for an
    empty one) or raise."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        answer = yield request
        if isinstance(answer, Answer):
            body = decode(answer.body)
            if 200 <= answer.status < 300:
                return body
            if attempt > 1 and answer.status in request.done_on_retry:
                return body  # our earlier attempt did it; its answer was lost
            retryable = answer.status in (429, 503) or (
                answer.status in RETRYABLE_STATUSES and request.idempotent)
            if not retryable:
                raise error_for(answer.status, body)
            wait = policy.delay(attempt, retry_after_of(answer.headers))
            last: BaseException = error_for(answer.status, body)
            status: int | None = answer.status
        else:
            if not (isinstance(answer, RefusedConnection) or request.idempotent):
                raise RunwatchError(f"{request.method} {request.path}: {answer!r} (not "
                                    "retried: the request may have been applied)") from answer
            wait, last, status, body = policy.delay(attempt, None), answer, None, None
        left = policy.total_seconds - (time.monotonic() - started)
        if attempt >= policy.attempts or wait > left:
            raise RetriesExhausted(
                f"{request.method} {request.path}: gave up after {attempt} attempt(s) in "
                f"{time.monotonic() - started:.1f}s: {last}", last=last, status=status,
                body=body) from (last if isinstance(last, Exception) else None)
        yield Sleep(wait)


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def failure_message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


# ---- GraphQL ------------------------------------------------------------------------------

def graphql_request(query: str, variables: dict[str, Any] | None) -> Request:
    is_mutation = query.lstrip().startswith("mutation")
    return Request("POST", "/graphql", json={"query": query, "variables": variables or {}},
                   idempotent=not is_mutation)


def graphql_result(body: Any) -> Any:
    if not isinstance(body, dict):
        raise RunwatchError(f"not a GraphQL answer: {body!r}", body=body)
    errors = body.get("errors")
    if errors:
        first = errors[0].get("message") if isinstance(errors[0], dict) else errors[0]
        codes = {(e.get("extensions") or {}).get("code") for e in errors if isinstance(e, dict)}
        if codes & {"UNAUTHENTICATED", "FORBIDDEN"}:
            raise AuthError(f"GraphQL: {first}", body=body)
        raise GraphQLError(f"GraphQL: {first}", errors=errors, body=body)
    return body.get("data")


def graphql_http_error(exc: RunwatchError) -> RunwatchError:
    """A non-2xx GraphQL answer that carries `errors` is a GraphQLError (auth stays auth)."""
    if isinstance(exc, AuthError | RetriesExhausted) or not isinstance(exc.body, dict):
        return exc
    errors = exc.body.get("errors")
    if not errors:
        return exc
    return GraphQLError(str(exc), errors=errors, body=exc.body, status=exc.status)


# ---- warehouse-connection runs (the metrics-report contract) ------------------------------

def warehouse_prefix(organisation: int | str, connection: int | str) -> str:
    return (f"/api/v1/organisations/{organisation}/integrations/warehouse-connections/"
            f"{connection}/metrics/")


def start_request(organisation: int | str, connection: int | str) -> Request:
    """Pre-create a run (what the recurring task does): not idempotent, a retry could create
    a second (orphaned) run, so it is retried only when surely not applied."""
    return Request("POST", warehouse_prefix(organisation, connection), json={},
                   idempotent=False)


@dataclass
class Report:
    """What a loader sets inside `with client.run(...) as run:`."""

    run_id: int
    events_delivered: int = 0
    batches_dlq: int = 0
    evaluations: int | None = None
    custom_events: int | None = None
    error: str | None = None
    completed_at: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "completed_at": self.completed_at or now_iso(),
            "events_delivered": self.events_delivered,
            "batches_dlq": self.batches_dlq,
            "error": self.error,
        }
        if self.evaluations is not None:
            body["evaluations"] = self.evaluations
        if self.custom_events is not None:
            body["custom_events"] = self.custom_events
        return body


def report_request(organisation: int | str, connection: int | str, report: Report,
                   failure: BaseException | None = None) -> Request:
    """The completion report: idempotent by construction (a replayed report is a 204), so
    every retryable failure is retried. `completed_at` is fixed on the first attempt."""
    if failure is not None and report.error is None:
        report.error = failure_message(failure)
    report.completed_at = report.completed_at or now_iso()
    return Request("PATCH", f"{warehouse_prefix(organisation, connection)}{report.run_id}/",
                   json=report.body())


# ---- ELT runs (the ELT-runs contract) -----------------------------------------------------

ELT_RUNS = "/api/elt/runs"
AGENT_RUNS = "/api/agent/runs"
LEVELS = ("info", "warn", "error")


def create_elt_request(pipeline_id: int | str, **fields: Any) -> Request:
    body = {"pipelineId": str(pipeline_id), "status": "running",
            **{k: v for k, v in fields.items() if v is not None}}
    return Request("POST", ELT_RUNS, json=body, idempotent=False)


def run_of(body: Any) -> dict[str, Any]:
    run = body.get("run") if isinstance(body, dict) else None
    if not isinstance(run, dict):
        raise RunwatchError(f"not a run answer: {body!r}", body=body)
    return run


@dataclass
class EltBuffer:
    """Log lines, samples and a summary waiting to be sent, and what the server said about
    cancellation. A flush is due when `max_items` are waiting or the oldest waited
    `max_seconds`. The wire carries one `appendLog` and one `appendTelemetrySample` per
    PATCH, so a flush pairs them: max(lines, samples) PATCHes, in order, the summary on the
    last."""

    path: str
    max_items: int = 50
    max_seconds: float = 2.0
    lines: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    oldest: float | None = None
    cancelled: bool = False
    run: dict[str, Any] = field(default_factory=dict)

    def _added(self) -> None:
        if self.oldest is None:
            self.oldest = time.monotonic()

    def log(self, message: str, level: str = "info") -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
        self.lines.append({"level": level, "message": str(message)})
        self._added()

    def sample(self, **point: Any) -> None:
        point.setdefault("at", now_iso())
        self.samples.append({k: v for k, v in point.items() if v is not None})
        self._added()

    def set_summary(self, **values: Any) -> None:
        self.summary.update(values)
        self._added()

    @property
    def waiting(self) -> int:
        return len(self.lines) + len(self.samples) + (1 if self.summary else 0)

    def due(self) -> bool:
        if not self.waiting:
            return False
        return (len(self.lines) + len(self.samples) >= self.max_items
                or time.monotonic() - (self.oldest or 0) >= self.max_seconds)

    def drain(self, final: dict[str, Any] | None = None) -> list[Request]:
        """The PATCHes that send everything waiting (and `final`, e.g. a terminal status,
        on the last one); the buffer is empty afterwards. Appends are not idempotent: they
        are retried only when surely not applied."""
        bodies: list[dict[str, Any]] = []
        for i in range(max(len(self.lines), len(self.samples))):
            body: dict[str, Any] = {}
            if i < len(self.lines):
                body["appendLog"] = self.lines[i]
            if i < len(self.samples):
                body["appendTelemetrySample"] = self.samples[i]
            bodies.append(body)
        if self.summary or final:
            if not bodies:
                bodies.append({})
            if self.summary:
                bodies[-1]["telemetrySummary"] = dict(self.summary)
        self.lines, self.samples, self.summary, self.oldest = [], [], {}, None
        requests = [Request("PATCH", self.path, json=b, idempotent=False) for b in bodies]
        if final:
            last = requests.pop() if requests else None
            merged = {**(last.json if last else {}), **final}
            # a terminal change replayed after a lost answer is a 409: already done
            requests.append(Request("PATCH", self.path, json=merged,
                                    idempotent=last is None, done_on_retry=frozenset({409})))
        return requests

    def take(self, body: Any) -> None:
        """Read a PATCH or GET answer: remember the run, and whether to stop."""
        run = run_of(body)
        self.run = run
        if run.get("cancel") or (isinstance(body, dict) and body.get("cancel")):
            self.cancelled = True

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled(f"run {self.run.get('id')} was {self.run.get('status')} on the "
                            "server", body=self.run)


def finish_body(failure: BaseException | None) -> dict[str, Any]:
    if failure is None:
        return {"status": "succeeded"}
    return {"status": "failed", "errorSummary": failure_message(failure)}


def new_elt_buffer(pipeline_id: int | str | None, run_id: int | str | None, gateway: bool,
                   max_items: int, max_seconds: float) -> EltBuffer:
    if (pipeline_id is None) == (run_id is None):
        raise ValueError("name a pipeline (to create a run) or a run_id (to start it)")
    if gateway and run_id is None:
        raise ValueError("a gateway starts a pending run: pass run_id")
    base = AGENT_RUNS if gateway else ELT_RUNS
    return EltBuffer(path=f"{base}/{run_id}" if run_id is not None else base,
                     max_items=max(1, max_items), max_seconds=max_seconds)


def claim_request(path: str) -> Request:
    """Start a pending run (a gateway's claim): `pending -> running`."""
    return Request("PATCH", path, json={"status": "running"}, idempotent=False)
