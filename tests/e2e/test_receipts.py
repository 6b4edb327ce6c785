"""Revocation receipts end to end: real key_service, Redis, RabbitMQ and gateway processes.

The guarantee: once ``POST /api/v1/keys/{id}/revoke?wait=N`` returns with ``confirmed ==
processes``, no request with that key sent after that moment gets a 2xx from any of those
processes, under a load racing the revocation, counted at the backend. A process partitioned
from RabbitMQ is reported pending, and confirms once the feed brings it the event; a killed one
is listed as gone after the bound; one that comes back refuses the key from its first request.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.load import Load, Probe
from tests.support.services import RABBITMQ
from tests.support.stack import Admin, Stack, StackOptions, eventually, metric

# One gateway process on the stack's broker; the module adds one with a broker link of its
# own (to partition it alone). It reads the feed only when its subscription is known lost: a
# blackholed link is noticed by AMQP heartbeats some seconds later, and until then it cannot
# learn the revocation at all.
STACK_OPTIONS = StackOptions(
    gateways=1, feed_poll_interval=0.5,
    extra_gateway_env={"GATEWAY_HEARTBEAT_INTERVAL": "0.5", "GATEWAY_NAME": "gw-main"},
)
PARTITIONED = "gw-partitioned"
BOUND = 40.0  # generous: the gone bound is 10 s, AMQP heartbeats notice a dead link in ~15 s


@pytest.fixture(scope="module")
def partition(stack: Stack) -> Iterator[FaultProxy]:
    """A second gateway process whose link to RabbitMQ goes through a proxy of its own."""
    proxy = FaultProxy(*RABBITMQ.address)
    try:
        stack.add_gateway({
            "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
            "GATEWAY_NAME": PARTITIONED, "GATEWAY_FEED_SAFETY_INTERVAL": "3600",
        })
        yield proxy
    finally:
        proxy.close()


def _credentials(key: tuple[str, str]) -> dict[str, str]:
    return {"X-AuthenticationKeyId": key[0], "X-AuthenticationKeyValue": key[1]}


def _names(processes: list[dict[str, Any]]) -> list[str]:
    return [p["name"].rsplit(":", 1)[0] for p in processes]


async def _all_live(admin: Admin, count: int) -> None:
    """Wait until ``count`` processes send heartbeats (a revocation's receipt shows them)."""
    async def live() -> bool:
        key_id, _ = await admin.issue("census")
        status, body, _ = await admin.try_revoke(key_id)
        assert status == 200, body
        return bool(body["propagation"]["processes"] == count)
    await eventually(live, f"{count} gateway processes heartbeat", BOUND)


async def test_after_a_confirmed_revocation_no_request_passes_under_load(
    stack: Stack, partition: FaultProxy, admin: Admin, http: aiohttp.ClientSession,
) -> None:
    await _all_live(admin, 2)
    victim = await admin.issue("raced")
    probe = Probe(http, stack)
    assert await probe.statuses(victim) == [200, 200]
    before = stack.backend_stats()["requests"]
    load = Load(http, stack.gateway_urls, {"victim": [victim]}, workers=48)
    running = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(1.0)
        status, body, _ = await admin.try_revoke(victim[0], wait=10)
        returned = time.monotonic()
        await asyncio.sleep(1.5)
    finally:
        load.stop()
        await running
    assert status == 200, body
    receipt = body["propagation"]
    assert receipt["processes"] == receipt["confirmed"] == 2, receipt
    assert (receipt["pending"], receipt["gone"]) == ([], [])
    # The load raced the revocation: answered by the backend before, refused after.
    sent_after = sum(1 for *_, started in load.passed if started >= returned)
    assert sent_after == 0, f"{sent_after} requests sent after the receipt got a 2xx"
    statuses = load.of("victim")
    assert statuses[200] > 0
    assert statuses[401] > 0
    assert set(statuses) == {200, 401}, (statuses, load.other)
    # Counted at the backend: exactly the 2xx the load and the probe saw, nothing hidden.
    answered = load.answered_by_backend + probe.answered_by_backend - 2
    assert stack.backend_stats()["requests"] - before == answered
    assert await probe.statuses(victim) == [401, 401]


async def test_a_process_cut_off_rabbitmq_is_pending_then_confirmed_by_the_feed(
    stack: Stack, partition: FaultProxy, admin: Admin, http: aiohttp.ClientSession,
) -> None:
    await _all_live(admin, 2)
    victim = await admin.issue("partitioned")
    # Used once everywhere: each process holds the key's record in L1 (for 30 s).
    assert await Probe(http, stack).statuses(victim) == [200, 200]
    partitioned_url = stack.gateway_urls[-1]
    feed_labels = {"source": "feed", "outcome": "applied"}
    from_feed = await metric(http, partitioned_url, "gateway_events_total", feed_labels)
    partition.blackhole()
    try:
        status, body, _ = await admin.try_revoke(victim[0], wait=1)
        assert status == 200, body
        receipt = body["propagation"]
        assert (receipt["processes"], receipt["confirmed"]) == (2, 1), receipt
        assert _names(receipt["pending"]) == [PARTITIONED]
        # The receipt is right: that process still lets the key through (from its L1).
        async with http.get(f"{partitioned_url}/api/x", headers=_credentials(victim)) as resp:
            assert resp.status == 200
        # Asking again waits on the same event; the process notices its dead link, reads the
        # feed, applies the revocation and confirms.
        async def confirmed() -> bool:
            status, body, _ = await admin.try_revoke(victim[0], wait=5)
            assert status == 409, body
            receipt = body["propagation"]
            return bool(receipt["processes"] == receipt["confirmed"] == 2)
        await eventually(confirmed, "the partitioned process confirms", BOUND)
    finally:
        partition.restore()
    assert await metric(http, partitioned_url, "gateway_events_total", feed_labels) > from_feed
    assert await Probe(http, stack).statuses(victim) == [401, 401]


async def test_freshness_is_on_metrics(stack: Stack, http: aiohttp.ClientSession) -> None:
    for url in stack.gateway_urls:
        lag = await metric(http, url, "gateway_revocation_lag_seconds", {})
        applied_at = await metric(
            http, url, "gateway_last_event_applied_timestamp_seconds", {})
        assert 0 <= lag < BOUND
        assert applied_at > 0


async def test_a_process_stopped_cleanly_is_no_longer_listed(
    stack: Stack, partition: FaultProxy, admin: Admin,
) -> None:
    await _all_live(admin, 2)
    url = stack.add_gateway({"GATEWAY_NAME": "gw-polite"})
    await _all_live(admin, 3)
    stack.gateway_urls.remove(url)
    assert stack.gateway_procs[-1].stop(signal.SIGTERM) == 0
    key_id, _ = await admin.issue("after a clean stop")
    status, body, _ = await admin.try_revoke(key_id, wait=5)
    assert status == 200, body
    receipt = body["propagation"]
    # At once, not after the gone bound: it said it was leaving, after its drain.
    assert receipt["processes"] == receipt["confirmed"] == 2, receipt
    assert "gw-polite" not in _names(receipt["gone"])


async def test_a_killed_process_is_gone_and_one_that_comes_back_refuses_at_once(
    stack: Stack, partition: FaultProxy, admin: Admin, http: aiohttp.ClientSession,
) -> None:
    await _all_live(admin, 2)
    doomed_url = stack.add_gateway({"GATEWAY_NAME": "gw-doomed"})
    await _all_live(admin, 3)
    doomed = stack.gateway_procs[-1]
    stack.gateway_urls.remove(doomed_url)
    doomed.stop(signal.SIGKILL)
    victim = await admin.issue("revoked while one is down")
    status, body, _ = await admin.try_revoke(victim[0], wait=2)
    assert status == 200, body
    receipt = body["propagation"]
    # Until the bound it counts and is pending; after it, gone: listed, never confirmed.
    assert receipt["confirmed"] == 2, receipt
    assert "gw-doomed" in _names(receipt["pending"]) + _names(receipt["gone"])

    async def gone() -> bool:
        status, body, _ = await admin.try_revoke(victim[0], wait=0.5)
        receipt = body["propagation"]
        return bool(status == 409 and receipt["processes"] == receipt["confirmed"] == 2
                    and "gw-doomed" in _names(receipt["gone"]))
    await eventually(gone, "the killed process is listed as gone", BOUND)

    # One that comes back (a new process) catches up before it serves: whatever it answers
    # while it starts, never a 2xx for the key revoked while it was away.
    before = len(stack.gateway_urls)
    starting = asyncio.create_task(
        asyncio.to_thread(stack.add_gateway, {"GATEWAY_NAME": "gw-back"}))
    answers: list[int] = []
    while not starting.done():
        if len(stack.gateway_urls) > before:
            try:
                async with http.get(f"{stack.gateway_urls[before]}/api/x",
                                    headers=_credentials(victim)) as resp:
                    answers.append(resp.status)
            except aiohttp.ClientError:
                pass  # not listening yet
        await asyncio.sleep(0.01)
    back_url = await starting
    assert 200 not in answers, answers
    async with http.get(f"{back_url}/api/x", headers=_credentials(victim)) as resp:
        assert resp.status == 401
    status, body, _ = await admin.try_revoke(victim[0], wait=10)
    assert status == 409
    assert body["propagation"]["processes"] == body["propagation"]["confirmed"] == 3
