"""Sequence bookkeeping: which events were applied in order, and when a gap means a catch-up."""

from __future__ import annotations

from auth_gateway.sync import Arrival, SequenceTracker


def test_fresh_tracker_expects_sequence_one() -> None:
    tracker = SequenceTracker()
    assert tracker.classify(1) is Arrival.NEXT
    assert tracker.classify(2) is Arrival.GAP
    assert tracker.applied == 0


def test_events_in_order_advance_the_applied_mark() -> None:
    tracker = SequenceTracker()
    for sequence in (1, 2, 3):
        assert tracker.mark_applied(sequence) is Arrival.NEXT
    assert tracker.applied == 3
    assert tracker.highest == 3
    assert tracker.missing == 0


def test_duplicates_and_replays_are_stale_and_change_nothing() -> None:
    tracker = SequenceTracker(applied=5, highest=5)
    assert tracker.mark_applied(5) is Arrival.STALE
    assert tracker.mark_applied(2) is Arrival.STALE
    assert (tracker.applied, tracker.highest) == (5, 5)


def test_a_gap_does_not_advance_the_mark_but_is_remembered() -> None:
    tracker = SequenceTracker(applied=5, highest=5)
    assert tracker.mark_applied(8) is Arrival.GAP
    assert tracker.applied == 5
    assert tracker.highest == 8
    assert tracker.missing == 3
    # The events in between still count as missing until a catch-up covers them; the next one
    # after the gap is a gap too, so it asks for the catch-up again rather than hiding it.
    assert tracker.mark_applied(6) is Arrival.NEXT
    assert tracker.mark_applied(9) is Arrival.GAP
    assert tracker.applied == 6


def test_catching_up_covers_the_gap() -> None:
    tracker = SequenceTracker(applied=5, highest=8)
    tracker.caught_up(8)
    assert tracker.applied == 8
    assert tracker.missing == 0
    assert tracker.classify(9) is Arrival.NEXT


def test_catching_up_never_moves_the_mark_back() -> None:
    tracker = SequenceTracker(applied=10, highest=10)
    tracker.caught_up(7)
    assert tracker.applied == 10
    tracker.caught_up(12)
    assert (tracker.applied, tracker.highest) == (12, 12)
