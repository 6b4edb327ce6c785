"""The AMQP side of keeping current: one exclusive queue per process on the key event exchange.

The queue lives only as long as the connection (exclusive, auto-delete), so events published
while the process is disconnected are not kept for it anywhere but in key_service's feed; that
is why every (re)subscription asks the synchronizer to catch up. The reconnect loop is our own
rather than ``connect_robust``: it has to tell the synchronizer when the broker goes away (so
that the feed is polled) and when it is back (so that the feed is read once more), and each
attempt goes to the next node of a cluster (``apikeys_shared.amqp``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Literal, Protocol

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import pamqp.exceptions
from pamqp.common import FieldTable

from apikeys_shared.amqp import BrokerAddresses
from apikeys_shared.errors import EnvelopeError
from apikeys_shared.events import ROUTING_KEYS, SignedEvent

__all__ = ["EventConsumer", "EventHandler"]

log = logging.getLogger("auth_gateway.consumer")

# A dead broker behind a silent network is noticed after about two missed heartbeats.
DEFAULT_HEARTBEAT = 5
PREFETCH = 256
RECONNECT_FIRST_DELAY = 0.25
RECONNECT_MAX_DELAY = 5.0

_AMQP_ERRORS = (
    aiormq.exceptions.AMQPError,
    pamqp.exceptions.PAMQPException,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,
)


class EventHandler(Protocol):
    """What the consumer reports to: the synchronizer."""

    async def handle(self, signed: SignedEvent, source: Literal["amqp"]) -> str:
        """Verify and apply one signed event: ``applied``, ``rejected`` or ``deferred``."""

    def reject_unparsed(self, source: Literal["amqp"], reason: Literal["signature"]) -> None:
        """Count an event that could not be read as a signed event."""

    def set_subscribed(self, subscribed: bool) -> None:
        """The queue is being consumed (True) or the connection is gone (False)."""


class EventConsumer:
    """Subscribes a fresh exclusive queue to the exchange, reconnecting until closed."""

    def __init__(
        self,
        handler: EventHandler,
        *,
        url: str,
        exchange: str,
        queue_prefix: str,
        timeout: float = 10.0,
        dead_letter_exchange: str | None = None,
    ) -> None:
        self._handler = handler
        # Every node of RABBITMQ_URL, each with a heartbeat unless the URL names one.
        self._brokers = BrokerAddresses(url, query_defaults={"heartbeat": str(DEFAULT_HEARTBEAT)})
        self._exchange = exchange
        self._queue_prefix = queue_prefix
        self._timeout = timeout
        # Where rejected (forged, unsigned, malformed) messages go for inspection; without
        # one the broker drops them.
        self._arguments: FieldTable | None = (
            {"x-dead-letter-exchange": dead_letter_exchange} if dead_letter_exchange else None
        )
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.connects = 0

    async def run(self) -> None:
        """Connect, subscribe and consume; after any failure, wait a little and do it again."""
        delay = RECONNECT_FIRST_DELAY
        while True:
            try:
                await self._subscribe_and_consume()
                delay = RECONNECT_FIRST_DELAY
                log.warning("lost the connection to RabbitMQ; polling the feed meanwhile")
            except _AMQP_ERRORS as exc:
                log.warning("cannot consume key events from RabbitMQ: %s", type(exc).__name__)
            except Exception:
                # Whatever went wrong, the process must keep trying to subscribe.
                log.exception("unexpected error consuming key events")
            self._handler.set_subscribed(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _subscribe_and_consume(self) -> None:
        connection = await self._brokers.connect(timeout=self._timeout)
        self._connection = connection
        try:
            async with asyncio.timeout(self._timeout):
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=PREFETCH)
                exchange = await channel.declare_exchange(
                    self._exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
                queue = await channel.declare_queue(
                    f"{self._queue_prefix}.{uuid.uuid4().hex[:16]}",
                    exclusive=True,
                    auto_delete=True,
                    arguments=self._arguments,
                )
                for routing_key in sorted(set(ROUTING_KEYS.values())):
                    await queue.bind(exchange, routing_key)
                await queue.consume(self._on_message)
            self.connects += 1
            log.info("consuming key events from queue %s", queue.name)
            self._handler.set_subscribed(True)
            closed = [
                asyncio.ensure_future(connection.closed()),
                asyncio.ensure_future(channel.closed()),
            ]
            try:
                await asyncio.wait(closed, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in closed:
                    future.cancel()
        finally:
            self._connection = None
            await self._close(connection)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            signed = SignedEvent.from_amqp(message.body, dict(message.headers))
        except EnvelopeError:
            self._handler.reject_unparsed("amqp", "signature")
            await self._settle(message, accept=False)
            return
        outcome = await self._handler.handle(signed, "amqp")
        # A deferred event is acknowledged too: the catch-up it requested brings it back from
        # the feed, and keeping it on the queue would only have it redelivered in a busy loop.
        await self._settle(message, accept=outcome != "rejected")

    @staticmethod
    async def _settle(message: aio_pika.abc.AbstractIncomingMessage, *, accept: bool) -> None:
        # The channel may be gone by now; the catch-up after reconnecting covers the message.
        with contextlib.suppress(*_AMQP_ERRORS):
            if accept:
                await message.ack()
            else:
                # Forged, unsigned or malformed: never requeued (it would come back for ever);
                # dead-lettered when the queue has a dead-letter exchange, else dropped.
                await message.reject(requeue=False)

    def resubscribe(self) -> None:
        """Drop the current connection; ``run`` then subscribes a fresh queue, as after a loss.

        For a subscription that stopped receiving without the broker saying so (its bindings
        gone with a deleted exchange, say), which only the feed can reveal.
        """
        connection = self._connection
        if connection is not None:
            task = asyncio.get_running_loop().create_task(self._close(connection))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the current connection, if any (the run task is cancelled by its owner)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._close(connection)

    async def _close(self, connection: aio_pika.abc.AbstractConnection) -> None:
        # Bounded: a broker that went silent never answers the close handshake.
        with contextlib.suppress(*_AMQP_ERRORS):
            async with asyncio.timeout(self._timeout):
                await connection.close()
