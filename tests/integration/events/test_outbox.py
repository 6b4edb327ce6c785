"""The sequencer and the feed on real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import random

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from apikeys_shared.events import SignedEvent
from apikeys_shared.keys import new_key_id
from apikeys_shared.signing import Verifier
from key_service.config import KeyServiceConfig
from key_service.db import create_engine, migrate_async
from key_service.models import OutboxEvent
from key_service.outbox import fetch_feed, has_pending, latest_for_key, sequence_pending

from .conftest import insert_rows, outbox_row


async def _sequence(engine: AsyncEngine, config: KeyServiceConfig) -> int:
    assert config.secrets.signer is not None
    return await sequence_pending(
        engine, source=config.event_source, signer=config.secrets.signer,
    )


async def _rows(engine: AsyncEngine) -> list[OutboxEvent]:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        return list((await session.execute(select(OutboxEvent).order_by(OutboxEvent.id))).scalars())


async def test_rows_get_dense_sequences_and_verifiable_signatures(
    engine: AsyncEngine, config: KeyServiceConfig, verifier: Verifier,
) -> None:
    rows = [outbox_row() for _ in range(30)]
    key = rows[3].key_id
    rows.append(outbox_row(key, "revoked"))
    await insert_rows(engine, rows)
    assert await has_pending(engine)

    assert await _sequence(engine, config) == 31
    assert await _sequence(engine, config) == 0
    assert not await has_pending(engine)

    stored = await _rows(engine)
    assert [r.sequence for r in stored] == list(range(1, 32))
    for row, written in zip(stored, rows, strict=True):
        assert row.body is not None
        assert row.signature is not None
        assert row.signing_key is not None
        event = SignedEvent(
            row.body.encode("ascii"), row.signature, row.signing_key,
        ).verify(verifier)
        assert event.id == written.event_id
        assert event.sequence == row.sequence
        assert event.source == config.event_source
        assert event.type == written.event_type
        assert event.record.to_json() == json.loads(written.record)
        assert row.sent_at is None


async def test_feed_pages_strictly_after_and_reports_last_sequence(
    engine: AsyncEngine, config: KeyServiceConfig, verifier: Verifier,
) -> None:
    empty = await fetch_feed(engine, 0, 10)
    assert empty.events == []
    assert empty.last_sequence == 0
    await insert_rows(engine, [outbox_row() for _ in range(12)])
    await _sequence(engine, config)

    first = await fetch_feed(engine, 0, 5)
    assert [e.verify(verifier).sequence for e in first.events] == [1, 2, 3, 4, 5]
    assert first.last_sequence == 12
    rest = await fetch_feed(engine, 5, 100)
    assert [e.verify(verifier).sequence for e in rest.events] == list(range(6, 13))
    assert (await fetch_feed(engine, 12, 100)).events == []


async def test_latest_for_key_sequences_pending_rows_first(
    engine: AsyncEngine, config: KeyServiceConfig, verifier: Verifier,
) -> None:
    assert config.secrets.signer is not None
    key = new_key_id()
    await insert_rows(engine, [outbox_row(key)])
    await _sequence(engine, config)
    # The revocation commits but no sequencer has run yet: the lookup must not answer "active".
    await insert_rows(engine, [outbox_row(key, "revoked")])
    signed = await latest_for_key(
        engine, key, source=config.event_source, signer=config.secrets.signer,
    )
    assert signed is not None
    event = signed.verify(verifier)
    assert event.record.status == "revoked"
    assert event.sequence == 2
    assert await latest_for_key(
        engine, new_key_id(), source=config.event_source, signer=config.secrets.signer,
    ) is None


async def test_sequence_follows_commit_order_not_insert_order(
    postgres_url: str, config: KeyServiceConfig,
) -> None:
    """A row inserted first but committed last is numbered last, so feed readers never miss it."""
    await migrate_async(postgres_url)
    engine = create_engine(postgres_url)
    try:
        early, late = outbox_row(), outbox_row()
        async with AsyncSession(engine, expire_on_commit=False) as slow:
            await slow.begin()
            slow.add(early)
            await slow.flush()  # takes the lower id, but does not commit yet
            await insert_rows(engine, [late])
            await _sequence(engine, config)
            seen = await fetch_feed(engine, 0, 100)
            assert seen.last_sequence == 1
            await slow.commit()
        await _sequence(engine, config)
        stored = {r.event_id: r for r in await _rows(engine)}
        assert stored[early.event_id].id < stored[late.event_id].id
        assert stored[late.event_id].sequence == 1
        assert stored[early.event_id].sequence == 2
        # A reader that had everything up to 1 finds the early row after it.
        after = await fetch_feed(engine, seen.last_sequence, 100)
        assert len(after.events) == 1
    finally:
        await engine.dispose()


async def test_concurrent_writers_and_sequencers_on_postgres(
    postgres_url: str, config: KeyServiceConfig, verifier: Verifier,
) -> None:
    """Many transactions committing in random order, three sequencers and a feed reader at once:
    sequences are dense and gap-free, and the reader, paging with ``after``, misses nothing and
    never sees a ``last_sequence`` beyond what its page holds."""
    await migrate_async(postgres_url)
    engine = create_engine(postgres_url, pool_size=20)
    writers, per_writer = 20, 15
    done = asyncio.Event()
    rng = random.Random(7)

    async def writer() -> None:
        for _ in range(per_writer):
            async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
                session.add(outbox_row())
                await session.flush()
                # Hold the transaction open a random while so ids and commits interleave.
                await asyncio.sleep(rng.random() * 0.01)

    async def sequencer() -> None:
        while not done.is_set():
            await _sequence(engine, config)
            await asyncio.sleep(0)

    seen: list[int] = []

    async def reader() -> None:
        after = 0
        while True:
            finished = done.is_set()
            page = await fetch_feed(engine, after, 1000)
            for signed in page.events:
                seen.append(signed.verify(verifier).sequence)
            if page.events:
                after = seen[-1]
            # A page shorter than the limit holds everything up to last_sequence.
            assert after == page.last_sequence
            if not page.events and finished:
                return
            await asyncio.sleep(0.005)

    try:
        tasks = [asyncio.create_task(sequencer()) for _ in range(3)]
        read = asyncio.create_task(reader())
        await asyncio.gather(*(writer() for _ in range(writers)))
        await _sequence(engine, config)
        done.set()
        await asyncio.gather(*tasks)
        await _sequence(engine, config)
        await read
        total = writers * per_writer
        stored = await _rows(engine)
        assert sorted(r.sequence or 0 for r in stored) == list(range(1, total + 1))
        assert seen == list(range(1, total + 1))
    finally:
        await engine.dispose()


async def test_two_sqlite_engines_sequence_without_gaps_or_duplicates(
    sqlite_url: str, config: KeyServiceConfig,
) -> None:
    """Two engines on one SQLite file (as two processes would be) sequence at the same time."""
    await migrate_async(sqlite_url)
    engines = [create_engine(sqlite_url), create_engine(sqlite_url)]
    try:
        async def write_and_sequence(engine: AsyncEngine) -> None:
            for _ in range(20):
                await insert_rows(engine, [outbox_row(), outbox_row()])
                await _sequence(engine, config)

        await asyncio.gather(*(write_and_sequence(e) for e in engines))
        stored = await _rows(engines[0])
        assert sorted(r.sequence or 0 for r in stored) == list(range(1, 81))
    finally:
        for engine in engines:
            await engine.dispose()
