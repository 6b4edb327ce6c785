"""An example subscriber to API-key events: verify every event, apply it once, in order.

Run it next to a running stack (``make run`` prints these values; with ``docker compose`` the
subscriber must join the stack's network, or RabbitMQ and key_service be published)::

    RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/ \\
    KEY_SERVICE_URL=http://127.0.0.1:8081 \\
    APIKEYS_TOKEN=<a management token with the events:read scope> \\
    python examples/subscriber.py

It needs no deployment secret: it reads key_service's subscriber feed (``GET /api/v1/events``)
with a management token holding ``events:read``, and takes the keys that event signatures verify
against from ``GET /api/v1/verify-keys`` (again whenever an event names a key it does not know),
unless they are pinned in ``APIKEYS_VERIFY_KEYS``.

It declares a durable quorum queue of its own (``APIKEYS_SUBSCRIBER_QUEUE``, default
``example-subscriber``) and binds it to ``key.issued``, ``key.rolled`` and ``key.revoked`` on the
events exchange.
It then reads key_service's feed for every event after ``APIKEYS_SUBSCRIBER_AFTER`` (default 0:
the whole history), so nothing from before the queue existed is missed. (The feed is required:
without it a subscriber could only skip the events it missed, a revocation among them.) Then,
one message at a time, in order:

1. it rebuilds the signed event from the body and the ``x-signature`` / ``x-signing-key`` headers
   and verifies it against the trusted verify keys; a message that does not verify is rejected
   (not requeued) and never applied: write access to RabbitMQ must not be enough to fake a key.
   It reads only what subscribers need of a key, never the keyed secret hash (the feed does
   not even send it);
2. it drops duplicates: delivery is at-least-once, so an event whose ``sequence`` is not above the
   highest one applied is acknowledged and ignored;
3. it fills gaps: an event whose sequence is more than one above the highest applied means events
   were missed, and the feed supplies them first; the event waits until the feed has (the
   feed read again and again, with a growing pause, while key_service cannot be reached);
4. it prints one JSON line per applied event on stdout, then acknowledges the message.

Faults are waited out, never skipped: RabbitMQ unreachable at start-up or later (it connects
again, to the next node when ``RABBITMQ_URL`` names several, e.g.
``amqp://user:password@rabbit1:5672,rabbit2:5672,rabbit3:5672/``, and a message whose
acknowledgement was lost comes again and is dropped as a duplicate),
key_service unreachable (the feed is read again until it answers). Only SIGINT / SIGTERM or a
configuration error stop it.

It needs only the shared package (``apikeys_shared``), aio-pika and aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiohttp
import aiormq.exceptions

from apikeys_shared import (
    Env,
    EnvelopeError,
    PublicEvent,
    SignatureError,
    SignedEvent,
    Verifier,
    verify_public,
)
from apikeys_shared import config as shared
from apikeys_shared.amqp import BrokerAddresses, check_rabbitmq_url
from apikeys_shared.errors import ConfigError
from apikeys_shared.events import format_time
from apikeys_shared.settings import REQUIRED, Catalogue, Setting

log = logging.getLogger("subscriber")

ROUTING_KEYS = ("key.issued", "key.rolled", "key.revoked")
# Pauses between attempts while RabbitMQ or key_service cannot be reached: doubling, capped.
RETRY_FIRST = 0.5
RETRY_MAX = 10.0
# Failures of the broker connection or channel: the message is delivered again later.
AMQP_ERRORS = (aio_pika.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError,
               ConnectionError, TimeoutError)


QUEUE: Setting[str] = Setting(
    "APIKEYS_SUBSCRIBER_QUEUE", "example-subscriber", "this subscriber's durable quorum queue")
PREFETCH: Setting[int] = Setting(
    "APIKEYS_SUBSCRIBER_PREFETCH", 50, "unacknowledged messages in flight", 1, 10_000)
KEY_SERVICE_URL: Setting[str] = Setting(
    "KEY_SERVICE_URL", REQUIRED,
    "key_service, whose subscriber feed it catches up and fills gaps from, and whose verify "
    "keys it trusts")
TOKEN: Setting[str] = Setting(
    "APIKEYS_TOKEN", REQUIRED, "a management token with the `events:read` scope, for the feed")
PINNED_KEYS: Setting[str | None] = Setting(
    shared.VERIFY_KEYS.name, None,
    "base64 Ed25519 verify keys, comma separated, to trust instead of those key_service "
    "publishes at `/api/v1/verify-keys`")
# Re-reading the published verify keys for an unknown signer: at most this often, so that forged
# events cannot make the subscriber hammer key_service.
KEYS_REFRESH_SECONDS = 5.0
AFTER: Setting[int] = Setting(
    "APIKEYS_SUBSCRIBER_AFTER", 0,
    "the sequence already applied (a real subscriber stores it)", 0)

SETTINGS = Catalogue.of("example subscriber", (
    "`examples/subscriber.py` ([events.md](events.md#the-example-subscriber))."
), (shared.RABBITMQ_URL, shared.EXCHANGE, QUEUE, PREFETCH, KEY_SERVICE_URL, TOKEN, PINNED_KEYS,
    AFTER))


@dataclass(frozen=True)
class SubscriberConfig:
    """What the subscriber reads from the environment."""

    rabbitmq_url: str = field(repr=False)
    exchange: str
    queue: str
    key_service_url: str
    token: str = field(repr=False)
    pinned: Verifier | None = field(default=None, repr=False)
    prefetch: int = PREFETCH.default
    after: int = AFTER.default


def load_config(environ: Mapping[str, str]) -> SubscriberConfig:
    """Read the subscriber's variables; ConfigError names a missing or bad one."""
    env = Env(environ)
    pinned = PINNED_KEYS.optional(env)
    return SubscriberConfig(
        rabbitmq_url=check_rabbitmq_url(shared.RABBITMQ_URL.text(env)),
        exchange=shared.EXCHANGE.text(env),
        queue=QUEUE.text(env),
        key_service_url=KEY_SERVICE_URL.url(env, ("http", "https")).rstrip("/"),
        token=TOKEN.text(env),
        pinned=None if pinned is None else shared.verifiers(pinned),
        prefetch=PREFETCH.integer(env),
        after=AFTER.integer(env),
    )


class TrustedKeys:
    """The verify keys events are checked against: pinned, or key_service's published ones.

    Published keys are read at start and again when an event names a key not held (a rotation
    of key_service's signing key), at most every KEYS_REFRESH_SECONDS for such events.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str,
                 pinned: Verifier | None) -> None:
        self._session = session
        self._url = f"{base_url}/api/v1/verify-keys"
        self._verifier = pinned
        self._pinned = pinned is not None
        self._refreshed_at = -KEYS_REFRESH_SECONDS

    async def load(self) -> None:
        """Read the published keys (nothing when pinned); raises FEED_ERRORS on failure."""
        if self._pinned:
            return
        async with self._session.get(self._url) as response:
            if response.status != 200:
                raise FeedError(f"verify keys answered {response.status}")
            keys = (await response.json())["keys"]
        self._verifier = Verifier.from_base64([key["public_key"] for key in keys])

    async def ready(self) -> None:
        """Make sure keys are held (the first catch-up calls this, and waits out failures)."""
        if self._verifier is None:
            await self.load()

    async def verify(self, signed: SignedEvent) -> PublicEvent:
        """``signed``, verified and parsed; SignatureError or EnvelopeError if it is not good."""
        assert self._verifier is not None, "ready() first"
        now = asyncio.get_running_loop().time()
        if (signed.signing_key not in self._verifier.key_ids and not self._pinned
                and now - self._refreshed_at >= KEYS_REFRESH_SECONDS):
            self._refreshed_at = now
            log.info("an event names signing key %s: reading key_service's verify keys again",
                     signed.signing_key[:16])
            with contextlib.suppress(*FEED_ERRORS):
                await self.load()
        return verify_public(signed, self._verifier)


class KeyView:
    """The subscriber's own view of the keys, and the highest sequence applied to it.

    Events are totally ordered by ``sequence``. A real service would keep this (and the
    sequence) in its own database, so that after a restart it asks the feed only for what came
    after it.
    """

    def __init__(self, after: int = 0) -> None:
        self.sequence = after
        self.status: dict[str, str] = {}

    def is_new(self, event: PublicEvent) -> bool:
        """False for a duplicate or an event already replayed from the feed."""
        return event.sequence > self.sequence

    def is_next(self, event: PublicEvent) -> bool:
        """True when no event is missing between what was applied and ``event``."""
        return event.sequence == self.sequence + 1

    def apply(self, event: PublicEvent) -> bool:
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
    """key_service's subscriber feed: ``GET /api/v1/events?after=SEQ`` (signed events)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str,
                 keys: TrustedKeys) -> None:
        self._session = session
        self._url = f"{base_url}/api/v1/events"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._keys = keys

    async def after(self, sequence: int) -> list[PublicEvent]:
        """Every event after ``sequence`` that exists now, verified, in order."""
        await self._keys.ready()
        events: list[PublicEvent] = []
        while True:
            params = {"after": str(sequence), "limit": "500"}
            async with self._session.get(self._url, params=params,
                                         headers=self._headers) as response:
                if response.status != 200:
                    raise FeedError(f"feed answered {response.status}: {await response.text()}")
                page = await response.json()
            entries = page["events"]
            for entry in entries:
                event = await self._keys.verify(SignedEvent.from_json(entry))
                events.append(event)
                sequence = event.sequence
            if not entries or sequence >= int(page["last_sequence"]):
                return events


class FeedError(Exception):
    """The feed could not be read."""


# What reading the feed may fail with while key_service is away or misconfigured: waited out.
FEED_ERRORS = (FeedError, aiohttp.ClientError, TimeoutError, SignatureError, EnvelopeError,
               ValueError, KeyError)


class Backoff:
    """Pauses between attempts: RETRY_FIRST, doubling up to RETRY_MAX; cut short by ``stop``."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._delay = RETRY_FIRST

    async def wait(self) -> bool:
        """Pause before the next attempt; False when the subscriber is stopping instead."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self._delay)
        self._delay = min(self._delay * 2, RETRY_MAX)
        return not self._stop.is_set()


async def catch_up(feed: Feed, view: KeyView, through: int | None, stop: asyncio.Event) -> bool:
    """Apply the feed's events after ``view.sequence`` (up to ``through`` - 1 when given) until
    none is missing below ``through``; False if stopped first. Waits out every failure."""
    backoff = Backoff(stop)
    while True:
        try:
            for event in await feed.after(view.sequence):
                if through is None or event.sequence < through:
                    view.apply(event)
        except FEED_ERRORS as exc:
            log.error("cannot read key_service's feed (%s: %s); trying again",
                      type(exc).__name__, exc)
        else:
            if through is None or view.sequence >= through - 1:
                return True
            log.warning("the feed does not hold events %d to %d yet; reading it again",
                        view.sequence + 1, through - 1)
        if not await backoff.wait():
            return False


async def settle(message: aio_pika.abc.AbstractIncomingMessage, *, accept: bool) -> None:
    """Acknowledge (or reject for good); a lost channel only means the message comes again."""
    try:
        if accept:
            await message.ack()
        else:
            await message.reject(requeue=False)
    except AMQP_ERRORS as exc:
        log.warning("could not settle message %s (%s); it will be delivered again",
                    message.message_id, type(exc).__name__)


def describe(event: PublicEvent) -> str:
    """One JSON line naming what happened (never a secret: events carry none)."""
    record = event.record
    return json.dumps({
        "event_id": event.id,
        "type": event.type,
        "sequence": event.sequence,
        "key_id": record.key_id,
        "name": record.name,
        "status": record.status,
        "issued_at": format_time(record.issued_at),
        "revoked_at": None if record.revoked_at is None else format_time(record.revoked_at),
        # Set on a rolled key: from then on it no longer authenticates (docs/events.md).
        "revokes_at": None if record.revokes_at is None else format_time(record.revokes_at),
    }, sort_keys=True)


async def handle(message: aio_pika.abc.AbstractIncomingMessage, keys: TrustedKeys,
                 view: KeyView, feed: Feed, stop: asyncio.Event) -> None:
    """Verify, fill a gap from the feed, apply once, acknowledge; reject what does not verify."""
    try:
        event = await keys.verify(SignedEvent.from_amqp(message.body, dict(message.headers)))
    except (SignatureError, EnvelopeError) as exc:
        log.warning("rejected message %s: %s", message.message_id, exc)
        await settle(message, accept=False)
        return
    if view.is_new(event) and not view.is_next(event):
        log.info("events %d to %d were missed: reading them from the feed",
                 view.sequence + 1, event.sequence - 1)
        if not await catch_up(feed, view, event.sequence, stop):
            return  # stopping: the message, never acknowledged, stays on the queue
    if not view.apply(event):
        log.info("ignored duplicate or replayed event %s (sequence %d)", event.id,
                 event.sequence)
    await settle(message, accept=True)


async def connect(brokers: BrokerAddresses,
                  stop: asyncio.Event) -> aio_pika.abc.AbstractConnection | None:
    """A connection to a node of ``RABBITMQ_URL`` (after a loss, the next node first); None if
    stopped before one could be made."""
    backoff = Backoff(stop)
    while True:
        try:
            return await brokers.connect(timeout=10)
        except AMQP_ERRORS as exc:
            log.error("cannot connect to RabbitMQ (%s); trying again", type(exc).__name__)
        if not await backoff.wait():
            return None


async def bind(connection: aio_pika.abc.AbstractConnection,
               config: SubscriberConfig) -> aio_pika.abc.AbstractQueue:
    """Declare the exchange and the subscriber's queue, and bind them."""
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
    return queue


async def listen(connection: aio_pika.abc.AbstractConnection, queue: aio_pika.abc.AbstractQueue,
                 keys: TrustedKeys, view: KeyView, feed: Feed, stop: asyncio.Event) -> None:
    """Handle messages one by one until ``stop``; ConnectionError when the connection is lost."""

    async def loop() -> None:
        async with queue.iterator() as messages:
            async for message in messages:
                await handle(message, keys, view, feed, stop)

    consumer = asyncio.create_task(loop())
    stopper = asyncio.create_task(stop.wait())
    lost = asyncio.ensure_future(connection.closed())
    try:
        await asyncio.wait({consumer, stopper, lost}, return_when=asyncio.FIRST_COMPLETED)
        if consumer.done():
            consumer.result()  # an AMQP error reconnects; anything else ends the subscriber
        if not stopper.done():
            raise ConnectionError("the connection to RabbitMQ was closed")
    finally:
        for task in (consumer, stopper, lost):
            task.cancel()
        await asyncio.gather(consumer, stopper, lost, return_exceptions=True)


async def consume(config: SubscriberConfig, stop: asyncio.Event,
                  session: aiohttp.ClientSession) -> None:
    """Bind the queue, catch up from the feed, then handle messages one by one until ``stop``.

    After a lost connection it connects again (to the next node of a cluster), declares and
    binds again, and goes on: the durable queue kept every event published meanwhile, and a
    message left unacknowledged comes again, to be dropped as a duplicate.
    """
    brokers = BrokerAddresses(config.rabbitmq_url)
    view = KeyView(config.after)
    keys = TrustedKeys(session, config.key_service_url, config.pinned)
    feed = Feed(session, config.key_service_url, config.token, keys)
    caught_up = False
    backoff = Backoff(stop)
    while not stop.is_set():
        connection = await connect(brokers, stop)
        if connection is None:
            return
        try:
            queue = await bind(connection, config)
            # The queue is bound first, so an event is either in this catch-up or in the queue
            # (or both: the sequence check drops the second copy).
            if not caught_up:
                if not await catch_up(feed, view, None, stop):
                    return
                caught_up = True
            log.info("listening on queue %s bound to exchange %s (after sequence %d)",
                     config.queue, config.exchange, view.sequence)
            backoff = Backoff(stop)  # it consumed: a later loss starts from a short pause
            await listen(connection, queue, keys, view, feed, stop)
        except AMQP_ERRORS as exc:
            log.warning("lost RabbitMQ (%s); connecting again", type(exc).__name__)
        finally:
            with contextlib.suppress(*AMQP_ERRORS):
                async with asyncio.timeout(5):
                    await connection.close()
        # A pause, growing while every attempt fails (a queue the broker refuses to declare,
        # say), so that the loop never spins.
        await backoff.wait()


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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(config, stop)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
