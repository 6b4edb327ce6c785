"""Where the real services are, and a clear failure when one of them is not there."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest
import redis

__all__ = [
    "PG_ADMIN_URL", "RABBITMQ_URL", "REDIS_URL", "Service", "delete_exchange",
    "delete_redis_prefix", "require", "temporary_database",
]

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


@dataclass(frozen=True)
class Service:
    """A real service the suite needs, and how to start it on a Debian machine."""

    name: str
    url: str
    default_port: int
    start: str

    @property
    def address(self) -> tuple[str, int]:
        """Host and port from the URL."""
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or self.default_port


POSTGRES = Service(
    "PostgreSQL", PG_ADMIN_URL, 5432,
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
)
REDIS = Service(
    "Redis", REDIS_URL, 6379,
    'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
)
RABBITMQ = Service("RabbitMQ", RABBITMQ_URL, 5672, "rabbitmq-server -detached")

_checked: dict[str, str | None] = {}


def require(service: Service) -> None:
    """Fail the test (never skip) with a message naming the service when it is unreachable."""
    if service.name not in _checked:
        try:
            with socket.create_connection(service.address, timeout=3):
                _checked[service.name] = None
        except OSError as exc:
            host, port = service.address
            _checked[service.name] = (
                f"{service.name} is not reachable at {host}:{port} ({exc}). "
                f"The test suite needs the real {service.name}; start it with: {service.start}"
            )
    problem = _checked[service.name]
    if problem is not None:
        pytest.fail(problem, pytrace=False)


@contextlib.asynccontextmanager
async def temporary_database(prefix: str = "apikeys_t_") -> AsyncIterator[str]:
    """A brand-new PostgreSQL database (SQLAlchemy asyncpg URL), dropped when the block ends."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def delete_redis_prefix(prefix: str) -> None:
    """Delete every key under ``prefix`` in the machine's Redis."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
    finally:
        client.close()


async def delete_exchange(name: str) -> None:
    """Delete an exchange of the machine's RabbitMQ."""
    connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(name)
