"""The event consumer and synchronizer against the real RabbitMQ and Redis (through fault proxies).

The key store is the real one over the real Redis. key_service's internal routes are served by a
small stand-in over real HTTP (``FeedStandIn``) so that each test can decide exactly which events
the feed holds, including ones that never reach the broker; the end-to-end suite runs the real
key_service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from apikeys_shared.config import Env, load_secrets
from apikeys_shared.events import Event, KeyRecord, SignedEvent
from apikeys_shared.keys import new_key_id
from apikeys_shared.signing import Signer, generate_signing_key
from auth_gateway.consumer import EventConsumer
from auth_gateway.errors import VerificationUnavailable
from auth_gateway.key_service_client import KeyServiceClient
from auth_gateway.keystore import KeyStore
from auth_gateway.metrics import Metrics
from auth_gateway.sync import Synchronizer, SyncSettings
from tests.conftest import AmqpNames
from tests.support.faultproxy import FaultProxy
from tests.support.services import RABBITMQ, REDIS

DEADLINE = 20.0
POLL = 0.2


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (generously bounded) until ``check`` holds."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {DEADLINE}s: {what}")


@dataclass
class FeedStandIn:
    """key_service's ``/internal/v1`` routes over a list of signed events."""

    token: str
    events: list[SignedEvent] = field(default_factory=list)
    fetches: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/internal/v1/events", self._events)
        app.router.add_get("/internal/v1/keys/{key_id}", self._key)
        return app

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    async def _events(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if not self._authorized(request):
            return web.json_response({"title": "Unauthorized"}, status=401)
        after, limit = int(request.query["after"]), int(request.query["limit"])
        ordered = sorted(self.events, key=lambda s: Event.from_bytes(s.body).sequence)
        chosen = [s for s in ordered if Event.from_bytes(s.body).sequence > after][:limit]
        last = max((Event.from_bytes(s.body).sequence for s in self.events), default=0)
        return web.json_response(
            {"events": [s.to_json() for s in chosen], "last_sequence": last}
        )

    async def _key(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"title": "Unauthorized"}, status=401)
        found = [
            s for s in self.events
            if Event.from_bytes(s.body).record.key_id == request.match_info["key_id"]
        ]
        if not found:
            return web.json_response({"title": "Not Found"}, status=404)
        return web.json_response(found[-1].to_json())


@dataclass
class Rig:
    signer: Signer
    feed: FeedStandIn
    store: KeyStore
    sync: Synchronizer
    consumer: EventConsumer
    metrics: Metrics
    redis: aioredis.Redis
    amqp: aio_pika.abc.AbstractConnection
    exchange: aio_pika.abc.AbstractExchange
    rabbit_proxy: FaultProxy
    redis_proxy: FaultProxy
    feed_client: KeyServiceClient
    settings: SyncSettings
    sequence: int = 0

    def record(self, key_id: str | None = None, *, revoked: bool = False) -> SignedEvent:
        """A signed event at the next sequence (not yet in the feed nor published)."""
        self.sequence += 1
        now = datetime.now(UTC)
        record = KeyRecord(
            key_id=key_id or new_key_id(), name="k", status="revoked" if revoked else "active",
            issued_at=now, revoked_at=now if revoked else None, secret_hash="cd" * 32,
            hash_version="p1",
        )
        event = Event.for_record(record, sequence=self.sequence, source="urn:t")
        return SignedEvent.sign(event, self.signer)

    async def publish(self, signed: SignedEvent, *, headers: dict[str, str] | None = None,
                      routing_key: str | None = None) -> None:
        """Publish to the test's exchange, as key_service's relay does."""
        if routing_key is None:
            routing_key = Event.from_bytes(signed.body).routing_key
        message = aio_pika.Message(
            signed.body, headers=signed.amqp_headers if headers is None else headers,
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.exchange.publish(message, routing_key=routing_key)

    async def held_status(self, key_id: str) -> str | None:
        """The status of the record Redis holds for ``key_id`` (straight from Redis)."""
        raw = await self.redis.get(self.store.redis_key(key_id))
        if raw is None:
            return None
        return Event.from_bytes(SignedEvent.from_text(raw).body).record.status

    def count(self, name: str, labels: dict[str, str]) -> float:
        return self.metrics.registry.get_sample_value(f"{name}_total", labels) or 0.0


@pytest.fixture
def sync_overrides() -> dict[str, float]:
    """SyncSettings fields a test changes (parametrize this fixture by name to set them)."""
    return {}


@pytest.fixture
async def rig(
    secrets_env: dict[str, str], redis_client: aioredis.Redis, redis_prefix: str,
    amqp_names: AmqpNames, rabbitmq_url: str, aiohttp_server: AiohttpServer,
    fault_proxy: Callable[[str, int], FaultProxy], sync_overrides: dict[str, float],
) -> AsyncIterator[Rig]:
    secrets = load_secrets(Env(secrets_env), signer=True, verifier=True)
    assert secrets.signer is not None
    assert secrets.verifier is not None
    feed = FeedStandIn(secrets.internal_token)
    server = await aiohttp_server(feed.app())
    rabbit_proxy = fault_proxy(*RABBITMQ.address)
    redis_proxy = fault_proxy(*REDIS.address)
    redis = aioredis.Redis(
        host="127.0.0.1", port=redis_proxy.port, socket_timeout=0.5,
        socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0),
    )
    metrics = Metrics()
    settings = SyncSettings(
        rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{rabbit_proxy.port}/",
        exchange=amqp_names.exchange, queue_prefix=amqp_names.prefix, feed_poll_interval=POLL,
        amqp_timeout=3.0, **sync_overrides,  # type: ignore[arg-type]
    )
    amqp = await aio_pika.connect(rabbitmq_url, timeout=10)
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        amqp_names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    async with aiohttp.ClientSession() as session:
        client = KeyServiceClient(
            session, str(server.make_url("/")), secrets.internal_token, timeout=2.0
        )
        store = KeyStore(
            redis=redis, key_service=client, verifier=secrets.verifier, metrics=metrics,
            prefix=redis_prefix,
        )
        sync = Synchronizer(
            sink=store, feed=client, settings=settings, metrics=metrics, synced=asyncio.Event(),
            feed_read=asyncio.Event(),
        )
        consumer = EventConsumer(
            sync, url=settings.rabbitmq_url, exchange=settings.exchange,
            queue_prefix=settings.queue_prefix, timeout=settings.amqp_timeout,
        )
        sync.on_missed_delivery = consumer.resubscribe
        tasks = [asyncio.create_task(sync.run_feed_loop()), asyncio.create_task(consumer.run())]
        try:
            yield Rig(
                secrets.signer, feed, store, sync, consumer, metrics, redis_client, amqp,
                exchange, rabbit_proxy, redis_proxy, client, settings,
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.close()
            await amqp.close()
            await redis.aclose()


async def subscribed(rig: Rig) -> None:
    async def check() -> bool:
        return rig.sync.subscribed and not rig.sync.catch_up_pending
    await eventually(check, "the consumer subscribed and caught up")


async def issued_in_redis(rig: Rig) -> str:
    """Publish a new key's issued event (in the feed too); its key ID once Redis holds it."""
    issued = rig.record()
    key_id = Event.from_bytes(issued.body).record.key_id
    rig.feed.events.append(issued)
    await rig.publish(issued)

    async def active() -> bool:
        return await rig.held_status(key_id) == "active"
    await eventually(active, "the issued record reached Redis")
    return key_id


async def test_published_events_are_applied_to_redis(rig: Rig) -> None:
    await subscribed(rig)
    key_id = await issued_in_redis(rig)

    revoked = rig.record(key_id, revoked=True)
    rig.feed.events.append(revoked)
    await rig.publish(revoked)

    async def gone() -> bool:
        return await rig.held_status(key_id) == "revoked"
    await eventually(gone, "the revocation reached Redis")
    assert rig.sync.tracker.applied == 2
    assert rig.count("gateway_events", {"source": "amqp", "outcome": "applied"}) == 2


async def test_forged_unsigned_and_malformed_messages_are_dropped_and_counted(rig: Rig) -> None:
    await subscribed(rig)
    key_id = await issued_in_redis(rig)

    # An attacker with write access to the broker tries to revive or replace the key.
    seed, _ = generate_signing_key()
    stranger = Signer.from_base64(seed)
    revoked = rig.record(key_id, revoked=True)
    forged = SignedEvent.sign(Event.from_bytes(revoked.body), stranger)
    await rig.publish(forged)
    await rig.publish(revoked, headers={})
    await rig.publish(
        SignedEvent(b"{not json", rig.signer.sign(b"{not json"), rig.signer.key_id),
        routing_key="key.revoked",
    )
    # A valid event after them, so that we know the three were consumed.
    marker = rig.record()
    rig.feed.events.append(marker)
    await rig.publish(marker)
    marker_id = Event.from_bytes(marker.body).record.key_id

    async def marker_seen() -> bool:
        return await rig.held_status(marker_id) == "active"
    await eventually(marker_seen, "the marker event reached Redis")

    assert await rig.held_status(key_id) == "active"
    rejected = rig.count("gateway_events", {"source": "amqp", "outcome": "rejected"})
    # Exactly three: a requeued message would have come back again and again.
    assert rejected == 3
    assert rig.count("gateway_rejected_records", {"origin": "event", "reason": "signature"}) == 2
    assert rig.count("gateway_rejected_records", {"origin": "event", "reason": "malformed"}) == 1


async def test_a_revocation_signed_by_a_rotated_key_the_gateway_lacks_stops_the_key(
    rig: Rig,
) -> None:
    # key_service's signing key rotated before this gateway was given the new verify key. The
    # revocation (over the broker, and in the feed) cannot be verified, so it is not applied;
    # but the key must not go on working from L1 and Redis: it is refused until the gateway
    # can verify key_service's answer for it.
    await subscribed(rig)
    key_id = await issued_in_redis(rig)
    assert await rig.store.lookup(key_id) is not None  # in use: L1 holds it
    rotated = Signer.from_base64(generate_signing_key()[0])
    revoked = SignedEvent.sign(Event.from_bytes(rig.record(key_id, revoked=True).body), rotated)
    rig.feed.events.append(revoked)
    await rig.publish(revoked)

    async def rejected() -> bool:
        return rig.count("gateway_events", {"source": "amqp", "outcome": "rejected"}) == 1
    await eventually(rejected, "the revocation was consumed and rejected")
    assert await rig.held_status(key_id) == "active"  # never applied
    with pytest.raises(VerificationUnavailable):
        await rig.store.lookup(key_id)


async def test_a_gap_is_filled_from_the_feed(rig: Rig) -> None:
    await subscribed(rig)
    first, missed, third = rig.record(), rig.record(revoked=True), rig.record()
    rig.feed.events.extend([first, missed, third])
    await rig.publish(first)
    await rig.publish(third)  # ``missed`` never reaches the broker
    missed_id = Event.from_bytes(missed.body).record.key_id

    async def filled() -> bool:
        return await rig.held_status(missed_id) == "revoked" and rig.sync.tracker.applied == 3
    await eventually(filled, "the missed event was read from the feed")


async def test_without_rabbitmq_the_feed_is_polled_and_it_resubscribes(rig: Rig) -> None:
    await subscribed(rig)
    key_id = await issued_in_redis(rig)

    rig.rabbit_proxy.cut()

    async def unsubscribed() -> bool:
        return not rig.sync.subscribed
    await eventually(unsubscribed, "the consumer noticed the broker is gone")

    # Revoked while the broker is away: only the feed can tell this process.
    rig.feed.events.append(rig.record(key_id, revoked=True))

    async def revoked() -> bool:
        return await rig.held_status(key_id) == "revoked"
    await eventually(revoked, "the revocation arrived through the feed poll")

    rig.rabbit_proxy.restore()

    async def back() -> bool:
        return rig.sync.subscribed and rig.consumer.connects >= 2
    await eventually(back, "the consumer re-subscribed")
    later = rig.record()
    rig.feed.events.append(later)
    await rig.publish(later)
    later_id = Event.from_bytes(later.body).record.key_id

    async def later_seen() -> bool:
        return await rig.held_status(later_id) == "active"
    await eventually(later_seen, "events flow through the broker again")


async def test_a_revocation_while_redis_is_away_is_stored_once_redis_returns(rig: Rig) -> None:
    await subscribed(rig)
    key_id = await issued_in_redis(rig)

    rig.redis_proxy.cut()
    revoked = rig.record(key_id, revoked=True)
    rig.feed.events.append(revoked)
    await rig.publish(revoked)

    async def deferred() -> bool:
        return rig.count("gateway_events", {"source": "amqp", "outcome": "deferred"}) >= 1
    await eventually(deferred, "the revocation could not be stored")
    # The process itself already refuses the key: its L1 holds the revoked record.
    record = await rig.store.lookup(key_id)
    assert record is not None
    assert record.status == "revoked"

    rig.redis_proxy.restore()

    async def stored() -> bool:
        return await rig.held_status(key_id) == "revoked"
    await eventually(stored, "the feed catch-up stored the revocation once Redis returned")



async def test_a_revocation_not_yet_stored_is_not_undone_by_the_stale_redis_record(
    rig: Rig,
) -> None:
    # Deterministic: the events go through a synchronizer of their own whose feed loop does not
    # run, so the window between Redis coming back and the catch-up stays open.
    own = Synchronizer(
        sink=rig.store, feed=rig.feed_client, settings=rig.settings, metrics=rig.metrics,
        synced=asyncio.Event(), feed_read=asyncio.Event(),
    )
    issued = rig.record()
    key_id = Event.from_bytes(issued.body).record.key_id
    assert await own.handle(issued, "amqp") == "applied"
    rig.redis_proxy.cut()
    revoked = rig.record(key_id, revoked=True)
    assert await own.handle(revoked, "amqp") == "deferred"
    assert own.catch_up_pending
    rig.redis_proxy.restore()
    # The revoked record leaves L1 (by its TTL or LRU pressure; evicted here, so as not to wait
    # 30 s), and the store's pause after a Redis error passes.
    rig.store.evict(key_id)
    await asyncio.sleep(1.2)
    record = await rig.store.lookup(key_id)
    assert record is not None
    assert record.status == "revoked"


async def test_rejected_messages_go_to_the_dead_letter_exchange_when_one_is_set(
    rig: Rig, amqp_names: AmqpNames, rabbitmq_url: str
) -> None:
    channel = await rig.amqp.channel()
    dlx = await channel.declare_exchange(
        f"{amqp_names.prefix}.dlx", aio_pika.ExchangeType.FANOUT, auto_delete=True
    )
    dead = await channel.declare_queue(amqp_names.queue("dead"), auto_delete=True)
    await dead.bind(dlx)
    own = Synchronizer(
        sink=rig.store, feed=rig.feed_client, settings=rig.settings, metrics=rig.metrics,
        synced=asyncio.Event(), feed_read=asyncio.Event(),
    )
    consumer = EventConsumer(
        own, url=rabbitmq_url, exchange=amqp_names.exchange,
        queue_prefix=f"{amqp_names.prefix}.dl", timeout=3.0, dead_letter_exchange=dlx.name,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: _true(own.subscribed), "the second consumer subscribed")
        issued = rig.record()
        await rig.publish(issued, headers={})  # unsigned
        message = None

        async def dead_lettered() -> bool:
            nonlocal message
            message = await dead.get(fail=False)
            return message is not None
        await eventually(dead_lettered, "the unsigned message reached the dead-letter queue")
        assert message is not None
        assert message.body == issued.body
        await message.ack()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.close()
        await channel.close()


async def _true(value: bool) -> bool:
    return value


async def test_a_silent_broker_is_noticed_and_the_feed_takes_over(
    rig: Rig, amqp_names: AmqpNames
) -> None:
    # The broker stops answering without closing anything (a hung peer or a dead network
    # path): only the AMQP heartbeat can tell, here one second.
    own = Synchronizer(
        sink=rig.store, feed=rig.feed_client, settings=rig.settings, metrics=rig.metrics,
        synced=asyncio.Event(), feed_read=asyncio.Event(),
    )
    consumer = EventConsumer(
        own, url=f"{rig.settings.rabbitmq_url}?heartbeat=1", exchange=amqp_names.exchange,
        queue_prefix=f"{amqp_names.prefix}.hb", timeout=3.0,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: _true(own.subscribed), "the consumer subscribed")
        rig.rabbit_proxy.blackhole()
        await eventually(lambda: _true(not own.subscribed), "the silent broker was noticed")
        # Without the broker, the synchronizer asks for the feed (its loop would poll it).
        assert own.catch_up_pending
    finally:
        rig.rabbit_proxy.restore()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.close()


async def test_a_lost_broker_is_left_for_the_next_address_of_a_cluster(
    rig: Rig, amqp_names: AmqpNames, fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    # Two addresses of one broker stand for two nodes of a cluster: the first one dies, and
    # the consumer subscribes through the second at once, without waiting for the first.
    second = fault_proxy(*RABBITMQ.address)
    own = Synchronizer(
        sink=rig.store, feed=rig.feed_client, settings=rig.settings, metrics=rig.metrics,
        synced=asyncio.Event(), feed_read=asyncio.Event(),
    )
    consumer = EventConsumer(
        own, url=f"amqp://guest:guest@127.0.0.1:{rig.rabbit_proxy.port},"
                 f"127.0.0.1:{second.port}/",
        exchange=amqp_names.exchange, queue_prefix=f"{amqp_names.prefix}.two", timeout=3.0,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: _true(own.subscribed), "the consumer subscribed")
        assert second.connections_accepted == 0
        rig.rabbit_proxy.cut()
        await eventually(lambda: _true(consumer.connects == 2 and own.subscribed),
                         "the consumer subscribed through the second address")
        assert second.connections_accepted == 1
        issued = rig.record()
        rig.feed.events.append(issued)
        await rig.publish(issued)
        key_id = Event.from_bytes(issued.body).record.key_id

        async def applied() -> bool:
            return await rig.held_status(key_id) == "active"
        await eventually(applied, "an event published after the loss was applied")
    finally:
        rig.rabbit_proxy.restore()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.close()


@pytest.mark.parametrize(
    "sync_overrides", [{"safety_poll_interval": 0.3, "missed_delivery_age": 0.5}],
)
async def test_a_subscription_that_stopped_receiving_is_found_and_renewed(rig: Rig) -> None:
    # The exchange deleted and declared again: the queue stays, its bindings are gone, and
    # the broker tells the consumer nothing. The safety read of the feed applies what the
    # broker no longer brings, and when the broker has still not delivered it a moment
    # later, the consumer subscribes afresh.
    await subscribed(rig)
    key_id = await issued_in_redis(rig)
    channel = await rig.amqp.channel()
    await channel.exchange_delete(rig.settings.exchange)
    rig.exchange = await channel.declare_exchange(
        rig.settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    revoked = rig.record(key_id, revoked=True)
    rig.feed.events.append(revoked)
    await rig.publish(revoked)  # reaches no queue

    async def revoked_in_l1() -> bool:
        held = rig.store.cached(key_id)
        return held is not None and not held.record.active
    await eventually(revoked_in_l1, "the revocation applied from the feed")

    async def renewed() -> bool:
        return rig.consumer.connects == 2 and rig.sync.subscribed
    await eventually(renewed, "a fresh subscription")
    assert rig.count("gateway_events", {"source": "feed", "outcome": "missed_by_amqp"}) == 1
    # The broker delivers again.
    before = rig.count("gateway_events", {"source": "amqp", "outcome": "applied"})
    later = rig.record()
    rig.feed.events.append(later)
    await rig.publish(later)

    async def delivered() -> bool:
        return rig.count("gateway_events", {"source": "amqp", "outcome": "applied"}) > before
    await eventually(delivered, "an event delivered by the broker after renewal")
    assert rig.consumer.connects == 2


@pytest.mark.parametrize(
    "sync_overrides", [{"safety_poll_interval": 0.05, "missed_delivery_age": 0.5}],
)
async def test_events_the_broker_delivers_after_the_feed_do_not_count_as_missed(
    rig: Rig,
) -> None:
    # The feed is read first (the event is in it before it is published), the broker
    # delivers it a moment later: that is no missed delivery, however often the feed is read.
    await subscribed(rig)
    signed = rig.record()
    rig.feed.events.append(signed)
    await eventually(
        lambda: _true(rig.sync.tracker.applied == rig.sequence), "applied from the feed")
    await rig.publish(signed)
    await eventually(
        lambda: _true(rig.count("gateway_events", {"source": "amqp", "outcome": "applied"}) == 1),
        "delivered by the broker too")
    await asyncio.sleep(1.0)  # twice the missed-delivery age, twenty safety reads
    assert rig.consumer.connects == 1
    assert rig.count("gateway_events", {"source": "feed", "outcome": "missed_by_amqp"}) == 0


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize(
    "sync_overrides", [{"safety_poll_interval": 0.3, "missed_delivery_age": 0.5}],
)
async def test_an_event_the_broker_delivers_while_a_feed_read_is_on_its_way_is_not_missed(
    rig: Rig,
) -> None:
    # key_service commits, a safety read of the feed sees the event, and the broker's copy is
    # applied before that feed page is: the page's copy is stale, not a missed delivery.
    await subscribed(rig)
    signed = rig.record()
    real = rig.feed_client
    published = asyncio.Event()

    class BrokerFirst:
        async def fetch_events(self, after: int, limit: int = 500) -> Any:
            page = await real.fetch_events(after=after, limit=limit)
            if page.events and not published.is_set():
                published.set()
                before = rig.count("gateway_events", {"source": "amqp", "outcome": "applied"})
                await rig.publish(signed)

                async def delivered() -> bool:
                    return rig.count(
                        "gateway_events", {"source": "amqp", "outcome": "applied"}) > before
                await eventually(delivered, "the broker's copy applied first")
            return page

    rig.sync._feed = BrokerFirst()
    rig.feed.events.append(signed)
    await eventually(lambda: _true(published.is_set()), "a safety read saw the event")
    await asyncio.sleep(1.5)  # three more safety reads, well past the missed-delivery age
    assert rig.count("gateway_events", {"source": "feed", "outcome": "missed_by_amqp"}) == 0
    assert rig.consumer.connects == 1
