"""The usage recorder, its bounded buffer and the reporter (auth_gateway/usage.py), with an
injected clock and a fake key_service."""

from __future__ import annotations

import asyncio
from datetime import date

from auth_gateway.errors import KeyServiceUnavailable
from auth_gateway.usage import (
    MAX_BATCH_KEYS,
    BatchRefused,
    UsageBatch,
    UsageBuffer,
    UsageRecorder,
    UsageReporter,
)

# 2026-12-07T23:59:50Z
LATE = 1796687990.0


class Clock:
    def __init__(self, now: float = LATE) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _batch(keys: int, count: int = 1, tag: str = "") -> UsageBatch:
    return UsageBatch(f"b{tag}", date(2026, 12, 7),
                      {f"k{tag}{i}": (LATE, count) for i in range(keys)})


# -- the recorder ------------------------------------------------------------------------------
def test_notes_the_last_time_and_a_count_per_key() -> None:
    clock = Clock(LATE - 100)
    recorder = UsageRecorder(clock)
    recorder.note("a")
    clock.now += 5
    recorder.note("a")
    recorder.note("b")
    (batch,) = recorder.take()
    assert batch.day == date(2026, 12, 7)
    assert batch.keys == {"a": (LATE - 95, 2), "b": (LATE - 95, 1)}
    assert batch.requests == 3
    assert recorder.take() == []  # taken means forgotten


def test_a_day_is_a_batch_of_its_own() -> None:
    clock = Clock(LATE)
    recorder = UsageRecorder(clock)
    recorder.note("a")
    clock.now += 20  # past midnight
    recorder.note("a")
    recorder.note("a")
    first, second = recorder.take()
    assert (first.day, first.keys) == (date(2026, 12, 7), {"a": (LATE, 1)})
    assert (second.day, second.keys) == (date(2026, 12, 8), {"a": (LATE + 20, 2)})
    assert first.batch_id != second.batch_id


def test_a_take_after_midnight_closes_the_day_before() -> None:
    clock = Clock(LATE)
    recorder = UsageRecorder(clock)
    recorder.note("a")
    clock.now += 86400 * 2
    (batch,) = recorder.take()
    assert batch.day == date(2026, 12, 7)
    recorder.note("b")
    (batch,) = recorder.take()
    assert batch.day == date(2026, 12, 9)


def test_many_keys_are_split_into_bounded_batches() -> None:
    recorder = UsageRecorder(Clock())
    for index in range(MAX_BATCH_KEYS * 2 + 1):
        recorder.note(f"k{index}")
    batches = recorder.take()
    assert [len(b.keys) for b in batches] == [MAX_BATCH_KEYS, MAX_BATCH_KEYS, 1]
    assert len({b.batch_id for b in batches}) == 3


def test_the_wire_form() -> None:
    batch = UsageBatch("id1", date(2026, 12, 7), {"k": (LATE + 0.25, 3)})
    assert batch.to_json() == {
        "batch_id": "id1", "day": "2026-12-07",
        "keys": [{"key_id": "k", "last_used_at": "2026-12-07T23:59:50.250000Z", "count": 3}],
    }


# -- the buffer --------------------------------------------------------------------------------
def test_buffer_drops_the_oldest_entries_past_its_bound() -> None:
    dropped: list[int] = []
    buffer = UsageBuffer(10, dropped.append)
    buffer.add([_batch(4, 2, "a"), _batch(4, 3, "b")])
    assert (buffer.pending_keys, dropped) == (8, [])
    buffer.add([_batch(4, 5, "c")])  # 12 > 10: two entries of the oldest batch go
    assert dropped == [2 * 2]
    assert buffer.pending_keys == 10
    assert buffer.pending_requests == 2 * 2 + 4 * 3 + 4 * 5
    first = buffer.pop()
    assert first is not None
    assert (first.batch_id, len(first.keys)) == ("ba", 2)  # the same batch, what is left of it
    buffer.add([_batch(9, 1, "d")])  # 8 + 9 > 10: b goes whole, then three entries of c
    assert dropped == [4, 4 * 3, 3 * 5]
    assert buffer.pending_keys == 10


def test_a_fresh_report_larger_than_the_bound_is_cut_to_it() -> None:
    dropped: list[int] = []
    buffer = UsageBuffer(2, dropped.append)
    buffer.add([_batch(5, 1, "a")])
    assert (buffer.pending_keys, dropped) == (2, [3])


def test_a_batch_put_back_is_sent_first_and_still_bounded() -> None:
    dropped: list[int] = []
    buffer = UsageBuffer(6, dropped.append)
    buffer.add([_batch(3, 1, "a"), _batch(3, 1, "b")])
    taken = buffer.pop()
    assert taken is not None
    buffer.add([_batch(3, 1, "c")])
    buffer.put_back(taken)  # 9 > 6: the put-back batch is the oldest, and goes
    assert dropped == [3]
    assert [b.batch_id for b in (buffer.pop(), buffer.pop()) if b is not None] == ["bb", "bc"]
    assert buffer.pop() is None


# -- the reporter ------------------------------------------------------------------------------
class FakeKeyService:
    def __init__(self) -> None:
        self.received: list[UsageBatch] = []
        self.down = False
        self.refuse = False

    async def send(self, batch: UsageBatch) -> None:
        if self.down:
            raise KeyServiceUnavailable("away")
        if self.refuse:
            raise BatchRefused("400")
        self.received.append(batch)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for batch in self.received:
            for key_id, (_, count) in batch.keys.items():
                out[key_id] = out.get(key_id, 0) + count
        return out


def _reporter(max_keys: int = 100) -> tuple[UsageRecorder, FakeKeyService, list[int],
                                            UsageReporter, list[int]]:
    recorder = UsageRecorder(Clock(LATE - 1000))
    service = FakeKeyService()
    dropped: list[int] = []
    pending: list[int] = []
    reporter = UsageReporter(recorder, UsageBuffer(max_keys, dropped.append), service.send,
                             interval=60, on_change=pending.append)
    return recorder, service, dropped, reporter, pending


async def test_an_outage_within_the_bound_loses_nothing() -> None:
    recorder, service, dropped, reporter, pending = _reporter()
    recorder.note("a")
    assert await reporter.flush()
    service.down = True
    for _ in range(3):
        recorder.note("a")
        recorder.note("b")
        assert not await reporter.flush()
    assert pending[-1] == 6  # three batches of two keys wait
    service.down = False
    assert await reporter.flush()
    assert service.counts() == {"a": 4, "b": 3}
    assert dropped == []
    assert pending[-1] == 0


async def test_an_outage_past_the_bound_drops_the_oldest_and_counts_them() -> None:
    recorder, service, dropped, reporter, _ = _reporter(max_keys=2)
    service.down = True
    recorder.note("a")
    recorder.note("a")
    await reporter.flush()
    recorder.note("b")
    recorder.note("c")
    await reporter.flush()  # 3 entries > 2: the first batch (2 requests of a) goes
    service.down = False
    await reporter.flush()
    assert service.counts() == {"b": 1, "c": 1}
    assert dropped == [2]
    assert sum(dropped) + sum(service.counts().values()) == 4


async def test_a_refused_batch_is_dropped_not_retried() -> None:
    recorder, service, dropped, reporter, _ = _reporter()
    service.refuse = True
    recorder.note("a")
    assert await reporter.flush()
    service.refuse = False
    assert await reporter.flush()
    assert (service.received, dropped) == ([], [1])


async def test_drain_reports_what_is_left_and_stops_the_loop() -> None:
    recorder, service, _, reporter, _ = _reporter()
    reporter.start()
    recorder.note("a")
    await reporter.drain(1.0)
    assert service.counts() == {"a": 1}
    assert all(t.get_name() != "gateway-usage" for t in asyncio.all_tasks())


async def test_the_loop_reports_every_interval() -> None:
    recorder = UsageRecorder(Clock())
    got = asyncio.Event()

    async def send(batch: UsageBatch) -> None:
        got.set()

    reporter = UsageReporter(recorder, UsageBuffer(10, lambda n: None), send, interval=0.01)
    reporter.start()
    recorder.note("a")
    await asyncio.wait_for(got.wait(), 5)
    await reporter.drain(1.0)


async def test_drain_gives_up_within_its_timeout() -> None:
    recorder = UsageRecorder(Clock())
    hang = asyncio.Event()

    async def send(batch: UsageBatch) -> None:
        await hang.wait()

    buffer = UsageBuffer(10, lambda n: None)
    reporter = UsageReporter(recorder, buffer, send, interval=60)
    recorder.note("a")
    await reporter.drain(0.05)
    assert buffer.pending_keys == 1  # put back when cut short, not half-counted
