"""RFC 9457 problem+json responses, and the one 401 every authentication failure gets."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

__all__ = ["PROBLEM_TYPE", "UNAUTHORIZED_BODY", "WWW_AUTHENTICATE", "problem", "unauthorized"]

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


def problem(
    status: int, detail: str, headers: Mapping[str, str] | None = None, field: str | None = None
) -> web.Response:
    """A problem+json response with the standard reason phrase as its title."""
    body: dict[str, object] = {
        "type": "about:blank",
        "title": web.Response(status=status).reason,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    out = {"Cache-Control": "no-store", **(headers or {})}
    return web.Response(
        status=status, body=json.dumps(body, separators=(",", ":")).encode(),
        content_type=PROBLEM_TYPE, headers=out,
    )


def unauthorized() -> web.Response:
    """The single 401 of the gateway."""
    return web.Response(
        status=401, body=UNAUTHORIZED_BODY, content_type=PROBLEM_TYPE,
        headers={"WWW-Authenticate": WWW_AUTHENTICATE, "Cache-Control": "no-store"},
    )
