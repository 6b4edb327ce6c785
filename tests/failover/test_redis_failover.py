"""Redis Sentinel failover: the master dies under load and a replica that had fallen behind is
promoted.

Two gateway processes use ``redis+sentinel://`` with three Sentinels (down after one second).
Under a load of valid, revoked and unknown keys, the replica stops catching up, a key is revoked
(the gateways write its revoked record to the master only) and failed authentications are
counted (on the master only), then the master is killed. The Sentinels promote the replica; the
gateways find the new master by themselves. No revoked or unknown key is forwarded at any time.

What the promotion loses, shown: the replica holds the revoked key's older, active record and
lower failure counts. That grants nothing: every gateway process that applied the revocation
keeps refusing the key whatever Redis holds, and a process started after the failover reads
the whole feed before it reports ready (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis

from apikeys_shared.events import Event, SignedEvent
from tests.support.load import Load, Probe
from tests.support.private_redis import SentinelGroup
from tests.support.stack import Stack, StackOptions, eventually

from .keys import SHORT_CACHES, issue_keys

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq]

FEED_POLL = 1.0
BOUND = 60.0  # generous waits (no timing assertion)


def _record_status(client: redis.Redis, key: str) -> str | None:
    raw = client.get(key)
    if raw is None:
        return None
    return Event.from_bytes(SignedEvent.from_text(raw.decode()).body).record.status


def _count(client: redis.Redis, key: str) -> int:
    raw = client.get(key)
    return int(raw) if raw is not None else 0


async def test_redis_sentinel_failover_forwards_no_revoked_or_unknown_key(
    sentinel_group: SentinelGroup, make_stack: Callable[[StackOptions], Stack],
    admin_session: Any, http: aiohttp.ClientSession,
    figures: Callable[[str, dict[str, object]], None],
) -> None:
    group = sentinel_group
    stack = make_stack(StackOptions(
        feed_poll_interval=FEED_POLL, redis_url=group.url,
        extra_gateway_env=SHORT_CACHES,
    ))
    admin = await admin_session(stack)
    probe = Probe(http, stack)
    keys = await issue_keys(admin, probe, victims=1)
    victim = keys.victims[0]
    victim_key = f"{stack.redis_prefix}key:{victim[0]}"
    failures_key = f"{stack.redis_prefix}fail:127.0.0.1"

    load = Load(http, list(stack.gateway_urls), keys.load_plan())
    running = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(group.stop_replication)
        await admin.revoke(victim[0])

        async def refused() -> bool:
            return await probe.statuses(victim) == [401] * len(stack.gateway_urls)
        await eventually(refused, "the revocation is refused at both gateways", BOUND)
        refused_at = time.monotonic()
        await asyncio.sleep(1.0)  # failed authentications go on being counted, on the master
        with group.master.client() as master, group.replica.client() as replica:
            on_master = (_record_status(master, victim_key), _count(master, failures_key))
            on_replica = (_record_status(replica, victim_key), _count(replica, failures_key))
        await asyncio.to_thread(group.master.kill)
        killed_at = time.monotonic()

        async def promoted() -> bool:
            return await asyncio.to_thread(group.master_port) == group.replica.port
        await eventually(promoted, "the Sentinels promote the replica", BOUND)
        promoted_at = time.monotonic()
        # The gateways write to the new master: a key issued now is stored there.
        after = await admin.issue("issued after the failover")
        after_key = f"{stack.redis_prefix}key:{after[0]}"

        async def writing() -> bool:
            with group.replica.client() as new_master:
                return _record_status(new_master, after_key) == "active"
        await eventually(writing, "the gateways store records in the new master", BOUND)
        writing_at = time.monotonic()
        await eventually(
            lambda: probe.recovered([*keys.valid, after], [victim, *keys.revoked, *keys.unknown]),
            "the gateways recover", BOUND,
        )
        recovered_at = time.monotonic()
        await asyncio.sleep(1.0)
    finally:
        load.stop()
        await running

    # A gateway process started now learns every revocation from the feed before it is ready.
    late_url = await asyncio.to_thread(stack.add_gateway)
    late_status = (await probe.statuses(victim))[-1]

    wrongly_forwarded = load.wrongly_forwarded({k[0] for k in [*keys.valid, victim]})
    late_passes = [p for p in load.passed if p[0] == "victim" and p[2] > refused_at]
    figures("Redis Sentinel failover", {
        "seconds to promotion": round(promoted_at - killed_at, 2),
        "seconds until the gateways write to the new master": round(writing_at - killed_at, 2),
        "seconds until every check passes": round(recovered_at - killed_at, 2),
        "valid-key requests refused": sum(n for s, n in load.of("valid").items() if s != 200),
        "records lost in the promotion": int(on_master[0] != on_replica[0]),
        "failed-auth counts lost": on_master[1] - on_replica[1],
        "requests wrongly forwarded": wrongly_forwarded + len(late_passes),
    })

    # What the promoted replica lacks: the revoked record, and the latest failure counts.
    assert on_master[0] == "revoked"
    assert on_replica[0] == "active"
    assert on_master[1] > on_replica[1]
    # It grants nothing: the stale record never let the victim through, in the processes
    # that applied the revocation or in one started afterwards.
    assert late_passes == []
    assert late_url == stack.gateway_urls[-1]
    assert late_status == 401
    assert wrongly_forwarded == 0
    assert set(load.of("revoked")) == {401}, load.of("revoked")
    assert set(load.of("unknown")) == {401}, load.of("unknown")
    # Valid keys pass throughout (L1, then key_service, while no master answers).
    assert set(load.of("valid")) == {200}, load.of("valid")
    assert load.other == []
