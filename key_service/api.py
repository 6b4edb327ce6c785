"""The JSON API: ``/api/v1/keys`` (issue, list, get, usage, roll, revoke) and ``/api/v1/audit``.

Every handler starts with its guard (access.require_scope): an administrator's session or a
management token holding the scope.
"""

from __future__ import annotations

import time

from aiohttp import web

from .access import require_scope
from .appkeys import CONFIG, METRICS, OUTBOX_WAKEUP, SCHEDULER_WAKEUP, SESSIONMAKER
from .audit import audit_json, list_audit
from .bodies import read_json_object
from .errors import BadRequest, Conflict
from .keys import MAX_OVERLAP_SECONDS, KeyService, key_json, parse_limit, parse_query
from .problems import problem
from .receipts import parse_wait, revocation_receipt, revoke_at_once
from .scopes import AUDIT_READ, KEYS_READ, KEYS_WRITE
from .usage import UsageService, usage_json

__all__ = ["NO_STORE", "add_api_routes", "cursor_of", "key_service"]

NO_STORE = {"Cache-Control": "no-store"}


def key_service(request: web.Request) -> KeyService:
    """The service layer bound to this app's database, wake-up events and metrics."""
    app = request.config_dict
    return KeyService(
        app[SESSIONMAKER], app[CONFIG].secrets.peppers, wakeup=app[OUTBOX_WAKEUP],
        metrics=app[METRICS], scheduler_wakeup=app[SCHEDULER_WAKEUP],
    )


def cursor_of(request: web.Request) -> str | None:
    """The ``cursor`` query parameter; an empty one means "from the start", like none."""
    return request.query.get("cursor") or None


async def list_keys(request: web.Request) -> web.Response:
    """``GET /api/v1/keys``: one page of keys in list order, those ``q`` finds when given."""
    await require_scope(request, KEYS_READ)
    limit = parse_limit(request.query.get("limit"))
    q = parse_query(request.query.get("q"))
    page = await key_service(request).list(limit, cursor_of(request), q)
    return web.json_response(
        {"items": [key_json(k) for k in page.items], "next_cursor": page.next_cursor},
        headers=NO_STORE,
    )


async def issue_key(request: web.Request) -> web.Response:
    """``POST /api/v1/keys``: issue a key; the only response that ever holds its secret."""
    principal = await require_scope(request, KEYS_WRITE)
    body = await read_json_object(request)
    issued = await key_service(request).issue(body.get("name"), principal.actor(request))
    payload = {**key_json(issued.key), "secret": issued.secret}
    return web.json_response(
        payload, status=201, headers={
            **NO_STORE, "Location": f"/api/v1/keys/{issued.key.key_id}",
        },
    )


async def get_key(request: web.Request) -> web.Response:
    """``GET /api/v1/keys/{key_id}``."""
    await require_scope(request, KEYS_READ)
    key = await key_service(request).get(request.match_info["key_id"])
    return web.json_response(key_json(key), headers=NO_STORE)


async def key_usage(request: web.Request) -> web.Response:
    """``GET /api/v1/keys/{key_id}/usage``: last use and requests per UTC day (usage.py)."""
    await require_scope(request, KEYS_READ)
    usage = await UsageService(request.config_dict[SESSIONMAKER]).usage(
        request.match_info["key_id"])
    return web.json_response(usage_json(usage), headers=NO_STORE)


async def roll_key(request: web.Request) -> web.Response:
    """``POST /api/v1/keys/{key_id}/roll``: a replacement now, the old key revoked later."""
    principal = await require_scope(request, KEYS_WRITE)
    body = await read_json_object(request)
    if "overlap_seconds" not in body:
        raise BadRequest(
            f"overlap_seconds is required (0 to {MAX_OVERLAP_SECONDS})", field="overlap_seconds"
        )
    rolled = await key_service(request).roll(
        request.match_info["key_id"], body["overlap_seconds"], principal.actor(request),
    )
    payload = {
        **key_json(rolled.key), "secret": rolled.secret, "replaced_key": key_json(rolled.replaced),
    }
    return web.json_response(
        payload, status=201, headers={**NO_STORE, "Location": f"/api/v1/keys/{rolled.key.key_id}"},
    )


async def revoke_key(request: web.Request) -> web.Response:
    """``POST /api/v1/keys/{key_id}/revoke[?wait=N]``: revoke for ever, with its receipt.

    With ``wait``, an already revoked key is still 409, and its body carries the receipt of
    the revocation that was made before.
    """
    principal = await require_scope(request, KEYS_WRITE)
    wait = parse_wait(request.query.get("wait"))
    key_id = request.match_info["key_id"]
    started = time.monotonic()
    revoking = key_service(request).revoke(key_id, principal.actor(request))
    if wait is None:
        key, receipt = await revoke_at_once(request, revoking, started=started)
    else:
        try:
            key = await revoking
        except Conflict as exc:
            receipt = await revocation_receipt(request, key_id, wait=wait, started=started)
            return problem(409, exc.detail, extensions={"propagation": receipt.to_json()})
        receipt = await revocation_receipt(request, key_id, wait=wait, started=started)
    return web.json_response(
        {**key_json(key), "propagation": receipt.to_json()}, headers=NO_STORE,
    )


async def audit(request: web.Request) -> web.Response:
    """``GET /api/v1/audit``: audit rows, newest first."""
    await require_scope(request, AUDIT_READ)
    limit = parse_limit(request.query.get("limit"))
    page = await list_audit(request.config_dict[SESSIONMAKER], limit, cursor_of(request))
    return web.json_response(
        {"items": [audit_json(e) for e in page.items], "next_cursor": page.next_cursor},
        headers=NO_STORE,
    )


def add_api_routes(app: web.Application) -> None:
    """Register the key and audit routes."""
    app.router.add_get("/api/v1/keys", list_keys)
    app.router.add_post("/api/v1/keys", issue_key)
    app.router.add_get("/api/v1/keys/{key_id}", get_key)
    app.router.add_get("/api/v1/keys/{key_id}/usage", key_usage)
    app.router.add_post("/api/v1/keys/{key_id}/roll", roll_key)
    app.router.add_post("/api/v1/keys/{key_id}/revoke", revoke_key)
    app.router.add_get("/api/v1/audit", audit)
