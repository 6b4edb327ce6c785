"""``GET /api/v1/events``: the key event feed for subscribers, without the keyed secret hashes.

The gateways catch up from ``/internal/v1/events`` with the internal token, a deployment secret,
and get each key's ``secret_hash``. Other services subscribe with a management token holding the
``events:read`` scope and get the same events, in the same order and pages, in their public form
(``apikeys_shared.public_events``): no ``secret_hash``, no ``hash_version``, signed by
key_service's signing key at the moment they are served. See docs/events.md ("The subscriber
feed").
"""

from __future__ import annotations

from aiohttp import web

from apikeys_shared.events import Event
from apikeys_shared.public_events import sign_public

from .access import require_scope
from .appkeys import CONFIG
from .errors import BadRequest, DatabaseUnavailable
from .internal import FeedQueryError, read_feed
from .outbox import OutboxError
from .scopes import EVENTS_READ

__all__ = ["PATH", "add_subscriber_feed_route"]

PATH = "/api/v1/events"


async def events(request: web.Request) -> web.Response:
    """The public form of the feed's page, for a caller holding ``events:read``."""
    await require_scope(request, EVENTS_READ)
    try:
        page = await read_feed(request)
    except FeedQueryError as exc:
        raise BadRequest(str(exc), field=exc.field) from None
    except OutboxError as exc:
        raise DatabaseUnavailable(f"the key database is not available: {exc}",
                                  headers={"Retry-After": "1"}) from exc
    signer = request.config_dict[CONFIG].secrets.signer
    assert signer is not None  # load_config always reads the signing key
    # The feed's bodies are key_service's own, read from its database: parsed, not verified.
    public = [sign_public(Event.from_bytes(signed.body), signer).to_json()
              for signed in page.events]
    return web.json_response(
        {"events": public, "last_sequence": page.last_sequence},
        headers={"Cache-Control": "no-store"},
    )


def add_subscriber_feed_route(app: web.Application) -> None:
    """Register ``/api/v1/events``."""
    app.router.add_get(PATH, events)
