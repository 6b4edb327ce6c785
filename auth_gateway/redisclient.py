"""The gateway's Redis client: one server, a Sentinel-managed master or a Cluster, by URL."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from apikeys_shared.redis_url import redis_from_url

__all__ = ["RedisClient", "open_redis"]

# Every command the gateway sends (GET, SET under WATCH, INCR/EXPIRE/TTL in a MULTI on one key,
# ZADD/ZRANGEBYSCORE on one key) touches a single key, so it works unchanged on a Cluster.
RedisClient = aioredis.Redis | RedisCluster


def open_redis(url: str, timeout: float) -> RedisClient:
    """A client for ``url`` (any ``apikeys_shared.redis_url`` form) with the gateway's timeouts."""
    return redis_from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout,
        # One immediate retry replaces a pooled connection that died with a Redis restart;
        # anything more would only stretch an outage into every request.
        retry=Retry(NoBackoff(), 1),
    )
