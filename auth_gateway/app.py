"""The gateway: its resources (an aiohttp ``Application`` used as their container and
lifecycle), its request handler, and ``RunningGateway``, which serves it on a socket.

Requests do not go through aiohttp's router: ``GatewayHandler`` is called by the lean server in
``http_server`` for every parsed request and answers the operational endpoints, forward-auth, or
routes, authenticates and forwards (DESIGN §4).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
from collections.abc import AsyncIterator
from itertools import chain

import aiohttp
from aiohttp import hdrs, web
from multidict import istr
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

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
from .auth import Authenticator, Denial, Identity
from .config import UNIX_PEER, GatewayConfig
from .http_server import HttpServer, Request
from .key_service_client import KeyServiceClient
from .keystore import KeyStore
from .logs import AccessLog
from .metrics import Metrics
from .problems import Reply, problem
from .proxy import ForwardContext, Forwarder
from .redisclient import open_redis
from .routes import Route, is_safe_path, load_routes, normalize_path
from .sync import FEED_READ, SYNCED, sync_ctx
from .throttle import FailureCounter, is_trusted
from .upstream import UpstreamPool

__all__ = ["VERIFY_PATH", "GatewayHandler", "RunningGateway", "create_app"]

log = logging.getLogger("auth_gateway")

VERIFY_PATH = "/_auth/verify"
_VERIFY_SUB = VERIFY_PATH + "/"
_OPS = frozenset({"/healthz", "/readyz", "/metrics"})
# Header names looked up on every request, as istr: multidict then skips folding their case.
_X_REQUEST_ID = istr("X-Request-Id")
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Request IDs only correlate log lines; they guard nothing, so a seeded PRNG (fresh per process,
# re-seeded after a fork) serves instead of a getrandom() system call per request. Random rather
# than a counter, so that an ID tells a client nothing about the gateway's request volume.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))
_JSON = b"Content-Type: application/json; charset=utf-8\r\n"
_METRICS_TYPE = b"Content-Type: %s\r\n" % CONTENT_TYPE_LATEST.encode()


def _new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


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
        trusted_proxies=config.trusted_proxies,
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


# -- requests ----------------------------------------------------------------------------------
def _framing_problem(request: Request) -> str | None:
    """Framing aiohttp's parser lets through but that a stricter hop could read differently.

    Anything unusual about how a body is delimited is refused outright (RFC 9112 §6.1), so the
    gateway and the upstream can never disagree on where one request ends.
    """
    if request.version not in ((1, 0), (1, 1)):
        return "Only HTTP/1.0 and HTTP/1.1 requests are accepted."
    headers = request.headers
    if len(headers.getall(hdrs.HOST, ())) > 1:
        return "The request has more than one Host header."
    if hdrs.TRANSFER_ENCODING in headers:
        encodings = headers.getall(hdrs.TRANSFER_ENCODING)
        if request.version < (1, 1):
            return "Transfer-Encoding is not allowed in an HTTP/1.0 request."
        if len(encodings) > 1 or encodings[0].strip().lower() != "chunked":
            return "Transfer-Encoding must be exactly 'chunked'."
    return None


class GatewayHandler:
    """Answers every request the server parsed; see the module docstring.

    ``now`` settles what needs no waiting (refusals, 404s, health and metrics, and the common
    authenticated case of forward-auth); the rest goes to ``later`` in a task of its own.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app
        config = app[CONFIG]
        self._limits = config.limits
        self._trusted = config.trusted_proxies
        self._metrics_allow = config.metrics_allow
        self._routes = app[ROUTES]
        self._metrics = app[METRICS]
        self._authenticator = app[AUTHENTICATOR]
        self._forwarder = app[FORWARDER]
        self._access = AccessLog(logging.getLogger("auth_gateway.access"))

    # -- dispatch --------------------------------------------------------------------------
    def now(self, request: Request) -> bool:
        """Answer without waiting when possible; False leaves ``request`` to ``later``."""
        incoming = request.headers.getall(_X_REQUEST_ID, ())
        rid = incoming[0] if len(incoming) == 1 and _REQUEST_ID_RE.fullmatch(incoming[0]) else ""
        request.request_id = rid or _new_request_id()
        framing = _framing_problem(request)
        if framing is not None:
            request.route = "_refused"
            return _send(request, problem(400, framing, close=True))
        limits = self._limits
        raw = request.raw_headers
        # Each header line holds its name and value and at least 2 more bytes (":" and an end
        # of line), so when the whole head is short enough the lengths need not be added up.
        if len(raw) > limits.max_headers or (
            request.head_bound + 2 * len(raw) > limits.max_header_bytes
            and sum(map(len, chain.from_iterable(raw))) + 4 * len(raw) > limits.max_header_bytes
        ):
            request.route = "_refused"
            return _send(request, problem(
                431, "The request headers are larger than this gateway accepts.", close=True))
        path = request.target.partition("?")[0]
        if path in _OPS:
            request.route = "_ops"
            if request.method not in ("GET", "HEAD"):
                return _send(request, problem(
                    405, "Only GET and HEAD are allowed here.", {"Allow": "GET, HEAD"}))
            if path == "/healthz":
                return _send(request, Reply(200, _JSON, b'{"status":"ok","pid":%d}' % os.getpid()))
            if path == "/metrics":
                allow = self._metrics_allow
                # The connecting peer, never X-Forwarded-For: a client cannot name itself in.
                if allow is not None and not is_trusted(request.remote or "", allow):
                    return _send(request, problem(
                        403, "/metrics is served only to the addresses GATEWAY_METRICS_ALLOW "
                             "names."))
                body = generate_latest(self._metrics.registry)
                return _send(request, Reply(200, _METRICS_TYPE, body))
            return False  # /readyz asks Redis
        if path == VERIFY_PATH or path.startswith(_VERIFY_SUB):
            request.route = VERIFY_PATH
            identity = self._authenticator.verified_now(request)
            if identity is None:
                return False
            return _verified(request, identity)
        normal = normalize_path(path) if is_safe_path(path) else None
        if normal is None or (normal is not path and not is_safe_path(normal)):
            request.route = "_refused"
            return _send(request, problem(
                400, "The request path holds dot segments, encoded separators, ambiguous "
                     "escapes or a fragment.", close=True))
        path = normal
        route = self._routes.match(path)
        if route is None:
            request.route = "_unmatched"
            return _send(request, problem(
                404, "No route of this gateway matches the request path."))
        request.route = route.prefix
        request.state = (route, path)
        declared = request.headers.get(hdrs.CONTENT_LENGTH)
        if declared is not None and int(declared) > limits.max_body_bytes:
            return _send(request, problem(
                413, "The request body is larger than this gateway accepts.", close=True))
        return False

    async def later(self, request: Request) -> None:
        """Answer what ``now`` left: readiness, forward-auth's slow path, and forwarding."""
        route = request.route
        if route == "_ops":
            _send(request, await self._ready())
        elif route == VERIFY_PATH:
            verdict = await self._authenticator.authenticate(request)
            if isinstance(verdict, Denial):
                _send(request, self._denied(request, verdict))
            else:
                _verified(request, verdict)
        else:
            reply = await self._proxy(request)
            if reply is not None:
                _send(request, reply)

    # -- operational endpoints -------------------------------------------------------------
    async def _ready(self) -> Reply:
        app = self._app
        if not app[SYNCED].is_set():
            return problem(503, "The first catch-up from key_service's event feed is not done yet.")
        try:
            async with asyncio.timeout(app[CONFIG].redis_timeout * 2):
                await app[REDIS].ping()
        except (TimeoutError, RedisError, OSError):
            return problem(503, "Redis is not reachable.")
        return Reply(200, _JSON, b'{"status":"ready"}')

    # -- authentication and forwarding -----------------------------------------------------
    @staticmethod
    def _denied(request: Request, verdict: Denial) -> Reply:
        request.auth = verdict.reason
        request.key_id = verdict.key_id
        return verdict.response()

    async def _proxy(self, request: Request) -> Reply | None:
        """Authenticate (on a route that needs it) and forward (DESIGN §4)."""
        route: Route
        route, path = request.state  # now() matched it on the normalised path
        authenticator = self._authenticator
        identity = b""
        if route.requires_auth:
            verdict = authenticator.verified_now(request)
            if verdict is None:
                found = await authenticator.authenticate(request)
                if isinstance(found, Denial):
                    return self._denied(request, found)
                verdict = found
            request.auth = "ok"
            request.key_id = verdict.key_id
            identity = verdict.block
        forwarded_for = authenticator.client_address(request)
        proto = "http"
        remote = request.remote or ""
        if self._trusted and is_trusted(remote, self._trusted):
            prior = ", ".join(request.headers.getall(hdrs.X_FORWARDED_FOR, ()))
            forwarded_for = f"{prior}, {remote}" if prior else remote
            proto = request.headers.get(hdrs.X_FORWARDED_PROTO, proto)
        query = request.target.partition("?")[2]
        ctx = ForwardContext(
            route=route, raw_path=path, raw_query=query, request_id=request.request_id,
            forwarded_for=forwarded_for, forwarded_proto=proto, identity=identity,
        )
        return await self._forwarder.forward(request, ctx)

    # -- after each request ----------------------------------------------------------------
    def finished(self, request: Request, duration: float) -> None:
        """Count and log one answered (or abandoned) request."""
        status = str(request.status) if request.started else "aborted"
        self._metrics.count(self._metrics.requests, request.route, status)
        self._access.log(request, duration)

    def refused(self, status: int) -> None:
        """Count a request the parser refused."""
        self._metrics.count(self._metrics.requests, "_refused", str(status))


def _send(request: Request, reply: Reply) -> bool:
    reply.send(request)
    return True


def _verified(request: Request, identity: Identity) -> bool:
    """Answer forward-auth with its 204 and the identity headers."""
    request.auth = "ok"
    request.key_id = identity.key_id
    request.respond(204, b"%sCache-Control: no-store\r\nX-Request-Id: %s\r\n" % (
        identity.block, request.request_id.encode("ascii")))
    return True


class RunningGateway:
    """The gateway app served on a socket: ``await start()``, later ``await stop()``."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._server: HttpServer | None = None

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
