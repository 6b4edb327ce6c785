"""A receipt's rules: live or gone by the last heartbeat, confirmed by the watermark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from key_service.propagation import ProcessView, propagation

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _p(name: str, applied: int, age: float) -> ProcessView:
    return ProcessView(instance_id=name * 8, name=name, applied_sequence=applied,
                       seen_at=NOW - timedelta(seconds=age))


def test_confirmed_pending_and_gone() -> None:
    views = [_p("b", 41, 1), _p("a", 42, 1), _p("c", 99, 11), _p("d", 50, 10)]
    receipt = propagation(views, 42, now=NOW, gone_after=10, ms=7)
    assert (receipt.processes, receipt.confirmed) == (3, 2)
    assert [p.name for p in receipt.pending] == ["b"]
    # Gone even though its watermark is past the event: nothing is known of it now.
    assert [p.name for p in receipt.gone] == ["c"]
    assert not receipt.complete


def test_no_sequence_yet_means_nobody_confirmed() -> None:
    receipt = propagation([_p("a", 10**9, 0)], None, now=NOW, gone_after=10, ms=0)
    assert (receipt.processes, receipt.confirmed, receipt.complete) == (1, 0, False)


def test_complete_when_every_live_process_confirmed_and_with_none_at_all() -> None:
    assert propagation([_p("a", 5, 0)], 5, now=NOW, gone_after=10, ms=1).complete
    empty = propagation([], 5, now=NOW, gone_after=10, ms=1)
    assert empty.complete
    assert empty.to_json() == {"sequence": 5, "processes": 0, "confirmed": 0, "pending": [],
                               "gone": [], "ms": 1}
