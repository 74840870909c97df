"""Alerts: findings (anomalies, stale data, late runs, stuck runs, queue depth) sent to an
organisation's alert channels, once per finding.

A channel is a Slack-compatible incoming webhook (`{"text": …}`) or runwatch's signed
generic webhook (Standard Webhooks signature, JSON body). An alert is a webhook delivery row
per enabled channel, written in the transaction that records the finding, and sent by the
workers with the retries and attempt history of every webhook.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from tortoise.backends.base.client import BaseDBAsyncClient

from runwatch.models import AlertChannel, ChannelKind, DeliveryStatus, WebhookDelivery
from runwatch.resolvers import signals
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import iso, utcnow
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.pagination import Page, paginate
from runwatch.resolvers.webhooks import check_url, new_message_id, new_secret

SEVERITIES = ("info", "warning", "critical")
MASK = "…"


def channel_body(kind: ChannelKind, *, alert: str, severity: str, title: str, message: str,
                 details: dict[str, Any], organisation_id: int) -> dict[str, Any]:
    if kind == ChannelKind.SLACK:
        icon = {"critical": ":rotating_light:", "warning": ":warning:"}.get(severity, ":bell:")
        return {"text": f"{icon} [{severity.upper()}] {title}: {message}"}
    return {"type": f"alert.{alert}", "severity": severity, "title": title,
            "message": message, "details": details, "organisationId": str(organisation_id),
            "timestamp": iso(utcnow())}


async def enqueue_alert(
    conn: BaseDBAsyncClient | None, *, organisation_id: int, alert: str, severity: str,
    title: str, message: str, details: dict[str, Any] | None = None,
) -> int:
    """One delivery per enabled channel of the organisation; returns how many."""
    channels = await AlertChannel.filter(
        organisation_id=organisation_id, enabled=True).using_db(conn)
    now = utcnow()
    for channel in channels:
        await WebhookDelivery.create(
            organisation_id=organisation_id, channel_id=channel.id,
            event_type=f"alert.{alert}", message_id=new_message_id(),
            payload=channel_body(channel.kind, alert=alert, severity=severity, title=title,
                                 message=message, details=details or {},
                                 organisation_id=organisation_id),
            status=DeliveryStatus.PENDING, next_attempt_at=now, using_db=conn)
    if channels:
        signals.work_enqueued()
    return len(channels)


async def create_channel(
    *, caller: Caller, name: Any, kind: Any, url: Any, allow_private: bool
) -> AlertChannel:
    caller.require_scope(Scope.WRITE)
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        raise InvalidInput.one("name", "A name of 1 to 200 characters is required.")
    try:
        channel_kind = ChannelKind(str(kind).lower())
    except ValueError:
        raise InvalidInput.one("kind", "Expected slack or webhook.") from None
    url = await check_url(url, allow_private=allow_private)
    if await AlertChannel.filter(organisation_id=caller.organisation_id,
                                 name=name.strip()).exists():
        raise InvalidInput.one("name", "A channel with this name already exists.")
    return await AlertChannel.create(
        organisation_id=caller.organisation_id, name=name.strip(), kind=channel_kind, url=url,
        secret=new_secret() if channel_kind == ChannelKind.WEBHOOK else None)


def masked_url(url: str) -> str:
    """A channel URL with everything that can be a credential replaced by `…`: only the scheme
    and host (and port) stay, `https://hooks.slack.com/…`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}/{MASK}" if parts.scheme and host else MASK


@dataclass(frozen=True)
class ChannelView:
    """An alert channel as a caller may see it: its URL is masked unless the caller may write
    (a Slack incoming-webhook URL is itself the credential that posts to the channel)."""

    id: int
    name: str
    kind: ChannelKind
    url: str
    url_masked: bool
    enabled: bool
    created_at: datetime


def channel_view(caller: Caller, channel: AlertChannel) -> ChannelView:
    visible = caller.has(Scope.WRITE)
    return ChannelView(id=channel.id, name=channel.name, kind=channel.kind,
                       url=channel.url if visible else masked_url(channel.url),
                       url_masked=not visible, enabled=channel.enabled,
                       created_at=channel.created_at)


async def list_channels(
    *, caller: Caller, first: int | None = None, after: str | None = None
) -> Page[ChannelView]:
    """The organisation's channels; their URLs in full only for callers with `write`."""
    caller.require_scope(Scope.READ)
    page = await paginate(AlertChannel.filter(organisation_id=caller.organisation_id),
                          first=first, after=after, newest_first=False)
    views = [channel_view(caller, c) for c in page.items]
    return replace(page, items=views)  # type: ignore[arg-type]


async def set_channel_enabled(*, caller: Caller, channel_id: int, enabled: bool) -> AlertChannel:
    caller.require_scope(Scope.WRITE)
    channel = await AlertChannel.filter(
        id=channel_id, organisation_id=caller.organisation_id).first()
    if channel is None:
        raise NotFound("alert channel", channel_id)
    channel.enabled = enabled
    await channel.save(update_fields=["enabled"])
    return channel


async def delete_channel(*, caller: Caller, channel_id: int) -> int:
    caller.require_scope(Scope.WRITE)
    if not await AlertChannel.filter(
        id=channel_id, organisation_id=caller.organisation_id
    ).delete():
        raise NotFound("alert channel", channel_id)
    return channel_id
