"""The gateway's application factory, its operational endpoints and its request handlers."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from .abuse import FailureCounter, is_trusted
from .appkeys import (
    AUTH_REASON,
    AUTHENTICATOR,
    CONFIG,
    FAILURES,
    FORWARDER,
    KEY_SERVICE,
    KEY_SERVICE_SESSION,
    KEYSTORE,
    LOG_KEY_ID,
    METRICS,
    REDIS,
    REQUEST_ID,
    ROUTE_LABEL,
    ROUTES,
    UPSTREAM_SESSION,
)
from .auth import Authenticator, Denial
from .config import GatewayConfig
from .headers import KEY_ID_OUT, KEY_NAME_OUT, header_safe
from .keyservice import KeyServiceClient
from .keystore import KeyStore
from .metrics import Metrics
from .problems import problem
from .proxy import ForwardContext, Forwarder, upstream_session
from .redisclient import open_redis
from .routes import is_safe_path, load_routes
from .sync import SYNCED, sync_ctx

__all__ = ["VERIFY_PATH", "create_app"]

log = logging.getLogger("auth_gateway")

VERIFY_PATH = "/_auth/verify"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Request IDs only correlate log lines; they guard nothing, so a seeded PRNG (fresh per process,
# re-seeded after a fork) serves instead of a getrandom() system call per request. Random rather
# than a counter, so that an ID tells a client nothing about the gateway's request volume.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


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
    upstream = upstream_session(config.limits)
    ks_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    app[UPSTREAM_SESSION] = upstream
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
    )
    app[KEYSTORE] = store
    failures = FailureCounter(
        app[REDIS], config.redis_prefix, config.failed_auth_threshold, config.failed_auth_window,
    )
    app[FAILURES] = failures
    app[AUTHENTICATOR] = Authenticator(
        store=store, peppers=secrets.peppers, metrics=metrics, failures=failures,
        trusted_proxies=config.trusted_proxies,
        unavailable_retry_after=config.unavailable_retry_after,
        verified_size=config.l1_size, verified_ttl=config.l1_ttl,
    )
    app[FORWARDER] = Forwarder(upstream, config.limits, metrics)
    try:
        yield
    finally:
        await upstream.close()
        await ks_session.close()


# -- middleware --------------------------------------------------------------------------------
def _header_bytes(request: web.Request) -> int:
    return sum(len(name) + len(value) + 4 for name, value in request.raw_headers)


def _framing_problem(request: web.Request) -> str | None:
    """Framing aiohttp's parser lets through but that a stricter hop could read differently.

    Anything unusual about how a body is delimited is refused outright (RFC 9112 §6.1), so the
    gateway and the upstream can never disagree on where one request ends.
    """
    if request.version not in ((1, 0), (1, 1)):
        return "Only HTTP/1.0 and HTTP/1.1 requests are accepted."
    if len(request.headers.getall("Host", [])) > 1:
        return "The request has more than one Host header."
    encodings = request.headers.getall("Transfer-Encoding", [])
    if encodings:
        if request.version < (1, 1):
            return "Transfer-Encoding is not allowed in an HTTP/1.0 request."
        if len(encodings) > 1 or encodings[0].strip().lower() != "chunked":
            return "Transfer-Encoding must be exactly 'chunked'."
    return None


def _refuse(status: int, detail: str) -> web.Response:
    """A refusal that also closes the connection: nothing after a bad request is trusted."""
    response = problem(status, detail)
    response.force_close()
    return response


@web.middleware
async def _frame(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Request ID, header limits, problem+json for router errors, and request metrics."""
    incoming = request.headers.getall("X-Request-Id", [])
    rid = incoming[0] if len(incoming) == 1 and _REQUEST_ID_RE.fullmatch(incoming[0]) else ""
    request[REQUEST_ID] = rid or _new_request_id()
    limits = request.app[CONFIG].limits
    metrics = request.app[METRICS]
    response: web.StreamResponse
    framing = _framing_problem(request)
    if framing is not None:
        request[ROUTE_LABEL] = "_refused"
        response = _refuse(400, framing)
    elif (
        len(request.raw_headers) > limits.max_headers
        or _header_bytes(request) > limits.max_header_bytes
    ):
        request[ROUTE_LABEL] = "_refused"
        response = _refuse(431, "The request headers are larger than this gateway accepts.")
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = problem(exc.status, exc.reason)
        except (ConnectionResetError, asyncio.CancelledError):
            metrics.requests.labels(request.get(ROUTE_LABEL, "_none"), "aborted").inc()
            raise
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": request[REQUEST_ID]}})
            response = problem(500, "The gateway failed to handle this request.")
    if not response.prepared:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
    metrics.child(metrics.requests, request.get(ROUTE_LABEL, "_none"), str(response.status)).inc()
    return response


# -- operational endpoints ---------------------------------------------------------------------
async def _healthz(request: web.Request) -> web.Response:
    request[ROUTE_LABEL] = "_ops"
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def _readyz(request: web.Request) -> web.Response:
    request[ROUTE_LABEL] = "_ops"
    app = request.app
    if not app[SYNCED].is_set():
        return problem(503, "The first catch-up from key_service's event feed is not done yet.")
    try:
        async with asyncio.timeout(app[CONFIG].redis_timeout * 2):
            await app[REDIS].ping()
    except (TimeoutError, RedisError, OSError):
        return problem(503, "Redis is not reachable.")
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    request[ROUTE_LABEL] = "_ops"
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- authentication and forwarding -------------------------------------------------------------
def _note(request: web.Request, verdict: Denial) -> None:
    request[AUTH_REASON] = verdict.reason
    if verdict.key_id is not None:
        request[LOG_KEY_ID] = verdict.key_id


async def _verify(request: web.Request) -> web.StreamResponse:
    """Forward-auth: 204 with the identity headers, or the gateway's 401 / 429 / 503."""
    request[ROUTE_LABEL] = VERIFY_PATH
    verdict = await request.app[AUTHENTICATOR].authenticate(request)
    if isinstance(verdict, Denial):
        _note(request, verdict)
        return verdict.response()
    request[AUTH_REASON] = "ok"
    request[LOG_KEY_ID] = verdict.key_id
    return web.Response(
        status=204,
        headers={
            KEY_ID_OUT: verdict.key_id,
            KEY_NAME_OUT: header_safe(verdict.name),
            "Cache-Control": "no-store",
        },
    )


async def _proxy(request: web.Request) -> web.StreamResponse:
    """Route, authenticate and forward one request (DESIGN §4)."""
    app = request.app
    raw_path, _, raw_query = request.raw_path.partition("?")
    if not is_safe_path(raw_path):
        request[ROUTE_LABEL] = "_refused"
        return _refuse(400, "The request path holds dot segments or encoded separators.")
    route = app[ROUTES].match(raw_path)
    if route is None:
        request[ROUTE_LABEL] = "_unmatched"
        return problem(404, "No route of this gateway matches the request path.")
    request[ROUTE_LABEL] = route.prefix
    limits = app[CONFIG].limits
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        return problem(413, "The request body is larger than this gateway accepts.")
    authenticator = app[AUTHENTICATOR]
    identity: tuple[str, str] | None = None
    if route.requires_auth:
        verdict = await authenticator.authenticate(request)
        if isinstance(verdict, Denial):
            _note(request, verdict)
            return verdict.response()
        request[AUTH_REASON] = "ok"
        request[LOG_KEY_ID] = verdict.key_id
        identity = (verdict.key_id, verdict.name)
    trusted = app[CONFIG].trusted_proxies
    ctx = ForwardContext(
        route=route, raw_path=raw_path, raw_query=raw_query, request_id=request[REQUEST_ID],
        client_address=authenticator.client_address(request),
        peer_trusted=bool(trusted) and is_trusted(request.remote or "", trusted),
        identity=identity,
    )
    return await app[FORWARDER].forward(request, ctx)


# -- the factory -------------------------------------------------------------------------------
def create_app(config: GatewayConfig, *, with_sync: bool = True) -> web.Application:
    """Build the gateway app; RouteTableError if the route table is invalid.

    ``with_sync=False`` leaves out the event consumer (``/readyz`` then stays 503 until
    ``app[SYNCED]`` is set by hand): only for tests of the request path on its own.
    """
    limits = config.limits
    app = web.Application(
        middlewares=[_frame],
        # The parser's own limits sit above the configured ones so that most oversized
        # headers get a 431 from the middleware rather than the parser's plain 400.
        handler_args={
            "max_line_size": limits.max_header_bytes * 2,
            "max_field_size": limits.max_header_bytes * 2,
            "max_headers": limits.max_headers * 2,
        },
    )
    app[CONFIG] = config
    app[ROUTES] = load_routes(config.routes_path)
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app[SYNCED] = asyncio.Event()
    if with_sync:
        app.cleanup_ctx.append(sync_ctx)
    app.router.add_get("/healthz", _healthz, allow_head=True)
    app.router.add_get("/readyz", _readyz, allow_head=True)
    app.router.add_get("/metrics", _metrics)
    app.router.add_route("*", VERIFY_PATH, _verify)
    app.router.add_route("*", VERIFY_PATH + "/{tail:.*}", _verify)
    app.router.add_route("*", "/{tail:.*}", _proxy)
    return app
