"""This process's heartbeat to key_service: who it is, and how far it has applied the events.

Sent every ``GATEWAY_HEARTBEAT_INTERVAL`` seconds, and as soon as the watermark moves (an
event applied, a catch-up done), one at a time: a move while a heartbeat is on its way is
reported by the next one, right after. key_service keeps the latest of each process and counts
it in revocation receipts (docs/architecture.md, "Revocation receipts"); its answer, the newest
sequence, tells the process how current it is (``freshness.py``). The identity is stable for the
life of the process: host, pid, and a random instance ID, so that a restart on the same pid is
a new process that must confirm on its own. A process that stops cleanly (after its drain) says
so, and is no longer listed; one that dies is listed as gone once its heartbeats stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from apikeys_shared.events import format_time

from .errors import KeyServiceUnavailable
from .freshness import Freshness
from .metrics import Metrics

__all__ = ["HeartbeatPublisher", "Identity", "identity"]

log = logging.getLogger("auth_gateway.heartbeat")


@dataclass(frozen=True)
class Identity:
    """Who this process is, for as long as it runs."""

    instance_id: str
    name: str
    host: str
    pid: int
    started_at: datetime


def identity(name: str | None = None) -> Identity:
    """This process's identity: ``name`` (or the host name), a colon, and the pid."""
    host = socket.gethostname()[:255] or "unknown"
    pid = os.getpid()
    return Identity(
        instance_id=secrets.token_hex(8), name=f"{(name or host)[:180]}:{pid}", host=host,
        pid=pid, started_at=datetime.now(UTC),
    )


class HeartbeatSink(Protocol):
    """key_service's heartbeat route."""

    async def post_heartbeat(self, beat: dict[str, object]) -> int:
        """Post one heartbeat; the newest sequence. Raises KeyServiceUnavailable."""

    async def delete_gateway(self, instance_id: str) -> None:
        """Say this process stopped. Raises KeyServiceUnavailable."""


class HeartbeatPublisher:
    """Reports the watermark of one process, on a timer and whenever it moves."""

    def __init__(
        self, *, sink: HeartbeatSink, who: Identity, watermark: Callable[[], int],
        freshness: Freshness, metrics: Metrics, interval: float,
    ) -> None:
        self._sink = sink
        self._who = who
        self._watermark = watermark
        self._freshness = freshness
        self._metrics = metrics
        self._interval = interval
        self._wake = asyncio.Event()
        self._reported = -1
        self._healthy = True

    def progressed(self) -> None:
        """The watermark may have moved: send a heartbeat soon if it did."""
        if self._watermark() > self._reported:
            self._wake.set()

    async def run(self) -> None:
        """Send a heartbeat now, then every interval and after every move, until cancelled."""
        while True:
            self._wake.clear()
            await self.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    async def leave(self) -> None:
        """The process is stopping, done serving: key_service stops listing it (best effort:
        if this fails it is listed as gone after the bound, as if it had been killed)."""
        try:
            await self._sink.delete_gateway(self._who.instance_id)
        except KeyServiceUnavailable as exc:
            log.warning("could not tell key_service this process is stopping: %s", exc)

    async def beat(self) -> None:
        """Send one heartbeat; a failure is counted and logged once, never raised."""
        watermark = self._watermark()
        who = self._who
        asked_at = time.monotonic()
        try:
            newest = await self._sink.post_heartbeat({
                "instance_id": who.instance_id, "name": who.name, "host": who.host,
                "pid": who.pid, "started_at": format_time(who.started_at),
                "applied_sequence": watermark,
            })
        except KeyServiceUnavailable as exc:
            self._metrics.heartbeats.labels("error").inc()
            if self._healthy:
                log.warning("cannot send a heartbeat to key_service: %s", exc)
            self._healthy = False
            return
        self._metrics.heartbeats.labels("ok").inc()
        if not self._healthy:
            log.info("heartbeats reach key_service again")
        self._healthy = True
        self._reported = watermark
        self._freshness.learn(newest, asked_at, self._watermark(), watermark)
