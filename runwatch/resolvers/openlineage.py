"""OpenLineage run events, mapped onto the one domain through the one run lifecycle.

- job (namespace, name) -> `Pipeline` found by name in the organisation (created on first sight,
  kind `openlineage`, its `namespace` recorded); run id (a UUID) -> `Run` by
  `openlineage_run_id`, unique per organisation;
- START / RUNNING -> running; COMPLETE -> succeeded; FAIL -> failed; ABORT -> cancelled;
  OTHER (or no type) changes no status. A terminal event for a run never started opens it and
  finishes it in one transaction (a COMPLETE before its START); a later START or RUNNING of a
  finished run only fills its start time. The same terminal event again is a no-op; a
  different terminal event of a finished run is the lifecycle's conflict;
- inputs x outputs -> dataset addresses (by name, the namespace recorded) and the pipeline's
  lineage edges (added, never removed: the Watcher lineage graph and this view are one), at
  most `addresses.MAX_EDGES` pairs per event (the cap of `POST /address_lineage`);
- facets: `errorMessage` -> the run's error (cleaned as every run error is:
  `runs.clean_error`), outputs' `outputStatistics` -> `rows_total` and
  `bytes` (summed), `parent` -> the run's parent (when that run is known), `nominalTime` ->
  `scheduled_at`; every other run and job facet is kept in `openlineage_facets`, merged per
  run, up to `MAX_FACET_BYTES` of JSON; facets past the cap are dropped and named under
  `_dropped` (never an error).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tortoise.exceptions import IntegrityError

from runwatch.models import OPEN_STATUSES, Address, AddressLineage, Pipeline, Run, RunStatus
from runwatch.resolvers import addresses, inputs, lifecycle, sql, strict_json
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import parse_iso, utcnow
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.runs import MAX_COUNT, clean_error

MAX_FACET_BYTES = 64 * 1024  # kept facets of one run, as compact JSON
MAX_NAME = 150  # a dataset's name (an address's) and a job's (a pipeline's, 200)
MAX_NAMESPACE = 500
MAX_DATASETS = 1000
MAX_DEPTH = 20
MAX_NODES = 2000
DEFAULT_NAMESPACE = "default"
TARGETS = {"START": RunStatus.RUNNING, "RUNNING": RunStatus.RUNNING,
           "COMPLETE": RunStatus.SUCCEEDED, "FAIL": RunStatus.FAILED,
           "ABORT": RunStatus.CANCELLED, "OTHER": None}
KNOWN_RUN_FACETS = ("errorMessage", "parent", "nominalTime")
DATABASE_SCHEMES = {"postgres", "postgresql", "mysql", "snowflake", "bigquery", "redshift",
                    "sqlserver", "mssql", "oracle", "trino", "hive", "db2", "sqlite", "duckdb",
                    "clickhouse", "databricks", "teradata", "awsathena", "vertica"}
FILE_SCHEMES = {"s3", "s3a", "gs", "gcs", "abfss", "abfs", "wasbs", "hdfs", "file", "dbfs"}
ATTEMPTS = 3


@dataclass(frozen=True)
class Dataset:
    namespace: str
    name: str
    row_count: int | None = None
    size: int | None = None


@dataclass(frozen=True)
class Event:
    """One run event, checked."""

    event_type: str | None
    event_time: datetime
    run_id: str
    job_namespace: str
    job_name: str
    inputs: list[Dataset] = field(default_factory=list)
    outputs: list[Dataset] = field(default_factory=list)
    error: str | None = None
    scheduled_at: datetime | None = None
    parent_run_id: str | None = None
    facets: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> RunStatus | None:
        return TARGETS[self.event_type] if self.event_type else None


# --- reading an event ------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def raise_any(self) -> None:
        if self.messages:
            raise InvalidInput({"event": self.messages})


def _text(value: Any, name: str, problems: _Problems, limit: int) -> str | None:
    if not isinstance(value, str) or not value.strip():
        problems.add(f"{name} must not be null or blank")
        return None
    if len(value) > limit or inputs.has_nul(value):
        problems.add(f"{name} must be at most {limit} characters, without null characters")
        return None
    return value


def _uuid(value: Any, name: str, problems: _Problems) -> str | None:
    if not isinstance(value, str):
        problems.add(f"{name} must not be null")
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        problems.add(f"{name} must be a UUID")
        return None


def _time(value: Any, name: str, problems: _Problems, *, required: bool) -> datetime | None:
    if value is None:
        if required:
            problems.add(f"{name} must not be null")
        return None
    parsed = parse_iso(value)
    if parsed is None:
        problems.add(f"{name} must be an ISO 8601 date-time")
    return parsed


def _obj(value: Any, name: str, problems: _Problems) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(f"{name} must be an object")
        return {}
    return value


def _count(value: Any, name: str, problems: _Problems) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        problems.add(f"{name} must be an integer from 0 to {MAX_COUNT}")
        return None
    return value


def _datasets(value: Any, name: str, problems: _Problems) -> list[Dataset]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_DATASETS:
        problems.add(f"{name} must be a list of at most {MAX_DATASETS} datasets")
        return []
    found = []
    for index, item in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(item, dict):
            problems.add(f"{where} must be an object")
            continue
        namespace = _text(item.get("namespace"), f"{where}.namespace", problems, MAX_NAMESPACE)
        ds_name = _text(item.get("name"), f"{where}.name", problems, MAX_NAME)
        stats = _obj(_obj(item.get("outputFacets"), f"{where}.outputFacets", problems)
                     .get("outputStatistics"), f"{where}.outputFacets.outputStatistics",
                     problems)
        rows = _count(stats.get("rowCount"), f"{where}.outputStatistics.rowCount", problems)
        size = _count(stats.get("size"), f"{where}.outputStatistics.size", problems)
        if namespace and ds_name:
            found.append(Dataset(namespace, ds_name, rows, size))
    return found


def parse_event(body: dict[str, Any]) -> Event:
    """A run event of the OpenLineage spec (1-x and 2-x: the fields read here are the same),
    or InvalidInput naming every problem."""
    problems = _Problems()
    event_type = body.get("eventType")
    if event_type is not None and event_type not in TARGETS:
        problems.add(f"eventType must be one of: {', '.join(TARGETS)}")
        event_type = None
    event_time = _time(body.get("eventTime"), "eventTime", problems, required=True)
    _text(body.get("producer"), "producer", problems, 2000)
    run = body.get("run")
    job = body.get("job")
    if not isinstance(run, dict):
        problems.add("run must not be null")
        run = {}
    if not isinstance(job, dict):
        problems.add("job must not be null")
        job = {}
    run_id = _uuid(run.get("runId"), "run.runId", problems)
    job_namespace = _text(job.get("namespace"), "job.namespace", problems, MAX_NAMESPACE)
    job_name = _text(job.get("name"), "job.name", problems, 200)
    run_facets = _obj(run.get("facets"), "run.facets", problems)
    job_facets = _obj(job.get("facets"), "job.facets", problems)
    error = None
    message = _obj(run_facets.get("errorMessage"), "run.facets.errorMessage", problems)
    if message:
        text = message.get("message")
        if not isinstance(text, str):
            problems.add("run.facets.errorMessage.message must be a string")
        else:
            error = clean_error(text)
    nominal = _obj(run_facets.get("nominalTime"), "run.facets.nominalTime", problems)
    scheduled = _time(nominal.get("nominalStartTime"), "run.facets.nominalTime.nominalStartTime",
                      problems, required=False)
    parent = _obj(run_facets.get("parent"), "run.facets.parent", problems)
    parent_run_id = None
    if parent:
        parent_run_id = _uuid(_obj(parent.get("run"), "run.facets.parent.run", problems)
                              .get("runId"), "run.facets.parent.run.runId", problems)
    inputs_ = _datasets(body.get("inputs"), "inputs", problems)
    outputs = _datasets(body.get("outputs"), "outputs", problems)
    if too_many := addresses.pairs_problem(len(inputs_), len(outputs)):
        problems.add(f"inputs x outputs: {too_many}")
    problems.raise_any()
    assert event_time and run_id and job_namespace and job_name
    facets = {f"run.{k}": v for k, v in run_facets.items() if k not in KNOWN_RUN_FACETS}
    facets.update({f"job.{k}": v for k, v in job_facets.items()})
    return Event(event_type=event_type, event_time=event_time, run_id=run_id,
                 job_namespace=job_namespace, job_name=job_name, inputs=inputs_,
                 outputs=outputs, error=error, scheduled_at=scheduled,
                 parent_run_id=parent_run_id, facets=facets)


def capped_facets(stored: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
    """`stored` with `new` merged in (a facet sent again replaces its old value), kept to
    `MAX_FACET_BYTES` of JSON: a facet that would pass the cap (or is not storable JSON: a
    NUL in its name or value, which PostgreSQL cannot store) is dropped and its name listed
    under `_dropped` (a NUL in it as U+FFFD)."""
    kept = dict(stored or {})
    dropped = list(kept.pop("_dropped", []))
    size = len(json.dumps(kept, separators=(",", ":")))
    for name, value in new.items():
        if strict_json.problem(value) is not None:
            dropped.append(name.replace("\x00", "\ufffd"))
            continue
        old = len(json.dumps({name: kept[name]}, separators=(",", ":"))) - 2 if name in kept else 0
        piece = len(json.dumps({name: value}, separators=(",", ":"))) - 2
        encoded = json.dumps({name: value})
        if "\\u0000" in encoded or size - old + piece + 1 > MAX_FACET_BYTES:
            dropped.append(name.replace("\x00", "\ufffd"))
            continue
        kept[name] = value
        size += piece - old + (0 if old else 1)
    if dropped:
        kept["_dropped"] = sorted(set(dropped))
    return kept or None


# --- writing it ------------------------------------------------------------------------------


def _address_values(dataset: Dataset) -> dict[str, Any]:
    scheme = dataset.namespace.split("://", 1)[0].split(":", 1)[0].strip().lower()[:150]
    group = ("database" if scheme in DATABASE_SCHEMES
             else "file" if scheme in FILE_SCHEMES else "dataset")
    return {"name": dataset.name, "namespace": dataset.namespace,
            "address_type_name": scheme or "openlineage", "address_type_group_name": group}


async def _pipeline(caller: Caller, event: Event, conn: Any) -> Pipeline:
    org = caller.organisation_id
    pipeline = await Pipeline.filter(organisation_id=org, name=event.job_name) \
        .using_db(conn).first()
    if pipeline is None:
        pipeline = await Pipeline.create(organisation_id=org, name=event.job_name,
                                         kind="openlineage", namespace=event.job_namespace,
                                         using_db=conn)
    elif pipeline.namespace is None:
        await Pipeline.filter(id=pipeline.id).using_db(conn).update(
            namespace=event.job_namespace)
    return pipeline


async def _lineage(caller: Caller, pipeline: Pipeline, event: Event, conn: Any) -> None:
    datasets = [*event.inputs, *event.outputs]
    if not datasets:
        return
    by_name = await addresses.ensure_addresses(
        caller, [_address_values(d) for d in datasets], conn)
    pairs = {(by_name[s.name].id, by_name[t.name].id) for s in event.inputs
             for t in event.outputs}
    if not pairs:
        return
    existing = {(e.source_id, e.target_id) for e in await AddressLineage.filter(
        pipeline_id=pipeline.id).using_db(conn)}
    new = sorted(pairs - existing)
    if new:
        await AddressLineage.bulk_create(
            [AddressLineage(organisation_id=caller.organisation_id, pipeline_id=pipeline.id,
                            source_id=s, target_id=t) for s, t in new], using_db=conn)


def _metrics(event: Event) -> dict[str, Any]:
    rows = [d.row_count for d in event.outputs if d.row_count is not None]
    sizes = [d.size for d in event.outputs if d.size is not None]
    columns: dict[str, Any] = {}
    if rows:
        columns["rows_total"] = min(sum(rows), MAX_COUNT)
    if sizes:
        columns["bytes"] = min(sum(sizes), MAX_COUNT)
    if event.error is not None:
        columns["error"] = event.error
    if event.scheduled_at is not None:
        columns["scheduled_at"] = event.scheduled_at
    return columns


async def _ingest(caller: Caller, event: Event, now: datetime) -> Run | None:
    org = caller.organisation_id
    target = event.target
    async with lifecycle.transaction() as (conn, effects):
        pipeline = await _pipeline(caller, event, conn)
        await _lineage(caller, pipeline, event, conn)
        run = await Run.filter(organisation_id=org, openlineage_run_id=event.run_id) \
            .select_for_update().using_db(conn).first()
        parent_id = None
        if event.parent_run_id and event.parent_run_id != event.run_id:
            parent = await Run.filter(organisation_id=org,
                                      openlineage_run_id=event.parent_run_id) \
                .using_db(conn).first()
            parent_id = parent.id if parent else None
        columns = _metrics(event)
        if parent_id is not None:
            columns["parent_id"] = parent_id
        facets = capped_facets(run.openlineage_facets if run else None, event.facets)
        if run is None:
            if target is None:  # OTHER for a run never started: its lineage only
                return None
            started = event.event_time
            run = await lifecycle.open_run(
                conn, effects, caller=caller, pipeline=pipeline, status=RunStatus.RUNNING,
                started_at=started, now=now, clock_field="eventTime",
                openlineage_run_id=event.run_id,
                openlineage_facets=facets, hour_recorded=started.hour,
                date_recorded=started.date(),
                **{k: v for k, v in columns.items() if k not in ("rows_total", "bytes")})
            if target == RunStatus.RUNNING:
                return run
        else:
            extra: dict[str, Any] = {"openlineage_facets": None if facets is None
                                     else sql.json_param(facets)}
            if target == RunStatus.RUNNING and run.started_at and \
                    event.event_time < run.started_at:
                extra["started_at"] = event.event_time  # a START after its COMPLETE
            if target is None or target == RunStatus.RUNNING or run.status == target:
                if lifecycle.is_terminal(run.status):
                    columns = {k: v for k, v in columns.items()
                               if k not in ("rows_total", "bytes", "error")}
                changed = await lifecycle.change_data(
                    conn, effects, run_id=run.id, organisation_id=org,
                    columns={**columns, **extra}, now=now)
                assert changed is not None  # locked above
                return changed
            if lifecycle.is_terminal(run.status):
                raise lifecycle.finished(run)
            columns["openlineage_facets"] = extra["openlineage_facets"]
        finished_at = max(event.event_time, run.started_at or event.event_time)
        moved = await lifecycle.move(
            conn, effects, run_id=run.id, organisation_id=org, target=target,
            columns={**columns, "finished_at": finished_at,
                     "duration_seconds": round((finished_at - (run.started_at or finished_at))
                                               .total_seconds())},
            from_statuses=OPEN_STATUSES if target == RunStatus.CANCELLED
            else (RunStatus.RUNNING,), caller=caller, now=now, clock_field="eventTime")
        if moved is None:
            raise lifecycle.refusal(caller, run, target)
        return moved


async def ingest(*, caller: Caller, event: Event, now: datetime | None = None) -> Run | None:
    """Record one event (see the module's docstring); the run as it is afterwards, or None
    for an OTHER event of a run never started. A concurrent first sight of the same job,
    dataset or run is retried."""
    caller.require_any(Scope.REPORT, Scope.WRITE)
    for attempt in range(ATTEMPTS):
        try:
            return await _ingest(caller, event, now or utcnow())
        except IntegrityError:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


# --- reading the graph -----------------------------------------------------------------------


@dataclass
class GraphNode:
    id: str
    type: str
    data: dict[str, Any]
    in_edges: list[dict[str, str]] = field(default_factory=list)
    out_edges: list[dict[str, str]] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "data": self.data,
                "inEdges": self.in_edges, "outEdges": self.out_edges}


def dataset_node_id(address: Address) -> str:
    return f"dataset:{address.namespace or DEFAULT_NAMESPACE}:{address.name}"


def job_node_id(pipeline: Pipeline) -> str:
    return f"job:{pipeline.namespace or DEFAULT_NAMESPACE}:{pipeline.name}"


def _split(node_id: Any) -> tuple[str, str, str]:
    if isinstance(node_id, str) and not inputs.has_nul(node_id):
        kind, _, rest = node_id.partition(":")
        namespace, _, name = rest.rpartition(":")
        if kind in ("dataset", "job") and namespace and name:
            return kind, namespace, name
    raise InvalidInput.one("nodeId", "nodeId must be dataset:<namespace>:<name> or "
                                     "job:<namespace>:<name>")


async def lineage_graph(*, caller: Caller, node_id: str, depth: int = MAX_DEPTH) -> list[GraphNode]:
    """The jobs and datasets around `node_id` to `depth` hops (a job and a dataset are one hop
    apart), in Marquez's shape: nodes with their in and out edges."""
    caller.require_scope(Scope.READ)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise InvalidInput.one("depth", f"depth must be an integer from 0 to {MAX_DEPTH}")
    kind, namespace, name = _split(node_id)
    org = caller.organisation_id
    datasets: set[int] = set()
    jobs: set[int] = set()
    if kind == "dataset":
        found = [a for a in await Address.filter(organisation_id=org, name=name[:MAX_NAME])
                 if (a.namespace or DEFAULT_NAMESPACE) == namespace]
        if not found:
            raise NotFound("dataset", node_id)
        datasets.add(found[0].id)
    else:
        pipeline = await Pipeline.filter(organisation_id=org, name=name[:200]).first()
        if pipeline is None or (pipeline.namespace or DEFAULT_NAMESPACE) != namespace:
            raise NotFound("job", node_id)
        jobs.add(pipeline.id)
    edges: dict[int, AddressLineage] = {}
    frontier_d, frontier_j = set(datasets), set(jobs)
    for _ in range(depth):
        if (not frontier_d and not frontier_j) or len(datasets) + len(jobs) > MAX_NODES:
            break
        found_edges = []
        if frontier_d:
            ids = sorted(frontier_d)
            found_edges += await AddressLineage.filter(organisation_id=org, source_id__in=ids)
            found_edges += await AddressLineage.filter(organisation_id=org, target_id__in=ids)
        if frontier_j:
            found_edges += await AddressLineage.filter(organisation_id=org,
                                                       pipeline_id__in=sorted(frontier_j))
        next_d: set[int] = set()
        next_j: set[int] = set()
        for edge in found_edges:
            edges[edge.id] = edge
            if edge.pipeline_id in frontier_j:  # type: ignore[attr-defined]
                next_d |= {edge.source_id, edge.target_id} - datasets  # type: ignore[attr-defined]
            if {edge.source_id, edge.target_id} & frontier_d:  # type: ignore[attr-defined]
                next_j |= {edge.pipeline_id} - jobs  # type: ignore[attr-defined]
        datasets |= next_d
        jobs |= next_j
        frontier_d, frontier_j = next_d, next_j
    addresses_by_id = {a.id: a for a in await Address.filter(
        organisation_id=org, id__in=sorted(datasets))}
    pipelines_by_id = {p.id: p for p in await Pipeline.filter(
        organisation_id=org, id__in=sorted(jobs))}
    nodes: dict[str, GraphNode] = {}
    for a in addresses_by_id.values():
        nodes[dataset_node_id(a)] = GraphNode(dataset_node_id(a), "DATASET", {
            "type": "DATASET", "id": {"namespace": a.namespace or DEFAULT_NAMESPACE,
                                      "name": a.name},
            "namespace": a.namespace or DEFAULT_NAMESPACE, "name": a.name,
            "addressId": a.id})
    for p in pipelines_by_id.values():
        nodes[job_node_id(p)] = GraphNode(job_node_id(p), "JOB", {
            "type": "BATCH", "id": {"namespace": p.namespace or DEFAULT_NAMESPACE,
                                    "name": p.name},
            "namespace": p.namespace or DEFAULT_NAMESPACE, "name": p.name,
            "pipelineId": p.id})
    seen: set[tuple[str, str]] = set()
    for edge in sorted(edges.values(), key=lambda e: e.id):
        pipeline = pipelines_by_id.get(edge.pipeline_id)  # type: ignore[attr-defined]
        source = addresses_by_id.get(edge.source_id)  # type: ignore[attr-defined]
        target = addresses_by_id.get(edge.target_id)  # type: ignore[attr-defined]
        if pipeline is None:
            continue
        job = job_node_id(pipeline)
        for origin, destination in ((source and dataset_node_id(source), job),
                                    (job, target and dataset_node_id(target))):
            if origin is None or destination is None or (origin, destination) in seen:
                continue
            seen.add((origin, destination))
            pair = {"origin": origin, "destination": destination}
            nodes[origin].out_edges.append(pair)
            nodes[destination].in_edges.append(pair)
    return sorted(nodes.values(), key=lambda n: n.id)


__all__ = ["Event", "GraphNode", "capped_facets", "ingest", "lineage_graph", "parse_event"]
