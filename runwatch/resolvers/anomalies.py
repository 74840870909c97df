"""Anomaly detection: rules on a pipeline's run metrics, the detection job that runs after each
successful run, and unflagging.

A rule watches one metric of a pipeline's runs. After a successful run (a `Task` of kind
`anomaly_detection`, see `tasks.enqueue_anomaly_detection`), each active rule compares the
run's value with a baseline: the successful runs of the same pipeline that started in the same
UTC hour of day within the rule's `lookback_days` before this run's start (a run that started
at the same moment counts when its id is lower: loaders that stamp a whole batch with one
start time still have a history), leaving out this run,
the runs already flagged for that metric and null values. With at least `minimum_executions`
points and a sample standard deviation (n - 1) above 0, the band is mean +- z * std (the lower
bound clamped at 0); a value outside it is flagged: `anomaly_flags[metric] = true` on the run,
an `AnomalyResult` with the numbers that explain it, and an alert, in one transaction.

Cost: the baseline is one aggregate statement per rule (count, mean, min, max and the sum of
squared deviations, computed by the database), so detection costs the same whatever the
history holds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from runwatch.models import (
    INT32_MAX,
    INT64_MAX,
    AnomalyResult,
    AnomalyRule,
    Pipeline,
    Run,
    RunStatus,
)
from runwatch.resolvers import alerts, sql
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.pagination import Page, paginate
from runwatch.resolvers.run_input import Errors
from runwatch.resolvers.watcher_pipelines import integer, require_writer

# metric_field -> Run column. The Watcher's metrics first, then those of other runs.
METRICS: dict[str, str] = {
    "duration_seconds": "duration_seconds",
    "inserts": "rows_inserted",
    "updates": "rows_updated",
    "soft_deletes": "rows_deleted",
    "total_rows": "rows_total",
    "throughput": "throughput",
    "events_delivered": "events_delivered",
    "bytes": "bytes",
}

Z_RANGE = (1.0, 10.0)
LOOKBACK_RANGE = (1, 365)
MINIMUM_RANGE = (5, 1000)
DEFAULTS: dict[str, Any] = {"z_threshold": 3.0, "lookback_days": 30, "minimum_executions": 30,
                            "active": True}


# ----------------------------------------------------------------------------------------------
# validation


def _metric(value: Any, name: str, errors: Errors) -> str | None:
    metric = value.strip().lower() if isinstance(value, str) else None
    if metric not in METRICS:
        errors.add(name, f"{name} must be one of: {', '.join(METRICS)}")
        return None
    return metric


def _integer(value: Any, name: str, errors: Errors, bounds: tuple[int, int]) -> int | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.add(name, f"{name} must be an integer from {low} to {high}")
        return None
    return value


def _z(value: Any, name: str, errors: Errors) -> float | None:
    low, high = Z_RANGE
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not low <= value <= high):
        errors.add(name, f"{name} must be a number from {low} to {high}")
        return None
    return float(value)


def _boolean(value: Any, name: str, errors: Errors) -> bool | None:
    if not isinstance(value, bool):
        errors.add(name, f"{name} must be a boolean")
        return None
    return value


def _settings(raw: dict[str, Any], errors: Errors, *, defaults: bool) -> dict[str, Any]:
    """The rule's settings sent (null counts as not sent), validated; with `defaults`, the
    ones not sent get their defaults."""
    values: dict[str, Any] = {}
    checks = {
        "z_threshold": lambda v: _z(v, "z_threshold", errors),
        "lookback_days": lambda v: _integer(v, "lookback_days", errors, LOOKBACK_RANGE),
        "minimum_executions": lambda v: _integer(v, "minimum_executions", errors,
                                                 MINIMUM_RANGE),
        "active": lambda v: _boolean(v, "active", errors),
    }
    for key, check in checks.items():
        if raw.get(key) is not None:
            values[key] = check(raw[key])
        elif defaults:
            values[key] = DEFAULTS[key]
    return values


async def _pipeline_of(caller: Caller, pipeline_id: int | None) -> Pipeline:
    pipeline = await Pipeline.filter(
        id=pipeline_id, organisation_id=caller.organisation_id).first() \
        if pipeline_id is not None and 0 < pipeline_id <= INT32_MAX else None
    if pipeline is None:
        raise NotFound("pipeline", pipeline_id)
    return pipeline


# ----------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True, kw_only=True)
class RuleInput:
    """A rule of (pipeline, metric): its settings (None: not given, the default on create,
    unchanged on update). Values are checked by the resolvers, whatever the surface."""

    pipeline_id: int | None = None
    metric_field: str | None = None
    z_threshold: float | None = None
    lookback_days: int | None = None
    minimum_executions: int | None = None
    active: bool | None = None


@dataclass(frozen=True, kw_only=True)
class RuleChange(RuleInput):
    """A change of the rule `id`: only the fields given change."""

    id: int | None = None


@dataclass(frozen=True)
class Unflag:
    """Metrics of one execution of one pipeline to unflag."""

    pipeline_id: int | None
    run_id: int | None
    metric_fields: list[str] | None


def _given(value: RuleInput) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(value).items() if v is not None}


async def get_or_create_rule(*, caller: Caller, rule: RuleInput) -> tuple[AnomalyRule, bool]:
    """`POST /anomaly_detection_rule`: the rule of (pipeline_id, metric_field), found
    (unchanged, False) or created (True)."""
    require_writer(caller)
    raw = _given(rule)
    errors = Errors()
    pipeline_id = integer(raw.get("pipeline_id"), "pipeline_id", errors, required=True)
    metric = _metric(raw.get("metric_field"), "metric_field", errors)
    values = _settings(raw, errors, defaults=True)
    errors.raise_any()
    pipeline = await _pipeline_of(caller, pipeline_id)
    key = {"organisation_id": caller.organisation_id, "pipeline_id": pipeline.id,
           "metric_field": metric}
    found = await AnomalyRule.filter(**key).first()
    if found is not None:
        return found, False
    try:
        return await AnomalyRule.create(**key, **values), True
    except IntegrityError:  # created meanwhile by a concurrent call
        return await AnomalyRule.get(**key), False


async def list_rules(*, caller: Caller, pipeline_id: int | None = None) -> list[AnomalyRule]:
    caller.require_scope(Scope.READ)
    query = AnomalyRule.filter(organisation_id=caller.organisation_id)
    if pipeline_id is not None:
        if not 0 < pipeline_id <= INT32_MAX:
            return []
        query = query.filter(pipeline_id=pipeline_id)
    return await query.order_by("id")


async def get_rule(*, caller: Caller, rule_id: int) -> AnomalyRule:
    caller.require_scope(Scope.READ)
    return await _rule(caller, rule_id)


async def _rule(caller: Caller, rule_id: int) -> AnomalyRule:
    """The organisation's rule, for a caller whose scope was checked already."""
    rule = await AnomalyRule.filter(
        id=rule_id, organisation_id=caller.organisation_id).first() \
        if 0 < rule_id <= INT32_MAX else None
    if rule is None:
        raise NotFound("anomaly detection rule", rule_id)
    return rule


async def patch_rule(*, caller: Caller, change: RuleChange) -> AnomalyRule:
    """`PATCH /anomaly_detection_rule`: the rule `id`; only the fields sent change."""
    require_writer(caller)
    raw = _given(change)
    errors = Errors()
    rule_id = integer(raw.get("id"), "id", errors, required=True)
    changes = _settings(raw, errors, defaults=False)
    if raw.get("pipeline_id") is not None:
        changes["pipeline_id"] = integer(raw["pipeline_id"], "pipeline_id", errors, required=True)
    if raw.get("metric_field") is not None:
        changes["metric_field"] = _metric(raw["metric_field"], "metric_field", errors)
    errors.raise_any()
    rule = await _rule(caller, rule_id)  # type: ignore[arg-type]
    if "pipeline_id" in changes:
        await _pipeline_of(caller, changes["pipeline_id"])
    changes["updated_at"] = utcnow()
    try:
        await AnomalyRule.filter(id=rule.id).update(**changes)
    except IntegrityError:
        raise InvalidInput.one(
            "metric_field", "A rule for this pipeline and metric_field already exists") \
            from None
    for key, value in changes.items():
        setattr(rule, key, value)
    return rule


# ----------------------------------------------------------------------------------------------
# detection


def _hour_of(conn: BaseDBAsyncClient, column: str) -> str:
    """The UTC hour of day of a timestamp column, as an integer."""
    if sql.is_postgres(conn):
        return f"CAST(EXTRACT(HOUR FROM {column} AT TIME ZONE 'UTC') AS INTEGER)"
    return f"CAST(strftime('%H', {column}) AS INTEGER)"  # stored as ISO text with an offset


# One pass over the baseline by the database: count, mean, min and max, then the sum of
# squared deviations from that mean (two-pass, so no catastrophic cancellation).
_BASELINE = """
WITH base AS (
  SELECT CAST(r.{column} AS DOUBLE PRECISION) AS v FROM run r
  WHERE r.pipeline_id = ? AND r.organisation_id = ? AND r.status = ? AND r.id <> ?
    AND r.{column} IS NOT NULL AND r.started_at >= ?
    AND (r.started_at < ? OR (r.started_at = ? AND r.id < ?))
    AND (r.hour_recorded = ? OR (r.hour_recorded IS NULL AND {hour} = ?))
    AND NOT EXISTS (SELECT 1 FROM anomaly_result a
                    WHERE a.run_id = r.id AND a.metric_field = ?)
), stats AS (
  SELECT COUNT(*) AS n, AVG(v) AS mean, MIN(v) AS low, MAX(v) AS high FROM base
)
SELECT s.n, s.mean, s.low, s.high,
  (SELECT SUM((b.v - s.mean) * (b.v - s.mean)) FROM base b) AS squares
FROM stats s
"""


@dataclass(frozen=True)
class Baseline:
    points: int
    mean: float
    std_dev: float


async def _baseline(conn: BaseDBAsyncClient, run: Run, rule: AnomalyRule, hour: int,
                    started: datetime) -> Baseline:
    statement = _BASELINE.format(column=METRICS[rule.metric_field],
                                 hour=_hour_of(conn, "r.started_at"))
    rows = await sql.fetch(statement, [
        run.pipeline_id, run.organisation_id,  # type: ignore[attr-defined]
        RunStatus.SUCCEEDED.value, run.id,
        started - timedelta(days=rule.lookback_days), started, started, run.id,
        hour, hour, rule.metric_field], conn)
    row = rows[0]
    points = int(row["n"] or 0)
    if points < 2:
        return Baseline(points=points, mean=float(row["mean"] or 0.0), std_dev=0.0)
    mean = float(row["mean"])
    if row["low"] == row["high"]:  # identical values: exactly no spread, whatever the rounding
        return Baseline(points=points, mean=mean, std_dev=0.0)
    return Baseline(points=points, mean=mean,
                    std_dev=math.sqrt(max(float(row["squares"] or 0.0), 0.0) / (points - 1)))


@dataclass(frozen=True)
class Finding:
    rule: AnomalyRule
    value: float
    baseline: Baseline
    lower_bound: float
    upper_bound: float


_INSERT_RESULT = """
INSERT INTO anomaly_result (organisation_id, pipeline_id, run_id, rule_id, metric_field, value,
  mean, std_dev, z_threshold, lower_bound, upper_bound, points, detected_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, metric_field) DO NOTHING
RETURNING *
"""


def _number(value: float) -> str:
    """A metric value for people: integers as such, other values to at most 4 decimals."""
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return f"{value:.4f}".rstrip("0").rstrip(".")


async def detect_for_run(*, organisation_id: int, run_id: int) -> list[AnomalyResult]:
    """The background job after a successful end: check the run against each active rule of
    its pipeline. Returns the results it created (none when run again: a run has at most one
    result per metric)."""
    if organisation_id is None or not (0 < run_id <= INT64_MAX
                                       and 0 < organisation_id <= INT32_MAX):
        return []
    conn = sql.client()
    run = await Run.filter(id=run_id, organisation_id=organisation_id).select_related(
        "pipeline").first()
    if run is None or run.status != RunStatus.SUCCEEDED or run.started_at is None:
        return []
    rules = await AnomalyRule.filter(
        organisation_id=organisation_id, pipeline_id=run.pipeline_id,  # type: ignore[attr-defined]
        active=True).order_by("id")
    if not rules:
        return []
    done = set(await AnomalyResult.filter(run_id=run.id).values_list("metric_field", flat=True))
    started = run.started_at.astimezone(UTC)
    hour = run.hour_recorded if run.hour_recorded is not None else started.hour
    findings: list[Finding] = []
    for rule in rules:
        if rule.metric_field in done or rule.metric_field not in METRICS:
            continue
        raw_value = getattr(run, METRICS[rule.metric_field])
        if raw_value is None:
            continue
        baseline = await _baseline(conn, run, rule, hour, started)
        if baseline.points < rule.minimum_executions or baseline.std_dev == 0:
            continue
        spread = rule.z_threshold * baseline.std_dev
        lower, upper = max(baseline.mean - spread, 0.0), baseline.mean + spread
        value = float(raw_value)
        if lower <= value <= upper:
            continue
        findings.append(Finding(rule=rule, value=value, baseline=baseline,
                                lower_bound=lower, upper_bound=upper))
    if not findings:
        return []
    return await _record(run, findings, hour)


async def _record(run: Run, findings: list[Finding], hour: int) -> list[AnomalyResult]:
    """Flags, results and alerts of one run, together or not at all."""
    organisation_id = run.organisation_id  # type: ignore[attr-defined]
    pipeline: Pipeline = run.pipeline  # type: ignore[assignment]
    created: list[AnomalyResult] = []
    now = utcnow()
    async with in_transaction() as conn:
        locked = await Run.filter(id=run.id).select_for_update().using_db(conn).first()
        if locked is None:
            return []
        for finding in findings:
            rule, baseline = finding.rule, finding.baseline
            rows = await sql.fetch(_INSERT_RESULT, [
                organisation_id, pipeline.id, run.id, rule.id, rule.metric_field,
                finding.value, baseline.mean, baseline.std_dev, rule.z_threshold,
                finding.lower_bound, finding.upper_bound, baseline.points, now], conn)
            if not rows:  # flagged meanwhile by a concurrent detection of the same run
                continue
            result = AnomalyResult._init_from_db(**rows[0])
            created.append(result)
            await _alert(conn, run, pipeline, rule, result, hour)
        if created:
            flags = dict(locked.anomaly_flags or {})
            flags.update({result.metric_field: True for result in created})
            await Run.filter(id=run.id).using_db(conn).update(anomaly_flags=flags)
            run.anomaly_flags = flags
    return created


async def _alert(conn: BaseDBAsyncClient, run: Run, pipeline: Pipeline, rule: AnomalyRule,
                 result: AnomalyResult, hour: int) -> None:
    metric = result.metric_field
    direction = "above" if result.value > result.upper_bound else "below"
    message = (
        f"{metric} of execution {run.id} was {_number(result.value)}, {direction} the expected "
        f"range {result.lower_bound:.2f} to {result.upper_bound:.2f} (mean {result.mean:.2f} "
        f"+- {result.z_threshold:g} x std dev {result.std_dev:.2f}, from {result.points} "
        f"successful executions started at {hour:02d}:00-{hour:02d}:59 UTC in the "
        f"{rule.lookback_days} days before this one)")
    await alerts.enqueue_alert(
        conn, organisation_id=result.organisation_id,  # type: ignore[attr-defined]
        alert="anomaly", severity="warning",
        title=f"Anomaly in {pipeline.name}: {metric}", message=message,
        details={
            "pipelineId": str(pipeline.id), "pipelineName": pipeline.name,
            "runId": str(run.id), "ruleId": str(rule.id), "resultId": str(result.id),
            "metricField": metric, "value": result.value, "mean": result.mean,
            "stdDev": result.std_dev, "zThreshold": result.z_threshold,
            "lowerBound": result.lower_bound, "upperBound": result.upper_bound,
            "points": result.points, "lookbackDays": rule.lookback_days,
            "hourOfDay": hour, "startedAt": iso(run.started_at),
        })


# ----------------------------------------------------------------------------------------------
# unflag and results


async def unflag(*, caller: Caller, request: Unflag) -> int:
    """`POST /unflag_anomaly`: set `anomaly_flags[m] = false` for each requested metric that
    is flagged on the execution and delete its results, so that the execution counts in later
    baselines again. Returns how many metrics were unflagged; none at all is NotFound."""
    require_writer(caller)
    errors = Errors()
    pipeline_id = integer(request.pipeline_id, "pipeline_id", errors, required=True)
    run_id = integer(request.run_id, "pipeline_execution_id", errors, required=True)
    requested = request.metric_fields
    metrics: list[str] = []
    if requested is None:
        errors.add("metric_field", "field required")
    elif not isinstance(requested, list) or not requested:
        errors.add("metric_field", "metric_field must be a non-empty list of metric fields")
    else:
        for item in requested:
            metric = _metric(item, "metric_field", errors)
            if metric is not None and metric not in metrics:
                metrics.append(metric)
    errors.raise_any()
    if not (0 < run_id <= INT64_MAX and 0 < pipeline_id <= INT32_MAX):  # type: ignore[operator]
        raise NotFound("pipeline execution", run_id)
    async with in_transaction() as conn:
        run = await Run.filter(
            id=run_id, pipeline_id=pipeline_id, organisation_id=caller.organisation_id
        ).select_for_update().using_db(conn).first()
        if run is None:
            raise NotFound("pipeline execution", run_id)
        flags = dict(run.anomaly_flags or {})
        with_results = set(await AnomalyResult.filter(
            run_id=run.id, metric_field__in=metrics
        ).using_db(conn).values_list("metric_field", flat=True))
        flagged = [m for m in metrics if flags.get(m) is True or m in with_results]
        if not flagged:
            raise NotFound("anomaly", f"{', '.join(metrics)} of pipeline execution {run.id}")
        if with_results:
            await AnomalyResult.filter(
                run_id=run.id, metric_field__in=flagged).using_db(conn).delete()
        flags.update({m: False for m in flagged})
        await Run.filter(id=run.id).using_db(conn).update(anomaly_flags=flags)
    return len(flagged)


async def list_results(
    *, caller: Caller, pipeline_id: int | None = None, run_id: int | None = None,
    first: int | None = None, after: str | None = None,
) -> Page[AnomalyResult]:
    """An organisation's anomaly results, newest first, optionally of one pipeline or run."""
    caller.require_scope(Scope.READ)
    query = AnomalyResult.filter(organisation_id=caller.organisation_id)
    if pipeline_id is not None:
        query = query.filter(pipeline_id=pipeline_id if 0 < pipeline_id <= INT32_MAX else 0)
    if run_id is not None:
        query = query.filter(run_id=run_id if 0 < run_id <= INT64_MAX else 0)
    return await paginate(query, first=first, after=after, newest_first=True)
