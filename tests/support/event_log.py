"""A subscriber of the tests' own on a quorum queue, keeping every delivery through broker failures.

It does what docs/events.md asks of a subscriber in a cluster (a durable quorum queue, bound
before anything is published; verify every message; acknowledge after applying) and nothing
more: no feed, no gap filling. So what it received is exactly what the broker delivered, and a
lost event shows as a missing sequence number. After a lost connection it connects again
through ``BrokerAddresses`` (the next node first) and consumes the same queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from apikeys_shared.amqp import BrokerAddresses
from apikeys_shared.events import Event, SignedEvent
from apikeys_shared.signing import Verifier

__all__ = ["QuorumSubscriber"]

_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, TimeoutError, RuntimeError)


@dataclass
class QuorumSubscriber:
    """Consumes ``queue`` (a quorum queue bound to ``exchange``) until ``close()``."""

    url: str
    exchange: str
    queue: str
    verifier: Verifier
    deliveries: list[Event] = field(default_factory=list)
    arrived_at: dict[str, float] = field(default_factory=dict)  # event ID -> first arrival
    connects: int = 0
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> QuorumSubscriber:
        """Declare and bind the queue, and consume it in the background; returns self."""
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 60)
        return self

    async def _run(self) -> None:
        brokers = BrokerAddresses(self.url)
        while True:
            try:
                connection = await brokers.connect(timeout=5)
            except _ERRORS:
                await asyncio.sleep(0.2)
                continue
            try:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=50)
                exchange = await channel.declare_exchange(
                    self.exchange, aio_pika.ExchangeType.TOPIC, durable=True,
                )
                queue = await channel.declare_queue(
                    self.queue, durable=True, arguments={"x-queue-type": "quorum"},
                )
                await queue.bind(exchange, "#")
                await queue.consume(self._on_message)
                self.connects += 1
                self._ready.set()
                closed = [asyncio.ensure_future(connection.closed()),
                          asyncio.ensure_future(channel.closed())]
                try:
                    await asyncio.wait(closed, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for future in closed:
                        future.cancel()
            except _ERRORS:
                pass
            finally:
                with contextlib.suppress(*_ERRORS):
                    async with asyncio.timeout(2):
                        await connection.close()
            await asyncio.sleep(0.2)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        signed = SignedEvent.from_amqp(message.body, dict(message.headers))
        event = signed.verify(self.verifier)
        self.deliveries.append(event)
        self.arrived_at.setdefault(event.id, time.monotonic())
        self._arrived.set()
        with contextlib.suppress(*_ERRORS):
            await message.ack()

    def unique(self) -> list[Event]:
        """Deliveries without the repeated ones (same event ID), first arrival kept, in order."""
        seen: set[str] = set()
        out: list[Event] = []
        for event in self.deliveries:
            if event.id not in seen:
                seen.add(event.id)
                out.append(event)
        return out

    async def wait_for(self, sequence: int, timeout: float = 60.0) -> float:
        """Until an event with ``sequence`` arrived; when it first did (``time.monotonic()``)."""
        return await self.wait_until(lambda e: e.sequence == sequence, f"sequence {sequence}",
                                     timeout)

    async def wait_until(self, check: Callable[[Event], bool], what: str,
                         timeout: float = 60.0) -> float:
        """Until an event for which ``check`` holds arrived; when the first one did."""
        deadline = time.monotonic() + timeout
        while not (found := [e for e in self.deliveries if check(e)]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = sorted({e.sequence for e in self.deliveries})
                raise TimeoutError(f"{what} did not arrive; sequences received: {got[-5:]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.5))
        return self.arrived_at[found[0].id]

    async def close(self, *, delete: bool = True) -> None:
        """Stop consuming; delete the queue unless told not to."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if delete:
            connection = await BrokerAddresses(self.url).connect(timeout=10)
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(self.queue)
