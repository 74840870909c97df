"""Who is calling: an organisation and the scopes its token carries."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from runwatch.resolvers.errors import PermissionDenied

GATEWAY_ONLY = "A gateway token works on the /api/agent/ routes only."


class Scope(StrEnum):
    READ = "read"  # frontends: connections, pipelines, runs, telemetry
    WRITE = "write"  # people and services that manage connections and pipelines
    REPORT = "report"  # loaders and recurring tasks: start runs, report outcomes
    ADMIN = "admin"  # everything, including tokens and gateways
    GATEWAY = "gateway"  # a gateway's own token: the /api/agent/ routes, as that gateway


def parse_scopes(raw: str) -> frozenset[Scope]:
    """Parse `read,report`; raises ValueError naming the unknown scope."""
    scopes = set()
    for part in raw.split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            scopes.add(Scope(part))
        except ValueError:
            known = ", ".join(sorted(s.value for s in Scope))
            raise ValueError(f"unknown scope {part!r} (known: {known})") from None
    if not scopes:
        raise ValueError("at least one scope is needed")
    return frozenset(scopes)


@dataclass(frozen=True, slots=True)
class Caller:
    organisation_id: int
    scopes: frozenset[Scope]
    token_id: int | None = None
    # Set for a gateway's token: the caller *is* that gateway, and nothing more.
    gateway_id: int | None = None

    def has(self, scope: Scope) -> bool:
        if scope == Scope.GATEWAY:
            return self.gateway_id is not None
        return Scope.ADMIN in self.scopes or scope in self.scopes

    def require_scope(self, scope: Scope) -> None:
        if scope == Scope.GATEWAY:
            self.require_gateway()
        elif not self.has(scope):
            if self.gateway_id is not None:
                raise PermissionDenied(GATEWAY_ONLY)
            raise PermissionDenied(f"This action needs the {scope.value!r} scope.")

    def require_any(self, *scopes: Scope) -> None:
        """One of `scopes` (e.g. Watcher jobs write with `report`, people with `write`)."""
        if not any(self.has(scope) for scope in scopes):
            self.require_scope(scopes[-1])

    def require_person(self, scope: Scope) -> None:
        """A person's or service's token with `scope`. A gateway's token stands for that
        gateway on its own routes (the actions that `require_gateway`), and nothing else."""
        if self.gateway_id is not None:
            raise PermissionDenied(GATEWAY_ONLY)
        self.require_scope(scope)

    def require_gateway(self) -> None:
        if self.gateway_id is None:
            raise PermissionDenied("The /api/agent/ routes take a gateway's token "
                                   "(runwatch gateway create).")
