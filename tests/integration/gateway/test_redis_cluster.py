"""The gateway's Redis work on a real (one-node) Redis Cluster reached by a redis+cluster:// URL.

KeyStore's compare-and-set under WATCH and FailureCounter's MULTI counters and shared block set
must behave exactly as on a single server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer
from redis.asyncio.cluster import RedisCluster

from apikeys_shared.config import Env, load_secrets
from auth_gateway.key_service_client import KeyServiceClient
from auth_gateway.keystore import KeyStore
from auth_gateway.metrics import Metrics
from auth_gateway.redisclient import open_redis
from auth_gateway.throttle import FailureCounter
from tests.support.private_redis import StartRedis, start_one_node_cluster

from .keyring import FakeKeyService, Keyring

pytestmark = pytest.mark.redis


@pytest.fixture
async def cluster(start_redis: StartRedis) -> AsyncIterator[RedisCluster]:
    port = await start_one_node_cluster(start_redis)
    client = open_redis(f"redis+cluster://127.0.0.1:{port}", timeout=2.0)
    assert isinstance(client, RedisCluster)
    try:
        yield client
    finally:
        await client.aclose()


async def test_keystore_applies_and_reads_signed_records_on_a_cluster(
    cluster: RedisCluster, secrets_env: dict[str, str], aiohttp_server: AiohttpServer,
) -> None:
    keyring = Keyring(secrets_env)
    secrets = load_secrets(Env(secrets_env), signer=False, verifier=True)
    assert secrets.verifier is not None
    fake = FakeKeyService(secrets.internal_token)
    server = await aiohttp_server(fake.app())
    async with aiohttp.ClientSession() as session:
        client = KeyServiceClient(
            session, str(server.make_url("/")), secrets.internal_token, timeout=2.0
        )
        store = KeyStore(
            redis=cluster, key_service=client, verifier=secrets.verifier, metrics=Metrics(),
            prefix="gw:",
        )
        key = keyring.issue()
        assert await store.apply(keyring.signed(key)) is True
        revoked = keyring.revoke(key)
        assert await store.apply(keyring.signed(revoked)) is True
        assert await store.apply(keyring.signed(key)) is False  # older: WATCH saw the newer one
        assert b"apikey.revoked" in (await cluster.get(store.redis_key(key.key_id)) or b"")
        # A second process (fresh caches) reads the verified record from the cluster.
        other = KeyStore(
            redis=cluster, key_service=client, verifier=secrets.verifier, metrics=Metrics(),
            prefix="gw:",
        )
        found = await other.lookup(key.key_id)
        assert found is not None
        assert found.status == "revoked"
        assert fake.calls == 0


async def test_failure_counter_blocks_across_processes_on_a_cluster(
    cluster: RedisCluster,
) -> None:
    first = FailureCounter(cluster, "gw:", threshold=3, window=60)
    second = FailureCounter(cluster, "gw:", threshold=3, window=60)
    for _ in range(3):
        assert await first.retry_after("192.0.2.7") is None
        await first.record_failure("192.0.2.7")
    assert await cluster.get(first.key("192.0.2.7")) == b"3"
    wait = await first.retry_after("192.0.2.7")
    assert wait is not None
    assert wait > 0
    # The other process adopts the block from the shared sorted set.
    assert await second.retry_after("192.0.2.7") is not None
    assert await second.retry_after("192.0.2.8") is None
