"""A request-smuggling corpus over raw sockets: every case gets a 4xx, the connection is closed,
and the upstream never sees a request. The route used needs no key, so any request the gateway
accepted would be forwarded and counted by the demo backend."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from .conftest import Gateway, GatewayFactory

_H = b"Host: gw\r\n"
_CHUNKED_END = b"0\r\n\r\n"


def _post(headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST /public/x HTTP/" + version + b"\r\n" + _H + headers + b"\r\n" + body


def _get(headers: bytes = b"", target: bytes = b"/public/x") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\n" + _H + headers + b"\r\n"


_SMUGGLED = b"GET /public/smuggled HTTP/1.1\r\n" + _H + b"\r\n"
CORPUS: dict[str, bytes] = {
    "content-length with transfer-encoding": _post(
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", _CHUNKED_END + _SMUGGLED
    ),
    "transfer-encoding with content-length": _post(
        b"Transfer-Encoding: chunked\r\nContent-Length: 30\r\n", _CHUNKED_END + _SMUGGLED
    ),
    "two different content-lengths": _post(b"Content-Length: 4\r\nContent-Length: 5\r\n", b"abcde"),
    "two equal content-lengths": _post(b"Content-Length: 4\r\nContent-Length: 4\r\n", b"abcd"),
    "content-length list": _post(b"Content-Length: 4, 4\r\n", b"abcd"),
    "signed content-length": _post(b"Content-Length: +4\r\n", b"abcd"),
    "te xchunked": _post(b"Transfer-Encoding: xchunked\r\n", _CHUNKED_END),
    "te space before colon": _post(b"Transfer-Encoding : chunked\r\n", _CHUNKED_END),
    "te chunked, identity": _post(b"Transfer-Encoding: chunked, identity\r\n", _CHUNKED_END),
    "te identity, chunked": _post(b"Transfer-Encoding: identity, chunked\r\n", _CHUNKED_END),
    "te twice": _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", _CHUNKED_END),
    "te line folding": _post(b"Transfer-Encoding:\r\n chunked\r\n", _CHUNKED_END),
    "te vertical tab": _post(b"Transfer-Encoding:\x0bchunked\r\n", _CHUNKED_END),
    "te in http/1.0": _post(b"Transfer-Encoding: chunked\r\n", _CHUNKED_END, version=b"1.0"),
    "chunk size with whitespace": _post(
        b"Transfer-Encoding: chunked\r\n", b" 4\r\nabcd\r\n" + _CHUNKED_END
    ),
    "chunk extension with nul": _post(
        b"Transfer-Encoding: chunked\r\n", b"4;\x00\r\nabcd\r\n" + _CHUNKED_END
    ),
    "bare lf everywhere": b"GET /public/x HTTP/1.1\nHost: gw\n\n",
    "bare lf in one header": b"GET /public/x HTTP/1.1\r\nHost: gw\nX: y\r\n\r\n",
    "bare cr": b"GET /public/x HTTP/1.1\r\nHost: gw\rX: y\r\n\r\n",
    "duplicate host": _get(b"Host: other\r\n"),
    "missing host in http/1.1": b"GET /public/x HTTP/1.1\r\n\r\n",
    "space in header name": _get(b"X Y: z\r\n"),
    "nul in header value": _get(b"X: a\x00b\r\n"),
    "oversized header": _get(b"X-Big: " + b"a" * 20000 + b"\r\n"),
    "oversized header beyond the parser": _get(b"X-Big: " + b"a" * 70000 + b"\r\n"),
    "too many headers": _get(b"".join(b"X-%d: y\r\n" % i for i in range(300))),
    "http/0.9 request line": b"GET /public/x\r\n\r\n",
    "absolute-form target": _get(target=b"http://evil/public/x"),
    "dot segments": _get(target=b"/public/../api/x"),
    "encoded dot segments": _get(target=b"/public/%2E%2E/api/x"),
}


async def _exchange(port: int, data: bytes) -> tuple[list[int], bool]:
    """Send ``data``; the statuses of every response and whether the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        closed = False
        try:
            async with asyncio.timeout(3):
                while chunk := await reader.read(65536):
                    received += chunk
                closed = True
        except TimeoutError:
            pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    statuses = [
        int(line.split(b" ")[1]) for line in received.split(b"\r\n") if line.startswith(b"HTTP/")
    ]
    return statuses, closed


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


async def test_a_plain_request_on_the_same_route_is_forwarded(gw: Gateway) -> None:
    statuses, _ = await _exchange(
        gw.client.port, b"GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    assert statuses == [200]
    assert gw.backend_requests == 1


@pytest.mark.parametrize("case", list(CORPUS))
async def test_smuggling_attempt_is_refused(gw: Gateway, case: str) -> None:
    statuses, closed = await _exchange(gw.client.port, CORPUS[case])
    assert statuses, f"{case}: no response"
    assert all(400 <= s < 500 for s in statuses), f"{case}: {statuses}"
    assert closed, f"{case}: connection left open after a refused request"
    assert gw.backend_requests == 0
