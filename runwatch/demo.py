"""`runwatch demo`: a realistic organisation to look around in, made through the domain's own
functions (the same validation, roll-ups, webhooks and anomaly detection as real traffic).

What it makes, all in a new organisation named "demo":

- three warehouse connections, each with its delivery pipeline and a week of runs every four
  hours: `warehouse-prod` healthy, whose latest run delivered ten times its usual events (an
  anomaly, detected by an `events_delivered` rule); `analytics-bq` degraded (two failures in
  the last day, the latest run fine); `legacy-redshift` failing (its last three runs failed),
  plus one run still in progress;
- two ELT pipelines with a daily run each for the week, with log lines and telemetry samples,
  one of the runs failed, and their lineage (shop and CRM tables into analytics tables);
- a default webhook endpoint at `http://127.0.0.1:9/runwatch-demo` (nothing listens there, so
  its deliveries fail visibly without any traffic leaving the machine: point it at a real
  receiver with `setWebhookEndpoint`), and an alert channel.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from runwatch.models import LogLevel, RunStatus
from runwatch.resolvers.addresses import AddressInput, LineageInput, create_lineage
from runwatch.resolvers.alerts import create_channel
from runwatch.resolvers.anomalies import RuleInput, detect_for_run, get_or_create_rule
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.connections import create_connection
from runwatch.resolvers.elt_runs import NewRun, create_run, update_run
from runwatch.resolvers.organisations import create_organisation
from runwatch.resolvers.pipelines import PipelineFields, create_pipeline, update_pipeline
from runwatch.resolvers.run_input import LogEntry, RunChange, Sample, SummaryPatch
from runwatch.resolvers.runs import RunReport, report_run, start_run
from runwatch.resolvers.tokens import create_token
from runwatch.resolvers.webhooks import set_endpoint

WEEK = timedelta(days=7)
EVERY = timedelta(hours=4)
WEBHOOK_URL = "http://127.0.0.1:9/runwatch-demo"


# History is written in a moment: each run is started days ago and finished a few statements
# later. A reaper on the same database (a running server) must not take one for an orphan in
# between (its deadline long past, its report would be a 409), so their deadline is far off.
HISTORY_MAX_RUNTIME = timedelta(days=30)

async def _deliveries(caller: Caller, connection_id: int, now: datetime, rng: random.Random,
                      *, usual: int, failing: set[int], outlier: bool = False,
                      error: str = "COPY failed") -> list[int]:
    """A week of runs every four hours ending before `now`; `failing`: indices (counted from
    the latest, 0) that fail; `outlier`: the latest delivers ten times the usual."""
    start = now.replace(minute=0, second=0, microsecond=0) - WEEK
    starts = []
    moment = start
    while moment + timedelta(minutes=20) < now:
        starts.append(moment)
        moment += EVERY
    ids = []
    for i, started in enumerate(starts):
        from_latest = len(starts) - 1 - i
        run = await start_run(caller=caller, connection_id=connection_id, started_at=started,
                              now=now, default_max_runtime=HISTORY_MAX_RUNTIME)
        events = int(usual * rng.uniform(0.9, 1.1))
        if outlier and from_latest == 0:
            events = usual * 10
        failed = from_latest in failing
        evaluations = int(events * 0.93)
        await report_run(caller=caller, run_id=run.id, now=now, report=RunReport(
            completed_at=started + timedelta(minutes=rng.randint(4, 15)),
            events_delivered=0 if failed else events,
            batches_dlq=rng.randint(1, 4) if failed else 0,
            error=error if failed else None,
            evaluations=0 if failed else evaluations,
            custom_events=0 if failed else events - evaluations))
        ids.append(run.id)
    return ids


async def _elt_week(caller: Caller, pipeline_id: int, now: datetime, rng: random.Random,
                    *, fail_day: int | None) -> None:
    for day in range(7, 0, -1):
        started = (now - timedelta(days=day)).replace(hour=2, minute=0, second=0,
                                                      microsecond=0)
        run = await create_run(caller=caller, now=started, new=NewRun(
            pipeline_id=pipeline_id, status=RunStatus.RUNNING, triggered_by="schedule",
            environment="production"), default_max_runtime=HISTORY_MAX_RUNTIME)
        rows = rng.randint(80_000, 120_000)
        for step, message in enumerate([
                "extract: reading orders since the last watermark",
                f"extract: {rows} rows read",
                "load: merging into analytics.orders"]):
            at = started + timedelta(minutes=step * 3)
            await update_run(caller=caller, run_id=run.id, now=at, change=RunChange(
                append_log=LogEntry(at=at, level=LogLevel.INFO, message=message),
                append_sample=Sample(at=at, rows=rows * (step + 1) // 3,
                                     phase="load" if step == 2 else "extract",
                                     progress=(step + 1) / 3)))
        finished = started + timedelta(minutes=11)
        if day == fail_day:
            await update_run(caller=caller, run_id=run.id, now=finished, change=RunChange(
                append_log=LogEntry(at=finished, level=LogLevel.ERROR,
                                    message="load: deadlock detected on analytics.orders"),
                status=RunStatus.FAILED, finished_at=finished,
                error_summary="deadlock detected on analytics.orders"))
        else:
            await update_run(caller=caller, run_id=run.id, now=finished, change=RunChange(
                status=RunStatus.SUCCEEDED, finished_at=finished,
                summary=SummaryPatch(rows=rows, document={"progress": 1})))


async def seed_demo(*, now: datetime | None = None, seed: int = 12) -> tuple[int, str]:
    """Make the demo organisation; returns (its id, an admin token for it, shown once)."""
    now = now or datetime.now(UTC)
    rng = random.Random(seed)
    org = await create_organisation(name="demo")
    caller = Caller(organisation_id=org.id, scopes=frozenset({Scope.ADMIN}))
    issued = await create_token(organisation_id=org.id, scopes="admin", name="demo admin")

    # deliveries made from here on go to the endpoint (and fail: nothing listens there)
    await set_endpoint(caller=caller, url=WEBHOOK_URL, allow_private=True)
    await create_channel(caller=caller, name="on-call", kind="webhook",
                         url="http://127.0.0.1:9/runwatch-demo-alerts", allow_private=True)

    prod = await create_connection(caller=caller, name="warehouse-prod",
                                   warehouse_type="snowflake",
                                   settings={"account": "acme-eu", "database": "EVENTS"})
    await get_or_create_rule(caller=caller, rule=RuleInput(
        pipeline_id=await _delivery_pipeline(prod.id), metric_field="events_delivered",
        minimum_executions=5, lookback_days=30, z_threshold=3.0))
    prod_runs = await _deliveries(caller, prod.id, now, rng, usual=150_000, failing={9, 20},
                                  outlier=True)
    await detect_for_run(organisation_id=org.id, run_id=prod_runs[-1])

    bq = await create_connection(caller=caller, name="analytics-bq", warehouse_type="bigquery",
                                 settings={"project": "acme-analytics", "dataset": "events"})
    await _deliveries(caller, bq.id, now, rng, usual=40_000, failing={1, 3},
                      error="quota exceeded: too many table update operations")
    redshift = await create_connection(caller=caller, name="legacy-redshift",
                                       warehouse_type="redshift",
                                       settings={"cluster": "legacy-1", "database": "dw"})
    await _deliveries(caller, redshift.id, now, rng, usual=9_000, failing={0, 1, 2},
                      error="COPY failed: permission denied for relation events")
    await start_run(caller=caller, connection_id=redshift.id,
                    started_at=now - timedelta(minutes=3), now=now)

    orders = await create_pipeline(caller=caller, fields=PipelineFields(
        name="orders-to-warehouse", description="Nightly orders extract and merge"))
    customers = await create_pipeline(caller=caller, fields=PipelineFields(
        name="customers-sync", description="CRM customers into the warehouse"))
    await _elt_week(caller, orders.id, now, rng, fail_day=3)
    await _elt_week(caller, customers.id, now, rng, fail_day=None)
    # its maximum once its history is written (a pipeline's maximum outranks the history's)
    await update_pipeline(caller=caller, pipeline_id=orders.id,
                          fields=PipelineFields(max_runtime_seconds=3600))
    for pipeline_id, sources, targets in (
            (orders.id, ["shop.public.orders", "shop.public.order_items"],
             ["analytics.core.orders"]),
            (customers.id, ["crm.public.accounts"], ["analytics.core.customers"])):
        await create_lineage(caller=caller, lineage=LineageInput(
            pipeline_id=pipeline_id, sources=[_address(name) for name in sources],
            targets=[_address(name) for name in targets]))
    return org.id, issued.token


def _address(name: str) -> AddressInput:
    return AddressInput(name=name, address_type_name="postgres",
                        address_type_group_name="database")


async def _delivery_pipeline(connection_id: int) -> int:
    from runwatch.models import Pipeline

    pipeline = await Pipeline.get(connection_id=connection_id, kind="delivery")
    return pipeline.id
