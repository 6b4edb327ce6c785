"""Keeping the gateway current: key events from RabbitMQ, and the feed when they may be missing.

Every gateway process applies each ``key.issued`` / ``key.revoked`` event it receives on its own
queue (see ``consumer``). Events carry the outbox's dense sequence number, so a process knows
which events it has applied: a sequence above the next one expected means some were missed (the
queue only exists while the process is connected), and the process reads key_service's feed
from the last one it holds (see ``feed``). It does the same at start-up, after every reconnect,
and every ``GATEWAY_FEED_POLL_INTERVAL`` seconds while RabbitMQ is away, so that a revocation
takes effect within that bound even with the broker down; while subscribed, every
``GATEWAY_FEED_SAFETY_INTERVAL`` seconds, which also reveals a subscription that stopped
receiving without a word from the broker (the consumer then subscribes afresh). Nothing is
applied unless its Ed25519 signature verifies; the key store keeps a record only when it is
newer than the one it holds, and ``revoked`` is terminal, so applying the same event twice is
harmless. The *watermark* (every event up to it applied here) is what the process's heartbeat
reports to key_service for revocation receipts (``heartbeat``; docs/architecture.md,
"Revocation receipts").
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from aiohttp import web

from apikeys_shared.errors import EnvelopeError
from apikeys_shared.events import Event, SignedEvent
from apikeys_shared.snapshot import Snapshot

from .errors import KeyServiceUnavailable, RecordRejected, StoreUnavailable
from .freshness import Freshness
from .metrics import Metrics
from .snapshots import SnapshotSource

__all__ = [
    "FEED_READ",
    "SYNCED",
    "Arrival",
    "FeedSource",
    "Outcome",
    "RecordSink",
    "SequenceTracker",
    "SyncSettings",
    "Synchronizer",
    "sync_ctx",
]

log = logging.getLogger("auth_gateway.sync")

# Set once the first catch-up from key_service's feed is done; /readyz waits for it.
SYNCED = web.AppKey("synced", asyncio.Event)
# Set once a catch-up has applied the whole feed in this process, even if Redis did not take
# every record: from then on the key store knows every revocation, and may trust Redis.
FEED_READ = web.AppKey("feed_read", asyncio.Event)

Source = Literal["amqp", "feed"]
Outcome = Literal["applied", "rejected", "deferred"]

# With the broker up, the feed is still read this often: an event lost without any later one
# to reveal the gap (the last revocation before a quiet period) is then applied within it.
SAFETY_POLL_INTERVAL = 10.0
# An event such a read applied, and that the broker has still not delivered this long after,
# was lost to the consumer although it is subscribed (its queue lost its bindings, say, when
# the exchange was deleted and declared again): the consumer then subscribes afresh.
MISSED_DELIVERY_AGE = 5.0
_AWAITED_LIMIT = 1000
FEED_PAGE_SIZE = 500
# Feed events applied at once during a catch-up (each costs a few Redis round trips).
CATCH_UP_CONCURRENCY = 16
_ORIGIN: dict[str, str] = {"amqp": "event", "feed": "feed"}


class Arrival(enum.Enum):
    """Where an event's sequence stands relative to what this process has applied."""

    STALE = "stale"  # at or below the last sequence applied in order: a duplicate or replay
    NEXT = "next"  # exactly the next one expected
    GAP = "gap"  # beyond the next one: some events in between were missed


@dataclass
class SequenceTracker:
    """Bookkeeping of the sequence numbers applied, to notice missed events.

    ``applied`` is the highest sequence such that it and every sequence before it have been
    applied (or deliberately passed over); ``highest`` is the highest sequence seen at all.
    """

    applied: int = 0
    highest: int = 0

    def classify(self, sequence: int) -> Arrival:
        """Where ``sequence`` stands; changes nothing."""
        if sequence <= self.applied:
            return Arrival.STALE
        if sequence == self.applied + 1:
            return Arrival.NEXT
        return Arrival.GAP

    def mark_applied(self, sequence: int) -> Arrival:
        """Record that the event ``sequence`` was applied; return where it stood before."""
        arrival = self.classify(sequence)
        self.highest = max(self.highest, sequence)
        if arrival is Arrival.NEXT:
            self.applied = sequence
        return arrival

    def caught_up(self, sequence: int) -> None:
        """The feed was read and applied in order through ``sequence``."""
        self.applied = max(self.applied, sequence)
        self.highest = max(self.highest, sequence)

    @property
    def missing(self) -> int:
        """How many sequences between ``applied`` and ``highest`` have not been applied."""
        return max(0, self.highest - self.applied)


class RecordSink(Protocol):
    """Where signed records go: the gateway's key store (verifies; newer-only; revoked terminal).

    ``apply`` raises RecordRejected for a forged or malformed record and StoreUnavailable when
    the record could not be written to Redis.
    """

    async def apply(self, signed: SignedEvent, origin: str = "event", *,
                    likely_stored: bool = False) -> bool:
        """Verify ``signed``, keep it if it supersedes the record held, evict the L1 copy.

        ``likely_stored``: Redis probably holds this very record already (the first catch-up
        of a process that starts while others run).
        """


    def start_from(self, snapshot: Snapshot) -> None:
        """Know every revocation (and rolled key's end) as of ``snapshot``, verified."""


class FeedPageLike(Protocol):
    """One page of key_service's feed."""

    @property
    def events(self) -> Sequence[SignedEvent]:
        """Signed events in sequence order (unverified)."""

    @property
    def last_sequence(self) -> int:
        """The highest sequence the feed holds."""


class FeedSource(Protocol):
    """key_service's replayable event feed (``GET /internal/v1/events``)."""

    async def fetch_events(self, after: int, limit: int = FEED_PAGE_SIZE) -> FeedPageLike:
        """Signed events with a sequence above ``after``; raises KeyServiceUnavailable."""


@dataclass(frozen=True)
class SyncSettings:
    """What the synchronizer needs to know, taken from the gateway's configuration."""

    rabbitmq_url: str
    exchange: str
    queue_prefix: str
    feed_poll_interval: float
    safety_poll_interval: float = SAFETY_POLL_INTERVAL
    missed_delivery_age: float = MISSED_DELIVERY_AGE
    feed_page_size: int = FEED_PAGE_SIZE
    amqp_timeout: float = 10.0


class Synchronizer:
    """Applies events in sequence, and reads the feed whenever events may have been missed."""

    def __init__(
        self,
        *,
        sink: RecordSink,
        feed: FeedSource,
        settings: SyncSettings,
        metrics: Metrics,
        synced: asyncio.Event,
        feed_read: asyncio.Event,
        snapshots: SnapshotSource | None = None,
    ) -> None:
        """``snapshots``: where the first catch-up takes its revocation snapshot from, so that
        it reads only the feed after it (None: it reads the whole feed)."""
        self._sink = sink
        self._snapshots = snapshots
        self._started = snapshots is None
        self._feed_read = feed_read
        self._feed = feed
        self._settings = settings
        self._metrics = metrics
        self._synced = synced
        self.tracker = SequenceTracker()
        self._apply_lock = asyncio.Lock()
        self._catch_up_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._catch_up_pending = True
        self._subscribed = False
        self._feed_healthy = True
        self._store_healthy = True
        # Every event through this sequence has been applied in this process (L1 and the
        # store's record of revocations), whether or not Redis took it.
        self._in_process = 0
        # Events a safety read of the feed applied (sequence -> when), until the broker
        # delivers them too; one still undelivered MISSED_DELIVERY_AGE later means the
        # subscription is deaf, and ``on_missed_delivery`` (the consumer's resubscribe, set by
        # whoever runs both) is called.
        self._checking_delivery = False
        self._awaited: dict[int, float] = {}
        self.on_missed_delivery: Callable[[], None] | None = None
        # How current the process knows itself to be (gateway_revocation_lag_seconds), and
        # who wants to hear when the watermark moves (the heartbeat, set by whoever runs both).
        self.freshness = Freshness(time.monotonic())
        self.on_progress: Callable[[], None] | None = None

    @property
    def watermark(self) -> int:
        """The highest sequence such that it and every event before it are applied here.

        Applied in this process (L1 and the key store's record of revocations), whether or not
        Redis took the record: what a heartbeat reports, and what a revocation's receipt
        counts on. Never the highest sequence merely seen: a gap below it may hold a
        revocation not applied yet.
        """
        return max(self.tracker.applied, self._in_process)

    def _progressed(self) -> None:
        self.freshness.reached(self.watermark)
        if self.on_progress is not None:
            self.on_progress()

    # -- state the AMQP consumer reports ----------------------------------------------------
    @property
    def subscribed(self) -> bool:
        """True while the process consumes its queue."""
        return self._subscribed

    @property
    def catch_up_pending(self) -> bool:
        """True when events may have been missed and the feed has not been read since."""
        return self._catch_up_pending

    def set_subscribed(self, subscribed: bool) -> None:
        """The consumer (re)subscribed or lost its connection: either way, read the feed now."""
        self._subscribed = subscribed
        self._awaited.clear()  # a new queue never brings what the old one missed
        self.request_catch_up()

    def request_catch_up(self) -> None:
        """Ask the feed loop to read the feed as soon as it can."""
        self._catch_up_pending = True
        self._wake.set()

    # -- applying ---------------------------------------------------------------------------
    async def handle(self, signed: SignedEvent, source: Source) -> Outcome:
        """Verify and apply one signed event; a gap in sequence numbers requests a catch-up."""
        outcome, _ = await self._apply(signed, source)
        return outcome

    def reject_unparsed(self, source: Source, reason: Literal["signature", "malformed"]) -> None:
        """Count an event that could not even be read as a signed event (no signature)."""
        self._metrics.rejected_records.labels(_ORIGIN[source], reason).inc()
        self._metrics.events.labels(source, "rejected").inc()
        log.warning("rejected a key event from %s: %s", source, reason)

    async def _apply(self, signed: SignedEvent, source: Source) -> tuple[Outcome, int | None]:
        """Apply one event; the outcome and, when it was applied, its sequence.

        Events from the broker are applied one at a time, in the order they arrive, so that
        their sequence numbers tell a gap from a reordering; feed pages are applied several at
        a time (the store keeps the newest record per key whatever the order).
        """
        if source == "amqp":
            async with self._apply_lock:
                return await self._apply_one(signed, source)
        return await self._apply_one(signed, source)

    async def _apply_one(self, signed: SignedEvent, source: Source) -> tuple[Outcome, int | None]:
        try:
            await self._sink.apply(
                signed, _ORIGIN[source],
                likely_stored=source == "feed" and not self._synced.is_set(),
            )
        except RecordRejected:
            # Counted by the store under its origin and reason; never applied.
            self._metrics.events.labels(source, "rejected").inc()
            log.warning("rejected a key event from %s: it does not verify", source)
            return "rejected", None
        except Exception as exc:
            # StoreUnavailable (Redis away; the process's L1 has the record already) or
            # anything unforeseen: the next catch-up starts below this sequence, so the feed
            # brings the event again once the store takes writes.
            self._metrics.events.labels(source, "deferred").inc()
            if self._store_healthy:
                log.warning("cannot store key events (%s); catching up later", exc)
            if not isinstance(exc, StoreUnavailable):
                log.exception("unexpected error applying a key event")
                # Unlike Redis refusing a write (L1 and the ledger have the record), this may
                # have left L1 as it was: the process is not current until the event is in.
                self.freshness.suspend()
            self._store_healthy = False
            self._catch_up_pending = True
            self._wake.set()
            return "deferred", None
        if not self._store_healthy:
            log.info("key events are stored again")
            self._store_healthy = True
        # apply() verified the signature, so the body is the key service's own.
        event = Event.from_bytes(signed.body)
        newest = event.sequence >= self.tracker.highest
        arrival = self.tracker.mark_applied(event.sequence)
        self._metrics.events.labels(source, "applied").inc()
        self._metrics.last_sequence.set(self.tracker.applied)
        if arrival is not Arrival.STALE:
            self._metrics.last_event_applied.set(time.time())
        if arrival is Arrival.NEXT:
            self._progressed()
        if source == "amqp":
            self._awaited.pop(event.sequence, None)
        elif (self._checking_delivery and arrival is not Arrival.STALE
              and len(self._awaited) < _AWAITED_LIMIT):
            # Only what this read applied first: an event the broker delivered while the
            # feed page was on its way is stale here, and was not missed.
            self._awaited.setdefault(event.sequence, asyncio.get_running_loop().time())
        if newest:
            lag = (datetime.now(UTC) - event.time).total_seconds()
            self._metrics.event_lag.set(max(0.0, lag))
        if arrival is Arrival.GAP and source == "amqp":
            log.info(
                "event %d arrived after %d: catching up from the feed",
                event.sequence, self.tracker.applied,
            )
            self.request_catch_up()
        return "applied", event.sequence

    # -- the feed ---------------------------------------------------------------------------
    async def catch_up(self) -> bool:
        """Read the feed from the last sequence applied in order to its end, applying each event.

        Returns False, leaving a catch-up pending, when an event could not be stored: the
        cursor then stays before it (so that its Redis write is retried), but the rest of the
        feed is still applied in this process, so that a revocation further on takes effect
        now and not only once Redis is back. Raises KeyServiceUnavailable when the feed cannot
        be read.
        """
        async with self._catch_up_lock:
            self._catch_up_pending = False
            if not self._started:
                await self._start_from_snapshot()
                self._started = True
            fetch_after = self.tracker.applied
            limit = self._settings.feed_page_size
            deferred = False
            while True:
                asked_at, asked_watermark = time.monotonic(), self.watermark
                page = await self._feed.fetch_events(after=fetch_after, limit=limit)
                self.freshness.learn(page.last_sequence, asked_at, self.watermark,
                                     asked_watermark)
                start = fetch_after
                fetch_after, page_deferred = await self._apply_page(
                    page.events, fetch_after, in_order=not deferred,
                )
                deferred = deferred or page_deferred
                if fetch_after == start:
                    break
                if fetch_after >= page.last_sequence and len(page.events) < limit:
                    break
                if deferred:
                    # What this process already took would only be passed over: not fetched.
                    fetch_after = max(fetch_after, self._in_process)
            self._in_process = max(self._in_process, fetch_after)
            if not deferred:
                self.freshness.resume()  # whatever failed before is applied now
        self._progressed()
        self._feed_read.set()
        if deferred:
            self.request_catch_up()
            return False
        if not self._synced.is_set():
            log.info("first catch-up done at sequence %d", self.tracker.applied)
            self._synced.set()
        return True

    async def _start_from_snapshot(self) -> None:
        """Start where a revocation snapshot stands instead of at the feed's beginning.

        Redis's copy when the feed after it is short, else key_service's (see ``snapshots``);
        without either (an older key_service, or one that did not verify) the whole feed is
        read, as before. Raises KeyServiceUnavailable when key_service cannot answer.
        """
        source = self._snapshots
        assert source is not None
        snapshot = await source.cached()
        origin = "redis"
        if snapshot is not None:
            behind = await self._behind(snapshot)
            # Too far behind, or not of the history the feed holds now (a database restored
            # from a backup, an asynchronous standby promoted): not to be started from.
            if behind is None or behind > source.max_behind:
                source.stale()
                snapshot = None
        if snapshot is None:
            snapshot = await source.fresh()
            origin = "key_service"
            if snapshot is not None and await self._behind(snapshot) is None:
                # key_service checks its own copy against the feed; a failover between its
                # answer and this read could still part them. The whole feed is always right.
                source.stale("key_service")
                snapshot = None
        if snapshot is None:
            log.warning("no revocation snapshot to start from: reading the whole event feed")
            return
        self._sink.start_from(snapshot)
        source.used(origin)
        self.tracker.caught_up(snapshot.sequence)
        self._in_process = max(self._in_process, snapshot.sequence)
        log.info("started from the revocation snapshot at sequence %d (%s; %d revoked keys)",
                 snapshot.sequence, origin, len(snapshot.revoked))

    async def _behind(self, snapshot: Snapshot) -> int | None:
        """How many events the feed holds after ``snapshot``; None when the feed does not hold
        the snapshot's event at its sequence (another history), or ends before it."""
        if snapshot.sequence == 0:
            return (await self._feed.fetch_events(after=0, limit=1)).last_sequence
        page = await self._feed.fetch_events(after=snapshot.sequence - 1, limit=1)
        if not page.events or page.last_sequence < snapshot.sequence:
            return None
        try:
            at = Event.from_bytes(page.events[0].body)
        except EnvelopeError:
            return None
        if at.sequence != snapshot.sequence or at.id != snapshot.event_id:
            return None
        return page.last_sequence - snapshot.sequence

    async def _apply_page(self, events: Sequence[SignedEvent], cursor: int,
                          *, in_order: bool) -> tuple[int, bool]:
        """Apply a page of the feed, a few events at a time.

        Returns the sequence the page reached and whether an event could not be stored. The
        tracker (where the next catch-up starts) moves only while ``in_order`` and only up to
        the first event that could not be stored. Once one could not, events this process
        already applied in an earlier catch-up are passed over (their Redis writes wait for
        the next catch-up), so that a Redis outage does not mean re-verifying the whole feed on
        every poll.
        """
        step = CATCH_UP_CONCURRENCY
        deferred = not in_order
        for first in range(0, len(events), step):
            chunk = events[first:first + step]
            todo = [
                signed for signed in chunk
                if not (deferred and (_unverified_sequence(signed) or 0) <= self._in_process)
            ]
            outcomes = dict(zip(
                (id(signed) for signed in todo),
                await asyncio.gather(*(self._apply(signed, "feed") for signed in todo)),
                strict=True,
            ))
            for signed in chunk:
                outcome, sequence = outcomes.get(id(signed), ("deferred", None))
                if sequence is None:
                    # Not applied (deferred, passed over, or not verifiable): it stands for the
                    # next sequence, whatever its unverified body claims; sequences are dense,
                    # so one bad entry cannot move the cursor past events it never saw.
                    sequence = cursor + 1
                if outcome == "deferred" and not deferred:
                    deferred = True
                cursor = max(cursor, sequence)
                if not deferred:
                    self.tracker.caught_up(cursor)
            self._metrics.last_sequence.set(self.tracker.applied)
            self._progressed()
        return cursor, deferred

    async def run_feed_loop(self) -> None:
        """Read the feed when asked, every poll interval while unsubscribed, and now and then."""
        while True:
            fast = self._catch_up_pending or not self._subscribed
            interval = (
                self._settings.feed_poll_interval if fast else self._settings.safety_poll_interval
            )
            woken = False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
                woken = True
            self._wake.clear()
            # A read on the timer while subscribed and current: whatever it brings, the broker
            # did not deliver (or has not yet).
            self._checking_delivery = (
                not fast and not woken and self._subscribed and not self._catch_up_pending
            )
            try:
                await self.catch_up()
            except KeyServiceUnavailable as exc:
                self._catch_up_pending = True
                if self._feed_healthy:
                    log.warning("cannot read key_service's event feed: %s", exc)
                self._feed_healthy = False
                continue
            except Exception:
                # This loop is what keeps the process current without the broker: it must
                # outlive any surprise, and try again at the next interval.
                self._catch_up_pending = True
                log.exception("unexpected error catching up from the feed")
                continue
            finally:
                self._checking_delivery = False
            if not self._feed_healthy:
                log.info("key_service's event feed is readable again")
            self._feed_healthy = True
            self._check_delivery()

    def _check_delivery(self) -> None:
        """Subscribe afresh if the broker has not delivered, long after, what the feed had."""
        if not self._awaited:
            return
        since = asyncio.get_running_loop().time() - self._settings.missed_delivery_age
        missed = sum(1 for applied_at in self._awaited.values() if applied_at <= since)
        if not missed or not self._subscribed:
            return
        self._awaited.clear()
        self._metrics.events.labels("feed", "missed_by_amqp").inc(missed)
        log.warning(
            "%d key event(s) reached this process only through the feed although it is "
            "subscribed: subscribing afresh", missed,
        )
        if self.on_missed_delivery is not None:
            self.on_missed_delivery()


def _unverified_sequence(signed: SignedEvent) -> int | None:
    try:
        return Event.from_bytes(signed.body).sequence
    except EnvelopeError:
        return None


async def sync_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context that consumes key events, catches up from the feed and sends heartbeats.

    Needs the app's CONFIG, METRICS, KEYSTORE and KEY_SERVICE (made by earlier contexts) and
    its SYNCED event; the first successful catch-up sets SYNCED.
    """
    from .appkeys import CONFIG, KEY_SERVICE, KEYSTORE, METRICS, REDIS
    from .consumer import EventConsumer
    from .heartbeat import HeartbeatPublisher, identity

    config = app[CONFIG]
    settings = SyncSettings(
        rabbitmq_url=config.rabbitmq_url,
        exchange=config.exchange,
        queue_prefix=config.queue_prefix,
        feed_poll_interval=config.feed_poll_interval,
        safety_poll_interval=config.feed_safety_interval,
    )
    verifier = config.secrets.verifier
    assert verifier is not None  # the gateway's configuration always reads the verify keys
    snapshots = SnapshotSource(
        redis=app[REDIS], key_service=app[KEY_SERVICE], verifier=verifier,
        metrics=app[METRICS], prefix=config.redis_prefix,
    )
    sync = Synchronizer(
        sink=app[KEYSTORE], feed=app[KEY_SERVICE], settings=settings, metrics=app[METRICS],
        synced=app[SYNCED], feed_read=app[FEED_READ], snapshots=snapshots,
    )
    consumer = EventConsumer(
        sync, url=settings.rabbitmq_url, exchange=settings.exchange,
        queue_prefix=settings.queue_prefix, timeout=settings.amqp_timeout,
        dead_letter_exchange=config.dead_letter_exchange,
    )
    sync.on_missed_delivery = consumer.resubscribe
    heartbeat = HeartbeatPublisher(
        sink=app[KEY_SERVICE], who=identity(config.name), watermark=lambda: sync.watermark,
        freshness=sync.freshness, metrics=app[METRICS], interval=config.heartbeat_interval,
    )
    sync.on_progress = heartbeat.progressed
    if config.l1_keep_while_current:
        app[KEYSTORE].vouch_with(lambda: sync.freshness.current_as_of)
    app[METRICS].revocation_lag.set_function(lambda: sync.freshness.lag(time.monotonic()))
    tasks = [
        asyncio.create_task(sync.run_feed_loop(), name="gateway-feed"),
        asyncio.create_task(consumer.run(), name="gateway-consumer"),
        asyncio.create_task(heartbeat.run(), name="gateway-heartbeat"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await consumer.close()
        # The server has stopped and drained before the app's contexts close.
        await heartbeat.leave()
