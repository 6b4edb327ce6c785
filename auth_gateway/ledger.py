"""The trust ledger: which key record wins, what is known revoked, which copies are in doubt.

Pure rules, no I/O and no clock: the key store (``keystore``) keeps the caches, reads and writes
Redis and asks key_service, and asks this module what to believe. docs/architecture.md ("The
key store") puts them in context.

Which record wins (``supersedes``): a record replaces the one held only when its sequence is
newer, and never an active record over a revoked one: revoked is terminal.

What this process knows beyond its caches (``Ledger``):

- Every revocation it has applied, with its signed record (so that a genuinely signed but older
  "active" record put back into Redis cannot revive the key, and Redis can be repaired with the
  revocation), and any record Redis could not take yet, until Redis does. At most
  ``KNOWN_LIMIT`` records; past it the oldest go, but the ID of a key seen revoked is kept for
  good (about 100 bytes each), so that an active record for it is never accepted again.
- The scheduled end of every rolled key it has seen (a signed record's ``revokes_at``, as a
  Unix time): from then on the key counts as revoked here (``due``), whatever can or cannot be
  asked, exactly as if its revocation had arrived: key_service promised it in a signed record,
  and no later record can take it back (a key is rolled once; revoked is terminal).
- Which keys exist, once it has started from a snapshot that lists them (``exists``): the
  snapshot's keys, and every key a verified record has named since. A key ID outside them is
  one key_service never issued, or issued a moment ago (its event not applied yet): the key
  store looks such IDs up only within a budget, so that a flood of made-up IDs does not become
  a flood of key_service lookups.
- The keys in doubt: named by an event that did not verify (forged, or signed with a key this
  gateway lacks). Redis's copy of such a key is not used, nor is an active record cached,
  until key_service's verified answer asked after the doubt settles it ("vouched"), or a
  verified revocation does (revoked is terminal: nothing is left to doubt). A doubt is never
  dropped otherwise: past ``SUSPECT_LIMIT`` of them (a flood of forged events), every key's
  Redis copy is doubted instead, until the process restarts.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from apikeys_shared.events import KeyRecord, SignedEvent

__all__ = [
    "KNOWN_LIMIT",
    "SUSPECT_LIMIT",
    "Doubt",
    "Held",
    "Ledger",
    "Reconciled",
    "supersedes",
]

# Bound on the records kept beyond the caches (revocations with their signed records, and
# records Redis has not taken yet); past it the oldest go, the revoked IDs stay.
KNOWN_LIMIT = 100_000
# Bound on the keys held in doubt. Only a flood of forged events could reach it; past it no
# doubt is dropped (that could serve a stale copy again): every key is doubted from then on.
SUSPECT_LIMIT = 100_000


@dataclass(slots=True, eq=False)
class Held:
    """A verified record and the sequence of the event that carried it.

    ``verified`` is the authenticator's note on this record: the MAC (under a random prefix of
    this process) of a secret that matched the record's hash, and the identity it gave. It
    lives and dies with this object, so a new record for the key (an event, a reload) never
    inherits it.
    """

    sequence: int
    record: KeyRecord
    verified: tuple[bytes, Any] | None = None
    # When the key stops being served (Unix time; the earliest ``revokes_at`` this process has
    # seen for the key, whichever record carried it), None for a key that was never rolled.
    # The authenticator's fast path compares it with the wall clock on every request.
    ends: float | None = None


def supersedes(new: Held, held: Held | None) -> bool:
    """True when ``new`` may replace ``held``: newer, and never reviving a revoked key."""
    if held is None:
        return True
    if not held.record.active and new.record.active:
        return False
    return new.sequence > held.sequence


class Doubt(enum.Enum):
    """What doubting a key did."""

    NOTHING = "nothing"  # the key is known revoked: terminal, nothing to doubt
    MARKED = "marked"  # the key is in doubt now
    ALREADY = "already"  # it was in doubt already (or every key is)
    EVERY_KEY = "every_key"  # past SUSPECT_LIMIT: from now on every key is in doubt


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What to believe of a key after reading Redis (``Ledger.reconcile``).

    ``held``: the record to use (None: none, the key counts as absent). ``stale``: Redis held a
    record this process knows is superseded. ``repair``: the record Redis should be given back
    (then ``Ledger.stored`` once it took it).
    """

    held: Held | None
    stale: bool = False
    repair: tuple[Held, SignedEvent] | None = None


class Ledger:
    """What one gateway process knows of keys beyond its caches; see the module docstring.

    ``on_doubts``: called with ``doubted`` whenever that count changes (a gauge).
    """

    def __init__(self, on_doubts: Callable[[int], object] | None = None) -> None:
        self._on_doubts = on_doubts
        # key ID -> (record, its signed event): revocations applied, records Redis lacks.
        self._known: OrderedDict[str, tuple[Held, SignedEvent]] = OrderedDict()
        self._revoked: set[str] = set()  # every key seen revoked (verified), for good
        self._revokes_at: dict[str, float] = {}  # rolled keys -> their revokes_at, Unix time
        self._suspect: set[str] = set()  # keys in doubt
        # Keys known to exist (not counting those in _revoked); None: not known (no snapshot).
        self._exists: set[str] | None = None
        self._doubt_all = False  # past SUSPECT_LIMIT doubts: every key is in doubt

    # -- which record wins ---------------------------------------------------------------------
    def overriding(self, held: Held) -> Held | None:
        """What this process knows of ``held``'s key that must win over it, else None: a
        revocation it applied (terminal) or a newer record it keeps for Redis."""
        current = self._known.get(held.record.key_id)
        if current is None:
            return None
        known = current[0]
        if (not known.record.active and held.record.active) or known.sequence > held.sequence:
            return known
        return None

    def revoked_before(self, held: Held) -> bool:
        """``held`` is an active record of a key this process has seen revoked (terminal)."""
        return held.record.active and held.record.key_id in self._revoked

    def stale(self, held: Held) -> bool:
        """``held`` is older than what this process knows of its key: never stored, applied
        or put back into Redis."""
        return self.overriding(held) is not None or self.revoked_before(held)

    def current(self, held: Held) -> Held | None:
        """What ``held`` stands for now: the record that overrides it, or None for an active
        record of a key seen revoked whose revocation's record was forgotten (the key is
        answered as absent, which refuses it all the same)."""
        held = self.overriding(held) or held
        return None if self.revoked_before(held) else held

    def is_revoked(self, key_id: str) -> bool:
        """This process has seen a verified revocation of ``key_id``."""
        return key_id in self._revoked

    def schedule(self, record: KeyRecord) -> float | None:
        """Note ``record``'s ``revokes_at`` if it has one, and return the end noted for its key
        (Unix time; None for a key never seen rolled). The earliest one seen stands, whichever
        record carried it: a key is rolled once, and an older record without ``revokes_at``
        (put back into Redis, replayed, or read by a catch-up) does not lift the end."""
        key_id = record.key_id
        held = self._revokes_at.get(key_id)
        if record.revokes_at is not None and key_id not in self._revoked:
            at = record.revokes_at.timestamp()
            if held is None or at < held:
                self._revokes_at[key_id] = held = at
        return held

    def exists(self, key_id: str) -> bool | None:
        """Whether ``key_id`` is known to exist; None when this process cannot tell (it did not
        start from a snapshot listing the keys)."""
        if self._exists is None:
            return None
        return key_id in self._exists or key_id in self._revoked

    def note_exists(self, key_id: str) -> None:
        """A verified record named ``key_id``: it exists."""
        if self._exists is not None:
            self._exists.add(key_id)

    def end(self, key_id: str) -> float | None:
        """The scheduled end noted for ``key_id`` (Unix time), None when it has none."""
        return self._revokes_at.get(key_id)

    def due(self, key_id: str, now: float) -> bool:
        """``key_id`` is revoked, or its scheduled revocation has come by ``now`` (Unix time)."""
        if key_id in self._revoked:
            return True
        at = self._revokes_at.get(key_id)
        return at is not None and now >= at

    def admits(self, new: Held, *, vouched: bool = False) -> bool:
        """Whether ``new`` may go into the in-process cache (which then keeps it only if it
        ``supersedes`` what it holds).

        A revocation is always admitted (and noted: terminal). An active record is not, for a
        key seen revoked, nor for a key in doubt unless ``vouched`` (key_service's verified
        answer, asked after the doubt), nor when something this process knows overrides it.
        """
        key_id = new.record.key_id
        if not new.record.active:
            self.seen_revoked(key_id)
        elif key_id in self._revoked or (not vouched and self.in_doubt(key_id)):
            return False
        return self.overriding(new) is None

    # -- what Redis may lack -----------------------------------------------------------------------
    def keep(self, new: Held, signed: SignedEvent) -> None:
        """Remember ``new`` beyond the caches (a revocation, or a record Redis did not take),
        unless what is kept for its key supersedes it."""
        key_id = new.record.key_id
        current = self._known.get(key_id)
        if current is None or supersedes(new, current[0]):
            self._known[key_id] = (new, signed)
            self._known.move_to_end(key_id)
            while len(self._known) > KNOWN_LIMIT:
                self._known.popitem(last=False)

    def stored(self, stored: Held) -> None:
        """Redis now holds ``stored``: an active record kept for it need not be kept longer."""
        key_id = stored.record.key_id
        current = self._known.get(key_id)
        if current is not None and current[0].record.active and not supersedes(current[0], stored):
            del self._known[key_id]

    def reconcile(self, key_id: str, held: Held | None) -> Reconciled:
        """What to believe of ``key_id`` given ``held``, the record Redis holds (or None)."""
        current = self._known.get(key_id)
        if current is None:
            if held is not None and self.revoked_before(held):
                # Revoked, and the revocation's record forgotten: Redis's active record is
                # stale (or was put back there), and the key is refused without it.
                return Reconciled(None, stale=True)
            return Reconciled(held)
        known, signed = current
        overrides = (
            (not known.record.active and (held is None or held.record.active))
            or supersedes(known, held)
        )
        if not overrides:
            self.stored(known)
            return Reconciled(held)
        return Reconciled(known, stale=held is not None, repair=(known, signed))

    # -- doubts ------------------------------------------------------------------------------------
    @property
    def doubted(self) -> int:
        """How many keys are in doubt; -1 once every key is."""
        return -1 if self._doubt_all else len(self._suspect)

    def in_doubt(self, key_id: str) -> bool:
        """Whether Redis's copy of ``key_id`` may not be used."""
        return self._doubt_all or key_id in self._suspect

    def doubt(self, key_id: str) -> Doubt:
        """An event that did not verify named ``key_id``."""
        if key_id in self._revoked:
            return Doubt.NOTHING
        if self.in_doubt(key_id):
            return Doubt.ALREADY
        if len(self._suspect) < SUSPECT_LIMIT:
            self._suspect.add(key_id)
            self._doubts_changed()
            return Doubt.MARKED
        # Dropping a doubt could serve a stale copy again (a revocation signed by a key this
        # process lacks, pushed out by a flood of forged events): doubt every key instead.
        self._doubt_all = True
        self._suspect.clear()
        self._doubts_changed()
        return Doubt.EVERY_KEY

    def settle(self, key_id: str) -> None:
        """``key_id`` is in doubt no more (key_service's verified answer, asked after the
        doubt, decided). Every key stays in doubt once every key is."""
        if key_id in self._suspect:
            self._suspect.discard(key_id)
            self._doubts_changed()

    def start_from(self, revoked: Iterable[str], ends: Mapping[str, float],
                   active: Iterable[str] | None = None) -> None:
        """Take a snapshot: every key in ``revoked`` is seen revoked (terminal, as by
        ``seen_revoked``, without the records), every end in ``ends`` (key ID -> Unix time) is
        noted as by ``schedule``, and ``active`` with ``revoked`` are the keys that exist."""
        self._revoked.update(revoked)
        if active is not None:
            self._exists = set(active) if self._exists is None else self._exists.union(active)
        for key_id in self._revoked.intersection(self._revokes_at):
            del self._revokes_at[key_id]
        if self._suspect and not self._suspect.isdisjoint(self._revoked):
            self._suspect.difference_update(self._revoked)
            self._doubts_changed()
        for key_id, at in ends.items():
            held = self._revokes_at.get(key_id)
            if key_id not in self._revoked and (held is None or at < held):
                self._revokes_at[key_id] = at

    def seen_revoked(self, key_id: str) -> None:
        """A verified revocation of ``key_id``: terminal, so nothing about it is in doubt (and
        no scheduled end is left to wait for)."""
        self._revoked.add(key_id)
        self._revokes_at.pop(key_id, None)
        if self._exists is not None:
            self._exists.discard(key_id)  # it exists all the same: _revoked says so
        self.settle(key_id)

    def _doubts_changed(self) -> None:
        if self._on_doubts is not None:
            self._on_doubts(self.doubted)
