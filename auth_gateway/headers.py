"""Header rewriting for forwarding (DESIGN §4 step 6): what the upstream and the client see."""

from __future__ import annotations

import re
from urllib.parse import quote

from multidict import CIMultiDict, CIMultiDictProxy

from .credentials import ID_HEADER, SECRET_HEADER

__all__ = [
    "HOP_BY_HOP",
    "KEY_ID_OUT",
    "KEY_NAME_OUT",
    "header_safe",
    "response_headers",
    "upstream_headers",
]

KEY_ID_OUT = "X-Authenticated-Key-Id"
KEY_NAME_OUT = "X-Authenticated-Key-Name"
# RFC 9110 §7.6.1, plus the non-standard ones proxies still meet.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})
# Recomputed by the gateway; a client must not be able to choose them.
_REPLACED = frozenset({
    "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
    "x-real-ip", "x-request-id", "expect", ID_HEADER.lower(), SECRET_HEADER.lower(),
})
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Printable ASCII except '%', which escapes everything else (UTF-8 percent-encoding).
_NAME_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_safe(value: str) -> str:
    """``value`` as a header-safe string: UTF-8 percent-encoding of anything not printable ASCII."""
    if value.isascii() and value.isprintable() and "%" not in value:
        return value
    return quote(value, safe=_NAME_SAFE)


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    names: set[str] = set()
    for value in headers.getall("Connection", []):
        for token in value.split(","):
            token = token.strip().lower()
            if _TOKEN_RE.fullmatch(token):
                names.add(token)
    return names


def _drop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    if "Connection" not in headers:
        return HOP_BY_HOP  # the usual case: no per-request set to build
    return HOP_BY_HOP | _connection_tokens(headers)


def upstream_headers(
    incoming: CIMultiDictProxy[str],
    *,
    forwarded_for: str,
    forwarded_proto: str,
    forwarded_host: str | None,
    request_id: str,
    identity: tuple[str, str] | None,
) -> CIMultiDict[str]:
    """The headers to send upstream; credentials and client ``X-Authenticated-*`` never pass."""
    drop = _drop(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        # Underscore spellings count as the dashed name: WSGI/CGI backends and some proxies map
        # both to the same variable, so X-Authenticated_Key_Id would pose as our identity header.
        lower = name.lower().replace("_", "-")
        if lower in drop or lower in _REPLACED or lower.startswith("x-authenticated-"):
            continue
        out.add(name, value)
    out["X-Forwarded-For"] = forwarded_for
    out["X-Forwarded-Proto"] = forwarded_proto
    if forwarded_host:
        out["X-Forwarded-Host"] = forwarded_host
    out["X-Request-Id"] = request_id
    if identity is not None:
        out[KEY_ID_OUT] = identity[0]
        out[KEY_NAME_OUT] = header_safe(identity[1])
    return out


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones, for the client."""
    drop = _drop(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out
