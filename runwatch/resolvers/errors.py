"""Domain exceptions. Each surface translates them into its own error shape."""

from __future__ import annotations


class DomainError(Exception):
    message: str = "error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message


class NotFound(DomainError):
    """The object does not exist *for this caller* (another organisation's object included)."""

    message = "Not found."

    def __init__(self, kind: str, object_id: object) -> None:
        super().__init__(f"{kind} {object_id} not found")
        self.kind = kind
        self.object_id = object_id


class InvalidInput(DomainError):
    """Bad input; `fields` maps each offending field to its messages."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        summary = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in fields.items())
        super().__init__(summary or "invalid input")
        self.fields = fields

    @classmethod
    def one(cls, field: str, message: str) -> InvalidInput:
        return cls({field: [message]})


class NameTaken(InvalidInput):
    """A rename onto a name another object of the kind (in the organisation) already has."""

    def __init__(self, kind: str) -> None:
        article = "An" if kind[0] in "aeiou" else "A"
        super().__init__({"name": [f"{article} {kind} with this name already exists"]})
        self.kind = kind


class Conflict(DomainError):
    """The request contradicts what is already recorded (e.g. a different report for a run
    that has completed)."""


class Unauthenticated(DomainError):
    message = "Authentication credentials were not provided."


class PermissionDenied(DomainError):
    message = "You do not have permission to perform this action."


class InvalidRange(InvalidInput):
    """Values that are each valid but contradict each other or what is stored (an end before
    its start). Some contracts answer these differently from malformed input (Watcher: 400,
    not 422)."""
