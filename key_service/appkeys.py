"""Typed application keys shared by key_service's modules."""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .config import KeyServiceConfig
from .heartbeats import Heartbeats
from .metrics import Metrics

__all__ = [
    "CONFIG", "ENGINE", "HEARTBEATS", "METRICS", "OUTBOX_WAKEUP", "SCHEDULER_WAKEUP",
    "SESSIONMAKER", "SNAPSHOT_PREPARED",
]

CONFIG = web.AppKey("config", KeyServiceConfig)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONMAKER = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
METRICS = web.AppKey("metrics", Metrics)
# Set after every commit that wrote an outbox row, so the relay publishes without delay.
OUTBOX_WAKEUP = web.AppKey("outbox_wakeup", asyncio.Event)
# Set after a roll commits, so the revocation scheduler looks at the new revokes_at at once.
SCHEDULER_WAKEUP = web.AppKey("scheduler_wakeup", asyncio.Event)
# Gateway heartbeats: recorded, and waited on by revocations with ``wait``.
HEARTBEATS = web.AppKey("heartbeats", Heartbeats)
# Set once the first try at the gateways' snapshot is over (made or failed): /readyz waits for
# it, so that a gateway started once key_service is ready does not wait for the keys table.
SNAPSHOT_PREPARED = web.AppKey("snapshot_prepared", asyncio.Event)
