"""Stopping a background loop of the app (the outbox relay, the revocation scheduler).

A loop is asked to stop between rounds, so that a round in progress (a message being confirmed,
a revocation being committed) completes; only one that outlasts the bound is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["finish"]


async def finish(task: asyncio.Task[None] | None, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``task`` (already told to stop), then cancel it."""
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
