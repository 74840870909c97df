"""Webhook delivery: workers claim due deliveries and send them, signed the Standard Webhooks
way, outside any reporter's request.

- **Claiming.** One UPDATE takes up to N due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL),
  stamps them with this worker's claim and moves their due time past the send timeout. Two
  workers never hold the same delivery, and a worker that dies mid-send only delays it until
  the claim expires.
- **Sending.** `webhook-id` (the delivery's message id, the same on every attempt),
  `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of
  `id.timestamp.body` under the endpoint's secret). The target is checked again at send time
  (private and loopback addresses refused unless allowed), on the very address the connection
  uses (`runwatch.services.pinned`); redirects are not followed, proxies from the environment
  are not used.
- **Recording.** Every attempt is stored (status code, duration, error, the start of the
  answer). A 2xx answer delivers; anything else is retried on `RETRY_SCHEDULE` (about a day in
  all), then the delivery is failed and can be redelivered on demand. A worker's result is
  written only while its claim stands.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from runwatch import __version__, metrics
from runwatch.models import (
    AlertChannel,
    ChannelKind,
    DeliveryStatus,
    WebhookAttempt,
    WebhookEndpoint,
)
from runwatch.resolvers import dbfaults as faults
from runwatch.resolvers import queue, signals, sql
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.netguard import AddressRefused, Resolver, resolve, url_problem
from runwatch.resolvers.webhooks import SECRET_PREFIX
from runwatch.services.pinned import pinned_transport

log = logging.getLogger("runwatch.webhooks")

# Waits after the 1st, 2nd, … failed attempt (the Standard Webhooks / Svix schedule): eight
# attempts over about 27 hours, then the delivery fails.
RETRY_SCHEDULE = (
    timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
    timedelta(hours=5), timedelta(hours=10), timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
EXCERPT_CHARS = 500


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one message."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def retry_delay(attempts: int) -> timedelta:
    """The wait after `attempts` failed attempts, with ±10% jitter so that a receiver that
    comes back is not hit by every retry at once."""
    base = RETRY_SCHEDULE[min(attempts, len(RETRY_SCHEDULE)) - 1]
    return base * random.uniform(0.9, 1.1)


# eltPulse's reference sends run events with this User-Agent; receivers may key on it.
RUN_EVENT_USER_AGENT = "eltPulse-Runs/1"


@dataclass(frozen=True)
class Claimed:
    """A claimed delivery: a run event for an endpoint, or an alert for a channel."""

    id: int
    endpoint_id: int | None
    message_id: str
    payload: dict
    attempts: int
    claim: str
    channel_id: int | None = None


@dataclass(frozen=True)
class Target:
    url: str
    secret: str | None  # None: unsigned (a Slack-compatible incoming webhook)


async def claim_due(*, limit: int, hold: timedelta, now: datetime | None = None) -> list[Claimed]:
    """Take up to `limit` due deliveries for this worker (held for `hold`)."""
    token, rows = await queue.claim_due(
        "webhook_delivery", due_column="next_attempt_at",
        columns="id, endpoint_id, channel_id, message_id, payload, attempts",
        limit=limit, hold=hold, now=now or utcnow(), status=DeliveryStatus.PENDING.value)
    return [
        Claimed(id=int(r["id"]), endpoint_id=r["endpoint_id"], channel_id=r["channel_id"],
                message_id=r["message_id"], payload=sql.as_json(r["payload"]),
                attempts=int(r["attempts"]), claim=token)
        for r in rows
    ]


async def target_of(delivery: Claimed) -> Target | None:
    """Where a delivery goes now; None when its endpoint or channel is disabled or gone."""
    if delivery.channel_id is not None:
        channel = await AlertChannel.filter(id=delivery.channel_id).first()
        if channel is None or not channel.enabled:
            return None
        return Target(channel.url, channel.secret if channel.kind == ChannelKind.WEBHOOK
                      else None)
    endpoint = await WebhookEndpoint.filter(id=delivery.endpoint_id).first()
    if endpoint is None or not endpoint.enabled:
        return None
    return Target(endpoint.url, endpoint.secret)


@dataclass(frozen=True)
class Result:
    status_code: int | None
    duration_ms: int
    error: str | None
    excerpt: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    """Sends claimed deliveries with one pooled HTTP client."""

    def __init__(self, *, timeout: float, allow_private: bool, concurrency: int,
                 resolver: Resolver = resolve, public_url: str = "") -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self.concurrency = concurrency
        self.public_url = public_url
        self.hold = timedelta(seconds=timeout + 30)
        # Unless private targets are allowed, every connection goes through the address
        # guard, to the very address it checked (`runwatch.services.pinned`).
        transport = None if allow_private else pinned_transport(
            max_connections=concurrency * 2, resolver=resolver)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=concurrency * 2), transport=transport,
            headers={"user-agent": f"runwatch-webhooks/{__version__}"},
        )

    def body_of(self, delivery: Claimed) -> dict:
        """What is sent: the frozen payload; a run event also links to its run (`runUrl`,
        under `RUNWATCH_PUBLIC_URL`; null when unset)."""
        payload = delivery.payload
        if delivery.endpoint_id is None or "runId" not in payload or "runUrl" in payload:
            return payload
        run_url = (f"{self.public_url}/api/elt/runs/{payload['runId']}"
                   if self.public_url else None)
        return {**payload, "runUrl": run_url}

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _post(self, target: Target, delivery: Claimed) -> Result:
        # The URL's form here; its addresses when the connection is made (AddressRefused).
        problem = url_problem(target.url)
        if problem:
            return Result(None, 0, f"refused: {problem}", None)
        body = json.dumps(self.body_of(delivery), separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(timestamp),
        }
        if delivery.endpoint_id is not None:  # a run event: the sender eltPulse's receivers know
            headers["user-agent"] = RUN_EVENT_USER_AGENT
        if target.secret:
            headers["webhook-signature"] = sign(target.secret, delivery.message_id, timestamp,
                                                body)
        started = time.monotonic()
        # The timeout bounds the whole exchange, not each read: a receiver that trickles its
        # answer must not hold this worker past its claim (another would send it again).
        deadline = asyncio.get_running_loop().time() + self.timeout
        request = self.client.build_request("POST", target.url, content=body, headers=headers)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.client.send(request, stream=True)
        except AddressRefused as exc:
            return Result(None, 0, f"refused: {exc}"[:1000], None)
        except (httpx.HTTPError, TimeoutError) as exc:
            elapsed = int((time.monotonic() - started) * 1000)
            text = (f"{type(exc).__name__}: {exc}" if str(exc) else
                    f"{type(exc).__name__}: no answer within {self.timeout:g}s")
            return Result(None, elapsed, text[:1000], None)
        try:  # the status decides; of the body, what arrives in time (the start of it)
            start = bytearray()
            with contextlib.suppress(httpx.HTTPError, TimeoutError):
                async with asyncio.timeout_at(deadline):
                    async for chunk in response.aiter_bytes():
                        start += chunk
                        if len(start) >= EXCERPT_CHARS * 4:
                            break
        finally:
            await response.aclose()
        elapsed = int((time.monotonic() - started) * 1000)
        excerpt = _decode(bytes(start), response.charset_encoding)[:EXCERPT_CHARS] or None
        error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return Result(response.status_code, elapsed, error, excerpt)

    async def send(self, delivery: Claimed) -> Result:
        """Send one claimed delivery and record the attempt (and the delivery's new state).
        Its database steps outlast a momentary loss of the database (`faults.retrying`); a
        delivery whose target cannot be read even so is given back unsent, due again at once,
        instead of waiting for its hold to run out."""
        try:
            target = await faults.retrying(lambda: target_of(delivery))
        except Exception as exc:
            if faults.database_unavailable(exc):
                await give_back(delivery)
            raise
        attempted_at = utcnow()
        if target is None:
            result = Result(None, 0, "endpoint or channel disabled or deleted", None)
        else:
            result = await self._post(target, delivery)
        metrics.webhook_attempt(delivery.channel_id is not None, result.ok)
        tries = 0

        async def store() -> bool:
            nonlocal tries
            tries += 1
            return await record(delivery, result, attempted_at=attempted_at,
                                final=target is None, again=tries > 1)

        await faults.retrying(store)
        return result

    async def deliver_due(self, *, now: datetime | None = None, limit: int | None = None) -> int:
        """Claim what is due and send it all concurrently; returns how many were sent."""
        claimed = await claim_due(limit=limit or self.concurrency, hold=self.hold, now=now)
        await asyncio.gather(*(self.send(d) for d in claimed))
        return len(claimed)

    async def run(self, stop: asyncio.Event, poll_seconds: float,
                  drain_seconds: float | None = None) -> None:
        """Keep up to `concurrency` sends in flight until stopped. An enqueue in this process
        wakes an idle loop at once; otherwise it looks again every `poll_seconds`. Once
        stopped, sends in flight get `drain_seconds` (default: the send timeout) to finish;
        the others are cancelled and their deliveries given back, due at once."""
        in_flight: set[asyncio.Task] = set()
        sending: dict[asyncio.Task, Claimed] = {}
        with signals.watching_work() as woken:
            while not stop.is_set():
                free = self.concurrency - len(in_flight)
                claimed: list[Claimed] = []
                if free > 0:
                    try:
                        claimed = await claim_due(limit=free, hold=self.hold)
                    except Exception:  # the database may be away: try again on the next tick
                        log.exception("claiming webhook deliveries failed")
                for delivery in claimed:
                    task = asyncio.create_task(self._send_logged(delivery))
                    in_flight.add(task)
                    sending[task] = delivery
                    task.add_done_callback(in_flight.discard)
                    task.add_done_callback(lambda t: sending.pop(t, None))
                more_due = free > 0 and len(claimed) == free
                if more_due and len(in_flight) < self.concurrency:
                    continue
                # Wait for a free slot (when full), a wake-up or the poll interval, or stop.
                waiters = {asyncio.create_task(stop.wait())}
                if more_due or len(in_flight) >= self.concurrency:
                    waiters |= set(in_flight)
                else:
                    waiters.add(asyncio.create_task(signals.wait(woken, poll_seconds)))
                await asyncio.wait(waiters, timeout=poll_seconds,
                                   return_when=asyncio.FIRST_COMPLETED)
                for task in waiters - in_flight:
                    task.cancel()
            drain = self.timeout + 5 if drain_seconds is None else drain_seconds
            if in_flight:  # finish (and record) what was started, in the time given
                await asyncio.wait(in_flight, timeout=drain)
            unfinished = {task: sending[task] for task in in_flight if task in sending}
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished)
                log.info("stopping: giving back %d unfinished webhook deliveries",
                         len(unfinished))
                for delivery in unfinished.values():
                    await give_back(delivery)

    async def _send_logged(self, delivery: Claimed) -> None:
        try:
            await self.send(delivery)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly", delivery.id)


async def give_back(delivery: Claimed) -> None:
    """Return a claimed delivery unsent, due now; best effort (if the database is still away,
    its hold runs out instead)."""
    try:
        await queue.release("webhook_delivery", delivery.id, delivery.claim,
                            due_column="next_attempt_at", due=utcnow())
    except Exception as exc:
        log.warning("delivery %s could not be given back (%s: %s); due again when its hold "
                    "runs out", delivery.id, type(exc).__name__, exc)


async def record(delivery: Claimed, result: Result, *, attempted_at: datetime,
                 final: bool = False, again: bool = False) -> bool:
    """Store an attempt and move the delivery on; False when this worker's claim was lost
    (then only the attempt is stored). `again`: a retry of a call whose outcome is unknown
    (the connection was lost, perhaps after the commit): an attempt already stored is not
    stored twice."""
    if again and await WebhookAttempt.filter(delivery_id=delivery.id,
                                             attempted_at=attempted_at).exists():
        return True
    attempts = delivery.attempts + 1
    if result.ok:
        changes = {"status": DeliveryStatus.DELIVERED.value, "delivered_at": utcnow(),
                   "next_attempt_at": None}
    elif final or attempts >= MAX_ATTEMPTS:
        changes = {"status": DeliveryStatus.FAILED.value, "next_attempt_at": None}
    else:
        changes = {"next_attempt_at": utcnow() + retry_delay(attempts)}
    changes.update(attempts=attempts, claim=None, last_status_code=result.status_code,
                   last_error=result.error)
    assignments = ", ".join(f"{column} = ?" for column in changes)
    try:
        async with in_transaction() as conn:
            await WebhookAttempt.create(
                delivery_id=delivery.id, attempted_at=attempted_at,
                status_code=result.status_code, duration_ms=result.duration_ms,
                error=result.error, response_excerpt=result.excerpt, using_db=conn)
            updated = await sql.execute(
                f"UPDATE webhook_delivery SET {assignments} WHERE id = ? AND claim = ?",
                [*changes.values(), delivery.id, delivery.claim], conn)
    except IntegrityError:  # the delivery was deleted (with its endpoint) while being sent
        log.info("delivery %s was deleted before its result was recorded", delivery.id)
        return False
    if not updated:
        log.warning("delivery %s: claim lost before its result was recorded", delivery.id)
    return bool(updated)


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


@contextlib.asynccontextmanager
async def sender_from(settings):  # type: ignore[no-untyped-def]
    sender = Sender(timeout=settings.webhook_timeout_seconds,
                    allow_private=settings.webhook_allow_private,
                    concurrency=settings.webhook_concurrency,
                    public_url=settings.public_url)
    try:
        yield sender
    finally:
        await sender.aclose()
