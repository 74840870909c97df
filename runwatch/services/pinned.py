"""An httpx transport that connects only to addresses the address guard accepted, and to
exactly those: the guard's decision and the connection use the same resolved address.

Checking a URL and then letting the HTTP client resolve its name again leaves a window: a DNS
answer that changes in between (DNS rebinding, a TTL of 0) sends the request to an address
that was never checked. Here the name is resolved once, inside the connection attempt, every
address is checked (`runwatch.resolvers.netguard`), and the socket is opened to one of those
addresses. The URL keeps its name, so the `Host` header, TLS SNI and certificate verification
are those of the name (httpcore starts TLS with the request's host as `server_hostname`).

This is httpcore's documented extension point (a custom `network_backend`), chosen over
rewriting the URL to an IP with a `Host` header, which breaks SNI and certificate checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from runwatch.resolvers.netguard import AddressRefused, Resolver, checked_addresses, resolve


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, with every TCP connection's host resolved and checked here
    and the connection made to a checked address."""

    def __init__(self, resolver: Resolver = resolve) -> None:
        self.resolver = resolver
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await checked_addresses(host, self.resolver)
        failure: Exception | None = None
        for address in addresses:  # each was checked; try them in turn, like a resolver would
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("Unix sockets are not webhook targets.")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def pinned_transport(
    *, max_connections: int, resolver: Resolver = resolve
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go only to guarded, pinned addresses."""
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=max_connections))
    pool = transport._pool  # httpx exposes no network_backend argument: rebuild its pool
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=pool._ssl_context, max_connections=max_connections,
        max_keepalive_connections=pool._max_keepalive_connections,
        keepalive_expiry=pool._keepalive_expiry, http1=True, http2=False,
        network_backend=PinnedBackend(resolver))
    return transport


__all__ = ["AddressRefused", "PinnedBackend", "pinned_transport"]
