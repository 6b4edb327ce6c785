"""Client addresses, as both services count failures against them."""

from __future__ import annotations

import ipaddress
import re

__all__ = ["address_group", "forwarded_address"]

# "203.0.113.7:4242" (Azure Application Gateway and others append the client's port),
# "[2001:db8::1]" and "[2001:db8::1]:4242" (RFC 7239's form, which some proxies use in
# X-Forwarded-For too).
_IPV4_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}")
_BRACKETED = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::\d{1,5})?")


def forwarded_address(hop: str) -> str | None:
    """The IP address one X-Forwarded-For entry names, without a port or brackets; None when
    it names none ("unknown", an obfuscated name)."""
    hop = hop.strip()
    match = _IPV4_PORT.fullmatch(hop) or _BRACKETED.fullmatch(hop)
    candidate = match.group(1) if match else hop
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def address_group(address: str) -> str:
    """What ``address``'s failed attempts are counted against: for IPv6, its /64 (the block one
    subscriber is usually given, so that walking through it earns no fresh attempts; an
    IPv4-mapped address is its IPv4 address), for any other address the address itself."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address
