"""Prometheus metrics: `GET /metrics`, off unless `RUNWATCH_METRICS=1`.

Counters and histograms use `prometheus_client` in multi-process mode: every process (each
`runwatch serve` replica and uvicorn worker, each `runwatch worker`) writes its values to files
in `PROMETHEUS_MULTIPROC_DIR`, and a scrape of any of them adds up every process's files, so
the numbers are the host's. `runwatch serve` and `runwatch worker` create a temporary directory
when metrics are on and none is given (`ensure_multiproc_dir`); the files of processes that are
gone are cleaned (`mark_process_dead`) when a process starts and at each scrape. The state of
the database (runs by status, backlogs, queue depths, the reaper's lag) is read at scrape time
by a few aggregate queries, the same from any replica; the connection pool is the answering
process's.

Everything metric-related lives here; other modules call one small function each
(`run_moved`, `webhook_attempt`, `database_fault`, `graphql_operation`), which costs one
`None` test while metrics are off. Labels are bounded: route templates (never raw paths), a
capped set of GraphQL operation names, statuses, kinds; no ids, and organisations only with
`RUNWATCH_METRICS_ORG_LABELS=1`.
"""

from __future__ import annotations

import atexit
import contextlib
import hmac
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from typing import Any

from runwatch.resolvers import sql
from runwatch.resolvers.clock import utcnow
from runwatch.settings import Settings

# At most this many distinct GraphQL operation names per process; the others are "other".
MAX_OPERATION_NAMES = 100
ANONYMOUS = "anonymous"
OTHER = "other"
UNMATCHED = "unmatched"  # no route matched (a 404 of the router)
OPERATION_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")
NAMED_OPERATION = re.compile(r"\s*(?:query|mutation)\s+([_A-Za-z][_0-9A-Za-z]*)")
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
PREFIX = "runwatch_"


class _Metrics:
    """The process's metric objects (created once, in multi-process mode)."""

    def __init__(self, org_labels: bool) -> None:
        from prometheus_client import Counter, Histogram

        # Not in the default registry: a scrape reads every process's files instead.
        self.org_labels = org_labels
        org = ("organisation",) if org_labels else ()
        self.requests = Counter(
            PREFIX + "http_requests", "HTTP requests answered, by route template.",
            ("method", "route", "status"), registry=None)
        self.latency = Histogram(
            PREFIX + "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.", ("method", "route"),
            registry=None)
        self.operations = Counter(
            PREFIX + "graphql_operations", "GraphQL operations executed over HTTP, by name.",
            ("operation",), registry=None)
        self.operation_latency = Histogram(
            PREFIX + "graphql_operation_duration_seconds",
            "Time to execute a GraphQL operation, by name.", ("operation",), registry=None)
        self.transitions = Counter(
            PREFIX + "run_transitions", "Runs that changed status (from `none`: created).",
            ("from_status", "to_status", *org), registry=None)
        self.webhook_attempts = Counter(
            PREFIX + "webhook_attempts", "Delivery attempts of webhooks and alerts.",
            ("kind", "outcome"), registry=None)
        self.faults = Counter(
            PREFIX + "database_fault_responses",
            "Requests answered 503 (or a socket closed 1013) because the database was "
            "unavailable.", ("transport",), registry=None)
        self.operation_names: set[str] = set()
        # (method, route, status) -> (counter child, histogram child): no label lookup per
        # request once a combination has been seen.
        self.children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.moves: dict[tuple[str, ...], Any] = {}  # (from, to[, organisation]) -> child

    def request_children(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        key = (method, route, status)
        found = self.children.get(key)
        if found is None:
            found = (self.requests.labels(method, route, str(status)),
                     self.latency.labels(method, route))
            self.children[key] = found
        return found

    def operation_label(self, name: str | None) -> str:
        if not name:
            return ANONYMOUS
        if name in self.operation_names:
            return name
        if len(self.operation_names) >= MAX_OPERATION_NAMES or not OPERATION_NAME.fullmatch(
                name):
            return OTHER
        self.operation_names.add(name)
        return name


_metrics: _Metrics | None = None


def enabled() -> bool:
    return _metrics is not None


def ensure_multiproc_dir() -> str:
    """`PROMETHEUS_MULTIPROC_DIR`, created as a temporary directory when unset (the
    processes started from this one inherit it)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="runwatch-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        atexit.register(shutil.rmtree, path, True)  # ours: gone with this process
    os.makedirs(path, exist_ok=True)
    return path


def configure(settings: Settings) -> bool:
    """Turn metrics on in this process when the settings ask for them (once; idempotent)."""
    global _metrics
    if not settings.metrics:
        return False
    if _metrics is None:
        path = ensure_multiproc_dir()
        from prometheus_client import values

        # The value class is chosen when prometheus_client is imported: switch it to the
        # multi-process one explicitly, whatever was imported before the directory was set.
        values.ValueClass = values.MultiProcessValue(process_identifier=_pid)
        sweep_dead(path)
        _metrics = _Metrics(settings.metrics_org_labels)
    return True


# The value class asks for the process id on every write (to notice a fork); a system call
# each time is most of a request's metrics cost, so the id is kept and renewed after a fork.
_process = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _process.__setitem__(0, os.getpid()))


def _pid() -> int:
    return _process[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead(path: str | None = None) -> list[int]:
    """`mark_process_dead` for every process that is gone and left live gauges (its
    `gauge_live*` files) in the directory; counters and histograms of a dead process stay,
    part of the host's totals."""
    from prometheus_client import multiprocess

    path = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    dead = set()
    with contextlib.suppress(OSError):
        for name in os.listdir(path):
            stem = name.removesuffix(".db")
            pid = stem.rsplit("_", 1)[-1]
            if (name.startswith("gauge_live") and stem != name and pid.isdigit()
                    and not _alive(int(pid))):
                dead.add(int(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


# --- the hooks other modules call (one line each) ---------------------------------------------


def run_moved(from_status: Any, to_status: Any, organisation_id: int | None = None) -> None:
    """A run changed status (in `lifecycle`: created when `from_status` is None)."""
    m = _metrics
    if m is None:
        return
    source = "none" if from_status is None else getattr(from_status, "value", from_status)
    target = getattr(to_status, "value", to_status)
    key = (source, target, str(organisation_id)) if m.org_labels else (source, target)
    child = m.moves.get(key)
    if child is None:
        child = m.moves[key] = m.transitions.labels(*key)
    child.inc()


def webhook_attempt(alert: bool, ok: bool) -> None:
    """One delivery attempt of a webhook (or of an alert, `alert`) and whether it succeeded."""
    if _metrics is not None:
        _metrics.webhook_attempts.labels("alert" if alert else "webhook",
                                         "delivered" if ok else "failed").inc()


def database_fault(transport: str) -> None:
    """A request answered 503 (or a socket closed) because the database was unavailable."""
    if _metrics is not None:
        _metrics.faults.labels(transport).inc()


def graphql_operation(request: Any, seconds: float) -> None:
    """One GraphQL operation over HTTP (strawberry's request data), by its bounded name: the
    `operationName` sent, else the name the document's first operation gives itself."""
    m = _metrics
    if m is not None:
        name = getattr(request, "operation_name", None)
        if not name and isinstance(query := getattr(request, "query", None), str):
            named = NAMED_OPERATION.match(query)
            name = named.group(1) if named else None
        label = m.operation_label(name)
        m.operations.labels(label).inc()
        m.operation_latency.labels(label).observe(seconds)


# --- requests ---------------------------------------------------------------------------------


def route_templates(routes: Iterable[Any]) -> dict[Any, str]:
    """Endpoint -> path template (`/api/runs/{run_id}`), for the routes of the app."""
    return {route.endpoint: route.path for route in routes
            if getattr(route, "endpoint", None) is not None and hasattr(route, "path")}


class MetricsMiddleware:
    """Pure ASGI: counts and times each HTTP request by method, route template and status. The
    template is that of the route the router chose (`scope["endpoint"]`), read after the
    response; when the answer came before routing (a middleware's: a database fault in the
    token look-up, a rate limit), the routes are matched here; a path no route matches is
    `unmatched`."""

    # Passes sockets through: not in the GraphQL socket's lane (`runwatch.app.RunwatchApp`).
    http_only = True

    def __init__(self, app: Any, routes: Iterable[Any] = ()) -> None:
        self.app = app
        self.routes = [r for r in routes if hasattr(r, "matches") and hasattr(r, "path")]
        self.templates = route_templates(self.routes)

    def template(self, scope: Any) -> str:
        endpoint = scope.get("endpoint")
        if endpoint is not None:
            return self.templates.get(endpoint, UNMATCHED)
        for route in self.routes:
            match, _ = route.matches(scope)
            if match.value:  # starlette's Match: FULL or PARTIAL (another method)
                return route.path
        return UNMATCHED

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        m = _metrics
        if m is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"]
            route = self.template(scope)
            counter, histogram = m.request_children(
                method if method in METHODS else OTHER, route, status)
            counter.inc()
            histogram.observe(elapsed)


# --- the scrape -------------------------------------------------------------------------------


async def _database_families(org_labels: bool) -> list[Any]:
    from prometheus_client.core import GaugeMetricFamily

    now = utcnow()
    org = ["organisation"] if org_labels else []
    by_org = ", organisation_id" if org_labels else ""
    families = []

    runs = GaugeMetricFamily(PREFIX + "runs", "Runs by status (read at scrape time).",
                             labels=["status", *org])
    for row in await sql.fetch(
            f"SELECT status{by_org}, COUNT(*) AS n FROM run GROUP BY status{by_org}", []):
        runs.add_metric([row["status"], *([str(row["organisation_id"])] if org else [])],
                        row["n"])
    families.append(runs)

    backlog = GaugeMetricFamily(
        PREFIX + "delivery_backlog", "Webhook and alert deliveries waiting to be sent.",
        labels=["kind"])
    oldest = GaugeMetricFamily(
        PREFIX + "delivery_oldest_due_age_seconds",
        "How long the oldest due delivery has been due (0: none due).", labels=["kind"])
    counts = {"webhook": (0, None), "alert": (0, None)}
    for row in await sql.fetch(
            "SELECT channel_id IS NULL AS webhook, COUNT(*) AS n, "
            "MIN(CASE WHEN next_attempt_at <= ? THEN next_attempt_at END) AS due "
            "FROM webhook_delivery WHERE status = 'pending' GROUP BY channel_id IS NULL",
            [now]):
        counts["webhook" if row["webhook"] else "alert"] = (row["n"], row["due"])
    for kind, (n, due) in counts.items():
        backlog.add_metric([kind], n)
        oldest.add_metric([kind], _age(now, due))
    families += [backlog, oldest]

    queue = GaugeMetricFamily(PREFIX + "task_queue_depth", "Pending tasks by kind.",
                              labels=["kind"])
    for row in await sql.fetch(
            "SELECT kind, COUNT(*) AS n FROM task WHERE status = 'pending' GROUP BY kind", []):
        queue.add_metric([row["kind"][:40]], row["n"])
    families.append(queue)

    rows = await sql.fetch(
        "SELECT MIN(deadline_at) AS due FROM run WHERE status IN ('pending', 'running') "
        "AND deadline_at < ?", [now])
    families.append(GaugeMetricFamily(
        PREFIX + "reaper_lag_seconds",
        "How long the most overdue open run has been past its deadline (0: none).",
        value=_age(now, rows[0]["due"] if rows else None)))

    pool = getattr(sql.client(), "_pool", None)
    if pool is not None:
        family = GaugeMetricFamily(
            PREFIX + "db_pool_connections",
            "Database connections of the answering process's pool.", labels=["state"])
        size, idle = pool.get_size(), pool.get_idle_size()
        family.add_metric(["in_use"], size - idle)
        family.add_metric(["idle"], idle)
        family.add_metric(["max"], pool.get_max_size())
        families.append(family)
    return families


def _age(now: Any, when: Any) -> float:
    if when is None:
        return 0.0
    return max(0.0, (now - sql.as_datetime(when)).total_seconds())


class _Snapshot:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


async def render(org_labels: bool = False) -> bytes:
    """The exposition text: every process's counters and histograms, and the database's
    state now."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    assert _metrics is not None
    sweep_dead()
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(_Snapshot(await _database_families(org_labels)))  # type: ignore[arg-type]
    return generate_latest(registry)


class MetricsEndpoint:
    """`GET /metrics` (an ASGI app): with `RUNWATCH_METRICS_TOKEN` set, only for
    `Authorization: Bearer <that token>` (401 otherwise)."""

    def __init__(self, settings: Settings) -> None:
        self.token = settings.metrics_token.encode()
        self.org_labels = settings.metrics_org_labels

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.token and not self.authorised(scope):
            await _answer(send, 401, b'{"detail": "Send the metrics token: Authorization: '
                          b'Bearer <RUNWATCH_METRICS_TOKEN>."}', b"application/json",
                          [(b"www-authenticate", b'Bearer realm="metrics"')])
            return
        await _answer(send, 200, await render(self.org_labels), CONTENT_TYPE)

    def authorised(self, scope: Any) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    token.strip(), self.token)
        return False


async def _answer(send: Any, status: int, body: bytes, content_type: bytes,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
