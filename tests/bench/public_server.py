"""The gateway served by aiohttp's public low-level server, for the benchmark's comparison row.

``python -m tests.bench.public_server serve --host H --port P --workers N`` runs the gateway's
own app, request handler and forwarding, as ``python -m auth_gateway serve`` does, but with
``aiohttp.web.Server`` (its ``RequestHandler`` protocol, ``web.BaseRequest``,
``web.Response`` and its writer) in place of ``auth_gateway.http_server``: the same requests
take the same path, and only the server side differs. The benchmark measures it beside the
gateway as it ships, to decide whether the gateway's own connection layer (and the fence around
aiohttp's internals it needs, ``auth_gateway/wire.py``) is worth keeping; docs/architecture.md
records the outcome.

It is a measuring device, not a second server: what the handler asks of the server's
``Request`` is adapted to aiohttp's objects as directly as they allow (a header block becomes
headers, a body a ``web.Response``), and what the bench does not exercise (an upload's
``100 Continue``, answers to malformed requests, draining) is left to aiohttp's defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from typing import cast

import uvloop
from aiohttp import web
from multidict import CIMultiDict

from auth_gateway.app import create_app
from auth_gateway.config import GatewayConfig, load_config
from auth_gateway.handler import GatewayHandler
from auth_gateway.http_server import Request, problem_body
from auth_gateway.logs import ACCESS_LINES, setup_logging

__all__ = ["main"]

_NO_BODY = frozenset({204, 304})


def _headers(block: bytes) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for line in block.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
    return headers


class _Adapted:
    """What the gateway's handler reads of a request and asks of a response (the attributes
    and methods of ``auth_gateway.http_server.Request``), on aiohttp's ``BaseRequest``."""

    def __init__(self, base: web.BaseRequest) -> None:
        self.base = base
        self.method = base.method
        self.target = base.raw_path
        self.version = base.version
        self.headers = base.headers
        self.raw_headers = base.raw_headers
        self.payload = base.content
        self.remote = base.remote
        self.chunked = "chunked" in base.headers.get("Transfer-Encoding", "").lower()
        self.head_bound = 0  # unknown here: the handler adds the header lengths up instead
        self.keep_alive = True
        self.status = 0
        self.body_bytes = 0
        self.started = self.finished = False
        self.response: web.StreamResponse | None = None

    @property
    def connection_lost(self) -> bool:
        transport = self.base.transport
        return transport is None or transport.is_closing()

    def close_after(self) -> None:
        self.keep_alive = False

    def _made(self, response: web.StreamResponse) -> web.StreamResponse:
        if not self.keep_alive:
            response.force_close()
        self.response = response
        return response

    def respond(self, status: int, block: bytes, body: bytes = b"", *,
                reason: bytes | None = None, length: bool = True, date: bool = True) -> None:
        self.started = self.finished = True
        self.status = status
        send_body = self.method != "HEAD" and status not in _NO_BODY
        self.body_bytes = len(body) if send_body else 0
        headers = _headers(block)
        if not length:
            # A HEAD, 204 or 304 answer passed on with its own Content-Length, if any.
            response = web.StreamResponse(status=status, reason=_text(reason), headers=headers)
        else:
            response = web.Response(status=status, reason=_text(reason), headers=headers,
                                    body=body if send_body else None)
        self._made(response)

    def start(self, status: int, block: bytes, *, length: int | None,
              reason: bytes | None = None, date: bool = True) -> None:
        self.started = True
        self.status = status
        response = web.StreamResponse(status=status, reason=_text(reason),
                                      headers=_headers(block))
        if length is not None:
            response.content_length = length
        else:
            response.enable_chunked_encoding()
        self._made(response)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        response = self.response
        assert response is not None
        if not response.prepared:
            await response.prepare(self.base)
        self.body_bytes += len(data)
        await response.write(data)

    def finish(self) -> None:
        self.finished = True

    def send_continue(self) -> None:
        """Left to aiohttp (the benchmark sends no uploads)."""


def _text(reason: bytes | None) -> str | None:
    return None if reason is None else reason.decode("utf-8", "surrogateescape")


async def _serve(config: GatewayConfig, host: str, port: int) -> None:
    app = create_app(config)
    app.pre_freeze()
    await app.startup()
    app.freeze()
    handler = GatewayHandler(app)
    loop = asyncio.get_running_loop()

    async def answer(base: web.BaseRequest) -> web.StreamResponse:
        request = _Adapted(base)
        exchange = handler.begin(cast(Request, request))
        started = loop.time()
        try:
            step = handler.now(exchange)
            if step is not None:
                await handler.later(exchange, step)
        except Exception:
            handler.failed(exchange)
            if not request.started:
                request.close_after()
                request.respond(500, b"Content-Type: application/problem+json\r\n",
                                problem_body(500, "The gateway failed to handle this request."))
        handler.finished(exchange, loop.time() - started)
        assert request.response is not None
        return request.response

    limits = config.limits
    server = web.Server(answer, access_log=None, max_line_size=limits.max_header_bytes * 2,
                        max_field_size=limits.max_header_bytes * 2,
                        max_headers=limits.max_headers * 2)
    listening = await loop.create_server(server, host, port, reuse_port=True, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        listening.close()
        await server.shutdown(config.shutdown_timeout)
        await app.shutdown()
        await app.cleanup()
        ACCESS_LINES.flush()


def main(argv: list[str] | None = None) -> int:
    """Serve the gateway on aiohttp's web.Server: ``--workers`` processes on one port."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.public_server")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.workers > 1:
        # Every worker binds the port itself (SO_REUSEPORT); the benchmark stops the whole
        # process group, so this parent only waits.
        workers = [subprocess.Popen([sys.executable, "-m", "tests.bench.public_server", "serve",
                                     "--host", args.host, "--port", str(args.port)])
                   for _ in range(args.workers)]
        return max(abs(worker.wait()) for worker in workers)
    config = load_config()
    setup_logging(config.log_level)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

