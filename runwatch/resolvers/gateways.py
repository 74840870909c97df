"""Gateways: named agents with their own tokens, created and revoked by admins; they report
heartbeats (version, labels) and claim runs over the /api/agent/ routes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from runwatch.models import Gateway, Organisation, ServiceToken
from runwatch.resolvers import inputs, strict_json
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.pagination import Page, paginate
from runwatch.resolvers.tokens import IssuedToken, create_token

MAX_LABELS_BYTES = 4096


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput.one("name", "This field is required and may not be blank.")
    name = value.strip()
    if len(name) > 200 or inputs.has_nul(name):
        raise InvalidInput.one("name", "At most 200 characters, without null characters.")
    return name


async def get_gateway(*, caller: Caller, gateway_id: int) -> Gateway:
    caller.require_scope(Scope.READ)
    row = await Gateway.filter(id=gateway_id, organisation_id=caller.organisation_id).first()
    if row is None:
        raise NotFound("gateway", gateway_id)
    return row


async def list_gateways(
    *, caller: Caller, first: int | None = None, after: str | None = None,
    include_revoked: bool = False,
) -> Page[Gateway]:
    caller.require_scope(Scope.READ)
    query = Gateway.filter(organisation_id=caller.organisation_id)
    if not include_revoked:
        query = query.filter(revoked_at=None)
    return await paginate(query, first=first, after=after, newest_first=False)


async def create_gateway(*, caller: Caller, name: Any) -> tuple[Gateway, IssuedToken]:
    """A new gateway and its first token (shown once)."""
    caller.require_scope(Scope.ADMIN)
    name = _name(name)
    try:
        async with in_transaction() as conn:
            gateway = await Gateway.create(
                organisation_id=caller.organisation_id, name=name, using_db=conn)
            issued = await _issue(caller, gateway, conn)
    except IntegrityError:
        raise InvalidInput.one("name", "A gateway with this name already exists.") from None
    return gateway, issued


async def _issue(caller: Caller, gateway: Gateway, conn: Any = None) -> IssuedToken:
    return await create_token(
        organisation_id=caller.organisation_id, scopes=frozenset({Scope.GATEWAY}),
        name=f"gateway {gateway.name}", gateway_id=gateway.id, using_db=conn)


async def issue_gateway_token(
    *, caller: Caller, gateway_id: int, revoke_others: bool = False
) -> IssuedToken:
    """Another token for a gateway (rotation); `revoke_others` revokes its earlier tokens."""
    caller.require_scope(Scope.ADMIN)
    async with in_transaction() as conn:
        gateway = await Gateway.filter(
            id=gateway_id, organisation_id=caller.organisation_id, revoked_at=None
        ).using_db(conn).first()
        if gateway is None:
            raise NotFound("gateway", gateway_id)
        if revoke_others:
            await ServiceToken.filter(gateway_id=gateway.id, revoked_at=None).using_db(
                conn).update(revoked_at=utcnow())
        return await _issue(caller, gateway, conn)


async def revoke_gateway(*, caller: Caller, gateway_id: int) -> Gateway:
    """Revoke a gateway and every token it has. Its claimed runs time out once its lease
    runs out, like those of a gateway that went silent."""
    caller.require_scope(Scope.ADMIN)
    now = utcnow()
    async with in_transaction() as conn:
        gateway = await Gateway.filter(
            id=gateway_id, organisation_id=caller.organisation_id
        ).using_db(conn).first()
        if gateway is None:
            raise NotFound("gateway", gateway_id)
        if gateway.revoked_at is None:
            gateway.revoked_at = now
            await gateway.save(update_fields=["revoked_at"], using_db=conn)
        await ServiceToken.filter(gateway_id=gateway.id, revoked_at=None).using_db(conn).update(
            revoked_at=now)
    return gateway


async def current_gateway(*, caller: Caller) -> Gateway:
    """The gateway a gateway token stands for."""
    caller.require_scope(Scope.GATEWAY)
    row = await Gateway.filter(
        id=caller.gateway_id, organisation_id=caller.organisation_id, revoked_at=None
    ).first()
    if row is None:
        raise NotFound("gateway", caller.gateway_id)
    return row


STATUS_GATEWAYS_MAX = 1000


async def gateway_status(*, caller: Caller) -> tuple[Organisation, list[Gateway]]:
    """The organisation and its live gateways (oldest first, at most STATUS_GATEWAYS_MAX):
    eltPulse's agent-status page. Two queries."""
    caller.require_scope(Scope.READ)
    organisation = await Organisation.get(id=caller.organisation_id)
    rows = await Gateway.filter(organisation_id=caller.organisation_id, revoked_at=None
                                ).order_by("id").limit(STATUS_GATEWAYS_MAX)
    return organisation, list(rows)


async def report_monitor(*, caller: Caller, monitor_id: int) -> None:
    """A gateway's monitor report. runwatch runs no monitors (the manifest's
    `workloads.monitors` is empty), so every monitor is not found."""
    caller.require_gateway()
    raise NotFound("monitor", monitor_id)


async def organisation_of(*, caller: Caller) -> Organisation:
    """The calling gateway's organisation (the manifest's `organization`)."""
    caller.require_scope(Scope.GATEWAY)
    return await Organisation.get(id=caller.organisation_id)


def _labels(value: Any) -> dict[str, Any] | list[str]:
    """Labels: an object of short strings (`{"region": "eu"}`) or a list of strings."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        labels: dict[str, Any] | list[str] = value
    elif isinstance(value, dict) and all(
        isinstance(v, str | int | float | bool) or v is None for v in value.values()
    ):
        labels = value
    else:
        raise InvalidInput.one("labels", "Expected an object of strings or a list of strings.")
    not_json = strict_json.problem(labels)
    if not_json is not None:
        raise InvalidInput.one("labels", f"Labels must be JSON: {not_json}.")
    if len(json.dumps(labels)) > MAX_LABELS_BYTES or "\\u0000" in json.dumps(labels):
        raise InvalidInput.one("labels", f"At most {MAX_LABELS_BYTES} bytes of JSON, "
                                         "without null characters.")
    return labels


async def heartbeat(
    *, caller: Caller, version: Any = None, labels: Any = None, now: datetime | None = None
) -> Gateway:
    """Record that the calling gateway is alive (and its version and labels, when sent)."""
    gateway = await current_gateway(caller=caller)
    changes: dict[str, Any] = {"last_seen_at": now or utcnow()}
    if version is not None:
        if not isinstance(version, str) or len(version) > 100 or inputs.has_nul(version):
            raise InvalidInput.one("version", "Expected a string of at most 100 characters.")
        changes["version"] = version
    if labels is not None:
        changes["labels"] = _labels(labels)
    await Gateway.filter(id=gateway.id).update(**changes)
    for key, value in changes.items():
        setattr(gateway, key, value)
    return gateway
