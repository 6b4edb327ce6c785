"""An example subscriber to API-key events: verify every event, apply it once, in order.

Run it next to a running stack (``make run`` or ``docker compose up``)::

    RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/ \\
    APIKEYS_VERIFY_KEYS=<the verify key from the deployment's secrets> \\
    python examples/subscriber.py

It declares a durable quorum queue of its own (``APIKEYS_SUBSCRIBER_QUEUE``, default
``example-subscriber``) and binds it to ``key.issued`` and ``key.revoked`` on the events exchange.
With ``KEY_SERVICE_URL`` and ``APIKEYS_INTERNAL_TOKEN`` set it then reads key_service's feed for
every event after ``APIKEYS_SUBSCRIBER_AFTER`` (default 0: the whole history), so nothing from
before the queue existed is missed. Then, one message at a time, in order:

1. it rebuilds the signed event from the body and the ``x-signature`` / ``x-signing-key`` headers
   and verifies it against the trusted verify keys; a message that does not verify is rejected
   (not requeued) and never applied: write access to RabbitMQ must not be enough to fake a key;
2. it drops duplicates: delivery is at-least-once, so an event whose ``sequence`` is not above the
   highest one applied is acknowledged and ignored;
3. it fills gaps: an event whose sequence is more than one above the highest applied means events
   were missed, and the feed supplies them first;
4. it prints one JSON line per applied event on stdout, then acknowledges the message.

It needs only the shared package (``apikeys_shared``), aio-pika and aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import aio_pika
import aio_pika.abc
import aiohttp

from apikeys_shared import (
    EXCHANGE,
    Env,
    EnvelopeError,
    Event,
    SignatureError,
    SignedEvent,
    Verifier,
)
from apikeys_shared.config import DEFAULT_RABBITMQ_URL
from apikeys_shared.errors import ConfigError

log = logging.getLogger("subscriber")

ROUTING_KEYS = ("key.issued", "key.revoked")


@dataclass(frozen=True)
class SubscriberConfig:
    """What the subscriber reads from the environment."""

    rabbitmq_url: str = field(repr=False)
    exchange: str
    queue: str
    verifier: Verifier = field(repr=False)
    prefetch: int = 50
    key_service_url: str | None = None
    internal_token: str | None = field(default=None, repr=False)
    after: int = 0


def load_config(environ: Mapping[str, str]) -> SubscriberConfig:
    """Read the subscriber's variables; ConfigError names a missing or bad one."""
    env = Env(environ)
    keys = [k for k in env.text("APIKEYS_VERIFY_KEYS").split(",") if k.strip()]
    return SubscriberConfig(
        rabbitmq_url=env.url("RABBITMQ_URL", DEFAULT_RABBITMQ_URL, ("amqp", "amqps")),
        exchange=env.text("APIKEYS_EXCHANGE", EXCHANGE),
        queue=env.text("APIKEYS_SUBSCRIBER_QUEUE", "example-subscriber"),
        verifier=Verifier.from_base64(keys, "APIKEYS_VERIFY_KEYS"),
        prefetch=env.integer("APIKEYS_SUBSCRIBER_PREFETCH", 50, minimum=1, maximum=10_000),
        key_service_url=(
            env.url("KEY_SERVICE_URL", None, ("http", "https")).rstrip("/")
            if env.optional("KEY_SERVICE_URL") else None
        ),
        internal_token=env.optional("APIKEYS_INTERNAL_TOKEN"),
        after=env.integer("APIKEYS_SUBSCRIBER_AFTER", 0, minimum=0),
    )


class KeyView:
    """The subscriber's own view of the keys, and the highest sequence applied to it.

    Events are totally ordered by ``sequence``. A real service would keep this (and the
    sequence) in its own database, so that after a restart it asks the feed only for what came
    after it.
    """

    def __init__(self, after: int = 0) -> None:
        self.sequence = after
        self.status: dict[str, str] = {}

    def is_new(self, event: Event) -> bool:
        """False for a duplicate or an event already replayed from the feed."""
        return event.sequence > self.sequence

    def is_next(self, event: Event) -> bool:
        """True when no event is missing between what was applied and ``event``."""
        return event.sequence == self.sequence + 1

    def apply(self, event: Event) -> bool:
        """Apply ``event`` if it is news; False for a duplicate."""
        if not self.is_new(event):
            return False
        self.sequence = event.sequence
        # Revoked is terminal: nothing may bring a key back.
        if self.status.get(event.record.key_id) != "revoked":
            self.status[event.record.key_id] = event.record.status
        print(describe(event), flush=True)
        return True


class Feed:
    """key_service's replayable feed: ``GET /internal/v1/events?after=SEQ`` (signed events)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str,
                 verifier: Verifier) -> None:
        self._session = session
        self._url = f"{base_url}/internal/v1/events"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._verifier = verifier

    async def after(self, sequence: int) -> list[Event]:
        """Every event after ``sequence`` that exists now, verified, in order."""
        events: list[Event] = []
        while True:
            params = {"after": str(sequence), "limit": "500"}
            async with self._session.get(self._url, params=params,
                                         headers=self._headers) as response:
                if response.status != 200:
                    raise FeedError(f"feed answered {response.status}: {await response.text()}")
                page = await response.json()
            entries = page["events"]
            for entry in entries:
                event = SignedEvent.from_json(entry).verify(self._verifier)
                events.append(event)
                sequence = event.sequence
            if not entries or sequence >= int(page["last_sequence"]):
                return events


class FeedError(Exception):
    """The feed could not be read."""


def describe(event: Event) -> str:
    """One JSON line naming what happened (never a secret: events carry none)."""
    record = event.record
    return json.dumps({
        "event_id": event.id,
        "type": event.type,
        "sequence": event.sequence,
        "key_id": record.key_id,
        "name": record.name,
        "status": record.status,
        "issued_at": record.to_json()["issued_at"],
        "revoked_at": record.to_json()["revoked_at"],
    }, sort_keys=True)


async def handle(message: aio_pika.abc.AbstractIncomingMessage, verifier: Verifier,
                 view: KeyView, feed: Feed | None) -> None:
    """Verify, fill a gap from the feed, apply once, acknowledge; reject what does not verify."""
    try:
        event = SignedEvent.from_amqp(message.body, dict(message.headers)).verify(verifier)
    except (SignatureError, EnvelopeError) as exc:
        log.warning("rejected message %s: %s", message.message_id, exc)
        await message.reject(requeue=False)
        return
    if view.is_new(event) and not view.is_next(event):
        if feed is None:
            log.warning("events %d to %d were missed (set KEY_SERVICE_URL and "
                        "APIKEYS_INTERNAL_TOKEN to fill gaps from the feed)",
                        view.sequence + 1, event.sequence - 1)
        else:
            for missed in await feed.after(view.sequence):
                if missed.sequence < event.sequence:
                    view.apply(missed)
    if not view.apply(event):
        log.info("ignored duplicate or replayed event %s (sequence %d)", event.id,
                 event.sequence)
    await message.ack()


async def consume(config: SubscriberConfig, stop: asyncio.Event,
                  session: aiohttp.ClientSession) -> None:
    """Bind the queue, catch up from the feed, then handle messages one by one until ``stop``."""
    connection = await aio_pika.connect_robust(config.rabbitmq_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=config.prefetch)
        # Declaring the exchange with key_service's own parameters is idempotent and lets the
        # subscriber start first.
        exchange = await channel.declare_exchange(
            config.exchange, aio_pika.ExchangeType.TOPIC, durable=True,
        )
        # A quorum queue is replicated across the RabbitMQ cluster and survives a node loss.
        queue = await channel.declare_queue(
            config.queue, durable=True, arguments={"x-queue-type": "quorum"},
        )
        for routing_key in ROUTING_KEYS:
            await queue.bind(exchange, routing_key)
        view = KeyView(config.after)
        feed = None
        if config.key_service_url and config.internal_token:
            feed = Feed(session, config.key_service_url, config.internal_token, config.verifier)
            # The queue is bound first, so an event is either in this catch-up or in the queue
            # (or both: the sequence check drops the second copy).
            for event in await feed.after(view.sequence):
                view.apply(event)
        log.info("listening on queue %s bound to exchange %s (after sequence %d)",
                 config.queue, config.exchange, view.sequence)

        async def loop() -> None:
            async with queue.iterator() as messages:
                async for message in messages:
                    await handle(message, config.verifier, view, feed)

        consumer = asyncio.create_task(loop())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if consumer.done():
                consumer.result()  # whatever ended the consumer ends the subscriber
        finally:
            for task in (consumer, stopper):
                task.cancel()
            await asyncio.gather(consumer, stopper, return_exceptions=True)
        await channel.close()


async def run(config: SubscriberConfig, stop: asyncio.Event) -> None:
    """Consume until ``stop`` is set, then close everything cleanly."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await consume(config, stop, session)


async def main() -> int:
    """Run until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        log.error("configuration: %s", exc)
        return 2
    if bool(config.key_service_url) != bool(config.internal_token):
        log.error("configuration: set both KEY_SERVICE_URL and APIKEYS_INTERNAL_TOKEN, or neither")
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(config, stop)
    except (FeedError, SignatureError, EnvelopeError, aiohttp.ClientError) as exc:
        log.error("feed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
