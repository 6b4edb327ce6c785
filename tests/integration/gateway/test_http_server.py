"""The gateway's own HTTP/1.1 server and upstream pool, at the byte level.

Raw sockets on the client side, and (where the demo backend cannot misbehave the way a test
needs) a raw upstream on the other, so that framing, ordering, 100-continue, HTTP/1.0 and
connection reuse are checked as bytes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from auth_gateway.http_server import _FEED_SLICE, _QUEUE_LIMIT, HttpServer, Request
from auth_gateway.upstream import Origin, PoolExhausted, UpstreamPool

from .conftest import Gateway, GatewayFactory
from .test_request_path import credential_lines, known

Respond = Callable[[bytes], bytes]


class RawUpstream:
    """An upstream answering each request head with bytes of the test's choosing."""

    def __init__(self, respond: Respond, *, close_after_response: bool = False) -> None:
        self.respond = respond
        self.close_after_response = close_after_response
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.bodies.append(await reader.readexactly(length))
                writer.write(self.respond(head))
                await writer.drain()
                if self.close_after_response:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[..., Awaitable[RawUpstream]]]:
    made: list[RawUpstream] = []

    async def make(respond: Respond, **kwargs: bool) -> RawUpstream:
        upstream = RawUpstream(respond, **kwargs)
        await upstream.start()
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        await upstream.close()


async def _gateway_to(make_gateway: GatewayFactory, tmp_path: Path, port: int,
                      **env: str) -> Gateway:
    routes = tmp_path / "raw-routes.toml"
    routes.write_text(
        f'[[route]]\nprefix = "/raw/"\nupstream = "http://127.0.0.1:{port}"\nauth = "none"\n'
    )
    return await make_gateway(GATEWAY_ROUTES=str(routes), **env)


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class ScriptedUpstream:
    """Where a scripted upstream listens, and the writer of each connection it accepted."""

    port: int
    writers: list[asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def scripted_upstream(serve: Serve) -> AsyncIterator[ScriptedUpstream]:
    """An upstream running ``serve`` on each connection, for behaviour a RawUpstream cannot
    script (pauses, late bytes, silence); every connection and the server are closed on the
    way out, so that no handler outlives the test's loop."""
    writers: list[asyncio.StreamWriter] = []

    async def each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await serve(reader, writer)

    server = await asyncio.start_server(each, "127.0.0.1", 0)
    try:
        yield ScriptedUpstream(server.sockets[0].getsockname()[1], writers)
    finally:
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One response: status line, headers (lower-cased), body by its framing."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    status = lines[0].encode()
    if status.split()[1] in (b"100", b"204", b"304"):
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, headers, body
            body += chunk[:-2]
    return status, headers, await reader.read()


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _ask(port: int, data: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """Send ``data`` on a new connection and read one response."""
    reader, writer = await _connect(port)
    try:
        writer.write(data)
        return await asyncio.wait_for(_read_response(reader), 5)
    finally:
        writer.close()


async def test_expect_100_continue_is_answered_only_after_authentication(
    gateway: Gateway,
) -> None:
    key = known(gateway)
    reader, writer = await _connect(gateway.client.port)
    creds = "".join(f"{name}: {value}\r\n" for name, value in key.headers.items())
    writer.write(
        f"POST /api/x HTTP/1.1\r\nHost: gw\r\n{creds}Content-Length: 5\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    status, _, _ = await asyncio.wait_for(_read_response(reader), 5)
    assert status == b"HTTP/1.1 100 Continue"
    writer.write(b"hello")
    status, _, body = await asyncio.wait_for(_read_response(reader), 5)
    assert status.startswith(b"HTTP/1.1 200")
    assert b'"body_length":5' in body.replace(b" ", b"")
    writer.close()

    before = gateway.backend_requests
    reader, writer = await _connect(gateway.client.port)
    writer.write(
        b"POST /api/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    status, headers, _ = await asyncio.wait_for(_read_response(reader), 5)
    assert status.startswith(b"HTTP/1.1 401")  # no 100 first: the body is never asked for
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection ends
    assert gateway.backend_requests == before
    writer.close()


async def test_pipelined_requests_are_answered_in_order(gateway: Gateway) -> None:
    key = known(gateway)
    creds = "".join(f"{name}: {value}\r\n" for name, value in key.headers.items())
    reader, writer = await _connect(gateway.client.port)
    writer.write(
        (f"GET /api/one HTTP/1.1\r\nHost: gw\r\n{creds}X-Request-Id: first\r\n\r\n"
         "GET /nowhere HTTP/1.1\r\nHost: gw\r\nX-Request-Id: second\r\n\r\n"
         f"GET /public/three HTTP/1.1\r\nHost: gw\r\nX-Request-Id: third\r\n\r\n").encode()
    )
    answers = [await asyncio.wait_for(_read_response(reader), 5) for _ in range(3)]
    assert [a[1]["x-request-id"] for a in answers] == ["first", "second", "third"]
    assert [a[0].split()[1] for a in answers] == [b"200", b"404", b"200"]
    writer.close()


async def test_http_1_0_clients_get_keep_alive_only_when_asked(
    make_gateway: GatewayFactory, tmp_path: Path,
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    upstream = await raw_upstream(lambda head: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    ))
    gw = await _gateway_to(make_gateway, tmp_path, upstream.port)
    status, headers, body = await _ask(gw.client.port, b"GET /raw/a HTTP/1.0\r\n\r\n")
    # A chunked upstream body reaches an HTTP/1.0 client delimited by the connection's end.
    assert status.startswith(b"HTTP/1.1 200")
    assert "transfer-encoding" not in headers
    assert body == b"abcde"

    reader, writer = await _connect(gw.client.port)
    for _ in range(2):
        writer.write(b"GET /raw/b HTTP/1.1\r\nHost: gw\r\n\r\n")
        status, headers, body = await asyncio.wait_for(_read_response(reader), 5)
        assert headers["transfer-encoding"] == "chunked"  # re-chunked for an HTTP/1.1 client
        assert body == b"abcde"
    writer.close()


async def test_a_pooled_connection_the_upstream_closed_is_replaced(
    make_gateway: GatewayFactory, tmp_path: Path,
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    # The upstream closes every connection after one response without saying so (no
    # Connection: close): the gateway's next request finds its pooled connection dead.
    upstream = await raw_upstream(
        lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close_after_response=True,
    )
    gw = await _gateway_to(make_gateway, tmp_path, upstream.port)
    for _ in range(5):
        resp = await gw.client.get("/raw/x")
        assert resp.status == 200
        assert await resp.read() == b"ok"
        await asyncio.sleep(0.05)  # let the close arrive, or not: both must work
    assert upstream.connections == 5


async def test_upstream_connections_are_reused(
    make_gateway: GatewayFactory, tmp_path: Path,
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    upstream = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    gw = await _gateway_to(make_gateway, tmp_path, upstream.port)
    for _ in range(20):
        resp = await gw.client.get("/raw/x")
        assert await resp.read() == b"ok"
    assert upstream.connections == 1
    assert len(upstream.heads) == 20
    head = upstream.heads[0].lower()
    assert head.startswith(b"get /raw/x http/1.1\r\nhost: 127.0.0.1:")
    assert b"x-forwarded-for: 127.0.0.1\r\n" in head


async def test_a_connection_idle_past_the_idle_timeout_is_never_used_again(
    make_gateway: GatewayFactory, tmp_path: Path,
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    # An upstream closes idle connections after its own keep-alive timeout; a request sent on
    # one at that moment meets the close. The gateway gives up its idle ones first.
    upstream = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    routes = tmp_path / "raw-routes.toml"
    routes.write_text(
        f'[[route]]\nprefix = "/raw/"\nupstream = "http://127.0.0.1:{upstream.port}"\n'
        'auth = "none"\n'
    )
    gw = await make_gateway(GATEWAY_ROUTES=str(routes), GATEWAY_UPSTREAM_IDLE_TIMEOUT="0.3")
    for pause in (0.0, 0.05, 0.6, 0.05):
        await asyncio.sleep(pause)
        resp = await gw.client.post("/raw/x", data=b"body")  # not retried: must not meet a close
        assert resp.status == 200
        assert await resp.read() == b"ok"
    assert upstream.connections == 2  # a new one only after the long pause


async def test_an_invalid_upstream_response_is_a_502_and_the_connection_is_dropped(
    make_gateway: GatewayFactory, tmp_path: Path,
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    upstream = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    gw = await _gateway_to(make_gateway, tmp_path, upstream.port)
    resp = await gw.client.get("/raw/x")
    assert resp.status == 502
    assert resp.content_type == "application/problem+json"


async def test_a_body_cut_by_an_upstream_reset_never_looks_complete(
    make_gateway: GatewayFactory, tmp_path: Path,
) -> None:
    async def resetting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        # No length: the body is delimited by the connection's end, which here is a reset.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial-body")
        await writer.drain()
        await asyncio.sleep(0.2)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(resetting, "127.0.0.1", 0)
    try:
        gw = await _gateway_to(make_gateway, tmp_path, server.sockets[0].getsockname()[1])
        reader, writer = await _connect(gw.client.port)
        writer.write(b"GET /raw/x HTTP/1.1\r\nHost: gw\r\n\r\n")
        received = b""
        with contextlib.suppress(ConnectionError, TimeoutError):  # a kept-open connection
            while chunk := await asyncio.wait_for(reader.read(65536), 2):
                received += chunk
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert b"partial-body" in received
    # Cut short: the connection ends without the last chunk, so the client knows.
    assert not received.endswith(b"0\r\n\r\n"), received


async def test_a_request_line_the_parser_refuses_gets_400_and_a_closed_connection(
    gateway: Gateway,
) -> None:
    reader, writer = await _connect(gateway.client.port)
    writer.write(b"GET /public/x HTTP/1.1\r\nHost: gw\r\n\r\n")
    first = await asyncio.wait_for(_read_response(reader), 5)
    writer.write(b"GET /public/y HTTP/9.9\r\n\r\n")
    second = await asyncio.wait_for(_read_response(reader), 5)
    assert first[0].startswith(b"HTTP/1.1 200")
    assert second[0].startswith(b"HTTP/1.1 400")
    assert second[1]["content-type"] == "application/problem+json"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


class _Echo:
    """A handler answering every request at once with its target (its record: the request)."""

    def begin(self, request: Request) -> Request:
        return request

    def now(self, request: Request) -> None:
        request.respond(200, b"Content-Type: text/plain\r\n", request.target.encode())

    async def later(self, request: Request, step: object) -> None:
        raise AssertionError("never called")

    def failed(self, request: Request) -> None:
        raise AssertionError("never called")

    def finished(self, request: Request, duration: float) -> None:
        pass

    def refused(self, status: int) -> None:
        pass


async def test_idle_keep_alive_connections_are_closed_and_close_drains() -> None:
    server = HttpServer(_Echo(), max_line_size=8190, max_headers=100, keepalive_timeout=0.2)
    port = await server.listen("127.0.0.1", 0)
    try:
        reader, writer = await _connect(port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(_read_response(reader), 5))[2] == b"/a"
        # Idle past the keep-alive timeout (the sweep runs every second): closed by the server.
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

        reader, writer = await _connect(port)
        writer.write(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(_read_response(reader), 5))[2] == b"/b"
        await asyncio.wait_for(server.close(5.0), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # idle: closed at once
        writer.close()
        with pytest.raises(OSError):
            await _connect(port)  # and nothing listens any more
    finally:
        with contextlib.suppress(Exception):
            await server.close(0.1)


_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_a_connection_header_cannot_change_how_the_body_is_framed_upstream(
    make_gateway: GatewayFactory, tmp_path: Path,
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    # Naming Content-Length in Connection must not drop it upstream: the body would then be
    # read by the upstream as a request of its own, smuggled past authentication.
    upstream = await raw_upstream(lambda head: _OK)
    gw = await _gateway_to(make_gateway, tmp_path, upstream.port)
    smuggled = (b"GET /admin HTTP/1.1\r\nHost: up\r\nX-Authenticated-Key-Id: someone\r\n"
                b"Content-Length: 0\r\n\r\n")
    status, _, body = await _ask(gw.client.port, (
        b"POST /raw/x HTTP/1.1\r\nHost: gw\r\nConnection: content-length, keep-alive\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled)
    ))
    assert status.startswith(b"HTTP/1.1 200")
    assert body == b"ok"
    resp = await gw.client.get("/raw/next")
    assert resp.status == 200
    assert len(upstream.heads) == 2  # the POST (with its body) and the next request: no third
    assert b"content-length: %d\r\n" % len(smuggled) in upstream.heads[0].lower()
    assert upstream.bodies[0] == smuggled
    assert upstream.heads[1].startswith(b"GET /raw/next ")


async def test_a_chunked_body_goes_upstream_chunked_whatever_the_client_adds(
    make_gateway: GatewayFactory, tmp_path: Path,
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    upstream = await raw_upstream(lambda head: _OK)
    gw = await _gateway_to(make_gateway, tmp_path, upstream.port)
    status, _, _ = await _ask(gw.client.port, (
        b"POST /raw/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: transfer-encoding\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ))
    assert status.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked\r\n" in upstream.heads[0].lower()
    assert b"content-length" not in upstream.heads[0].lower()


async def test_a_request_that_asks_to_upgrade_is_answered_and_the_connection_ends(
    gateway: Gateway,
) -> None:
    reader, writer = await _connect(gateway.client.port)
    writer.write(
        b"GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\n\r\nGET /public/y HTTP/1.1\r\nHost: gw\r\n\r\n"
    )
    status, headers, _ = await asyncio.wait_for(_read_response(reader), 5)
    assert status.startswith(b"HTTP/1.1 200")
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_client_that_half_closes_gets_every_answer_it_asked_for(
    gateway: Gateway,
) -> None:
    reader, writer = await _connect(gateway.client.port)
    writer.write(b"".join(
        b"GET /public/%d HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r%d\r\n\r\n" % (i, i)
        for i in range(3)
    ))
    writer.write_eof()
    answers = [await asyncio.wait_for(_read_response(reader), 5) for _ in range(3)]
    assert [a[1]["x-request-id"] for a in answers] == ["r0", "r1", "r2"]
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_forwarded_for_from_a_trusted_proxy_passes_as_received(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(GATEWAY_TRUSTED_PROXIES="127.0.0.1")
    status, _, _ = await _ask(gw.client.port, (
        b"GET /public/x HTTP/1.1\r\nHost: gw\r\n"
        b"X-Forwarded-For: 203.0.113.9, \xe2\x82\xac, \xff\r\n\r\n"
    ))
    assert status.startswith(b"HTTP/1.1 200")


async def test_a_204_from_the_upstream_loses_its_content_length(
    make_gateway: GatewayFactory, tmp_path: Path,
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    upstream = await raw_upstream(
        lambda head: b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    gw = await _gateway_to(make_gateway, tmp_path, upstream.port)
    status, headers, _ = await _ask(gw.client.port, b"GET /raw/x HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 204")
    assert "content-length" not in headers


class _Big(_Echo):
    """Answers every request at once with 64 KiB."""

    def now(self, request: Request) -> None:
        request.respond(200, b"", b"x" * 65536)


async def test_a_client_that_does_not_read_cannot_pile_up_answers() -> None:
    server = HttpServer(_Big(), max_line_size=8190, max_headers=100)
    port = await server.listen("127.0.0.1", 0)
    try:
        reader, writer = await _connect(port)
        request = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
        writer.transport.set_write_buffer_limits(high=1 << 24)
        writer.write(request * 2000)  # 128 MB of answers, if they were all made
        await asyncio.sleep(0.5)
        (conn,) = server.connections
        assert conn.transport is not None
        assert conn.transport.get_write_buffer_size() < 4 << 20
        # Reading resumes the answers, all of them, in order.
        total = 0
        for _ in range(2000):
            _, _, body = await asyncio.wait_for(_read_response(reader), 10)
            total += len(body)
        assert total == 2000 * 65536
        writer.close()
    finally:
        await server.close(0.5)


async def test_pipelined_requests_behind_a_slow_one_are_held_back_unparsed(
    gateway: Gateway,
) -> None:
    key = known(gateway)
    tiny = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    # One request waits on an upstream that never answers; thousands more follow it in one go.
    first = b"GET /hung/x HTTP/1.1\r\nHost: a\r\n" + credential_lines(key) + b"\r\n"
    _reader, writer = await _connect(gateway.client.port)
    writer.write(first + tiny * 3000)
    await writer.drain()
    await asyncio.sleep(0.5)
    connections = list(gateway.client.running._server.connections)  # type: ignore[union-attr]
    queued = max(len(conn._queue) for conn in connections)
    # At most the queue limit, plus what one parsed piece of the input can hold.
    assert queued <= _QUEUE_LIMIT + _FEED_SLICE // len(tiny) + 1, queued
    assert any(conn._unfed for conn in connections)
    writer.close()


@contextlib.asynccontextmanager
async def _pool_of_one(
    raw_upstream: Callable[..., Awaitable[RawUpstream]], connect_timeout: float,
) -> AsyncIterator[tuple[UpstreamPool, Origin]]:
    """A pool of at most one connection to an upstream answering 200 "ok"; closed after."""
    upstream = await raw_upstream(lambda head: _OK)
    pool = UpstreamPool(max_connections=1, connect_timeout=connect_timeout)
    try:
        yield pool, Origin.from_url(f"http://127.0.0.1:{upstream.port}")
    finally:
        await pool.close()


async def test_a_pool_slot_given_up_by_a_cancelled_waiter_goes_to_the_next(
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    async with _pool_of_one(raw_upstream, 5.0) as (pool, origin):
        first = await pool.acquire(origin)
        second = asyncio.create_task(pool.acquire(origin))
        third = asyncio.create_task(pool.acquire(origin))
        await asyncio.sleep(0.05)
        pool.release(first, reusable=False)
        second.cancel()  # in the same turn: the slot was handed to it, and it leaves
        conn = await asyncio.wait_for(third, 2)
        pool.release(conn, reusable=False)
        assert second.cancelled()


async def test_a_connection_pooled_while_flow_control_holds_it_reads_again(
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    # Whatever paused reading (a slow client's body) and did not resume it, an idle pooled
    # connection must read, or the upstream closing it would go unseen.
    async with _pool_of_one(raw_upstream, 2.0) as (pool, origin):
        conn = await pool.acquire(origin)
        answer = conn.begin(head_only=False)
        assert conn.transport is not None
        conn.transport.write(b"GET / HTTP/1.1\r\nHost: upstream\r\n\r\n")
        _, payload = await asyncio.wait_for(answer, 2)
        assert await payload.read() == b"ok"
        # The state aiohttp's flow control leaves when it paused reading and nothing resumed
        # it (BaseProtocol.pause_reading itself needs a body still arriving).
        conn._reading_paused = True
        conn.transport.pause_reading()
        assert not conn.transport.is_reading()
        pool.release(conn, reusable=True)
        assert conn.transport.is_reading()
        assert await pool.acquire(origin) is conn  # pooled, and in use again
        pool.release(conn, reusable=False)


async def test_a_connection_given_back_twice_is_counted_once(
    raw_upstream: Callable[..., Awaitable[RawUpstream]], caplog: pytest.LogCaptureFixture,
) -> None:
    async with _pool_of_one(raw_upstream, 0.3) as (pool, origin):
        first = await pool.acquire(origin)
        pool.release(first, reusable=False)
        pool.release(first, reusable=False)  # a caller's bug
        assert "given back to the pool twice" in caplog.text
        held = await pool.acquire(origin)
        # Still a limit of one: a second connection is not handed out while this one is held.
        with pytest.raises(PoolExhausted):
            await pool.acquire(origin)
        pool.release(held, reusable=False)


async def test_an_endless_request_head_is_refused_before_it_is_complete(gateway: Gateway) -> None:
    # Each line short and their count under the parser's own limits, yet more header bytes
    # than any request may have: refused (431) without waiting for the head to end, so that a
    # connection cannot make the gateway hold megabytes of headers.
    reader, writer = await _connect(gateway.client.port)
    try:
        writer.write(b"GET /api/x HTTP/1.1\r\nHost: gw\r\n")
        for number in range(150):
            writer.write(b"X-Filler-%d: %s\r\n" % (number, b"f" * 1000))
            await writer.drain()
        status, headers, body = await asyncio.wait_for(_read_response(reader), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection closes
    finally:
        writer.close()
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert headers["connection"] == "close"
    assert b"larger than this gateway accepts" in body
    assert gateway.backend_requests == 0


async def test_a_refused_upload_still_gets_its_413_while_the_client_keeps_sending(
    make_gateway: GatewayFactory,
) -> None:
    # The client does not wait for an answer before sending its body (most don't): closing on
    # it with megabytes unread would make the kernel reset the connection, destroying the 413.
    gateway = await make_gateway(GATEWAY_MAX_BODY_BYTES="1000")
    key = known(gateway)
    reader, writer = await _connect(gateway.client.port)
    try:
        writer.write(b"POST /api/up HTTP/1.1\r\nHost: gw\r\nContent-Length: 8000000\r\n"
                     + credential_lines(key) + b"\r\n")

        async def send_body() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(125):
                    writer.write(b"b" * 64000)
                    await writer.drain()

        sending = asyncio.create_task(send_body())
        status, headers, body = await asyncio.wait_for(_read_response(reader), 5)
        await asyncio.wait_for(sending, 10)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed in good order
    finally:
        writer.close()
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert headers["connection"] == "close"
    assert b"larger than this gateway accepts" in body
    assert gateway.backend_requests == 0


async def test_a_head_behind_a_complete_request_in_the_same_read_is_bounded_too(
    gateway: Gateway,
) -> None:
    # The bytes after a finished request count against the next head's bound even when they
    # arrive in the same read as it.
    key = known(gateway)
    first = b"GET /api/x HTTP/1.1\r\nHost: gw\r\n" + credential_lines(key) + b"\r\n"
    second = b"GET /api/y HTTP/1.1\r\nHost: gw\r\n" + b"".join(
        b"X-Filler-%d: %s\r\n" % (number, b"f" * 1000) for number in range(150))
    reader, writer = await _connect(gateway.client.port)
    try:
        writer.write(first + second)  # and the second head never ends
        status, _, _ = await asyncio.wait_for(_read_response(reader), 5)
        assert status == b"HTTP/1.1 200 OK"
        status, headers, _ = await asyncio.wait_for(_read_response(reader), 5)
    finally:
        writer.close()
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert headers["connection"] == "close"
    assert gateway.backend_requests == 1


async def test_the_header_size_limit_holds_however_the_head_arrives(
    make_gateway: GatewayFactory,
) -> None:
    # The limit counts each header line as name, value and 4 bytes; the check skips adding up
    # when everything received since the last head is short enough. One byte over the limit
    # is 431 whether the head comes alone, behind a body in the same write, pipelined behind
    # another request, in small pieces, or with no space after the colons; at the limit, 200.
    gateway = await make_gateway(GATEWAY_MAX_HEADER_BYTES="2048")
    key = known(gateway)
    creds = credential_lines(key)
    counted = len(b"Host") + len(b"gw") + 4 + sum(
        len(name) + len(value) + 4 for name, value in key.headers.items())

    def head(over: int, *, colon: bytes = b": ") -> bytes:
        big = b"f" * (2048 - counted - len(b"X-Big") - 4 + over)
        return b"GET /api/x HTTP/1.1\r\nHost" + colon + b"gw\r\n" + creds + (
            b"X-Big" + colon + big + b"\r\n\r\n")

    post = (b"POST /api/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 3000\r\n" + creds + b"\r\n")
    body = b"b" * 3000
    ok = b"GET /api/x HTTP/1.1\r\nHost: gw\r\n" + creds + b"\r\n"
    cases: dict[str, tuple[list[bytes], list[bytes]]] = {
        "alone": ([head(1)], [b"431"]),
        "no space after the colons": ([head(1, colon=b":")], [b"431"]),
        "behind a body in the same write": ([post, body + head(1)], [b"200", b"431"]),
        "pipelined behind a request": ([ok + head(1)], [b"200", b"431"]),
        "pipelined, split right after the first": (
            [ok + head(1)[:-40], head(1)[-40:]], [b"200", b"431"]),
        "in small pieces behind a body": (
            [post, body[:-10], body[-10:] + head(1)[:7]]
            + [head(1)[i:i + 100] for i in range(7, len(head(1)), 100)], [b"200", b"431"]),
        "at the limit": ([head(0)], [b"200"]),
        "at the limit, behind a body": ([post, body + head(0)], [b"200", b"200"]),
    }
    for name, (writes, expected) in cases.items():
        reader, writer = await _connect(gateway.client.port)
        try:
            for data in writes:
                writer.write(data)
                await writer.drain()
                await asyncio.sleep(0.01)
            statuses = [
                (await asyncio.wait_for(_read_response(reader), 5))[0].split()[1]
                for _ in expected
            ]
        finally:
            writer.close()
        assert statuses == expected, name


@pytest.mark.parametrize(
    ("method", "first"),
    [
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 45\r\n\r\n"),
        (b"GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 45\r\n\r\n"),
        (b"GET", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ],
)
async def test_bytes_an_upstream_sends_after_a_bodiless_answer_reach_no_other_client(
    make_gateway: GatewayFactory, tmp_path: Path, method: bytes, first: bytes,
) -> None:
    # An application that writes a body after a HEAD answer (or a 204 that announces one, or
    # a chunked 304), a moment later: the connection is not pooled, so those bytes cannot be
    # read as the answer to the next request that would have used it.
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"/first" in head:
                writer.write(first)
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nLEAKED")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nright")
            await writer.drain()

    async with scripted_upstream(serve) as upstream:
        gw = await _gateway_to(make_gateway, tmp_path, upstream.port)
        reader, writer = await _connect(gw.client.port)
        try:
            writer.write(method + b" /raw/first HTTP/1.1\r\nHost: gw\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # no body follows
        finally:
            writer.close()
        assert head.split()[1] in (b"200", b"204", b"304")
        ask = b"GET /raw/next HTTP/1.1\r\nHost: gw\r\n\r\n"
        status, _, body = await _ask(gw.client.port, ask)
        await asyncio.sleep(0.1)
        status2, _, body2 = await _ask(gw.client.port, ask)
    assert (status, body) == (b"HTTP/1.1 200 OK", b"right")
    assert (status2, body2) == (b"HTTP/1.1 200 OK", b"right")
    assert len(upstream.writers) == 2  # the first connection was not pooled; the second one was


async def test_an_upstream_that_stalls_in_a_small_body_is_a_504(
    make_gateway: GatewayFactory, tmp_path: Path,
) -> None:
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        await writer.drain()
        await done.wait()  # and never the rest

    async with scripted_upstream(serve) as upstream:
        try:
            gw = await _gateway_to(make_gateway, tmp_path, upstream.port,
                                   GATEWAY_UPSTREAM_TIMEOUT="0.5")
            resp = await gw.client.get("/raw/x")
            assert resp.status == 504
            assert "in time" in (await resp.json())["detail"]
        finally:
            done.set()


async def test_one_slow_upstream_cannot_take_the_connections_of_another(
    make_gateway: GatewayFactory, tmp_path: Path,
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
) -> None:
    # The connection limit is per upstream: requests hanging on one do not starve the rest,
    # and one more request to the hanging one, with no connection free in time, gets 503.
    done = asyncio.Event()
    arrived: list[bytes] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.append(await reader.readuntil(b"\r\n\r\n"))
        await done.wait()

    good = await raw_upstream(lambda head: _OK)
    async with scripted_upstream(hang) as slow:
        routes = tmp_path / "two-routes.toml"
        routes.write_text(
            f'[[route]]\nprefix = "/slow/"\nauth = "none"\n'
            f'upstream = "http://127.0.0.1:{slow.port}"\n'
            f'[[route]]\nprefix = "/good/"\nauth = "none"\n'
            f'upstream = "http://127.0.0.1:{good.port}"\n')
        gw = await make_gateway(GATEWAY_ROUTES=str(routes), GATEWAY_UPSTREAM_MAX_CONNECTIONS="2",
                                GATEWAY_UPSTREAM_CONNECT_TIMEOUT="0.5")
        hanging = [asyncio.create_task(gw.client.get("/slow/x")) for _ in range(2)]
        try:
            for _ in range(500):  # both hanging requests hold their connection
                if len(arrived) == 2:
                    break
                await asyncio.sleep(0.01)
            assert len(arrived) == 2
            resp = await gw.client.get("/good/x")
            assert resp.status == 200
            resp = await gw.client.get("/slow/x")
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
            assert "in use" in (await resp.json())["detail"]
        finally:
            done.set()
            for task in hanging:
                task.cancel()
            await asyncio.gather(*hanging, return_exceptions=True)


async def test_a_connection_pooled_after_a_slowly_read_body_notices_the_upstream_closing(
    make_gateway: GatewayFactory, tmp_path: Path,
) -> None:
    # A large answer read slowly by its client fills the gateway's buffer, so the gateway
    # stops reading that upstream connection for a while (flow control). Once the body is
    # relayed whole the connection goes back to the pool, and reading must be on again there:
    # otherwise the upstream's close of the idle connection would go unseen, and the next
    # request, a POST that cannot be retried, would be written into a dead connection (502).
    big = 4 * 2**20
    answered = asyncio.Event()
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        requests.append(head)
        if head.startswith(b"GET"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big)
            writer.write(b"x" * big)
            await writer.drain()
            await answered.wait()
            writer.close()  # the upstream's keep-alive timeout: the idle connection closes
            return
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nright")
        await writer.drain()

    async with scripted_upstream(serve) as upstream:
        gw = await _gateway_to(make_gateway, tmp_path, upstream.port)
        reader, writer = await _connect(gw.client.port)
        try:
            writer.write(b"GET /raw/big HTTP/1.1\r\nHost: gw\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            got = 0
            while got < big:  # slowly: the gateway's buffers fill and it stops reading
                chunk = await asyncio.wait_for(reader.read(2**16), 5)
                assert chunk
                got += len(chunk)
                await asyncio.sleep(0.002)
        finally:
            writer.close()
        answered.set()
        await asyncio.sleep(0.2)  # the upstream's FIN arrives at the pooled connection
        resp = await gw.client.post("/raw/post", data=b"a body")
        assert resp.status == 200
        assert await resp.read() == b"right"
    assert [r.split(b" ")[0] for r in requests] == [b"GET", b"POST"]
    assert len(upstream.writers) == 2  # the POST went on a new connection
