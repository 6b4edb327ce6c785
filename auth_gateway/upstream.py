"""Pooled keep-alive HTTP/1.1 connections to upstreams, read with aiohttp's response parser.

The gateway's own client for forwarding: a request is a pre-encoded head written to a pooled
connection, the answer a ``RawResponseMessage`` and an aiohttp ``StreamReader`` for its body
(the same parser and reader aiohttp's client uses, in the same lenient-for-responses mode), so
that none of ``ClientSession``'s per-request machinery (URL objects, header merging, tracing,
cookies) is paid on the hot path.

A connection goes back to the pool only when its response was read to the end, the upstream
did not ask to close, and the request body was sent whole; anything else closes it. A
connection idle for ``idle_timeout`` is never used again (a sweep closes it): an upstream closes
idle connections after its own keep-alive timeout, and a request written at that moment would
meet the close, so the gateway's must be the shorter. At most ``max_connections`` per upstream
are in use at once (so that one slow upstream cannot take the connections of the others);
further requests to it wait, up to the connect timeout, for one to come back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .wire import HttpProcessingError, RawResponseMessage, StreamReader, Wire

__all__ = [
    "ConnectFailed",
    "ConnectTimeout",
    "Origin",
    "PoolExhausted",
    "UpstreamBroken",
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamPool",
]

log = logging.getLogger("auth_gateway")

_READ_LIMIT = 2**16
_MAX_LINE = 65536
_SWEEP_SECONDS = 5.0


class UpstreamError(Exception):
    """The upstream could not be used for this request."""


class ConnectFailed(UpstreamError):
    """No connection could be made (refused, unreachable, DNS, TLS)."""


class ConnectTimeout(UpstreamError):
    """No connection within the connect timeout."""


class PoolExhausted(UpstreamError):
    """Every connection this upstream may have is in use, and none came back in time."""


class UpstreamBroken(UpstreamError):
    """The connection failed or the upstream sent no valid response head."""


@dataclass(frozen=True)
class Origin:
    """Where an upstream lives: what the pool keys connections by."""

    scheme: str
    host: str
    port: int
    host_header: bytes = field(compare=False)
    base_path: str = field(compare=False)
    # (scheme, host, port) as a plain tuple: what the pool keys its slots by (hashed in C,
    # where the dataclass's own hash is a Python call).
    key: tuple[str, str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.scheme, self.host, self.port))

    @classmethod
    def from_url(cls, url: str) -> Origin:
        """The origin of a route's upstream base URL (validated by the route table)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(
            scheme=parts.scheme, host=host, port=port,
            host_header=parts.netloc.encode("idna" if not parts.netloc.isascii() else "ascii"),
            base_path=parts.path.rstrip("/"),
        )


class UpstreamConnection(Wire[RawResponseMessage]):
    """One connection to an upstream; ``begin()`` before each request written to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        super().__init__(loop)
        self.origin = origin
        self.reusable = True
        self.got_data = False
        self.idle_since = 0.0
        self.head_at = 0.0  # when the last response's head arrived
        self.leased = False  # handed out by the pool and not given back yet
        self.slot: _Slot  # the pool's share for this origin, set by the pool
        self.payload: StreamReader | None = None
        self._head: asyncio.Future[tuple[RawResponseMessage, StreamReader]] | None = None

    def begin(self, *, head_only: bool) -> asyncio.Future[tuple[RawResponseMessage, StreamReader]]:
        """Prepare for one response; the future resolves with its head and body reader."""
        self.parse_response(limit=_READ_LIMIT, max_line_size=_MAX_LINE, with_body=not head_only)
        self.got_data = False
        self.payload = None
        head = self._head = self.loop.create_future()
        return head

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            if not data:
                return  # a late resume_reading() of a finished body
            # Nothing was asked: an upstream talking out of turn cannot be trusted again.
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
            return
        if data:
            self.got_data = True
        try:
            messages, upgraded, _tail = self.parse(data)
        except HttpProcessingError as exc:
            self._broken(UpstreamBroken(f"invalid response from the upstream: {exc.message}"))
            return
        for message, payload in messages:
            if message.code < 200 and message.code != 101:
                continue  # interim (100, 103): nothing the client asked for
            head = self._head
            if head.done() or message.code == 101:
                self._broken(UpstreamBroken("unexpected response from the upstream"))
                return
            self.payload = payload
            self.head_at = self.loop.time()
            head.set_result((message, payload))
        if upgraded:
            self._broken(UpstreamBroken("the upstream switched protocols"))

    def _broken(self, exc: UpstreamError) -> None:
        self.reusable = False
        head = self._head
        if head is not None and not head.done():
            head.set_exception(exc)
        payload = self.payload
        if payload is not None and not payload.is_eof():
            payload.set_exception(ConnectionResetError(str(exc)))
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.reusable = False
        head = self._head
        if head is not None and not head.done():
            head.set_exception(UpstreamBroken("the upstream closed the connection"))
            return
        payload = self.payload
        if payload is not None and not payload.is_eof():
            # A body delimited by the connection's end is complete at an orderly close (FIN);
            # a reset (exc set) cuts any body short, that one too, so that a truncated response
            # never reaches the client looking complete.
            if exc is None:
                with contextlib.suppress(HttpProcessingError):
                    self.parse_eof()
            if not payload.is_eof():
                payload.set_exception(ConnectionResetError("the upstream closed the connection"))

    def response_done(self) -> bool:
        """True when the response was read to its end."""
        return self.payload is None or self.payload.is_eof()

    def idle(self) -> None:
        # Flow control may have held the connection while a slow client took the body; idle,
        # it must read again, or the upstream closing it would go unseen until the next
        # request is written into it. (aiohttp's reader resumes at the body's end; this does
        # not rely on it.)
        self.end_response()
        self._head = None
        self.payload = None
        # Idle since the response's head came, not since its end was relayed: the upstream's
        # keep-alive clock starts once it has written the response, which (with a slow client
        # holding the tail back in the buffers) may be long before the gateway reads it all.
        self.idle_since = self.head_at

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class _Slot:
    """One upstream's share of the pool: its connections in use, idle ones, and waiters."""

    __slots__ = ("busy", "idle", "waiters")

    def __init__(self) -> None:
        self.busy = 0
        self.idle: list[UpstreamConnection] = []
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()


class UpstreamPool:
    """Keep-alive connections per origin, at most ``max_connections`` of each in use at once.

    Each origin's state is a ``_Slot``, found by the origin's plain tuple key when a connection
    is asked for and kept on the connection itself, so that giving it back costs no lookup.
    """

    def __init__(self, *, max_connections: int, connect_timeout: float,
                 idle_timeout: float = 1.5) -> None:
        self._loop = asyncio.get_running_loop()
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._slots: dict[tuple[str, str, int], _Slot] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._ssl: ssl.SSLContext | None = None

    async def acquire(self, origin: Origin, *, fresh: bool = False) -> UpstreamConnection:
        """A connection to ``origin``: an idle one when there is one (unless ``fresh``)."""
        slot = self._slots.get(origin.key)
        if slot is None:
            slot = self._slots[origin.key] = _Slot()
        while slot.busy >= self._max:
            waiter = self._loop.create_future()
            slot.waiters.append(waiter)
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    _wake(slot)  # a slot was handed to this caller, who leaves: pass it on
                if isinstance(exc, TimeoutError):
                    raise PoolExhausted(
                        f"no free upstream connection for {origin.host} in time") from exc
                raise
            finally:
                with contextlib.suppress(ValueError):
                    slot.waiters.remove(waiter)
        idle = slot.idle
        if idle and not fresh:
            fresh_since = self._loop.time() - self._idle_timeout
            while idle:
                conn = idle.pop()  # the most recently used first
                if (conn.idle_since > fresh_since and conn.transport is not None
                        and not conn.transport.is_closing()):
                    slot.busy += 1
                    conn.leased = True
                    return conn
                conn.close()
        slot.busy += 1
        try:
            conn = await self._connect(origin)
        except BaseException:
            slot.busy -= 1
            _wake(slot)
            raise
        conn.slot = slot
        conn.leased = True
        return conn

    async def _connect(self, origin: Origin) -> UpstreamConnection:
        if self._sweeper is None:
            self._sweeper = self._loop.create_task(self._sweep())
        context: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await self._loop.create_connection(
                    lambda: UpstreamConnection(self._loop, origin), origin.host, origin.port,
                    ssl=context, server_hostname=origin.host if context else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection to {origin.host}:{origin.port} in time") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        return conn

    def release(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        """Give ``conn`` back: pooled when it can carry another request, else closed."""
        if not conn.leased:
            # Given back twice in a row: counting it again would let more connections than the
            # limit be in use (and pool one connection twice). A bug of the caller's; said
            # loudly. (A late second give-back after another caller took the connection again
            # cannot be told apart by this flag; the one caller, proxy._exchange, gives back
            # exactly once, in its finally.)
            log.error("an upstream connection was given back to the pool twice")
            return
        conn.leased = False
        slot = conn.slot
        transport = conn.transport
        if (
            reusable and conn.reusable and conn.response_done()
            and transport is not None and not transport.is_closing()
        ):
            conn.idle()
            if len(slot.idle) < self._max:
                slot.idle.append(conn)
            else:
                conn.close()
        else:
            conn.close()
        slot.busy -= 1
        if slot.waiters:
            _wake(slot)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(_SWEEP_SECONDS, self._idle_timeout))
            deadline = self._loop.time() - self._idle_timeout
            for slot in self._slots.values():
                keep = [c for c in slot.idle
                        if c.idle_since >= deadline and c.transport is not None]
                for conn in slot.idle:
                    if conn not in keep:
                        conn.close()
                slot.idle[:] = keep

    async def close(self) -> None:
        """Close every idle connection and stop the sweep."""
        for slot in self._slots.values():
            for conn in slot.idle:
                conn.close()
            slot.idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


def _wake(slot: _Slot) -> None:
    """Hand the slot's next free connection to its first waiter still waiting."""
    waiters = slot.waiters
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return
