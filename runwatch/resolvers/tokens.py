"""Service tokens: creation, revocation and authentication.

A token reads `rw_<key_id>_<secret>`. The prefix makes it recognisable (secret scanners, logs);
`key_id` finds the row through a unique index; only SHA-256 of the secret is stored and it is
compared with `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from runwatch.models import Organisation, ServiceToken
from runwatch.resolvers.caller import Caller, Scope, parse_scopes
from runwatch.resolvers.errors import InvalidInput, NotFound

TOKEN_PREFIX = "rw_"


@dataclass(frozen=True)
class IssuedToken:
    id: int
    organisation_id: int
    name: str
    scopes: frozenset[Scope]
    token: str  # shown once, never stored


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not key_id or not secret or len(key_id) > 16:
        return None
    return key_id, secret


async def create_token(
    *, organisation_id: int, scopes: str | frozenset[Scope], name: str = "token",
    gateway_id: int | None = None, using_db: BaseDBAsyncClient | None = None,
) -> IssuedToken:
    """Create a token for an organisation (CLI and bootstrap), or a gateway's own token."""
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
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
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


async def revoke_token(*, token_id: int | None = None, token: str | None = None) -> int:
    """Revoke by id or by the token itself; returns the revoked token's id."""
    query = ServiceToken.filter(revoked_at=None)
    parts = split_token(token) if token is not None else None
    if token_id is not None:
        query = query.filter(id=token_id)
    elif parts is not None:
        query = query.filter(key_id=parts[0])
    else:
        raise InvalidInput.one("token", "give a token id or the token itself")
    row = await query.first()
    if row is None or (
        parts is not None and not hmac.compare_digest(row.secret_hash, _hash(parts[1]))
    ):
        raise NotFound("token", token_id if token_id is not None else "given")
    row.revoked_at = datetime.now(UTC)
    await row.save(update_fields=["revoked_at"])
    return row.id


async def authenticate(token: str) -> Caller | None:
    """The caller a token stands for, or None when it is unknown, malformed or revoked."""
    parts = split_token(token)
    if parts is None:
        return None
    key_id, secret = parts
    row = (
        await ServiceToken.filter(key_id=key_id, revoked_at=None)
        .only("id", "organisation_id", "secret_hash", "scopes", "gateway_id")
        .first()
    )
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        return None
    return Caller(
        organisation_id=row.organisation_id, scopes=parse_scopes(row.scopes), token_id=row.id,
        gateway_id=row.gateway_id,  # type: ignore[attr-defined]
    )
