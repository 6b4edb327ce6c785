"""Redis URLs against real servers: the shared Redis, and a Sentinel and a Cluster of our own.

The Sentinel and the Cluster are private ``redis-server`` processes on free ports in the test's
temporary directory (the shared Redis is never reconfigured), stopped when the test ends.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from apikeys_shared.redis_url import redis_from_url
from tests.support.private_redis import StartRedis, start_one_node_cluster

pytestmark = pytest.mark.redis


async def test_plain_redis_url_reaches_the_real_redis(
    redis_url: str, redis_client: aioredis.Redis, redis_prefix: str,
) -> None:
    client = redis_from_url(redis_url, socket_timeout=2)
    assert isinstance(client, aioredis.Redis)
    try:
        await client.set(f"{redis_prefix}probe", b"via redis_from_url")
    finally:
        await client.aclose()
    assert await redis_client.get(f"{redis_prefix}probe") == b"via redis_from_url"


async def test_sentinel_url_finds_the_master_and_uses_its_db_and_password(
    tmp_path: Path, start_redis: StartRedis,
) -> None:
    master = start_redis("--requirepass", "masterpw", password="masterpw")
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"sentinel monitor apikeys 127.0.0.1 {master} 1\n"
        "sentinel auth-pass apikeys masterpw\n"
        "sentinel down-after-milliseconds apikeys 60000\n"
    )
    sentinel = start_redis(str(config), "--sentinel")
    client = redis_from_url(
        f"redis+sentinel://:masterpw@127.0.0.1:{sentinel}/apikeys/2", socket_timeout=2,
    )
    try:
        await client.set("probe", b"through sentinel")
        assert await client.get("probe") == b"through sentinel"
    finally:
        await client.aclose()
    direct = redis.Redis(port=master, db=2, password="masterpw")
    try:
        assert direct.get("probe") == b"through sentinel"
    finally:
        direct.close()


async def test_sentinel_url_with_an_unknown_service_fails(
    tmp_path: Path, start_redis: StartRedis,
) -> None:
    master = start_redis()
    config = tmp_path / "sentinel.conf"
    config.write_text(f"sentinel monitor apikeys 127.0.0.1 {master} 1\n")
    sentinel = start_redis(str(config), "--sentinel")
    client = redis_from_url(f"redis+sentinel://127.0.0.1:{sentinel}/nosuch", socket_timeout=2)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="nosuch"):
            await client.ping()
    finally:
        await client.aclose()


async def test_cluster_url_reaches_a_real_cluster(start_redis: StartRedis) -> None:
    port = await start_one_node_cluster(start_redis)
    client = redis_from_url(f"redis+cluster://127.0.0.1:{port}", socket_timeout=2)
    assert isinstance(client, RedisCluster)
    try:
        for key in ("a", "b", "c", "{user1}x"):
            await client.set(key, key.encode())
        assert [await client.get(k) for k in ("a", "b", "c", "{user1}x")] == [
            b"a", b"b", b"c", b"{user1}x",
        ]
        # The gateway's two transactions work on a cluster too: a compare-and-set under WATCH,
        # and INCR with EXPIRE NX for failed-authentication counters.
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch("record")  # type: ignore[no-untyped-call]
            assert await pipe.get("record") is None
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.set("record", b"v1")
            await pipe.execute()
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("failures")
            pipe.expire("failures", 60, nx=True)
            assert await pipe.execute() == [1, True]
        assert await client.get("record") == b"v1"
    finally:
        await client.aclose()
