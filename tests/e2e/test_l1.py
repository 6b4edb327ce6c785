"""How long a gateway process keeps a key record in L1: as long as it is used while the process
knows it is current, and ``GATEWAY_L1_TTL`` past the last moment it knew that otherwise.

A process knows itself current from key_service's answers (its heartbeats' replies and feed
pages, docs/architecture.md, "The key store"); cut off from key_service it cannot, so its L1
entries then expire and each key is read from Redis again.
"""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.load import Probe
from tests.support.stack import Admin, Stack, StackOptions, eventually, metric

TTL = 0.5
HEARTBEAT = 0.2
STACK_OPTIONS = StackOptions(extra_gateway_env={
    "GATEWAY_L1_TTL": str(TTL), "GATEWAY_HEARTBEAT_INTERVAL": str(HEARTBEAT),
})
REDIS_READS = {"tier": "redis", "result": "hit"}


async def redis_reads(http: aiohttp.ClientSession, stack: Stack) -> list[float]:
    return [await metric(http, url, "gateway_cache_lookups_total", REDIS_READS)
            for url in stack.gateway_urls]


async def test_a_current_process_keeps_a_used_record_past_the_ttl_and_not_once_cut_off(
    faults: Stack, admin: Admin, http: aiohttp.ClientSession,
) -> None:
    stack = faults
    probe = Probe(http, stack)
    key = await admin.issue("kept in L1")
    assert await probe.statuses(key) == [200, 200]
    before = await redis_reads(http, stack)
    for _ in range(int(8 * TTL / 0.1)):  # eight lifetimes, the key used all along
        assert await probe.statuses(key) == [200, 200]
        await asyncio.sleep(0.1)
    assert await redis_reads(http, stack) == before, "a current process read the key again"

    assert stack.key_service_proxy is not None
    stack.key_service_proxy.cut()
    try:
        async def read_again() -> bool:
            assert await probe.statuses(key) == [200, 200]  # from Redis, once L1 lets go
            now = await redis_reads(http, stack)
            return all(after > start for after, start in zip(now, before, strict=True))

        await eventually(read_again, "each process reads the key from Redis again", 10 * TTL)
    finally:
        stack.restore_all()
