"""Forwarding one authenticated request to its upstream, streaming both ways.

Bodies are never held whole: the request body is read from the client in chunks as the upstream
takes them, and the response body is written to the client as it arrives. (A response
whose Content-Length is at most ``BUFFERED_BODY_LIMIT`` is read first and answered with one write:
headers and body in one send instead of three.) The time until the
upstream's response headers is bounded by the total timeout; while streaming, an upstream idle
longer than that is cut. Failures before any byte went back: 502 (cannot connect), 504 (too slow).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .config import Limits
from .headers import response_headers, upstream_headers
from .metrics import Metrics
from .problems import problem
from .routes import Route

__all__ = [
    "BUFFERED_BODY_LIMIT", "BodyTooLarge", "ForwardContext", "Forwarder", "upstream_session",
]

_CHUNK = 64 * 1024
# Upstream responses declaring at most this many bytes are read whole and sent to the client in
# one write; anything larger (or of unknown length) is streamed.
BUFFERED_BODY_LIMIT = 64 * 1024
_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
_NO_BODY_STATUS = frozenset({204, 304})


def upstream_session(limits: Limits) -> aiohttp.ClientSession:
    """The pooled keep-alive session every forwarded request goes through."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=limits.upstream_max_connections, keepalive_timeout=30,
            # Upstream host names are few and fixed by the route table: resolve them rarely.
            ttl_dns_cache=300,
        ),
        # Upstream cookies must never be replayed to another client's request.
        cookie_jar=aiohttp.DummyCookieJar(),
        # Bodies pass through as they are, and only the client's own headers go upstream.
        auto_decompress=False,
        skip_auto_headers=_SKIP_AUTO,
    )


class BodyTooLarge(Exception):
    """The client's body went past the configured limit while streaming."""


@dataclass(frozen=True)
class ForwardContext:
    """What the gateway knows about the request beyond its headers."""

    route: Route
    raw_path: str
    raw_query: str
    request_id: str
    client_address: str
    peer_trusted: bool
    identity: tuple[str, str] | None


class _Body:
    """The client's body as an async iterator of chunks, counting against the limit."""

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self._content = content
        self._limit = limit
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._content.iter_chunked(_CHUNK):
            seen += len(chunk)
            if seen > self._limit:
                self.too_large = True
                raise BodyTooLarge
            yield chunk


class Forwarder:
    """Sends requests upstream over one pooled session."""

    def __init__(self, session: aiohttp.ClientSession, limits: Limits, metrics: Metrics) -> None:
        self._session = session
        self._limits = limits
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=limits.upstream_connect_timeout,
            sock_read=limits.upstream_total_timeout,
        )

    def _headers(self, request: web.Request, ctx: ForwardContext) -> CIMultiDict[str]:
        incoming = request.headers
        forwarded_for = ctx.client_address
        proto = request.scheme
        if ctx.peer_trusted:
            prior = ", ".join(incoming.getall("X-Forwarded-For", []))
            forwarded_for = f"{prior}, {request.remote}" if prior else str(request.remote)
            proto = incoming.get("X-Forwarded-Proto", proto)
        return upstream_headers(
            incoming, forwarded_for=forwarded_for, forwarded_proto=proto,
            forwarded_host=incoming.get("Host"), request_id=ctx.request_id,
            identity=ctx.identity,
        )

    async def forward(self, request: web.Request, ctx: ForwardContext) -> web.StreamResponse:
        """Send ``request`` to ``ctx.route``'s upstream and stream the answer back."""
        url = ctx.route.upstream_url(ctx.raw_path, ctx.raw_query)
        headers = self._headers(request, ctx)
        body = _Body(request.content, self._limits.max_body_bytes)
        data = body.chunks() if request.body_exists else None
        label = ctx.route.prefix
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._limits.upstream_total_timeout):
                upstream = await self._session.request(
                    request.method, URL(url, encoded=True),
                    # Session-level: no automatic headers, no decompression (upstream_session).
                    headers=headers, data=data, allow_redirects=False, timeout=self._timeout,
                )
        except BodyTooLarge:
            return problem(413, "The request body is larger than this gateway accepts.")
        except aiohttp.ConnectionTimeoutError:
            self._metrics.upstream_errors.labels("connect_timeout").inc()
            return problem(502, "The upstream did not accept a connection in time.")
        except TimeoutError:
            self._metrics.upstream_errors.labels("timeout").inc()
            return problem(504, "The upstream did not answer in time.")
        except (aiohttp.ClientError, OSError):
            if body.too_large:
                return problem(413, "The request body is larger than this gateway accepts.")
            if request.transport is None or request.transport.is_closing():
                raise
            self._metrics.upstream_errors.labels("connect").inc()
            return problem(502, "The upstream could not be reached.")
        elapsed = time.perf_counter() - started
        self._metrics.child(self._metrics.upstream_seconds, label).observe(elapsed)
        try:
            return await self._relay(request, upstream, ctx)
        finally:
            upstream.release()

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, ctx: ForwardContext
    ) -> web.StreamResponse:
        headers = response_headers(upstream.headers)
        headers["X-Request-Id"] = ctx.request_id
        has_body = request.method != "HEAD" and upstream.status not in _NO_BODY_STATUS
        length = upstream.content_length
        if (
            has_body and length is not None and length <= BUFFERED_BODY_LIMIT
            and "Transfer-Encoding" not in upstream.headers
        ):
            try:
                body = await upstream.read()
            except (aiohttp.ClientError, TimeoutError):
                # Nothing was sent to the client yet, so it can still be told plainly.
                self._metrics.upstream_errors.labels("reset").inc()
                return problem(502, "The upstream failed while sending its response.")
            return web.Response(
                status=upstream.status, reason=upstream.reason, body=body, headers=headers,
            )
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(headers)
        await response.prepare(request)
        if has_body:
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Headers are gone already: the only honest signal left is a cut connection.
                self._metrics.upstream_errors.labels("reset").inc()
                raise ConnectionResetError("upstream failed while streaming") from exc
        await response.write_eof()
        return response
