"""The gateway's key store: verified key records in L1, then Redis, then key_service.

Lookup order (docs/architecture.md, "The key store"): the in-process LRU (L1); a short negative
cache of unknown IDs; Redis, which holds each key's latest *signed* record at
``{prefix}key:{key_id}`` and is verified on every read; key_service's internal lookup, with
concurrent misses for one ID coalesced into one call. Nothing is trusted without a signature
from a configured verify key: write access to Redis must not be enough to mint or revive a key.

This module keeps the caches and does the I/O; which record to believe it asks the trust ledger
(``ledger``): a record replaces the one held only when its sequence is newer, ``revoked`` is
terminal, and a key named by an event that does not verify is in doubt. ``apply()`` is how
events (from RabbitMQ or the feed) reach the store. An event that does not verify is never
applied, but its key's copies in L1 and Redis are not used again until key_service's own answer
for it verifies. A forged event costs that one lookup; an event key_service really sent, signed
with a key this gateway does not trust (a signing-key rotation done in the wrong order), cannot
leave a revoked key working: the key is refused (503) until the gateway is given the verify key.

Fail closed: when Redis is away, L1 and key_service keep verifying; when key_service is away
too and L1 has nothing, ``lookup`` raises ``VerificationUnavailable`` (the caller answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError, WatchError

from apikeys_shared.errors import EnvelopeError, SignatureError
from apikeys_shared.events import Event, KeyRecord, SignedEvent
from apikeys_shared.keys import is_valid_key_id
from apikeys_shared.signing import Verifier
from apikeys_shared.snapshot import Snapshot

from . import ledger
from .budget import Budget
from .cache import TTLCache
from .config import UNKNOWN_KEY_LOOKUPS
from .errors import RecordRejected, StoreUnavailable, VerificationUnavailable
from .key_service_client import KeyServiceClient
from .ledger import Doubt, Held, Ledger, supersedes
from .metrics import Metrics
from .redisclient import RedisClient

__all__ = ["Held", "KeyStore", "redis_key"]

log = logging.getLogger("auth_gateway")

# After a Redis error, skip Redis for this long so that an outage costs one timeout, not one
# per request; the next call after the pause probes it again.
REDIS_PAUSE_SECONDS = 1.0
_WATCH_RETRIES = 8
# How many loads a lookup may wait for: the first, and restarts when its key turned suspect
# while it waited.
_LOAD_ATTEMPTS = 3


def redis_key(prefix: str, key_id: str) -> str:
    """Where Redis holds the signed record of ``key_id`` for the gateways of ``prefix``."""
    return f"{prefix}key:{key_id}"


class _Waiter:
    """A lookup waiting for a load; ``doubted`` once its key was named by an event that did
    not verify before it took the answer."""

    __slots__ = ("doubted",)

    def __init__(self) -> None:
        self.doubted = False


class KeyStore:
    """Verified key records for one gateway process; see the module docstring."""

    def __init__(
        self,
        *,
        redis: RedisClient,
        key_service: KeyServiceClient,
        verifier: Verifier,
        metrics: Metrics,
        prefix: str = "apikeys:",
        l1_size: int = 10000,
        l1_ttl: float = 30.0,
        negative_size: int = 10000,
        negative_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        feed_read: asyncio.Event | None = None,
        unknown_lookups: float = UNKNOWN_KEY_LOOKUPS.default,
    ) -> None:
        """``feed_read``: set once a catch-up has applied the whole feed in this process; Redis
        is read only from then on (None: from the start, for tests of the store alone).
        ``wall_clock``: Unix time, against which rolled keys' ``revokes_at`` is compared.
        ``unknown_lookups``: lookups a second of IDs this process does not know to exist."""
        self._feed_read = feed_read
        self._redis = redis
        self._key_service = key_service
        self._verifier = verifier
        self._metrics = metrics
        self._prefix = prefix
        self._clock = clock
        self.wall_clock = wall_clock
        self._l1: TTLCache[Held] = TTLCache(l1_size, l1_ttl, clock)
        self._negative: TTLCache[bool] = TTLCache(negative_size, negative_ttl, clock)
        # What L1 holds for a key (not counted as a lookup), or None: TTLCache.get itself, so
        # that the authenticator's fast path pays one call for it.
        self.cached: Callable[[str], Held | None] = self._l1.get
        self._inflight: dict[str, asyncio.Task[Held | None]] = {}
        # Bumped by every apply/evict: a lookup that started before may not fill the caches,
        # so that a slow read of an old record cannot undo a revocation that landed meanwhile.
        self._epoch = 0
        self._redis_paused_until = 0.0
        self._unknown_budget = Budget(unknown_lookups, clock=clock)
        # What to believe beyond the caches (never dropped by evict()): revocations, records
        # Redis has not taken yet, keys in doubt. Consulted on every Redis read and write.
        self.ledger = Ledger(on_doubts=metrics.keys_in_doubt.set)
        # Loads under way when their key turned suspect: their answers are not used.
        self._doubted: weakref.WeakSet[asyncio.Task[Held | None]] = weakref.WeakSet()
        # The lookups waiting for a load, per key: a doubt arriving before a lookup has taken
        # its load's answer (the load may be over already) marks them, and they start over.
        self._waiting: dict[str, set[_Waiter]] = {}

    # -- public API ---------------------------------------------------------------------------
    def vouch_with(self, current_as_of: Callable[[], float | None]) -> None:
        """Keep L1's entries ``l1_ttl`` seconds past the last moment this process knew it had
        applied every key event (``current_as_of``, on the store's clock; None: never), not
        only past when each was stored: while the process stays current, an entry lasts as
        long as it is used (events change it the moment its key changes)."""
        self._l1.vouched = current_as_of

    def redis_key(self, key_id: str) -> str:
        """Where Redis holds the signed record of ``key_id``."""
        return redis_key(self._prefix, key_id)

    async def lookup(self, key_id: str) -> KeyRecord | None:
        """The verified record of ``key_id``; None when it does not exist.

        Raises VerificationUnavailable when neither Redis nor key_service can answer and L1 has
        nothing for the key.
        """
        held = self._l1.get(key_id)
        if held is not None and (held.ends is None or self.wall_clock() < held.ends):
            self._metrics.child(self._metrics.cache_lookups, "l1", "hit").inc()
            return held.record
        self._metrics.child(self._metrics.cache_lookups, "l1", "miss").inc()
        ends = self.ledger.end(key_id)
        if ends is not None and self.wall_clock() >= ends:
            # A rolled key whose end has come (by this process's wall clock, whatever L1's own
            # expiry says): refused without asking anyone, so that nothing that can or cannot
            # be reached changes the answer.
            self._l1.pop(key_id)
            return None
        if self._negative.get(key_id) is not None:
            self._metrics.child(self._metrics.cache_lookups, "negative", "hit").inc()
            return None
        if (key_id not in self._inflight and self.ledger.exists(key_id) is False
                and not self._unknown_budget.take()):
            # Not a key this process knows of (from its snapshot and every verified record
            # since), and the budget for such lookups is spent: a made-up ID, most likely.
            # (Joining a load already under way for the ID costs nothing: one unit per load.)
            self._metrics.child(self._metrics.cache_lookups, "unknown", "refused").inc()
            return None
        for _ in range(_LOAD_ATTEMPTS):
            task = self._inflight.get(key_id)
            if task is None:
                task = asyncio.create_task(self._load(key_id, self._epoch))
                self._inflight[key_id] = task
                task.add_done_callback(functools.partial(self._forget_inflight, key_id))
            waiter = _Waiter()
            waiting = self._waiting.setdefault(key_id, set())
            waiting.add(waiter)
            try:
                held = await asyncio.shield(task)
            finally:
                waiting.discard(waiter)
                if not waiting and self._waiting.get(key_id) is waiting:
                    del self._waiting[key_id]
            if not waiter.doubted:
                break
            # An event that did not verify named this key while this lookup waited: the answer
            # may be the very copy now in doubt. Start over (key_service's answer decides).
        else:
            raise VerificationUnavailable("the key kept being named by events that do not verify")
        if held is None:
            return None
        # A load that began before a revocation was applied (this lookup may have joined it
        # later) must not hand out the record the revocation replaced.
        held = self.ledger.current(held)
        if held is None:
            return None
        if held.record.active and self._ended(held.record):
            # The load (perhaps begun before the end, or bringing a record that carried it)
            # ends now: a rolled key is refused from its end, whichever way its record came.
            self._l1.pop(key_id)
            return None
        return held.record

    async def apply(self, signed: SignedEvent, origin: str = "event", *,
                    likely_stored: bool = False) -> bool:
        """Verify ``signed`` and store it if it supersedes what is held; True if Redis changed.

        Raises RecordRejected for a forged or malformed record (counted under ``origin``), and
        StoreUnavailable when Redis cannot be written: L1 is updated either way, but the caller
        must retry later so that Redis does not keep a stale record. ``likely_stored``: see
        ``_write``.
        """
        try:
            event = self._verify(signed, origin)
        except RecordRejected:
            self._distrust(signed, origin)
            raise
        new = Held(event.sequence, event.record)
        key_id = new.record.key_id
        self.ledger.note_exists(key_id)
        if self.ledger.stale(new):
            # Older than what this process applied (a revocation above all): a replay, or a
            # catch-up going over old ground. Nothing changes, not even an expired L1 entry.
            self._metrics.records_applied.labels("stale").inc()
            return False
        self._epoch += 1
        if new.record.active:
            self._negative.pop(key_id)
        self._remember(key_id, new)
        if not new.record.active:
            self.ledger.keep(new, signed)
        try:
            changed = await self._write(signed, new, likely_stored=likely_stored)
        except StoreUnavailable:
            self._metrics.records_applied.labels("redis_error").inc()
            self.ledger.keep(new, signed)
            raise
        self.ledger.stored(new)
        self._metrics.records_applied.labels("written" if changed else "stale").inc()
        return changed

    def start_from(self, snapshot: Snapshot) -> None:
        """Know every revocation and rolled key's end as of ``snapshot`` (verified by the
        caller), as if the feed up to its sequence had been applied in this process."""
        self._epoch += 1
        self.ledger.start_from(
            snapshot.revoked, {key_id: at.timestamp() for key_id, at in snapshot.ends.items()},
            snapshot.active)
        # Whatever L1 held (nothing, at start) is judged again from Redis and the ledger.
        self._l1.clear()

    def evict(self, key_id: str) -> None:
        """Drop ``key_id`` from the in-process caches; the next lookup reads Redis again."""
        self._epoch += 1
        self._l1.pop(key_id)
        self._negative.pop(key_id)

    def evict_all(self) -> None:
        """Drop every in-process entry (after a gap in the event stream, for instance)."""
        self._epoch += 1
        self._l1.clear()
        self._negative.clear()

    # -- internals ----------------------------------------------------------------------------
    def _distrust(self, signed: SignedEvent, origin: str) -> None:
        """An event that does not verify named a key: stop using what is cached for it."""
        key_id = _named_key(signed.body)
        if key_id is None or self.ledger.is_revoked(key_id):
            self._unknown_signer(signed, origin)
            return  # nothing to doubt: revoked is terminal
        for waiter in self._waiting.pop(key_id, ()):
            waiter.doubted = True  # every lookup waiting on a load starts over
        self._l1.pop(key_id)
        self._negative.pop(key_id)
        task = self._inflight.pop(key_id, None)
        if task is not None:
            self._doubted.add(task)  # it may bring the very copy now in doubt
        if self.ledger.doubt(key_id) is Doubt.EVERY_KEY:
            # L1 keeps what it holds (no key in doubt is in it); Redis is not read any more,
            # and L1 is filled from key_service's answers only.
            log.error(
                "more than %d keys were named by key events that do not verify: this process "
                "no longer trusts the records in Redis and asks key_service for every key "
                "it does not hold (until it restarts)", ledger.SUSPECT_LIMIT,
            )
        self._unknown_signer(signed, origin)

    def _unknown_signer(self, signed: SignedEvent, origin: str) -> None:
        if signed.signing_key not in self._verifier.key_ids:
            log.error(
                "a key event (%s) is signed by key %s, which APIKEYS_VERIFY_KEYS does not hold; "
                "if key_service's signing key was rotated, add its verify key to every gateway. "
                "Until then the key it names is refused unless key_service's answer verifies",
                origin, signed.signing_key[:64],
            )

    def _forget_inflight(self, key_id: str, task: asyncio.Task[Held | None]) -> None:
        if self._inflight.get(key_id) is task:
            del self._inflight[key_id]
        if not task.cancelled():
            # Retrieve the exception so that a failure no waiter saw is not logged as lost.
            task.exception()

    def _verify(self, signed: SignedEvent, origin: str) -> Event:
        try:
            return signed.verify(self._verifier)
        except SignatureError as exc:
            self._metrics.rejected_records.labels(origin, "signature").inc()
            raise RecordRejected(f"{origin} record signature does not verify") from exc
        except EnvelopeError as exc:
            self._metrics.rejected_records.labels(origin, "malformed").inc()
            raise RecordRejected(f"{origin} record is malformed: {exc}") from exc

    async def _with_known(self, key_id: str, held: Held | None, redis_ok: bool) -> Held | None:
        """``held`` from Redis, unless what this process knows overrides it (then put back
        into Redis when it can be)."""
        belief = self.ledger.reconcile(key_id, held)
        if belief.stale:
            self._metrics.rejected_records.labels("redis", "stale").inc()
        if belief.repair is not None and redis_ok:
            # Put back what Redis is missing; a failure only means trying again next time.
            known, signed = belief.repair
            with contextlib.suppress(StoreUnavailable):
                await self._write(signed, known)
                self.ledger.stored(known)
        return belief.held

    def _remember(self, key_id: str, new: Held, *, vouched: bool = False) -> None:
        """Put ``new`` into L1 if the ledger admits it and L1 holds nothing that supersedes it.

        ``vouched``: key_service answered with ``new`` after the key was last in doubt. A key
        with a scheduled end (a rolled key's ``revokes_at``, from whichever record of it this
        process has seen) gets it on its entry (``Held.ends``, checked against the wall clock
        by every lookup and by the authenticator's fast path), and L1 lets the entry go then
        too. Once the end has come, nothing of the key stays in L1.
        """
        ends = None if not new.record.active else self.ledger.schedule(new.record)
        if ends is not None:
            left = ends - self.wall_clock()
            if left <= 0:
                self._l1.pop(key_id)
                return
            new.ends = ends
            self._end_entry(key_id, ends)
        if self.ledger.admits(new, vouched=vouched) and supersedes(new, self._l1.get(key_id)):
            self._l1.put(key_id, new,
                         ends=None if ends is None else self._clock() + (ends - self.wall_clock()))

    def _end_entry(self, key_id: str, ends: float) -> None:
        """Put the key's end on its L1 entry, if that came without it (an older record)."""
        held = self._l1.get(key_id)
        if held is not None and (held.ends is None or held.ends > ends):
            held.ends = ends

    def _ended(self, record: KeyRecord) -> bool:
        """``record``'s key has a scheduled end (noted in the ledger, ``record``'s own
        ``revokes_at`` included) and it has come by the wall clock. The end also goes on the
        key's L1 entry, whichever record that holds."""
        ends = self.ledger.schedule(record)
        if ends is None:
            return False
        self._end_entry(record.key_id, ends)
        return self.wall_clock() >= ends

    def due(self, key_id: str) -> bool:
        """``key_id`` is revoked here, or its scheduled revocation (``revokes_at``) has come."""
        return self.ledger.due(key_id, self.wall_clock())

    def _redis_available(self) -> bool:
        return self._clock() >= self._redis_paused_until

    def _redis_failed(self) -> None:
        self._redis_paused_until = self._clock() + REDIS_PAUSE_SECONDS

    def _parse_held(self, raw: bytes | str | None, key_id: str, origin: str) -> Held | None:
        """A verified Held from a stored form, or None when absent or not trustworthy."""
        if raw is None:
            return None
        try:
            event = self._verify(SignedEvent.from_text(raw), origin)
        except (RecordRejected, EnvelopeError):
            if origin == "redis":
                self._metrics.rejected_records.labels(origin, "malformed").inc()
            return None
        if event.record.key_id != key_id:
            self._metrics.rejected_records.labels(origin, "wrong_key").inc()
            return None
        self.ledger.note_exists(key_id)
        return Held(event.sequence, event.record)

    async def _get(self, reader: Any, key: str, *, count: bool = True) -> bytes | None:
        """GET ``key`` through ``reader`` (the client or a pipeline under WATCH).

        A key of another type than a string (WRONGTYPE) is Redis answering about that one key,
        not Redis failing: it holds no record we can use, so it reads as a malformed one
        (counted), and the next write replaces it (SET takes a key of any type).
        """
        try:
            raw: bytes | None = await reader.get(key)
        except ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
            if count:
                self._metrics.rejected_records.labels("redis", "malformed").inc()
            return None
        return raw

    async def _read_redis(self, key_id: str) -> Held | None:
        """The verified record Redis holds; raises StoreUnavailable when Redis is away."""
        if not self._redis_available():
            raise StoreUnavailable("Redis paused after a recent error")
        try:
            raw = await self._get(self._redis, self.redis_key(key_id))
        except (TimeoutError, RedisError, OSError) as exc:
            self._redis_failed()
            raise StoreUnavailable(f"Redis read failed: {type(exc).__name__}") from exc
        return self._parse_held(raw, key_id, "redis")

    async def _write(self, signed: SignedEvent, new: Held, *, likely_stored: bool = False) -> bool:
        """Compare-and-set in Redis under WATCH; True when the record was written.

        ``likely_stored``: Redis probably holds this very record already (a catch-up).
        """
        if self.ledger.stale(new):
            return False  # never put back what this process knows was superseded
        if not self._redis_available():
            raise StoreUnavailable("Redis paused after a recent error")
        key = self.redis_key(new.record.key_id)
        text = signed.to_text()
        try:
            if likely_stored:
                # A catch-up mostly brings records Redis holds already (after a restart): one
                # read settles those, with no WATCH and no verifying, and an empty key takes
                # the record with one SET NX. Anything else goes the WATCH way below.
                current = await self._get(self._redis, key, count=False)
                if current == text.encode():
                    return False
                if current is None and await self._redis.set(key, text, nx=True):
                    return True
                # Anything else (another record, a key of another type, a race) is settled
                # under WATCH.
            async with self._redis.pipeline(transaction=True) as pipe:
                for _ in range(_WATCH_RETRIES):
                    try:
                        await pipe.watch(key)
                        held = self._parse_held(
                            await self._get(pipe, key), new.record.key_id, "redis")
                        if not supersedes(new, held):
                            await pipe.unwatch()  # type: ignore[no-untyped-call]
                            if held is not None:
                                self._remember(new.record.key_id, held)
                            return False
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(key, text)
                        await pipe.execute()
                        return True
                    except WatchError:
                        continue
        except (TimeoutError, RedisError, OSError) as exc:
            self._redis_failed()
            raise StoreUnavailable(f"Redis write failed: {type(exc).__name__}") from exc
        raise StoreUnavailable("Redis record kept changing under WATCH")

    async def _load(self, key_id: str, epoch: int) -> Held | None:
        """Redis, then key_service; fills the caches unless an apply/evict happened meanwhile."""
        redis_error: StoreUnavailable | None = None
        held: Held | None = None
        doubt = self.ledger.in_doubt(key_id)
        if doubt:
            # Named by an event that did not verify: Redis's copy is what is in doubt.
            self._metrics.cache_lookups.labels("redis", "skipped").inc()
        elif self._feed_read is not None and not self._feed_read.is_set():
            # Before the first catch-up this process does not know the revocations yet, so a
            # genuinely signed but older record put back into Redis could not be told from the
            # current one: until then only key_service answers (and its answer goes to Redis).
            self._metrics.cache_lookups.labels("redis", "skipped").inc()
        else:
            try:
                held = await self._read_redis(key_id)
            except StoreUnavailable as exc:
                redis_error = exc
                self._metrics.cache_lookups.labels("redis", "error").inc()
            else:
                self._metrics.cache_lookups.labels("redis", "hit" if held else "miss").inc()
        held = await self._with_known(key_id, held, redis_error is None)
        vouched = False
        if held is None or (doubt and held.record.active):
            if self.due(key_id):
                # Revoked for good, or a rolled key whose end has come: no need to ask (nor to
                # fail when nothing can answer): the key is refused either way.
                return None
            held = await self._ask_key_service(key_id, redis_error, epoch)
            # Asked after the doubt, and no new doubt since (that would have doubted this
            # very load): key_service's verified answer decides.
            # (A 404 carries no signature: it settles nothing.)
            vouched = doubt and held is not None and asyncio.current_task() not in self._doubted
            if vouched:
                self.ledger.settle(key_id)
            if held is None:
                return None
        if not held.record.active:
            # Terminal, whatever else happened meanwhile (the epoch only guards L1 against
            # answers that a change overtook; a revocation is never overtaken).
            self.ledger.seen_revoked(key_id)
        held = self.ledger.current(held)  # the awaits above may have let a revocation in
        if held is None:
            return None
        if epoch == self._epoch and asyncio.current_task() not in self._doubted:
            self._remember(key_id, held, vouched=vouched)
        return held

    async def _ask_key_service(
        self, key_id: str, redis_error: StoreUnavailable | None, epoch: int
    ) -> Held | None:
        try:
            signed = await self._key_service.fetch_key(key_id)
        except VerificationUnavailable as exc:
            self._metrics.cache_lookups.labels("key_service", "error").inc()
            detail = "Redis and key_service" if redis_error else "key_service"
            raise VerificationUnavailable(f"{detail} could not answer for a key") from exc
        if signed is None:
            self._metrics.cache_lookups.labels("key_service", "miss").inc()
            if epoch == self._epoch:
                self._negative.put(key_id, True)
            return None
        held = self._parse_held(signed.to_text(), key_id, "key_service")
        if held is None:
            self._metrics.cache_lookups.labels("key_service", "error").inc()
            raise VerificationUnavailable("key_service sent a record that does not verify")
        self._metrics.cache_lookups.labels("key_service", "hit").inc()
        if redis_error is None:
            # Share what we learnt with the other gateway processes; a failure here only
            # costs them a key_service call of their own.
            with contextlib.suppress(StoreUnavailable):
                await self._write(signed, held)
        return held


def _named_key(body: bytes) -> str | None:
    """The key ID an event body names, read without trusting it (None when it names none)."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    data = obj.get("data") if isinstance(obj, dict) else None
    key_id = data.get("key_id") if isinstance(data, dict) else None
    return key_id if is_valid_key_id(key_id) else None
