"""The test bed: isolated access to the real PostgreSQL, SQLite, Redis and RabbitMQ.

Every test gets its own database, Redis key prefix and AMQP names, and everything it made is
removed afterwards, so tests pass in any order and leave nothing behind. A missing service makes
the tests that need it fail with a message naming it; nothing is ever skipped for that.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
import pytest
import redis.asyncio as aioredis

from apikeys_shared.config import generate_secrets
from tests.support.faultproxy import FaultProxy
from tests.support.private_redis import start_redis  # noqa: F401  (a fixture for every test)
from tests.support.services import (
    POSTGRES,
    RABBITMQ,
    RABBITMQ_URL,
    REDIS,
    REDIS_URL,
    require,
    temporary_database,
)


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


# -- secrets ---------------------------------------------------------------------------------
@pytest.fixture
def secrets_env() -> dict[str, str]:
    """A fresh set of deployment secrets, as ``generate-secrets`` prints them."""
    return generate_secrets()


# -- databases -------------------------------------------------------------------------------
@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A brand-new PostgreSQL database for this test (SQLAlchemy asyncpg URL), dropped after."""
    require(POSTGRES)
    async with temporary_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of this test's own (SQLAlchemy aiosqlite URL)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs twice: on SQLite and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


# -- Redis -----------------------------------------------------------------------------------
@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    return _unique("t:") + ":"


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the real Redis; the test's prefix is cleaned afterwards."""
    require(REDIS)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=f"{redis_prefix}*", count=500):
            await client.delete(key)
        await client.aclose()


# -- RabbitMQ --------------------------------------------------------------------------------
@dataclass
class AmqpNames:
    """Exchange and queue names of one test; all of them are deleted afterwards."""

    prefix: str
    exchange: str
    queues: list[str] = field(default_factory=list)

    def queue(self, role: str) -> str:
        """A queue name for ``role``, recorded for clean-up."""
        name = f"{self.prefix}.{role}"
        self.queues.append(name)
        return name


@pytest.fixture
async def amqp_names() -> AsyncIterator[AmqpNames]:
    """Isolated AMQP names on the real RabbitMQ; exchange and recorded queues removed after."""
    require(RABBITMQ)
    prefix = _unique("t.")
    names = AmqpNames(prefix=prefix, exchange=f"{prefix}.apikeys.events")
    try:
        yield names
    finally:
        connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
        async with connection:
            for queue in names.queues:
                channel = await connection.channel()
                await channel.queue_delete(queue)
                await channel.close()
            channel = await connection.channel()
            await channel.exchange_delete(names.exchange)
            await channel.close()


@pytest.fixture
def rabbitmq_url() -> str:
    """The real RabbitMQ's URL (failing clearly when it is not there)."""
    require(RABBITMQ)
    return RABBITMQ_URL


@pytest.fixture
def redis_url() -> str:
    """The real Redis's URL (failing clearly when it is not there)."""
    require(REDIS)
    return REDIS_URL


# -- faults ----------------------------------------------------------------------------------
@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str, int], FaultProxy]]:
    """Factory: ``fault_proxy(host, port)`` starts a proxy; all are closed after the test."""
    proxies: list[FaultProxy] = []

    def make(host: str, port: int) -> FaultProxy:
        proxy = FaultProxy(host, port)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


# -- the stack as subprocesses (tests/e2e, tests/failover) ---------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell that the test failed (and,
    say, print the logs of the processes they started)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client for gateways and key_service's feed: no cookies, bounded timeouts."""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=15, connect=5),
    ) as session:
        yield session
