"""The request path: every request the server parsed, answered in one direction.

parse (the server) → refuse what the gateway does not accept → route → credentials → verdict →
forward or deny. ``GatewayHandler.now`` takes a request as far along that path as it goes
without waiting, and answers it when it can (refusals, 404s, health and metrics, and the common
authenticated case of forward-auth); what is left, a step of its own type, goes to ``later`` in
a task. Each request's ``Exchange`` carries what the steps learn, once, down to the access log.
docs/architecture.md ("The request path") follows one request through it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from itertools import chain
from typing import Final

from aiohttp import hdrs, web
from multidict import istr
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from .appkeys import AUTHENTICATOR, CONFIG, FORWARDER, METRICS, REDIS, ROUTES, USAGE
from .auth import Denial, Identity
from .clients import is_trusted
from .config import Limits
from .exchange import Exchange
from .http_server import Request
from .logs import AccessLog
from .problems import Reply, problem
from .proxy import ForwardContext
from .routes import Route, is_safe_path, normalize_path
from .sync import SYNCED

__all__ = ["READY", "VERIFY", "VERIFY_PATH", "Forward", "GatewayHandler", "Ready", "Step", "Verify"]

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


# -- what now() leaves for later() -------------------------------------------------------------
class Ready:
    """``/readyz``: answered once Redis answered."""

    __slots__ = ()


class Verify:
    """Forward-auth whose verdict needs waiting for."""

    __slots__ = ()


class Forward:
    """Forward to ``route``, the path normalised; ``identity`` when the verdict is in already
    (None: on a route that needs a key, the verdict is still to come)."""

    __slots__ = ("identity", "path", "route")

    def __init__(self, route: Route, path: str) -> None:
        self.route = route
        self.path = path
        self.identity: Identity | None = None


READY: Final = Ready()
VERIFY: Final = Verify()
Step = Ready | Verify | Forward


class GatewayHandler:
    """Answers every request the server parsed; see the module docstring.

    The server calls ``begin``, then ``now``; ``later`` when ``now`` left a step; ``finished``
    once the request was answered or abandoned.
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
        # Each request let through is noted for its key's last use (usage.py).
        self._note = app[USAGE].note if config.usage_recording else _no_note
        self._access = AccessLog(logging.getLogger("auth_gateway.access"))

    # -- the request path, top to bottom -----------------------------------------------------
    def begin(self, request: Request) -> Exchange:
        """The record of ``request`` that goes down the path with it, with its request ID: the
        client's X-Request-Id when it sent exactly one well-formed, else a new one."""
        incoming = request.headers.getall(_X_REQUEST_ID, ())
        if len(incoming) == 1 and _REQUEST_ID_RE.fullmatch(incoming[0]):
            return Exchange(request, incoming[0], self._trusted)
        return Exchange(request, f"{_ids.getrandbits(128):032x}", self._trusted)

    def now(self, exchange: Exchange) -> Step | None:
        """Take the request as far as it goes without waiting; None once it is answered,
        else the step ``later`` takes up."""
        # 1. What the parser let through but this gateway does not accept.
        refusal = _refusal(exchange.request, self._limits)
        if refusal is not None:
            exchange.label = "_refused"
            self._answer(exchange, refusal)
            return None
        # 2. Where it goes.
        step = self._route(exchange)
        # 3. Credentials and verdict, when a pair verified before settles them at once.
        if step is VERIFY:
            identity = self._authenticator.verified_now(exchange)
            if identity is not None:
                self._verified(exchange, identity)
                return None
        elif isinstance(step, Forward):
            if step.route.requires_auth:
                step.identity = self._authenticator.verified_now(exchange)
        elif isinstance(step, Reply):
            self._answer(exchange, step)
            return None
        return step

    async def later(self, exchange: Exchange, step: Step) -> None:
        """What ``now`` left: the verdict if still due, then forward or deny; or readiness."""
        if isinstance(step, Forward):
            identity = step.identity
            if identity is None and step.route.requires_auth:
                identity = await self._verdict(exchange)  # 4. the verdict
                if identity is None:
                    return  # denied
            reply = await self._forward(exchange, step, identity)  # 5. forward
            if reply is not None:
                self._answer(exchange, reply)
        elif isinstance(step, Verify):
            identity = await self._verdict(exchange)  # 4. the verdict
            if identity is not None:
                self._verified(exchange, identity)  # 5. forward-auth's answer
        else:
            self._answer(exchange, await self._ready())

    def failed(self, exchange: Exchange) -> None:
        """An unexpected error escaped ``now`` or ``later`` (the server answers 500)."""
        log.exception("unhandled error", extra={"fields": {"request_id": exchange.request_id}})

    def finished(self, exchange: Exchange, duration: float) -> None:
        """Count and log one answered (or abandoned) request."""
        request = exchange.request
        status = str(request.status) if request.started else "aborted"
        self._metrics.count(self._metrics.requests, exchange.label, status)
        self._access.log(exchange, duration)

    def refused(self, status: int) -> None:
        """Count a request the parser refused."""
        self._metrics.count(self._metrics.requests, "_refused", str(status))

    # -- the steps -------------------------------------------------------------------------
    def _route(self, exchange: Exchange) -> Reply | Step:
        """The operational endpoints, forward-auth, or the route table; what to answer at
        once, or what is left (``exchange.label`` names where the request went)."""
        request = exchange.request
        path = request.target.partition("?")[0]
        if path in _OPS:
            exchange.label = "_ops"
            if request.method not in ("GET", "HEAD"):
                return problem(405, "Only GET and HEAD are allowed here.", {"Allow": "GET, HEAD"})
            if path == "/healthz":
                return Reply(200, _JSON, b'{"status":"ok","pid":%d}' % os.getpid())
            if path == "/metrics":
                allow = self._metrics_allow
                # The connecting peer, never X-Forwarded-For: a client cannot name itself in.
                if allow is not None and not is_trusted(request.remote or "", allow):
                    return problem(
                        403, "/metrics is served only to the addresses GATEWAY_METRICS_ALLOW "
                             "names.")
                return Reply(200, _METRICS_TYPE, generate_latest(self._metrics.registry))
            return READY  # /readyz asks Redis
        if path == VERIFY_PATH or path.startswith(_VERIFY_SUB):
            exchange.label = VERIFY_PATH
            return VERIFY
        normal = normalize_path(path) if is_safe_path(path) else None
        if normal is None or (normal is not path and not is_safe_path(normal)):
            exchange.label = "_refused"
            return problem(
                400, "The request path holds dot segments, encoded separators, ambiguous "
                     "escapes or a fragment.", close=True)
        route = self._routes.match(normal)
        if route is None:
            exchange.label = "_unmatched"
            return problem(404, "No route of this gateway matches the request path.")
        exchange.label = route.prefix
        declared = request.headers.get(hdrs.CONTENT_LENGTH)
        if declared is not None and int(declared) > self._limits.max_body_bytes:
            return problem(
                413, "The request body is larger than this gateway accepts.", close=True)
        return Forward(route, normal)

    async def _verdict(self, exchange: Exchange) -> Identity | None:
        """The verdict (``Authenticator.verdict``); a denial is answered here (None)."""
        verdict = await self._authenticator.verdict(exchange)
        if isinstance(verdict, Denial):
            exchange.auth = verdict.reason
            exchange.key_id = verdict.key_id
            self._answer(exchange, verdict.response())
            return None
        return verdict

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

    async def _forward(self, exchange: Exchange, step: Forward,
                       identity: Identity | None) -> Reply | None:
        """Send the request upstream and relay the answer; a Reply when there is none."""
        request = exchange.request
        if identity is not None:
            exchange.auth = "ok"
            exchange.key_id = identity.key_id
            self._note(identity.key_id)
        proto = "http"
        remote = request.remote or ""
        if self._trusted and is_trusted(remote, self._trusted):
            prior = ", ".join(request.headers.getall(hdrs.X_FORWARDED_FOR, ()))
            forwarded_for = f"{prior}, {remote}" if prior else remote
            proto = request.headers.get(hdrs.X_FORWARDED_PROTO, proto)
        else:
            forwarded_for = exchange.client()  # the peer itself
        ctx = ForwardContext(
            route=step.route, raw_path=step.path, raw_query=request.target.partition("?")[2],
            request_id=exchange.request_id, forwarded_for=forwarded_for, forwarded_proto=proto,
            identity=identity.block if identity is not None else b"",
        )
        return await self._forwarder.forward(request, ctx)

    @staticmethod
    def _answer(exchange: Exchange, reply: Reply) -> None:
        reply.send(exchange.request, exchange.request_id)

    def _verified(self, exchange: Exchange, identity: Identity) -> None:
        """Answer forward-auth with its 204 and the identity headers."""
        exchange.auth = "ok"
        exchange.key_id = identity.key_id
        self._note(identity.key_id)
        exchange.request.respond(204, b"%sCache-Control: no-store\r\nX-Request-Id: %s\r\n" % (
            identity.block, exchange.request_id.encode("ascii")))


def _no_note(key_id: str) -> None:
    """What is noted with GATEWAY_USAGE_RECORDING off: nothing."""


def _refusal(request: Request, limits: Limits) -> Reply | None:
    """What the parser let through but this gateway refuses; None for the rest.

    Framing a stricter hop could read differently: anything unusual about how a body is
    delimited is refused outright (RFC 9112 §6.1), so the gateway and the upstream can never
    disagree on where one request ends. And headers larger than the configured limits.
    """
    version = request.version
    if version not in ((1, 0), (1, 1)):
        return _framing("Only HTTP/1.0 and HTTP/1.1 requests are accepted.")
    headers = request.headers
    if len(headers.getall(hdrs.HOST, ())) > 1:
        return _framing("The request has more than one Host header.")
    if hdrs.TRANSFER_ENCODING in headers:
        encodings = headers.getall(hdrs.TRANSFER_ENCODING)
        if version < (1, 1):
            return _framing("Transfer-Encoding is not allowed in an HTTP/1.0 request.")
        if len(encodings) > 1 or encodings[0].strip().lower() != "chunked":
            return _framing("Transfer-Encoding must be exactly 'chunked'.")
    raw = request.raw_headers
    # Each header line holds its name and value and at least 2 more bytes (":" and an end of
    # line), so when the whole head is short enough the lengths need not be added up.
    if len(raw) > limits.max_headers or (
        request.head_bound + 2 * len(raw) > limits.max_header_bytes
        and sum(map(len, chain.from_iterable(raw))) + 4 * len(raw) > limits.max_header_bytes
    ):
        return problem(431, "The request headers are larger than this gateway accepts.",
                       close=True)
    return None


def _framing(detail: str) -> Reply:
    return problem(400, detail, close=True)
