"""Webhook endpoints and deliveries.

An organisation has at most one default endpoint and one per pipeline; a pipeline's endpoint
wins over the default. When a run first becomes terminal, `enqueue_run_event` writes a
delivery row in that transaction (nothing is sent inside a reporter's request); workers send
it signed the Standard Webhooks way and retry it with backoff (`runwatch/services/webhooks.py`).
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from runwatch.models import (
    DeliveryStatus,
    Organisation,
    Pipeline,
    Run,
    RunStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from runwatch.resolvers import sql
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.netguard import target_problem
from runwatch.resolvers.pagination import Page, paginate
from runwatch.resolvers.run_summary import eltpulse_status, summary_of

EVENT_TYPES = ("run.succeeded", "run.failed", "run.cancelled", "run.timed_out")
# What an endpoint gets when it names none: eltPulse's three events. `run.timed_out` is
# runwatch's own, sent only to an endpoint that asks for it (`run_event`).
DEFAULT_EVENT_TYPES = EVENT_TYPES[:3]
SECRET_PREFIX = "whsec_"
MAX_URL_CHARS = 2000
# A run that failed without a summary: eltPulse's runners send the final status, then the
# summary on a PATCH of its own a moment later. Its event is first sent this long after the
# failure, and a summary that arrives meanwhile goes into its body (`summary_arrived`).
SUMMARY_GRACE = timedelta(seconds=2)


def run_event(status: RunStatus, wanted: Collection[str]) -> str | None:
    """The event a run that became terminal with `status` sends to an endpoint that wants
    `wanted`, or None when it wants none of it. A run the reaper timed out is `run.timed_out`
    to an endpoint that asked for that event, and otherwise `run.failed` (with `timedOut:
    true`), as on eltPulse's REST wire: eltPulse's receivers know three events, and one that
    pages on `run.failed` must hear of a run that never finished."""
    status = RunStatus(status)
    if status == RunStatus.TIMED_OUT and "run.timed_out" in wanted:
        return "run.timed_out"
    event = f"run.{eltpulse_status(status)}"
    return event if event in wanted else None


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def run_payload(run: Run, *, pipeline_name: str, event: str) -> dict[str, Any]:
    """The body of a terminal-run event: the original service's fields, `timedOut` as on the
    ELT wire, and the run's telemetry summary when it reported any."""
    body: dict[str, Any] = {
        "event": event,
        "source": "eltpulse",  # eltPulse's reference marks its run events so
        "runId": str(run.id),
        "correlationId": run.correlation_id,
        "pipelineId": str(run.pipeline_id),  # type: ignore[attr-defined]
        "pipelineName": pipeline_name,
        "environment": run.environment,
        # `timed_out` in runwatch's own event, eltPulse's `failed` in the others (`run_event`)
        "status": (RunStatus.TIMED_OUT.value if event == "run.timed_out"
                   else eltpulse_status(run.status)),
        "timedOut": run.status == RunStatus.TIMED_OUT,
        "errorSummary": run.error,
        # a run cancelled before any claim started when it was created (eltPulse's rule)
        "startedAt": iso(run.started_at or run.created_at),
        "finishedAt": iso(run.finished_at),
    }
    summary = summary_of(run)
    if summary:
        body["telemetrySummary"] = summary
    return body


async def delivery_status_of(run_ids: list[int]) -> dict[int, str]:
    """The status of each run's latest webhook delivery (`pending`, `delivered`, `failed`);
    runs without one are left out. One query."""
    if not run_ids:
        return {}
    rows = await WebhookDelivery.filter(
        run_id__in=run_ids, endpoint_id__isnull=False
    ).order_by("id").values_list("run_id", "status")
    return {run_id: DeliveryStatus(status).value for run_id, status in rows}


async def enqueue_run_event(conn: BaseDBAsyncClient, run: Run, *, pipeline_name: str) -> bool:
    """In the transaction that made `run` terminal: a delivery for the endpoint that applies
    (the pipeline's, else the organisation's default) if it is enabled and wants the event.
    Returns whether one was enqueued."""
    rows = await sql.fetch(
        "SELECT id, pipeline_id, event_types, enabled FROM webhook_endpoint "
        "WHERE organisation_id = ? AND (pipeline_id = ? OR pipeline_id IS NULL)",
        [run.organisation_id, run.pipeline_id],  # type: ignore[attr-defined]
        conn,
    )
    if not rows:
        return False
    endpoint = max(rows, key=lambda r: r["pipeline_id"] is not None)  # the pipeline's wins
    event = run_event(run.status, _json_list(endpoint["event_types"]) or DEFAULT_EVENT_TYPES)
    if not endpoint["enabled"] or event is None:
        return False
    now = utcnow()
    awaits_summary = event == "run.failed" and run.error is None
    await WebhookDelivery.create(
        organisation_id=run.organisation_id,  # type: ignore[attr-defined]
        endpoint_id=endpoint["id"],
        run_id=run.id,
        event_type=event,
        message_id=new_message_id(),
        payload=run_payload(run, pipeline_name=pipeline_name, event=event),
        status=DeliveryStatus.PENDING,
        next_attempt_at=now + SUMMARY_GRACE if awaits_summary else now,
        using_db=conn,
    )
    return True


async def summary_arrived(conn: BaseDBAsyncClient, run: Run) -> None:
    """A finished run got its first `errorSummary` (in the transaction that set it): the body
    of its event takes it while the event waits out its grace (`SUMMARY_GRACE`) unclaimed.
    Once a worker may have sent it, the body stays as it is, so that every attempt carries
    the same signed body."""
    # Within its grace only: a delivery given back at a worker's shutdown (due at once, no
    # attempt counted) may have been POSTed already, and its body must stay as sent.
    unsent = "attempts = 0 AND claim IS NULL AND next_attempt_at > ?"
    now = utcnow()
    rows = await sql.fetch(
        "SELECT id, payload FROM webhook_delivery "
        f"WHERE run_id = ? AND endpoint_id IS NOT NULL AND {unsent}", [run.id, now], conn)
    for row in rows:
        payload = sql.as_json(row["payload"])
        if payload.get("errorSummary") is None:
            payload["errorSummary"] = run.error
            await sql.execute(
                f"UPDATE webhook_delivery SET payload = ? WHERE id = ? AND {unsent}",
                [sql.json_param(payload), row["id"], now], conn)


def _json_list(value: Any) -> list[str]:
    if isinstance(value, str):  # SQLite hands JSON back as text
        value = json.loads(value)
    return list(value or [])


def _event_types(value: Any) -> list[str]:
    if value is None:
        return list(DEFAULT_EVENT_TYPES)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidInput.one("event_types", "Expected a non-empty list of event types.")
    unknown = [v for v in value if v not in EVENT_TYPES]
    if unknown:
        raise InvalidInput.one(
            "event_types", f"Unknown event type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)}).")
    return sorted(set(value), key=EVENT_TYPES.index)


async def check_url(url: Any, *, allow_private: bool) -> str:
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput.one("url", "This field is required.")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput.one("url", f"At most {MAX_URL_CHARS} characters.")
    problem = await target_problem(url, allow_private=allow_private)
    if problem:
        raise InvalidInput.one("url", problem)
    return url


async def _pipeline_of(caller: Caller, pipeline_id: int | None) -> Pipeline | None:
    if pipeline_id is None:
        return None
    pipeline = await Pipeline.filter(
        id=pipeline_id, organisation_id=caller.organisation_id).first()
    if pipeline is None:
        raise NotFound("pipeline", pipeline_id)
    return pipeline


async def set_endpoint(
    *, caller: Caller, url: Any, pipeline_id: int | None = None, event_types: Any = None,
    enabled: bool | None = None, allow_private: bool,
) -> WebhookEndpoint:
    """Create or change the organisation's default endpoint (`pipeline_id` None) or a
    pipeline's. A new endpoint gets a new signing secret and, without `event_types`, the
    default events; a changed one keeps its secret and, without `event_types`, its events
    (eltPulse's settings page sends the URL alone)."""
    caller.require_scope(Scope.WRITE)
    pipeline = await _pipeline_of(caller, pipeline_id)
    url = await check_url(url, allow_private=allow_private)
    types = _event_types(event_types)  # checked before anything is written
    async with in_transaction() as conn:
        # The organisation's row serialises writers of its endpoints, so that two concurrent
        # PUTs of the default endpoint cannot both create one (NULLs are distinct in UNIQUE).
        await Organisation.filter(id=caller.organisation_id).select_for_update().using_db(
            conn).first()
        endpoint = await WebhookEndpoint.filter(
            organisation_id=caller.organisation_id,
            pipeline_id=pipeline.id if pipeline else None,
        ).using_db(conn).first()
        if endpoint is None:
            return await WebhookEndpoint.create(
                organisation_id=caller.organisation_id,
                pipeline_id=pipeline.id if pipeline else None,
                url=url, secret=new_secret(), event_types=types,
                enabled=True if enabled is None else enabled, using_db=conn)
        endpoint.url = url
        if event_types is not None:
            endpoint.event_types = types
        if enabled is not None:
            endpoint.enabled = enabled
        await endpoint.save(using_db=conn)
        return endpoint


def require_viewer(caller: Caller) -> None:
    """The one rule of every read of webhook endpoints, REST and GraphQL (by id, the list, a
    pipeline's own, eltPulse's settings page): `read`, or `write` (which may set them). Their
    signing secret is `write`'s alone, wherever it is shown."""
    if not caller.has(Scope.WRITE):
        caller.require_scope(Scope.READ)


async def get_endpoint(*, caller: Caller, endpoint_id: int) -> WebhookEndpoint:
    require_viewer(caller)
    return await _endpoint(caller, endpoint_id)


async def _endpoint(caller: Caller, endpoint_id: int) -> WebhookEndpoint:
    """The organisation's endpoint, for a caller whose scope was checked already."""
    row = await WebhookEndpoint.filter(
        id=endpoint_id, organisation_id=caller.organisation_id).first()
    if row is None:
        raise NotFound("webhook endpoint", endpoint_id)
    return row


async def endpoint_for(*, caller: Caller, pipeline_id: int | None) -> WebhookEndpoint | None:
    """The organisation's default endpoint, or a pipeline's own (None when it has none).
    Readable with `read`, and with `write` (which may set it, secret included)."""
    require_viewer(caller)
    pipeline = await _pipeline_of(caller, pipeline_id)
    return await WebhookEndpoint.filter(
        organisation_id=caller.organisation_id, pipeline_id=pipeline.id if pipeline else None
    ).first()


SETTINGS_PIPELINES_MAX = 1000


async def settings_pipeline(*, caller: Caller, pipeline_id: int) -> Pipeline:
    """A pipeline, for its webhook settings (readable with `read` or `write`)."""
    require_viewer(caller)
    pipeline = await _pipeline_of(caller, pipeline_id)
    assert pipeline is not None
    return pipeline


async def pipeline_urls(*, caller: Caller) -> list[tuple[Pipeline, str | None]]:
    """The organisation's ELT pipelines (oldest first, at most SETTINGS_PIPELINES_MAX), each
    with its own endpoint's URL (None without one): eltPulse's webhook settings page. Two
    queries."""
    require_viewer(caller)
    rows = await Pipeline.filter(organisation_id=caller.organisation_id, kind="elt").order_by(
        "id").limit(SETTINGS_PIPELINES_MAX)
    urls = dict(await WebhookEndpoint.filter(
        organisation_id=caller.organisation_id, pipeline_id__in=[p.id for p in rows]
    ).values_list("pipeline_id", "url")) if rows else {}
    return [(p, urls.get(p.id)) for p in rows]


async def list_endpoints(
    *, caller: Caller, first: int | None = None, after: str | None = None
) -> Page[WebhookEndpoint]:
    require_viewer(caller)
    return await paginate(WebhookEndpoint.filter(organisation_id=caller.organisation_id),
                          first=first, after=after, newest_first=False)


async def delete_endpoint(*, caller: Caller, endpoint_id: int) -> int:
    """Delete an endpoint and its delivery history; returns its id."""
    caller.require_scope(Scope.WRITE)
    deleted = await WebhookEndpoint.filter(
        id=endpoint_id, organisation_id=caller.organisation_id).delete()
    if not deleted:
        raise NotFound("webhook endpoint", endpoint_id)
    return endpoint_id


async def remove_endpoint_for(*, caller: Caller, pipeline_id: int | None) -> None:
    """Remove the default endpoint or a pipeline's (nothing to remove is fine)."""
    caller.require_scope(Scope.WRITE)
    pipeline = await _pipeline_of(caller, pipeline_id)
    await WebhookEndpoint.filter(
        organisation_id=caller.organisation_id, pipeline_id=pipeline.id if pipeline else None
    ).delete()


async def rotate_secret(*, caller: Caller, endpoint_id: int) -> WebhookEndpoint:
    """A new signing secret; deliveries sent from now on are signed with it."""
    caller.require_scope(Scope.WRITE)
    endpoint = await _endpoint(caller, endpoint_id)
    endpoint.secret = new_secret()
    await endpoint.save(update_fields=["secret", "updated_at"])
    return endpoint


@dataclass(frozen=True)
class DeliveryFilter:
    endpoint_id: int | None = None
    run_id: int | None = None
    status: DeliveryStatus | None = None


async def list_deliveries(
    *, caller: Caller, where: DeliveryFilter = DeliveryFilter(), first: int | None = None,
    after: str | None = None,
) -> Page[WebhookDelivery]:
    """Deliveries newest first (an endpoint's, a run's, by status)."""
    caller.require_scope(Scope.READ)
    query = WebhookDelivery.filter(organisation_id=caller.organisation_id)
    if where.endpoint_id is not None:
        query = query.filter(endpoint_id=where.endpoint_id)
    if where.run_id is not None:
        query = query.filter(run_id=where.run_id)
    if where.status is not None:
        query = query.filter(status=where.status)
    return await paginate(query, first=first, after=after, newest_first=True)


async def get_delivery(*, caller: Caller, delivery_id: int) -> WebhookDelivery:
    caller.require_scope(Scope.READ)
    return await _delivery(caller, delivery_id)


async def _delivery(caller: Caller, delivery_id: int) -> WebhookDelivery:
    row = await WebhookDelivery.filter(
        id=delivery_id, organisation_id=caller.organisation_id).first()
    if row is None:
        raise NotFound("webhook delivery", delivery_id)
    return row


async def attempts_of(
    *, caller: Caller, delivery_ids: list[int]
) -> dict[int, list[WebhookAttempt]]:
    """Every attempt of these deliveries (of the caller's organisation), oldest first."""
    caller.require_scope(Scope.READ)
    found: dict[int, list[WebhookAttempt]] = {i: [] for i in delivery_ids}
    for attempt in await WebhookAttempt.filter(
        delivery_id__in=delivery_ids, delivery__organisation_id=caller.organisation_id
    ).order_by("delivery_id", "id"):
        found[attempt.delivery_id].append(attempt)  # type: ignore[attr-defined]
    return found


async def redeliver(
    *, caller: Caller, delivery_id: int, now: datetime | None = None
) -> WebhookDelivery:
    """Send a delivery again as soon as a worker is free, whatever its state: the same event
    with the same `webhook-id`, so a receiver that did process it can tell."""
    caller.require_scope(Scope.WRITE)
    delivery = await _delivery(caller, delivery_id)
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now or utcnow()
    delivery.claim = None
    await delivery.save(update_fields=["status", "next_attempt_at", "claim"])
    return delivery
