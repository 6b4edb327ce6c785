"""Fixtures for the gateway's integration tests: the gateway served on a real socket by its own
server, the real Redis (through a fault proxy), the demo backend as a real upstream, and a
key_service stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer
from yarl import URL

from apikeys_shared.config import Env, load_secrets
from auth_gateway.app import RunningGateway, create_app
from auth_gateway.appkeys import KEYSTORE, METRICS
from auth_gateway.config import load_config
from auth_gateway.keystore import KeyStore
from auth_gateway.sync import FEED_READ, SYNCED
from auth_gateway.unixsocket import UnixSocket
from demo_backend.app import STATS
from demo_backend.app import create_app as create_backend
from key_service.app import create_app as create_key_service
from key_service.appkeys import OUTBOX_WAKEUP, SESSIONMAKER
from key_service.config import load_config as load_key_service_config
from key_service.db import migrate_async
from key_service.keys import KeyService
from tests.conftest import AmqpNames
from tests.support.faultproxy import FaultProxy
from tests.support.procs import free_port
from tests.support.services import RABBITMQ_URL, REDIS

from .keyring import FakeKeyService, Keyring
from .realks import RealKeyService

ROUTES = """
[[route]]
prefix = "/api/"
upstream = "{backend}"

[[route]]
prefix = "/public/"
upstream = "{backend}/base"
auth = "none"
strip_prefix = true

[[route]]
prefix = "/raw"
upstream = "{backend}"
strip_prefix = true

[[route]]
prefix = "/dead/"
upstream = "http://127.0.0.1:{dead_port}"

[[route]]
prefix = "/hung/"
upstream = "http://127.0.0.1:{hung_port}"
"""


class GatewayClient:
    """An HTTP client bound to one running gateway (paths are relative to it)."""

    def __init__(self, running: RunningGateway) -> None:
        self.running = running
        self.host = "127.0.0.1"
        self.port = running.port
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    def make_url(self, path: str) -> URL:
        """The gateway's URL for ``path``."""
        return URL(f"http://{self.host}:{self.port}{path}")

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """``session.request`` against the gateway (awaitable, or ``async with``)."""
        return self.session.request(method, self.make_url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET ``path``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        """POST ``path``."""
        return self.request("POST", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Any:
        """HEAD ``path``."""
        return self.request("HEAD", path, **kwargs)

    async def close(self) -> None:
        """Stop the gateway (draining) and close the client session; idempotent."""
        await self.session.close()
        await self.running.stop()


@dataclass
class Gateway:
    """A running gateway app and what stands around it."""

    client: GatewayClient
    app: web.Application
    backend: TestServer
    keyring: Keyring
    key_service: FakeKeyService
    redis_proxy: FaultProxy
    redis: aioredis.Redis
    prefix: str

    @property
    def store(self) -> KeyStore:
        """The app's key store."""
        return self.app[KEYSTORE]

    @property
    def backend_requests(self) -> int:
        """Requests the demo backend answered so far."""
        return self.backend.app[STATS].requests

    def metric(self, name: str, labels: dict[str, str]) -> float:
        """A sample of the app's metrics (0 when absent)."""
        return self.app[METRICS].registry.get_sample_value(name, labels) or 0.0


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def backend(aiohttp_server: AiohttpServer) -> TestServer:
    """The demo echo backend on a real port."""
    return await aiohttp_server(create_backend())


@pytest.fixture
async def key_service(
    secrets_env: dict[str, str], aiohttp_server: AiohttpServer
) -> tuple[FakeKeyService, TestServer]:
    """A stand-in for key_service's internal lookup (the network peer only)."""
    secrets = load_secrets(Env(secrets_env), signer=False, verifier=True)
    fake = FakeKeyService(secrets.internal_token)
    return fake, await aiohttp_server(fake.app())


@pytest.fixture
async def make_gateway(
    tmp_path: Path, secrets_env: dict[str, str], redis_prefix: str,
    redis_client: aioredis.Redis, backend: TestServer,
    key_service: tuple[FakeKeyService, TestServer],
    fault_proxy: Callable[[str, int], FaultProxy],
) -> AsyncIterator[GatewayFactory]:
    """Factory: ``await make_gateway(**env)`` starts a gateway app (without the event consumer).

    Calling it twice gives two gateway "processes" sharing Redis and the key_service stand-in.
    """
    redis_proxy = fault_proxy(*REDIS.address)
    hung = fault_proxy("127.0.0.1", backend.port)
    hung.blackhole()
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES.format(
        backend=str(backend.make_url("")).rstrip("/"), dead_port=free_port(), hung_port=hung.port,
    ))
    fake, ks_server = key_service

    async def make(sync: bool = True, unix_socket: str | None = None,
                   **overrides: str) -> Gateway:
        env = {
            **secrets_env,
            "GATEWAY_ROUTES": str(routes),
            "KEY_SERVICE_URL": str(ks_server.make_url("")).rstrip("/"),
            "REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}/0",
            "GATEWAY_REDIS_PREFIX": redis_prefix,
            "GATEWAY_UPSTREAM_TIMEOUT": "2",
            "GATEWAY_UPSTREAM_CONNECT_TIMEOUT": "1",
            **overrides,
        }
        app = create_app(load_config(env), with_sync=False)
        running = RunningGateway(app)
        unix = None
        if unix_socket is not None:
            # Anyone may connect: the nginx tests' workers run as another user.
            unix = UnixSocket(unix_socket, 0o666)
            sockets.append(unix)
        await running.start("127.0.0.1", 0, unix=None if unix is None else unix.sock)
        client = GatewayClient(running)
        clients.append(client)
        if sync:
            app[SYNCED].set()
            app[FEED_READ].set()
        return Gateway(
            client=client, app=app, backend=backend, keyring=Keyring(secrets_env),
            key_service=fake, redis_proxy=redis_proxy, redis=redis_client, prefix=redis_prefix,
        )

    clients: list[GatewayClient] = []
    sockets: list[UnixSocket] = []
    yield make
    for client in clients:
        await client.close()
    for unix in sockets:
        unix.close()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    """One gateway app with the default settings."""
    return await make_gateway()


@pytest.fixture
async def real_key_service(
    secrets_env: dict[str, str], sqlite_url: str, tmp_path: Path, amqp_names: AmqpNames,
    aiohttp_server: AiohttpServer,
) -> RealKeyService:
    """The real key_service app on a migrated SQLite file, relaying to the test's exchange."""
    await migrate_async(sqlite_url)
    config = load_key_service_config({
        **secrets_env,
        "KEY_SERVICE_DATABASE_URL": sqlite_url,
        "KEY_SERVICE_DATA_DIR": str(tmp_path),
        "APIKEYS_EXCHANGE": amqp_names.exchange,
        "RABBITMQ_URL": RABBITMQ_URL,
    })
    app = create_key_service(config)
    server = await aiohttp_server(app)
    keys = KeyService(app[SESSIONMAKER], config.secrets.peppers, wakeup=app[OUTBOX_WAKEUP])
    return RealKeyService(server=server, keys=keys)
