"""The client's exceptions: one base, one class per thing a loader handles differently."""

from __future__ import annotations

from typing import Any


class RunwatchError(Exception):
    """Anything the server refused or the client could not do; `status` and `body` are the
    server's answer when there was one."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class AuthError(RunwatchError):
    """401 or 403: the token is missing, wrong, or lacks the scope."""


class NotFound(RunwatchError):
    """404: no such object in the token's organisation."""


class ValidationError(RunwatchError):
    """400 or 422: the server's error body (`{"field": ["message"]}`, `{"error": …}`) is in
    `body`."""


class Conflict(RunwatchError):
    """409: e.g. a finished run cannot change again, or a duplicate correlation id."""


class Cancelled(RunwatchError):
    """The run was cancelled (or timed out) on the server: the job should stop."""


class RetriesExhausted(RunwatchError):
    """Every attempt met a retryable failure (429, 502-504, connection error) until the
    attempts or the time ran out; `last` is the last failure."""

    def __init__(self, message: str, *, last: BaseException | None = None,
                 status: int | None = None, body: Any = None) -> None:
        super().__init__(message, status=status, body=body)
        self.last = last


class GraphQLError(RunwatchError):
    """A GraphQL answer with `errors`; they are in `errors` (and `body`)."""

    def __init__(self, message: str, *, errors: list[Any], body: Any = None,
                 status: int | None = None) -> None:
        super().__init__(message, status=status, body=body)
        self.errors = errors
