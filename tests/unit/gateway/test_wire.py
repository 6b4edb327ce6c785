"""The contract of the fence around aiohttp's low-level parts (``auth_gateway/wire.py``).

Every private member of aiohttp the fence relies on, and every behaviour it assumes of them and
of the parsers, is checked here, each failing with a message that says what changed. Lifting the
pin on aiohttp (``aiohttp>=3.14.5,<3.15`` in pyproject.toml) is safe when this file passes; when
it does not, the message names the member and what ``wire.py`` uses it for, and nothing outside
``wire.py`` needs to change.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.base_protocol import BaseProtocol
from multidict import CIMultiDictProxy

from auth_gateway import wire
from auth_gateway.wire import (
    EMPTY_PAYLOAD,
    HttpProcessingError,
    HttpVersion11,
    LineTooLong,
    RawRequestMessage,
    RawResponseMessage,
    StreamReader,
    Wire,
)

_VERSION = f"aiohttp {aiohttp.__version__}"
_PACKAGE = Path(wire.__file__).parent


def _changed(what: str, use: str) -> str:
    return f"{_VERSION}: {what}; auth_gateway/wire.py relies on it to {use}"


# (member of BaseProtocol, what wire.py uses it for)
METHODS = [
    ("_pause_reading_for_buffer", "hold reading while its own buffer (queued requests) is full"),
    ("_resume_reading_for_buffer", "release that hold unless a body reader's flow control holds"),
    ("_pause_transport_reading", "stop reading from the socket for good (refusals, upgrades)"),
    ("_resume_transport_reading", "read and drop what a refused client still sends"),
    ("_drain_helper", "wait while the peer reads slower than the gateway writes"),
]
# (attribute set by BaseProtocol.__init__, its initial value, what wire.py uses it for)
ATTRIBUTES = [
    ("_parser", None, "install the parser that body readers' flow control pauses and resumes"),
    ("_reading_paused", False, "tell whether a body reader's flow control holds the socket"),
    ("_buffer_paused", False, "hold reading for a buffer (resume_reading() must respect it)"),
    ("_paused", False, "know that writing is paused (pause_writing) for _drain_helper"),
]


class FakeTransport(asyncio.Transport):
    """Records what the protocol asks of the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.closing = False
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def _raised(call: Callable[[], object]) -> HttpProcessingError | None:
    """What ``call`` raised (one of the parser's errors), or None when it passed."""
    try:
        call()
    except HttpProcessingError as exc:
        return exc
    return None


async def _connected() -> tuple[Wire[Any], FakeTransport]:
    protocol: Wire[Any] = Wire(asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


# -- the private members -----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "use"), METHODS, ids=[m[0] for m in METHODS])
def test_base_protocol_keeps_each_method_the_fence_calls(name: str, use: str) -> None:
    assert callable(getattr(BaseProtocol, name, None)), _changed(
        f"BaseProtocol.{name}() is gone", use)


@pytest.mark.parametrize(("name", "initial", "use"), ATTRIBUTES, ids=[a[0] for a in ATTRIBUTES])
async def test_base_protocol_keeps_each_attribute_the_fence_reads(
    name: str, initial: object, use: str,
) -> None:
    protocol = BaseProtocol(asyncio.get_running_loop())
    assert hasattr(protocol, name), _changed(f"BaseProtocol no longer sets {name}", use)
    assert getattr(protocol, name) == initial, _changed(
        f"BaseProtocol starts {name} at {getattr(protocol, name)!r}, not {initial!r}", use)


def test_the_signatures_the_fence_calls_with() -> None:
    assert inspect.iscoroutinefunction(BaseProtocol._drain_helper), _changed(
        "BaseProtocol._drain_helper is no longer a coroutine function", "await it in drain()")
    assert "resume_parser" in inspect.signature(BaseProtocol.resume_reading).parameters, _changed(
        "BaseProtocol.resume_reading() takes no resume_parser any more",
        "restart reading without feeding the parser (end_response)")
    for parser in (wire.HttpRequestParser, wire.HttpResponseParser):
        # The C parser's __init__ cannot be inspected; constructing one is the check.
        try:
            if parser is wire.HttpRequestParser:
                parser(None, None, 2**16, max_line_size=100, max_field_size=100,
                       max_headers=10, auto_decompress=False)
            else:
                parser(None, None, 2**16, max_line_size=100, max_field_size=100,
                       response_with_body=True, read_until_eof=True, auto_decompress=False)
        except TypeError as exc:
            pytest.fail(_changed(f"{parser.__name__} takes other arguments now ({exc})",
                                 "build the request and response parsers"))


# -- flow control, as the fence uses it ----------------------------------------------------
async def test_pause_holds_reading_until_resume_whatever_a_body_reader_does() -> None:
    protocol, transport = await _connected()
    protocol.pause()
    assert not transport.reading
    assert protocol._buffer_paused, _changed(
        "_pause_reading_for_buffer() no longer sets _buffer_paused", "hold reading")
    protocol.resume_reading()  # what a body reader calls once its buffer drained
    assert not transport.reading, _changed(
        "resume_reading() restarts reading though _buffer_paused holds it",
        "keep a hold for its buffer while body readers come and go")
    protocol.resume()
    assert transport.reading
    assert not protocol.held


async def test_resume_leaves_reading_held_while_a_body_reader_holds_it() -> None:
    protocol, transport = await _connected()
    protocol.parse_requests(limit=16, max_line_size=1000, max_headers=10)
    protocol.pause()
    messages, _, _ = protocol.parse(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 60)
    (_, body), = messages
    assert protocol._reading_paused, _changed(
        "a body reader past its limit no longer sets _reading_paused (pause_reading)",
        "know whether the socket is held for a body")
    protocol.resume()
    assert not transport.reading, _changed(
        "_resume_reading_for_buffer() restarts reading while a body reader holds it",
        "release only its own hold")
    await body.readany()  # the reader drains below its limit and lets reading go on
    assert transport.reading


async def test_end_response_reads_again_without_parsing() -> None:
    protocol, transport = await _connected()
    protocol.parse_response(limit=16, max_line_size=1000, with_body=True)
    protocol.parse(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 60)
    assert protocol._reading_paused
    assert not transport.reading
    fed: list[bytes] = []
    protocol.data_received = fed.append  # type: ignore[method-assign]
    protocol.end_response()
    assert transport.reading
    assert not protocol._reading_paused
    assert fed == [], _changed("resume_reading(resume_parser=False) feeds the parser",
                               "read again without parsing (an idle upstream connection)")


async def test_stop_and_restart_reading_act_on_the_socket_whatever_holds_it() -> None:
    protocol, transport = await _connected()
    protocol.stop_reading()
    assert not transport.reading
    protocol.restart_reading()
    assert transport.reading
    protocol.pause()
    protocol.restart_reading()
    assert transport.reading


async def test_drain_waits_while_writing_is_paused() -> None:
    protocol, _ = await _connected()
    await asyncio.wait_for(protocol.drain(), 1)  # not paused: at once
    protocol.pause_writing()
    assert protocol.writing_blocked
    waiting = asyncio.create_task(protocol.drain())
    await asyncio.sleep(0)
    assert not waiting.done(), _changed("_drain_helper() returns while writing is paused",
                                        "make drain() wait for a slow peer")
    protocol.resume_writing()
    await asyncio.wait_for(waiting, 1)
    assert not protocol.writing_blocked


async def test_drain_ends_when_the_connection_goes() -> None:
    protocol, _ = await _connected()
    protocol.pause_writing()
    waiting = asyncio.create_task(protocol.drain())
    await asyncio.sleep(0)
    protocol.connection_lost(ConnectionResetError("gone"))
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, 1)
    with pytest.raises(ConnectionResetError):
        await protocol.drain()


# -- the parsers, as the server and the upstream pool read them ----------------------------
async def test_requests_parse_into_the_fields_the_server_reads() -> None:
    protocol, _ = await _connected()
    protocol.parse_requests(limit=2**16, max_line_size=1000, max_headers=10)
    messages, upgraded, _ = protocol.parse(
        b"GET /a%2Fb?q=1 HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\n"
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n")
    assert not upgraded
    (get, get_body), (post, post_body) = messages
    assert isinstance(get, RawRequestMessage)
    assert (get.method, get.path, get.version) == ("GET", "/a%2Fb?q=1", HttpVersion11)
    assert isinstance(get.headers, CIMultiDictProxy)
    assert get.headers.getall("X-TWO") == ["1", "2"]
    assert get.raw_headers == ((b"Host", b"x"), (b"X-Two", b"1"), (b"x-two", b"2"))
    assert not get.should_close
    assert not get.chunked
    assert get_body is EMPTY_PAYLOAD, _changed(
        "a request without a body no longer gets EMPTY_PAYLOAD", "tell bodiless requests apart")
    assert post.should_close
    assert post.chunked
    assert isinstance(post_body, StreamReader)
    assert await post_body.read() == b"abc"


async def test_the_request_parser_is_strict() -> None:
    for bad in (
        b"GET / HTTP/1.1\nHost: x\n\n",  # bare LF: llhttp's strict mode
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    ):
        protocol, _ = await _connected()
        protocol.parse_requests(limit=2**16, max_line_size=1000, max_headers=10)
        assert _raised(lambda: protocol.parse(bad)) is not None, _changed(  # noqa: B023
            f"the request parser accepts {bad!r}",
            "refuse what a stricter hop could read differently")


async def test_an_over_long_line_is_line_too_long() -> None:
    protocol, _ = await _connected()
    protocol.parse_requests(limit=2**16, max_line_size=100, max_headers=10)
    raised = _raised(lambda: protocol.parse(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n"))
    assert isinstance(raised, LineTooLong), _changed(
        f"an over-long line raises {raised!r}, not LineTooLong", "answer it 431")


async def test_a_websocket_upgrade_request_is_reported_as_such() -> None:
    protocol, _ = await _connected()
    protocol.parse_requests(limit=2**16, max_line_size=1000, max_headers=10)
    messages, upgraded, _ = protocol.parse(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"after the switch")
    assert upgraded, _changed(
        "an upgrade request no longer says so", "answer it as the connection's last")
    assert len(messages) == 1


async def test_a_body_cut_short_fails_at_eof() -> None:
    protocol, _ = await _connected()
    protocol.parse_requests(limit=2**16, max_line_size=1000, max_headers=10)
    protocol.parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert _raised(protocol.parse_eof) is not None, _changed(
        "parse_eof() mid-body does not raise", "tell a truncated request body from a complete one")


async def test_responses_parse_into_the_fields_the_upstream_pool_reads() -> None:
    protocol, _ = await _connected()
    protocol.parse_response(limit=2**16, max_line_size=1000, with_body=True)
    messages, upgraded, _ = protocol.parse(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Made It\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok")
    assert not upgraded
    (interim, _), (final, body) = messages
    assert interim.code == 100, _changed("an interim response is not a message of its own",
                                         "skip 1xx answers")
    assert isinstance(final, RawResponseMessage)
    assert (final.code, final.reason, final.version) == (201, "Made It", HttpVersion11)
    assert final.headers["x-a"] == "1"
    assert final.raw_headers == ((b"Content-Length", b"2"), (b"X-A", b"1"))
    assert not final.should_close
    assert not final.chunked
    assert body.is_eof()
    assert body.read_nowait() == b"ok"


async def test_a_response_to_head_has_no_body_and_one_without_length_ends_at_eof() -> None:
    protocol, _ = await _connected()
    protocol.parse_response(limit=2**16, max_line_size=1000, with_body=False)
    ((head, head_body),), _, _ = protocol.parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert head.code == 200
    assert head_body.is_eof()
    protocol.parse_response(limit=2**16, max_line_size=1000, with_body=True)
    ((_, body),), _, _ = protocol.parse(b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert not body.is_eof()
    protocol.parse_eof()
    assert body.is_eof(), _changed("a body delimited by the connection's end stays open at EOF",
                                   "relay such a body whole")
    assert await body.read() == b"some"


async def test_a_malformed_response_is_an_error_with_a_message() -> None:
    protocol, _ = await _connected()
    protocol.parse_response(limit=2**16, max_line_size=1000, with_body=True)
    raised = _raised(lambda: protocol.parse(b"HTTP/1.1 2OO OK\r\n\r\n"))
    assert raised is not None
    assert isinstance(raised.message, str), _changed(
        "the parser's errors have no message", "say what an upstream sent wrong")


# -- the fence itself --------------------------------------------------------------------------
_LOW_LEVEL = re.compile(r"aiohttp\.(?:http|streams|base_protocol)")
_PRIVATE = re.compile(r"\.(?:{})\b".format("|".join(
    [name for name, _ in METHODS] + [name for name, _, _ in ATTRIBUTES])))


@pytest.mark.parametrize("path", sorted(
    p for p in _PACKAGE.glob("*.py") if p.name != "wire.py"), ids=lambda p: p.name)
def test_no_other_module_reaches_past_the_fence(path: Path) -> None:
    text = path.read_text()
    assert not _LOW_LEVEL.search(text), f"{path.name} imports aiohttp's low-level parts: use wire"
    found = _PRIVATE.findall(text)
    assert not found, f"{path.name} uses aiohttp's private members {found}: use wire's names"
