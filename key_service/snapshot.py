"""The snapshot gateways start from (``GET /internal/v1/snapshot``): which keys exist, which are
revoked, and the rolled keys' ends.

What it holds, and why a superset is as good as the exact set: ``apikeys_shared.snapshot``.
How it is read, and why that order: the feed's last sequence first, then the keys table. Every
event up to that sequence was committed before it was given its sequence (``outbox``), so the
keys table read afterwards shows each of those revocations and rolls; anything it shows beyond
them is true as well, and comes again from the feed after the snapshot's sequence.

The last snapshot made is kept in memory with its sets. Asked again once the feed has moved on by
at most ``INCREMENTAL_LIMIT`` events, it is brought up to date from those events (the feed's own
signed bodies, read in order) instead of the whole table: a key_service that has been running a
while answers every gateway start with a read of the few events since the last one. Redis keeps
a copy too (the gateway's side), so most starts do not reach key_service at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, func, select
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
    """The last snapshot made by this process, its sets, and a lock so that concurrent asks
    make one."""

    signed: SignedSnapshot | None = None
    sequence: int = -1
    active: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    ends: dict[str, datetime] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def _last_sequence(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READ_ONLY: True})
        return int((await conn.execute(
            select(func.coalesce(func.max(_outbox.c.sequence), 0))
        )).scalar_one())


async def _read_table(engine: AsyncEngine, cache: SnapshotCache) -> None:
    """Every key's status (and a rolled key's end), in one statement: one consistent view."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READ_ONLY: True})
        rows = (await conn.execute(
            select(_keys.c.key_id, _keys.c.status, _keys.c.revokes_at)
        )).all()
    cache.active = {row.key_id for row in rows if row.status == "active"}
    cache.revoked = {row.key_id for row in rows if row.status != "active"}
    cache.ends = {row.key_id: row.revokes_at for row in rows
                  if row.status == "active" and row.revokes_at is not None}


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


async def read_snapshot(
    engine: AsyncEngine, signer: Signer, cache: SnapshotCache,
) -> SignedSnapshot:
    """The snapshot as of the feed's last sequence; OutboxError when the database is away."""
    try:
        sequence = await _last_sequence(engine)
        if cache.signed is not None and cache.sequence == sequence:
            return cache.signed
        async with cache.lock:
            if cache.signed is None or cache.sequence != sequence:
                behind = sequence - cache.sequence
                if cache.signed is not None and 0 < behind <= INCREMENTAL_LIMIT:
                    await _read_events(engine, cache, sequence)
                else:
                    # (Also when the feed went backwards: a database restored from a backup.)
                    await _read_table(engine, cache)
                snapshot = Snapshot(sequence=sequence, time=datetime.now(UTC),
                                    active=tuple(cache.active), revoked=tuple(cache.revoked),
                                    ends=dict(cache.ends))
                # Serialising and signing a large set takes a while: off the event loop.
                cache.signed = await asyncio.to_thread(SignedSnapshot.sign, snapshot, signer)
                cache.sequence = sequence
            return cache.signed
    except (SQLAlchemyError, EnvelopeError) as exc:
        raise OutboxError(f"reading the revoked keys failed: {exc.__class__.__name__}") from exc
