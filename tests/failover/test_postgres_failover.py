"""PostgreSQL failover: the primary dies under issue and revoke calls and its standby takes over.

key_service runs on a private primary with a streaming standby, its URL naming both servers with
``target_session_attrs=read-write``; two gateways and a quorum-queue subscriber follow it. Under
a load of issue and revoke calls (and gateway requests), the primary is killed and, a moment
later, the standby promoted, as a failover manager would. Calls in flight fail with a clean 503
(never a 500) and none is half done; later calls succeed on the new primary by themselves; the
outbox relay and the feed go on with no gap and no sequence number given twice, and no event is
lost.

That holds with synchronous replication. With asynchronous replication a failover loses the
commits the standby had not received: the second test shows what that costs (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.load import AdminCall, AdminLoad, Load, Probe
from tests.support.private_postgres import PostgresPair
from tests.support.services import RABBITMQ_URL, delete_redis_prefix
from tests.support.stack import Stack, StackOptions, eventually

from .feed import read_feed, sequence_faults
from .keys import SHORT_CACHES, issue_keys, subscribe

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.rabbitmq]

FEED_POLL = 1.0
OPTIONS = StackOptions(
    feed_poll_interval=FEED_POLL,
    extra_gateway_env=SHORT_CACHES,
)
# How long the primary is gone before the standby is promoted: a failover manager's detection
# time (Patroni's default TTL is 30 s; this test does not wait that long).
PROMOTE_AFTER = 2.0
HOLD = 3.0  # how long the load goes on after the first call that succeeds again
STANDBY_LAG = 0.5  # how long the standby has stopped confirming when the primary dies
BOUND = 60.0  # generous waits (no timing assertion)


async def _rows(pair: PostgresPair) -> dict[str, list[Any]]:
    """Keys, audit rows and outbox rows as the new primary holds them."""
    conn = await asyncpg.connect(pair.node_url(pair.standby))
    try:
        return {
            "keys": await conn.fetch("SELECT key_id, status, revoked_at FROM api_keys"),
            "audit": await conn.fetch("SELECT key_id, action FROM audit_log"),
            "outbox": await conn.fetch(
                "SELECT key_id, event_type, sequence, event_id FROM outbox"),
        }
    finally:
        await conn.close()


def _half_done(rows: dict[str, list[Any]]) -> list[str]:
    """Keys whose row, audit rows and outbox rows disagree (a half-done issue or revoke)."""
    audit = Counter((r["key_id"], r["action"]) for r in rows["audit"])
    outbox = Counter((r["key_id"], r["event_type"]) for r in rows["outbox"])
    faults = []
    for key in rows["keys"]:
        revoked = key["status"] == "revoked"
        expected_audit = {(key["key_id"], "key.issued"): 1,
                          (key["key_id"], "key.revoked"): int(revoked)}
        expected_outbox = {(key["key_id"], "apikey.issued"): 1,
                           (key["key_id"], "apikey.revoked"): int(revoked)}
        if (revoked != (key["revoked_at"] is not None)
                or any(audit[k] != n for k, n in expected_audit.items())
                or any(outbox[k] != n for k, n in expected_outbox.items())):
            faults.append(key["key_id"])
    return faults


def _first_success_after(calls: list[AdminCall], moment: float) -> AdminCall | None:
    later = [c for c in calls if c.started > moment and c.status in (200, 201)]
    return min(later, key=lambda c: c.started, default=None)


async def test_postgres_failover_under_issue_and_revoke_loses_nothing(
    postgres_pair: Callable[[bool], PostgresPair], make_stack: Callable[[StackOptions], Stack],
    admin_session: Any, http: aiohttp.ClientSession,
    figures: Callable[[str, dict[str, object]], None],
) -> None:
    pair = postgres_pair(True)
    stack = make_stack(replace(OPTIONS, database_url=pair.url))
    subscriber = await subscribe(stack, RABBITMQ_URL)
    try:
        admin = await admin_session(stack)
        probe = Probe(http, stack)
        keys = await issue_keys(admin, probe, victims=1)
        victim = keys.victims[0]
        load = Load(http, stack.gateway_urls, keys.load_plan())
        churn = AdminLoad(admin)
        running = [asyncio.create_task(load.run()), asyncio.create_task(churn.run())]
        try:
            await asyncio.sleep(1.0)
            # The standby stops confirming a moment before the primary dies: the commits of
            # that moment wait for it, and must not be answered as done.
            pair.replication.cut()
            cut_at = time.monotonic()
            await asyncio.sleep(STANDBY_LAG)
            await asyncio.to_thread(pair.primary.kill)
            killed_at = time.monotonic()
            await asyncio.sleep(PROMOTE_AFTER)
            await asyncio.to_thread(pair.standby.promote)
            promoted_at = time.monotonic()

            async def issuing_again() -> bool:
                return _first_success_after(churn.calls, promoted_at) is not None
            await eventually(issuing_again, "issuing works on the new primary", BOUND)
            await admin.revoke(victim[0])
            revoked_at = time.monotonic()

            async def victim_refused() -> bool:
                return await probe.statuses(victim) == [401] * len(stack.gateway_urls)
            await eventually(victim_refused, "the revocation reaches both gateways", BOUND)
            refused_at = time.monotonic()
            await asyncio.sleep(HOLD)
        finally:
            load.stop()
            churn.stop()
            await asyncio.gather(*running)

        feed = await read_feed(http, stack, subscriber.verifier)
        await subscriber.wait_for(feed[-1].sequence, BOUND)
        rows = await _rows(pair)
    finally:
        await subscriber.close()

    statuses = churn.statuses()
    failed = [c for c in churn.calls if c.status not in (200, 201, 503) or c.problem]
    first = _first_success_after(churn.calls, promoted_at)
    assert first is not None
    in_flight_503 = sum(n for (_, status), n in statuses.items() if status == 503)
    # Calls the primary held, waiting for the cut-off standby, when it died.
    waiting = [c for c in churn.calls
               if c.started < killed_at < c.ended or cut_at < c.started < killed_at]
    in_database = {r["key_id"]: r["status"] for r in rows["keys"]}
    # What each answer said happened, happened on the new primary.
    lost_calls = [c for c in churn.calls
                  if (c.status == 201 and c.key_id not in in_database)
                  or (c.status == 200 and in_database.get(c.key_id or "") != "revoked")]
    received = subscriber.unique()
    by_sequence = {e.sequence: e.id for e in feed}
    events_lost = len(set(by_sequence) - {e.sequence for e in received})
    reused = [e for e in received if by_sequence.get(e.sequence) != e.id]
    wrongly_forwarded = load.wrongly_forwarded({k[0] for k in [*keys.valid, victim]})
    late = [p for p in load.passed if p[0] == "victim" and p[2] > refused_at]
    figures("PostgreSQL failover", {
        "calls": sum(statuses.values()), "503 while no primary": in_flight_503,
        "calls waiting for the standby when the primary died": len(waiting),
        "other failures": len(failed),
        "seconds without a primary": round(promoted_at - killed_at, 2),
        "seconds to recover after promotion": round(first.ended - promoted_at, 2),
        "events": len(feed), "events lost": events_lost,
        "duplicate deliveries": len(subscriber.deliveries) - len(received),
        "sequence numbers reused": len(reused),
        "revocation refused after (s)": round(refused_at - revoked_at, 2),
        "requests wrongly forwarded": wrongly_forwarded + len(late),
    })

    assert failed == [], failed[:5]  # no 500, no 503 without Retry-After, no dropped call
    assert in_flight_503 > 0, "the failover was not under load"
    assert waiting, "no call was waiting for the standby when the primary died"
    assert all(c.status == 503 for c in waiting), waiting
    assert statuses[("issue", 201)] > 0
    assert lost_calls == []
    assert _half_done(rows) == []
    # The feed: every outbox row sequenced, 1..N with no gap, one event per sequence.
    assert sequence_faults(feed) == []
    assert len(feed) == len(rows["outbox"])
    assert {e.id for e in feed} == {r["event_id"] for r in rows["outbox"]}
    # The subscriber: every event of the feed, in order once duplicates are dropped.
    assert sequence_faults(received) == []
    assert events_lost == 0
    assert reused == []
    # The gateways go on from Redis: valid keys pass, revoked ones do not; an unknown key is
    # refused with 503 while key_service cannot say that it does not exist.
    assert wrongly_forwarded == 0
    assert late == []
    assert set(load.of("valid")) == {200}, load.of("valid")
    assert set(load.of("revoked")) == {401}, load.of("revoked")
    assert set(load.of("unknown")) <= {401, 503}, load.of("unknown")
    assert load.other == []


async def test_postgres_failover_with_asynchronous_replication_loses_acknowledged_calls(
    postgres_pair: Callable[[bool], PostgresPair], make_stack: Callable[[StackOptions], Stack],
    admin_session: Any, http: aiohttp.ClientSession,
    figures: Callable[[str, dict[str, object]], None],
) -> None:
    # What docs/scaling.md says an asynchronous standby costs, shown: the standby stops
    # receiving (its link cut), an issue and a revocation are answered 201 and 200 and
    # published, then the primary dies and the standby takes over without them.
    pair = postgres_pair(False)
    # L1 as it ships (kept while the process knows itself current), with a short TTL and
    # heartbeats well within it (so that a current process keeps its entries): the remedy
    # below counts on each gateway process seeing that key_service's history is not the one it
    # applied, and no longer counting itself current.
    stack = make_stack(replace(OPTIONS, database_url=pair.url, extra_gateway_env={
        "GATEWAY_L1_TTL": "0.5", "GATEWAY_NEGATIVE_TTL": "0.5",
        "GATEWAY_HEARTBEAT_INTERVAL": "0.1"}))
    subscriber = await subscribe(stack, RABBITMQ_URL)
    try:
        admin = await admin_session(stack)
        probe = Probe(http, stack)
        kept = await admin.issue("issued before the cut")
        await subscriber.wait_for(1, BOUND)
        await asyncio.to_thread(pair.wait_caught_up)
        pair.replication.cut()
        lost_key = await admin.issue("issued while the standby lags")
        await admin.revoke(kept[0])
        await subscriber.wait_for(3, BOUND)

        async def applied() -> bool:
            return (await probe.statuses(kept) == [401, 401]
                    and await probe.statuses(lost_key) == [200, 200])
        await eventually(applied, "both events reached the gateways", BOUND)
        published = {e.sequence: e.id for e in subscriber.unique()}

        await asyncio.to_thread(pair.primary.kill)
        await asyncio.to_thread(pair.standby.promote)

        async def answering() -> bool:
            return (await admin.try_get(kept[0]))[0] == 200
        await eventually(answering, "key_service answers from the new primary", BOUND)
        lost_issue_status, _ = await admin.try_get(lost_key[0])
        kept_status = (await admin.try_get(kept[0]))[1]["status"]
        after = await admin.issue("issued after the failover")
        await subscriber.wait_until(lambda e: e.record.key_id == after[0], "the new key", BOUND)
        reused = [e for e in subscriber.unique() if published.get(e.sequence, e.id) != e.id]
        feed = await read_feed(http, stack, subscriber.verifier)
        gateways = {"lost key": await probe.statuses(lost_key),
                    "lost revocation": await probe.statuses(kept),
                    "new key": await probe.statuses(after)}

        # The operator's remedy (docs/scaling.md): empty the gateways' Redis keys; once their
        # in-process caches expire (each process saw its watermark above key_service's newest
        # sequence, so it no longer counts itself current) they ask key_service, which does not
        # know the lost key.
        await asyncio.to_thread(delete_redis_prefix, stack.redis_prefix)

        async def lost_key_refused() -> bool:
            return await probe.statuses(lost_key) == [401, 401]
        await eventually(lost_key_refused, "the lost key is refused once Redis is emptied", BOUND)
    finally:
        await subscriber.close()

    figures("PostgreSQL failover, asynchronous standby", {
        "acknowledged calls lost": int(lost_issue_status == 404) + int(kept_status == "active"),
        "sequence numbers given twice": len(reused),
        "gateway processes still passing the key the database lost":
            sum(s == 200 for s in gateways["lost key"]),
    })
    # The issue answered 201 (its secret shown) is gone, and so is the revocation answered 200.
    assert lost_issue_status == 404
    assert kept_status == "active"
    # The gateways keep what the events told them: the lost key passes, the lost revocation
    # holds. key_service cannot revoke the lost key (it does not know it).
    assert gateways == {"lost key": [200, 200], "lost revocation": [401, 401],
                        "new key": [200, 200]}
    # The feed starts again after the last event the standby had: sequence 2 is the new key's
    # issue now, although subscribers were sent the lost key's issue as sequence 2.
    assert [e.sequence for e in feed] == [1, 2]
    assert feed[1].record.key_id == after[0]
    assert [e.sequence for e in reused] == [2]
