"""The demo echo backend: every path and method answers with JSON describing the request.

The body is streamed through SHA-256, never held, so a gigabyte upload costs no memory. Extras:

* ``GET /_demo/stats``: how many requests (other than stats) this process has answered;
* ``?_demo_delay=S`` on any request: wait S seconds (at most 60) before answering;
* ``GET /_demo/bytes/{n}``: a response body of ``n`` bytes, streamed in 64 KiB chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from aiohttp import web

__all__ = ["STATS", "Stats", "create_app"]

_CHUNK = 64 * 1024


@dataclass
class Stats:
    """Requests answered by this process (stats requests excluded)."""

    requests: int = 0


STATS = web.AppKey("stats", Stats)


async def _stats(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STATS].requests})


async def _bytes(request: web.Request) -> web.StreamResponse:
    request.app[STATS].requests += 1
    try:
        size = int(request.match_info["n"])
    except ValueError:
        raise web.HTTPBadRequest(text="n must be an integer") from None
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    block = b"x" * _CHUNK
    # A HEAD answer has the GET's headers and no body (RFC 9110 §9.3.2); bytes written after
    # it would be read as the start of the next response on a kept-alive connection.
    left = 0 if request.method == "HEAD" else size
    while left > 0:
        await response.write(block[: min(left, _CHUNK)])
        left -= _CHUNK
    await response.write_eof()
    return response


async def _echo(request: web.Request) -> web.Response:
    request.app[STATS].requests += 1
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        digest.update(chunk)
        length += len(chunk)
    delay = request.query.get("_demo_delay")
    if delay is not None:
        try:
            seconds = min(60.0, max(0.0, float(delay)))
        except ValueError:
            seconds = 0.0
        await asyncio.sleep(seconds)
    return web.json_response({
        "method": request.method,
        "path": request.raw_path.partition("?")[0],
        "query": request.query_string,
        "headers": [[name, value] for name, value in request.headers.items()],
        "remote": request.remote,
        "body_length": length,
        "body_sha256": digest.hexdigest(),
    })


def create_app() -> web.Application:
    """The echo app."""
    app = web.Application()
    app[STATS] = Stats()
    app.router.add_get("/_demo/stats", _stats)
    app.router.add_get("/_demo/bytes/{n}", _bytes)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app
