"""The failure counter's quiet window: the authenticator's fast path trusts it.

``quiet()`` must hold exactly when no address is blocked here, no read of other processes'
blocks is due and Redis is not paused, or the fast path would skip a throttle (or, the other
way, never run).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from auth_gateway.redisclient import open_redis
from auth_gateway.throttle import SYNC_SECONDS, FailureCounter
from tests.support.procs import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _clear(counter: FailureCounter, clock: Clock) -> bool:
    # What the authenticator's fast path asks first (``clock`` is the counter's).
    return counter.quiet()


async def test_clear_only_between_syncs_and_while_nothing_is_blocked(
    redis_client: aioredis.Redis, redis_prefix: str,
) -> None:
    clock = Clock()
    counter = FailureCounter(redis_client, redis_prefix, threshold=2, window=60, clock=clock)
    assert not _clear(counter, clock)  # the first read of other processes' blocks is due
    assert await counter.retry_after("192.0.2.1") is None
    assert _clear(counter, clock)
    clock.now += SYNC_SECONDS
    assert not _clear(counter, clock)  # due again
    assert await counter.retry_after("192.0.2.1") is None
    assert _clear(counter, clock)

    await counter.record_failure("192.0.2.9")
    assert _clear(counter, clock)  # one failure blocks nobody
    await counter.record_failure("192.0.2.9")
    assert not _clear(counter, clock)  # past the threshold: an address is blocked here
    assert await counter.retry_after("192.0.2.9") is not None
    assert not _clear(counter, clock)
    assert counter.clear_now("192.0.2.1")  # the per-address check still lets others through
    assert not counter.clear_now("192.0.2.9")

    clock.now += 61  # the block is over (here and in Redis); the next slow-path check notices
    await redis_client.zrem(counter.blocked_key, "192.0.2.9")
    assert await counter.retry_after("192.0.2.9") is None
    assert _clear(counter, clock)


async def test_not_clear_while_redis_is_paused() -> None:
    clock = Clock()
    dead = open_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        counter = FailureCounter(dead, "t:none:", threshold=5, window=60, clock=clock)
        assert await counter.retry_after("192.0.2.1") is None  # fails open on throttling only
        assert not _clear(counter, clock)  # paused: the slow path counts locally meanwhile
        clock.now += 0.5
        assert not _clear(counter, clock)
        clock.now += 1.0  # the pause is over, and the read it skipped is due: still the slow path
        assert not _clear(counter, clock)
        assert await counter.retry_after("192.0.2.1") is None  # Redis still away: paused again
        assert not _clear(counter, clock)
    finally:
        await dead.aclose()


async def test_the_sync_interval_is_the_configured_one(
    redis_client: aioredis.Redis, redis_prefix: str,
) -> None:
    clock = Clock()
    counter = FailureCounter(redis_client, redis_prefix, threshold=2, window=60, clock=clock,
                             sync_seconds=5.0)
    assert await counter.retry_after("192.0.2.1") is None
    clock.now += 4.9
    assert _clear(counter, clock)
    clock.now += 0.1
    assert not _clear(counter, clock)


async def test_a_block_that_ends_sooner_than_one_already_read_is_adopted_too(
    redis_client: aioredis.Redis, redis_prefix: str,
) -> None:
    # Blocks end a window after the address's first failure, so a block added later can end
    # sooner than one another process has read already: it must still reach that process.
    one = FailureCounter(redis_client, redis_prefix, threshold=3, window=60, sync_seconds=0.01)
    two = FailureCounter(redis_client, redis_prefix, threshold=3, window=60, sync_seconds=0.01)
    early, late = "198.51.100.1", "198.51.100.2"
    for _ in range(2):
        await one.record_failure(early)  # its window starts now
    await asyncio.sleep(1.1)
    for _ in range(3):
        await one.record_failure(late)  # blocked until ~60 s from now
    await asyncio.sleep(0.02)
    assert await two.retry_after(late) is not None
    await one.record_failure(early)  # blocked until ~59 s from now: sooner than late's
    await asyncio.sleep(0.02)
    waiting = await two.retry_after(early)
    assert waiting is not None
    assert 55 <= waiting <= 60
    assert await two.retry_after("198.51.100.3") is None


async def test_blocks_added_after_redis_lost_its_data_are_adopted(
    redis_client: aioredis.Redis, redis_prefix: str,
) -> None:
    # A Redis without persistence restarts: the version key starts over. A counter would come
    # back to values a process has seen and hide new blocks from it; a fresh random value not.
    one = FailureCounter(redis_client, redis_prefix, threshold=1, window=60)
    two = FailureCounter(redis_client, redis_prefix, threshold=1, window=60)
    await two.record_failure("198.51.100.1")
    assert await one.retry_after("198.51.100.1") is not None
    await redis_client.delete(one.blocked_key, one.version_key, one.key("198.51.100.1"))
    await two.record_failure("198.51.100.2")
    one._next_sync = 0.0  # the next read of other processes' blocks is due
    assert await one.retry_after("198.51.100.2") is not None


async def test_failures_while_blocked_count_without_announcing_the_block_again(
    redis_client: aioredis.Redis, redis_prefix: str,
) -> None:
    # A blocked address's refusals count as failures; announcing its block anew each time
    # would make every process read the blocks again for nothing.
    counter = FailureCounter(redis_client, redis_prefix, threshold=2, window=60)
    for _ in range(2):
        await counter.record_failure("192.0.2.5")
    assert await counter.retry_after("192.0.2.5") is not None
    version = await redis_client.get(counter.version_key)
    assert version is not None
    for _ in range(3):
        await counter.record_failure("192.0.2.5")
    assert int(await redis_client.get(counter.key("192.0.2.5"))) == 5
    assert await redis_client.get(counter.version_key) == version
    await counter.record_failure("192.0.2.6")
    await counter.record_failure("192.0.2.6")  # a new block is announced
    assert await redis_client.get(counter.version_key) != version
