"""Header rewriting for forwarding: what the upstream and the client see of the headers.

Part of the request path's "forward" step (docs/architecture.md). Both directions work on the
parser's raw header pairs (bytes, as received) and produce a ready-to-send header block
(``Name: value\\r\\n`` lines), so that forwarding never decodes and re-encodes a header it
passes through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote

from .credentials import ID_HEADER, SECRET_HEADER

__all__ = [
    "HOP_BY_HOP",
    "KEY_ID_OUT",
    "KEY_NAME_OUT",
    "RawHeaders",
    "header_safe",
    "response_header_block",
    "upstream_header_block",
]

RawHeaders = Sequence[tuple[bytes, bytes]]

KEY_ID_OUT = "X-Authenticated-Key-Id"
KEY_NAME_OUT = "X-Authenticated-Key-Name"
# RFC 9110 §7.6.1, plus the non-standard ones proxies still meet.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# Recomputed by the gateway; a client must not be able to choose them. The body's framing
# (Content-Length, Transfer-Encoding) is among them: the forwarder writes it from the parser's
# own reading of the request, so that nothing a client sends (a Connection header naming
# Content-Length, say) can make the upstream delimit the body differently from the gateway.
_REPLACED = frozenset({
    b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded",
    b"x-real-ip", b"x-request-id", b"expect", b"content-length", b"transfer-encoding",
    ID_HEADER.lower().encode(), SECRET_HEADER.lower().encode(),
})
_IDENTITY_PREFIX = b"x-authenticated-"
# Other proxy-set headers a client must not be able to choose either: upstreams that trust the
# gateway as their proxy read them for links and redirects (X-Forwarded-Prefix, -Port, -Ssl,
# -Server ...: every X-Forwarded-* but the three the gateway sets), for the client's address,
# or even for the path to serve (IIS, older Symfony and Zend honour X-Original-URL /
# X-Rewrite-URL, which on an open route would reach handlers behind a required one).
_FORWARDED_PREFIX = b"x-forwarded-"
_PROXY_SET = frozenset({
    b"x-original-url", b"x-rewrite-url", b"x-client-ip", b"true-client-ip",
    b"cf-connecting-ip", b"x-cluster-client-ip", b"fastly-client-ip",
})
_TOKEN_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Printable ASCII except '%', which escapes everything else (UTF-8 percent-encoding).
_NAME_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_safe(value: str) -> str:
    """``value`` as a header-safe string: UTF-8 percent-encoding of anything not printable ASCII."""
    if value.isascii() and value.isprintable() and "%" not in value:
        return value
    return quote(value, safe=_NAME_SAFE)


def _drop(raw: RawHeaders) -> frozenset[bytes]:
    """Hop-by-hop names, plus those the message's own Connection header lists."""
    named: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            for token in value.split(b","):
                # Spelt as the names they are compared with (underscores as dashes).
                token = token.strip().lower().replace(b"_", b"-")
                if _TOKEN_RE.fullmatch(token):
                    named.add(token)
    return HOP_BY_HOP | named if named else HOP_BY_HOP


def _never_forwarded(lower: bytes, drop: frozenset[bytes]) -> bool:
    # Underscore spellings count as the dashed name (``lower`` has them replaced): WSGI/CGI
    # backends and some proxies map both to the same variable, so X-Authenticated_Key_Id would
    # pose as our identity header.
    return (
        lower in drop or lower in _REPLACED or lower in _PROXY_SET
        or lower.startswith(_IDENTITY_PREFIX) or lower.startswith(_FORWARDED_PREFIX)
    )


# What the loop below decided for each spelling of a header name it met, so that a name seen
# before costs one lookup instead of lowercasing and three tests. The decision depends on the
# name alone (Connection, whose tokens vary, is never cached); client-chosen names cannot grow
# the maps past their bound, and a name met after that is simply decided again each time.
_PASSED: set[bytes] = set()
_DROPPED: set[bytes] = set()
_NAMES_BOUND = 2048


def upstream_header_block(
    raw: RawHeaders,
    *,
    forwarded_for: str,
    forwarded_proto: str,
    forwarded_host: bytes | None,
    request_id: str,
    identity: bytes = b"",
) -> bytes:
    """The headers to send upstream; credentials and client ``X-Authenticated-*`` never pass.

    ``identity`` is the authenticated key's header lines (``Identity.block``), empty on a route
    without authentication.
    """
    out: list[bytes] = []
    connection = False
    for name, value in raw:
        if name in _PASSED:
            out.append(b"%s: %s\r\n" % (name, value))
            continue
        if name in _DROPPED:
            continue
        lower = name.lower().replace(b"_", b"-")
        if lower == b"connection":
            connection = True
            continue
        if _never_forwarded(lower, HOP_BY_HOP):
            if len(_DROPPED) < _NAMES_BOUND:
                _DROPPED.add(name)
            continue
        if len(_PASSED) < _NAMES_BOUND:
            _PASSED.add(name)
        out.append(b"%s: %s\r\n" % (name, value))
    if connection:
        # Rare: names the client's Connection header lists are hop-by-hop too.
        drop = _drop(raw)
        out = [b"%s: %s\r\n" % (name, value) for name, value in raw
               if not _never_forwarded(name.lower().replace(b"_", b"-"), drop)]
    # Values that came from headers go back as the bytes they were received as.
    out.append(b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n" % (
        forwarded_for.encode("utf-8", "surrogateescape"),
        forwarded_proto.encode("utf-8", "surrogateescape")))
    if forwarded_host:
        out.append(b"X-Forwarded-Host: %s\r\n" % forwarded_host)
    out.append(b"X-Request-Id: %s\r\n" % request_id.encode("ascii"))
    out.append(identity)
    return b"".join(out)


def response_header_block(raw: RawHeaders, *, keep_length: bool) -> tuple[bytes, bool]:
    """The upstream's response headers minus hop-by-hop ones, for the client.

    The upstream's X-Request-Id gives way to the gateway's; Content-Length is kept only when
    ``keep_length`` (HEAD, 204, 304: nothing follows, so the server cannot count it). Also says
    whether the upstream sent a Date.
    """
    skip = _RESPONSE_SKIP_KEEP if keep_length else _RESPONSE_SKIP
    block, had_date, named = _emit(raw, skip)
    if named:
        # Headers the upstream's Connection header names are hop-by-hop too (rare).
        block, had_date, _ = _emit(raw, skip | named)
    return block, had_date


def _emit(raw: RawHeaders, skip: frozenset[bytes]) -> tuple[bytes, bool, frozenset[bytes]]:
    """Header lines of ``raw`` not in ``skip``; whether a Date passed; Connection's tokens."""
    out: list[bytes] = []
    had_date = False
    named: set[bytes] = set()
    for name, value in raw:
        lower = name.lower()
        if lower in skip:
            if lower == b"connection":
                for token in value.split(b","):
                    token = token.strip().lower()
                    if token not in skip and _TOKEN_RE.fullmatch(token):
                        named.add(token)
            continue
        if lower == b"date":
            had_date = True
        out += (name, b": ", value, b"\r\n")
    return b"".join(out), had_date, frozenset(named)


_RESPONSE_SKIP = HOP_BY_HOP | {b"x-request-id", b"content-length"}
_RESPONSE_SKIP_KEEP = HOP_BY_HOP | {b"x-request-id"}
