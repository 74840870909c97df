"""The outbound address guard (issue 10, finding 4): decided on the address the connection
uses, IPv6 forms wrapping IPv4 and every IANA special-purpose range refused, for webhook
endpoints and alert channels alike, at creation and at send time; and the resolved address is
pinned for the connection, so a DNS answer that changes after the check cannot redirect it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runwatch.models import (
    AlertChannel,
    DeliveryStatus,
    RunStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from runwatch.resolvers import alerts, elt_runs, netguard, pipelines, webhooks
from runwatch.resolvers.caller import Caller
from runwatch.resolvers.errors import InvalidInput
from runwatch.resolvers.run_input import RunChange
from runwatch.services.webhooks import Sender
from tests.conftest import Tenant
from tests.webhook_receiver import Receiver

# Each reported bypass, and one address of every other special-purpose range.
REFUSED = [
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::808:808",  # NAT64 even of a public address: the whole range
    "64:ff9b:1::a00:1",  # local-use NAT64
    "::127.0.0.1",  # IPv4-compatible
    "::a9fe:a9fe",
    "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:a9fe:a9fe",
    "::ffff:8.8.8.8",
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "2002:7f00:1::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "fec0::1",  # site-local
    "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "ff02::1", "::", "::1",
    "100::1", "100:0:0:1::1", "2001:db8::1", "2001:2::1", "2001:10::1", "2001:20::1",
    "3fff::1", "5f00::1", "2620:4f:8000::1", "4000::1", "::2",
    "0.0.0.0", "0.1.2.3", "10.0.0.1", "100.64.0.1", "127.0.0.1", "127.255.255.254",
    "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.0.9",
    "192.0.0.170", "192.0.2.1", "192.31.196.1", "192.52.193.1", "192.88.99.1", "192.168.1.1",
    "192.175.48.1", "198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
]
ALLOWED = ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001::1",
           "2001:4860:4860::8888"]


@pytest.mark.parametrize("address", REFUSED)
def test_special_purpose_addresses_are_refused(address):
    assert netguard.address_problem(address) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address):
    assert netguard.address_problem(address) is None


@pytest.mark.parametrize("url", [
    "http://[64:ff9b::a9fe:a9fe]/", "http://[64:ff9b::a00:1]/", "http://[::127.0.0.1]/",
    "http://[::ffff:0:7f00:1]/", "http://[2002:a9fe:a9fe::]/", "http://[fec0::1]/",
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]:8443/x", "http://169.254.169.254/",
    "http://100.100.100.200/latest/meta-data",
    "http://example.com/a\x00b", "http://example.com/a b", "http://example.com/\r\nX: y",
])
async def test_endpoints_and_alert_channels_refuse_them_at_creation(caller: Caller, url):
    with pytest.raises(InvalidInput) as err:
        await webhooks.set_endpoint(caller=caller, url=url, allow_private=False)
    assert list(err.value.fields) == ["url"]
    with pytest.raises(InvalidInput) as err:
        await alerts.create_channel(caller=caller, name="c", kind="slack", url=url,
                                    allow_private=False)
    assert list(err.value.fields) == ["url"]
    assert await WebhookEndpoint.all().count() == 0
    assert await AlertChannel.all().count() == 0


class FlippingResolver:
    """A name server whose answer changes after the first question (DNS rebinding)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.questions.append(host)
        return self.answers[min(len(self.questions), len(self.answers)) - 1]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver.running() as r:
        yield r


async def _finished_run_with_endpoint(caller: Caller, tenant: Tenant, url: str) -> None:
    pipeline = await pipelines.create_pipeline(
        caller=caller, fields=pipelines.PipelineFields(name="orders"))
    await WebhookEndpoint.create(organisation_id=tenant.org_id, url=url,
                                 secret=webhooks.new_secret(), event_types=[])
    run = await elt_runs.create_run(caller=caller, new=elt_runs.NewRun(
        pipeline_id=pipeline.id, status=RunStatus.RUNNING))
    await elt_runs.update_run(caller=caller, run_id=run.id,
                              change=RunChange(status=RunStatus.SUCCEEDED))


async def test_dns_rebinding_between_check_and_connect_is_refused(caller, tenant, receiver):
    """The name passes the check (a public answer), then answers loopback: the connection
    is checked on the address it would use, so nothing reaches the loopback receiver."""
    url = f"http://rebind.example.test:{receiver.port}/hook"
    resolver = FlippingResolver(["93.184.216.34"], ["127.0.0.1"])
    assert await netguard.target_problem(url, allow_private=False, resolver=resolver) is None
    await _finished_run_with_endpoint(caller, tenant, url)
    sender = Sender(timeout=5, allow_private=False, concurrency=2, resolver=resolver)
    try:
        assert await sender.deliver_due() == 1
    finally:
        await sender.aclose()
    assert receiver.requests == []
    assert len(resolver.questions) == 2  # the connection asked again, and was refused
    delivery = await WebhookDelivery.get()
    assert delivery.status != DeliveryStatus.DELIVERED
    [attempt] = await WebhookAttempt.filter(delivery_id=delivery.id)
    assert attempt.error.startswith("refused:") and "127.0.0.1" in attempt.error


async def test_any_refused_address_among_the_answers_refuses(caller, tenant, receiver):
    url = f"http://mixed.example.test:{receiver.port}/hook"
    await _finished_run_with_endpoint(caller, tenant, url)
    sender = Sender(timeout=5, allow_private=False, concurrency=2,
                    resolver=FlippingResolver(["93.184.216.34", "::ffff:127.0.0.1"]))
    try:
        await sender.deliver_due()
    finally:
        await sender.aclose()
    assert receiver.requests == []


async def test_the_connection_uses_the_checked_address(caller, tenant, receiver, monkeypatch):
    """Pinning, positively: a name no real resolver knows reaches the receiver at the address
    the guard's resolver gave (loopback let through for this test only), with the name kept
    in the Host header."""
    allowed = "127.0.0.1"
    monkeypatch.setattr(netguard, "address_problem",
                        lambda a: None if a == allowed else "refused in this test")
    url = f"http://pinned.example.test:{receiver.port}/hook"
    await _finished_run_with_endpoint(caller, tenant, url)
    resolver = FlippingResolver([allowed])
    sender = Sender(timeout=5, allow_private=False, concurrency=2, resolver=resolver)
    try:
        assert await sender.deliver_due() == 1
    finally:
        await sender.aclose()
    [request] = receiver.requests
    assert request.headers["host"] == f"pinned.example.test:{receiver.port}"
    assert resolver.questions == ["pinned.example.test"]
    assert (await WebhookDelivery.get()).status == DeliveryStatus.DELIVERED


async def test_alert_channels_are_guarded_at_send_time(caller, tenant, receiver):
    await AlertChannel.create(organisation_id=tenant.org_id, name="ops", kind="slack",
                              url=f"http://[::ffff:127.0.0.1]:{receiver.port}/hook")
    assert await alerts.enqueue_alert(None, organisation_id=tenant.org_id, alert="test",
                                      severity="info", title="t", message="m") == 1
    sender = Sender(timeout=5, allow_private=False, concurrency=2)
    try:
        assert await sender.deliver_due() == 1
    finally:
        await sender.aclose()
    assert receiver.requests == []
    [attempt] = await WebhookAttempt.all()
    assert attempt.error.startswith("refused:")
