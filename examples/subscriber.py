"""An example subscriber to API-key events: verify every event, apply it once, in order.

Run it next to a running stack (``make run`` or ``docker compose up``)::

    RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/ \\
    APIKEYS_VERIFY_KEYS=<the verify key from the deployment's secrets> \\
    python examples/subscriber.py

It declares a durable quorum queue of its own (``APIKEYS_SUBSCRIBER_QUEUE``, default
``example-subscriber``), binds it to ``key.issued`` and ``key.revoked`` on the events exchange,
and for each message:

1. rebuilds the signed event from the body and the ``x-signature`` / ``x-signing-key`` headers and
   verifies it against the trusted verify keys; a message that does not verify is rejected
   (not requeued) and never applied: write access to RabbitMQ must not be enough to fake a key;
2. drops duplicates: delivery is at-least-once, so an event whose ``sequence`` is not newer than
   the one already applied for that key is acknowledged and ignored;
3. prints one JSON line per applied event on stdout, then acknowledges the message.

It needs only the shared package (``apikeys_shared``) and aio-pika.
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
    )


class KeyView:
    """The subscriber's own view of the keys: the newest record applied per key ID.

    A real service would keep this (and the highest sequence applied) in its own database, so
    that after a restart it can ask key_service's feed for everything after that sequence.
    """

    def __init__(self) -> None:
        self.sequences: dict[str, int] = {}
        self.revoked: set[str] = set()

    def apply(self, event: Event) -> bool:
        """Apply ``event`` if it is news; False for a duplicate or an out-of-date record."""
        key_id = event.record.key_id
        if event.sequence <= self.sequences.get(key_id, 0):
            return False
        if key_id in self.revoked:
            # Revoked is terminal: nothing may bring a key back.
            return False
        self.sequences[key_id] = event.sequence
        if not event.record.active:
            self.revoked.add(key_id)
        return True


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
                 view: KeyView) -> None:
    """Verify, apply once, print, acknowledge; reject what does not verify."""
    try:
        event = SignedEvent.from_amqp(message.body, dict(message.headers)).verify(verifier)
    except (SignatureError, EnvelopeError) as exc:
        log.warning("rejected message %s: %s", message.message_id, exc)
        await message.reject(requeue=False)
        return
    if view.apply(event):
        print(describe(event), flush=True)
    else:
        log.info("ignored duplicate or stale event %s (sequence %d)", event.id, event.sequence)
    await message.ack()


async def run(config: SubscriberConfig, stop: asyncio.Event) -> None:
    """Consume until ``stop`` is set, then close the connection cleanly."""
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
        view = KeyView()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await handle(message, config.verifier, view)

        tag = await queue.consume(on_message)
        log.info("listening on queue %s bound to exchange %s", config.queue, config.exchange)
        await stop.wait()
        await queue.cancel(tag)
        await channel.close()


async def main() -> int:
    """Run until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        log.error("configuration: %s", exc)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(config, stop)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
