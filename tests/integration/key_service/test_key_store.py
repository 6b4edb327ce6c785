"""The service layer on the real databases: one transaction per change, and concurrent writers."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apikeys_shared.config import Env, load_secrets
from apikeys_shared.events import KeyRecord
from key_service import keys as keys_module
from key_service.db import create_engine, make_sessionmaker, migrate_async, write_connection
from key_service.errors import Conflict, NotFound
from key_service.keys import Actor, KeyService
from key_service.models import ApiKey, AuditEntry, OutboxEvent

ACTOR = Actor(user_id=None, username="tester", client_address="192.0.2.7", request_id="r-1")


@pytest.fixture
def service(
    sessionmaker: async_sessionmaker[AsyncSession], secrets_env: dict[str, str],
) -> KeyService:
    """The service layer with fresh peppers."""
    secrets = load_secrets(Env(secrets_env), signer=False, verifier=False)
    return KeyService(sessionmaker, secrets.peppers, wakeup=asyncio.Event())


async def _counts(sm: async_sessionmaker[AsyncSession]) -> tuple[int, int, int]:
    async with sm() as db:
        return (
            int(await db.scalar(select(func.count()).select_from(ApiKey)) or 0),
            int(await db.scalar(select(func.count()).select_from(AuditEntry)) or 0),
            int(await db.scalar(select(func.count()).select_from(OutboxEvent)) or 0),
        )


async def test_issue_writes_key_audit_and_outbox_and_wakes_the_relay(
    service: KeyService, sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    wakeup = service._wakeup
    assert wakeup is not None
    issued = await service.issue("payments", ACTOR)
    assert wakeup.is_set()
    async with sessionmaker() as db:
        key = await db.get(ApiKey, issued.key.key_id)
        audit = (await db.scalars(select(AuditEntry))).one()
        event = (await db.scalars(select(OutboxEvent))).one()
    assert key is not None
    assert key.secret_hash != issued.secret
    assert (audit.actor, audit.action, audit.key_id) == ("tester", "key.issued", key.key_id)
    assert (audit.client_address, audit.request_id) == ("192.0.2.7", "r-1")
    assert event.event_type == "apikey.issued"
    assert (event.sequence, event.body, event.signature, event.sent_at) == (None, None, None, None)
    uuid.UUID(event.event_id)
    record = KeyRecord.from_json(json.loads(event.record))
    assert record.key_id == key.key_id
    assert record.status == "active"
    assert record.secret_hash == key.secret_hash


async def test_revoke_writes_all_three_and_is_permanent(
    service: KeyService, sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    issued = await service.issue("to revoke", ACTOR)
    revoked = await service.revoke(issued.key.key_id, ACTOR)
    assert revoked.status == "revoked"
    assert revoked.revoked_at is not None
    assert revoked.revoked_at >= revoked.issued_at
    with pytest.raises(Conflict):
        await service.revoke(issued.key.key_id, ACTOR)
    with pytest.raises(NotFound):
        await service.revoke(str(uuid.uuid4()), ACTOR)
    assert await _counts(sessionmaker) == (1, 2, 2)
    async with sessionmaker() as db:
        last = (await db.scalars(select(OutboxEvent).order_by(OutboxEvent.id.desc()))).first()
    assert last is not None
    assert last.event_type == "apikey.revoked"
    assert json.loads(last.record)["status"] == "revoked"


async def test_a_failure_at_the_last_write_leaves_nothing(
    service: KeyService, sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await service.issue("first", ACTOR)
    async with sessionmaker() as db:
        taken = (await db.scalars(select(OutboxEvent.event_id))).one()
    # The next outbox row reuses that event ID: its insert (the last of the three) must fail,
    # after the key and audit rows were written in the same transaction (on PostgreSQL in the
    # same statement, as data-modifying CTEs before it).
    monkeypatch.setattr(keys_module.uuid, "uuid4", lambda: uuid.UUID(taken))
    with pytest.raises(IntegrityError):
        await service.issue("second", ACTOR)
    with pytest.raises(IntegrityError):
        await service.revoke(first.key.key_id, ACTOR)
    assert await _counts(sessionmaker) == (1, 1, 1)
    key = await service.get(first.key.key_id)
    assert key.status == "active"
    assert key.revoked_at is None


async def test_concurrent_issues_and_revokes_all_succeed(
    service: KeyService, sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # Many writers at once: on SQLite this needs BEGIN IMMEDIATE (no "database is locked").
    issued = await asyncio.gather(*(service.issue(f"c{i}", ACTOR) for i in range(60)))
    ids = [i.key.key_id for i in issued]
    results = await asyncio.gather(
        *(service.revoke(k, ACTOR) for k in ids[:30] + ids[:10]), return_exceptions=True
    )
    conflicts = [r for r in results if isinstance(r, Conflict)]
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, Conflict)]
    assert others == []
    assert len(conflicts) == 10
    assert await _counts(sessionmaker) == (60, 90, 90)
    page = await service.list(limit=500)
    assert [k.status for k in page.items] == ["active"] * 30 + ["revoked"] * 30


async def test_list_pages_agree_with_one_big_page(service: KeyService) -> None:
    issued = [await service.issue(f"n{i}", ACTOR) for i in range(23)]
    for index in (3, 17, 0, 22, 9):
        await service.revoke(issued[index].key.key_id, ACTOR)
    everything = (await service.list(limit=500)).items
    assert len(everything) == 23
    for limit in (1, 5, 18, 19, 22, 23):
        seen = []
        cursor = None
        while True:
            page = await service.list(limit=limit, cursor=cursor)
            seen += [k.key_id for k in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [k.key_id for k in everything], limit
    revoked = [k.key_id for k in everything if k.status == "revoked"]
    assert revoked == [issued[i].key.key_id for i in (3, 17, 0, 22, 9)]


async def test_two_engines_on_one_sqlite_file_both_write(
    sqlite_url: str, secrets_env: dict[str, str],
) -> None:
    # Two engines stand for two processes: their writers meet in SQLite's own lock, where
    # BEGIN IMMEDIATE and the busy timeout make them wait instead of failing.
    await migrate_async(sqlite_url)
    peppers = load_secrets(Env(secrets_env), signer=False, verifier=False).peppers
    engines = [create_engine(sqlite_url), create_engine(sqlite_url)]
    try:
        services = [KeyService(make_sessionmaker(e), peppers) for e in engines]
        issued = await asyncio.gather(
            *(services[i % 2].issue(f"two {i}", ACTOR) for i in range(60))
        )
        await asyncio.gather(*(services[i % 2].revoke(k.key.key_id, ACTOR)
                               for i, k in enumerate(issued[:20])))
        assert await _counts(make_sessionmaker(engines[0])) == (60, 80, 80)
    finally:
        for engine in engines:
            await engine.dispose()


async def test_core_writers_take_turns_with_the_service(
    service: KeyService, sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # write_connection (for code that works on the engine) shares the service's turn-taking.
    engine = sessionmaker.kw["bind"]

    async def touch() -> None:
        async with write_connection(engine) as conn:
            await conn.execute(text("DELETE FROM login_throttle WHERE subject = 'nobody'"))

    results = await asyncio.gather(
        *(service.issue(f"w{i}", ACTOR) for i in range(20)), *(touch() for _ in range(20)),
        return_exceptions=True,
    )
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert await _counts(sessionmaker) == (20, 20, 20)
