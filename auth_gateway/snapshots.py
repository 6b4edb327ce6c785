"""Where a starting gateway process gets its revocation snapshot: Redis, else key_service.

A process must know every revocation before it trusts Redis's records (``keystore``). Instead of
reading the whole event feed (which grows with every issue and revoke ever made), it takes the
signed revocation snapshot (``apikeys_shared.snapshot``) and then reads only the feed after the
snapshot's sequence (``sync``). docs/architecture.md, "Starting from a snapshot".

Redis keeps the newest snapshot any process fetched, at ``{prefix}snapshot``, so that the
processes of a rolling restart fetch it from key_service once between them. Redis is not
trusted for it any more than for key records: the copy is used only when its signature verifies,
and only when the feed after it is short (at most ``max_behind`` events); otherwise a fresh one
is fetched from key_service (and put in Redis for the next process). An old snapshot put back
into Redis costs a longer feed read, never a revocation: the feed after it brings every later
one. Either copy is used only when the feed still holds, at the snapshot's sequence, the event
the snapshot names (``sync``): after a database restore or a promoted asynchronous standby, the
same sequence numbers name other events, and the old history's snapshot is not started from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from apikeys_shared.errors import EnvelopeError, SignatureError
from apikeys_shared.signing import Verifier
from apikeys_shared.snapshot import SignedSnapshot, Snapshot

from .key_service_client import KeyServiceClient
from .metrics import Metrics
from .redisclient import RedisClient

__all__ = ["SNAPSHOT_MAX_BEHIND", "SNAPSHOT_TIMEOUT", "SnapshotSource"]

log = logging.getLogger("auth_gateway.sync")

# A snapshot from Redis is used when the feed after it holds at most this many events (about
# 0.1 s of catching up); an older one is replaced by a fresh one from key_service.
SNAPSHOT_MAX_BEHIND = 1000
# Seconds for key_service's whole answer: it grows with the number of revoked keys (about
# 40 bytes each).
SNAPSHOT_TIMEOUT = 60.0
_FIELDS = ("body", "signature", "signing_key")


class SnapshotSource:
    """Reads and verifies revocation snapshots from Redis and key_service; see the module."""

    def __init__(
        self, *, redis: RedisClient, key_service: KeyServiceClient, verifier: Verifier,
        metrics: Metrics, prefix: str, max_behind: int = SNAPSHOT_MAX_BEHIND,
        timeout: float = SNAPSHOT_TIMEOUT,
    ) -> None:
        self._redis = redis
        self._key_service = key_service
        self._verifier = verifier
        self._metrics = metrics
        self.redis_key = f"{prefix}snapshot"
        self.max_behind = max_behind
        self._timeout = timeout

    async def _verified(self, signed: SignedSnapshot, source: str) -> Snapshot | None:
        try:
            # A large set takes a while to hash and parse: off the event loop.
            return await asyncio.to_thread(signed.verify, self._verifier)
        except (SignatureError, EnvelopeError) as exc:
            self._metrics.snapshots.labels(source, "rejected").inc()
            log.error("a revocation snapshot from %s was rejected: %s", source, exc)
            return None

    async def cached(self) -> Snapshot | None:
        """Redis's copy, verified; None when there is none, it does not verify or Redis is
        away (then key_service is asked)."""
        try:
            values = await self._redis.hmget(self.redis_key, list(_FIELDS))
        except (TimeoutError, RedisError, OSError):
            return None
        body, signature, signing_key = values
        if body is None or signature is None or signing_key is None:
            self._metrics.snapshots.labels("redis", "absent").inc()
            return None
        return await self._verified(SignedSnapshot(
            body=_bytes(body), signature=_bytes(signature).decode("ascii", "replace"),
            signing_key=_bytes(signing_key).decode("ascii", "replace"),
        ), "redis")

    async def fresh(self) -> Snapshot | None:
        """key_service's snapshot, verified, and kept in Redis for the next process; None when
        key_service has none to give or it does not verify (then the whole feed is read).

        Raises KeyServiceUnavailable when key_service cannot answer.
        """
        signed = await self._key_service.fetch_snapshot(self._timeout)
        if signed is None:
            self._metrics.snapshots.labels("key_service", "absent").inc()
            return None
        snapshot = await self._verified(signed, "key_service")
        if snapshot is None:
            return None
        with contextlib.suppress(TimeoutError, RedisError, OSError):
            await self._keep(signed)
        return snapshot

    async def _keep(self, signed: SignedSnapshot) -> None:
        """Put ``signed`` in Redis in place of whatever copy is there.

        A process fetches a fresh snapshot only when Redis's copy is missing, does not verify,
        is too far behind, or is of another history (a restore: it may even claim a later
        sequence than the feed's), so the fresh one is always the better copy; two processes
        racing leave one of theirs, and either serves.
        """
        await self._redis.hset(self.redis_key, mapping={
            "body": signed.body, "signature": signed.signature,
            "signing_key": signed.signing_key,
        })
        # Older gateways kept an unsigned "sequence" beside the copy and wrote only over a
        # lower one: gone, so that during a rolling upgrade they too replace this copy.
        await self._redis.hdel(self.redis_key, "sequence")

    def used(self, source: str) -> None:
        """Count the snapshot a process started from."""
        self._metrics.snapshots.labels(source, "used").inc()

    def stale(self, source: str = "redis") -> None:
        """Count a snapshot passed over: too far behind the feed, or of another history."""
        self._metrics.snapshots.labels(source, "stale").inc()


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
