"""Routes for gateways: the signed event feed, the lookup of one key's latest record, the
revocation snapshot, the usage reports, and the processes' heartbeats.

Every route answers only to ``Authorization: Bearer <APIKEYS_INTERNAL_TOKEN>``. What the reading
routes return is signed by key_service, so a gateway trusts the content by its signature, not by
the channel.

* ``GET /internal/v1/events?after=SEQ&limit=N`` → ``{"events": [signed, ...],
  "last_sequence": N}``: the events with a sequence above ``after``, in order, and the highest
  sequence assigned so far (0 when there is none).
* ``GET /internal/v1/keys/{key_id}`` → the key's newest signed event, or 404.
* ``POST /internal/v1/gateways/heartbeat`` ← one gateway process's identity and watermark
  (see heartbeats.py) → ``{"last_sequence": N}``, so the gateway knows how current it is.
* ``DELETE /internal/v1/gateways/{instance_id}``: the process stopped cleanly → 204 (404 for
  one not known).
* ``GET /internal/v1/snapshot`` → the signed revocation snapshot (``snapshot``): its body as
  the response body, its signature in ``X-Signature`` and ``X-Signing-Key``.
* ``POST /internal/v1/usage`` with ``{"batch_id", "day", "keys": [{"key_id", "last_used_at",
  "count"}]}`` → ``{"accepted": bool, "unknown_keys": N}``: one gateway process's usage report
  (usage.py); ``accepted`` is false for a report taken in before, which changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import AsyncIterator

from aiohttp import web

from apikeys_shared.events import MAX_SEQUENCE, SEQUENCE_DIGITS
from apikeys_shared.keys import is_valid_key_id

from .appkeys import CONFIG, ENGINE, HEARTBEATS, OUTBOX_WAKEUP, SESSIONMAKER, SNAPSHOT_PREPARED
from .bodies import read_json_object
from .heartbeats import HeartbeatError, last_sequence, parse_heartbeat, valid_instance_id
from .outbox import (
    FeedPage,
    OutboxError,
    fetch_feed,
    has_pending,
    latest_for_key,
    sequence_pending,
)
from .problems import problem
from .snapshot import SnapshotCache, read_snapshot
from .usage import UsageService, parse_report

__all__ = [
    "FEED_DEFAULT_LIMIT", "FEED_MAX_LIMIT", "FeedQueryError", "add_internal_routes", "read_feed",
]

log = logging.getLogger("key_service")

FEED_DEFAULT_LIMIT = 500
FEED_MAX_LIMIT = 1000
# Up to 20 digits: an event's own zero-padded ``sequence`` may be passed back as ``after``.
_DIGITS = re.compile(rf"[0-9]{{1,{SEQUENCE_DIGITS}}}")


def _authorized(request: web.Request) -> bool:
    expected = request.config_dict[CONFIG].secrets.internal_token.encode()
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # Compare even when the scheme is wrong, so timing says nothing about the token.
    # surrogateescape: aiohttp decodes non-UTF-8 header bytes to surrogates (a 401, not a 500).
    matches = hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"), expected)
    return scheme.lower() == "bearer" and matches


def _unauthorized() -> web.Response:
    return problem(
        401, "a valid internal service token is required (Authorization: Bearer <token>)",
        headers={"WWW-Authenticate": 'Bearer realm="key_service internal"'},
    )


def _unavailable(exc: OutboxError) -> web.Response:
    return problem(503, f"the key database is not available: {exc}", headers={"Retry-After": "1"})


def _integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}")
    return int(raw)


class FeedQueryError(ValueError):
    """A bad ``after`` or ``limit``; ``field`` names it."""

    def __init__(self, detail: str, field: str) -> None:
        super().__init__(detail)
        self.field = field


async def read_feed(request: web.Request) -> FeedPage:
    """The page of the feed the query asks for (``after``, ``limit``), the newest commits
    sequenced first; FeedQueryError for a bad query, OutboxError when the database is away."""
    try:
        after = _integer(request, "after", 0, 0, MAX_SEQUENCE)
    except ValueError as exc:
        raise FeedQueryError(str(exc), "after") from None
    try:
        limit = _integer(request, "limit", FEED_DEFAULT_LIMIT, 1, FEED_MAX_LIMIT)
    except ValueError as exc:
        raise FeedQueryError(str(exc), "limit") from None
    config = request.config_dict[CONFIG]
    engine = request.config_dict[ENGINE]
    assert config.secrets.signer is not None  # load_config always reads the signing key
    # A key committed a moment ago must be in the feed now, not after the relay's next round: a
    # reader asking because it saw a gap would otherwise miss it.
    if await has_pending(engine):
        await sequence_pending(
            engine, source=config.event_source, signer=config.secrets.signer, notify=True,
        )
        request.config_dict[OUTBOX_WAKEUP].set()
    return await fetch_feed(engine, after, limit)


async def events(request: web.Request) -> web.Response:
    """The signed event feed, strictly after ``after``, in sequence order."""
    if not _authorized(request):
        return _unauthorized()
    try:
        page = await read_feed(request)
    except FeedQueryError as exc:
        return problem(400, str(exc), field=exc.field)
    except OutboxError as exc:
        return _unavailable(exc)
    return web.json_response({
        "events": [signed.to_json() for signed in page.events],
        "last_sequence": page.last_sequence,
    }, headers={"Cache-Control": "no-store"})


async def key_record(request: web.Request) -> web.Response:
    """The newest signed event of one key."""
    if not _authorized(request):
        return _unauthorized()
    key_id = request.match_info["key_id"]
    if not is_valid_key_id(key_id):
        return problem(404, "no key has this ID (a key ID is a lowercase UUID)")
    config = request.config_dict[CONFIG]
    assert config.secrets.signer is not None  # load_config always reads the signing key
    try:
        signed = await latest_for_key(
            request.config_dict[ENGINE], key_id, source=config.event_source,
            signer=config.secrets.signer,
        )
    except OutboxError as exc:
        return _unavailable(exc)
    if signed is None:
        return problem(404, "no key has this ID")
    return web.json_response(signed.to_json(), headers={"Cache-Control": "no-store"})


async def usage(request: web.Request) -> web.Response:
    """Take in one gateway process's usage report."""
    if not _authorized(request):
        return _unauthorized()
    report = parse_report(await read_json_object(request))
    outcome = await UsageService(request.config_dict[SESSIONMAKER]).record(report)
    return web.json_response(
        {"accepted": outcome.accepted, "unknown_keys": outcome.unknown_keys},
        headers={"Cache-Control": "no-store"})


async def heartbeat(request: web.Request) -> web.Response:
    """Record one gateway process's heartbeat; answer the highest sequence assigned so far."""
    if not _authorized(request):
        return _unauthorized()
    try:
        beat = parse_heartbeat(await request.json())
    except HeartbeatError as exc:
        return problem(400, str(exc), field=exc.field)
    except ValueError:
        return problem(400, "the body must be a JSON object", field="body")
    engine = request.config_dict[ENGINE]
    try:
        await request.config_dict[HEARTBEATS].record(engine, beat)
        last = await last_sequence(engine)
    except OutboxError as exc:
        return _unavailable(exc)
    return web.json_response({"last_sequence": last}, headers={"Cache-Control": "no-store"})


async def gateway_left(request: web.Request) -> web.Response:
    """A gateway process stopped cleanly: receipts no longer list it."""
    if not _authorized(request):
        return _unauthorized()
    instance_id = request.match_info["instance_id"]
    if not valid_instance_id(instance_id):
        return problem(404, "no gateway process has this instance ID")
    engine = request.config_dict[ENGINE]
    if not await request.config_dict[HEARTBEATS].forget(engine, instance_id):
        return problem(404, "no gateway process has this instance ID")
    return web.Response(status=204, headers={"Cache-Control": "no-store"})
_SNAPSHOTS = web.AppKey("snapshots", SnapshotCache)


async def snapshot(request: web.Request) -> web.Response:
    """The signed revocation snapshot as of the feed's last sequence."""
    if not _authorized(request):
        return _unauthorized()
    config = request.config_dict[CONFIG]
    assert config.secrets.signer is not None  # load_config always reads the signing key
    engine = request.config_dict[ENGINE]
    try:
        # As of the newest commit, as the feed is (see read_feed).
        if await has_pending(engine):
            await sequence_pending(
                engine, source=config.event_source, signer=config.secrets.signer, notify=True,
            )
            request.config_dict[OUTBOX_WAKEUP].set()
        signed = await read_snapshot(engine, config.secrets.signer, request.app[_SNAPSHOTS])
    except OutboxError as exc:
        return _unavailable(exc)
    return web.Response(body=signed.body, content_type="application/json", headers={
        "X-Signature": signed.signature, "X-Signing-Key": signed.signing_key,
        "Cache-Control": "no-store",
    })


async def _prepare_snapshot(app: web.Application) -> AsyncIterator[None]:
    """Make the snapshot as key_service starts, in the background (``/readyz`` waits for the
    first try), so that a gateway process started once key_service is ready does not wait for
    a read of the whole keys table (later asks bring it up to date from the events since)."""
    signer = app[CONFIG].secrets.signer
    assert signer is not None  # load_config always reads the signing key

    async def prepare() -> None:
        try:
            await read_snapshot(app[ENGINE], signer, app[_SNAPSHOTS])
        except OutboxError as exc:
            log.warning("could not prepare the gateways' snapshot yet: %s", exc)
        finally:
            app[SNAPSHOT_PREPARED].set()

    task = asyncio.create_task(prepare(), name="key_service-snapshot")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def add_internal_routes(app: web.Application) -> None:
    """Register ``/internal/v1/*`` on ``app`` (and the snapshot's preparation at start)."""
    app[_SNAPSHOTS] = SnapshotCache()
    app[SNAPSHOT_PREPARED] = asyncio.Event()
    app.cleanup_ctx.append(_prepare_snapshot)
    app.router.add_get("/internal/v1/snapshot", snapshot, name="internal_snapshot")
    app.router.add_get("/internal/v1/events", events, name="internal_events")
    app.router.add_get("/internal/v1/keys/{key_id}", key_record, name="internal_key")
    app.router.add_post("/internal/v1/usage", usage, name="internal_usage")
    app.router.add_post("/internal/v1/gateways/heartbeat", heartbeat, name="internal_heartbeat")
    app.router.add_delete("/internal/v1/gateways/{instance_id}", gateway_left,
                          name="internal_gateway_left")
