"""The gateway's connection layer: HTTP/1.1 connections on aiohttp's strict request parser.

aiohttp's web stack (router, middlewares, ``web.Response``, its writer) cost more per request
than everything the gateway itself does, so requests are served by this protocol instead
(docs/architecture.md, "The HTTP layer", has the measurement). It keeps what matters from
aiohttp, reached through ``wire``: every byte a client sends goes through aiohttp's own C parser
(llhttp in strict mode, plus aiohttp's checks: duplicate singleton headers, missing Host, NUL in
values, obsolete WebSocket headers), and request bodies arrive in aiohttp ``StreamReader``s with
its flow control. What it leaves out is everything the gateway does not need: a response is a
status, a pre-encoded header block and a body, written with one ``transport.write``. Each
parsed request goes to a ``Handler`` (``handler.GatewayHandler``).

Per connection, requests are answered strictly in order (pipelining included); a request that
the parser refuses gets a problem+json 400 (431 for an over-long line, or a head longer than
``max_head_bytes`` in all, refused once that many bytes arrived without its end, counted in
pieces of at most 16 KiB) after the answers already owed, and the connection closes. Closing
after a refusal is a lingering close: a FIN after the answer, and what the client still sends is
read and dropped for a moment, so that a reset cannot destroy the answer before the client has
read it. While the client does not read its answers, no more are made (and nothing more is
read); requests are parsed at most 16 ahead of the one being answered (the rest of what
arrived is held back unparsed, and reading pauses); a client that half-closes still gets every
answer it asked for; a request asking to
upgrade is answered as the connection's last. Idle keep-alive connections close after
``keepalive_timeout``; ``close()`` drains: it stops accepting, closes idle connections, lets
requests in flight finish (``Connection: close``), and cuts whatever is left when the timeout
runs out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import sys
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Generic, Protocol, TypeVar

from .wire import (
    EMPTY_PAYLOAD,
    HttpProcessingError,
    HttpVersion11,
    LineTooLong,
    RawRequestMessage,
    StreamReader,
    Wire,
)

__all__ = ["HttpServer", "Request", "date_header", "problem_body", "reason_phrase"]


E = TypeVar("E")  # the handler's record of one request
S = TypeVar("S")  # what the handler's now() leaves for later()


class Handler(Protocol[E, S]):
    """What the server calls for each request, in order: ``begin``, ``now``, ``later`` when
    ``now`` left something, ``finished``."""

    def begin(self, request: Request) -> E:
        """The handler's record of ``request``, handed back to every call after this one."""

    def now(self, exchange: E) -> S | None:
        """Answer without waiting if possible (None); else what ``later`` is to do."""

    async def later(self, exchange: E, step: S) -> None:
        """Answer, waiting for whatever it needs (run in a task of its own)."""

    def failed(self, exchange: E) -> None:
        """An exception escaped ``now`` or ``later`` (called while it is being handled); the
        server answers 500 when nothing was sent yet."""

    def finished(self, exchange: E, duration: float) -> None:
        """The request was answered, or abandoned (its ``started`` is False)."""

    def refused(self, status: int) -> None:
        """The parser refused a request; it was answered with ``status``."""


_QUEUE_LIMIT = 16  # pipelined requests parsed ahead before reading pauses
_READ_LIMIT = 2**16  # request body bytes buffered before reading pauses
_SWEEP_SECONDS = 1.0
# After refusing a request whose bytes may still be arriving: how long the rest is read and
# thrown away before the connection really closes (see _Connection._linger).
_LINGER_SECONDS = 2.0
# Reads are fed to the parser in pieces of at most this size, so that bytes of a request head
# arriving after a completed request (or a body's end) in the same read are counted against
# the head bound with at most this much slack, and so that one piece of tiny pipelined
# requests cannot queue more than some hundreds of them: once _QUEUE_LIMIT are waiting, the
# rest of a read is held back unparsed (and reading paused) until they are answered.
_FEED_SLICE = 2**14
_NO_BODY = frozenset({204, 304})
_PROBLEM = b"Content-Type: application/problem+json\r\nCache-Control: no-store\r\n"
_reasons = {s.value: s.phrase.encode("latin-1") for s in HTTPStatus}
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, phrase) for code, phrase in _reasons.items()}


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase of ``status`` (empty when it has none)."""
    return _reasons.get(status, b"")


_date_line = b""
_date_until = 0.0  # the time.time() at which _date_line goes stale


def date_header() -> bytes:
    """``Date: ...\r\n`` (RFC 9110 §6.6.1), formatted once per second.

    A plain function and one chained comparison on the common path: it runs for every
    response. (Within the second it was made for: a clock stepped back gets a new line too.)
    """
    global _date_line, _date_until
    now = time.time()
    if _date_until - 1.0 <= now < _date_until:
        return _date_line
    second = int(now)
    _date_until = second + 1.0
    _date_line = b"Date: " + formatdate(second, usegmt=True).encode("ascii") + b"\r\n"
    return _date_line


class Request:
    """One parsed request, and the way its response is written.

    ``target`` is the raw request-target (still percent-encoded, query included). The handler
    answers with ``respond`` (one write) or ``start`` / ``write`` / ``finish`` (streaming); the
    server adds the framing headers (Content-Length or chunked, Connection) itself.
    ``status``, ``body_bytes``, ``started`` and ``finished`` say what was sent.
    """

    __slots__ = (
        "_chunked_out",
        "_conn",
        "body_bytes",
        "chunked",
        "finished",
        "head_bound",
        "headers",
        "keep_alive",
        "method",
        "payload",
        "raw_headers",
        "remote",
        "started",
        "status",
        "target",
        "version",
    )

    def __init__(self, conn: _Connection[Any, Any], message: RawRequestMessage,
                 payload: StreamReader, head_bound: int) -> None:
        self._conn = conn
        # The head (request line and header lines) is at most this many bytes long: all that
        # arrived since the previous request's head was complete. Often small enough to settle
        # a limit on the headers' size without adding up their lengths.
        self.head_bound = head_bound
        self.method: str = message.method
        self.target: str = message.path
        self.version = message.version
        self.headers = message.headers
        self.raw_headers: tuple[tuple[bytes, bytes], ...] = message.raw_headers
        self.payload = payload
        self.remote: str | None = conn.remote
        self.keep_alive = not message.should_close
        self.chunked = bool(message.chunked)
        self.status = 0
        self.body_bytes = 0
        self.started = False
        self.finished = False
        self._chunked_out = False

    @property
    def connection_lost(self) -> bool:
        """True once the client's connection is gone."""
        return self._conn.transport is None or self._conn.transport.is_closing()

    def close_after(self) -> None:
        """Close the connection once this response is written."""
        self.keep_alive = False

    def _framing(self) -> bytes:
        payload = self.payload
        if self._conn.closing or (payload is not EMPTY_PAYLOAD and not payload.is_eof()):
            # Draining, or answering before the body arrived (which then cannot be skipped
            # safely): this is the connection's last response, and it says so.
            self.keep_alive = False
        if self.version == HttpVersion11:
            return b"" if self.keep_alive else b"Connection: close\r\n"
        return b"Connection: keep-alive\r\n" if self.keep_alive else b"Connection: close\r\n"

    def _status_line(self, status: int, reason: bytes | None) -> bytes:
        line = _STATUS_LINES.get(status)
        if line is not None and (reason is None or reason == _reasons.get(status)):
            return line
        if reason is None:
            reason = reason_phrase(status)
        return b"HTTP/1.1 %d %s\r\n" % (status, reason)

    def respond(self, status: int, block: bytes, body: bytes = b"", *,
                reason: bytes | None = None, length: bool = True, date: bool = True) -> None:
        """Write the whole response at once.

        ``block`` holds complete header lines (``Name: value\\r\\n``) without framing headers.
        ``length=False`` leaves Content-Length to ``block`` (HEAD, 204, 304 forwarded as they
        came); otherwise it is ``len(body)``. The body is not sent for HEAD or 204 / 304.
        """
        assert not self.started, "response already started"
        self.started = self.finished = True
        self.status = status
        send_body = self.method != "HEAD" and status not in _NO_BODY
        # Every response goes through here: the common status line, this second's Date line
        # (date_header's own test) and the write are taken without a call each.
        line = _STATUS_LINES.get(status)
        if line is None or (reason is not None and reason != _reasons.get(status)):
            line = self._status_line(status, reason)
        head = [line, block]
        if date:
            now = time.time()
            head.append(_date_line if _date_until - 1.0 <= now < _date_until else date_header())
        if length and status not in _NO_BODY:
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(self._framing())
        head.append(b"\r\n")
        if send_body and body:
            head.append(body)
            self.body_bytes = len(body)
        transport = self._conn.transport
        if transport is not None:
            transport.write(b"".join(head))

    def start(self, status: int, block: bytes, *, length: int | None,
              reason: bytes | None = None, date: bool = True) -> None:
        """Write the status line and headers of a streamed response.

        ``length`` is the body's length when known; otherwise the body is chunked (HTTP/1.1)
        or delimited by closing the connection (HTTP/1.0).
        """
        assert not self.started, "response already started"
        self.started = True
        self.status = status
        head = [self._status_line(status, reason), block]
        if date:
            head.append(date_header())
        if length is not None:
            head.append(b"Content-Length: %d\r\n" % length)
        elif self.version == HttpVersion11:
            head.append(b"Transfer-Encoding: chunked\r\n")
            self._chunked_out = True
        else:
            self.keep_alive = False
        head.append(self._framing())
        head.append(b"\r\n")
        self._conn.send(b"".join(head))

    async def write(self, data: bytes) -> None:
        """Write a piece of a started response's body (waits while the client is slow)."""
        if not data:
            return
        self.body_bytes += len(data)
        conn = self._conn
        if self._chunked_out:
            conn.send_many([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            conn.send(data)
        await conn.drain()

    def finish(self) -> None:
        """End a started response."""
        if self._chunked_out:
            self._conn.send(b"0\r\n\r\n")
        self.finished = True

    def send_continue(self) -> None:
        """Answer ``Expect: 100-continue``: the client may send its body now."""
        if self.version == HttpVersion11 and not self.started:
            self._conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")


def problem_body(status: int, detail: str) -> bytes:
    """An RFC 9457 problem+json body with the standard reason phrase as its title."""
    return json.dumps({
        "type": "about:blank", "title": reason_phrase(status).decode("latin-1"),
        "status": status, "detail": detail,
    }, separators=(",", ":")).encode()


class _Connection(Wire[RawRequestMessage], Generic[E, S]):
    """One client connection: parses requests and answers them in order."""

    def __init__(self, server: HttpServer[E, S], peer: str | None = None) -> None:
        super().__init__(server.loop)
        self._server = server
        self._peer = peer  # the name of every peer of a Unix socket (they have no address)
        self.remote: str | None = peer
        self.closing = False
        self._queue: collections.deque[
            tuple[RawRequestMessage, StreamReader, int] | Exception
        ] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._payload: StreamReader | None = None  # the body being received, if any
        self._stop_parsing = False
        self._last_message: RawRequestMessage | None = None  # answered, then the connection ends
        self._eof = False  # the client half-closed: answer what is queued, then close
        self.idle_since: float | None = None
        self._head_bytes = 0  # received since the last complete request head, outside bodies
        self._fed = 0  # fed to the parser since the last complete request head, bodies included
        self._unfed = b""  # received, held back unparsed while enough requests are queued
        self._eof_held = False  # the client's EOF came behind held-back bytes
        self._linger_timer: asyncio.TimerHandle | None = None
        self.parse_requests(limit=_READ_LIMIT, max_line_size=server.max_line_size,
                            max_headers=server.max_headers)

    # -- asyncio protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._peer is None:
            peer = transport.get_extra_info("peername")
            self.remote = peer[0] if isinstance(peer, (tuple, list)) and peer else None
        self.idle_since = self.loop.time()
        self._server.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._server.connections.discard(self)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        payload = self._payload
        if payload is not None and not payload.is_eof():
            payload.set_exception(ConnectionResetError("client closed the connection"))
        self._payload = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._queue.clear()
        self._unfed = b""

    def data_received(self, data: bytes) -> None:
        if self._stop_parsing:
            return  # refused, or lingering: whatever still comes is read and dropped
        if self._unfed:
            self._unfed += data  # reading is paused; a read already under way may still land
            return
        self._feed(data)
        if self._queue:
            # Only when a request is complete: a head arriving bit by bit must not count as
            # activity that keeps an idle keep-alive connection open.
            self._wake()

    def _feed(self, data: bytes) -> None:
        """Parse ``data`` piece by piece; hold the rest back once enough requests wait."""
        if len(data) <= _FEED_SLICE and len(self._queue) <= _QUEUE_LIMIT:
            self._feed_slice(data)
            return
        for start in range(0, len(data), _FEED_SLICE):
            if self._stop_parsing:
                return
            if len(self._queue) > _QUEUE_LIMIT:
                self._unfed = data[start:]
                self.pause()
                return
            self._feed_slice(data[start:start + _FEED_SLICE])

    def _feed_slice(self, data: bytes) -> None:
        payload = self._payload
        if payload is not None and payload.is_eof():
            payload = self._payload = None  # that body is complete
        in_head = payload is None
        if in_head:
            self._head_bytes += len(data)
        self._fed += len(data)
        try:
            messages, upgraded, _tail = self.parse(data)
        except HttpProcessingError as exc:
            self._refuse(exc)
            return
        if not messages:
            if in_head and self._head_bytes > self._server.max_head_bytes:
                # Every line and the count of lines may be within the parser's limits while
                # the whole head is not: refused before it ends, so that no connection makes
                # the gateway hold more than this much of a request head.
                self._refuse(LineTooLong("request head", str(self._server.max_head_bytes),
                                         str(self._head_bytes)))
            return
        self._head_bytes = 0
        # Every head completed now lies within what was fed since the last one completed; the
        # start of the next head may be in this slice already, so the count goes on from it.
        bound, self._fed = self._fed, len(data)
        for message, payload in messages:
            self._queue.append((message, payload, bound))
            if not payload.is_eof():
                self._payload = payload
        if upgraded:
            # No protocol switch is ever made: the request is answered (as the connection's
            # last), then the connection closes before anything after it is read.
            self._stop_parsing = True
            self._last_message = messages[-1][0]
            self.stop_reading()
        elif len(self._queue) > _QUEUE_LIMIT:
            self.pause()

    def _refuse(self, exc: HttpProcessingError) -> None:
        """The bytes received cannot be (or may not be) a request: answer 4xx after the
        answers already owed, and read nothing more."""
        self._stop_parsing = True
        self._unfed = b""
        payload = self._payload
        if payload is not None and not payload.is_eof():
            payload.set_exception(exc)
        self._queue.append(exc)
        self.stop_reading()
        self._wake()

    def eof_received(self) -> bool:
        if self._linger_timer is not None:
            self._close()  # lingering, and the client is done sending: close now
            return True
        if self._unfed:
            self._eof_held = True  # taken in once the held-back bytes are parsed
            return True
        try:
            self.parse_eof()
        except HttpProcessingError as exc:
            # The client ended mid-body: whoever reads that body learns it now.
            payload = self._payload
            if payload is not None and not payload.is_eof():
                payload.set_exception(exc)
        # Half-closed by the client: answer everything it asked, then close.
        self._eof = True
        if self._task is None and not self._queue:
            self._close()
        return True

    def resume_writing(self) -> None:
        super().resume_writing()
        # The client reads its answers again: go on with the requests it queued meanwhile.
        if self._task is None and (self._queue or self._unfed) and self.transport is not None:
            self._wake()

    # -- serving ----------------------------------------------------------------------------
    def _wake(self) -> None:
        """Answer what is queued: synchronously while the handler can, else in a task."""
        if self._task is not None:
            return
        self.idle_since = None
        handler = self._server.handler
        loop = self.loop
        while self._queue or (self._unfed and not self.writing_blocked):
            if not self._queue:
                # Every queued request is answered: parse what was held back.
                data, self._unfed = self._unfed, b""
                self._feed(data)
                continue
            if self.writing_blocked:
                # The client does not read its answers: stop answering (and reading) until it
                # does, so that its pipelined requests cannot pile up responses in memory.
                self.pause()
                self.idle_since = loop.time()  # no progress for the keep-alive timeout: closed
                return
            item = self._queue.popleft()
            if isinstance(item, Exception):
                self._bad_request(item)
                return
            message, payload, bound = item
            request = Request(self, message, payload, bound)
            if message is self._last_message:
                request.keep_alive = False
            started = loop.time()
            exchange = handler.begin(request)
            try:
                step = handler.now(exchange)
            except Exception:
                step = None
                self._failed(request, exchange)
            if step is not None:
                self._task = loop.create_task(self._later(request, exchange, step, started))
                return
            if not self._done(request, exchange, started):
                return
        if self._eof_held and not self._unfed:
            self._eof_held = False
            self.eof_received()
            return
        self.idle_since = loop.time()
        if self.held and not self._stop_parsing and not self._unfed:
            self.resume()

    async def _later(self, request: Request, exchange: E, step: S, started: float) -> None:
        try:
            try:
                await self._server.handler.later(exchange, step)
            except (asyncio.CancelledError, ConnectionError):
                if not request.started:
                    request.status = 499  # the client left before an answer
                self._server.handler.finished(exchange, self.loop.time() - started)
                self._abort()
                return
            except Exception:
                self._failed(request, exchange)
            if not self._done(request, exchange, started):
                return
        finally:
            self._task = None
        if self.transport is not None:
            self._wake()

    def _failed(self, request: Request, exchange: E) -> None:
        """An unexpected error in the handler: a 500 if nothing was sent yet."""
        self._server.handler.failed(exchange)
        if not request.started:
            request.close_after()
            request.respond(500, _PROBLEM, problem_body(
                500, "The gateway failed to handle this request."))

    def _done(self, request: Request, exchange: E, started: float) -> bool:
        """Account for an answered request; False when the connection ends with it."""
        self._server.handler.finished(exchange, self.loop.time() - started)
        if not request.finished:
            self._abort()
            return False
        if request.payload is not EMPTY_PAYLOAD and not request.payload.is_eof():
            # The body was not read (an early refusal): what follows it on the connection
            # cannot be parsed, so the connection ends here, once the client had the answer.
            self._linger()
            return False
        if not request.keep_alive or self.closing or (self._eof and not self._queue):
            self._close()
            return False
        return True

    def _bad_request(self, exc: Exception) -> None:
        status = 431 if isinstance(exc, LineTooLong) else 400
        detail = (
            "The request headers are larger than this gateway accepts." if status == 431
            else "The request is not valid HTTP/1.1."
        )
        body = problem_body(status, detail)
        self.send(b"".join([
            b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status)), _PROBLEM, date_header(),
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body), body,
        ]))
        self._server.handler.refused(status)
        self._linger()

    # -- writing ----------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(data)

    def send_many(self, parts: list[bytes]) -> None:
        transport = self.transport
        if transport is not None:
            transport.writelines(parts)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _linger(self) -> None:
        """Close after a refusal while the client may still be sending (nginx's lingering close).

        Closing a socket with unread bytes in it makes the kernel answer with a reset, which
        can destroy the refusal (a 413 to a large upload, a 400 or 431) before the client has
        read it. So: the answer goes out followed by a FIN, and whatever else arrives is read
        and dropped until the client closes too, or for at most ``_LINGER_SECONDS``.
        """
        transport = self.transport
        if transport is None or self._linger_timer is not None:
            return
        self._stop_parsing = True
        self._queue.clear()  # nothing more is answered on this connection
        self._unfed = b""
        self.idle_since = None  # not the keep-alive sweep's to close
        if self._eof or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._linger_timer = self.loop.call_later(_LINGER_SECONDS, self._close)
        self.restart_reading()

    def begin_drain(self) -> None:
        """Server shutdown: close now when idle, else after the response in flight."""
        self.closing = True
        if self._task is None:
            self._close()


class HttpServer(Generic[E, S]):
    """Serves ``handler`` on a listening socket; see the module docstring."""

    def __init__(self, handler: Handler[E, S], *, max_line_size: int, max_headers: int,
                 max_head_bytes: int | None = None, keepalive_timeout: float = 75.0) -> None:
        self.handler = handler
        self.max_line_size = max_line_size
        self.max_headers = max_headers
        # The whole request head (request line and headers): by default room for a request
        # line and a header block each as long as the longest line allowed.
        self.max_head_bytes = max_line_size * 2 if max_head_bytes is None else max_head_bytes
        self.keepalive_timeout = keepalive_timeout
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection[E, S]] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def listen(self, host: str, port: int, *, reuse_port: bool = False,
                     **kwargs: Any) -> int:
        """Start accepting on ``host:port``; the bound port."""
        server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_port=reuse_port or None,
            backlog=1024, **kwargs,
        )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())
        sock = server.sockets[0]
        return int(sock.getsockname()[1])

    async def listen_unix(self, sock: socket.socket, *, peer: str,
                          unix_backlog: int = 1024) -> None:
        """Start accepting on ``sock``, a bound and listening Unix socket (possibly shared by
        several processes); every peer on it is named ``peer``."""
        sock.setblocking(False)
        # The backlog again (the default would shrink the shared socket's to 100), and the
        # socket's file left to its owner (Python 3.13 and later would remove it on close).
        cleanup: dict[str, Any] = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}
        server = await self.loop.create_unix_server(
            lambda: _Connection(self, peer), sock=sock, backlog=unix_backlog, **cleanup,
        )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            deadline = self.loop.time() - self.keepalive_timeout
            for conn in list(self.connections):
                if conn.idle_since is not None and conn.idle_since < deadline:
                    conn._close()

    async def close(self, timeout: float) -> None:
        """Stop accepting, finish the requests in flight (up to ``timeout``), close the rest."""
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.begin_drain()
        deadline = self.loop.time() + timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn._abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

