"""Keeping the gateway current from key events (placeholder until it lands)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

# Set once the first catch-up from key_service's feed is done; /readyz waits for it.
SYNCED = web.AppKey("synced", asyncio.Event)


async def sync_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context that consumes key events and catches up from the feed."""
    app[SYNCED].set()
    yield
