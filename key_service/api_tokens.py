"""The JSON API of management tokens: ``/api/v1/tokens`` (create, list, revoke).

Administrators' sessions only (with the CSRF token on changes): a management token is refused
here with 403, so that no token can make another or outlive the revocation of its maker's.
"""

from __future__ import annotations

from aiohttp import web

from .access import require_admin_session, token_service
from .api import NO_STORE, cursor_of
from .bodies import read_json_object
from .keys import parse_limit
from .tokens import token_json

__all__ = ["add_token_routes"]


async def create_token(request: web.Request) -> web.Response:
    """``POST /api/v1/tokens``: a new token; the only response that ever holds its text."""
    principal = await require_admin_session(request)
    body = await read_json_object(request)
    created = await token_service(request).create(
        body.get("name"), body.get("scopes"), principal.actor(request),
    )
    return web.json_response(
        {**token_json(created.token), "token": created.text}, status=201, headers=NO_STORE,
    )


async def list_tokens(request: web.Request) -> web.Response:
    """``GET /api/v1/tokens``: one page of tokens, newest first."""
    await require_admin_session(request)
    limit = parse_limit(request.query.get("limit"))
    page = await token_service(request).list(limit, cursor_of(request))
    return web.json_response(
        {"items": [token_json(t) for t in page.items], "next_cursor": page.next_cursor},
        headers=NO_STORE,
    )


async def revoke_token(request: web.Request) -> web.Response:
    """``POST /api/v1/tokens/{token_id}/revoke``: revoke for ever."""
    principal = await require_admin_session(request)
    token = await token_service(request).revoke(
        request.match_info["token_id"], principal.actor(request),
    )
    return web.json_response(token_json(token), headers=NO_STORE)


def add_token_routes(app: web.Application) -> None:
    """Register ``/api/v1/tokens``."""
    app.router.add_post("/api/v1/tokens", create_token)
    app.router.add_get("/api/v1/tokens", list_tokens)
    app.router.add_post("/api/v1/tokens/{token_id}/revoke", revoke_token)
