"""Failed authentications counted per client address, shared by every gateway process.

Each failure increments ``{prefix}fail:{address}`` in Redis; the counter expires a window after
the first failure. Once it reaches the threshold, the address gets 429 with ``Retry-After``
(the counter's remaining life) before any lookup. While Redis is away, a per-process count stands
in, so a brute-force attempt is still slowed; authentication itself stays fail-closed either way.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .cache import TTLCache

__all__ = ["FailureCounter", "client_address", "is_trusted"]

_PAUSE_SECONDS = 1.0


class FailureCounter:
    """Counts failed authentications per address in Redis, with an in-process fallback."""

    def __init__(
        self, redis: aioredis.Redis, prefix: str, threshold: int, window: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._threshold = threshold
        self._window = window
        self._clock = clock
        self._local: TTLCache[tuple[int, float]] = TTLCache(100_000, window, clock)
        self._paused_until = 0.0

    def key(self, address: str) -> str:
        """The Redis key counting ``address``'s failures."""
        return f"{self._prefix}fail:{address}"

    async def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it is not throttled."""
        if self._clock() >= self._paused_until:
            try:
                count = await self._redis.get(self.key(address))
                if count is None or int(count) < self._threshold:
                    return None
                ttl = int(await self._redis.ttl(self.key(address)))
                return ttl if ttl > 0 else self._window
            except (TimeoutError, RedisError, OSError, ValueError):
                self._paused_until = self._clock() + _PAUSE_SECONDS
        local = self._local.get(address)
        if local is None or local[0] < self._threshold:
            return None
        return max(1, int(local[1] - self._clock()))

    async def record_failure(self, address: str) -> None:
        """Count one failed authentication for ``address``."""
        local = self._local.get(address)
        now = self._clock()
        if local is None:
            self._local.put(address, (1, now + self._window))
        else:
            self._local.put(address, (local[0] + 1, local[1]))
        if now < self._paused_until:
            return
        key = self.key(address)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self._window, nx=True)
                await pipe.execute()
        except (TimeoutError, RedisError, OSError):
            self._paused_until = now + _PAUSE_SECONDS


def client_address(
    remote: str | None, forwarded_for: Sequence[str], trusted: Sequence[str]
) -> str:
    """The client's address: the peer, or, behind trusted proxies, the nearest untrusted hop."""
    peer = remote or "unknown"
    if not trusted or not is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop if _is_ip(hop) else peer
    return hops[0] if hops and _is_ip(hops[0]) else peer


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_trusted(address: str, trusted: Sequence[str]) -> bool:
    """True when ``address`` lies in one of the ``trusted`` networks."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in trusted)
