"""The event outbox: sequencing and signing committed rows, and reading the signed feed.

The service layer writes an ``outbox`` row in the key's own transaction with ``sequence`` NULL.
Nothing here ever runs inside that transaction: the sequencer only sees rows that have
committed, and gives them their place in the feed afterwards, under a lock.

Why not simply use ``id`` as the feed position? Because ``id`` is handed out when a row is
*inserted*, not when it *commits*. Transaction A can take id 10, transaction B id 11, and B can
commit first. A gateway reading the feed between the two commits would see 11, remember "I have
everything up to 11", and never ask for 10 once A commits. Giving each row its sequence only
after it has committed, one sequencer at a time, makes the feed append-only: every new sequence
is larger than every sequence any reader has already seen, and the numbers are dense (no gaps),
so a consumer that sees a gap knows it missed something.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apikeys_shared.errors import ApiKeysError
from apikeys_shared.events import (
    EVENT_TYPES,
    ROUTING_KEYS,
    Event,
    KeyRecord,
    SignedEvent,
    event_type_for,
)
from apikeys_shared.signing import Signer

from .db import READ_ONLY, write_connection
from .models import OutboxEvent

__all__ = [
    "NOTIFY_CHANNEL",
    "RELAY_LOCK_KEY",
    "SEQUENCER_LOCK_KEY",
    "FeedPage",
    "OutboxError",
    "PendingEvent",
    "backlog",
    "fetch_feed",
    "fetch_unsent",
    "has_pending",
    "latest_for_key",
    "mark_sent",
    "sequence_pending",
]

# PostgreSQL advisory lock keys (any constant 64-bit numbers unique to this purpose will do):
# "key_outS" for the sequencer's transaction lock, "key_outR" for the relay's session lock.
SEQUENCER_LOCK_KEY = int.from_bytes(b"key_outS", "big") & 0x7FFF_FFFF_FFFF_FFFF
RELAY_LOCK_KEY = int.from_bytes(b"key_outR", "big") & 0x7FFF_FFFF_FFFF_FFFF
# LISTEN/NOTIFY channel that tells the replica holding the relay lock that rows were sequenced.
NOTIFY_CHANNEL = "key_service_outbox"
# Rows sequenced per transaction; the sequencer loops until none are left.
SEQUENCE_BATCH = 1000

_outbox = cast(Table, OutboxEvent.__table__)


class OutboxError(Exception):
    """The outbox could not be read or advanced (database away, or a malformed row)."""


@dataclass(frozen=True)
class PendingEvent:
    """A sequenced row the relay still has to publish."""

    id: int
    event_id: str
    sequence: int
    created_at: datetime
    signed: SignedEvent
    routing_key: str


@dataclass(frozen=True)
class FeedPage:
    """One page of the feed and the highest sequence assigned so far."""

    events: list[SignedEvent]
    last_sequence: int


def _is_postgres(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


def _build(row: Any, sequence: int, source: str, signer: Signer) -> SignedEvent:
    """Sign one outbox row as the event at ``sequence``; OutboxError if the row is malformed."""
    row_id = row.id
    try:
        record = KeyRecord.from_json(json.loads(row.record))
    except (ValueError, ApiKeysError) as exc:
        raise OutboxError(f"outbox row {row_id} holds a malformed key record: {exc}") from exc
    event_type = row.event_type
    if event_type not in EVENT_TYPES or event_type != event_type_for(record):
        raise OutboxError(
            f"outbox row {row_id} has event type {event_type!r} for a {record.status} key"
        )
    event = Event(
        id=row.event_id,
        source=source,
        type=event_type,
        time=row.created_at,
        sequence=sequence,
        record=record,
    )
    return SignedEvent.sign(event, signer)


async def _lock_for_sequencing(conn: AsyncConnection) -> None:
    if _is_postgres(conn):
        # Held until this transaction commits, so the next sequencer reads our max(sequence).
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEQUENCER_LOCK_KEY})
    # SQLite: the engine opens every transaction that is not marked read-only with BEGIN
    # IMMEDIATE (see db.py), so this one holds the database's single write lock from its
    # first statement: no other writer, in this process or another, can sequence between our
    # read of max(sequence) and our update.


@asynccontextmanager
async def _reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads only (on SQLite it does not take the write lock)."""
    async with engine.connect() as conn:
        yield await conn.execution_options(**{READ_ONLY: True})


async def _sequence_batch(
    engine: AsyncEngine, source: str, signer: Signer, notify: bool,
) -> int:
    async with write_connection(engine) as conn:
        await _lock_for_sequencing(conn)
        rows = (await conn.execute(
            select(
                _outbox.c.id, _outbox.c.event_id, _outbox.c.event_type, _outbox.c.record,
                _outbox.c.created_at,
            )
            .where(_outbox.c.sequence.is_(None))
            .order_by(_outbox.c.id)
            .limit(SEQUENCE_BATCH)
        )).all()
        if not rows:
            return 0
        last = (await conn.execute(select(func.coalesce(func.max(_outbox.c.sequence), 0))))
        next_sequence = int(last.scalar_one()) + 1
        params = []
        for offset, row in enumerate(rows):
            signed = _build(row, next_sequence + offset, source, signer)
            params.append({
                "row_id": row.id,
                "seq": next_sequence + offset,
                "body": signed.body.decode("ascii"),
                "signature": signed.signature,
                "signing_key": signed.signing_key,
            })
        await conn.execute(
            update(_outbox)
            .where(_outbox.c.id == bindparam("row_id"))
            .values(
                sequence=bindparam("seq"), body=bindparam("body"),
                signature=bindparam("signature"), signing_key=bindparam("signing_key"),
            ),
            params,
        )
        if notify and _is_postgres(conn):
            # Delivered at commit: wakes the replica that holds the relay lock at once.
            await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": NOTIFY_CHANNEL})
        return len(rows)


async def sequence_pending(
    engine: AsyncEngine, *, source: str, signer: Signer, notify: bool = False,
) -> int:
    """Give every committed, unsequenced row its sequence and signed body; return how many.

    ``notify`` (PostgreSQL only) tells other replicas' relays that rows are ready.
    """
    total = 0
    try:
        while True:
            done = await _sequence_batch(engine, source, signer, notify)
            total += done
            if done < SEQUENCE_BATCH:
                return total
    except SQLAlchemyError as exc:
        raise OutboxError(f"sequencing the outbox failed: {exc.__class__.__name__}") from exc


def _signed(row: Any) -> SignedEvent:
    return SignedEvent(
        body=row.body.encode("ascii"),
        signature=row.signature,
        signing_key=row.signing_key,
    )


async def has_pending(engine: AsyncEngine, key_id: str | None = None) -> bool:
    """True when committed rows (of ``key_id``, if given) still wait for their sequence."""
    query = select(_outbox.c.id).where(_outbox.c.sequence.is_(None))
    if key_id is not None:
        query = query.where(_outbox.c.key_id == key_id)
    try:
        async with _reading(engine) as conn:
            found = (await conn.execute(query.limit(1))).first()
    except SQLAlchemyError as exc:
        raise OutboxError(f"reading the outbox failed: {exc.__class__.__name__}") from exc
    return found is not None


async def fetch_feed(engine: AsyncEngine, after: int, limit: int) -> FeedPage:
    """Signed events with a sequence above ``after``, in order, at most ``limit`` of them.

    ``last_sequence`` and the events agree: the highest sequence is read first and the events
    are bounded by it, so a page that holds fewer than ``limit`` events holds every event up to
    ``last_sequence`` (sequences become visible in order, a sequencer's batch all at once).
    Reading them the other way round, a batch committed in between could raise
    ``last_sequence`` past events the page does not hold, and a reader that trusts it would
    skip them.
    """
    try:
        async with _reading(engine) as conn:
            last = int((await conn.execute(
                select(func.coalesce(func.max(_outbox.c.sequence), 0))
            )).scalar_one())
            rows = (await conn.execute(
                select(_outbox.c.body, _outbox.c.signature, _outbox.c.signing_key)
                .where(_outbox.c.sequence > after, _outbox.c.sequence <= last)
                .order_by(_outbox.c.sequence)
                .limit(limit)
            )).all()
    except SQLAlchemyError as exc:
        raise OutboxError(f"reading the feed failed: {exc.__class__.__name__}") from exc
    return FeedPage(events=[_signed(r) for r in rows], last_sequence=last)


async def latest_for_key(
    engine: AsyncEngine, key_id: str, *, source: str, signer: Signer,
) -> SignedEvent | None:
    """The key's newest signed event, or None for a key never announced.

    Rows of the key that are committed but not yet sequenced are sequenced first, so a
    revocation that has just committed is never answered with the older ``issued`` record.
    """
    if await has_pending(engine, key_id):
        await sequence_pending(engine, source=source, signer=signer, notify=True)
    try:
        async with _reading(engine) as conn:
            row = (await conn.execute(
                select(_outbox.c.body, _outbox.c.signature, _outbox.c.signing_key)
                .where(_outbox.c.key_id == key_id, _outbox.c.sequence.is_not(None))
                .order_by(_outbox.c.sequence.desc())
                .limit(1)
            )).first()
    except SQLAlchemyError as exc:
        raise OutboxError(f"reading the outbox failed: {exc.__class__.__name__}") from exc
    return None if row is None else _signed(row)


async def fetch_unsent(engine: AsyncEngine, limit: int) -> list[PendingEvent]:
    """Sequenced rows not yet confirmed by the broker, lowest sequence first."""
    try:
        async with _reading(engine) as conn:
            rows = (await conn.execute(
                select(
                    _outbox.c.id, _outbox.c.event_id, _outbox.c.sequence, _outbox.c.created_at,
                    _outbox.c.event_type, _outbox.c.body, _outbox.c.signature,
                    _outbox.c.signing_key,
                )
                .where(_outbox.c.sent_at.is_(None), _outbox.c.sequence.is_not(None))
                .order_by(_outbox.c.sequence)
                .limit(limit)
            )).all()
    except SQLAlchemyError as exc:
        raise OutboxError(f"reading the outbox failed: {exc.__class__.__name__}") from exc
    return [
        PendingEvent(
            id=r.id, event_id=r.event_id, sequence=r.sequence, created_at=r.created_at,
            signed=_signed(r), routing_key=ROUTING_KEYS[r.event_type],
        )
        for r in rows
    ]


async def mark_sent(engine: AsyncEngine, row_ids: Sequence[int], at: datetime) -> None:
    """Record the broker's confirm of ``row_ids``."""
    if not row_ids:
        return
    try:
        async with write_connection(engine) as conn:
            if _is_postgres(conn):
                # No need to wait for the WAL flush: should the database crash and lose this
                # commit, the rows are published again, and consumers deduplicate by event ID.
                await conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
            await conn.execute(
                update(_outbox)
                .where(_outbox.c.id.in_(list(row_ids)), _outbox.c.sent_at.is_(None))
                .values(sent_at=at)
            )
    except SQLAlchemyError as exc:
        raise OutboxError(f"marking events sent failed: {exc.__class__.__name__}") from exc


async def backlog(engine: AsyncEngine) -> int:
    """How many rows the broker has not confirmed yet."""
    try:
        async with _reading(engine) as conn:
            count = (await conn.execute(
                select(func.count()).select_from(_outbox).where(_outbox.c.sent_at.is_(None))
            )).scalar_one()
    except SQLAlchemyError as exc:
        raise OutboxError(f"reading the outbox failed: {exc.__class__.__name__}") from exc
    return int(count)
