"""Forwarding one authenticated request to its upstream, streaming both ways.

Bodies are never held whole: after a read-ahead of at most ``READ_AHEAD`` bytes (sent with the
head in one write), the request body is read from the client in chunks as the upstream takes
them (a separate task, so that an upstream answering early is heard), and the response body is
written to the client as it arrives. A response whose Content-Length is at most
``BUFFERED_BODY_LIMIT`` is read first and answered with one write. The timeout bounds every wait:
a pause in the request body (a stalled client: 408; an upstream that stops taking it: 504), the
wait for the response head once the body is complete (504), and, while streaming the response,
an upstream idle longer than that (cut). Failures before any byte went back: 502 (cannot connect,
or the connection broke), 504 (too slow); after that, the client's connection is cut.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs

from .config import Limits
from .headers import response_header_block, upstream_header_block
from .http_server import Request
from .metrics import Metrics
from .problems import Reply, problem
from .routes import Route
from .upstream import (
    ConnectFailed,
    ConnectTimeout,
    Origin,
    PoolExhausted,
    UpstreamBroken,
    UpstreamConnection,
    UpstreamPool,
)
from .wire import EMPTY_PAYLOAD, RawResponseMessage, StreamReader

__all__ = ["BUFFERED_BODY_LIMIT", "READ_AHEAD", "ForwardContext", "Forwarder"]

# Upstream responses declaring at most this many bytes are read whole and sent to the client in
# one write; anything larger (or of unknown length) is streamed.
BUFFERED_BODY_LIMIT = 64 * 1024
# Request body read before the request goes upstream (see Forwarder._send).
READ_AHEAD = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})
# RFC 9110 §9.2.2: safe to send twice, so a request the upstream may have seen can be retried.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class _BodyTooLarge(Exception):
    """The client's body went past the configured limit while streaming."""


class _ClientBodyFailed(Exception):
    """The client's body could not be read (connection gone, or invalid chunking)."""


class _TimedOut(Exception):
    """No response head within the timeout after the request went out."""


class _ClientTooSlow(Exception):
    """The client's body stopped arriving for longer than the timeout."""


class _Deadline:
    """The timeout of one exchange, pushed back by every step the request body makes.

    A large upload is not a slow upstream: while the body flows (each piece read from the
    client and taken by the upstream), the limit is on the pause between pieces, as nginx's
    proxy_send_timeout; once the body is complete, the upstream has the whole timeout for its
    response head. A body trickling in (a byte a minute would otherwise hold an upstream
    connection for as long as the body limit lasts) stops pushing it back once, a timeout's
    worth of time after the start, it has come at less than ``min_rate`` bytes a second on
    average. When it runs out, whoever was being waited for is blamed: the client (408) while
    its body was awaited, else the upstream (504).
    """

    __slots__ = ("_loop", "_min_rate", "_started", "_timeout", "_waiter", "at", "handle",
                 "on_client", "received")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, min_rate: int,
                 waiter: asyncio.Future[Any]) -> None:
        self._loop = loop
        self._timeout = timeout
        self._min_rate = min_rate
        self._waiter = waiter
        self.on_client = False
        self.received = 0
        self._started = loop.time()
        self.at = self._started + timeout
        self.handle = loop.call_at(self.at, self._fire)

    def extend(self) -> None:
        """The full timeout again from now (the timer is re-armed when it fires)."""
        self.at = self._loop.time() + self._timeout

    def progress(self, size: int) -> None:
        """The body moved on by ``size`` bytes: extend, unless it is arriving too slowly."""
        now = self._loop.time()
        self.received += size
        elapsed = now - self._started
        if elapsed > self._timeout and self.received < self._min_rate * elapsed:
            return
        self.at = now + self._timeout

    def cancel(self) -> None:
        self.handle.cancel()

    def _fire(self) -> None:
        if self._loop.time() < self.at:
            self.handle = self._loop.call_at(self.at, self._fire)
        elif not self._waiter.done():
            self._waiter.set_exception(_ClientTooSlow() if self.on_client else _TimedOut())


@dataclass(slots=True)
class ForwardContext:
    """What the gateway knows about the request beyond its headers.

    (Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
    and one of these is made for every request forwarded.)
    """

    route: Route
    raw_path: str
    raw_query: str
    request_id: str
    forwarded_for: str
    forwarded_proto: str
    identity: bytes  # the authenticated key's header lines; empty on an open route


class Forwarder:
    """Sends requests upstream over one connection pool."""

    def __init__(self, pool: UpstreamPool, limits: Limits, metrics: Metrics) -> None:
        self._pool = pool
        self._limits = limits
        self._metrics = metrics
        self._origins: dict[str, Origin] = {}
        self._loop = asyncio.get_running_loop()

    def _origin(self, route: Route) -> Origin:
        origin = self._origins.get(route.upstream)
        if origin is None:
            origin = self._origins[route.upstream] = Origin.from_url(route.upstream)
        return origin

    def _head(self, request: Request, ctx: ForwardContext, origin: Origin) -> bytes:
        target = origin.base_path + ctx.route.forward_path(ctx.raw_path)
        if ctx.raw_query:
            target = f"{target}?{ctx.raw_query}"
        host = request.headers.get(hdrs.HOST)
        block = upstream_header_block(
            request.raw_headers, forwarded_for=ctx.forwarded_for,
            forwarded_proto=ctx.forwarded_proto,
            forwarded_host=host.encode("utf-8", "surrogateescape") if host else None,
            request_id=ctx.request_id, identity=ctx.identity,
        )
        # The body's framing, from the parser's own reading of the request (never copied).
        length = request.headers.get(hdrs.CONTENT_LENGTH)
        if request.chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
        elif length is not None:
            framing = b"Content-Length: %d\r\n" % int(length)  # digits: the parser checked
        else:
            framing = b""
        return b"%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n" % (
            request.method.encode("ascii"), target.encode("utf-8", "surrogateescape"),
            origin.host_header, block, framing,
        )

    async def forward(self, request: Request, ctx: ForwardContext) -> Reply | None:
        """Send ``request`` upstream and answer the client: None when answered, or a Reply."""
        origin = self._origin(ctx.route)
        head = self._head(request, ctx, origin)
        has_body = request.payload is not EMPTY_PAYLOAD
        if has_body and "100-continue" in request.headers.get(hdrs.EXPECT, "").lower():
            request.send_continue()
        started = time.perf_counter()
        fresh = False
        while True:
            try:
                conn = await self._pool.acquire(origin, fresh=fresh)
            except PoolExhausted:
                # The gateway's own limit, not the upstream failing: busy, try again shortly.
                self._metrics.upstream_errors.labels("pool_exhausted").inc()
                return problem(503, "Every connection to the upstream is in use; retry shortly.",
                               {"Retry-After": "1"})
            except ConnectTimeout:
                self._metrics.upstream_errors.labels("connect_timeout").inc()
                return problem(502, "The upstream did not accept a connection in time.")
            except ConnectFailed:
                self._metrics.upstream_errors.labels("connect").inc()
                return problem(502, "The upstream could not be reached.")
            try:
                return await self._exchange(request, conn, head, has_body, ctx, started)
            except UpstreamBroken:
                # A kept-alive connection the upstream had already closed before answering: a
                # bodiless idempotent request is tried once more on a new connection (as
                # nginx's proxy_next_upstream does for idempotent methods).
                if (
                    not fresh and not has_body and request.method in _IDEMPOTENT
                    and not conn.got_data and conn.idle_since
                ):
                    fresh = True
                    continue
                self._metrics.upstream_errors.labels("reset").inc()
                return problem(502, "The upstream could not be reached.")

    async def _exchange(self, request: Request, conn: UpstreamConnection, head: bytes,
                        has_body: bool, ctx: ForwardContext, started: float) -> Reply | None:
        reusable = False
        sender: asyncio.Task[None] | None = None
        try:
            waiter = conn.begin(head_only=request.method == "HEAD")
            assert conn.transport is not None
            timeout = self._limits.upstream_total_timeout
            deadline: _Deadline | asyncio.TimerHandle
            if has_body:
                deadline = _Deadline(self._loop, timeout, self._limits.min_upload_rate, waiter)
                sender = self._loop.create_task(self._send(request, conn, head, deadline))
                sender.add_done_callback(lambda task: _body_failed(task, waiter))
            else:
                conn.transport.write(head)
                deadline = self._loop.call_later(timeout, _expire, waiter)
            try:
                message, payload = await waiter
            except _TimedOut:
                self._metrics.upstream_errors.labels("timeout").inc()
                return problem(504, "The upstream did not answer in time.")
            except _ClientTooSlow:
                request.close_after()
                return problem(408, "The request body did not arrive in time.")
            except _BodyTooLarge:
                request.close_after()
                return problem(413, "The request body is larger than this gateway accepts.")
            except _ClientBodyFailed as exc:
                raise ConnectionResetError("the client's body could not be read") from exc
            finally:
                deadline.cancel()
            self._metrics.child(self._metrics.upstream_seconds, ctx.route.prefix).observe(
                time.perf_counter() - started)
            answered = await self._relay(request, message, payload, ctx.request_id)
            body_sent = sender is None or (sender.done() and sender.exception() is None)
            reusable = (
                body_sent and not message.should_close and conn.response_done()
                and not (
                    (request.method == "HEAD" or message.code in _NO_BODY_STATUS)
                    and _may_send_more(request.method, message)
                )
            )
            return answered
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
                request.close_after()  # the rest of the client's body will not be read
            self._pool.release(conn, reusable=reusable)

    async def _send(self, request: Request, conn: UpstreamConnection, head: bytes,
                    deadline: _Deadline) -> None:
        """Write the head and the client's body upstream, as the body arrives.

        Up to ``READ_AHEAD`` bytes of body are read before the head goes out, so that a small
        body travels with its head in one write, and a body over the limit that ends within
        them is refused before the upstream hears of the request at all. Every piece read and
        every drain pushes ``deadline`` back.
        """
        limit = self._limits.max_body_bytes
        chunked = request.chunked
        ahead: list[bytes] = []
        seen = 0
        ended = False
        while seen < READ_AHEAD:
            chunk = await _read(request.payload, deadline)
            if not chunk:
                ended = True
                break
            seen += len(chunk)
            if seen > limit:
                raise _BodyTooLarge
            ahead.append(chunk)
        transport = conn.transport
        if transport is None:
            raise UpstreamBroken("the upstream closed the connection")
        parts = [head]
        if ahead:
            body = b"".join(ahead)
            parts += (b"%x\r\n" % len(body), body, b"\r\n") if chunked else (body,)
        if ended and chunked:
            parts.append(b"0\r\n\r\n")
        transport.writelines(parts)
        if ended:
            return
        await conn.drain()
        deadline.progress(0)
        while True:
            chunk = await _read(request.payload, deadline)
            if not chunk:
                break
            seen += len(chunk)
            if seen > limit:
                raise _BodyTooLarge
            if chunked:
                transport.writelines([b"%x\r\n" % len(chunk), chunk, b"\r\n"])
            else:
                transport.write(chunk)
            await conn.drain()
            deadline.progress(0)
        if chunked:
            transport.write(b"0\r\n\r\n")

    async def _relay(self, request: Request, message: RawResponseMessage,
                     payload: StreamReader, request_id: str) -> Reply | None:
        status = message.code
        no_body = request.method == "HEAD" or status in _NO_BODY_STATUS
        # A HEAD or 304 answer's Content-Length describes the body not sent, and passes on; a
        # 204 must have none (RFC 9110 §8.6), whatever the upstream said.
        block, had_date = response_header_block(
            message.raw_headers, keep_length=no_body and status != 204)
        block += b"X-Request-Id: %s\r\n" % request_id.encode("ascii")
        reason = message.reason.encode("utf-8", "surrogateescape")
        if no_body:
            request.respond(status, block, reason=reason, length=False, date=not had_date)
            return None
        length: int | None = None
        if not message.chunked:
            declared = message.headers.get("Content-Length")
            length = int(declared) if declared is not None else None
        timeout = self._limits.upstream_total_timeout
        if length is not None and length <= BUFFERED_BODY_LIMIT:
            if payload.is_eof():  # usually: the whole body came with the head
                request.respond(status, block, payload.read_nowait(), reason=reason,
                                date=not had_date)
                return None
            try:
                async with asyncio.timeout(timeout):
                    body = await payload.read()
            except TimeoutError:
                # Nothing was sent to the client yet, so it can still be told plainly.
                self._metrics.upstream_errors.labels("timeout").inc()
                return problem(504, "The upstream did not send its response in time.")
            except ConnectionError:
                self._metrics.upstream_errors.labels("reset").inc()
                return problem(502, "The upstream failed while sending its response.")
            request.respond(status, block, body, reason=reason, date=not had_date)
            return None
        request.start(status, block, length=length, reason=reason, date=not had_date)
        try:
            while True:
                # An upstream that stops sending, or a client that stops reading, for longer
                # than the timeout ends the exchange (and frees the upstream connection).
                async with asyncio.timeout(timeout):
                    chunk = await payload.readany()
                    if not chunk:
                        break
                    await request.write(chunk)
        except (TimeoutError, ConnectionResetError) as exc:
            if request.connection_lost:
                raise
            # Headers are gone already: the only honest signal left is a cut connection.
            self._metrics.upstream_errors.labels("reset").inc()
            raise ConnectionResetError("upstream failed while streaming") from exc
        request.finish()
        return None


def _may_send_more(method: str, message: RawResponseMessage) -> bool:
    """Whether a bodiless answer may be followed by stray bytes: not worth pooling after.

    A HEAD answer ends with its head, whatever length it announces; an application that
    writes the body anyway (a known bug of some) would have those bytes read as the answer to
    whichever request uses the connection next, another client's perhaps. Likewise a 204
    that announces a body, or a chunked 304: both break RFC 9110, so their upstream cannot be
    trusted to stop there. (A 304's Content-Length is the representation's, and normal.)
    """
    if method == "HEAD":
        return True
    code = message.code
    if code in _NO_BODY_STATUS:
        headers = message.headers
        if "Transfer-Encoding" in headers:
            return True
        return code == 204 and headers.get("Content-Length", "0").strip() != "0"
    return False


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_TimedOut())


async def _read(payload: StreamReader, deadline: _Deadline) -> bytes:
    """The next piece of the client's body (empty at its end); the deadline moves with it."""
    deadline.on_client = True
    try:
        chunk = await payload.readany()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise _ClientBodyFailed(str(exc)) from exc
    finally:
        deadline.on_client = False
    if chunk:
        deadline.progress(len(chunk))
    else:
        deadline.extend()  # the body is complete: the upstream's whole timeout starts now
    return chunk


def _body_failed(task: asyncio.Task[None], waiter: asyncio.Future[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()  # retrieved either way: a late failure is the waiter's no more
    if exc is not None and not waiter.done():
        waiter.set_exception(exc)

