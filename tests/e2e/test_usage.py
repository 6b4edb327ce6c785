"""End to end: gateway processes report which keys they authenticated, and key_service keeps it.

Real key_service (on SQLite, then on PostgreSQL), Redis, RabbitMQ, demo backend and gateway
processes. The invariant every test
checks: each request a gateway let through is either counted by key_service or counted in a
gateway's ``gateway_usage_dropped_requests`` (only ever past its buffer's bound); and
``last_used_at`` lands between the moments the test sent its first and last request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.support.services import POSTGRES, RABBITMQ, REDIS, require, temporary_database
from tests.support.stack import (
    Admin,
    Stack,
    StackOptions,
    clean_up_after,
    credentials,
    eventually,
    metric,
    new_stack,
)

# Reports five times a second, so that the bounds below are generous (30 s by default).
STACK_OPTIONS = StackOptions(extra_gateway_env={"GATEWAY_USAGE_REPORT_INTERVAL": "0.2"})
DROPPED = "gateway_usage_dropped_requests_total"
PENDING = "gateway_usage_pending_keys"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The e2e stack of tests/e2e/conftest.py, with key_service on SQLite, then on PostgreSQL."""
    require(REDIS)
    require(RABBITMQ)
    options = STACK_OPTIONS
    loop = asyncio.new_event_loop()
    database = temporary_database()
    try:
        if request.param == "postgres":
            require(POSTGRES)
            options = replace(options, database_url=loop.run_until_complete(database.__aenter__()))
        running = new_stack(tmp_path_factory.mktemp("stack"), options)
        try:
            with running:
                yield running
        finally:
            clean_up_after(running)
    finally:
        if request.param == "postgres":
            loop.run_until_complete(database.__aexit__(None, None, None))
        loop.close()


async def _send(http: aiohttp.ClientSession, url: str, key: tuple[str, str], n: int) -> None:
    for _ in range(n):
        async with http.get(f"{url}/api/orders", headers=credentials(*key)) as resp:
            assert resp.status == 200, await resp.text()


async def _requests(admin: Admin, key_id: str) -> int:
    usage = await admin.usage(key_id)
    return sum(day["requests"] for day in usage["days"])


def _moment(usage: dict[str, Any]) -> datetime | None:
    raw = usage["last_used_at"]
    return None if raw is None else datetime.fromisoformat(raw)


async def test_last_used_moves_after_a_request_through_a_gateway(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession,
) -> None:
    key = await admin.issue("used once")
    status, body = await admin.try_get(key[0])
    assert (status, body["last_used_at"]) == (200, None)
    before = datetime.now(UTC)
    await _send(http, stack.gateway_urls[0], key, 1)
    after = datetime.now(UTC)

    async def reported() -> bool:
        return (await admin.try_get(key[0]))[1]["last_used_at"] is not None

    await eventually(reported, "last_used_at set after a request")
    usage = await admin.usage(key[0])
    moment = _moment(usage)
    assert moment is not None
    assert before <= moment <= after
    assert usage["days"] == [{"day": moment.date().isoformat(), "requests": 1}]


async def test_counts_add_up_over_two_gateway_processes(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession,
) -> None:
    assert len(stack.gateway_urls) >= 2
    key = await admin.issue("used at both")
    first, second = stack.gateway_urls[:2]
    before = datetime.now(UTC)
    await asyncio.gather(_send(http, first, key, 7), _send(http, second, key, 5))
    after = datetime.now(UTC)

    async def all_counted() -> bool:
        return await _requests(admin, key[0]) == 12

    await eventually(all_counted, "12 requests counted")
    moment = _moment(await admin.usage(key[0]))
    assert moment is not None
    assert before <= moment <= after
    # Nothing more arrives later: each report counted once.
    await asyncio.sleep(0.5)
    assert await _requests(admin, key[0]) == 12


async def test_a_key_service_outage_within_the_buffer_loses_nothing(
    faults: Stack, admin: Admin, http: aiohttp.ClientSession,
) -> None:
    stack = faults
    url = stack.gateway_urls[0]
    keys = [await admin.issue(f"outage {i}") for i in range(3)]
    # Every key known to the gateway before the cut (its L1 and Redis serve it during the cut).
    for key in keys:
        await _send(http, url, key, 1)
    for key in keys:
        await eventually(lambda k=key: _counted(admin, k[0], 1), "warm-up counted")
    dropped_before = await metric(http, url, DROPPED, {})
    assert stack.key_service_proxy is not None
    stack.key_service_proxy.cut()
    for round_ in range(4):
        for key in keys:
            await _send(http, url, key, 2)

        async def waiting() -> bool:
            return await metric(http, url, PENDING, {}) > 0

        if round_ == 0:
            # The reports fail and wait in the buffer.
            await eventually(waiting, "usage waiting in the buffer during the cut")
        await asyncio.sleep(0.25)  # across report intervals: several batches wait
    assert await _requests(admin, keys[0][0]) == 1  # nothing of the cut has arrived
    stack.key_service_proxy.restore()
    for key in keys:
        await eventually(lambda k=key: _counted(admin, k[0], 9), "every request of the cut")
    assert await metric(http, url, DROPPED, {}) == dropped_before


async def test_past_the_buffer_the_oldest_go_and_are_counted(
    faults: Stack, admin: Admin, http: aiohttp.ClientSession,
) -> None:
    stack = faults
    small = await asyncio.to_thread(stack.add_gateway, {"GATEWAY_USAGE_BUFFER_KEYS": "2"})
    keys = [await admin.issue(f"overflow {i}") for i in range(5)]
    sent = {key[0]: 0 for key in keys}
    # One key at a time, each report within the bound: every key is known to the gateway
    # before the cut (its L1 and Redis serve it during the cut).
    for key in keys:
        await _send(http, small, key, 1)
        sent[key[0]] += 1
        await eventually(lambda k=key: _counted(admin, k[0], 1), "warm-up counted")
    assert await metric(http, small, DROPPED, {}) == 0
    assert stack.key_service_proxy is not None
    stack.key_service_proxy.cut()
    # Five keys in a row, then more: far more entries than the two the buffer holds.
    for _ in range(3):
        for index, key in enumerate(keys):
            await _send(http, small, key, index + 1)
            sent[key[0]] += index + 1
        await asyncio.sleep(0.25)

    async def dropped_some() -> bool:
        return await metric(http, small, DROPPED, {}) > 0

    await eventually(dropped_some, "drops counted while key_service is away")
    stack.key_service_proxy.restore()

    async def settled() -> bool:
        if await metric(http, small, PENDING, {}) != 0:
            return False
        counted = sum([await _requests(admin, key_id) for key_id in sent])
        return counted + await metric(http, small, DROPPED, {}) == sum(sent.values())

    # What arrived and what was dropped add up to what was sent, exactly.
    await eventually(settled, "counted + dropped == sent")
    counted = {key_id: await _requests(admin, key_id) for key_id in sent}
    assert all(counted[key_id] <= sent[key_id] for key_id in sent), (counted, sent)
    assert sum(counted.values()) < sum(sent.values())


async def test_a_draining_gateway_reports_what_it_holds(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession,
) -> None:
    # Reports every 30 s (the default): what it counted arrives only by the drain at SIGTERM.
    url = await asyncio.to_thread(stack.add_gateway, {"GATEWAY_USAGE_REPORT_INTERVAL": "30"})
    process = stack.gateway_procs[-1]
    key = await admin.issue("used before a shutdown")
    await _send(http, url, key, 3)
    assert await _requests(admin, key[0]) == 0
    assert await asyncio.to_thread(process.stop) == 0
    assert await _requests(admin, key[0]) == 3


async def _counted(admin: Admin, key_id: str, n: int) -> bool:
    return await _requests(admin, key_id) == n
