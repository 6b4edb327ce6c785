"""The issue's fault test: RabbitMQ cut during 1,000 issue and revoke calls loses no event."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from key_service.appkeys import ENGINE, METRICS
from key_service.config import KeyServiceConfig
from key_service.models import OutboxEvent
from tests.support.faultproxy import FaultProxy

from .conftest import AiohttpClient, Subscriber, start_admin

CALLS = 1000
CUT_AFTER = 150
WORKERS = 4


@pytest.mark.slow
async def test_rabbitmq_cut_during_1000_calls_loses_no_event_and_keeps_order(
    app_config: KeyServiceConfig, aiohttp_client: AiohttpClient, subscriber: Subscriber,
    fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    # key_service reaches RabbitMQ only through the proxy; the subscriber (bound before the run)
    # connects straight to RabbitMQ.
    proxy = fault_proxy("127.0.0.1", 5672)
    config = replace(app_config, rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
    admin = await start_admin(config, aiohttp_client)
    metrics = admin.http.app[METRICS]

    rng = random.Random(3)
    plan = ["issue"] * 700 + ["revoke"] * 300
    rng.shuffle(plan)
    active: list[str] = []
    expected: list[tuple[str, str]] = []  # (key_id, status) per successful call
    calls = 0
    cut = asyncio.Event()

    async def worker() -> None:
        nonlocal calls
        while plan:
            action = plan.pop()
            if action == "revoke" and not active:
                action = "issue"
            if action == "issue":
                key = await admin.issue(f"fault {calls}")
                active.append(key["key_id"])
                expected.append((key["key_id"], "active"))
            else:
                key_id = active.pop(rng.randrange(len(active)))
                key = await admin.revoke(key_id)
                assert key["status"] == "revoked"
                expected.append((key_id, "revoked"))
            calls += 1
            if calls == CUT_AFTER:
                proxy.cut()
                cut.set()

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    assert calls == CALLS
    assert cut.is_set()
    # The relay noticed the broker was gone (every call above still succeeded).
    assert (metrics.registry.get_sample_value("key_service_relay_errors_total") or 0) > 0

    async with admin.http.app[ENGINE].connect() as conn:
        held_back = (await conn.execute(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.sent_at.is_(None))
        )).scalar_one()
    assert held_back > 0  # the outage really kept events from the broker

    proxy.restore()
    await subscriber.wait_for(CALLS, timeout=60)

    events = subscriber.unique()
    assert [e.sequence for e in events] == list(range(1, CALLS + 1))
    assert sorted((e.record.key_id, e.record.status) for e in events) == sorted(expected)
    # Per key: issued first, revoked after.
    first_seen: dict[str, str] = {}
    for event in events:
        if event.record.key_id not in first_seen:
            first_seen[event.record.key_id] = event.record.status
    assert set(first_seen.values()) == {"active"}
