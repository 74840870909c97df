"""Connection secrets, the way Airbyte and eltPulse keep them: write-only values per
connection (an environment variable's name and its value), encrypted at rest with Fernet
(AES-128-CBC + HMAC-SHA256, `cryptography`) under the deployment's keys
(`RUNWATCH_SECRETS_KEYS`: several accepted for reading, the first one writes, so keys can be
rotated). No read of a person's or service's returns a value, only which names are set; the
organisation's gateways receive them in clear (`GET /api/agent/connections`), and each such
read is recorded (`SecretRead`: which gateway and token, when, which names).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from tortoise.transactions import in_transaction

from runwatch.models import Connection, ConnectionSecret, SecretRead
from runwatch.resolvers.caller import Caller, Scope
from runwatch.resolvers.clock import utcnow
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.run_input import Errors

KEYS_VARIABLE = "RUNWATCH_SECRETS_KEYS"
# An environment variable's name: what the gateway exports the value as.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
MAX_SECRET_CHARS = 16_384
MAX_SECRETS_PER_CONNECTION = 100
NO_KEY = (f"Storing a secret needs an encryption key: set {KEYS_VARIABLE} (comma-separated "
          "Fernet keys; make one with `python -c \"from cryptography.fernet import Fernet; "
          "print(Fernet.generate_key().decode())\"`).")


def box(keys: Sequence[str]) -> MultiFernet | None:
    """The keys as one encrypter (the first key encrypts; any decrypts); None without keys."""
    return MultiFernet([Fernet(k) for k in keys]) if keys else None


async def _connection(caller: Caller, connection_id: int) -> Connection:
    row = await Connection.filter(id=connection_id, organisation_id=caller.organisation_id).first()
    if row is None:
        raise NotFound("connection", connection_id)
    return row


async def set_secrets(
    *, caller: Caller, connection_id: int, secrets: Any, keys: Sequence[str],
) -> list[ConnectionSecret]:
    """Set (a string) or remove (null) secret values of a connection by name; the others
    stay. Returns the connection's secrets afterwards (names only are ever shown)."""
    caller.require_person(Scope.WRITE)
    connection = await _connection(caller, connection_id)
    errors = Errors()
    if not isinstance(secrets, dict) or not secrets:
        raise InvalidInput.one("secrets", "Expected an object of {NAME: value} (null removes).")
    for name, value in secrets.items():
        if not ENV_NAME.match(name):
            errors.add(f"secrets.{name}", "A secret's name is an environment variable's name "
                                          "(letters, digits and _).")
        elif value is not None and (not isinstance(value, str) or not value
                                    or len(value) > MAX_SECRET_CHARS or "\x00" in value):
            errors.add(f"secrets.{name}", f"A non-empty string of at most {MAX_SECRET_CHARS} "
                                          "characters without NUL (null removes it).")
    errors.raise_any()
    encrypter = box(keys)
    if encrypter is None and any(v is not None for v in secrets.values()):
        raise InvalidInput.one("secrets", NO_KEY)
    async with in_transaction() as conn:
        for name, value in secrets.items():
            if value is None:
                await ConnectionSecret.filter(connection_id=connection.id, name=name).using_db(
                    conn).delete()
                continue
            assert encrypter is not None
            ciphertext = encrypter.encrypt(value.encode()).decode()
            updated = await ConnectionSecret.filter(
                connection_id=connection.id, name=name).using_db(conn).update(
                ciphertext=ciphertext, updated_at=utcnow())
            if not updated:
                await ConnectionSecret.create(
                    organisation_id=caller.organisation_id, connection_id=connection.id,
                    name=name, ciphertext=ciphertext, using_db=conn)
        count = await ConnectionSecret.filter(connection_id=connection.id).using_db(conn).count()
        if count > MAX_SECRETS_PER_CONNECTION:
            raise InvalidInput.one("secrets", f"At most {MAX_SECRETS_PER_CONNECTION} secrets "
                                              "per connection.")
    return await ConnectionSecret.filter(connection_id=connection.id).order_by("name")


async def secret_names(*, caller: Caller, connection_ids: list[int]) -> dict[int, list[Any]]:
    """Which secrets each connection has (names and when set; never values). One query."""
    caller.require_scope(Scope.READ)
    rows = await ConnectionSecret.filter(
        organisation_id=caller.organisation_id, connection_id__in=connection_ids
    ).order_by("name").only("connection_id", "name", "updated_at")
    found: dict[int, list[Any]] = {cid: [] for cid in connection_ids}
    for row in rows:
        found[row.connection_id].append(row)  # type: ignore[attr-defined]
    return found


async def gateway_connections(
    *, caller: Caller, keys: Sequence[str], now: datetime | None = None,
    connection_id: int | None = None,
) -> list[tuple[Connection, dict[str, str]]]:
    """The organisation's connections (or the one named) with their secrets in clear, for
    one of its gateways; the read is recorded per connection that has secrets. A value no
    configured key can decrypt (its key was removed) is left out."""
    caller.require_gateway()
    now = now or utcnow()
    scope: dict[str, Any] = {"organisation_id": caller.organisation_id}
    if connection_id is not None:
        scope["connection_id"] = connection_id
    connections = await Connection.filter(
        organisation_id=caller.organisation_id,
        **({"id": connection_id} if connection_id is not None else {})).order_by("id")
    rows = await ConnectionSecret.filter(**scope).order_by("name")
    decrypter = box(keys)
    values: dict[int, dict[str, str]] = {c.id: {} for c in connections}
    for row in rows:
        if decrypter is None:
            continue
        try:
            plain = decrypter.decrypt(row.ciphertext.encode()).decode()
        except InvalidToken:
            continue
        values[row.connection_id][row.name] = plain  # type: ignore[attr-defined]
    reads = [SecretRead(organisation_id=caller.organisation_id, connection_id=cid,
                        gateway_id=caller.gateway_id, token_id=caller.token_id,
                        names=sorted(found), read_at=now)
             for cid, found in values.items() if found]
    if reads:
        await SecretRead.bulk_create(reads)
    return [(c, values[c.id]) for c in connections]
