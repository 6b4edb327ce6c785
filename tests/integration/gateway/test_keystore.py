"""KeyStore against the real Redis and a key_service stand-in served over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import aiohttp
import pytest
import redis.asyncio as aioredis
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpServer
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from apikeys_shared.config import Env, load_secrets
from apikeys_shared.errors import SignatureError
from apikeys_shared.keys import new_key_id
from apikeys_shared.signing import Signer, generate_signing_key
from auth_gateway import keystore, ledger
from auth_gateway.auth import Authenticator, Denial, Identity
from auth_gateway.errors import RecordRejected, StoreUnavailable, VerificationUnavailable
from auth_gateway.exchange import Exchange
from auth_gateway.key_service_client import KeyServiceClient
from auth_gateway.keystore import Held, KeyStore
from auth_gateway.metrics import Metrics
from auth_gateway.throttle import FailureCounter
from tests.support.faultproxy import FaultProxy
from tests.support.services import REDIS
from tests.support.stack import eventually

from .keyring import FakeKeyService, IssuedKey, Keyring


class Clock:
    """One of the key store's clocks, moved by hand: time passes only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    store: KeyStore
    keyring: Keyring
    fake: FakeKeyService
    metrics: Metrics
    redis: aioredis.Redis
    redis_proxy: FaultProxy
    # Another process's store on the same Redis (straight, not through the fault proxy), whose
    # signature checks are counted.
    other_store: Callable[[], tuple[KeyStore, list[bytes]]]
    clock: Clock
    # Unix time as the store sees it (for rolled keys' revokes_at), moved by hand too.
    wall: Clock
    prefix: str

    def sample(self, name: str, *labels: str) -> float:
        value = self.metrics.registry.get_sample_value(
            f"{name}_total", dict(zip(self._labels(name), labels, strict=True))
        )
        return value or 0.0

    @staticmethod
    def _labels(name: str) -> tuple[str, ...]:
        return {
            "gateway_rejected_records": ("origin", "reason"),
            "gateway_cache_lookups": ("tier", "result"),
        }[name]


@pytest.fixture
async def rig(
    secrets_env: dict[str, str], redis_client: aioredis.Redis, redis_prefix: str,
    aiohttp_server: AiohttpServer,
    fault_proxy: Callable[[str, int], FaultProxy],
) -> AsyncIterator[Rig]:
    keyring = Keyring(secrets_env)
    secrets = load_secrets(Env(secrets_env), signer=False, verifier=True)
    assert secrets.verifier is not None
    fake = FakeKeyService(secrets.internal_token)
    server = await aiohttp_server(fake.app())
    proxy = fault_proxy(*REDIS.address)
    redis = aioredis.Redis(
        host="127.0.0.1", port=proxy.port, socket_timeout=0.5, socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    metrics = Metrics()
    clock = Clock()
    wall = Clock(time.time())
    async with aiohttp.ClientSession() as session:
        client = KeyServiceClient(
            session, str(server.make_url("/")), secrets.internal_token, timeout=2.0
        )
        store = KeyStore(
            redis=redis, key_service=client, verifier=secrets.verifier, metrics=metrics,
            prefix=redis_prefix, negative_ttl=60.0, clock=clock, wall_clock=wall,
        )

        def other_store() -> tuple[KeyStore, list[bytes]]:
            verifier = secrets.verifier
            assert verifier is not None
            checked: list[bytes] = []

            class Counting(type(verifier)):  # type: ignore[misc]
                def verify(self, body: bytes, signature: str, signing_key: str) -> None:
                    checked.append(body)
                    verifier.verify(body, signature, signing_key)

            other = KeyStore(
                redis=redis_client, key_service=client, verifier=Counting(verifier._keys),
                metrics=Metrics(), prefix=redis_prefix, negative_ttl=60.0,
            )
            return other, checked

        yield Rig(store, keyring, fake, metrics, redis_client, proxy, other_store, clock, wall,
                  redis_prefix)
    await redis.aclose()


async def asked(fake: FakeKeyService, calls: int) -> None:
    """Until key_service has been asked ``calls`` times in all (answers held back or not)."""
    async def check() -> bool:
        return fake.calls >= calls
    await eventually(check, f"key_service asked {calls} times")


async def test_miss_goes_to_key_service_and_fills_redis_then_l1(rig: Rig) -> None:
    key = rig.keyring.issue("billing")
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    assert await rig.store.lookup(key.key_id) == key.record
    assert await rig.store.lookup(key.key_id) == key.record
    assert rig.fake.calls == 1
    assert await rig.redis.get(rig.store.redis_key(key.key_id)) is not None
    assert rig.sample("gateway_cache_lookups", "l1", "hit") == 1


async def test_concurrent_misses_share_one_key_service_call(rig: Rig) -> None:
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    rig.fake.hold = asyncio.Event()
    lookups = asyncio.gather(*(rig.store.lookup(key.key_id) for _ in range(25)))
    await asked(rig.fake, 1)
    rig.fake.hold.set()
    results = await lookups
    assert all(r == key.record for r in results)
    assert rig.fake.calls == 1


async def test_unknown_is_negative_cached_until_issued_event(rig: Rig) -> None:
    key = rig.keyring.issue()
    assert await rig.store.lookup(key.key_id) is None
    assert await rig.store.lookup(key.key_id) is None
    assert rig.fake.calls == 1
    assert await rig.store.apply(rig.keyring.signed(key)) is True
    assert await rig.store.lookup(key.key_id) == key.record
    assert rig.fake.calls == 1


async def test_apply_only_newer_and_revoked_is_terminal(rig: Rig) -> None:
    key = rig.keyring.issue()
    revoked = rig.keyring.revoke(key)
    assert await rig.store.apply(rig.keyring.signed(revoked)) is True
    assert await rig.store.apply(rig.keyring.signed(key)) is False  # older
    later_active = rig.keyring.issue()  # burns a higher sequence
    revived = type(key)(key.key_id, key.secret, key.record, later_active.sequence)
    assert await rig.store.apply(rig.keyring.signed(revived)) is False  # never revive
    rig.store.evict(key.key_id)
    found = await rig.store.lookup(key.key_id)
    assert found is not None
    assert found.status == "revoked"
    assert rig.fake.calls == 0


async def test_a_catch_up_settles_records_redis_holds_with_one_read(rig: Rig) -> None:
    key, other = rig.keyring.issue(), rig.keyring.issue()
    issued, revoked = rig.keyring.signed(key), rig.keyring.signed(rig.keyring.revoke(key))
    fresh = rig.keyring.signed(other)
    assert await rig.store.apply(revoked) is True  # stored by a process running all along
    replay, checked = rig.other_store()  # a restarted process replays the feed
    assert await replay.apply(issued, "feed", likely_stored=True) is False  # older than Redis's
    assert await replay.apply(fresh, "feed", likely_stored=True) is True  # nothing there: taken
    checked.clear()
    assert await replay.apply(revoked, "feed", likely_stored=True) is False  # this very record
    assert checked == [revoked.body]  # the event itself, not Redis's copy of it again
    assert await rig.redis.get(rig.store.redis_key(key.key_id)) == revoked.to_text().encode()
    assert await rig.redis.get(rig.store.redis_key(other.key_id)) == fresh.to_text().encode()
    # What Redis holds is compared byte for byte or verified, never trusted as it is: a record
    # whose signature does not verify is replaced.
    await rig.redis.set(rig.store.redis_key(other.key_id), fresh.to_text().replace(
        '"signature":"', '"signature":"A'))
    again, _ = rig.other_store()
    assert await again.apply(fresh, "feed", likely_stored=True) is True
    assert await rig.redis.get(rig.store.redis_key(other.key_id)) == fresh.to_text().encode()


async def test_revocation_replaces_active_in_redis_and_l1(rig: Rig) -> None:
    key = rig.keyring.issue()
    await rig.store.apply(rig.keyring.signed(key))
    assert (await rig.store.lookup(key.key_id)) == key.record
    assert await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(key))) is True
    found = await rig.store.lookup(key.key_id)
    assert found is not None
    assert found.status == "revoked"


async def test_an_entry_kept_past_its_ttl_while_current_still_gives_way_to_a_revocation(
    rig: Rig,
) -> None:
    current_as_of: list[float] = [rig.clock.now]
    rig.store.vouch_with(lambda: current_as_of[0])
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    assert await rig.store.lookup(key.key_id) == key.record
    for _ in range(5):  # five lifetimes, the process current all along
        rig.clock.now += 25.0
        current_as_of[0] = rig.clock.now - 1.0
        assert await rig.store.lookup(key.key_id) == key.record
    assert rig.fake.calls == 1
    assert rig.sample("gateway_cache_lookups", "redis", "hit") == 0
    assert await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(key))) is True
    found = await rig.store.lookup(key.key_id)
    assert found is not None
    assert found.status == "revoked"
    # And once the process stops knowing itself current, the entry goes within the TTL.
    other = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(other), other.key_id)
    assert await rig.store.lookup(other.key_id) == other.record
    rig.clock.now += 30.0  # the last moment vouched for is now 31 s ago
    assert await rig.store.lookup(other.key_id) == other.record
    assert rig.sample("gateway_cache_lookups", "redis", "hit") == 1


async def test_forged_event_is_rejected_counted_and_not_stored(rig: Rig) -> None:
    key = rig.keyring.issue()
    forger = Signer.from_base64(generate_signing_key()[0])
    with pytest.raises(RecordRejected):
        await rig.store.apply(rig.keyring.signed(key, signer=forger))
    assert rig.sample("gateway_rejected_records", "event", "signature") == 1
    assert await rig.redis.get(rig.store.redis_key(key.key_id)) is None


async def test_an_event_that_does_not_verify_sends_its_key_to_key_service_once(
    rig: Rig, caplog: pytest.LogCaptureFixture,
) -> None:
    # A forged revocation is never applied, but the copies it casts doubt on are not used
    # either: key_service's verified answer decides, once, and the key is cached again.
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    assert await rig.store.lookup(key.key_id) == key.record  # key_service, then Redis and L1
    assert rig.fake.calls == 1
    forger = Signer.from_base64(generate_signing_key()[0])
    with pytest.raises(RecordRejected):
        await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(key), signer=forger))
    assert rig.store.cached(key.key_id) is None
    assert "APIKEYS_VERIFY_KEYS does not hold" in caplog.text
    assert rig.metrics.registry.get_sample_value("gateway_keys_in_doubt") == 1
    assert await rig.store.lookup(key.key_id) == key.record
    assert rig.fake.calls == 2  # not Redis's copy: key_service's answer
    assert rig.metrics.registry.get_sample_value("gateway_keys_in_doubt") == 0
    assert rig.sample("gateway_cache_lookups", "redis", "skipped") == 1
    assert await rig.store.lookup(key.key_id) == key.record
    assert rig.fake.calls == 2  # the doubt is settled: L1 again
    assert rig.store.cached(key.key_id) is not None


async def test_a_revocation_signed_by_a_key_the_gateway_lacks_refuses_the_key(rig: Rig) -> None:
    # key_service's signing key rotated before the gateways were given the new verify key:
    # the revocation cannot be verified, and the key must not go on working from L1 or Redis.
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    assert await rig.store.lookup(key.key_id) == key.record
    rotated = Signer.from_base64(generate_signing_key()[0])
    revoked = rig.keyring.signed(rig.keyring.revoke(key), signer=rotated)
    rig.fake.put(revoked, key.key_id)  # key_service signs everything with the new key now
    with pytest.raises(RecordRejected):
        await rig.store.apply(revoked)
    for _ in range(2):
        with pytest.raises(VerificationUnavailable):
            await rig.store.lookup(key.key_id)
    assert rig.fake.calls == 3
    assert rig.sample("gateway_rejected_records", "key_service", "signature") == 2


async def test_a_lookup_under_way_when_its_key_turns_suspect_starts_over(rig: Rig) -> None:
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    rig.fake.hold = asyncio.Event()
    first = asyncio.create_task(rig.store.lookup(key.key_id))
    await asked(rig.fake, 1)
    forger = Signer.from_base64(generate_signing_key()[0])
    with pytest.raises(RecordRejected):
        await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(key), signer=forger))
    rig.fake.hold.set()
    assert await first == key.record
    assert rig.fake.calls == 2  # the answer that began before the doubt was not taken
    assert rig.store.cached(key.key_id) is not None


async def test_a_verified_revocation_settles_a_suspect_key(rig: Rig) -> None:
    # Revoked is terminal: nothing is left to doubt, so the key is cached again (revoked), and
    # no lookup of it goes to Redis or key_service any more.
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    assert await rig.store.lookup(key.key_id) == key.record
    revoked = rig.keyring.revoke(key)
    await rig.store.apply(rig.keyring.signed(revoked))
    forger = Signer.from_base64(generate_signing_key()[0])
    with pytest.raises(RecordRejected):
        await rig.store.apply(rig.keyring.signed(revoked, signer=forger))
    calls = rig.fake.calls
    for _ in range(3):
        found = await rig.store.lookup(key.key_id)
        assert found is not None
        assert found.status == "revoked"
    assert rig.store.cached(key.key_id) is not None
    assert rig.fake.calls == calls


async def test_a_doubted_load_is_not_used_though_another_settled_the_doubt(rig: Rig) -> None:
    # A lookup waits on a load that began before the doubt (a slow Redis read of the active
    # record); meanwhile another lookup asks key_service, which answers the revocation and so
    # settles the doubt. The first lookup must not then take its load's stale answer.
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    assert await rig.store.lookup(key.key_id) == key.record  # Redis holds the active record
    rig.store.evict(key.key_id)
    read = rig.store._read_redis
    read_done, release = asyncio.Event(), asyncio.Event()

    async def slow_read(key_id: str) -> Held | None:
        held = await read(key_id)
        read_done.set()
        await release.wait()
        return held
    rig.store._read_redis = slow_read  # type: ignore[method-assign]
    first = asyncio.create_task(rig.store.lookup(key.key_id))
    await read_done.wait()
    revoked = rig.keyring.revoke(key)
    rig.fake.put(rig.keyring.signed(revoked), key.key_id)
    rotated = Signer.from_base64(generate_signing_key()[0])
    with pytest.raises(RecordRejected):
        await rig.store.apply(rig.keyring.signed(revoked, signer=rotated))
    rig.fake.hold = asyncio.Event()
    calls = rig.fake.calls
    second = asyncio.create_task(rig.store.lookup(key.key_id))
    await asked(rig.fake, calls + 1)
    await rig.store.apply(rig.keyring.signed(rig.keyring.issue()))  # any other change
    rig.fake.hold.set()  # key_service answers the second lookup first...
    answered = await second
    release.set()  # ...then the first lookup's Redis read comes back
    for found in (answered, await first):
        assert found is not None
        assert found.status == "revoked"


async def test_past_the_bound_on_suspect_keys_every_key_is_doubted(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # A flood of forged events must not push out the mark of a key whose revocation this
    # gateway could not verify: past the bound, no Redis copy of any key is trusted.
    monkeypatch.setattr(ledger, "SUSPECT_LIMIT", 3)
    key, bystander = rig.keyring.issue(), rig.keyring.issue()
    for k in (key, bystander):
        rig.fake.put(rig.keyring.signed(k), k.key_id)
        assert await rig.store.lookup(k.key_id) == k.record  # Redis holds both
    rotated = Signer.from_base64(generate_signing_key()[0])
    revoked = rig.keyring.signed(rig.keyring.revoke(key), signer=rotated)
    rig.fake.put(revoked, key.key_id)
    with pytest.raises(RecordRejected):
        await rig.store.apply(revoked)
    forger = Signer.from_base64(generate_signing_key()[0])
    for _ in range(3):
        with pytest.raises(RecordRejected):
            await rig.store.apply(rig.keyring.signed(rig.keyring.issue(), signer=forger))
    assert "no longer trusts the records in Redis" in caplog.text
    assert rig.metrics.registry.get_sample_value("gateway_keys_in_doubt") == -1
    with pytest.raises(VerificationUnavailable):
        await rig.store.lookup(key.key_id)  # not Redis's active copy
    rig.store.evict(bystander.key_id)
    calls = rig.fake.calls
    assert await rig.store.lookup(bystander.key_id) == bystander.record
    assert rig.fake.calls == calls + 1  # asked key_service, not Redis
    assert await rig.store.lookup(bystander.key_id) == bystander.record
    assert rig.fake.calls == calls + 1  # and cached from its answer


async def test_a_forged_event_does_not_keep_other_keys_out_of_l1(rig: Rig) -> None:
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    rig.fake.hold = asyncio.Event()
    task = asyncio.create_task(rig.store.lookup(key.key_id))
    await asked(rig.fake, 1)
    forger = Signer.from_base64(generate_signing_key()[0])
    with pytest.raises(RecordRejected):
        await rig.store.apply(rig.keyring.signed(rig.keyring.issue(), signer=forger))
    rig.fake.hold.set()
    assert await task == key.record
    assert rig.store.cached(key.key_id) is not None


async def test_a_doubt_between_a_load_ending_and_its_lookup_resuming_is_not_missed(
    rig: Rig,
) -> None:
    # The load is over (and out of the in-flight map) but its lookup has not resumed yet when
    # the doubt arrives: the lookup must start over, not hand out the load's active record.
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    assert await rig.store.lookup(key.key_id) == key.record  # Redis holds the active record
    rig.store.evict(key.key_id)
    rotated = Signer.from_base64(generate_signing_key()[0])
    revoked = rig.keyring.signed(rig.keyring.revoke(key), signer=rotated)
    rig.fake.put(revoked, key.key_id)  # key_service's answer no longer verifies either
    lookup = asyncio.create_task(rig.store.lookup(key.key_id))
    await asyncio.sleep(0)  # the lookup started its load and waits on it
    load = rig.store._inflight[key.key_id]

    async def consumer() -> None:
        await load  # resumes after the load's own callbacks, before the lookup does
        assert key.key_id not in rig.store._inflight
        with pytest.raises(RecordRejected):
            await rig.store.apply(revoked)

    told = asyncio.create_task(consumer())
    with pytest.raises(VerificationUnavailable):
        await lookup
    await told


async def test_an_unsigned_404_does_not_settle_a_doubt(rig: Rig) -> None:
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    assert await rig.store.lookup(key.key_id) == key.record  # Redis holds the active record
    rotated = Signer.from_base64(generate_signing_key()[0])
    revoked = rig.keyring.signed(rig.keyring.revoke(key), signer=rotated)
    with pytest.raises(RecordRejected):
        await rig.store.apply(revoked)
    del rig.fake.records[key.key_id]  # one 404: it carries no signature
    assert await rig.store.lookup(key.key_id) is None
    rig.fake.put(revoked, key.key_id)
    rig.store.evict(key.key_id)  # the negative entry gone (expired, say)
    with pytest.raises(VerificationUnavailable):
        await rig.store.lookup(key.key_id)  # not Redis's active copy


async def test_a_key_known_revoked_is_not_doubted(
    rig: Rig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger, "KNOWN_LIMIT", 0)  # the revocation's record is forgotten
    key = rig.keyring.issue()
    await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(key)))
    forger = Signer.from_base64(generate_signing_key()[0])
    with pytest.raises(RecordRejected):
        await rig.store.apply(rig.keyring.signed(key, signer=forger))
    for _ in range(3):
        found = await rig.store.lookup(key.key_id)
        assert found is not None
        assert found.status == "revoked"
    assert not rig.store.ledger.in_doubt(key.key_id)
    assert rig.fake.calls == 0


async def test_tampered_redis_record_is_absent_and_counted(rig: Rig) -> None:
    key = rig.keyring.issue()
    forger = Signer.from_base64(generate_signing_key()[0])
    await rig.redis.set(rig.store.redis_key(key.key_id), rig.keyring.signed(key, forger).to_text())
    assert await rig.store.lookup(key.key_id) is None  # key_service does not know it
    assert rig.sample("gateway_rejected_records", "redis", "signature") == 1


async def test_tampered_redis_record_is_overwritten_by_the_genuine_one(rig: Rig) -> None:
    key = rig.keyring.issue()
    revoked = rig.keyring.revoke(key)
    forger = Signer.from_base64(generate_signing_key()[0])
    forged = type(key)(key.key_id, key.secret, key.record, 10**12)
    forged_text = rig.keyring.signed(forged, forger).to_text()
    await rig.redis.set(rig.store.redis_key(key.key_id), forged_text)
    assert await rig.store.apply(rig.keyring.signed(revoked)) is True


async def test_record_of_another_key_under_this_id_is_absent(rig: Rig) -> None:
    mine, other = rig.keyring.issue(), rig.keyring.issue()
    await rig.redis.set(rig.store.redis_key(mine.key_id), rig.keyring.signed(other).to_text())
    assert await rig.store.lookup(mine.key_id) is None
    assert rig.sample("gateway_rejected_records", "redis", "wrong_key") == 1


async def test_redis_down_l1_and_key_service_keep_verifying(rig: Rig) -> None:
    cached, fresh = rig.keyring.issue(), rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(cached), cached.key_id)
    rig.fake.put(rig.keyring.signed(fresh), fresh.key_id)
    assert await rig.store.lookup(cached.key_id) == cached.record
    rig.redis_proxy.cut()
    assert await rig.store.lookup(cached.key_id) == cached.record
    assert await rig.store.lookup(fresh.key_id) == fresh.record
    with pytest.raises(StoreUnavailable):
        await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(cached)))
    # The revocation still reached L1 even though Redis could not take it.
    found = await rig.store.lookup(cached.key_id)
    assert found is not None
    assert found.status == "revoked"


async def test_redis_and_key_service_down_is_unavailable(rig: Rig) -> None:
    cached, other = rig.keyring.issue(), rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(cached), cached.key_id)
    assert await rig.store.lookup(cached.key_id) == cached.record
    rig.redis_proxy.cut()
    rig.fake.down = True
    with pytest.raises(VerificationUnavailable):
        await rig.store.lookup(other.key_id)
    assert await rig.store.lookup(cached.key_id) == cached.record
    rig.redis_proxy.restore()
    rig.fake.down = False
    rig.clock.now += keystore.REDIS_PAUSE_SECONDS  # past the pause after a Redis error
    rig.fake.put(rig.keyring.signed(other), other.key_id)
    assert await rig.store.lookup(other.key_id) == other.record


async def test_revocation_redis_missed_outlives_l1_and_reaches_redis_later(rig: Rig) -> None:
    key = rig.keyring.issue()
    assert await rig.store.apply(rig.keyring.signed(key)) is True
    rig.redis_proxy.cut()
    with pytest.raises(StoreUnavailable):
        await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(key)))
    rig.redis_proxy.restore()
    rig.store.evict(key.key_id)  # as if L1's TTL or LRU had dropped it
    rig.clock.now += keystore.REDIS_PAUSE_SECONDS  # past the pause after a Redis error
    found = await rig.store.lookup(key.key_id)
    assert found is not None
    assert found.status == "revoked"
    stored = await rig.redis.get(rig.store.redis_key(key.key_id))
    assert stored is not None
    assert b"apikey.revoked" in stored
    assert rig.fake.calls == 0


async def test_a_replayed_older_record_does_not_revive_a_revoked_key(rig: Rig) -> None:
    key = rig.keyring.issue()
    issued = rig.keyring.signed(key)
    assert await rig.store.apply(issued) is True
    assert await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(key))) is True
    # Someone with write access to Redis puts back the key's genuine, older "issued" record.
    await rig.redis.set(rig.store.redis_key(key.key_id), issued.to_text())
    rig.store.evict(key.key_id)
    found = await rig.store.lookup(key.key_id)
    assert found is not None
    assert found.status == "revoked"
    assert rig.sample("gateway_rejected_records", "redis", "stale") == 1
    stored = await rig.redis.get(rig.store.redis_key(key.key_id))
    assert stored is not None
    assert b"apikey.revoked" in stored  # repaired


async def test_a_replayed_issued_event_does_not_revive_a_revoked_key_once_l1_forgot_it(
    rig: Rig,
) -> None:
    key = rig.keyring.issue()
    issued = rig.keyring.signed(key)
    assert await rig.store.apply(issued) is True
    assert await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(key))) is True
    rig.store.evict(key.key_id)  # as when L1's TTL runs out
    # The genuine, older "issued" event again (over RabbitMQ, or a catch-up going over old
    # ground), with Redis emptied meanwhile (a flush, a failover): nothing changes.
    await rig.redis.delete(rig.store.redis_key(key.key_id))
    assert await rig.store.apply(issued) is False
    assert await rig.redis.get(rig.store.redis_key(key.key_id)) is None
    found = await rig.store.lookup(key.key_id)
    assert found is not None
    assert found.status == "revoked"
    # The same with Redis away: no error to retry, and still revoked.
    rig.store.evict(key.key_id)
    rig.redis_proxy.cut()
    assert await rig.store.apply(issued) is False
    found = await rig.store.lookup(key.key_id)
    assert found is not None
    assert found.status == "revoked"


async def test_a_lookup_that_joins_a_load_begun_before_a_revocation_sees_the_revocation(
    rig: Rig,
) -> None:
    key = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    rig.fake.hold = asyncio.Event()  # a slow key_service answer, with the old active record
    first = asyncio.create_task(rig.store.lookup(key.key_id))
    await asked(rig.fake, 1)
    assert await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(key))) is True
    rig.store.evict(key.key_id)  # L1 pushed it out (LRU): the next lookup joins the load
    joining = asyncio.create_task(rig.store.lookup(key.key_id))
    await asyncio.sleep(0)  # it joined the load and waits on it
    rig.fake.hold.set()
    later = await joining
    assert later is not None
    assert later.status == "revoked"
    earlier = await first
    assert earlier is not None
    assert earlier.status == "revoked"
    assert rig.fake.calls == 1


async def test_an_unreadable_feed_entry_is_passed_over_not_the_whole_page(
    rig: Rig, secrets_env: dict[str, str], aiohttp_server: AiohttpServer,
) -> None:
    first, second = rig.keyring.issue(), rig.keyring.issue()
    rig.fake.feed = [rig.keyring.signed(first).to_json(), {"body": 5, "signature": None},
                     rig.keyring.signed(second).to_json()]
    secrets = load_secrets(Env(secrets_env), signer=False, verifier=True)
    assert secrets.verifier is not None
    server = await aiohttp_server(rig.fake.app())
    async with aiohttp.ClientSession() as session:
        client = KeyServiceClient(
            session, str(server.make_url("/")), secrets.internal_token, timeout=2.0
        )
        page = await client.fetch_events(after=0)
    assert len(page.events) == 3
    assert page.events[0].verify(secrets.verifier).record == first.record
    with pytest.raises(SignatureError):
        page.events[1].verify(secrets.verifier)
    assert page.events[2].verify(secrets.verifier).record == second.record


async def test_before_the_first_catch_up_only_key_service_answers(
    rig: Rig, secrets_env: dict[str, str], redis_prefix: str,
) -> None:
    key = rig.keyring.issue()
    issued = rig.keyring.signed(key)
    revoked = rig.keyring.signed(rig.keyring.revoke(key))
    # Someone with write access to Redis put the key's older "issued" record back; a process
    # that has not read the feed yet does not know of the revocation.
    await rig.redis.set(rig.store.redis_key(key.key_id), issued.to_text())
    rig.fake.put(revoked, key.key_id)
    feed_read = asyncio.Event()
    secrets = load_secrets(Env(secrets_env), signer=False, verifier=True)
    assert secrets.verifier is not None
    store = KeyStore(
        redis=rig.store._redis, key_service=rig.store._key_service, verifier=secrets.verifier,
        metrics=Metrics(), prefix=redis_prefix, feed_read=feed_read,
    )
    found = await store.lookup(key.key_id)
    assert found is not None
    assert found.status == "revoked"
    assert rig.fake.calls == 1
    stored = await rig.redis.get(rig.store.redis_key(key.key_id))
    assert stored is not None
    assert b"apikey.revoked" in stored  # key_service's answer, shared through Redis
    # From the first catch-up on, Redis answers.
    feed_read.set()
    store.evict(key.key_id)
    found = await store.lookup(key.key_id)
    assert found is not None
    assert found.status == "revoked"
    assert rig.fake.calls == 1


async def test_a_revocation_outlives_the_bound_on_remembered_records(
    rig: Rig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Past KNOWN_LIMIT the oldest revocations' records are forgotten, but never the fact:
    # the key's original, genuinely signed "issued" record put back into Redis (or replayed)
    # still does not revive it, and nobody needs asking.
    monkeypatch.setattr(ledger, "KNOWN_LIMIT", 2)
    victim = rig.keyring.issue()
    issued = rig.keyring.signed(victim)
    await rig.store.apply(issued)
    await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(victim)))
    for _ in range(2):
        other = rig.keyring.issue()
        await rig.store.apply(rig.keyring.signed(other))
        await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(other)))
    await rig.redis.set(rig.store.redis_key(victim.key_id), issued.to_text())
    rig.store.evict(victim.key_id)  # as when L1's TTL runs out
    calls = rig.fake.calls
    assert await rig.store.lookup(victim.key_id) is None
    assert rig.store.cached(victim.key_id) is None
    assert rig.sample("gateway_rejected_records", "redis", "stale") == 1
    assert await rig.store.apply(issued) is False  # a replay changes nothing either
    assert await rig.store.lookup(victim.key_id) is None
    assert rig.fake.calls == calls
    # A revocation learnt from key_service (not applied as an event) is remembered too.
    late = rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(rig.keyring.revoke(late)), late.key_id)
    found = await rig.store.lookup(late.key_id)
    assert found is not None
    assert found.status == "revoked"
    assert await rig.store.apply(rig.keyring.signed(late)) is False


async def test_a_key_of_another_type_in_redis_reads_as_malformed_and_is_replaced(
    rig: Rig,
) -> None:
    # WRONGTYPE is Redis answering about one key, not Redis failing: no pause for every
    # other key, no stuck catch-up; the key heals at the next write.
    bad, good, third = rig.keyring.issue(), rig.keyring.issue(), rig.keyring.issue()
    rig.fake.put(rig.keyring.signed(bad), bad.key_id)
    await rig.redis.rpush(rig.store.redis_key(bad.key_id), "x")
    assert await rig.store.lookup(bad.key_id) == bad.record  # key_service answered
    # Counted at each read that met it: the lookup's, and the write-back's under WATCH.
    assert rig.sample("gateway_rejected_records", "redis", "malformed") == 2
    stored = await rig.redis.get(rig.store.redis_key(bad.key_id))
    assert stored is not None  # a string now: the signed record key_service gave
    assert bad.key_id.encode() in stored
    assert await rig.store.apply(rig.keyring.signed(good)) is True  # Redis was not paused
    # The same in a first catch-up's cheap path, and on the WATCH path.
    await rig.redis.hset(rig.store.redis_key(third.key_id), "f", "v")
    assert await rig.store.apply(rig.keyring.signed(third), "feed", likely_stored=True) is True
    await rig.redis.delete(rig.store.redis_key(good.key_id))
    await rig.redis.sadd(rig.store.redis_key(good.key_id), "x")
    assert await rig.store.apply(rig.keyring.signed(rig.keyring.revoke(good))) is True
    for key in (third, good):
        stored = await rig.redis.get(rig.store.redis_key(key.key_id))
        assert stored is not None
        assert key.key_id.encode() in stored


# -- rolled keys: the end at revokes_at, by this process's own clock ---------------------------
# A rolled key ends at its revokes_at in every gateway process whatever else can be reached: no
# request is answered from L1 after it, and a lookup then finds the key due even with Redis and
# key_service away.
def _rolled(rig: Rig, overlap: float) -> IssuedKey:
    """A key rolled ``overlap`` seconds before its end, as the store's wall clock reads now."""
    ends = datetime.fromtimestamp(rig.wall.now + overlap, UTC)
    return rig.keyring.change(rig.keyring.issue("rolled"), revokes_at=ends,
                              replaced_by=new_key_id())


def _advance(rig: Rig, seconds: float) -> None:
    rig.clock.now += seconds
    rig.wall.now += seconds


async def test_the_l1_entry_ends_at_revokes_at_and_the_key_is_due_then(rig: Rig) -> None:
    key = _rolled(rig, overlap=3)
    await rig.store.apply(rig.keyring.signed(key))
    assert rig.store.cached(key.key_id) is not None  # the overlap: served from L1
    assert not rig.store.due(key.key_id)
    _advance(rig, 2.9)
    assert rig.store.cached(key.key_id) is not None
    _advance(rig, 0.2)
    assert rig.store.cached(key.key_id) is None  # not even the fast path serves it now
    assert rig.store.due(key.key_id)
    # Nothing can be asked: the key is still refused, never a 503.
    rig.redis_proxy.cut()
    rig.fake.down = True
    assert await rig.store.lookup(key.key_id) is None
    assert rig.fake.calls == 0


async def test_after_the_end_a_lookup_asks_nobody(rig: Rig) -> None:
    key = _rolled(rig, overlap=1)
    await rig.store.apply(rig.keyring.signed(key))
    _advance(rig, 1.5)
    reads = rig.sample("gateway_cache_lookups", "redis", "hit")
    assert await rig.store.lookup(key.key_id) is None
    assert rig.sample("gateway_cache_lookups", "redis", "hit") == reads
    assert rig.store.cached(key.key_id) is None  # and L1 does not take it back
    assert rig.fake.calls == 0


async def test_a_record_already_past_its_end_never_enters_l1(rig: Rig) -> None:
    key = _rolled(rig, overlap=-5)
    await rig.store.apply(rig.keyring.signed(key))
    assert rig.store.cached(key.key_id) is None
    assert rig.store.due(key.key_id)


async def test_a_gateway_whose_clock_is_late_ends_the_key_that_much_later(rig: Rig) -> None:
    # The key ends at 12:00:03 by key_service's clock; this gateway's clock is 2 s late, so by
    # its own reading the end comes 2 s after 12:00:03 real time: the documented bound.
    key = _rolled(rig, overlap=3)
    rig.wall.now -= 2
    await rig.store.apply(rig.keyring.signed(key))
    _advance(rig, 3.5)  # real time is past the end; the gateway's clock is not yet
    assert rig.store.cached(key.key_id) is not None
    assert not rig.store.due(key.key_id)
    _advance(rig, 2)
    assert rig.store.cached(key.key_id) is None
    assert rig.store.due(key.key_id)


async def test_revoked_early_it_is_terminal_as_any_revocation(rig: Rig) -> None:
    key = _rolled(rig, overlap=3600)
    await rig.store.apply(rig.keyring.signed(key))
    revoked = rig.keyring.revoke(key)
    await rig.store.apply(rig.keyring.signed(revoked))
    assert rig.store.due(key.key_id)
    assert (await rig.store.lookup(key.key_id)) == revoked.record


async def test_an_older_record_without_the_end_does_not_lift_it(rig: Rig) -> None:
    # The key's issued record (no revokes_at) put back into Redis once L1 forgot the rolled one:
    # it is genuinely signed, but the end this process noted stands.
    issued = rig.keyring.issue("rolled")
    ends = datetime.fromtimestamp(rig.wall.now + 3, UTC)
    rolled = rig.keyring.change(issued, revokes_at=ends, replaced_by=new_key_id())
    await rig.store.apply(rig.keyring.signed(rolled))
    await rig.redis.set(rig.store.redis_key(issued.key_id), rig.keyring.signed(issued).to_text())
    rig.store.evict(issued.key_id)
    record = await rig.store.lookup(issued.key_id)
    assert record == issued.record  # the older record, read back from Redis...
    held = rig.store.cached(issued.key_id)
    assert held is not None
    assert held.ends == ends.timestamp()  # ...carries the end all the same
    _advance(rig, 3.1)
    assert rig.store.cached(issued.key_id) is None
    assert await rig.store.lookup(issued.key_id) is None
    assert rig.store.due(issued.key_id)


async def test_a_rolled_event_arriving_after_the_end_empties_l1(rig: Rig) -> None:
    # L1 holds the key's issued record (no end yet); the rolled record arrives late, its end
    # already passed: nothing of the key may be answered from L1 from then on.
    issued = rig.keyring.issue("rolled")
    await rig.store.apply(rig.keyring.signed(issued))
    assert rig.store.cached(issued.key_id) is not None
    rolled = rig.keyring.change(issued, replaced_by=new_key_id(),
                                revokes_at=datetime.fromtimestamp(rig.wall.now - 1, UTC))
    await rig.store.apply(rig.keyring.signed(rolled))
    assert rig.store.cached(issued.key_id) is None
    assert await rig.store.lookup(issued.key_id) is None
    assert rig.fake.calls == 0


async def test_an_entry_that_came_without_the_end_learns_it(rig: Rig) -> None:
    # A stale replay of the rolled record (an older sequence than L1's) still tells the end.
    issued = rig.keyring.issue("rolled")
    ends = datetime.fromtimestamp(rig.wall.now + 2, UTC)
    rolled = rig.keyring.change(issued, replaced_by=new_key_id(), revokes_at=ends)
    newer = rig.keyring.change(issued, name="renamed")  # a later record without the end
    await rig.store.apply(rig.keyring.signed(newer))
    await rig.store.apply(rig.keyring.signed(rolled))  # older: not applied, its end noted
    held = rig.store.cached(issued.key_id)
    assert held is not None
    assert held.record == newer.record
    assert held.ends == ends.timestamp()
    _advance(rig, 2.5)
    assert await rig.store.lookup(issued.key_id) is None


async def test_a_lookup_under_way_at_the_end_refuses_the_key(rig: Rig) -> None:
    key = _rolled(rig, overlap=2)
    rig.fake.put(rig.keyring.signed(key), key.key_id)
    rig.redis_proxy.cut()  # key_service answers, slowly
    rig.fake.hold = asyncio.Event()
    lookup = asyncio.create_task(rig.store.lookup(key.key_id))
    await asked(rig.fake, 1)
    _advance(rig, 2.5)  # the end comes while key_service takes its time
    rig.fake.hold.set()
    assert await lookup is None
    assert rig.store.cached(key.key_id) is None


async def test_a_wall_clock_stepped_past_the_end_ends_the_key_at_once(rig: Rig) -> None:
    # L1's expiry runs on the monotonic clock; the end is by the wall clock. A wall clock
    # stepped forward (NTP) past the end ends the key though L1 still holds its entry.
    key = _rolled(rig, overlap=3600)
    await rig.store.apply(rig.keyring.signed(key))
    failures = FailureCounter(rig.redis, rig.prefix, threshold=20, window=60)
    auth = Authenticator(store=rig.store, peppers=rig.keyring.peppers, failures=failures,
                         metrics=rig.metrics)
    exchange = cast(Exchange, _Exchange(key))
    assert isinstance(await auth.verdict(exchange), Identity)
    assert isinstance(auth.verified_now(exchange), Identity)  # the fast path serves it
    rig.wall.now += 3601  # the monotonic clock has not moved
    assert rig.store.cached(key.key_id) is not None
    assert auth.verified_now(exchange) is None
    denial = await auth.verdict(exchange)
    assert isinstance(denial, Denial)
    assert (denial.status, denial.reason) == (401, "revoked")


async def test_a_revocation_past_a_scheduled_end_is_held_as_revoked(rig: Rig) -> None:
    key = _rolled(rig, overlap=3)
    await rig.store.apply(rig.keyring.signed(key))
    _advance(rig, 5)
    revoked = rig.keyring.change(key, status="revoked", revoked_at=datetime.now(UTC))
    await rig.store.apply(rig.keyring.signed(revoked))
    held = rig.store.cached(key.key_id)
    assert held is not None
    assert held.record.status == "revoked"
    assert await rig.store.lookup(key.key_id) == revoked.record



async def test_an_end_a_lookup_learns_reaches_the_entry_an_older_record_got(rig: Rig) -> None:
    # The lookup's load brings the rolled record, but an apply of the key's older issued record
    # overtakes it (so the load does not fill L1): the end the lookup learns still goes on the
    # L1 entry the older record got.
    issued = rig.keyring.issue("rolled")
    ends = datetime.fromtimestamp(rig.wall.now + 2, UTC)
    rolled = rig.keyring.change(issued, revokes_at=ends, replaced_by=new_key_id())
    rig.fake.put(rig.keyring.signed(rolled), issued.key_id)
    rig.fake.hold = asyncio.Event()
    lookup = asyncio.create_task(rig.store.lookup(issued.key_id))
    await asked(rig.fake, 1)
    await rig.store.apply(rig.keyring.signed(issued))
    rig.fake.hold.set()
    assert await lookup == rolled.record
    held = rig.store.cached(issued.key_id)
    assert held is not None
    assert held.record == issued.record
    assert held.ends == ends.timestamp()
    _advance(rig, 2.5)
    assert await rig.store.lookup(issued.key_id) is None


class _Exchange:
    """The parts of an Exchange the authenticator reads: one key's headers, one address."""

    def __init__(self, key: IssuedKey) -> None:
        self.request = SimpleNamespace(headers=CIMultiDict(key.headers))

    def group(self) -> str:
        return "192.0.2.7"

    def client(self) -> str:
        return "192.0.2.7"
