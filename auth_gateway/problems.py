"""RFC 9457 problem+json replies, and the one 401 every authentication failure gets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from .http_server import Request, problem_body

__all__ = [
    "PROBLEM_TYPE", "UNAUTHORIZED", "UNAUTHORIZED_BODY", "WWW_AUTHENTICATE", "Reply", "problem",
]

PROBLEM_TYPE = "application/problem+json"
WWW_AUTHENTICATE = (
    'APIKey realm="backoffice", headers="X-AuthenticationKeyId X-AuthenticationKeyValue"'
)
# Byte-identical for unknown, wrong, revoked, malformed, missing and duplicated credentials:
# the client learns only that these credentials do not work.
UNAUTHORIZED_BODY = json.dumps(
    {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "A valid X-AuthenticationKeyId and X-AuthenticationKeyValue are required.",
    },
    separators=(",", ":"),
).encode()


@dataclass(frozen=True)
class Reply:
    """A complete response the gateway makes itself: status, header lines, body."""

    status: int
    block: bytes
    body: bytes
    close: bool = False

    def send(self, request: Request, request_id: str) -> None:
        """Write this reply as ``request``'s response, with its X-Request-Id."""
        if self.close:
            request.close_after()
        request.respond(self.status, self.block + b"X-Request-Id: %s\r\n" % (
            request_id.encode("ascii"),), self.body)


def _block(headers: Mapping[str, str]) -> bytes:
    return b"".join(
        b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in headers.items()
    )


def problem(status: int, detail: str, headers: Mapping[str, str] | None = None, *,
            close: bool = False) -> Reply:
    """A problem+json reply with the standard reason phrase as its title."""
    out = {"Content-Type": PROBLEM_TYPE, "Cache-Control": "no-store", **(headers or {})}
    return Reply(status, _block(out), problem_body(status, detail), close)


# The single 401 of the gateway.
UNAUTHORIZED = Reply(401, _block({
    "Content-Type": PROBLEM_TYPE, "WWW-Authenticate": WWW_AUTHENTICATE,
    "Cache-Control": "no-store",
}), UNAUTHORIZED_BODY)
