"""A revocation's receipt for the API: the ``wait`` parameter, the event's sequence, the wait.

``POST /api/v1/keys/{id}/revoke?wait=N`` answers once every live gateway process has applied
the revocation's event, or after N seconds, whichever comes first (see heartbeats.py for what
"applied" and "live" rest on, docs/api.md for the response). An outbox row is given its
sequence only after it commits (outbox.py), so the wait first sequences it, here, rather than
wait for the relay's next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from apikeys_shared.events import Event

from .appkeys import CONFIG, ENGINE, HEARTBEATS, OUTBOX_WAKEUP
from .errors import BadRequest, DatabaseUnavailable
from .outbox import OutboxError, latest_for_key
from .propagation import Propagation

__all__ = ["MAX_WAIT_SECONDS", "parse_wait", "revocation_receipt", "revoke_at_once"]

T = TypeVar("T")

MAX_WAIT_SECONDS = 30
# A JSON number's spelling, without a sign (not Python's float(): no "nan", "inf" or "1_0").
_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


def parse_wait(raw: str | None) -> float | None:
    """The ``wait`` query parameter: seconds above 0, at most 30; None when absent."""
    if raw is None:
        return None
    value = float(raw) if len(raw) <= 40 and _NUMBER.fullmatch(raw) else -1.0
    if not 0 < value <= MAX_WAIT_SECONDS:
        raise BadRequest(
            f"wait must be a number of seconds above 0 and at most {MAX_WAIT_SECONDS}, "
            f"got {raw[:20]!r}", field="wait",
        )
    return value


async def _revocation_sequence(request: web.Request, key_id: str) -> int | None:
    """The sequence of the key's revocation event, sequencing it first if it just committed."""
    app = request.config_dict
    config = app[CONFIG]
    assert config.secrets.signer is not None  # load_config always reads the signing key
    try:
        signed = await latest_for_key(
            app[ENGINE], key_id, source=config.event_source, signer=config.secrets.signer,
        )
    except OutboxError as exc:
        raise DatabaseUnavailable(f"the key database is not available: {exc}") from exc
    app[OUTBOX_WAKEUP].set()
    if signed is None:
        return None
    event = Event.from_bytes(signed.body)
    # Revoked is terminal: a revoked key's newest event is its revocation.
    return event.sequence if not event.record.active else None


async def revoke_at_once(
    request: web.Request, revoking: Awaitable[T], *, started: float,
) -> tuple[T, Propagation]:
    """Revoke without ``wait``: the processes as this replica knows them (read within the last
    second, or while the revocation commits), so that the receipt costs the call next to
    nothing. The event has no sequence yet, so no gateway process can have it: the receipt
    says so (``sequence`` null, nobody confirmed)."""
    app = request.config_dict
    heartbeats = app[HEARTBEATS]
    reading = asyncio.ensure_future(heartbeats.recent(app[ENGINE]))
    try:
        revoked = await revoking
    except BaseException:
        reading.cancel()
        with contextlib.suppress(BaseException):
            await reading
        raise
    return revoked, heartbeats.receipt_of(await reading, None, started=started)


async def revocation_receipt(
    request: web.Request, key_id: str, *, wait: float, started: float,
) -> Propagation:
    """The receipt of ``key_id``'s revocation once every live process confirmed it, or after
    ``wait`` seconds."""
    app = request.config_dict
    sequence = await _revocation_sequence(request, key_id)
    return await app[HEARTBEATS].receipt(app[ENGINE], sequence, started=started, wait=wait)
