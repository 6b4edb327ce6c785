"""The gateway app: its resources, and ``RunningGateway``, which serves it on a socket.

An aiohttp ``Application`` is the container and lifecycle of the resources (Redis, the
key_service client and session, the key store, the throttle, the upstream pool, the event
consumer), each opened and closed in a cleanup context. Requests do not go through aiohttp's
router: the server in ``http_server`` hands every parsed request to ``handler.GatewayHandler``
(docs/architecture.md, "The HTTP layer", says why).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from .appkeys import (
    AUTHENTICATOR,
    CONFIG,
    FAILURES,
    FORWARDER,
    KEY_SERVICE,
    KEY_SERVICE_SESSION,
    KEYSTORE,
    METRICS,
    REDIS,
    ROUTES,
    UPSTREAM_POOL,
)
from .auth import Authenticator
from .config import UNIX_PEER, GatewayConfig
from .exchange import Exchange
from .handler import GatewayHandler, Step
from .http_server import HttpServer
from .key_service_client import KeyServiceClient
from .keystore import KeyStore
from .metrics import Metrics
from .proxy import Forwarder
from .redisclient import open_redis
from .routes import load_routes
from .sync import FEED_READ, SYNCED, sync_ctx
from .throttle import FailureCounter
from .upstream import UpstreamPool

__all__ = ["RunningGateway", "create_app"]


# -- resources ---------------------------------------------------------------------------------
async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    client = open_redis(config.redis_url, config.redis_timeout)
    app[REDIS] = client
    try:
        yield
    finally:
        await client.aclose()


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    metrics = app[METRICS]
    limits = config.limits
    pool = UpstreamPool(
        max_connections=limits.upstream_max_connections,
        connect_timeout=limits.upstream_connect_timeout,
        idle_timeout=limits.upstream_idle_timeout,
    )
    ks_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    app[UPSTREAM_POOL] = pool
    app[KEY_SERVICE_SESSION] = ks_session
    secrets = config.secrets
    assert secrets.verifier is not None
    client = KeyServiceClient(
        ks_session, config.key_service_url, secrets.internal_token, config.key_service_timeout
    )
    app[KEY_SERVICE] = client
    store = KeyStore(
        redis=app[REDIS], key_service=client, verifier=secrets.verifier, metrics=metrics,
        prefix=config.redis_prefix, l1_size=config.l1_size, l1_ttl=config.l1_ttl,
        negative_size=config.negative_size, negative_ttl=config.negative_ttl,
        unknown_lookups=config.unknown_key_lookups,
        feed_read=app[FEED_READ],
    )
    app[KEYSTORE] = store
    failures = FailureCounter(
        app[REDIS], config.redis_prefix, config.failed_auth_threshold, config.failed_auth_window,
        sync_seconds=config.failed_auth_sync,
    )
    app[FAILURES] = failures
    app[AUTHENTICATOR] = Authenticator(
        store=store, peppers=secrets.peppers, metrics=metrics, failures=failures,
        unavailable_retry_after=config.unavailable_retry_after,
    )
    app[FORWARDER] = Forwarder(pool, limits, metrics)
    try:
        yield
    finally:
        await pool.close()
        await ks_session.close()


def create_app(config: GatewayConfig, *, with_sync: bool = True) -> web.Application:
    """The gateway's resources; RouteTableError if the route table is invalid.

    ``with_sync=False`` leaves out the event consumer (``/readyz`` then stays 503 until
    ``app[SYNCED]`` and ``app[FEED_READ]`` are set by hand): only for tests of the request path
    on its own.
    """
    app = web.Application()
    app[CONFIG] = config
    app[ROUTES] = load_routes(config.routes_path)
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app[SYNCED] = asyncio.Event()
    app[FEED_READ] = asyncio.Event()
    if with_sync:
        app.cleanup_ctx.append(sync_ctx)
    return app


class RunningGateway:
    """The gateway app served on a socket: ``await start()``, later ``await stop()``."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._server: HttpServer[Exchange, Step] | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False,
                    unix: socket.socket | None = None) -> int:
        """Start the app's resources, then listen; the bound port.

        ``unix``, a bound and listening Unix socket, is served as well (every request alike).
        """
        app = self.app
        # As aiohttp's AppRunner does: the cleanup contexts fill the app while it starts.
        app.pre_freeze()
        await app.startup()
        app.freeze()
        handler = GatewayHandler(app)
        limits = app[CONFIG].limits
        # The parser's own limits sit above the configured ones, so that most oversized
        # headers get the handler's 431 (with the same body) rather than the parser's.
        self._server = HttpServer(
            handler, max_line_size=limits.max_header_bytes * 2, max_headers=limits.max_headers * 2,
        )
        self.port = await self._server.listen(host, port, reuse_port=reuse_port)
        if unix is not None:
            await self._server.listen_unix(unix, peer=UNIX_PEER)
        return self.port

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, drain requests in flight (up to ``timeout``), release resources.

        Idempotent.
        """
        if self._server is None:
            return
        server, self._server = self._server, None
        await server.close(timeout)
        await self.app.shutdown()
        await self.app.cleanup()
