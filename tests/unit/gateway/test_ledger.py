"""The trust ledger's rules, as tables of (what is held, what comes in) -> outcome.

Pure logic: no Redis, no key_service, no sleeps. The ledger has no clock either: which record
wins depends on sequences and statuses only, never on time (the caches' expiry is the key
store's, tested there with its injected clock); whether a rolled key's end has come is asked
with the moment given.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from apikeys_shared.events import KeyRecord, SignedEvent
from auth_gateway import ledger
from auth_gateway.ledger import Doubt, Held, Ledger, Reconciled, supersedes

KEY = "0190f0a0-0000-7000-8000-000000000001"
OTHER = "0190f0a0-0000-7000-8000-000000000002"
_ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
_SIGNED = SignedEvent(body=b"{}", signature="sig", signing_key="k")  # never looked into


def active(sequence: int, key_id: str = KEY) -> Held:
    """The key's record, active, as carried by event ``sequence``."""
    return Held(sequence, KeyRecord(key_id=key_id, name="n", status="active", issued_at=_ISSUED,
                                    revoked_at=None, secret_hash="h", hash_version="v1"))


def revoked(sequence: int, key_id: str = KEY) -> Held:
    """The key's record, revoked, as carried by event ``sequence``."""
    return Held(sequence, KeyRecord(key_id=key_id, name="n", status="revoked", issued_at=_ISSUED,
                                    revoked_at=_ISSUED, secret_hash="h", hash_version="v1"))


# -- which record wins -----------------------------------------------------------------------
@pytest.mark.parametrize(("held", "incoming", "replaces"), [
    (None, active(1), True),
    (None, revoked(1), True),
    (active(1), active(2), True),
    (active(2), active(1), False),  # older
    (active(1), active(1), False),  # the same event again
    (active(1), revoked(2), True),
    (active(3), revoked(2), False),  # an older revocation does not undo a newer record
    (revoked(2), active(3), False),  # revoked is terminal, whatever the sequence
    (revoked(2), active(1), False),
    (revoked(2), revoked(3), True),
    (revoked(3), revoked(2), False),
])
def test_a_record_replaces_the_one_held_only_when_newer_and_never_over_a_revocation(
    held: Held | None, incoming: Held, replaces: bool,
) -> None:
    assert supersedes(incoming, held) is replaces


def _ledger(kept: Sequence[Held] = (), seen_revoked: Sequence[str] = ()) -> Ledger:
    """A ledger that kept ``kept`` (for Redis, or as revocations) and saw ``seen_revoked``."""
    book = Ledger()
    for held in kept:
        book.keep(held, _SIGNED)
    for key_id in seen_revoked:
        book.seen_revoked(key_id)
    return book


# (what the ledger keeps for the key, key IDs seen revoked, incoming) -> stale, current
STALENESS = [
    ([], [], active(1), False, active(1)),
    ([revoked(2)], [], active(1), True, revoked(2)),  # a replayed "issued" event
    ([revoked(2)], [], active(3), True, revoked(2)),  # newer, but revoked is terminal
    ([revoked(2)], [], revoked(3), False, revoked(3)),
    ([revoked(3)], [], revoked(2), True, revoked(3)),
    ([active(5)], [], active(4), True, active(5)),  # kept for Redis: newer than what came
    ([active(5)], [], active(6), False, active(6)),
    # The revocation's record forgotten (past KNOWN_LIMIT), the fact kept: an active record
    # of the key is stale, and stands for nothing (the key answers as absent).
    ([], [KEY], active(9), True, None),
    ([], [KEY], revoked(9), False, revoked(9)),
    ([revoked(2, OTHER)], [OTHER], active(1), False, active(1)),  # another key's business
]


@pytest.mark.parametrize(("kept", "seen", "incoming", "stale", "current"), STALENESS)
def test_what_the_ledger_knows_makes_older_records_stale(
    kept: list[Held], seen: list[str], incoming: Held, stale: bool, current: Held | None,
) -> None:
    book = _ledger(kept, seen)
    assert book.stale(incoming) is stale
    assert _same(book.current(incoming), current)


def _same(a: Held | None, b: Held | None) -> bool:
    """The same record (by sequence, key and status), or both None."""
    if a is None or b is None:
        return a is b
    return (a.sequence, a.record.key_id, a.record.status) == (
        b.sequence, b.record.key_id, b.record.status)


# (kept for the key, seen revoked, what Redis holds) -> (believed, stale, repaired with)
RECONCILING = [
    ([], [], None, None, False, None),
    ([], [], active(1), active(1), False, None),
    ([], [KEY], active(1), None, True, None),  # revoked, record forgotten: refused, counted
    ([], [KEY], revoked(2), revoked(2), False, None),
    ([revoked(2)], [], None, revoked(2), False, revoked(2)),  # Redis lost it: put it back
    ([revoked(2)], [], active(1), revoked(2), True, revoked(2)),  # put back over an old one
    ([revoked(2)], [], active(3), revoked(2), True, revoked(2)),  # terminal
    ([revoked(2)], [], revoked(2), revoked(2), False, None),
    ([revoked(2)], [], revoked(3), revoked(3), False, None),
    ([active(3)], [], None, active(3), False, active(3)),  # Redis did not take it: again
    ([active(3)], [], active(2), active(3), True, active(3)),
    ([active(3)], [], active(3), active(3), False, None),
    ([active(3)], [], active(4), active(4), False, None),
]


@pytest.mark.parametrize(("kept", "seen", "redis", "believed", "stale", "repair"), RECONCILING)
def test_a_record_read_from_redis_is_believed_unless_the_ledger_knows_better(
    kept: list[Held], seen: list[str], redis: Held | None, believed: Held | None, stale: bool,
    repair: Held | None,
) -> None:
    book = _ledger(kept, seen)
    outcome = book.reconcile(KEY, redis)
    assert isinstance(outcome, Reconciled)
    assert _same(outcome.held, believed)
    assert outcome.stale is stale
    assert _same(outcome.repair[0] if outcome.repair else None, repair)
    if repair is not None:
        assert outcome.repair is not None
        assert outcome.repair[1] is _SIGNED  # the signed record, to write back as it came


def test_a_record_kept_for_redis_goes_once_redis_holds_it_a_revocation_never() -> None:
    book = _ledger([active(3)])
    book.reconcile(KEY, active(3))  # Redis holds it: no need to keep it
    assert book.reconcile(KEY, None) == Reconciled(None)
    book = _ledger([active(3)])
    book.stored(active(4))
    assert book.reconcile(KEY, None) == Reconciled(None)
    book = _ledger([revoked(2)])
    book.stored(revoked(2))
    book.reconcile(KEY, revoked(2))
    assert _same(book.reconcile(KEY, None).held, revoked(2))


def test_past_the_bound_the_oldest_records_go_but_never_the_fact_of_a_revocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger, "KNOWN_LIMIT", 2)
    book = Ledger()
    book.keep(revoked(2), _SIGNED)
    book.seen_revoked(KEY)
    for n in range(3, 5):
        book.keep(revoked(n, f"0190f0a0-0000-7000-8000-00000000010{n}"), _SIGNED)
    assert book.reconcile(KEY, None) == Reconciled(None)  # the record is forgotten...
    assert book.stale(active(1))  # ...not that the key is revoked
    assert book.current(active(7)) is None


# -- what goes into the in-process cache -----------------------------------------------------------
# (kept, seen revoked, in doubt, incoming, vouched) -> admitted
ADMISSION = [
    ([], [], [], active(1), False, True),
    ([], [KEY], [], active(1), False, False),  # revoked for good
    ([], [KEY], [], active(1), True, False),  # even key_service's word does not revive it
    ([], [], [KEY], active(1), False, False),  # in doubt: not cached...
    ([], [], [KEY], active(1), True, True),  # ...unless key_service vouched for it
    ([], [], [KEY], revoked(1), False, True),  # a revocation always goes in
    ([revoked(2)], [], [], active(1), False, False),
    ([active(5)], [], [], active(4), False, False),  # kept for Redis, newer
    ([active(5)], [], [], active(5), False, True),
]


@pytest.mark.parametrize(("kept", "seen", "doubted", "incoming", "vouched", "admitted"),
                         ADMISSION)
def test_what_the_cache_may_take(
    kept: list[Held], seen: list[str], doubted: list[str], incoming: Held, vouched: bool,
    admitted: bool,
) -> None:
    book = _ledger(kept, seen)
    for key_id in doubted:
        book.doubt(key_id)
    assert book.admits(incoming, vouched=vouched) is admitted


def test_a_revocation_admitted_is_terminal_and_settles_its_doubt() -> None:
    book = Ledger()
    book.doubt(KEY)
    assert book.admits(revoked(4))
    assert book.is_revoked(KEY)
    assert not book.in_doubt(KEY)
    assert not book.admits(active(9), vouched=True)


# -- doubts ----------------------------------------------------------------------------------------
def test_doubts_are_marked_once_and_settled_by_a_vouched_answer_or_a_revocation() -> None:
    counts: list[int] = []
    book = Ledger(on_doubts=counts.append)
    assert book.doubt(KEY) is Doubt.MARKED
    assert book.doubt(KEY) is Doubt.ALREADY
    assert book.doubt(OTHER) is Doubt.MARKED
    assert book.in_doubt(KEY)
    assert book.in_doubt(OTHER)
    book.settle(KEY)
    assert not book.in_doubt(KEY)
    book.settle(KEY)  # settled already: nothing changes
    book.seen_revoked(OTHER)
    assert not book.in_doubt(OTHER)
    assert book.doubt(OTHER) is Doubt.NOTHING  # revoked: nothing left to doubt
    assert counts == [1, 2, 1, 0]
    assert book.doubted == 0


def test_past_the_bound_no_doubt_is_dropped_every_key_is_doubted_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger, "SUSPECT_LIMIT", 2)
    counts: list[int] = []
    book = Ledger(on_doubts=counts.append)
    book.doubt(KEY)
    book.doubt(OTHER)
    assert book.doubt("0190f0a0-0000-7000-8000-000000000003") is Doubt.EVERY_KEY
    assert counts == [1, 2, -1]
    assert book.doubted == -1
    assert book.in_doubt("0190f0a0-0000-7000-8000-0000000000ff")  # never named: doubted too
    book.settle(KEY)
    assert book.in_doubt(KEY)  # for good, until the process restarts
    assert book.doubt(KEY) is Doubt.ALREADY
    assert counts == [1, 2, -1]  # the marks went with the bound: nothing more to settle
    assert not book.admits(active(1, OTHER))
    assert book.admits(active(1, OTHER), vouched=True)


# -- rolled keys: the scheduled end ------------------------------------------------------------
def rolled(sequence: int, ends: float, key_id: str = KEY) -> Held:
    """The key's record, active and rolled: its revocation is scheduled at ``ends`` (Unix)."""
    held = active(sequence, key_id)
    record = held.record
    return Held(sequence, KeyRecord(
        key_id=record.key_id, name=record.name, status="active", issued_at=record.issued_at,
        revoked_at=None, secret_hash="h", hash_version="v1",
        revokes_at=datetime.fromtimestamp(ends, UTC), replaced_by=OTHER))


@pytest.mark.parametrize(("seen", "now", "due"), [
    ((), 5_000.0, False),  # nothing known of the key
    ((active(1),), 5_000.0, False),  # an active key without an end
    ((rolled(2, ends=5_000.0),), 4_999.9, False),  # the overlap
    ((rolled(2, ends=5_000.0),), 5_000.0, True),  # its end has come
    ((rolled(2, ends=5_000.0), rolled(3, ends=6_000.0)), 5_500.0, True),  # the earlier end holds
    ((rolled(2, ends=6_000.0), rolled(3, ends=5_000.0)), 5_500.0, True),
    ((rolled(2, ends=9_000.0), revoked(3)), 5_000.0, True),  # revoked early: terminal
])
def test_a_rolled_key_is_due_from_its_end_on(
    seen: Sequence[Held], now: float, due: bool,
) -> None:
    book = Ledger()
    for held in seen:
        book.schedule(held.record)
        if not held.record.active:
            book.seen_revoked(held.record.key_id)
    assert book.due(KEY, now) is due
    assert not book.due(OTHER, now)



@pytest.mark.parametrize(("seen", "noted"), [
    ((active(1),), None),  # never rolled
    ((rolled(2, ends=5_000.0),), 5_000.0),
    ((rolled(2, ends=5_000.0), active(1)), 5_000.0),  # an older record without the end after it
    ((active(1), rolled(2, ends=5_000.0), active(3)), 5_000.0),  # any record of the key, later
    ((rolled(2, ends=6_000.0), rolled(3, ends=5_000.0)), 5_000.0),  # the earliest end holds
])
def test_schedule_gives_the_key_s_end_for_whichever_record_is_read(
    seen: Sequence[Held], noted: float | None,
) -> None:
    book = Ledger()
    answers = [book.schedule(held.record) for held in seen]
    assert answers[-1] == noted
    assert book.end(KEY) == noted
    assert book.end(OTHER) is None


# -- starting from a revocation snapshot -------------------------------------------------------
def test_a_snapshot_counts_as_every_revocation_and_end_it_names() -> None:
    book = Ledger()
    book.doubt(KEY)
    book.start_from([KEY], {OTHER: 5_000.0})
    assert book.is_revoked(KEY)
    assert not book.in_doubt(KEY)  # revoked is terminal: nothing left to doubt
    assert book.current(active(1)) is None  # an active record of it is answered as absent
    assert not book.admits(active(9))
    assert not book.is_revoked(OTHER)
    assert book.end(OTHER) == 5_000.0
    assert book.due(OTHER, 5_000.0)
    assert not book.due(OTHER, 4_999.0)


@pytest.mark.parametrize(("noted", "ends", "expected"), [
    (None, 5_000.0, 5_000.0),
    (4_000.0, 5_000.0, 4_000.0),  # the earliest end holds, whichever came first
    (6_000.0, 5_000.0, 5_000.0),
])
def test_a_snapshot_s_end_and_an_event_s_end_meet_at_the_earliest(
    noted: float | None, ends: float, expected: float,
) -> None:
    book = Ledger()
    if noted is not None:
        book.schedule(rolled(2, ends=noted).record)
    book.start_from([], {KEY: ends})
    assert book.end(KEY) == expected


def test_a_key_revoked_in_the_snapshot_has_no_end_left() -> None:
    book = Ledger()
    book.schedule(rolled(2, ends=5_000.0).record)
    book.start_from([KEY], {KEY: 5_000.0})
    assert book.end(KEY) is None
    assert book.due(KEY, 0.0)  # revoked: due at any time


def test_which_keys_exist_is_told_only_after_a_snapshot_that_lists_them() -> None:
    book = Ledger()
    book.note_exists(KEY)
    assert book.exists(KEY) is None  # no snapshot: cannot tell
    book.start_from([OTHER], {}, active=[])
    assert book.exists(OTHER) is True  # revoked keys exist too
    assert book.exists(KEY) is False  # noted before the snapshot: not kept
    book.note_exists(KEY)  # a verified record named it since
    assert book.exists(KEY) is True
    book.seen_revoked(KEY)
    assert book.exists(KEY) is True


def test_a_snapshot_without_the_keys_leaves_existence_untold() -> None:
    book = Ledger()
    book.start_from([KEY], {})
    assert book.exists(OTHER) is None
