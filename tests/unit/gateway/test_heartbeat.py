"""The heartbeat publisher: what it sends, coalescing, failures, and what the answer teaches."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from auth_gateway.errors import KeyServiceUnavailable
from auth_gateway.freshness import Freshness
from auth_gateway.heartbeat import HeartbeatPublisher, identity
from auth_gateway.metrics import Metrics


@dataclass
class FakeSink:
    """Records heartbeats; each answer waits for ``release`` when ``hold`` is set."""

    sent: list[dict[str, object]] = field(default_factory=list)
    newest: int = 0
    down: bool = False
    hold: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    left: list[str] = field(default_factory=list)

    async def delete_gateway(self, instance_id: str) -> None:
        if self.down:
            raise KeyServiceUnavailable("away")
        self.left.append(instance_id)

    async def post_heartbeat(self, beat: dict[str, object]) -> int:
        self.sent.append(beat)
        if self.hold:
            await self.release.wait()
            self.release.clear()
        if self.down:
            raise KeyServiceUnavailable("away")
        return self.newest


async def _until(predicate: object) -> None:
    async with asyncio.timeout(5):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0)


def test_the_identity_names_host_and_pid_and_is_random_per_process() -> None:
    a, b = identity(), identity("edge-eu-1")
    assert a.instance_id != b.instance_id
    assert len(a.instance_id) == 16
    assert a.name == f"{a.host}:{a.pid}"
    assert b.name == f"edge-eu-1:{b.pid}"


async def test_a_heartbeat_carries_the_watermark_and_the_answer_sets_freshness() -> None:
    sink, metrics, freshness = FakeSink(newest=7), Metrics(), Freshness(0.0)
    publisher = HeartbeatPublisher(
        sink=sink, who=identity(), watermark=lambda: 7, freshness=freshness, metrics=metrics,
        interval=60,
    )
    await publisher.beat()
    [beat] = sink.sent
    assert beat["applied_sequence"] == 7
    assert set(beat) == {"instance_id", "name", "host", "pid", "started_at", "applied_sequence"}
    assert freshness.current_as_of is not None
    assert metrics.registry.get_sample_value("gateway_heartbeats_total", {"outcome": "ok"}) == 1


async def test_moves_while_a_heartbeat_is_in_flight_are_coalesced_into_one_more() -> None:
    sink, watermark = FakeSink(hold=True), [0]
    publisher = HeartbeatPublisher(
        sink=sink, who=identity(), watermark=lambda: watermark[0], freshness=Freshness(0.0),
        metrics=Metrics(), interval=60,
    )
    task = asyncio.create_task(publisher.run())
    try:
        await _until(lambda: len(sink.sent) == 1)
        for n in (1, 2, 3):
            watermark[0] = n
            publisher.progressed()
        await asyncio.sleep(0)
        assert len(sink.sent) == 1  # at most one in flight
        sink.release.set()
        await _until(lambda: len(sink.sent) == 2)
        assert sink.sent[1]["applied_sequence"] == 3
        sink.release.set()
        await asyncio.sleep(0.01)
        # Nothing moved since: no third heartbeat before the interval.
        publisher.progressed()
        await asyncio.sleep(0.01)
        assert len(sink.sent) == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failed_heartbeat_is_counted_and_retried_at_the_next_move() -> None:
    sink, metrics = FakeSink(down=True), Metrics()
    publisher = HeartbeatPublisher(
        sink=sink, who=identity(), watermark=lambda: 0, freshness=Freshness(0.0),
        metrics=metrics, interval=60,
    )
    task = asyncio.create_task(publisher.run())
    try:
        await _until(lambda: len(sink.sent) == 1)
        await asyncio.sleep(0.01)
        assert metrics.registry.get_sample_value(
            "gateway_heartbeats_total", {"outcome": "error"}) == 1
        # Never reported: the same watermark is still worth a heartbeat.
        sink.down = False
        publisher.progressed()
        await _until(lambda: len(sink.sent) == 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_leaving_names_the_instance_and_never_raises() -> None:
    sink, who = FakeSink(), identity()
    publisher = HeartbeatPublisher(sink=sink, who=who, watermark=lambda: 0,
                                   freshness=Freshness(0.0), metrics=Metrics(), interval=60)
    await publisher.leave()
    assert sink.left == [who.instance_id]
    sink.down = True
    await publisher.leave()  # logged, not raised: the process is stopping anyway
