"""Fixtures for key_service integration tests: a migrated database, the app, logged-in clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from key_service.app import create_app
from key_service.appkeys import SESSIONMAKER
from key_service.config import KeyServiceConfig, load_config
from key_service.db import create_engine, make_sessionmaker, migrate_async
from key_service.models import User
from key_service.users import ADMIN_ROLE, VIEWER_ROLE, hash_password
from tests.conftest import AmqpNames

PASSWORD = "correct horse battery"
AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
AiohttpServerClient = Callable[[BaseTestServer], Awaitable[TestClient[Any, Any]]]


@dataclass
class Client:
    """A test client logged in (or not) as one user, with that session's CSRF token."""

    http: TestClient[Any, Any]
    csrf: str | None = None

    def headers(self, **extra: str) -> dict[str, str]:
        """Headers carrying the CSRF token (when logged in)."""
        headers = dict(extra)
        if self.csrf is not None:
            headers["X-CSRF-Token"] = self.csrf
        return headers


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A migrated database's sessionmaker (for tests of the service layer, without the app)."""
    await migrate_async(database_url)
    engine = create_engine(database_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def ks_env(
    database_url: str, secrets_env: dict[str, str], tmp_path: Path, amqp_names: AmqpNames,
) -> dict[str, str]:
    """The environment of one key_service: its own database and AMQP exchange."""
    return {
        **secrets_env,
        "KEY_SERVICE_DATA_DIR": str(tmp_path / "data"),
        "KEY_SERVICE_DATABASE_URL": database_url,
        "APIKEYS_EXCHANGE": amqp_names.exchange,
        "KEY_SERVICE_LOGIN_MAX_FAILURES": "3",
        "KEY_SERVICE_LOGIN_MAX_FAILURES_PER_ADDRESS": "6",
    }


@pytest.fixture
async def ks_config(ks_env: dict[str, str]) -> KeyServiceConfig:
    """The config, with the database migrated."""
    config = load_config(ks_env)
    await migrate_async(config.database_url)
    return config


@pytest.fixture
def ks_app(ks_config: KeyServiceConfig) -> web.Application:
    """A fresh key_service app."""
    return create_app(ks_config)


@pytest.fixture
async def anon(ks_app: web.Application, aiohttp_client: AiohttpClient) -> Client:
    """A client without a session; the app is started by it."""
    return Client(await aiohttp_client(ks_app))


def sessionmaker_of(client: Client) -> async_sessionmaker[AsyncSession]:
    """The running app's sessionmaker."""
    return client.http.app[SESSIONMAKER]


_HASHES: dict[str, str] = {}


async def add_user(client: Client, username: str, role: str) -> None:
    """Insert a user whose password is PASSWORD (hashed once per test run: argon2 is slow)."""
    if PASSWORD not in _HASHES:
        _HASHES[PASSWORD] = hash_password(PASSWORD)
    async with sessionmaker_of(client)() as db, db.begin():
        db.add(User(username=username, password_hash=_HASHES[PASSWORD], role=role))


async def login_client(
    anon: Client, aiohttp_client: AiohttpServerClient, username: str, role: str,
) -> Client:
    """A new client of the same server (own cookie jar) logged in as a new user of ``role``."""
    http = await aiohttp_client(anon.http.server)
    await add_user(anon, username, role)
    resp = await http.post("/api/v1/session", json={"username": username, "password": PASSWORD})
    assert resp.status == 200, await resp.text()
    return Client(http, (await resp.json())["csrf_token"])


@pytest.fixture
async def admin(anon: Client, aiohttp_client: AiohttpServerClient) -> Client:
    """A client logged in as a system_administrator."""
    return await login_client(anon, aiohttp_client, "admin", ADMIN_ROLE)


@pytest.fixture
async def viewer(anon: Client, aiohttp_client: AiohttpServerClient) -> Client:
    """A client logged in as an ordinary (viewer) user."""
    return await login_client(anon, aiohttp_client, "viewer", VIEWER_ROLE)
