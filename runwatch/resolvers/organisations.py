"""Organisations (tenants). Created from the CLI; the bootstrap makes the first one."""

from __future__ import annotations

from runwatch.models import Organisation
from runwatch.resolvers.errors import InvalidInput


async def create_organisation(*, name: str) -> Organisation:
    name = name.strip()
    if not name:
        raise InvalidInput.one("name", "This field may not be blank.")
    return await Organisation.create(name=name)


async def organisation_count() -> int:
    return await Organisation.all().count()
