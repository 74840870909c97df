"""Alerts reach a loopback Slack-compatible receiver (and a signed webhook channel) once per
finding: anomalies, stale data, late executions, stuck runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from standardwebhooks.webhooks import Webhook

from runwatch.models import (
    AlertChannel,
    ChannelKind,
    DeliveryStatus,
    Pipeline,
    WebhookDelivery,
)
from runwatch.resolvers import anomalies, checks
from runwatch.resolvers.alerts import create_channel
from runwatch.services.reaper import reap_stuck_runs
from runwatch.services.webhooks import Sender
from tests import watcher_wire
from tests.webhook_receiver import Receiver

DAY = timedelta(days=1)
BASE = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


async def _send_all(sender: Sender) -> int:
    sent = 0
    while count := await sender.deliver_due():
        sent += count
    return sent


async def _anomaly(caller) -> int:
    """Five runs of 100..140 s at 10:00 UTC on five days, a rule (z = 1, 5 points), and a
    sixth of 150 s: one flagged duration. Returns the flagged run's id."""
    pipeline, _ = await watcher_wire.get_or_create_pipeline(
        caller=caller, raw={"name": "nightly", "pipeline_type_name": "extraction"})
    await watcher_wire.get_or_create_rule(caller=caller, raw={
        "pipeline_id": pipeline.id, "metric_field": "duration_seconds", "z_threshold": 1.0,
        "minimum_executions": 5})
    run = None
    for day, seconds in enumerate((100, 110, 120, 130, 140, 150)):
        start = BASE + day * DAY
        run = await watcher_wire.start_execution(
            caller=caller, raw={"pipeline_id": pipeline.id, "start_date": start})
        await watcher_wire.end_execution(caller=caller, raw={
            "id": run.id, "end_date": start + timedelta(seconds=seconds),
            "completed_successfully": True})
        await anomalies.detect_for_run(organisation_id=caller.organisation_id, run_id=run.id)
    return run.id


async def test_a_slack_receiver_gets_each_finding_once(caller):
    async with Receiver.running() as receiver:
        await create_channel(caller=caller, name="ops", kind="slack", url=receiver.url + "/hook",
                             allow_private=True)
        sender = Sender(timeout=5, allow_private=True, concurrency=4)
        try:
            flagged = await _anomaly(caller)
            # the same finding again: nothing new
            await anomalies.detect_for_run(organisation_id=caller.organisation_id,
                                           run_id=flagged)
            # stale data: last insert long ago, a freshness rule of one hour
            pipeline = await watcher_wire.patch_pipeline(caller=caller, raw={
                "name": "nightly", "freshness_number": 1, "freshness_datepart": "hour"})
            now = datetime.now(UTC)
            assert pipeline.last_target_insert is None  # the ends above had no inserts
            late = await watcher_wire.start_execution(
                caller=caller, raw={"pipeline_id": pipeline.id,
                                    "start_date": now - timedelta(hours=5)})
            await watcher_wire.end_execution(caller=caller, raw={
                "id": late.id, "end_date": now - timedelta(hours=4),
                "completed_successfully": True, "inserts": 10})
            assert len(await checks.check_freshness(organisation_id=caller.organisation_id)) == 1
            assert await checks.check_freshness(organisation_id=caller.organisation_id) == []
            # a stuck run (a Watcher execution has no default deadline: its pipeline's
            # maximum runtime gives it one)
            await Pipeline.filter(id=pipeline.id).update(max_runtime_seconds=7200)
            stuck = await watcher_wire.start_execution(
                caller=caller, raw={"pipeline_id": pipeline.id,
                                    "start_date": now - timedelta(hours=3)})
            assert await reap_stuck_runs(now=now) == 1
            assert await reap_stuck_runs(now=now) == 0

            assert await _send_all(sender) == 3
            assert await _send_all(sender) == 0
        finally:
            await sender.aclose()
        bodies = [json.loads(r.body) for r in receiver.requests]
        assert len(bodies) == 3 and all(set(b) == {"text"} for b in bodies)
        texts = " | ".join(b["text"] for b in bodies)
        assert "150" in texts and "104.19" in texts and "135.81" in texts  # the anomaly
        assert "nightly" in texts
        assert any("stale" in b["text"].lower() or "fresh" in b["text"].lower() for b in bodies)
        assert any(str(stuck.id) in b["text"] for b in bodies)
        assert all("webhook-signature" not in r.headers for r in receiver.requests)
        assert await WebhookDelivery.filter(status=DeliveryStatus.DELIVERED,
                                            channel_id__not_isnull=True).count() == 3


async def test_a_webhook_channel_is_signed(caller):
    async with Receiver.running() as receiver:
        channel = await create_channel(caller=caller, name="hooks", kind="webhook",
                                       url=receiver.url + "/alerts", allow_private=True)
        assert channel.secret and channel.secret.startswith("whsec_")
        sender = Sender(timeout=5, allow_private=True, concurrency=4)
        try:
            await _anomaly(caller)
            assert await _send_all(sender) == 1
        finally:
            await sender.aclose()
        request = receiver.requests[0]
        body = Webhook(channel.secret).verify(request.body, request.headers)
        assert body["type"] == "alert.anomaly" and body["severity"] == "warning"
        assert body["details"]


async def test_disabled_channels_and_other_organisations_get_nothing(caller, other_tenant):
    await AlertChannel.create(organisation_id=caller.organisation_id, name="off",
                              kind=ChannelKind.SLACK, url="http://127.0.0.1:9/x", enabled=False)
    await AlertChannel.create(organisation_id=other_tenant.org_id, name="theirs",
                              kind=ChannelKind.SLACK, url="http://127.0.0.1:9/y")
    await _anomaly(caller)
    assert await WebhookDelivery.filter(channel_id__not_isnull=True).count() == 0
