"""Webhook delivery end to end: a real receiver on loopback, Standard Webhooks signatures
checked with the reference library, retries on the schedule, exhaustion and redelivery,
concurrent workers, one delivery per terminal run from every path, endpoint selection,
SSRF refusals, slow receivers, and tenancy."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from types import SimpleNamespace

import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from tortoise import connections
from tortoise.transactions import in_transaction

from runwatch.models import (
    DeliveryStatus,
    Pipeline,
    Run,
    RunStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from runwatch.resolvers import dbfaults, elt_runs, pipelines, queue, signals, sql, webhooks
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso as clock_iso
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.run_input import RunChange
from runwatch.services import webhooks as webhook_service
from runwatch.services.reaper import reap_stuck_runs
from runwatch.services.webhooks import (
    MAX_ATTEMPTS,
    RETRY_SCHEDULE,
    Result,
    Sender,
    claim_due,
    record,
)
from tests.conftest import Tenant
from tests.helpers import create_connection, iso, report, start_run
from tests.webhook_receiver import DROP, Answer, Receiver

PAYLOAD_KEYS = {"event", "runId", "correlationId", "pipelineId", "pipelineName", "environment",
                "status", "errorSummary", "startedAt", "finishedAt",
                "source", "runUrl",  # eltPulse's reference's (runUrl: added when sent)
                "timedOut"}  # runwatch's, as on the ELT wire
# How much later than `RETRY_SCHEDULE[i] * 1.1` a retry may be due: the attempt's own duration
# plus the time between its start and the write of its result.
SLACK = timedelta(seconds=2)

# ----------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver.running() as r:
        yield r


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    s = Sender(timeout=5, allow_private=True, concurrency=4)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
def other_caller(other_tenant: Tenant) -> Caller:
    return Caller(organisation_id=other_tenant.org_id, scopes=frozenset({Scope.ADMIN}))


async def new_pipeline(caller: Caller, name: str = "orders", **raw) -> Pipeline:
    return await pipelines.create_pipeline(
        caller=caller, fields=pipelines.PipelineFields(name=name, **raw))


async def new_endpoint(caller: Caller, url: str, **options) -> WebhookEndpoint:
    return await webhooks.set_endpoint(caller=caller, url=url, allow_private=True, **options)


async def running_run(caller: Caller, pipeline: Pipeline, **raw) -> Run:
    return await elt_runs.create_run(caller=caller, new=elt_runs.NewRun(
        pipeline_id=pipeline.id, status=RunStatus.RUNNING, **raw))


async def finish(caller: Caller, run: Run, status: RunStatus = RunStatus.SUCCEEDED,
                 **change) -> Run:
    return await elt_runs.update_run(
        caller=caller, run_id=run.id, change=RunChange(status=status, **change))


async def one_delivery(**filters) -> WebhookDelivery:
    rows = await WebhookDelivery.filter(**filters)
    assert len(rows) == 1, rows
    return rows[0]


async def attempts_of(delivery: WebhookDelivery) -> list[WebhookAttempt]:
    return await WebhookAttempt.filter(delivery_id=delivery.id).order_by("id")


def verify(secret: str, request) -> dict:
    return Webhook(secret).verify(request.body, request.headers)


def later(**delta) -> datetime:
    return utcnow() + timedelta(**delta)


# ----------------------------------------------------------------------------------------------
# the happy path: signed, the contract's body, exactly once


async def test_delivered_once_signed_with_the_contract_body(
    client, tenant, caller, receiver, sender
):
    pipeline = await new_pipeline(caller)
    r = await client.put("/api/elt/runs/webhook", json={"url": receiver.url + "/hook"},
                         headers=tenant.headers("write"))
    assert r.status_code == 200, r.text
    secret = r.json()["webhook"]["secret"]
    assert secret.startswith("whsec_")

    r = await client.post("/api/elt/runs", headers=tenant.headers("write"), json={
        "pipelineId": str(pipeline.id), "status": "running", "environment": "prod",
        "correlationId": "nightly-2026-01-31"})
    assert r.status_code == 201, r.text
    run_id = r.json()["run"]["id"]
    r = await client.patch(f"/api/elt/runs/{run_id}", headers=tenant.headers("write"),
                           json={"telemetrySummary": {"rowsLoaded": 42, "progress": 50}})
    assert r.status_code == 200, r.text
    r = await client.patch(f"/api/elt/runs/{run_id}", headers=tenant.headers("write"),
                           json={"status": "failed", "errorSummary": "boom"})
    assert r.status_code == 200, r.text
    assert receiver.requests == []  # nothing is sent inside the reporter's request

    assert await sender.deliver_due() == 1
    assert await sender.deliver_due() == 0
    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"].startswith("msg_")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["user-agent"] == "eltPulse-Runs/1"  # eltPulse's receivers key on it

    body = verify(secret, request)
    assert json.loads(request.body) == body
    run = (await client.get(f"/api/elt/runs/{run_id}", headers=tenant.headers("read"))).json()[
        "run"]
    assert set(body) == PAYLOAD_KEYS | {"telemetrySummary"}
    assert body == {
        "event": "run.failed", "runId": run_id, "correlationId": "nightly-2026-01-31",
        "pipelineId": str(pipeline.id), "pipelineName": "orders", "environment": "prod",
        "status": "failed", "timedOut": False, "errorSummary": "boom",
        "startedAt": run["startedAt"],
        "finishedAt": run["finishedAt"], "telemetrySummary": run["telemetry"]["summary"],
        "source": "eltpulse", "runUrl": None,  # no RUNWATCH_PUBLIC_URL here
    }
    assert body["telemetrySummary"]["rowsLoaded"] == 42
    assert body["startedAt"] and body["finishedAt"]

    delivery = await one_delivery()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.message_id == request.headers["webhook-id"]
    assert delivery.attempts == 1 and delivery.delivered_at is not None
    assert delivery.next_attempt_at is None and delivery.claim is None
    assert delivery.last_status_code == 200 and delivery.last_error is None
    [attempt] = await attempts_of(delivery)
    assert attempt.status_code == 200 and attempt.error is None
    assert attempt.duration_ms >= 0 and attempt.response_excerpt == "ok"


async def test_run_url_under_the_public_url(caller, receiver):
    """With `RUNWATCH_PUBLIC_URL` set, a run event links to its run (signed with the rest)."""
    pipeline = await new_pipeline(caller)
    endpoint = await new_endpoint(caller, receiver.url)
    run = await running_run(caller, pipeline)
    await finish(caller, run)
    linked = Sender(timeout=5, allow_private=True, concurrency=2,
                    public_url="https://runwatch.example.com")
    try:
        assert await linked.deliver_due() == 1
    finally:
        await linked.aclose()
    [request] = receiver.requests
    body = verify(endpoint.secret, request)
    assert body["runUrl"] == f"https://runwatch.example.com/api/elt/runs/{run.id}"
    assert body["source"] == "eltpulse"


async def test_signature_fails_on_tampering_and_other_secrets(caller, receiver, sender):
    pipeline = await new_pipeline(caller)
    endpoint = await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    assert await sender.deliver_due() == 1
    [request] = receiver.requests
    body = verify(endpoint.secret, request)
    assert body["event"] == "run.succeeded" and body["status"] == "succeeded"
    assert "telemetrySummary" not in body  # the run reported none
    assert set(body) == PAYLOAD_KEYS
    # a run created without one gets a UUID (eltPulse's reference)
    assert body["errorSummary"] is None and len(body["correlationId"]) == 36
    assert body["environment"] == "default"

    tampered = request.body.replace(b'"succeeded"', b'"failed"')
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint.secret).verify(tampered, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint.secret).verify(request.body + b" ", request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(request.body, request.headers)
    other_id = {**request.headers, "webhook-id": webhooks.new_message_id()}
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint.secret).verify(request.body, other_id)


async def test_rotated_secret_signs_what_is_sent_afterwards(caller, receiver, sender):
    pipeline = await new_pipeline(caller)
    endpoint = await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    rotated = await webhooks.rotate_secret(caller=caller, endpoint_id=endpoint.id)
    assert rotated.secret != endpoint.secret
    assert await sender.deliver_due() == 1
    [request] = receiver.requests
    verify(rotated.secret, request)
    with pytest.raises(WebhookVerificationError):
        verify(endpoint.secret, request)


# ----------------------------------------------------------------------------------------------
# retries, exhaustion, redelivery


@pytest.mark.parametrize("second", [DROP, 503], ids=["connection-dropped", "503"])
async def test_retried_on_the_schedule_with_the_same_id(caller, receiver, sender, second):
    receiver.plan = [500, second, 200]
    pipeline = await new_pipeline(caller)
    endpoint = await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline), RunStatus.CANCELLED)
    delivery = await one_delivery()

    assert await sender.deliver_due() == 1
    await delivery.refresh_from_db()
    [first] = await attempts_of(delivery)
    assert first.status_code == 500 and first.error == "HTTP 500"
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.last_status_code == 500 and delivery.claim is None
    wait = delivery.next_attempt_at - first.attempted_at
    assert RETRY_SCHEDULE[0] * 0.9 <= wait <= RETRY_SCHEDULE[0] * 1.1 + SLACK, wait

    assert await sender.deliver_due() == 0  # not due yet
    assert len(receiver.requests) == 1
    assert await sender.deliver_due(now=later(seconds=6)) == 1
    await delivery.refresh_from_db()
    _, middle = await attempts_of(delivery)
    if second is DROP:
        assert middle.status_code is None and middle.error
    else:
        assert middle.status_code == 503 and middle.error == "HTTP 503"
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 2
    wait = delivery.next_attempt_at - middle.attempted_at
    assert RETRY_SCHEDULE[1] * 0.9 <= wait <= RETRY_SCHEDULE[1] * 1.1 + SLACK, wait

    assert await sender.deliver_due(now=later(seconds=10)) == 0
    assert await sender.deliver_due(now=later(minutes=6)) == 1
    await delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 3
    assert delivery.next_attempt_at is None and delivery.last_error is None
    attempts = await attempts_of(delivery)
    assert [a.status_code for a in attempts][::2] == [500, 200]
    assert all(a.duration_ms >= 0 for a in attempts)
    assert attempts[0].attempted_at < attempts[1].attempted_at < attempts[2].attempted_at

    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery.message_id}
    assert len({r.body for r in receiver.requests}) == 1  # the body is frozen
    assert verify(endpoint.secret, receiver.requests[-1])["event"] == "run.cancelled"
    assert await sender.deliver_due(now=later(days=2)) == 0


async def test_exhausted_then_redelivered_with_the_same_id(caller, receiver, sender):
    receiver.plan = [500] * MAX_ATTEMPTS
    pipeline = await new_pipeline(caller)
    endpoint = await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    delivery = await one_delivery()
    assert MAX_ATTEMPTS == 8

    for n in range(1, MAX_ATTEMPTS + 1):
        assert await sender.deliver_due(now=later(hours=12)) == 1, n
        await delivery.refresh_from_db()
        assert delivery.attempts == n
        if n < MAX_ATTEMPTS:
            assert delivery.status == DeliveryStatus.PENDING
            last = (await attempts_of(delivery))[-1]
            wait = delivery.next_attempt_at - last.attempted_at
            base = RETRY_SCHEDULE[n - 1]
            assert base * 0.9 <= wait <= base * 1.1 + SLACK, (n, wait)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.next_attempt_at is None and delivery.last_status_code == 500
    assert len(await attempts_of(delivery)) == MAX_ATTEMPTS
    assert await sender.deliver_due(now=later(days=30)) == 0
    assert len(receiver.requests) == MAX_ATTEMPTS

    redelivered = await webhooks.redeliver(caller=caller, delivery_id=delivery.id)
    assert redelivered.status == DeliveryStatus.PENDING
    await delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.claim is None
    assert delivery.next_attempt_at <= utcnow()
    assert await sender.deliver_due() == 1
    await delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert len(receiver.requests) == MAX_ATTEMPTS + 1
    assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery.message_id}
    verify(endpoint.secret, receiver.requests[-1])


async def test_redelivering_a_delivered_one_sends_it_again(caller, receiver, sender):
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    assert await sender.deliver_due() == 1
    delivery = await one_delivery(status=DeliveryStatus.DELIVERED)
    await webhooks.redeliver(caller=caller, delivery_id=delivery.id)
    assert await sender.deliver_due() == 1
    assert [r.headers["webhook-id"] for r in receiver.requests] == [delivery.message_id] * 2


async def test_disabled_after_enqueue_is_not_sent(caller, receiver, sender):
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    endpoint = await webhooks.endpoint_for(caller=caller, pipeline_id=None)
    changed = await new_endpoint(caller, receiver.url + "/v2", enabled=False)
    assert changed.id == endpoint.id and changed.secret == endpoint.secret  # kept on change
    assert await sender.deliver_due() == 1
    assert receiver.requests == []
    delivery = await one_delivery()
    assert delivery.status == DeliveryStatus.FAILED
    [attempt] = await attempts_of(delivery)
    assert attempt.status_code is None and "disabled" in attempt.error


async def test_redirects_are_not_followed(caller, receiver, sender):
    receiver.plan = [Answer(302, headers={"location": "http://169.254.169.254/latest/"})]
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    assert await sender.deliver_due() == 1
    assert len(receiver.requests) == 1
    delivery = await one_delivery()
    assert delivery.status == DeliveryStatus.PENDING and delivery.last_status_code == 302
    [attempt] = await attempts_of(delivery)
    assert attempt.status_code == 302 and attempt.error == "HTTP 302"


# ----------------------------------------------------------------------------------------------
# concurrent workers


@pytest.mark.parametrize("attempt", range(5))
async def test_two_senders_race_for_one_delivery(caller, receiver, attempt):
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    first = Sender(timeout=5, allow_private=True, concurrency=4)
    second = Sender(timeout=5, allow_private=True, concurrency=4)
    try:
        sent = await asyncio.wait_for(
            asyncio.gather(first.deliver_due(), second.deliver_due()), 10)
    finally:
        await first.aclose()
        await second.aclose()
    assert sorted(sent) == [0, 1]
    assert len(receiver.requests) == 1
    delivery = await one_delivery(status=DeliveryStatus.DELIVERED)
    assert delivery.attempts == 1 and len(await attempts_of(delivery)) == 1


@pytest.mark.parametrize("attempt", range(5))
async def test_concurrent_claims_take_each_delivery_once(caller, receiver, attempt):
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    for _ in range(3):
        await finish(caller, await running_run(caller, pipeline))
    hold = timedelta(seconds=60)
    claims = await asyncio.wait_for(asyncio.gather(
        *(claim_due(limit=2, hold=hold) for _ in range(4))), 10)
    taken = [c.id for batch in claims for c in batch]
    assert sorted(taken) == sorted(d.id for d in await WebhookDelivery.all())
    assert len({c.claim for batch in claims for c in batch}) == len([b for b in claims if b])
    assert await claim_due(limit=10, hold=hold) == []


async def test_two_senders_share_many_deliveries(caller, receiver, sender):
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    for _ in range(7):
        await finish(caller, await running_run(caller, pipeline))
    other = Sender(timeout=5, allow_private=True, concurrency=4)
    try:
        sent = await asyncio.wait_for(
            asyncio.gather(sender.deliver_due(), other.deliver_due(), sender.deliver_due()), 10)
    finally:
        await other.aclose()
    assert sum(sent) == 7
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert sorted(ids) == sorted(d.message_id for d in await WebhookDelivery.all())
    assert await WebhookDelivery.filter(status=DeliveryStatus.DELIVERED).count() == 7
    assert await WebhookAttempt.all().count() == 7


async def test_a_dead_workers_claim_delays_the_delivery_until_it_expires(
    caller, receiver, sender
):
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    now = utcnow()
    [dead] = await claim_due(limit=10, hold=timedelta(seconds=60), now=now)  # then it "dies"

    assert await sender.deliver_due(now=now + timedelta(seconds=30)) == 0
    assert await sender.deliver_due(now=now + timedelta(seconds=59)) == 0
    assert receiver.requests == []
    assert await sender.deliver_due(now=now + timedelta(seconds=61)) == 1
    [request] = receiver.requests
    assert request.headers["webhook-id"] == dead.message_id
    delivery = await one_delivery(status=DeliveryStatus.DELIVERED)

    # The dead worker coming back late cannot overwrite the result.
    stored = await record(dead, Result(500, 1, "HTTP 500", None), attempted_at=utcnow())
    assert stored is False
    await delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1
    assert delivery.last_status_code == 200
    assert await sender.deliver_due(now=now + timedelta(days=2)) == 0


# ----------------------------------------------------------------------------------------------
# the database lost mid-delivery: a claimed delivery is sent, or given back at once


def lost_connection() -> Exception:
    return asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")


def failing(times: int, step):
    """`step`, failing the first `times` calls as if the database connection were lost."""
    calls = {"n": 0}

    async def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= times:
            raise lost_connection()
        return await step(*args, **kwargs)

    wrapped.calls = calls
    return wrapped


@pytest.fixture
async def due_delivery(caller, receiver, monkeypatch):
    """One finished run's delivery, due, for the receiver; the workers' retries without the
    pauses."""
    monkeypatch.setattr(dbfaults, "RETRY_DELAY", 0.01)
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))


async def test_a_lost_connection_before_the_send_is_retried(
    receiver, sender, monkeypatch, due_delivery
):
    lookup = failing(2, webhook_service.target_of)
    monkeypatch.setattr(webhook_service, "target_of", lookup)

    assert await sender.deliver_due() == 1
    assert lookup.calls["n"] == 3 and len(receiver.requests) == 1
    delivery = await one_delivery(status=DeliveryStatus.DELIVERED)
    assert delivery.attempts == 1 and delivery.claim is None


async def test_a_delivery_the_database_keeps_failing_is_given_back_unsent(
    receiver, sender, monkeypatch, due_delivery
):
    monkeypatch.setattr(webhook_service, "target_of", failing(100, webhook_service.target_of))

    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await sender.deliver_due()
    assert receiver.requests == []
    delivery = await one_delivery()
    # not held for `sender.hold` (35 s) but due again now, with no attempt counted
    assert delivery.status == DeliveryStatus.PENDING and delivery.claim is None
    assert delivery.attempts == 0 and delivery.next_attempt_at <= later(seconds=1)
    assert await attempts_of(delivery) == []

    monkeypatch.undo()
    assert await sender.deliver_due() == 1
    assert len(receiver.requests) == 1
    assert (await one_delivery()).status == DeliveryStatus.DELIVERED


async def test_a_claim_whose_answer_was_lost_after_its_commit_is_still_this_workers(
    receiver, sender, monkeypatch, due_delivery
):

    @contextlib.asynccontextmanager
    async def committed_then_lost():
        async with in_transaction() as tx:
            yield tx
        raise lost_connection()  # committed, but the worker never heard

    monkeypatch.setattr(queue, "in_transaction", committed_then_lost)
    [claimed] = await claim_due(limit=10, hold=timedelta(seconds=60))
    monkeypatch.undo()
    assert await claim_due(limit=10, hold=timedelta(seconds=60)) == []  # held, by this claim
    await sender.send(claimed)
    assert len(receiver.requests) == 1
    assert (await one_delivery()).status == DeliveryStatus.DELIVERED


async def test_recording_a_result_outlasts_a_lost_connection_without_a_second_attempt(
    receiver, sender, monkeypatch, due_delivery
):

    calls = {"n": 0}

    async def commit_then_lose(delivery, result, **kwargs):
        """The first call is stored but its answer is lost (a kill during COMMIT)."""
        calls["n"] += 1
        stored = await record(delivery, result, **kwargs)
        if calls["n"] == 1:
            raise lost_connection()
        return stored

    monkeypatch.setattr(webhook_service, "record", commit_then_lose)
    assert await sender.deliver_due() == 1
    assert calls["n"] == 2 and len(receiver.requests) == 1
    delivery = await one_delivery(status=DeliveryStatus.DELIVERED)
    assert delivery.attempts == 1 and len(await attempts_of(delivery)) == 1


# ----------------------------------------------------------------------------------------------
# exactly one delivery per run becoming terminal


async def rest_patch(client, tenant: Tenant, run_id, **body) -> httpx.Response:
    return await client.patch(f"/api/elt/runs/{run_id}", json=body,
                              headers=tenant.headers("write"))


@pytest.mark.parametrize(("start", "status"), [
    ("running", "succeeded"), ("running", "failed"), ("running", "cancelled"),
    ("pending", "cancelled"),
])
async def test_one_delivery_per_terminal_patch(client, tenant, caller, receiver, sender,
                                               start, status):
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    run = await elt_runs.create_run(caller=caller, new=elt_runs.NewRun(
        pipeline_id=pipeline.id, status=RunStatus(start)))
    body = {"status": status, **({"errorSummary": "boom"} if status == "failed" else {})}
    r = await rest_patch(client, tenant, run.id, **body)
    assert r.status_code == 200, r.text
    finished_at = r.json()["run"]["finishedAt"]
    for _ in range(2):  # replays change nothing and enqueue nothing
        r = await rest_patch(client, tenant, run.id, **body)
        assert r.status_code == 200, r.text
        assert r.json()["run"]["finishedAt"] == finished_at
    delivery = await one_delivery(run_id=run.id)
    assert delivery.event_type == f"run.{status}"
    assert delivery.payload["event"] == f"run.{status}"
    assert delivery.payload["status"] == status
    assert delivery.payload["finishedAt"] == finished_at
    assert await sender.deliver_due() == 1
    assert json.loads(receiver.requests[0].body)["event"] == f"run.{status}"
    # later PATCHes of a finished run (logs; a refused status change) enqueue nothing either
    r = await rest_patch(client, tenant, run.id, appendLog={"message": "after the end"})
    assert r.status_code == 200, r.text
    r = await rest_patch(client, tenant, run.id, status="running")
    assert r.status_code == 409
    assert await WebhookDelivery.filter(run_id=run.id).count() == 1


async def test_concurrent_terminal_patches_enqueue_once(client, tenant, caller):
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, "http://127.0.0.1:9/")
    for _ in range(3):
        run = await running_run(caller, pipeline)
        answers = await asyncio.gather(
            rest_patch(client, tenant, run.id, status="succeeded"),
            rest_patch(client, tenant, run.id, status="failed"),
            rest_patch(client, tenant, run.id, status="succeeded"),
        )
        codes = sorted(a.status_code for a in answers)
        assert codes in ([200, 200, 409], [200, 409, 409]), codes
        delivery = await one_delivery(run_id=run.id)
        await run.refresh_from_db()
        assert delivery.event_type == f"run.{run.status.value}"


@pytest.mark.parametrize("error", [None, "COPY failed: disk full"])
async def test_one_delivery_per_warehouse_report(client, tenant, caller, receiver, sender,
                                                 error):
    await new_endpoint(caller, receiver.url)
    cid = await create_connection(client, tenant)
    started = utcnow() - timedelta(minutes=10)
    run_id = await start_run(client, tenant, cid, started_at=started)
    body = {"completed_at": iso(utcnow()), "events_delivered": 0 if error else 12,
            "error": error}
    for _ in range(3):  # the first completes it; identical replays are no-ops
        r = await report(client, tenant, cid, run_id, **body)
        assert r.status_code == 204, r.text
    delivery = await one_delivery(run_id=run_id)
    event = "run.failed" if error else "run.succeeded"
    assert delivery.event_type == event
    assert await sender.deliver_due() == 1
    [request] = receiver.requests
    payload = json.loads(request.body)
    assert payload["event"] == event and payload["runId"] == str(run_id)
    assert payload["pipelineName"] == (await Pipeline.get(connection_id=cid)).name
    assert payload["errorSummary"] == error
    assert payload["finishedAt"] == body["completed_at"]


async def timed_out_run(caller: Caller, pipeline: Pipeline) -> tuple[Run, datetime]:
    started = utcnow() - timedelta(hours=1)
    run = await elt_runs.create_run(caller=caller, now=started, new=elt_runs.NewRun(
        pipeline_id=pipeline.id, status=RunStatus.RUNNING))
    assert await reap_stuck_runs() == 1
    assert await reap_stuck_runs() == 0
    await run.refresh_from_db()
    assert run.status == RunStatus.TIMED_OUT and run.error
    return run, started


async def test_one_delivery_per_timeout_as_eltpulses_run_failed(caller, receiver, sender):
    """An endpoint that named no events (what eltPulse's `PUT …/webhook {url}` makes) hears of
    a run the reaper ended as eltPulse's `run.failed`, with `timedOut: true`: its receivers
    switch on the contract's three events and must not miss a run that never finished."""
    pipeline = await new_pipeline(caller, max_runtime_seconds=600)
    endpoint = await new_endpoint(caller, receiver.url)
    assert endpoint.event_types == ["run.succeeded", "run.failed", "run.cancelled"]
    run, started = await timed_out_run(caller, pipeline)
    delivery = await one_delivery(run_id=run.id)
    assert delivery.event_type == "run.failed"
    assert await sender.deliver_due() == 1
    payload = verify(endpoint.secret, receiver.requests[0])
    assert set(payload) == PAYLOAD_KEYS
    assert (payload["event"], payload["status"], payload["timedOut"]) == (
        "run.failed", "failed", True)
    assert payload["errorSummary"] == run.error
    assert payload["finishedAt"] == clock_iso(started + timedelta(seconds=600))


async def test_run_timed_out_is_sent_to_an_endpoint_that_asks_for_it(caller, receiver, sender):
    pipeline = await new_pipeline(caller, max_runtime_seconds=600)
    endpoint = await new_endpoint(caller, receiver.url, event_types=list(webhooks.EVENT_TYPES))
    run, _ = await timed_out_run(caller, pipeline)
    assert (await one_delivery(run_id=run.id)).event_type == "run.timed_out"
    failed = await finish(caller, await running_run(caller, pipeline), RunStatus.FAILED,
                          error_summary="boom")
    assert await sender.deliver_due() == 2
    by_run = {verify(endpoint.secret, r)["runId"]: verify(endpoint.secret, r)
              for r in receiver.requests}
    shown = by_run[str(run.id)]
    assert (shown["event"], shown["status"], shown["timedOut"]) == (
        "run.timed_out", "timed_out", True)
    plain = by_run[str(failed.id)]
    assert (plain["event"], plain["status"], plain["timedOut"]) == ("run.failed", "failed", False)


@pytest.mark.parametrize(("wanted", "event"), [
    (["run.timed_out"], "run.timed_out"),
    (["run.failed"], "run.failed"),
    (["run.succeeded", "run.cancelled"], None),
])
async def test_which_event_a_timed_out_run_sends(caller, receiver, wanted, event):
    pipeline = await new_pipeline(caller, max_runtime_seconds=600)
    await new_endpoint(caller, receiver.url, event_types=wanted)
    run, _ = await timed_out_run(caller, pipeline)
    rows = await WebhookDelivery.filter(run_id=run.id)
    assert [r.event_type for r in rows] == ([event] if event else [])


async def test_the_migration_moves_the_old_default_to_eltpulses_three(caller, receiver):
    """Endpoints that hold the old default (all four events) get the new one (three);
    backward puts the four back. Other lists stay as they are."""
    conn = connections.get("default")
    migration = importlib.import_module("runwatch.models.migrations.0012_webhook_default_events")
    pipeline, other = await new_pipeline(caller, "a"), await new_pipeline(caller, "b")
    old_default = await new_endpoint(caller, receiver.url, event_types=list(webhooks.EVENT_TYPES))
    chosen = await new_endpoint(caller, receiver.url + "/x", pipeline_id=pipeline.id,
                                event_types=["run.failed", "run.timed_out"])
    three = await new_endpoint(caller, receiver.url + "/y", pipeline_id=other.id)
    editor = SimpleNamespace(client=conn)

    async def lists() -> list[list[str]]:
        return [(await WebhookEndpoint.get(id=e.id)).event_types
                for e in (old_default, chosen, three)]

    await migration.forward(None, editor)
    assert await lists() == [list(migration.THREE), ["run.failed", "run.timed_out"],
                             list(migration.THREE)]
    await migration.backward(None, editor)
    assert await lists() == [list(migration.ALL_FOUR), ["run.failed", "run.timed_out"],
                             list(migration.ALL_FOUR)]


async def test_a_summary_after_the_failure_goes_into_the_unsent_event(caller, receiver, sender):
    """A run failed without a summary: its event waits `SUMMARY_GRACE`, and the summary that
    arrives meanwhile (eltPulse's runners send it on a PATCH of its own) is in its body."""
    pipeline = await new_pipeline(caller)
    endpoint = await new_endpoint(caller, receiver.url)
    run = await finish(caller, await running_run(caller, pipeline), RunStatus.FAILED)
    delivery = await one_delivery(run_id=run.id)
    assert delivery.next_attempt_at >= run.finished_at + webhooks.SUMMARY_GRACE
    assert await sender.deliver_due() == 0  # not before the grace
    await elt_runs.update_run(caller=caller, run_id=run.id,
                              change=RunChange(error_summary="Process exited with code 1"))
    assert await sender.deliver_due(now=later(seconds=3)) == 1
    body = verify(endpoint.secret, receiver.requests[0])
    assert (body["event"], body["errorSummary"]) == ("run.failed", "Process exited with code 1")


async def test_a_summary_after_the_first_attempt_leaves_the_body_as_sent(caller, receiver,
                                                                         sender):
    """Every attempt of a delivery carries the same signed body: a summary that arrives after
    the first attempt, or while a worker holds the delivery, does not change it."""
    pipeline = await new_pipeline(caller)
    endpoint = await new_endpoint(caller, receiver.url)
    receiver.plan = [Answer(500)]
    tried = await finish(caller, await running_run(caller, pipeline), RunStatus.FAILED)
    assert await sender.deliver_due(now=later(seconds=3)) == 1
    held = await finish(caller, await running_run(caller, pipeline), RunStatus.FAILED)
    [claimed] = await claim_due(limit=5, hold=timedelta(hours=1), now=later(seconds=3))
    assert claimed.payload["runId"] == str(held.id)
    for run in (tried, held):
        await elt_runs.update_run(caller=caller, run_id=run.id,
                                  change=RunChange(error_summary="late"))
        stored = await one_delivery(run_id=run.id)
        assert sql.as_json(stored.payload)["errorSummary"] is None
    # the retry sends the first attempt's body again
    assert await sender.deliver_due(now=later(minutes=10)) == 1
    first, again = (verify(endpoint.secret, r) for r in receiver.requests)
    assert first == again and again["errorSummary"] is None


async def test_a_delivery_given_back_at_shutdown_keeps_its_body(caller, receiver, sender):
    """A worker that stops gives back what it was sending, due at once and no attempt
    counted; its POST may have gone out, so a summary that arrives then leaves the body."""
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    run = await finish(caller, await running_run(caller, pipeline), RunStatus.FAILED)
    [claimed] = await claim_due(limit=5, hold=timedelta(hours=1), now=later(seconds=3))
    await webhook_service.give_back(claimed)
    await elt_runs.update_run(caller=caller, run_id=run.id,
                              change=RunChange(error_summary="late"))
    stored = await one_delivery(run_id=run.id)
    assert (stored.attempts, stored.claim) == (0, None)
    assert sql.as_json(stored.payload)["errorSummary"] is None


async def test_a_changed_endpoint_keeps_its_events_when_none_are_named(
        client, tenant, receiver):
    """eltPulse's settings page PUTs the URL alone: an endpoint that asked for runwatch's
    `run.timed_out` keeps it; a new endpoint gets eltPulse's three."""
    hook = "/api/elt/runs/webhook"
    r = await client.put(hook, headers=tenant.headers("write"), json={
        "url": receiver.url, "eventTypes": list(webhooks.EVENT_TYPES)})
    assert r.json()["webhook"]["eventTypes"] == list(webhooks.EVENT_TYPES), r.text
    r = await client.put(hook, headers=tenant.headers("write"),
                         json={"url": receiver.url + "/moved"})
    assert r.status_code == 200, r.text
    assert r.json()["webhook"]["url"] == receiver.url + "/moved"
    assert r.json()["webhook"]["eventTypes"] == list(webhooks.EVENT_TYPES)
    r = await client.put(hook, headers=tenant.headers("write"),
                         json={"url": receiver.url, "eventTypes": ["run.failed"]})
    assert r.json()["webhook"]["eventTypes"] == ["run.failed"]


# ----------------------------------------------------------------------------------------------
# which endpoint


async def test_the_pipelines_endpoint_wins_over_the_default(caller, receiver, sender):
    own, plain = await new_pipeline(caller, "own"), await new_pipeline(caller, "plain")
    default = await new_endpoint(caller, receiver.url + "/default")
    mine = await new_endpoint(caller, receiver.url + "/own", pipeline_id=own.id)
    run_own = await finish(caller, await running_run(caller, own))
    run_plain = await finish(caller, await running_run(caller, plain))
    assert (await one_delivery(run_id=run_own.id)).endpoint_id == mine.id
    assert (await one_delivery(run_id=run_plain.id)).endpoint_id == default.id
    assert await sender.deliver_due() == 2
    by_path = {r.path: r for r in receiver.requests}
    assert set(by_path) == {"/default", "/own"}
    assert verify(mine.secret, by_path["/own"])["runId"] == str(run_own.id)
    assert verify(default.secret, by_path["/default"])["runId"] == str(run_plain.id)


async def test_a_disabled_endpoint_gets_nothing(caller, receiver, sender):
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url, enabled=False)
    await finish(caller, await running_run(caller, pipeline))
    assert await WebhookDelivery.all().count() == 0
    assert await sender.deliver_due() == 0
    assert receiver.requests == []


async def test_event_types_filter_what_is_enqueued(caller, receiver, sender):
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url, event_types=["run.failed", "run.timed_out"])
    await finish(caller, await running_run(caller, pipeline))
    await finish(caller, await running_run(caller, pipeline), RunStatus.CANCELLED)
    failed = await finish(caller, await running_run(caller, pipeline), RunStatus.FAILED,
                          error_summary="boom")
    delivery = await one_delivery()
    assert delivery.run_id == failed.id and delivery.event_type == "run.failed"
    assert await sender.deliver_due() == 1
    assert len(receiver.requests) == 1


async def test_no_endpoint_no_delivery(caller, other_caller, receiver):
    pipeline = await new_pipeline(caller)
    await new_endpoint(other_caller, receiver.url)  # another organisation's default
    await finish(caller, await running_run(caller, pipeline))
    await finish(caller, await running_run(caller, pipeline), RunStatus.FAILED)
    assert await WebhookDelivery.all().count() == 0


async def test_workers_are_woken_only_when_an_end_enqueued_work(client, tenant, caller, receiver):
    """An end with nothing to deliver leaves idle workers asleep (no claim statements for
    nothing); one with a delivery wakes them at once (an ELT end, a warehouse report)."""
    pipeline = await new_pipeline(caller)
    connection = await create_connection(client, tenant, "warehouse")
    with signals.watching_work() as woken:
        await finish(caller, await running_run(caller, pipeline))
        run_id = await start_run(client, tenant, connection)
        r = await report(client, tenant, connection, run_id, completed_at=iso(later(seconds=1)),
                         events_delivered=1)
        assert r.status_code == 204, r.text
        assert not woken.is_set()

        await new_endpoint(caller, receiver.url)
        await finish(caller, await running_run(caller, pipeline))
        assert woken.is_set()
        woken.clear()
        run_id = await start_run(client, tenant, connection)
        r = await report(client, tenant, connection, run_id, completed_at=iso(later(seconds=1)),
                         events_delivered=1)
        assert r.status_code == 204, r.text
        assert woken.is_set()
    assert await WebhookDelivery.all().count() == 2


async def test_unknown_event_types_are_refused(caller):
    with pytest.raises(InvalidInput) as err:
        await new_endpoint(caller, "http://127.0.0.1:9/", event_types=["run.started"])
    assert "event_types" in err.value.fields


# ----------------------------------------------------------------------------------------------
# SSRF


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/", "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://0.0.0.0/",
    "http://192.168.1.10/", "http://[::ffff:127.0.0.1]/", "http://2130706433/",
])
async def test_private_targets_are_refused(caller, url):
    with pytest.raises(InvalidInput) as err:
        await webhooks.set_endpoint(caller=caller, url=url, allow_private=False)
    assert list(err.value.fields) == ["url"]
    assert await WebhookEndpoint.all().count() == 0


async def test_sender_refuses_private_targets_at_send_time(caller, tenant, receiver):
    pipeline = await new_pipeline(caller)
    await WebhookEndpoint.create(organisation_id=tenant.org_id, url=receiver.url,
                                 secret=webhooks.new_secret(), event_types=[])
    await finish(caller, await running_run(caller, pipeline))
    strict = Sender(timeout=5, allow_private=False, concurrency=4)
    try:
        assert await strict.deliver_due() == 1
    finally:
        await strict.aclose()
    assert receiver.requests == []
    delivery = await one_delivery()
    assert delivery.status != DeliveryStatus.DELIVERED and delivery.attempts == 1
    [attempt] = await attempts_of(delivery)
    assert attempt.status_code is None and attempt.error.startswith("refused:")
    assert "127.0.0.1" in attempt.error


@pytest.mark.parametrize("url", [
    "ftp://example.com/hook", "https://user:secret@example.com/hook", "file:///etc/passwd",
    "not a url",  # "" clears (eltPulse's settings page), tested in test_elt_rest.py
])
async def test_rest_put_refuses_bad_urls(client, tenant, url):
    r = await client.put("/api/elt/runs/webhook", json={"url": url},
                         headers=tenant.headers("write"))
    assert r.status_code == 400, r.text
    assert "url" in r.json()["error"]
    assert await WebhookEndpoint.all().count() == 0


# ----------------------------------------------------------------------------------------------
# slow receivers never block the reporter


async def test_a_slow_receiver_does_not_block_the_terminal_patch(
    client, tenant, caller, receiver
):
    receiver.default = Answer(200, delay=3)
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    run = await running_run(caller, pipeline)
    started = time.monotonic()
    r = await asyncio.wait_for(rest_patch(client, tenant, run.id, status="succeeded"), 10)
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 1.5
    assert receiver.requests == []
    assert (await one_delivery()).status == DeliveryStatus.PENDING


async def test_a_slow_receiver_with_a_worker_running(client, tenant, caller, receiver):
    """With a worker loop running in this process, the PATCH still answers at once; the
    receiver that answers too late gets a timed-out attempt and a retry."""
    receiver.default = Answer(200, delay=3)
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    run = await running_run(caller, pipeline)
    worker = Sender(timeout=1, allow_private=True, concurrency=2)
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop, poll_seconds=0.2))
    try:
        started = time.monotonic()
        r = await asyncio.wait_for(rest_patch(client, tenant, run.id, status="succeeded"), 10)
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 1.5
        await receiver.wait_for(1, timeout=5)
        delivery = await one_delivery()
        for _ in range(50):  # the attempt is recorded once the send timed out (1 s)
            if await WebhookAttempt.filter(delivery_id=delivery.id).exists():
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        await worker.aclose()
    await delivery.refresh_from_db()
    [attempt] = await attempts_of(delivery)
    assert attempt.status_code is None and "Timeout" in attempt.error
    assert 900 <= attempt.duration_ms < 2900
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.next_attempt_at > utcnow()


async def test_the_worker_loop_delivers_promptly_and_stops(client, tenant, caller, receiver):
    pipeline = await new_pipeline(caller)
    endpoint = await new_endpoint(caller, receiver.url)
    worker = Sender(timeout=5, allow_private=True, concurrency=2)
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop, poll_seconds=5))
    try:
        await asyncio.sleep(0.05)  # idle, waiting
        for _ in range(3):  # an enqueue in this process wakes the idle loop at once
            run = await running_run(caller, pipeline)
            started = time.monotonic()
            await rest_patch(client, tenant, run.id, status="succeeded")
        await receiver.wait_for(3, timeout=4)
        assert receiver.requests[-1].at - started < 4
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        await worker.aclose()
    assert len(receiver.requests) == 3
    for request in receiver.requests:
        verify(endpoint.secret, request)
    assert await WebhookDelivery.filter(status=DeliveryStatus.DELIVERED).count() == 3


async def test_a_trickling_receiver_is_cut_off_at_the_timeout(caller, receiver):
    """The send timeout bounds the whole exchange: a receiver that answers a byte at a time
    cannot hold a worker (and its claim) past it, or the delivery would be claimed and sent
    again by another worker while this one is still reading."""
    receiver.default = Answer(200, body=b"x" * 40, drip=0.25)  # 10 s in all
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    worker = Sender(timeout=1, allow_private=True, concurrency=2)
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(worker.deliver_due(), 15) == 1
    finally:
        await worker.aclose()
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"the send took {elapsed:.1f}s with a 1 s timeout"
    # The status arrived in time and decides; the excerpt is what of the body came in time.
    delivery = await one_delivery()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1
    [attempt] = await attempts_of(delivery)
    assert attempt.status_code == 200 and attempt.error is None
    assert attempt.duration_ms < 3000
    assert set(attempt.response_excerpt or "x") == {"x"}
    assert len(attempt.response_excerpt or "") < 40


async def test_a_receiver_that_never_answers_is_cut_off_at_the_timeout(caller, receiver):
    receiver.default = Answer(200, delay=10)
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    worker = Sender(timeout=1, allow_private=True, concurrency=2)
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(worker.deliver_due(), 15) == 1
    finally:
        await worker.aclose()
    assert time.monotonic() - started < 3
    delivery = await one_delivery()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    [attempt] = await attempts_of(delivery)
    assert attempt.status_code is None and "Timeout" in attempt.error
    assert 900 <= attempt.duration_ms < 3000


async def test_a_long_answer_is_kept_short(caller, receiver, sender):
    receiver.default = Answer(200, body="é".encode() * 300_000)
    pipeline = await new_pipeline(caller)
    await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    assert await sender.deliver_due() == 1
    [attempt] = await WebhookAttempt.all()
    assert attempt.status_code == 200 and attempt.response_excerpt == "é" * 500


async def test_a_delivery_whose_endpoint_is_deleted_mid_send(caller, receiver, sender):
    """The endpoint (and with it the delivery) is deleted after a worker claimed it: the
    worker notices and moves on; nothing raises."""
    pipeline = await new_pipeline(caller)
    endpoint = await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    [claimed] = await claim_due(limit=10, hold=timedelta(seconds=60))
    await webhooks.delete_endpoint(caller=caller, endpoint_id=endpoint.id)
    result = await sender.send(claimed)
    assert not result.ok and result.error
    assert receiver.requests == []
    assert await WebhookDelivery.all().count() == 0
    assert await WebhookAttempt.all().count() == 0


# ----------------------------------------------------------------------------------------------
# tenancy


async def test_other_organisations_see_nothing(caller, other_caller, receiver, sender):
    pipeline = await new_pipeline(caller)
    endpoint = await new_endpoint(caller, receiver.url)
    await finish(caller, await running_run(caller, pipeline))
    assert await sender.deliver_due() == 1
    delivery = await one_delivery()

    assert (await webhooks.list_deliveries(caller=other_caller)).items == []
    assert (await webhooks.list_deliveries(
        caller=other_caller, where=webhooks.DeliveryFilter(endpoint_id=endpoint.id))).items == []
    assert (await webhooks.list_endpoints(caller=other_caller)).items == []
    assert await webhooks.attempts_of(caller=other_caller, delivery_ids=[delivery.id]) == {
        delivery.id: []}
    assert await webhooks.endpoint_for(caller=other_caller, pipeline_id=None) is None
    for call in (
        webhooks.get_delivery(caller=other_caller, delivery_id=delivery.id),
        webhooks.redeliver(caller=other_caller, delivery_id=delivery.id),
        webhooks.get_endpoint(caller=other_caller, endpoint_id=endpoint.id),
        webhooks.rotate_secret(caller=other_caller, endpoint_id=endpoint.id),
        webhooks.delete_endpoint(caller=other_caller, endpoint_id=endpoint.id),
        webhooks.endpoint_for(caller=other_caller, pipeline_id=pipeline.id),
        webhooks.set_endpoint(caller=other_caller, url=receiver.url, pipeline_id=pipeline.id,
                              allow_private=True),
    ):
        with pytest.raises(NotFound):
            await call

    # nothing changed
    await delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    stored = await WebhookEndpoint.get(id=endpoint.id)
    assert stored.secret == endpoint.secret
    assert await WebhookEndpoint.all().count() == 1
    assert [d.id for d in (await webhooks.list_deliveries(caller=caller)).items] == [delivery.id]
    assert (await webhooks.get_delivery(caller=caller, delivery_id=delivery.id)).id == delivery.id
    assert len((await webhooks.attempts_of(caller=caller, delivery_ids=[delivery.id]))[
        delivery.id]) == 1
    assert await sender.deliver_due(now=later(days=2)) == 0
    assert len(receiver.requests) == 1
