"""End to end: rolling a key, seen by two gateway processes through RabbitMQ.

The gateways take the new ``apikey.rolled`` event (dataschema 2) like any other: no event is
rejected, both keys work during the overlap, and the old key stops working once key_service
revokes it (early by hand, or by its scheduler when the overlap ends). The gateways' own
enforcement of ``revokes_at`` while key_service is away is not part of this module.
"""

from __future__ import annotations

import aiohttp

from tests.support.stack import Admin, Stack, credentials, eventually, metric


async def _statuses(
    http: aiohttp.ClientSession, stack: Stack, headers: dict[str, str],
) -> list[int]:
    result = []
    for url in stack.gateway_urls:
        async with http.get(f"{url}/api/orders", headers=headers) as resp:
            result.append(resp.status)
    return result


async def _all(http: aiohttp.ClientSession, stack: Stack, headers: dict[str, str],
               status: int) -> bool:
    return await _statuses(http, stack, headers) == [status] * len(stack.gateway_urls)


async def test_both_keys_work_during_the_overlap_and_the_old_one_ends(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession,
) -> None:
    rejected_before = [
        await metric(http, url, "gateway_events_total", {"outcome": "rejected"})
        for url in stack.gateway_urls
    ]
    key_id, secret = await admin.issue("rolled end to end")
    old = credentials(key_id, secret)
    await eventually(lambda: _all(http, stack, old, 200), "the key works at both gateways")

    rolled = await admin.roll(key_id, 3600)
    new = credentials(rolled["key_id"], rolled["secret"])
    await eventually(lambda: _all(http, stack, new, 200), "the replacement works at both")
    assert await _statuses(http, stack, old) == [200, 200]  # the overlap has begun

    async def applied_the_roll(url: str) -> bool:
        return await metric(http, url, "gateway_events_total",
                            {"source": "amqp", "outcome": "applied"}) >= 3

    for url in stack.gateway_urls:
        await eventually(lambda url=url: applied_the_roll(url), f"{url} applied the roll")

    await admin.revoke(key_id)  # early, by hand
    await eventually(lambda: _all(http, stack, old, 401), "the old key is refused")
    assert await _statuses(http, stack, new) == [200, 200]

    # Overlap 0: key_service's scheduler revokes the replaced key at once.
    again = await admin.roll(rolled["key_id"], 0)
    newest = credentials(again["key_id"], again["secret"])
    await eventually(lambda: _all(http, stack, new, 401), "the scheduler's revocation arrived")
    await eventually(lambda: _all(http, stack, newest, 200), "the newest key works")
    rejected_after = [
        await metric(http, url, "gateway_events_total", {"outcome": "rejected"})
        for url in stack.gateway_urls
    ]
    assert rejected_after == rejected_before
