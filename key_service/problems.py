"""RFC 9457 problem details: every error key_service answers is ``application/problem+json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus

from aiohttp import web

__all__ = ["PROBLEM_CONTENT_TYPE", "problem"]

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem(
    status: int, detail: str, *, field: str | None = None,
    headers: Mapping[str, str] | None = None, extensions: Mapping[str, object] | None = None,
) -> web.Response:
    """A problem+json response: type, title (the reason phrase), status, detail [, field],
    and any ``extensions`` members (RFC 9457 §3.2)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, object] = {
        "type": "about:blank", "title": title, "status": status, "detail": detail,
    }
    if field is not None:
        body["field"] = field
    if extensions:
        body.update(extensions)
    response = web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_CONTENT_TYPE, headers=headers,
    )
    response.headers["Cache-Control"] = "no-store"
    return response
