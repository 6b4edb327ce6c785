"""The snapshot gateways start from (``GET /internal/v1/snapshot``): which keys exist, which are
revoked, and the rolled keys' ends.

What it holds, and why a superset is as good as the exact set: ``apikeys_shared.snapshot``.
How it is read, and why that order: the feed's last sequence first, then the keys table. Every
event up to that sequence was committed before it was given its sequence (``outbox``), so the
keys table read afterwards shows each of those revocations and rolls; anything it shows beyond
them is true as well, and comes again from the feed after the snapshot's sequence.

The last snapshot made is kept in memory with its sets, and with the ID of the event at its
sequence. It is used again only while the feed still holds that very event there: a database
restored from a backup, or an asynchronous standby promoted, gives sequence numbers out again to
other events, and a snapshot of the old history would then miss what the new one holds. While it
holds, the cached snapshot is served as it is when the feed has not moved (or when a newer one
was made meanwhile), and brought up to date from the new events when the feed has moved by at
most ``INCREMENTAL_LIMIT`` of them: a key_service that has been running a while answers every
gateway start with a read of the few events since the last one. Otherwise the keys table is read
again, and the sets are built off the event loop. key_service makes the first one as it starts
(``internal``), so that the first gateway to start after it rarely waits for the table. Redis
keeps a copy too (the gateway's side), so most starts do not reach key_service at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Row, Table, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from apikeys_shared.errors import EnvelopeError
from apikeys_shared.events import Event
from apikeys_shared.signing import Signer
from apikeys_shared.snapshot import SignedSnapshot, Snapshot

from .db import READ_ONLY
from .models import ApiKey, OutboxEvent
from .outbox import OutboxError, fetch_feed

__all__ = ["INCREMENTAL_LIMIT", "SnapshotCache", "read_snapshot"]

FEED_PAGE = 1000

_keys = cast(Table, ApiKey.__table__)
_outbox = cast(Table, OutboxEvent.__table__)


# Brought up to date from at most this many new events; past it, the keys table is read again.
INCREMENTAL_LIMIT = 10_000


@dataclass
class SnapshotCache:
    """The last snapshot made by this process, its sets, the ID of the event at its sequence,
    and a lock so that concurrent asks make one."""

    signed: SignedSnapshot | None = None
    sequence: int = -1
    event_id: str | None = None
    active: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    ends: dict[str, datetime] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def _event_id_at(engine: AsyncEngine, sequence: int) -> str | None:
    """The ID of the event the feed holds at ``sequence`` (None at 0, or when it holds none)."""
    if sequence <= 0:
        return None
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READ_ONLY: True})
        found: str | None = (await conn.execute(
            select(_outbox.c.event_id).where(_outbox.c.sequence == sequence)
        )).scalar_one_or_none()
        return found


async def _still_current(engine: AsyncEngine, cache: SnapshotCache) -> bool:
    """The cache was made from the history the feed holds now (see the module docstring)."""
    return cache.signed is not None and (
        await _event_id_at(engine, cache.sequence)) == cache.event_id


async def _last_sequence(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READ_ONLY: True})
        return int((await conn.execute(
            select(func.coalesce(func.max(_outbox.c.sequence), 0))
        )).scalar_one())


def _sets(statuses: Sequence[Row[Any, Any]], rolled: Sequence[Row[Any, Any]],
          ) -> tuple[set[str], set[str], dict[str, datetime]]:
    active = {row.key_id for row in statuses if row.status == "active"}
    revoked = {row.key_id for row in statuses if row.status != "active"}
    ends = {row.key_id: row.revokes_at for row in rolled if row.key_id in active}
    return active, revoked, ends


async def _read_table(engine: AsyncEngine, cache: SnapshotCache) -> None:
    """Every key's status in one statement (one consistent view: no key can fall between the
    active and the revoked), then the rolled keys' ends (few, by their index). Both are read
    after the feed's last sequence, so each shows everything up to it (module docstring)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READ_ONLY: True})
        statuses = (await conn.execute(select(_keys.c.key_id, _keys.c.status))).all()
        rolled = (await conn.execute(
            select(_keys.c.key_id, _keys.c.revokes_at).where(_keys.c.revokes_at.is_not(None))
        )).all()
    # A million rows take a while to sort into sets: off the event loop.
    cache.active, cache.revoked, cache.ends = await asyncio.to_thread(_sets, statuses, rolled)


async def _read_events(engine: AsyncEngine, cache: SnapshotCache, sequence: int) -> None:
    """Apply the feed's events after ``cache.sequence`` up to ``sequence`` to the sets."""
    after = cache.sequence
    while after < sequence:
        page = await fetch_feed(engine, after, min(FEED_PAGE, sequence - after))
        if not page.events:
            raise OutboxError("the feed ended before the sequence it reported")
        for signed in page.events:
            event = Event.from_bytes(signed.body)
            record = event.record
            if not record.active:
                cache.active.discard(record.key_id)
                cache.revoked.add(record.key_id)
                cache.ends.pop(record.key_id, None)
            else:
                cache.active.add(record.key_id)
                if record.revokes_at is not None:
                    cache.ends[record.key_id] = record.revokes_at
            after = event.sequence


def _sign(cache: SnapshotCache, sequence: int, event_id: str | None,
          signer: Signer) -> SignedSnapshot:
    snapshot = Snapshot(sequence=sequence, time=datetime.now(UTC), event_id=event_id,
                        active=tuple(cache.active), revoked=tuple(cache.revoked),
                        ends=dict(cache.ends))
    return SignedSnapshot.sign(snapshot, signer)


async def read_snapshot(
    engine: AsyncEngine, signer: Signer, cache: SnapshotCache,
) -> SignedSnapshot:
    """The snapshot as of the feed's last sequence (or a newer one made meanwhile); OutboxError
    when the database is away."""
    try:
        sequence = await _last_sequence(engine)
        if cache.sequence >= sequence and await _still_current(engine, cache):
            assert cache.signed is not None
            return cache.signed
        async with cache.lock:
            current = await _still_current(engine, cache)
            if current and cache.sequence >= sequence:
                assert cache.signed is not None
                return cache.signed  # made while this ask waited for the lock
            if current and sequence - cache.sequence <= INCREMENTAL_LIMIT:
                await _read_events(engine, cache, sequence)
            else:
                await _read_table(engine, cache)
            event_id = await _event_id_at(engine, sequence)
            # Serialising and signing a large set takes a while: off the event loop.
            cache.signed = await asyncio.to_thread(_sign, cache, sequence, event_id, signer)
            cache.sequence, cache.event_id = sequence, event_id
            return cache.signed
    except (SQLAlchemyError, EnvelopeError) as exc:
        cache.signed = None  # a read that failed half-way leaves nothing to build on
        raise OutboxError(f"reading the revoked keys failed: {exc.__class__.__name__}") from exc
