"""Outbound request targets: runwatch calls URLs its users give it (webhooks), so it refuses
addresses inside the network it runs in (loopback, private, link-local, cloud metadata…)
unless the deployment allows them (`RUNWATCH_WEBHOOK_ALLOW_PRIVATE=1`)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

RESOLVE_TIMEOUT = 5.0


def is_internal(address: str) -> bool:
    """An address of this host or its private networks (anything not globally routable)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def url_problem(url: str) -> str | None:
    """Why a URL cannot be a webhook target on its face, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "Not a valid URL."
    if parts.scheme not in {"http", "https"}:
        return "Only http:// and https:// URLs can receive webhooks."
    if not parts.hostname:
        return "The URL has no host."
    if parts.username or parts.password:
        return "Credentials in the URL are not accepted: authenticate with the signature."
    if port == 0:
        return "Not a valid port."
    return None


async def resolve(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    return sorted({info[4][0] for info in infos})


async def target_problem(url: str, *, allow_private: bool) -> str | None:
    """Why runwatch will not call this URL now, or None. Names are resolved: every address
    must be public (unless private targets are allowed)."""
    problem = url_problem(url)
    if problem or allow_private:
        return problem
    host = urlsplit(url).hostname or ""
    try:
        addresses = [host] if _is_ip(host) else await resolve(host)
    except (OSError, TimeoutError, UnicodeError):
        return f"The host {host!r} could not be resolved."
    internal = [a for a in addresses if is_internal(a)]
    if internal:
        return (f"The host {host!r} is a private or loopback address ({internal[0]}); "
                "such targets are refused unless RUNWATCH_WEBHOOK_ALLOW_PRIVATE=1.")
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
