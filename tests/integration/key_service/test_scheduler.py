"""The revocation scheduler on SQLite and PostgreSQL, with injected clocks: a rolled key is revoked
exactly when its overlap ends, exactly once however many replicas run, after a restart too, and
through the outbox like any revocation. No test waits for an overlap to pass."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apikeys_shared.config import Env, load_secrets
from apikeys_shared.events import KeyRecord
from apikeys_shared.hashing import PepperSet
from key_service.db import create_engine, make_sessionmaker, migrate_async
from key_service.errors import Conflict
from key_service.keys import Actor, KeyService
from key_service.metrics import Metrics
from key_service.models import ApiKey, AuditEntry, OutboxEvent
from key_service.scheduler import RevocationScheduler
from tests.support.faultproxy import FaultProxy
from tests.support.stack import eventually

ACTOR = Actor(user_id=None, username="ops", client_address="192.0.2.1")
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class Clock:
    """A clock the test sets by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def peppers(secrets_env: dict[str, str]) -> PepperSet:
    """Fresh peppers."""
    return load_secrets(Env(secrets_env), signer=False, verifier=False).peppers


def scheduler_on(
    sessionmaker: async_sessionmaker[AsyncSession], peppers: PepperSet, clock: Clock,
    wakeup: asyncio.Event | None = None, poll_interval: float = 3600.0, batch: int = 100,
) -> RevocationScheduler:
    """A scheduler with its own service layer, as scheduler_ctx wires one, on ``clock``."""
    service = KeyService(sessionmaker, peppers, wakeup=asyncio.Event(), clock=clock)
    return RevocationScheduler(service, wakeup=wakeup or asyncio.Event(), metrics=Metrics(),
                               clock=clock, poll_interval=poll_interval, batch=batch)


async def _roll(service: KeyService, name: str, overlap: int) -> tuple[str, str]:
    issued = await service.issue(name, ACTOR)
    rolled = await service.roll(issued.key.key_id, overlap, ACTOR)
    return issued.key.key_id, rolled.key.key_id


async def _key(sm: async_sessionmaker[AsyncSession], key_id: str) -> ApiKey:
    async with sm() as db:
        key = await db.get(ApiKey, key_id)
    assert key is not None
    return key


async def _revocations(sm: async_sessionmaker[AsyncSession]) -> tuple[list[str], list[str]]:
    """The key IDs of every key.revoked audit row and every apikey.revoked outbox row."""
    async with sm() as db:
        audit = (await db.scalars(
            select(AuditEntry.key_id).where(AuditEntry.action == "key.revoked")
        )).all()
        events = (await db.scalars(
            select(OutboxEvent.key_id).where(OutboxEvent.event_type == "apikey.revoked")
        )).all()
    return [a for a in audit if a is not None], list(events)


async def test_the_old_key_is_revoked_at_revokes_at_and_not_a_moment_before(
    sessionmaker: async_sessionmaker[AsyncSession], peppers: PepperSet,
) -> None:
    clock = Clock(T0)
    service = KeyService(sessionmaker, peppers, clock=clock)
    old_id, new_id = await _roll(service, "billing", 3600)
    scheduler = scheduler_on(sessionmaker, peppers, clock)
    assert await service.next_revocation() == T0 + timedelta(hours=1)

    clock.now = T0 + timedelta(seconds=3599, microseconds=999_999)
    assert await scheduler.run_once() == 0
    assert (await _key(sessionmaker, old_id)).status == "active"

    clock.now = T0 + timedelta(hours=1)
    assert await scheduler.run_once() == 1
    old = await _key(sessionmaker, old_id)
    assert (old.status, old.revoked_at, old.revokes_at, old.replaced_by) == (
        "revoked", T0 + timedelta(hours=1), None, new_id)
    assert (await _key(sessionmaker, new_id)).status == "active"
    assert await service.next_revocation() is None

    clock.now = T0 + timedelta(days=3)
    assert await scheduler.run_once() == 0  # exactly once
    async with sessionmaker() as db:
        rows = (await db.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all()
        audit = (await db.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    assert [(r.key_id, r.event_type) for r in rows] == [
        (old_id, "apikey.issued"), (new_id, "apikey.issued"), (old_id, "apikey.rolled"),
        (old_id, "apikey.revoked"),
    ]
    revoked = KeyRecord.from_json(json.loads(rows[-1].record))
    assert (revoked.status, revoked.revoked_at, revoked.revokes_at) == (
        "revoked", T0 + timedelta(hours=1), None)
    last = audit[-1]
    assert (last.action, last.key_id, last.actor, last.actor_type, last.at) == (
        "key.revoked", old_id, "key_service", "system", T0 + timedelta(hours=1))


async def test_a_late_run_revokes_as_of_the_scheduled_moment_and_in_order(
    sessionmaker: async_sessionmaker[AsyncSession], peppers: PepperSet,
) -> None:
    clock = Clock(T0)
    service = KeyService(sessionmaker, peppers, clock=clock)
    rolled = [await _roll(service, f"k{i}", overlap) for i, overlap in
              enumerate([7200, 60, 3600, 30 * 86400])]
    clock.now = T0 + timedelta(days=2)  # key_service was down for two days
    assert await scheduler_on(sessionmaker, peppers, clock).run_once() == 3
    async with sessionmaker() as db:
        order = (await db.scalars(
            select(OutboxEvent.key_id).where(OutboxEvent.event_type == "apikey.revoked")
            .order_by(OutboxEvent.id)
        )).all()
    assert order == [rolled[1][0], rolled[2][0], rolled[0][0]]  # soonest due first
    for (old_id, _), overlap in zip(rolled[:3], [7200, 60, 3600], strict=True):
        assert (await _key(sessionmaker, old_id)).revoked_at == T0 + timedelta(seconds=overlap)
    assert (await _key(sessionmaker, rolled[3][0])).status == "active"
    assert await service.next_revocation() == T0 + timedelta(days=30)


async def test_it_catches_up_at_start(
    sessionmaker: async_sessionmaker[AsyncSession], peppers: PepperSet,
) -> None:
    # Rolled two days ago with a one-day overlap; no scheduler ran since. Started now (the real
    # clock), its first round revokes the key at once.
    past = Clock(datetime.now(UTC) - timedelta(days=2))
    service = KeyService(sessionmaker, peppers, clock=past)
    old_id, _ = await _roll(service, "forgotten", 86400)
    scheduler = RevocationScheduler(
        KeyService(sessionmaker, peppers), wakeup=asyncio.Event(), metrics=Metrics(),
        poll_interval=3600,
    )
    await scheduler.start()
    try:
        async def revoked() -> bool:
            return (await _key(sessionmaker, old_id)).status == "revoked"

        await eventually(revoked, "the key due while no scheduler ran was revoked at start")
    finally:
        await scheduler.stop()
    assert (await _key(sessionmaker, old_id)).revoked_at == past.now + timedelta(days=1)


async def test_a_roll_wakes_the_sleeping_scheduler(
    sessionmaker: async_sessionmaker[AsyncSession], peppers: PepperSet,
) -> None:
    # The scheduler's clock is two hours ahead of the service's, so a key rolled with a
    # one-hour overlap is already due for it: what is tested is that the roll wakes it from a
    # sleep that would otherwise last an hour (its poll interval), not the passing of time.
    wakeup = asyncio.Event()
    scheduler = scheduler_on(sessionmaker, peppers, Clock(T0 + timedelta(hours=2)), wakeup)
    service = KeyService(sessionmaker, peppers, clock=Clock(T0), scheduler_wakeup=wakeup)
    await scheduler.start()
    try:
        await eventually(lambda: _idle(wakeup), "the scheduler went to sleep")
        old_id, _ = await _roll(service, "rolled while it slept", 3600)

        async def revoked() -> bool:
            return (await _key(sessionmaker, old_id)).status == "revoked"

        await eventually(revoked, "the woken scheduler revoked the key")
    finally:
        await scheduler.stop()


async def _idle(wakeup: asyncio.Event) -> bool:
    # The loop clears the event at the start of each round; cleared means it has run once.
    return not wakeup.is_set()


async def test_replicas_revoke_each_key_exactly_once(
    database_url: str, peppers: PepperSet,
) -> None:
    await migrate_async(database_url)
    engines = [create_engine(database_url) for _ in range(3)]
    try:
        makers = [make_sessionmaker(e) for e in engines]
        clock = Clock(T0)
        service = KeyService(makers[0], peppers, clock=clock)
        rolled = [await _roll(service, f"k{i}", 60 + i) for i in range(40)]
        clock.now = T0 + timedelta(hours=1)
        # Small batches, so that the replicas' transactions interleave.
        schedulers = [scheduler_on(m, peppers, clock, batch=3) for m in makers]
        # Three replicas' schedulers and an administrator revoking some of the same keys by
        # hand, all at once.
        manual = [KeyService(makers[i % 3], peppers, clock=clock) for i in range(5)]
        by_hand_won: list[str] = []

        async def by_hand(index: int) -> None:
            key_id = rolled[index * 7][0]
            try:
                await manual[index].revoke(key_id, ACTOR)
                by_hand_won.append(key_id)
            except Conflict:  # a scheduler got there first
                pass

        results = await asyncio.gather(
            *(s.run_once() for s in schedulers), *(by_hand(i) for i in range(5)),
        )
        audit, events = await _revocations(makers[0])
        old_ids = sorted(old for old, _ in rolled)
        assert sorted(audit) == old_ids  # every key once, none twice
        assert sorted(events) == old_ids
        by_schedulers = [c for c in results[:3] if isinstance(c, int)]
        assert sum(by_schedulers) + len(by_hand_won) == 40
        async with makers[0]() as db:
            active_old = await db.scalar(select(func.count()).select_from(ApiKey).where(
                ApiKey.replaced_by.is_not(None), ApiKey.status == "active"))
        assert active_old == 0
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_it_rides_out_a_database_outage(
    postgres_url: str, peppers: PepperSet, fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    # (asyncpg may leave a transport unclosed when the proxy cuts it: see test_outage.py.)
    await migrate_async(postgres_url)
    url = make_url(postgres_url)
    proxy = fault_proxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    engine = create_engine(proxied)
    try:
        maker = make_sessionmaker(engine)
        clock = Clock(T0)
        old_id, _ = await _roll(KeyService(maker, peppers, clock=clock), "outage", 60)
        metrics = Metrics()
        scheduler = RevocationScheduler(
            KeyService(maker, peppers, clock=clock), wakeup=asyncio.Event(), metrics=metrics,
            clock=clock, poll_interval=0.2,
        )
        proxy.cut()
        clock.now = T0 + timedelta(minutes=5)
        await scheduler.start()
        try:
            async def failing() -> bool:
                errors = metrics.registry.get_sample_value("key_service_scheduler_errors_total")
                return (errors or 0) >= 2

            await eventually(failing, "the scheduler counted its failed rounds")
            proxy.restore()

            async def revoked() -> bool:
                return (await _key(maker, old_id)).status == "revoked"

            await eventually(revoked, "the scheduler revoked the key once the database was back")
        finally:
            await scheduler.stop()
        assert (await _revocations(maker))[0] == [old_id]
    finally:
        await engine.dispose()
        gc.collect()
