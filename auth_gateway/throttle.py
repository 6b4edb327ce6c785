"""Failed authentications counted per client address, shared by every gateway process.

Each failure increments ``{prefix}fail:{address}`` in Redis (an IPv6 address counts as its /64,
see ``failure_group``); the counter expires a window after
the first failure. When a process sees the count reach the threshold it blocks the address
itself, adds it to the sorted set ``{prefix}blocked`` (scored by when the block ends) and then
sets ``{prefix}blocked:version`` to a fresh random value (not a counter, which a Redis that
lost its data would start again from values already seen). Every process reads it a few times a
second (see ``retry_after``) and, when it changed, every block still running, so that all of
them block the address: a blocked address gets 429 with ``Retry-After`` for every request that
would need a lookup or fails (only keys the process holds in L1, with a secret that verifies,
are still served: ``Authenticator``, docs/gateway.md), and the happy path costs no Redis round
trip but that one GET every ``sync_seconds`` (0.25 s by default). (Reading only the blocks
that end after the latest end seen would miss a block added later but ending sooner: another
address's, whose counting window began earlier.)
A process that missed an entry learns the count from Redis at the address's next failure.
While Redis is away, a per-process count stands in; authentication itself stays fail-closed
either way.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable

from redis.exceptions import RedisError

from .cache import TTLCache
from .redisclient import RedisClient

__all__ = ["SYNC_SECONDS", "FailureCounter"]

_PAUSE_SECONDS = 1.0
# How often each process reads the blocks other processes made, unless configured.
SYNC_SECONDS = 0.25
_SYNC_BATCH = 1000
_MAX_ADDRESSES = 100_000


class FailureCounter:
    """Counts failed authentications per address in Redis and blocks past the threshold."""

    def __init__(
        self, redis: RedisClient, prefix: str, threshold: int, window: int,
        clock: Callable[[], float] = time.monotonic, sync_seconds: float = SYNC_SECONDS,
    ) -> None:
        self._redis = redis
        self._sync_seconds = sync_seconds
        self._prefix = prefix
        self._threshold = threshold
        self._window = window
        self._clock = clock
        # address -> (failures, window end), used only while Redis cannot be reached
        self._local: TTLCache[tuple[int, float]] = TTLCache(_MAX_ADDRESSES, window, clock)
        # address -> moment the block ends
        self._blocked: TTLCache[float] = TTLCache(_MAX_ADDRESSES, window, clock)
        self._paused_until = 0.0
        self._next_sync = 0.0
        # {prefix}blocked:version when the blocks were last read ("": never read)
        self._synced_version: bytes | str | None = b""
        # The quiet window: while _quiet_from <= clock() < _quiet_until, no address is blocked
        # here, no read of other processes' blocks is due and Redis is not paused. Kept up to
        # date on every change, so that quiet() is two comparisons.
        self._quiet_from = 0.0
        self._quiet_until = 0.0

    def _update_window(self) -> None:
        self._quiet_from = self._paused_until
        self._quiet_until = self._next_sync if not self._blocked else -math.inf

    @property
    def blocked_key(self) -> str:
        """The sorted set of blocked addresses, scored by the Unix time their block ends."""
        return f"{self._prefix}blocked"

    @property
    def version_key(self) -> str:
        """A fresh random value after every block added: the blocks are read again only when
        it changed."""
        return f"{self._prefix}blocked:version"

    def key(self, address: str) -> str:
        """The Redis key counting ``address``'s failures."""
        return f"{self._prefix}fail:{address}"

    async def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it is not blocked.

        At most every ``sync_seconds`` (``GATEWAY_FAILED_AUTH_SYNC``) one caller first reads
        the blocks other processes made (inline rather than in a background task: one request
        in many pays one round trip).
        """
        now = self._clock()
        if now >= self._next_sync and now >= self._paused_until:
            self._next_sync = now + self._sync_seconds
            try:
                self._synced_version = await self.sync_once(self._synced_version)
            except (TimeoutError, RedisError, OSError, ValueError):
                self._paused_until = now + _PAUSE_SECONDS
        blocked = self._blocked_for(address, now)
        self._update_window()
        return blocked

    def quiet(self) -> bool:
        """True when no address at all is blocked here, no read of other processes' blocks is
        due and Redis is not paused: every address is clear, without asking which.

        The cheapest form of ``clear_now``, asked first on the authenticated fast path, where
        the client's address is then not needed at all.
        """
        return self._quiet_from <= self._clock() < self._quiet_until

    def clear_now(self, address: str) -> bool:
        """True when ``address`` is not blocked and no read of other processes' blocks is due.

        The synchronous form of ``retry_after() is None`` for the happy path; False means
        "ask ``retry_after``", not "blocked".
        """
        now = self._clock()
        if now >= self._next_sync and now >= self._paused_until:
            return False
        return self._blocked_for(address, now) is None

    def _blocked_for(self, address: str, now: float) -> int | None:
        until = self._blocked.get(address)
        if until is not None and until > now:
            return max(1, math.ceil(until - now))
        if now < self._paused_until:
            local = self._local.get(address)
            if local is not None and local[0] >= self._threshold:
                return max(1, math.ceil(local[1] - now))
        return None

    def block(self, address: str, seconds: float) -> None:
        """Refuse ``address`` for ``seconds`` in this process."""
        if seconds > 0:
            self._blocked.put(address, self._clock() + seconds)
            self._update_window()

    async def record_failure(self, address: str) -> None:
        """Count one failed authentication for ``address``; block it past the threshold."""
        now = self._clock()
        local = self._local.get(address)
        self._local.put(address, (1, now + self._window) if local is None
                        else (local[0] + 1, local[1]))
        if now < self._paused_until:
            return
        key = self.key(address)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self._window, nx=True)
                pipe.ttl(key)
                count, _, ttl = await pipe.execute()
            if int(count) >= self._threshold:
                seconds = int(ttl) if int(ttl) > 0 else self._window
                until = self._blocked.get(address)
                if until is not None and until >= now + seconds - 1:
                    # Blocked here already, to the same end (a failure while blocked): the
                    # block was announced when it began, and announcing it again would make
                    # every process read the blocks once more for nothing.
                    return
                self.block(address, seconds)
                now_unix = time.time()
                await self._redis.zadd(self.blocked_key, {address: now_unix + seconds})
                await self._redis.zremrangebyscore(self.blocked_key, "-inf", now_unix)
                # After the ZADD, not with it: whoever sees the new version sees the block.
                await self._redis.set(self.version_key, uuid.uuid4().hex)
        except (TimeoutError, RedisError, OSError):
            self._paused_until = now + _PAUSE_SECONDS
            self._update_window()

    async def sync_once(self, seen_version: bytes | str | None) -> bytes | str | None:
        """Adopt every running block if any was added since ``seen_version``; the version read.

        At most ``_SYNC_BATCH`` blocks are read, those that end last; an address past that
        (a flood of them) is blocked here at its next failure, when its count is read.
        """
        version: bytes | str | None = await self._redis.get(self.version_key)
        if version == seen_version:
            return version
        now = time.time()
        entries = await self._redis.zrevrangebyscore(
            self.blocked_key, "+inf", f"({now}", start=0, num=_SYNC_BATCH, withscores=True,
        )
        for entry in entries:
            if not isinstance(entry, (tuple, list)):
                continue
            member, ends = entry[0], entry[1]
            address = member.decode() if isinstance(member, bytes) else str(member)
            self.block(address, min(float(ends) - now, self._window))
        return version
