"""End to end: a rolled key ends at its revokes_at in every worker process of a gateway, by the
gateway's own clock, with key_service, RabbitMQ and Redis all away at that moment.

A 2-worker gateway (two processes sharing one port) takes a roll with a 3-second overlap; then
every service it depends on is cut off. Until revokes_at both keys work (the old one too, from
cache); from then on the old key gets the 401, from both processes, while the new one still
works from cache. Requests go over fresh connections, which the kernel spreads over the two
processes; /healthz names the process that answered, to show both did.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import aiohttp

from tests.support.stack import Admin, Stack, StackOptions, credentials, eventually

STACK_OPTIONS = StackOptions(gateways=1, workers=2)
OVERLAP = 3
TRIES = 40  # fresh connections per check: both processes answer some (2^-39 that one does not)


async def _status(url: str, headers: dict[str, str]) -> int:
    """One request on a connection of its own (so the kernel picks a process for it)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http, http.get(
        f"{url}/api/orders", headers=headers, timeout=aiohttp.ClientTimeout(total=5),
    ) as resp:
        await resp.read()
        return resp.status


async def _statuses(url: str, headers: dict[str, str]) -> set[int]:
    return set(await asyncio.gather(*(_status(url, headers) for _ in range(TRIES))))


async def _pids(url: str) -> set[int]:
    pids = set()
    for _ in range(TRIES):
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http, http.get(
                f"{url}/healthz") as resp:
            pids.add((await resp.json())["pid"])
    return pids


async def test_the_old_key_ends_at_revokes_at_with_everything_away(
    faults: Stack, admin: Admin,
) -> None:
    stack = faults
    (url,) = stack.gateway_urls
    assert len(await _pids(url)) == 2, "the gateway runs two worker processes"
    key_id, secret = await admin.issue("rolled while everything fails")
    old = credentials(key_id, secret)

    async def old_works() -> bool:
        return await _statuses(url, old) == {200}

    await eventually(old_works, "the key works at both processes")
    rolled = await admin.roll(key_id, OVERLAP)
    new = credentials(rolled["key_id"], rolled["secret"])
    ends = datetime.fromisoformat(rolled["replaced_key"]["revokes_at"]).timestamp()

    async def both_work() -> bool:
        return await _statuses(url, new) == {200} and await _statuses(url, old) == {200}

    await eventually(both_work, "both keys work at both processes (the overlap)")
    # Everything the gateway depends on goes away: no event, no lookup, no Redis.
    stack.key_service_proxy.cut()  # type: ignore[union-attr]
    stack.rabbit_proxy.cut()
    stack.redis_proxy.cut()
    if time.time() < ends - 0.5:
        assert await _statuses(url, old) == {200}, "refused before revokes_at"

    async def old_refused() -> bool:
        return await _statuses(url, old) == {401}

    await eventually(old_refused, "the old key is refused by both processes", timeout=OVERLAP + 10)
    refused_at = time.time()
    assert refused_at >= ends - 0.05, f"refused {ends - refused_at:.2f} s before revokes_at"
    assert await _statuses(url, new) == {200}, "the new key works on, from cache"
    assert len(await _pids(url)) == 2
