"""An observer queue on the key event exchange, to split revocation time into its two legs.

It notes when each ``key.revoked`` event reaches a subscriber of its own, on the same clock
(``time.perf_counter``) as the revocation measurement, so the report can say how much of the
propagation time is key_service → RabbitMQ → a subscriber, and how much is the gateway's own.
It runs its own event loop in a background thread; the measurement stays synchronous.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

__all__ = ["EventObserver"]


class EventObserver:
    """Arrival times of ``key.revoked`` events by key ID."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self._url = amqp_url
        self._exchange = exchange
        self.arrivals: dict[str, float] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="event-observer", daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        """Subscribe; returns once the queue is bound (so no later event is missed)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the event observer did not subscribe in time")
        if self._error is not None:
            raise RuntimeError(f"the event observer failed: {self._error}") from self._error

    def close(self) -> None:
        """Unsubscribe and join the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(), never raised in the thread
            self._error = exc
            self._ready.set()

    def _on_message(self, message: AbstractIncomingMessage) -> None:
        arrived = time.perf_counter()
        try:
            key_id = str(json.loads(message.body)["data"]["key_id"])
        except (ValueError, KeyError, TypeError):
            return
        self.arrivals.setdefault(key_id, arrived)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connection = await aio_pika.connect(self._url, timeout=10)
        try:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                self._exchange, aio_pika.ExchangeType.TOPIC, durable=True,
            )
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, "key.revoked")

            async def consume(message: AbstractIncomingMessage) -> None:
                self._on_message(message)

            await queue.consume(consume, no_ack=True)
            self._ready.set()
            await self._stop.wait()
        finally:
            await connection.close()
