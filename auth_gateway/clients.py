"""Who a request comes from: the client's address, and what its failed attempts count against.

The connecting peer is the client unless it is a trusted proxy (``GATEWAY_TRUSTED_PROXIES``);
behind trusted proxies, the nearest hop of ``X-Forwarded-For`` that is not one. A client cannot
name itself in: hops are read only while every later one is trusted.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from apikeys_shared.addresses import address_group, forwarded_address

from .config import UNIX_PEER

__all__ = ["client_address", "failure_group", "is_trusted"]


def client_address(
    remote: str | None, forwarded_for: Sequence[str], trusted: Sequence[str]
) -> str:
    """The client's address: the peer, or, behind trusted proxies, the nearest untrusted hop.

    Hops are read as addresses with or without a port (``203.0.113.7:4242``, ``[2001:db8::1]``);
    a hop that names no address ("unknown") stops the walk at the peer.
    """
    peer = remote or "unknown"
    if not trusted or not is_trusted(peer, trusted):
        return peer
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        address = forwarded_address(hop)
        if address is None:
            return peer
        if not is_trusted(address, trusted):
            return address
    first = forwarded_address(hops[0]) if hops else None
    return first if first is not None else peer


# Both decisions below run per request and are remembered (bounded by an LRU, since the
# addresses asked about are the clients'): parsing an address costs more than the rest.
_REMEMBERED = 4096


@functools.lru_cache(maxsize=_REMEMBERED)
def failure_group(address: str) -> str:
    """``address_group``, remembered: what ``address``'s failed attempts are counted against."""
    return address_group(address)


def is_trusted(address: str, trusted: Sequence[str]) -> bool:
    """True when ``address`` lies in one of the ``trusted`` networks.

    A peer on the gateway's Unix socket (``UNIX_PEER``) is trusted when ``trusted`` names it.
    """
    return _is_trusted(address, tuple(trusted))


@functools.lru_cache(maxsize=_REMEMBERED)
def _is_trusted(address: str, trusted: tuple[str, ...]) -> bool:
    if address == UNIX_PEER:
        return UNIX_PEER in trusted
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(
        ip in ipaddress.ip_network(net, strict=False) for net in trusted if net != UNIX_PEER
    )
