"""Outbound request targets: runwatch calls URLs its users give it (webhook endpoints, alert
channels), so it refuses addresses inside the network it runs in (loopback, private,
link-local, cloud metadata…) unless the deployment allows them
(`RUNWATCH_WEBHOOK_ALLOW_PRIVATE=1`).

The decision is made on the address the connection will use, not on how the URL spells it:
- every IPv4 and IPv6 range of the IANA special-purpose address registries is refused (an
  explicit table, because `ipaddress`'s own tables differ between Python versions), as is
  anything `ipaddress` does not call global, multicast, and IPv6 outside global unicast
  (2000::/3);
- IPv6 forms that carry an IPv4 address are refused as a whole: IPv4-mapped (::ffff:0:0/96),
  IPv4-compatible (::/96), IPv4-translated (::ffff:0:0:0/96), NAT64 (64:ff9b::/96 and the
  local-use 64:ff9b:1::/48), 6to4 (2002::/16) and Teredo (2001::/32); so are site-local
  addresses (fec0::/10). A deployment whose network reaches IPv4 only through NAT64 must allow
  private targets to call IPv4-only hosts;
- names are resolved and every address must pass; `runwatch.services.pinned` then connects to
  one of exactly the addresses it checked (DNS answers that change between the check and the
  connection cannot redirect it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

RESOLVE_TIMEOUT = 5.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# host -> its addresses (tests pass one whose answers change).
Resolver = Callable[[str], Awaitable[list[str]]]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# IANA IPv4 Special-Purpose Address Registry (2024), plus multicast and limited broadcast.
SPECIAL_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (_V4(net), name) for net, name in (
        ("0.0.0.0/8", "this network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.31.196.0/24", "AS112"),
        ("192.52.193.0/24", "AMT"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("192.175.48.0/24", "AS112 direct delegation"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "limited broadcast"),
    )
)
# IANA IPv6 Special-Purpose Address Registry (2024), plus the forms that wrap IPv4 addresses,
# site-local and multicast.
SPECIAL_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (_V6(net), name) for net, name in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("::ffff:0:0:0/96", "IPv4-translated"),
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("100:0:0:1::/64", "dummy prefix"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4"),
        ("2620:4f:8000::/48", "AS112 direct delegation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing SIDs"),
        ("fc00::/7", "unique local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
GLOBAL_UNICAST = _V6("2000::/3")


def address_problem(address: str) -> str | None:
    """Why a connection to this address is refused (a short name of its range), or None."""
    try:
        ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv4Address):
        for network, name in SPECIAL_V4:
            if ip in network:
                return name
    else:
        for network, name in SPECIAL_V6:
            if ip in network:
                return name
        if ip not in GLOBAL_UNICAST:
            return "not global unicast"
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return "not globally routable"
    return None


def is_internal(address: str) -> bool:
    """An address of this host or its private networks (anything refused as a target)."""
    return address_problem(address) is not None


def url_problem(url: str) -> str | None:
    """Why a URL cannot be a webhook target on its face, or None."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):  # NUL, controls, spaces
        return "A URL cannot hold spaces or control characters."
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
    """The system resolver's addresses for a name (the default `Resolver`)."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    return sorted({str(info[4][0]) for info in infos})


class AddressRefused(Exception):
    """A target host whose addresses runwatch will not connect to; the message says why."""


def refusal(host: str, address: str, why: str) -> str:
    return (f"The host {host!r} is a private or special-purpose address ({address}: {why}); "
            "such targets are refused unless RUNWATCH_WEBHOOK_ALLOW_PRIVATE=1.")


async def checked_addresses(host: str, resolver: Resolver = resolve) -> list[str]:
    """The addresses a connection to `host` may use: the host itself when it is an IP, else
    its resolved addresses, every one of which must pass; `AddressRefused` otherwise."""
    bare = host.strip("[]")
    if _is_ip(bare):
        addresses = [bare]
    else:
        try:
            addresses = await resolver(bare)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise AddressRefused(f"The host {host!r} could not be resolved.") from exc
        if not addresses:
            raise AddressRefused(f"The host {host!r} could not be resolved.")
    for address in addresses:
        why = address_problem(address)
        if why is not None:
            raise AddressRefused(refusal(host, address, why))
    return addresses


async def target_problem(url: str, *, allow_private: bool,
                         resolver: Resolver = resolve) -> str | None:
    """Why runwatch will not call this URL now, or None. Names are resolved: every address
    must be public (unless private targets are allowed)."""
    problem = url_problem(url)
    if problem or allow_private:
        return problem
    try:
        await checked_addresses(urlsplit(url).hostname or "", resolver)
    except AddressRefused as exc:
        return str(exc)
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
