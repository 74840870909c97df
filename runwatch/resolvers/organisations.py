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


async def list_organisations() -> list[tuple[Organisation, int]]:
    """Every organisation with its number of live (not revoked) tokens, oldest first."""
    from runwatch.models import ServiceToken

    orgs = await Organisation.all().order_by("id")
    live = await ServiceToken.filter(revoked_at=None).values_list("organisation_id", flat=True)
    counts: dict[int, int] = {}
    for org_id in live:
        counts[org_id] = counts.get(org_id, 0) + 1
    return [(org, counts.get(org.id, 0)) for org in orgs]
