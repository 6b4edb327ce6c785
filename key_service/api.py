"""The JSON API for administrators: ``/api/v1/keys`` and ``/api/v1/audit``."""

from __future__ import annotations

from aiohttp import web

from .appkeys import CONFIG, METRICS, OUTBOX_WAKEUP, SESSIONMAKER
from .audit import audit_json, list_audit
from .auth import CurrentUser, require_admin
from .bodies import read_json_object
from .keys import Actor, KeyService, key_json, parse_limit
from .middleware import client_address, request_id

__all__ = ["add_api_routes", "key_service"]

_NO_STORE = {"Cache-Control": "no-store"}


def key_service(request: web.Request) -> KeyService:
    """The service layer bound to this app's database, wake-up event and metrics."""
    app = request.config_dict
    return KeyService(
        app[SESSIONMAKER], app[CONFIG].secrets.peppers, wakeup=app[OUTBOX_WAKEUP],
        metrics=app[METRICS],
    )


def _actor(request: web.Request, user: CurrentUser) -> Actor:
    return Actor(
        user_id=user.user_id, username=user.username, client_address=client_address(request),
        request_id=request_id(request),
    )


def _cursor(request: web.Request) -> str | None:
    # An empty cursor means "from the start", like an absent one.
    return request.query.get("cursor") or None


async def list_keys(request: web.Request) -> web.Response:
    """``GET /api/v1/keys``: one page of keys in list order."""
    await require_admin(request)
    limit = parse_limit(request.query.get("limit"))
    page = await key_service(request).list(limit, _cursor(request))
    return web.json_response(
        {"items": [key_json(k) for k in page.items], "next_cursor": page.next_cursor},
        headers=_NO_STORE,
    )


async def issue_key(request: web.Request) -> web.Response:
    """``POST /api/v1/keys``: issue a key; the only response that ever holds its secret."""
    user = await require_admin(request)
    body = await read_json_object(request)
    issued = await key_service(request).issue(body.get("name"), _actor(request, user))
    payload = {**key_json(issued.key), "secret": issued.secret}
    return web.json_response(
        payload, status=201, headers={
            **_NO_STORE, "Location": f"/api/v1/keys/{issued.key.key_id}",
        },
    )


async def get_key(request: web.Request) -> web.Response:
    """``GET /api/v1/keys/{key_id}``."""
    await require_admin(request)
    key = await key_service(request).get(request.match_info["key_id"])
    return web.json_response(key_json(key), headers=_NO_STORE)


async def revoke_key(request: web.Request) -> web.Response:
    """``POST /api/v1/keys/{key_id}/revoke``: revoke for ever."""
    user = await require_admin(request)
    key = await key_service(request).revoke(request.match_info["key_id"], _actor(request, user))
    return web.json_response(key_json(key), headers=_NO_STORE)


async def audit(request: web.Request) -> web.Response:
    """``GET /api/v1/audit``: audit rows, newest first."""
    await require_admin(request)
    limit = parse_limit(request.query.get("limit"))
    page = await list_audit(request.config_dict[SESSIONMAKER], limit, _cursor(request))
    return web.json_response(
        {"items": [audit_json(e) for e in page.items], "next_cursor": page.next_cursor},
        headers=_NO_STORE,
    )


def add_api_routes(app: web.Application) -> None:
    """Register the key and audit routes."""
    app.router.add_get("/api/v1/keys", list_keys)
    app.router.add_post("/api/v1/keys", issue_key)
    app.router.add_get("/api/v1/keys/{key_id}", get_key)
    app.router.add_post("/api/v1/keys/{key_id}/revoke", revoke_key)
    app.router.add_get("/api/v1/audit", audit)
