"""The outbox relay (placeholder until it lands)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context that runs the sequencer and relay for the app's lifetime."""
    yield
