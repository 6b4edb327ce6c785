"""Reading JSON request bodies strictly: the right content type, a JSON object, a small size."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .errors import BadRequest, UnsupportedMediaType

__all__ = ["read_json_object"]


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 415 for another content type, 400 for malformed JSON.

    A body over the app's ``client_max_size`` makes ``read()`` raise 413.
    """
    if request.content_type != "application/json":
        raise UnsupportedMediaType("the body must be application/json")
    raw = await request.read()
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    except RecursionError:
        # json raises this, not ValueError, for nesting deeper than the interpreter's stack.
        raise BadRequest("the body is nested too deeply") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value
