"""The test bed itself: each fixture reaches the real service and isolates the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aio_pika
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import AmqpNames
from tests.support.faultproxy import FaultProxy
from tests.support.services import RABBITMQ_URL


async def test_database_is_real_and_writable(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE probe (v INTEGER)"))
            await conn.execute(text("INSERT INTO probe VALUES (42)"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT v FROM probe"))).scalar_one() == 42
            dialect = conn.dialect.name
        assert dialect == ("sqlite" if database_url.startswith("sqlite") else "postgresql")
    finally:
        await engine.dispose()


async def test_postgres_databases_are_per_test(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
            )
            assert tables.scalar_one() == 0
    finally:
        await engine.dispose()


async def test_redis_prefix_is_isolated(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    await redis_client.set(f"{redis_prefix}probe", b"1")
    assert await redis_client.get(f"{redis_prefix}probe") == b"1"
    keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}*")]
    assert keys == [f"{redis_prefix}probe".encode()]


async def test_rabbitmq_round_trip(amqp_names: AmqpNames) -> None:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            amqp_names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(amqp_names.queue("probe"), durable=True)
        await queue.bind(exchange, "key.#")
        await exchange.publish(aio_pika.Message(b"hello"), routing_key="key.issued")
        message = await queue.get(timeout=5)
        assert message is not None
        assert message.body == b"hello"
        await message.ack()


async def _echo_server() -> tuple[asyncio.base_events.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), 2)
    finally:
        writer.close()


async def test_fault_proxy_passes_cuts_refuses_and_delays(
    fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    server, port = await _echo_server()
    async with server:
        proxy = fault_proxy("127.0.0.1", port)
        assert await _roundtrip(proxy.port) == b"ping"

        # cut: an open connection dies and new ones are refused
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.read(1024), 2) == b"hello"
        proxy.cut()
        assert await asyncio.wait_for(reader.read(1024), 2) == b""
        writer.close()
        with pytest.raises(OSError):
            await _roundtrip(proxy.port)

        proxy.restore()
        assert await _roundtrip(proxy.port) == b"ping"

        proxy.delay(0.3)
        started = time.monotonic()
        assert await _roundtrip(proxy.port) == b"ping"
        assert time.monotonic() - started >= 0.5  # delayed on the way there and back
        proxy.restore()

        proxy.blackhole()
        with pytest.raises(TimeoutError):
            await _roundtrip(proxy.port)
        proxy.restore()
        proxy.refuse()
        with pytest.raises(OSError):
            await _roundtrip(proxy.port)


def test_a_missing_service_fails_with_its_name_and_how_to_start_it() -> None:
    from tests.support.procs import free_port
    from tests.support.services import Service, require

    port = free_port()
    ghost = Service("GhostMQ", f"amqp://127.0.0.1:{port}/", port, "ghostmq-server -detached")
    with pytest.raises(pytest.fail.Exception) as failure:
        require(ghost)
    message = str(failure.value)
    assert "GhostMQ is not reachable at 127.0.0.1:" in message
    assert "start it with: ghostmq-server -detached" in message
