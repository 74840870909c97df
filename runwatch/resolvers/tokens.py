"""Service tokens: creation, rotation, revocation and authentication.

A token reads `rw_<key_id>_<secret>`. The prefix makes it recognisable (secret scanners, logs);
`key_id` finds the row through a unique index; only SHA-256 of the secret is stored and it is
compared with `hmac.compare_digest`.

Rotation issues a successor (same organisation, scopes, name and gateway) and gives the old
token an `expires_at` at the end of the overlap window: both work until then, so clients can
switch without an outage; afterwards only the new one does. Revocation takes effect at once in
the database; a process that cached the token stops accepting it when its cache entry ends
(at most 60 seconds: see `runwatch.auth`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from runwatch.models import Organisation, ServiceToken
from runwatch.resolvers.caller import Caller, Scope, parse_scopes
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.settings import Settings

TOKEN_PREFIX = "rw_"
# `last_used_at` is written at most this often per token (so reads stay reads in between).
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedToken:
    id: int
    organisation_id: int
    name: str
    scopes: frozenset[Scope]
    token: str  # shown once, never stored
    # Set by `rotate_token`: the token this one replaces, and when that one stops working.
    replaces: int | None = None
    replaced_until: datetime | None = None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not key_id or not secret or len(key_id) > 16:
        return None
    return key_id, secret


def generate_token() -> str:
    """A new token's text (`rw_<key_id>_<secret>`), stored nowhere."""
    return f"{TOKEN_PREFIX}{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


async def create_token(
    *, organisation_id: int, scopes: str | frozenset[Scope], name: str = "token",
    gateway_id: int | None = None, using_db: BaseDBAsyncClient | None = None,
    preset: str | None = None,
) -> IssuedToken:
    """Create a token for an organisation (CLI and bootstrap), or a gateway's own token.
    `preset`: the token's text chosen by the operator (`RUNWATCH_BOOTSTRAP_TOKEN`) instead of a
    generated one."""
    try:
        parsed = parse_scopes(scopes) if isinstance(scopes, str) else frozenset(scopes)
    except ValueError as exc:
        raise InvalidInput.one("scopes", str(exc)) from None
    if (Scope.GATEWAY in parsed) != (gateway_id is not None) or (
        gateway_id is not None and parsed != {Scope.GATEWAY}
    ):
        raise InvalidInput.one(
            "scopes", "the gateway scope belongs to a gateway's own token, alone: create "
            "gateways with `runwatch gateway create` (or the createGateway mutation)")
    if not await Organisation.filter(id=organisation_id).using_db(using_db).exists():
        raise NotFound("organisation", organisation_id)
    parts = split_token(preset or generate_token())
    if parts is None:
        raise InvalidInput.one("token", "a token reads rw_<key id>_<secret>")
    key_id, secret = parts
    if preset and await ServiceToken.filter(key_id=key_id).using_db(using_db).exists():
        raise InvalidInput.one("token", "a token with this key id exists already")
    row = await ServiceToken.create(
        organisation_id=organisation_id,
        name=name,
        key_id=key_id,
        secret_hash=_hash(secret),
        scopes=",".join(sorted(s.value for s in parsed)),
        gateway_id=gateway_id,
        using_db=using_db,
    )
    return IssuedToken(
        id=row.id,
        organisation_id=organisation_id,
        name=name,
        scopes=parsed,
        token=f"{TOKEN_PREFIX}{key_id}_{secret}",
    )


async def _live_token(
    *, token_id: int | None, token: str | None, using_db: BaseDBAsyncClient | None = None,
    now: datetime | None = None,
) -> ServiceToken:
    """The token named by id or by the token itself, unless it is unknown, revoked or expired
    (a token given by value must match its secret too)."""
    parts = split_token(token) if token is not None else None
    query = ServiceToken.filter(revoked_at=None).using_db(using_db)
    if token_id is not None:
        query = query.filter(id=token_id)
    elif parts is not None:
        query = query.filter(key_id=parts[0])
    else:
        raise InvalidInput.one("token", "give a token id or the token itself")
    row = await query.first()
    if row is None or (
        parts is not None and not hmac.compare_digest(row.secret_hash, _hash(parts[1]))
    ) or (now is not None and row.expires_at is not None and row.expires_at <= now):
        raise NotFound("token", token_id if token_id is not None else "given")
    return row


async def revoke_token(*, token_id: int | None = None, token: str | None = None) -> int:
    """Revoke by id or by the token itself; returns the revoked token's id."""
    row = await _live_token(token_id=token_id, token=token)
    row.revoked_at = datetime.now(UTC)
    await row.save(update_fields=["revoked_at"])
    return row.id


async def rotate_token(
    *, token_id: int | None = None, token: str | None = None,
    overlap_seconds: int = Settings.token_rotation_overlap_seconds,
) -> IssuedToken:
    """A successor for a live token (by id or by the token itself): same organisation, scopes,
    name and gateway. The old token keeps working for `overlap_seconds` more (0: it stops at
    once), then it is refused. Rotating a token again never extends its window."""
    if overlap_seconds < 0:
        raise InvalidInput.one("overlap_seconds", "The overlap cannot be negative.")
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        old = await _live_token(token_id=token_id, token=token, using_db=conn, now=now)
        until = now + timedelta(seconds=overlap_seconds)
        if old.expires_at is not None:
            until = min(until, old.expires_at)
        issued = await create_token(
            organisation_id=old.organisation_id,  # type: ignore[attr-defined]
            scopes=parse_scopes(old.scopes), name=old.name,
            gateway_id=old.gateway_id,  # type: ignore[attr-defined]
            using_db=conn,
        )
        # Conditional, so that a concurrent revocation is not undone.
        await ServiceToken.filter(id=old.id, revoked_at=None).using_db(conn).update(
            expires_at=until)
    return replace(issued, replaces=old.id, replaced_until=until)


@dataclass(frozen=True)
class TokenIdentity:
    """What a token stands for, and until when (`expires_at`: None = until revoked)."""

    caller: Caller
    expires_at: datetime | None


async def identify(token: str) -> TokenIdentity | None:
    """The caller a token stands for and when it expires; None when it is unknown, malformed,
    revoked or expired."""
    parts = split_token(token)
    if parts is None:
        return None
    key_id, secret = parts
    row = (
        await ServiceToken.filter(key_id=key_id, revoked_at=None)
        .only("id", "organisation_id", "secret_hash", "scopes", "gateway_id", "expires_at",
              "last_used_at")
        .first()
    )
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        return None
    now = datetime.now(UTC)
    if row.expires_at is not None and row.expires_at <= now:
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        await ServiceToken.filter(id=row.id).update(last_used_at=now)
    caller = Caller(
        organisation_id=row.organisation_id, scopes=parse_scopes(row.scopes), token_id=row.id,
        gateway_id=row.gateway_id,  # type: ignore[attr-defined]
    )
    return TokenIdentity(caller=caller, expires_at=row.expires_at)


async def authenticate(token: str) -> Caller | None:
    """The caller a token stands for, or None when it is unknown, malformed, revoked or
    expired."""
    identity = await identify(token)
    return identity.caller if identity is not None else None


@dataclass(frozen=True)
class TokenInfo:
    """What an operator may see of a token: never its secret or the secret's hash."""

    id: int
    name: str
    scopes: str
    gateway_id: int | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


async def list_tokens(*, organisation_id: int) -> list[TokenInfo]:
    """An organisation's tokens (revoked and expired ones too), oldest first."""
    if not await Organisation.filter(id=organisation_id).exists():
        raise NotFound("organisation", organisation_id)
    rows = await ServiceToken.filter(organisation_id=organisation_id).order_by("id").only(
        "id", "name", "scopes", "gateway_id", "created_at", "last_used_at", "expires_at",
        "revoked_at")
    return [TokenInfo(id=r.id, name=r.name, scopes=r.scopes,
                      gateway_id=r.gateway_id,  # type: ignore[attr-defined]
                      created_at=r.created_at, last_used_at=r.last_used_at,
                      expires_at=r.expires_at, revoked_at=r.revoked_at) for r in rows]
