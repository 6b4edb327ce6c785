"""Fixtures of the end-to-end suite: the whole stack as subprocesses, and sessions to drive it.

One stack serves every test of a module (starting it costs seconds); every test issues keys of
its own, and a test that injects faults ends them afterwards, whatever happened. A module may set
``STACK_OPTIONS`` to shape its stack.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import aiohttp
import pytest
import redis

from apikeys_shared.config import generate_secrets
from tests.support.services import RABBITMQ, RABBITMQ_URL, REDIS, REDIS_URL, require
from tests.support.stack import Admin, Stack, StackOptions


async def _delete_exchange(name: str) -> None:
    connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(name)


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """key_service, the demo backend and two gateway processes, isolated to this module."""
    require(REDIS)
    require(RABBITMQ)
    options: StackOptions = getattr(request.module, "STACK_OPTIONS", StackOptions())
    tag = uuid.uuid4().hex[:12]
    secrets = generate_secrets()
    running = Stack(
        tmp_path_factory.mktemp("stack"), secrets, exchange=f"t.{tag}.apikeys.events",
        redis_prefix=f"t:{tag}:", queue_prefix=f"t.{tag}", options=options,
    )
    try:
        with running:
            yield running
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for key in client.scan_iter(match=f"t:{tag}:*", count=500):
                client.delete(key)
        finally:
            client.close()
        asyncio.run(_delete_exchange(running.exchange))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell that the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def faults(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The stack, with every injected fault ended after the test (and its logs on failure)."""
    try:
        yield stack
    finally:
        stack.restore_all()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(stack.logs())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client for the gateways: no cookies, bounded timeouts."""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=15, connect=5),
    ) as session:
        yield session


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[Admin]:
    """The stack's administrator, logged in to key_service directly (its own cookie jar)."""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=15, connect=5),
    ) as session:
        yield await Admin(session, stack.key_service_url).login()
