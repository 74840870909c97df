"""A Python client for loaders: warehouse-connection run reports, ELT runs (logs, samples,
cancellation) and GraphQL, sync (`Client`) and async (`AsyncClient`), with bounded retries.

It imports nothing of the server: a loader installs runwatch and uses only this package.
The protocol lives once, without I/O, in `runwatch.client.core`. See docs/client.md.
"""

from runwatch.client.aio import AsyncClient, AsyncEltRun
from runwatch.client.core import Report, RetryPolicy
from runwatch.client.errors import (
    AuthError,
    Cancelled,
    Conflict,
    GraphQLError,
    NotFound,
    RetriesExhausted,
    RunwatchError,
    ValidationError,
)
from runwatch.client.sync import Client, EltRun

__all__ = [
    "AsyncClient", "AsyncEltRun", "AuthError", "Cancelled", "Client", "Conflict", "EltRun",
    "GraphQLError", "NotFound", "Report", "RetriesExhausted", "RetryPolicy", "RunwatchError",
    "ValidationError",
]
