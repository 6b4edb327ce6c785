"""The fence around aiohttp's low-level HTTP parts: the one module that touches them.

The gateway reads requests, and its upstreams' answers, with aiohttp's own C parser (llhttp in
strict mode, with aiohttp's checks) and its ``StreamReader`` bodies, without aiohttp's web stack
or ``ClientSession`` around them (docs/architecture.md, "The HTTP layer", says why). That means
subclassing aiohttp's ``BaseProtocol``, whose flow control the parser and the readers drive,
and using its underscored members: aiohttp changes them between releases, and its main branch
already removed some. So they are used here and nowhere else, behind plain names:

- ``Wire``: the asyncio protocol both kinds of connection are. ``parse`` / ``parse_eof`` feed
  the installed parser (``end_response`` drops it); ``pause`` / ``resume`` hold reading for a
  buffer of the caller's (in step with the body readers' own flow control); ``stop_reading`` /
  ``restart_reading`` switch the socket's reading regardless; ``drain`` waits while the peer
  reads slower than we write.
- The parser's message types, body reader and errors, re-exported.

``tests/unit/gateway/test_wire.py`` checks every member relied on below, so that an aiohttp
release that changed one fails that test, naming what changed (the pin in pyproject.toml,
``aiohttp>=3.14.5,<3.15``, is where a new release is let in). No other module of the gateway
imports ``aiohttp.http``, ``aiohttp.streams`` or ``aiohttp.base_protocol`` (ruff's banned-api
rule says so in pyproject.toml).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, NoReturn, TypeVar

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import (
    HttpRequestParser,
    HttpResponseParser,
    HttpVersion11,
    RawRequestMessage,
    RawResponseMessage,
)
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

__all__ = [
    "EMPTY_PAYLOAD",
    "HttpProcessingError",
    "HttpVersion11",
    "LineTooLong",
    "RawRequestMessage",
    "RawResponseMessage",
    "StreamReader",
    "Wire",
]

M = TypeVar("M", RawRequestMessage, RawResponseMessage)
# What ``parse`` returns: the messages completed (each with its body's reader), whether the
# last one asked to switch protocols, and the bytes after it (unparsed when it did).
Parsed = tuple[list[tuple[M, StreamReader]], bool, bytes]


def _no_parser(data: bytes) -> NoReturn:
    raise RuntimeError("no parser installed on this connection")


def _no_eof() -> None:
    """Without a parser there is no message to end."""


class Wire(BaseProtocol, Generic[M]):
    """An asyncio protocol whose bytes go through an aiohttp parser, with aiohttp's flow control.

    ``loop``, ``held`` and ``writing_blocked`` are plain attributes, kept current here, because
    the server reads them for every request (a property would cost a call each time).
    """

    parse: Callable[[bytes], Parsed[M]]

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.loop = loop
        self.held = False  # reading held by pause() for a buffer of the subclass's
        self.writing_blocked = False  # the peer reads slower than we write: drain() waits
        self.parse = _no_parser
        self.parse_eof: Callable[[], object] = _no_eof

    # -- parsing ---------------------------------------------------------------------------
    # The body readers' flow control pauses the parser installed as ``_parser``
    # (BaseProtocol.pause_reading), and resume_reading() feeds it what was held back.
    def parse_requests(self, *, limit: int, max_line_size: int, max_headers: int) -> None:
        """Parse what arrives as requests, strictly (llhttp's strict mode and aiohttp's checks).

        ``limit``: body bytes buffered in a reader before reading pauses; ``max_line_size``
        bounds the request line and each header line.
        """
        parser = self._parser = HttpRequestParser(
            self, self.loop, limit, max_line_size=max_line_size, max_field_size=max_line_size,
            max_headers=max_headers, auto_decompress=False,
        )
        self.parse = parser.feed_data  # type: ignore[assignment]
        self.parse_eof = parser.feed_eof

    def parse_response(self, *, limit: int, max_line_size: int, with_body: bool) -> None:
        """Parse what arrives as one response (``with_body`` False: to a HEAD request), as
        aiohttp's client does; a body without a length ends with the connection."""
        parser = self._parser = HttpResponseParser(
            self, self.loop, limit, max_line_size=max_line_size, max_field_size=max_line_size,
            response_with_body=with_body, read_until_eof=True, auto_decompress=False,
        )
        self.parse = parser.feed_data  # type: ignore[assignment]
        self.parse_eof = parser.feed_eof

    def end_response(self) -> None:
        """The response is done with: drop its parser (until the next ``parse_response``),
        and read again if its body reader's flow control still holds the socket (without
        feeding the parser)."""
        self._parser = None
        self.parse = _no_parser
        self.parse_eof = _no_eof
        if self._reading_paused:
            self.resume_reading(resume_parser=False)

    # -- reading ---------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop reading until ``resume()``: a buffer of ours is full."""
        self.held = True
        self._pause_reading_for_buffer()

    def resume(self) -> None:
        """Undo ``pause()``; reading goes on unless a body reader's flow control holds it too."""
        self.held = False
        self._resume_reading_for_buffer()

    def stop_reading(self) -> None:
        """Stop reading from the socket, whatever holds or releases it otherwise."""
        self._pause_transport_reading()

    def restart_reading(self) -> None:
        """Read from the socket again, whatever held it."""
        self._resume_transport_reading()

    # -- writing ---------------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        self.writing_blocked = True

    def resume_writing(self) -> None:
        self.writing_blocked = False
        super().resume_writing()  # wakes drain()

    async def drain(self) -> None:
        """Wait while the peer reads slower than we write; ConnectionResetError once the
        connection is gone."""
        if self.transport is None:
            raise ConnectionResetError("the connection is closed")
        if self.writing_blocked:
            await self._drain_helper()
