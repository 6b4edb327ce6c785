"""The relay against the real RabbitMQ, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from key_service.config import KeyServiceConfig
from key_service.db import create_engine, migrate_async
from key_service.metrics import Metrics
from key_service.models import OutboxEvent
from key_service.relay import Relay
from tests.support.faultproxy import FaultProxy

from .conftest import Subscriber, eventually, insert_rows, outbox_row


def _value(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def _unsent(engine: AsyncEngine) -> int:
    async with AsyncSession(engine) as session:
        return int((await session.execute(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.sent_at.is_(None))
        )).scalar_one())


@asynccontextmanager
async def running(
    engine: AsyncEngine, config: KeyServiceConfig, **options: float,
) -> AsyncIterator[tuple[Relay, asyncio.Event, Metrics]]:
    """A started relay; stopped (and its connections closed) on exit."""
    wakeup, metrics = asyncio.Event(), Metrics()
    relay = Relay(engine=engine, config=config, metrics=metrics, wakeup=wakeup, **options)  # type: ignore[arg-type]
    await relay.start()
    try:
        yield relay, wakeup, metrics
    finally:
        await relay.stop()


async def test_events_arrive_in_order_persistent_signed_and_marked_sent(
    engine: AsyncEngine, config: KeyServiceConfig, subscriber: Subscriber,
) -> None:
    rows = [outbox_row() for _ in range(20)]
    rows += [outbox_row(r.key_id, "revoked") for r in rows[:5]]
    await insert_rows(engine, rows)
    async with running(engine, config) as (_relay, _wakeup, metrics):
        await subscriber.wait_for(25)
        await eventually(lambda: _no_backlog(engine))
        await eventually(lambda: _gauge_is(metrics, 0))
        assert _value(metrics, "key_service_events_published_total") == 25
    assert len(subscriber.received) == 25
    assert [r.event.sequence for r in subscriber.received] == list(range(1, 26))
    assert [r.event.id for r in subscriber.received] == [r.event_id for r in rows]
    for item in subscriber.received:
        assert item.message_id == item.event.id
        assert item.delivery_mode == 2
        assert item.content_type == "application/cloudevents+json"
        assert item.routing_key == (
            "key.revoked" if item.event.record.status == "revoked" else "key.issued"
        )


async def _no_backlog(engine: AsyncEngine) -> bool:
    return await _unsent(engine) == 0


async def _gauge_is(metrics: Metrics, value: float) -> bool:
    return _value(metrics, "key_service_outbox_backlog") == value


async def test_a_wakeup_publishes_without_waiting_for_the_timer(
    engine: AsyncEngine, config: KeyServiceConfig, subscriber: Subscriber,
) -> None:
    # With an hour between timer rounds, only the wake-up can make the relay publish.
    async with running(engine, config, poll_interval=3600) as (_relay, wakeup, _metrics):
        await eventually(lambda: _idle(wakeup))
        for n in range(1, 4):
            await insert_rows(engine, [outbox_row()])
            wakeup.set()
            await subscriber.wait_for(n, timeout=20)


async def _idle(wakeup: asyncio.Event) -> bool:
    return not wakeup.is_set()


async def test_unroutable_events_are_counted_and_not_retried_for_ever(
    engine: AsyncEngine, config: KeyServiceConfig,
) -> None:
    """No queue is bound: the broker returns the messages; the outbox does not stall on them."""
    await insert_rows(engine, [outbox_row() for _ in range(3)])
    async with running(engine, config) as (_relay, _wakeup, metrics):
        await eventually(lambda: _no_backlog(engine))
        assert _value(metrics, "key_service_relay_errors_total") >= 3  # one per return
        assert _value(metrics, "key_service_events_published_total") == 3


async def test_a_row_is_marked_sent_only_after_the_broker_confirms(
    sqlite_url: str, config: KeyServiceConfig, subscriber: Subscriber,
    fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    await migrate_async(sqlite_url)
    engine = create_engine(sqlite_url)
    proxy = fault_proxy("127.0.0.1", 5672)
    config = replace(config, rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
    try:
        async with running(engine, config, publish_timeout=0.5, max_backoff=0.5) as (
            _relay, wakeup, metrics,
        ):
            await insert_rows(engine, [outbox_row()])
            wakeup.set()
            await subscriber.wait_for(1)
            await eventually(lambda: _no_backlog(engine))

            # The broker gets nothing and confirms nothing: the row must stay unsent.
            proxy.blackhole()
            await insert_rows(engine, [outbox_row()])
            wakeup.set()
            await eventually(lambda: _errors_at_least(metrics, 1))
            assert await _unsent(engine) == 1

            proxy.cut()
            proxy.restore()
            await subscriber.wait_for(2)
            await eventually(lambda: _no_backlog(engine))
        assert [e.sequence for e in subscriber.unique()] == [1, 2]
    finally:
        await engine.dispose()


async def test_a_relay_that_lost_its_broker_publishes_through_the_next_address(
    sqlite_url: str, config: KeyServiceConfig, subscriber: Subscriber,
    fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    # Two addresses of one broker stand for two nodes of a cluster. The first one dies for
    # good: the relay publishes through the second, from the first unconfirmed event.
    await migrate_async(sqlite_url)
    engine = create_engine(sqlite_url)
    first, second = fault_proxy("127.0.0.1", 5672), fault_proxy("127.0.0.1", 5672)
    config = replace(config, rabbitmq_url=(
        f"amqp://guest:guest@127.0.0.1:{first.port},127.0.0.1:{second.port}/"
    ))
    try:
        async with running(engine, config, max_backoff=0.5) as (_relay, wakeup, _metrics):
            await insert_rows(engine, [outbox_row()])
            wakeup.set()
            await subscriber.wait_for(1)
            assert (first.connections_accepted, second.connections_accepted) == (1, 0)
            first.cut()
            await insert_rows(engine, [outbox_row() for _ in range(3)])
            wakeup.set()
            await subscriber.wait_for(4)
            await eventually(lambda: _no_backlog(engine))
            assert second.connections_accepted == 1
        assert [e.sequence for e in subscriber.unique()] == [1, 2, 3, 4]
    finally:
        await engine.dispose()


async def _errors_at_least(metrics: Metrics, count: float) -> bool:
    return _value(metrics, "key_service_relay_errors_total") >= count


async def test_two_relays_on_one_database_never_publish_a_row_twice_nor_out_of_order(
    database_url: str, config: KeyServiceConfig, subscriber: Subscriber,
) -> None:
    """Two replicas (own engines, own relays, as two processes would have) write and relay at
    once; then the publishing one stops cleanly and the other takes over. Every event arrives
    exactly once, in order. (PostgreSQL: advisory lock; SQLite: a lock file.)"""
    await migrate_async(database_url)
    engines = [create_engine(database_url), create_engine(database_url)]
    try:
        async with running(engines[0], config) as one, running(engines[1], config) as two:
            replicas = [one, two]

            async def write(i: int) -> None:
                engine = engines[i % 2]
                for _ in range(40):
                    await insert_rows(engine, [outbox_row()])
                    replicas[i % 2][1].set()
                    await asyncio.sleep(0.001)

            await asyncio.gather(*(write(i) for i in range(4)))
            await subscriber.wait_for(160)
            leaders = [r for r, _w, _m in replicas if r.is_leader]
            assert len(leaders) == 1
            leader = leaders[0]
            standby_index = 1 if leader is one[0] else 0
            await leader.stop()

            standby, standby_wakeup, _m = replicas[standby_index]
            for _ in range(30):
                await insert_rows(engines[standby_index], [outbox_row()])
                standby_wakeup.set()
            await subscriber.wait_for(190)
            await eventually(lambda: _no_backlog(engines[0]))
            assert standby.is_leader
        ids = [r.event.id for r in subscriber.received]
        assert len(ids) == len(set(ids)) == 190
        assert [r.event.sequence for r in subscriber.received] == list(range(1, 191))
    finally:
        for engine in engines:
            await engine.dispose()


async def test_the_relay_rides_out_a_postgres_cut_and_takes_its_lock_again(
    postgres_url: str, config: KeyServiceConfig, subscriber: Subscriber,
    fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    await migrate_async(postgres_url)
    url = make_url(postgres_url)
    proxy = fault_proxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    direct, through_proxy = create_engine(postgres_url), create_engine(proxied)
    try:
        async with running(through_proxy, config, max_backoff=0.5) as (relay, wakeup, metrics):
            await insert_rows(direct, [outbox_row() for _ in range(5)])
            wakeup.set()
            await subscriber.wait_for(5)
            assert relay.is_leader

            proxy.cut()  # the relay's lock connection dies with it
            await insert_rows(direct, [outbox_row() for _ in range(5)])
            wakeup.set()
            await eventually(lambda: _errors_at_least(metrics, 1))
            proxy.restore()
            await subscriber.wait_for(10)
            assert relay.is_leader
        ids = [r.event.id for r in subscriber.received]
        assert len(ids) == len(set(ids)) == 10
        assert [r.event.sequence for r in subscriber.received] == list(range(1, 11))
    finally:
        await direct.dispose()
        await through_proxy.dispose()


async def test_a_relay_started_while_rabbitmq_is_down_publishes_once_it_is_up(
    engine: AsyncEngine, config: KeyServiceConfig, subscriber: Subscriber,
    fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    proxy = fault_proxy("127.0.0.1", 5672)
    proxy.cut()
    config = replace(config, rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
    async with running(engine, config, max_backoff=0.5) as (_relay, wakeup, metrics):
        await insert_rows(engine, [outbox_row() for _ in range(3)])
        wakeup.set()
        await eventually(lambda: _errors_at_least(metrics, 2))
        assert await _unsent(engine) == 3
        proxy.restore()
        await subscriber.wait_for(3)
        await eventually(lambda: _no_backlog(engine))
    assert [r.event.sequence for r in subscriber.received] == [1, 2, 3]
