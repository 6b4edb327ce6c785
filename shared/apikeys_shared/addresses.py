"""Client addresses, as both services count failures against them."""

from __future__ import annotations

import ipaddress

__all__ = ["address_group"]


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
