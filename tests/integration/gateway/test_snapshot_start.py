"""A gateway process starts from the revocation snapshot (Redis's copy, else key_service's) and
reads only the feed after it, keeping every guarantee of reading the whole feed: a revocation
made while it was down is enforced from its first request, a replayed older record in Redis
never revives a revoked key, and with key_service away it does not become ready. Knowing which
keys exist, it looks up made-up key IDs only within a budget, while a key issued a moment ago
still works at once.

The real key_service app (SQLite) and the real Redis; the synchronizer is driven by hand (one
``catch_up`` is the start of a process), without the AMQP consumer.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from apikeys_shared.config import Env, load_secrets
from apikeys_shared.keys import new_key_id
from apikeys_shared.snapshot import SignedSnapshot, Snapshot
from auth_gateway.appkeys import KEY_SERVICE, METRICS, REDIS
from auth_gateway.errors import KeyServiceUnavailable
from auth_gateway.snapshots import SnapshotSource
from auth_gateway.sync import FEED_READ, SYNCED, Synchronizer, SyncSettings
from key_service.appkeys import ENGINE
from key_service.models import ApiKey, OutboxEvent
from tests.support.procs import free_port

from .conftest import Gateway, GatewayFactory
from .keyring import FakeKeyService, Keyring
from .realks import RealKeyService


@dataclass
class Started:
    """A gateway process that has started (its first catch-up done), and its snapshot source."""

    gateway: Gateway
    sync: Synchronizer
    source: SnapshotSource

    def count(self, name: str, **labels: str) -> float:
        return self.gateway.metric(f"{name}_total", labels)

    @property
    def feed_events(self) -> float:
        """Events this process applied from the feed."""
        return self.count("gateway_events", source="feed", outcome="applied")


async def _start(make_gateway: GatewayFactory, secrets_env: dict[str, str], url: str,
                 *, max_behind: int = 1000, catch_up: bool = True, **env: str) -> Started:
    gateway = await make_gateway(sync=False, KEY_SERVICE_URL=url, **env)
    app = gateway.app
    verifier = load_secrets(Env(secrets_env), signer=False, verifier=True).verifier
    assert verifier is not None
    source = SnapshotSource(redis=app[REDIS], key_service=app[KEY_SERVICE], verifier=verifier,
                            metrics=app[METRICS], prefix=gateway.prefix, max_behind=max_behind)
    sync = Synchronizer(
        sink=gateway.store, feed=app[KEY_SERVICE], metrics=app[METRICS],
        settings=SyncSettings(rabbitmq_url="", exchange="", queue_prefix="",
                              feed_poll_interval=1.0),
        synced=app[SYNCED], feed_read=app[FEED_READ], snapshots=source,
    )
    if catch_up:
        assert await sync.catch_up()
    return Started(gateway, sync, source)


async def _redis_copy(started: Started, secrets_env: dict[str, str]) -> Snapshot:
    """The snapshot Redis holds for the gateways of ``started``'s prefix, verified."""
    body, signature, signing_key = await started.gateway.redis.hmget(
        started.source.redis_key, ["body", "signature", "signing_key"])
    verifier = load_secrets(Env(secrets_env), signer=False, verifier=True).verifier
    assert verifier is not None
    return SignedSnapshot(body=body, signature=signature.decode(),
                          signing_key=signing_key.decode()).verify(verifier)


async def _restore(engine: AsyncEngine, restored_at: int, lost: list[dict[str, str]]) -> None:
    """A database restored from a backup taken at ``restored_at``: the events after it and the
    keys issued since (``lost``, their headers) are gone."""
    async with engine.begin() as conn:
        await conn.execute(delete(OutboxEvent).where(OutboxEvent.sequence > restored_at))
        await conn.execute(delete(ApiKey).where(
            ApiKey.key_id.in_([h["X-AuthenticationKeyId"] for h in lost])))


async def _status(gateway: Gateway, headers: dict[str, str]) -> int:
    resp = await gateway.client.get("/api/x", headers=headers)
    await resp.release()
    return int(resp.status)


async def test_a_new_process_reads_the_snapshot_and_only_the_feed_after_it(
    make_gateway: GatewayFactory, real_key_service: RealKeyService, secrets_env: dict[str, str],
) -> None:
    keys = [await real_key_service.issue(f"key {n}") for n in range(12)]
    for headers in keys[:8]:
        await real_key_service.revoke(headers["X-AuthenticationKeyId"])
    started = await _start(make_gateway, secrets_env, real_key_service.url)
    assert started.count("gateway_snapshots", source="key_service", outcome="used") == 1
    assert started.feed_events == 0  # 20 events of history, none of them read
    assert started.sync.tracker.applied == 20
    for headers in keys[:8]:
        assert await _status(started.gateway, headers) == 401
    for headers in keys[8:]:
        assert await _status(started.gateway, headers) == 200
    # What comes after the snapshot arrives as before.
    await real_key_service.revoke(keys[8]["X-AuthenticationKeyId"])
    assert await started.sync.catch_up()
    assert started.feed_events == 1
    assert await _status(started.gateway, keys[8]) == 401


async def test_a_key_revoked_while_no_gateway_ran_is_refused_at_the_first_request(
    make_gateway: GatewayFactory, real_key_service: RealKeyService, secrets_env: dict[str, str],
) -> None:
    headers = await real_key_service.issue("revoked while down")
    key_id = headers["X-AuthenticationKeyId"]
    first = await _start(make_gateway, secrets_env, real_key_service.url)
    assert await _status(first.gateway, headers) == 200  # Redis now holds its active record
    active = await first.gateway.redis.get(first.gateway.store.redis_key(key_id))
    assert active is not None
    await real_key_service.revoke(key_id)
    # Nothing applied the revocation: Redis still holds the genuine active record, as a
    # replay would put it back.
    assert await first.gateway.redis.get(first.gateway.store.redis_key(key_id)) == active
    # (max_behind=0: the fresh snapshot, not Redis's copy plus the feed, which would write the
    # revocation into Redis before the first request.)
    later = await _start(make_gateway, secrets_env, real_key_service.url, max_behind=0)
    assert later.feed_events == 0
    assert await later.gateway.redis.get(later.gateway.store.redis_key(key_id)) == active
    assert await _status(later.gateway, headers) == 401
    # And put back once more, after the start: still refused (revoked is terminal).
    await later.gateway.redis.set(later.gateway.store.redis_key(key_id), active)
    later.gateway.store.evict(key_id)
    assert await _status(later.gateway, headers) == 401


async def test_the_next_process_takes_redis_s_copy_and_the_feed_after_it(
    make_gateway: GatewayFactory, real_key_service: RealKeyService, secrets_env: dict[str, str],
) -> None:
    keys = [await real_key_service.issue(f"key {n}") for n in range(3)]
    await real_key_service.revoke(keys[0]["X-AuthenticationKeyId"])
    first = await _start(make_gateway, secrets_env, real_key_service.url)
    assert first.count("gateway_snapshots", source="key_service", outcome="used") == 1
    assert (await _redis_copy(first, secrets_env)).sequence == 4

    await real_key_service.revoke(keys[1]["X-AuthenticationKeyId"])  # after Redis's copy
    second = await _start(make_gateway, secrets_env, real_key_service.url)
    assert second.count("gateway_snapshots", source="redis", outcome="used") == 1
    assert second.count("gateway_snapshots", source="key_service", outcome="used") == 0
    assert second.feed_events == 1
    assert [await _status(second.gateway, h) for h in keys] == [401, 401, 200]


async def test_a_copy_far_behind_the_feed_is_replaced_by_a_fresh_one(
    make_gateway: GatewayFactory, real_key_service: RealKeyService, secrets_env: dict[str, str],
) -> None:
    keys = [await real_key_service.issue(f"key {n}") for n in range(4)]
    first = await _start(make_gateway, secrets_env, real_key_service.url)
    for headers in keys[:3]:
        await real_key_service.revoke(headers["X-AuthenticationKeyId"])
    second = await _start(make_gateway, secrets_env, real_key_service.url, max_behind=2)
    assert second.count("gateway_snapshots", source="redis", outcome="stale") == 1
    assert second.count("gateway_snapshots", source="key_service", outcome="used") == 1
    assert second.feed_events == 0
    assert (await _redis_copy(first, secrets_env)).sequence == 7
    assert [await _status(second.gateway, h) for h in keys] == [401, 401, 401, 200]


@pytest.mark.parametrize("tamper", ["body", "signature"])
async def test_a_copy_in_redis_that_does_not_verify_is_not_used(
    make_gateway: GatewayFactory, real_key_service: RealKeyService, secrets_env: dict[str, str],
    tamper: str,
) -> None:
    headers = await real_key_service.issue("revoked")
    await real_key_service.revoke(headers["X-AuthenticationKeyId"])
    first = await _start(make_gateway, secrets_env, real_key_service.url)
    redis, key = first.gateway.redis, first.source.redis_key
    if tamper == "body":
        # The revocation taken out of a copy that still claims the same sequence.
        body = json.loads(await redis.hget(key, "body"))
        body["revoked"] = []
        await redis.hset(key, "body", json.dumps(body, separators=(",", ":"), sort_keys=True))
    else:
        await redis.hset(key, "signature", "A" * 88)
    second = await _start(make_gateway, secrets_env, real_key_service.url)
    assert second.count("gateway_snapshots", source="redis", outcome="rejected") == 1
    assert second.count("gateway_snapshots", source="key_service", outcome="used") == 1
    assert await _status(second.gateway, headers) == 401


async def test_with_key_service_away_a_process_does_not_become_ready(
    make_gateway: GatewayFactory, real_key_service: RealKeyService, secrets_env: dict[str, str],
) -> None:
    await real_key_service.issue("k")
    await _start(make_gateway, secrets_env, real_key_service.url)  # Redis holds a copy now
    away = await _start(make_gateway, secrets_env, f"http://127.0.0.1:{free_port()}",
                        catch_up=False)
    with pytest.raises(KeyServiceUnavailable):
        await away.sync.catch_up()  # the copy verifies, but the feed after it is unreadable
    assert not away.gateway.app[SYNCED].is_set()
    assert not away.gateway.app[FEED_READ].is_set()
    resp = await away.gateway.client.get("/readyz")
    assert resp.status == 503


async def test_a_key_service_without_snapshots_means_reading_the_whole_feed(
    make_gateway: GatewayFactory, secrets_env: dict[str, str],
    key_service: tuple[FakeKeyService, TestServer],
) -> None:
    # The key_service stand-in has no /internal/v1/snapshot (a key_service older than the
    # gateway): 404, and the process reads the feed from its beginning.
    fake, server = key_service
    keyring = Keyring(secrets_env)
    key = keyring.issue()
    revoked = keyring.revoke(key)
    fake.feed = [keyring.signed(key).to_json(), keyring.signed(revoked).to_json()]
    url = str(server.make_url("")).rstrip("/")
    started = await _start(make_gateway, secrets_env, url)
    assert started.count("gateway_snapshots", source="key_service", outcome="absent") == 1
    assert started.feed_events == 2
    assert started.gateway.store.ledger.is_revoked(key.key_id)
    assert not started.gateway.store.ledger.is_revoked(new_key_id())
    # Without a snapshot listing the keys, no ID counts as made up: none is budgeted.
    assert started.gateway.store.ledger.exists(new_key_id()) is None


async def test_made_up_key_ids_cost_key_service_at_most_the_budget(
    make_gateway: GatewayFactory, real_key_service: RealKeyService, secrets_env: dict[str, str],
) -> None:
    before = (await real_key_service.issue("issued before the start"))["X-AuthenticationKeyId"]
    # One lookup of an ID it does not know, then one every 2 s.
    started = await _start(make_gateway, secrets_env, real_key_service.url,
                           GATEWAY_UNKNOWN_KEY_LOOKUPS="0.5")
    store, gateway = started.gateway.store, started.gateway

    def lookups(result: str) -> float:
        tier = "key_service" if result == "miss" else "unknown"
        return gateway.metric("gateway_cache_lookups_total", {"tier": tier, "result": result})

    # Issued after the start, its event not applied yet: looked up within the budget, so it
    # works at once.
    moment_ago = (await real_key_service.issue("a moment ago"))["X-AuthenticationKeyId"]
    record = await store.lookup(moment_ago)
    assert record is not None
    assert record.active

    began = time.monotonic()
    for _ in range(300):
        assert await store.lookup(new_key_id()) is None
    elapsed = time.monotonic() - began
    assert lookups("miss") <= 0.5 * elapsed + 1  # what came back meanwhile
    assert lookups("miss") + lookups("refused") == 300

    # The budget spent: keys the process knows of are looked up all the same...
    assert await store.lookup(before) is not None
    # ...a key issued now is refused until its event arrives...
    unknown_yet = (await real_key_service.issue("its event not here yet"))["X-AuthenticationKeyId"]
    refused = lookups("refused")
    while lookups("refused") == refused:  # whatever came back meanwhile, spent again
        assert await store.lookup(new_key_id()) is None
    assert await store.lookup(unknown_yet) is None
    # ...and works once it has.
    assert await started.sync.catch_up()
    assert await store.lookup(unknown_yet) is not None


async def test_a_new_key_s_first_requests_at_once_spend_one_lookup(
    make_gateway: GatewayFactory, real_key_service: RealKeyService, secrets_env: dict[str, str],
) -> None:
    await real_key_service.issue("before")
    started = await _start(make_gateway, secrets_env, real_key_service.url,
                           GATEWAY_UNKNOWN_KEY_LOOKUPS="1")
    new = await real_key_service.issue("issued a moment ago")  # its event not applied
    statuses = await asyncio.gather(*(_status(started.gateway, new) for _ in range(10)))
    assert statuses == [200] * 10


async def _last(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(
            select(func.coalesce(func.max(OutboxEvent.sequence), 0)))).scalar_one())


async def test_a_snapshot_of_a_history_the_database_no_longer_holds_is_not_used(
    make_gateway: GatewayFactory, real_key_service: RealKeyService, secrets_env: dict[str, str],
) -> None:
    # A database restored from a backup (or an asynchronous standby promoted) gives sequence
    # numbers out again: neither key_service's cached snapshot nor Redis's copy of the old
    # history may be started from, or a revocation made on the new history would be missed.
    ks = real_key_service
    engine = ks.server.app[ENGINE]
    k1 = await ks.issue("k1")
    k1_id = k1["X-AuthenticationKeyId"]
    first = await _start(make_gateway, secrets_env, ks.url)
    assert await _status(first.gateway, k1) == 200  # Redis holds K1's active record
    active = await first.gateway.redis.get(first.gateway.store.redis_key(k1_id))
    restored_at = await _last(engine)
    lost = [await ks.issue(f"lost {n}") for n in range(2)]
    await _start(make_gateway, secrets_env, ks.url, max_behind=0)  # snapshots of the old history

    await _restore(engine, restored_at, lost)
    # The new history: K1 revoked while no gateway ran, two keys issued.
    await ks.revoke(k1_id)
    new = [(await ks.issue(f"new {n}"))["X-AuthenticationKeyId"] for n in range(2)]
    await first.gateway.redis.set(first.gateway.store.redis_key(k1_id), active)  # a replay

    later = await _start(make_gateway, secrets_env, ks.url)
    assert later.count("gateway_snapshots", source="redis", outcome="stale") == 1
    assert later.count("gateway_snapshots", source="key_service", outcome="used") == 1
    assert later.gateway.store.ledger.is_revoked(k1_id)
    assert all(later.gateway.store.ledger.exists(key_id) for key_id in new)
    assert await _status(later.gateway, k1) == 401


async def test_after_a_restore_redis_s_copy_is_replaced_though_it_claims_a_later_sequence(
    make_gateway: GatewayFactory, real_key_service: RealKeyService, secrets_env: dict[str, str],
) -> None:
    # The old history went further than the restored one will: its copy in Redis is genuinely
    # signed at a sequence the new feed has not reached. Every start passes it over, so the
    # fresh snapshot must take its place, or every later start would fetch one again.
    ks = real_key_service
    engine = ks.server.app[ENGINE]
    k1 = await ks.issue("k1")
    await _start(make_gateway, secrets_env, ks.url)
    restored_at = await _last(engine)
    lost = [await ks.issue(f"lost {n}") for n in range(3)]
    old = await _start(make_gateway, secrets_env, ks.url, max_behind=0)
    assert (await _redis_copy(old, secrets_env)).sequence == restored_at + 3

    await _restore(engine, restored_at, lost)
    await ks.revoke(k1["X-AuthenticationKeyId"])  # the new history: one event

    later = await _start(make_gateway, secrets_env, ks.url)
    assert later.count("gateway_snapshots", source="redis", outcome="stale") == 1
    assert later.count("gateway_snapshots", source="key_service", outcome="used") == 1
    assert (await _redis_copy(later, secrets_env)).sequence == restored_at + 1
    next_one = await _start(make_gateway, secrets_env, ks.url)
    assert next_one.count("gateway_snapshots", source="redis", outcome="used") == 1
    assert await _status(next_one.gateway, k1) == 401
