"""Fixtures of the event tests: a migrated database, a config pointing at the test's AMQP names,
outbox rows, and a subscriber queue bound before anything is published."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aio_pika.abc
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from apikeys_shared.events import Event, KeyRecord, SignedEvent
from apikeys_shared.keys import new_key_id
from apikeys_shared.signing import Verifier
from key_service.app import create_app
from key_service.appkeys import SESSIONMAKER
from key_service.config import KeyServiceConfig, load_config
from key_service.db import create_engine, migrate_async
from key_service.models import OutboxEvent
from key_service.users import ADMIN_ROLE, create_user
from tests.conftest import AmqpNames
from tests.support.services import RABBITMQ_URL


def make_config(
    secrets_env: dict[str, str], database_url: str, data_dir: Path, exchange: str,
    rabbitmq_url: str = RABBITMQ_URL,
) -> KeyServiceConfig:
    """A key_service config for one test (its database, its exchange)."""
    config = load_config({
        **secrets_env,
        "KEY_SERVICE_DATABASE_URL": database_url,
        "KEY_SERVICE_DATA_DIR": str(data_dir),
        "RABBITMQ_URL": rabbitmq_url,
    })
    return replace(config, exchange=exchange)


@pytest.fixture
def verifier(secrets_env: dict[str, str]) -> Verifier:
    """Trusts the test deployment's verify key only."""
    return Verifier.from_base64(secrets_env["APIKEYS_VERIFY_KEYS"].split(","))


@pytest.fixture
def config(
    secrets_env: dict[str, str], tmp_path: Path, amqp_names: AmqpNames,
) -> KeyServiceConfig:
    """The test's secrets and exchange. Outbox functions and relays take their engine
    separately, so the database URL here is a placeholder that nothing opens."""
    return make_config(
        secrets_env, f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", tmp_path,
        amqp_names.exchange,
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the migrated test database."""
    await migrate_async(database_url)
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


def record_json(key_id: str, status: str = "active") -> str:
    """A valid key record as the service layer stores it."""
    now = datetime.now(UTC)
    return json.dumps(KeyRecord(
        key_id=key_id, name=f"key {key_id[:8]}",
        status="revoked" if status == "revoked" else "active",
        issued_at=now, revoked_at=now if status == "revoked" else None,
        secret_hash="ab" * 32, hash_version="p1",
    ).to_json())


def outbox_row(key_id: str | None = None, status: str = "active") -> OutboxEvent:
    """An unsequenced outbox row, as the service layer writes it."""
    key_id = key_id or new_key_id()
    return OutboxEvent(
        event_id=str(uuid.uuid4()), key_id=key_id,
        event_type="apikey.revoked" if status == "revoked" else "apikey.issued",
        record=record_json(key_id, status),
    )


async def insert_rows(engine: AsyncEngine, rows: list[OutboxEvent]) -> None:
    """Insert ``rows`` in one transaction."""
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        session.add_all(rows)


@dataclass
class Received:
    """One message as a subscriber saw it."""

    event: Event
    message_id: str | None
    routing_key: str | None
    delivery_mode: int | None
    content_type: str | None


@dataclass
class Subscriber:
    """A queue bound to the test exchange before the run; collects verified events."""

    verifier: Verifier
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            signed = SignedEvent.from_amqp(message.body, message.headers)  # type: ignore[arg-type]
            self.received.append(Received(
                event=signed.verify(self.verifier), message_id=message.message_id,
                routing_key=message.routing_key, delivery_mode=message.delivery_mode,
                content_type=message.content_type,
            ))
            self.arrived.set()

    def unique(self) -> list[Event]:
        """Events deduplicated by ID, first arrival kept, in arrival order."""
        seen: set[str] = set()
        out: list[Event] = []
        for item in self.received:
            if item.event.id not in seen:
                seen.add(item.event.id)
                out.append(item.event)
        return out

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` distinct events have arrived (TimeoutError names how many did)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.unique()) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.unique())} of {count} events arrived")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), min(remaining, 0.5))
            except TimeoutError:
                continue


@pytest.fixture
async def subscriber(
    amqp_names: AmqpNames, verifier: Verifier,
) -> AsyncIterator[Subscriber]:
    """A durable queue bound to ``#`` on the test exchange, connected straight to RabbitMQ."""
    sub = Subscriber(verifier)
    connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            amqp_names.exchange, aio_pika.ExchangeType.TOPIC, durable=True,
        )
        queue = await channel.declare_queue(amqp_names.queue("subscriber"), durable=True)
        await queue.bind(exchange, "#")
        tag = await queue.consume(sub.on_message)
        yield sub
        await queue.cancel(tag)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll ``check`` until it is true; fail with a clear message after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


# -- the whole app ---------------------------------------------------------------------------
ADMIN_PASSWORD = "correct horse battery staple"
AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
AiohttpServerClient = Callable[[BaseTestServer], Awaitable[TestClient[Any, Any]]]


@dataclass
class AdminClient:
    """A client of a running key_service app, logged in as a system_administrator."""

    http: TestClient[Any, Any]
    csrf: str

    async def issue(self, name: str) -> dict[str, Any]:
        """``POST /api/v1/keys``; fails the test unless 201."""
        resp = await self.http.post(
            "/api/v1/keys", json={"name": name}, headers={"X-CSRF-Token": self.csrf},
        )
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def revoke(self, key_id: str) -> dict[str, Any]:
        """``POST /api/v1/keys/{id}/revoke``; fails the test unless 200."""
        resp = await self.http.post(
            f"/api/v1/keys/{key_id}/revoke", headers={"X-CSRF-Token": self.csrf},
        )
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def start_admin(
    config: KeyServiceConfig, aiohttp_client: AiohttpClient,
) -> AdminClient:
    """Migrate, start key_service with ``config`` and log in as a new administrator."""
    await migrate_async(config.database_url)
    app = create_app(config)
    http = await aiohttp_client(app)
    await create_user(app[SESSIONMAKER], "admin", ADMIN_PASSWORD, ADMIN_ROLE)
    resp = await http.post(
        "/api/v1/session", json={"username": "admin", "password": ADMIN_PASSWORD},
    )
    assert resp.status == 200, await resp.text()
    return AdminClient(http, (await resp.json())["csrf_token"])


@pytest.fixture
def app_config(
    secrets_env: dict[str, str], database_url: str, tmp_path: Path, amqp_names: AmqpNames,
) -> KeyServiceConfig:
    """A whole key_service's config on the (parametrized) test database and exchange."""
    return make_config(secrets_env, database_url, tmp_path, amqp_names.exchange)
