"""The exception tree of auth_gateway.

    GatewayError
    ├── RouteTableError          the route table file is unreadable or invalid (names the entry)
    ├── VerificationUnavailable  nothing could verify a key right now (Redis and key_service away)
    │   └── KeyServiceUnavailable    key_service did not answer, or answered nonsense
    ├── StoreUnavailable         Redis could not be written (the in-process cache still was)
    └── RecordRejected           a signed record or event failed its signature or its parse

Configuration problems raise ``apikeys_shared.ConfigError`` so that both services report them alike.
"""

from __future__ import annotations

__all__ = [
    "GatewayError",
    "KeyServiceUnavailable",
    "RecordRejected",
    "RouteTableError",
    "StoreUnavailable",
    "VerificationUnavailable",
]


class GatewayError(Exception):
    """Base of every error raised by auth_gateway."""


class RouteTableError(GatewayError):
    """The route table is invalid; the message names the file and the entry."""


class VerificationUnavailable(GatewayError):
    """Neither the caches nor key_service could answer for a key: fail closed with 503."""


class RecordRejected(GatewayError):
    """A signed key record or event is forged, unsigned or malformed; it is never applied."""


class KeyServiceUnavailable(VerificationUnavailable):
    """key_service's internal API could not be reached or gave an unusable answer."""


class StoreUnavailable(GatewayError):
    """Redis could not be read or written; callers retry later (a missed write is not lost)."""
