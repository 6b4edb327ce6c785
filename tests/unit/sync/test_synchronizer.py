"""The synchronizer's logic with an in-memory store and feed: gaps, catch-up, deferral, rejects.

The store and the feed are fakes here (pure logic); the integration and end-to-end suites run the
same code against the real key store, Redis, RabbitMQ and key_service.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from apikeys_shared.errors import ApiKeysError
from apikeys_shared.events import Event, KeyRecord, SignedEvent
from apikeys_shared.keys import new_key_id
from apikeys_shared.signing import Signer, Verifier, generate_signing_key
from auth_gateway.errors import KeyServiceUnavailable, RecordRejected, StoreUnavailable
from auth_gateway.metrics import Metrics
from auth_gateway.sync import Synchronizer, SyncSettings


def _signer() -> tuple[Signer, Verifier]:
    seed, verify = generate_signing_key()
    return Signer.from_base64(seed), Verifier.from_base64([verify])


SIGNER, VERIFIER = _signer()
OTHER_SIGNER, _ = _signer()


def signed_event(sequence: int, *, revoked: bool = False, signer: Signer = SIGNER) -> SignedEvent:
    now = datetime.now(UTC)
    record = KeyRecord(
        key_id=new_key_id(), name=f"k{sequence}", status="revoked" if revoked else "active",
        issued_at=now, revoked_at=now if revoked else None, secret_hash="ab" * 32,
        hash_version="p1",
    )
    return SignedEvent.sign(Event.for_record(record, sequence=sequence, source="urn:t"), signer)


@dataclass
class FakeStore:
    """Verifies like the real store; ``down`` makes writes fail like Redis being away."""

    applied: list[int] = field(default_factory=list)
    # What the real store takes in-process (L1, its record of revocations) even when the
    # Redis write then fails.
    seen: list[int] = field(default_factory=list)
    down: bool = False

    async def apply(self, signed: SignedEvent, origin: str = "event", *,
                    likely_stored: bool = False) -> bool:
        try:
            event = signed.verify(VERIFIER)
        except ApiKeysError as exc:
            raise RecordRejected(str(exc)) from exc
        self.seen.append(event.sequence)
        if self.down:
            raise StoreUnavailable("Redis write failed")
        self.applied.append(event.sequence)
        return True


@dataclass(frozen=True)
class Page:
    events: tuple[SignedEvent, ...]
    last_sequence: int


@dataclass
class FakeFeed:
    """Serves ``events`` (by the sequence their bodies name) in pages; ``down`` raises."""

    events: list[tuple[int, SignedEvent]] = field(default_factory=list)
    down: bool = False
    calls: list[int] = field(default_factory=list)

    def add(self, *items: SignedEvent) -> None:
        for item in items:
            self.events.append((Event.from_bytes(item.body).sequence, item))

    async def fetch_events(self, after: int, limit: int = 500) -> Page:
        self.calls.append(after)
        if self.down:
            raise KeyServiceUnavailable("key_service unreachable")
        selected = [s for seq, s in sorted(self.events, key=lambda p: p[0]) if seq > after]
        last = max((seq for seq, _ in self.events), default=0)
        return Page(tuple(selected[:limit]), last)


@dataclass
class Rig:
    sync: Synchronizer
    store: FakeStore
    feed: FakeFeed
    synced: asyncio.Event
    metrics: Metrics
    feed_read: asyncio.Event

    def count(self, name: str, labels: dict[str, str]) -> float:
        return self.metrics.registry.get_sample_value(f"{name}_total", labels) or 0.0


@pytest.fixture
def rig() -> Rig:
    store, feed, synced, metrics = FakeStore(), FakeFeed(), asyncio.Event(), Metrics()
    settings = SyncSettings(
        rabbitmq_url="amqp://unused/", exchange="x", queue_prefix="q", feed_poll_interval=0.01,
        safety_poll_interval=0.01, feed_page_size=3,
    )
    feed_read = asyncio.Event()
    sync = Synchronizer(sink=store, feed=feed, settings=settings, metrics=metrics, synced=synced,
                        feed_read=feed_read)
    return Rig(sync, store, feed, synced, metrics, feed_read)


async def test_catch_up_pages_through_the_feed_and_sets_synced(rig: Rig) -> None:
    rig.feed.add(*(signed_event(n) for n in range(1, 9)))
    assert await rig.sync.catch_up()
    assert rig.store.applied == list(range(1, 9))
    assert rig.feed.calls == [0, 3, 6]
    assert rig.sync.tracker.applied == 8
    assert rig.synced.is_set()
    assert rig.metrics.registry.get_sample_value("gateway_last_sequence") == 8


async def test_catch_up_of_an_empty_feed_still_counts_as_synced(rig: Rig) -> None:
    assert await rig.sync.catch_up()
    assert rig.synced.is_set()
    assert rig.feed.calls == [0]


async def test_in_order_events_need_no_catch_up(rig: Rig) -> None:
    await rig.sync.catch_up()
    rig.feed.calls.clear()
    for n in (1, 2, 3):
        assert await rig.sync.handle(signed_event(n), "amqp") == "applied"
    assert rig.sync.tracker.applied == 3
    # Nothing pending: the next catch-up would only be the periodic safety read.
    assert not rig.sync.catch_up_pending


async def test_a_gap_triggers_a_catch_up_from_the_last_event_in_order(rig: Rig) -> None:
    first, missed, after = signed_event(1), signed_event(2), signed_event(3)
    rig.feed.add(first)
    await rig.sync.catch_up()
    rig.feed.add(missed, after)  # 2 never reaches this process's queue; 3 does
    assert await rig.sync.handle(after, "amqp") == "applied"
    assert rig.sync.catch_up_pending
    assert rig.sync.tracker.applied == 1
    await rig.sync.catch_up()
    assert rig.feed.calls[-1] == 1
    assert 2 in rig.store.applied
    assert rig.sync.tracker.applied == 3


async def test_forged_and_unsigned_events_are_rejected_and_counted(rig: Rig) -> None:
    forged = signed_event(1, signer=OTHER_SIGNER)
    assert await rig.sync.handle(forged, "amqp") == "rejected"
    rig.sync.reject_unparsed("amqp", "signature")
    assert rig.store.applied == []
    assert rig.sync.tracker.applied == 0
    assert rig.count("gateway_events", {"source": "amqp", "outcome": "rejected"}) == 2


async def test_a_store_outage_defers_events_and_the_feed_brings_them_back(rig: Rig) -> None:
    events = [signed_event(n, revoked=True) for n in (1, 2, 3)]
    rig.feed.add(*events)
    rig.store.down = True
    assert await rig.sync.handle(events[0], "amqp") == "deferred"
    assert not await rig.sync.catch_up()
    assert rig.sync.tracker.applied == 0
    assert rig.sync.catch_up_pending
    assert not rig.synced.is_set()
    rig.store.down = False
    assert await rig.sync.catch_up()
    assert rig.store.applied == [1, 2, 3]
    assert rig.synced.is_set()


async def test_a_feed_entry_that_does_not_verify_is_passed_over_not_applied(rig: Rig) -> None:
    rig.feed.add(signed_event(1), signed_event(2, signer=OTHER_SIGNER), signed_event(3))
    assert await rig.sync.catch_up()
    assert rig.store.applied == [1, 3]
    assert rig.sync.tracker.applied == 3
    assert rig.count("gateway_events", {"source": "feed", "outcome": "rejected"}) == 1


async def test_a_store_outage_does_not_keep_later_revocations_from_taking_effect(
    rig: Rig,
) -> None:
    # Redis away: every event is deferred. The feed must still be applied to its end in this
    # process (a revocation at its end included), while the cursor stays at the first event
    # Redis has not taken, so that every write is retried once Redis is back.
    rig.feed.add(*(signed_event(n) for n in range(1, 20)), signed_event(20, revoked=True))
    rig.store.down = True
    assert not await rig.sync.catch_up()
    assert rig.store.seen == list(range(1, 21))
    assert rig.sync.tracker.applied == 0
    assert rig.sync.catch_up_pending
    # Every revocation is known in-process now: the store may trust Redis again; but the
    # process is not ready (its Redis writes are owed).
    assert rig.feed_read.is_set()
    assert not rig.synced.is_set()
    # The next poll, Redis still away: one page tries Redis again; the events this process
    # already took are neither verified again nor even fetched.
    rig.store.seen.clear()
    rig.feed.calls.clear()
    assert not await rig.sync.catch_up()
    assert rig.store.seen == [1, 2, 3]
    assert rig.feed.calls == [0, 20]
    assert rig.sync.tracker.applied == 0
    rig.store.down = False
    assert await rig.sync.catch_up()
    assert rig.store.applied == list(range(1, 21))
    assert rig.sync.tracker.applied == 20
    assert rig.synced.is_set()


async def test_a_bad_feed_entry_moves_the_cursor_by_one_whatever_it_claims(rig: Rig) -> None:
    rig.feed.add(signed_event(1))
    # Not verifiable, and claiming a far-off sequence; it stands where the feed put it.
    rig.feed.events.append((2, signed_event(999_999_999, signer=OTHER_SIGNER)))
    rig.feed.add(*(signed_event(n) for n in (3, 4, 5)), signed_event(6, revoked=True))
    assert await rig.sync.catch_up()
    assert rig.store.applied == [1, 3, 4, 5, 6]
    assert rig.sync.tracker.applied == 6
    assert await rig.sync.catch_up()
    assert rig.feed.calls[-1] == 6


async def test_feed_loop_retries_until_key_service_answers(rig: Rig) -> None:
    rig.feed.down = True
    rig.feed.add(signed_event(1))
    task = asyncio.create_task(rig.sync.run_feed_loop())
    try:
        while len(rig.feed.calls) < 3:
            await asyncio.sleep(0.01)
        assert not rig.synced.is_set()
        rig.feed.down = False
        await asyncio.wait_for(rig.synced.wait(), 5)
        assert rig.store.applied == [1]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_watermark_stops_below_a_gap_until_the_feed_fills_it(rig: Rig) -> None:
    moves: list[int] = []
    rig.sync.on_progress = lambda: moves.append(rig.sync.watermark)
    rig.feed.add(signed_event(1))
    await rig.sync.catch_up()
    assert rig.sync.watermark == 1
    rig.feed.add(signed_event(2, revoked=True), signed_event(3))
    # 3 is applied, but 2 (a revocation) is not: the watermark must not claim it.
    assert await rig.sync.handle(signed_event(3), "amqp") == "applied"
    assert rig.sync.tracker.highest == 3
    assert rig.sync.watermark == 1
    await rig.sync.catch_up()
    assert rig.sync.watermark == 3
    assert moves[0] == 1
    assert moves[-1] == 3


async def test_the_watermark_counts_what_is_applied_in_process_while_redis_is_away(
    rig: Rig,
) -> None:
    rig.feed.add(signed_event(1), signed_event(2, revoked=True))
    rig.store.down = True
    assert not await rig.sync.catch_up()
    # The revocation is in L1 and the store's ledger, though Redis did not take it.
    assert rig.sync.tracker.applied == 0
    assert rig.sync.watermark == 2


async def test_the_last_event_applied_timestamp_moves_only_for_new_events(rig: Rig) -> None:
    stamp = "gateway_last_event_applied_timestamp_seconds"
    assert rig.metrics.registry.get_sample_value(stamp) == 0
    await rig.sync.handle(signed_event(1), "amqp")
    first = rig.metrics.registry.get_sample_value(stamp)
    assert first is not None
    assert first > 0
    rig.metrics.last_event_applied.set(1.0)
    await rig.sync.handle(signed_event(1), "amqp")  # a duplicate
    assert rig.metrics.registry.get_sample_value(stamp) == 1.0


async def test_a_feed_read_makes_the_process_current_as_of_the_read(rig: Rig) -> None:
    rig.feed.add(signed_event(1), signed_event(2))
    assert rig.sync.freshness.current_as_of is None
    await rig.sync.catch_up()
    assert rig.sync.freshness.current_as_of is not None
