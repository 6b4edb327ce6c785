"""The revocation snapshot gateways start from (``GET /internal/v1/snapshot``).

What it holds, and why a superset is as good as the exact set: ``apikeys_shared.snapshot``.
How it is read, and why that order: the feed's last sequence first, then the keys table. Every
event up to that sequence was committed before it was given its sequence (``outbox``), so the
keys table read afterwards shows each of those revocations and rolls; anything it shows beyond
them is true as well, and comes again from the feed after the snapshot's sequence.

The last snapshot made is kept in memory and served again while the feed has not moved: the
gateways of a rolling restart then cost one read of the keys table between them. Redis keeps a
copy too (the gateway's side), so most starts do not reach key_service at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from apikeys_shared.signing import Signer
from apikeys_shared.snapshot import SignedSnapshot, Snapshot

from .db import READ_ONLY
from .models import ApiKey, OutboxEvent
from .outbox import OutboxError

__all__ = ["SnapshotCache", "read_snapshot"]

_keys = cast(Table, ApiKey.__table__)
_outbox = cast(Table, OutboxEvent.__table__)


@dataclass
class SnapshotCache:
    """The last snapshot made by this process, and a lock so that concurrent asks make one."""

    signed: SignedSnapshot | None = None
    sequence: int = -1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def _last_sequence(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READ_ONLY: True})
        return int((await conn.execute(
            select(func.coalesce(func.max(_outbox.c.sequence), 0))
        )).scalar_one())


async def _make(engine: AsyncEngine, sequence: int, signer: Signer) -> SignedSnapshot:
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READ_ONLY: True})
        revoked = (await conn.execute(
            select(_keys.c.key_id).where(_keys.c.status == "revoked")
        )).scalars().all()
        ends = (await conn.execute(
            select(_keys.c.key_id, _keys.c.revokes_at)
            .where(_keys.c.status == "active", _keys.c.revokes_at.is_not(None))
        )).all()
    snapshot = Snapshot(
        sequence=sequence, time=datetime.now(UTC), revoked=tuple(revoked),
        ends={row.key_id: row.revokes_at for row in ends},
    )
    # Serialising and signing a large set takes a while: off the event loop.
    return await asyncio.to_thread(SignedSnapshot.sign, snapshot, signer)


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
                cache.signed = await _make(engine, sequence, signer)
                cache.sequence = sequence
            return cache.signed
    except SQLAlchemyError as exc:
        raise OutboxError(f"reading the revoked keys failed: {exc.__class__.__name__}") from exc
