"""The revocation snapshot: every key that exists, which are revoked, and every rolled key's end,
as of one sequence.

A gateway process that starts must know every revocation before it may trust Redis; reading the
whole event feed for that grows with history (every issue and revoke ever made). key_service
serves instead one signed document (docs/architecture.md, "Starting from a snapshot"):

    {"type": "apikeys.revocation-snapshot", "version": 1, "sequence": 1234, "time": "...",
     "event_id": "<the ID of the event at 1234>",
     "active": ["<key ID>", ...], "revoked": ["<key ID>", ...],
     "ends": {"<key ID>": "<revokes_at>", ...}}

signed with key_service's Ed25519 signing key exactly as an event body is (the signature over
the body's bytes, ``signature`` in base64 and ``signing_key`` the key's fingerprint). It says: every
key whose revocation has a sequence up to ``sequence`` is in ``revoked``; every key issued by
then is in ``active`` or ``revoked``; and every key rolled by then and not yet revoked has its
``revokes_at`` in ``ends``. It may say more (a key issued or revoked while the snapshot was read,
with a later sequence): the lists only ever name keys that really exist, are revoked or are
rolled, so a superset is as true as the exact set (a key in both lists is revoked). A gateway
applies it, then the feed after ``sequence``, once it has checked that the feed still holds the
event ``event_id`` at ``sequence`` (null at 0): a database restored from a backup, or an
asynchronous standby promoted, gives sequence numbers out again, and a snapshot of the history
before that must not be taken for one of the history after it.

Its ``type`` keeps it apart from events: an event body is not a snapshot, and a snapshot body
is not an event, so neither signature can be passed off as the other.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import EnvelopeError
from .events import MAX_SEQUENCE, format_time, parse_time
from .signing import Signer, Verifier

__all__ = ["SNAPSHOT_TYPE", "SNAPSHOT_VERSION", "SignedSnapshot", "Snapshot"]

SNAPSHOT_TYPE = "apikeys.revocation-snapshot"
SNAPSHOT_VERSION = 1
# A key ID as key_service writes it (apikeys_shared.keys): a lowercase UUID.
_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What was revoked, and which rolled keys end when, as of ``sequence``."""

    sequence: int
    time: datetime
    event_id: str | None
    active: tuple[str, ...]
    revoked: tuple[str, ...]
    ends: dict[str, datetime]

    def to_bytes(self) -> bytes:
        """The canonical body: compact JSON, keys sorted, IDs in sorted order."""
        return json.dumps({
            "type": SNAPSHOT_TYPE,
            "version": SNAPSHOT_VERSION,
            "sequence": self.sequence,
            "time": format_time(self.time),
            "event_id": self.event_id,
            "active": sorted(self.active),
            "revoked": sorted(self.revoked),
            "ends": {key_id: format_time(at) for key_id, at in sorted(self.ends.items())},
        }, separators=(",", ":"), sort_keys=True).encode("ascii")

    @classmethod
    def from_bytes(cls, body: bytes) -> Snapshot:
        """Parse a body strictly; raise EnvelopeError for anything else."""
        try:
            obj: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise EnvelopeError("snapshot is not JSON") from exc
        if not isinstance(obj, dict) or obj.get("type") != SNAPSHOT_TYPE:
            raise EnvelopeError(f"snapshot type must be {SNAPSHOT_TYPE}")
        if obj.get("version") != SNAPSHOT_VERSION:
            raise EnvelopeError(f"snapshot version must be {SNAPSHOT_VERSION}")
        sequence = obj.get("sequence")
        if (not isinstance(sequence, int) or isinstance(sequence, bool)
                or not 0 <= sequence <= MAX_SEQUENCE):
            raise EnvelopeError("snapshot sequence must be an integer from 0")
        event_id = obj.get("event_id")
        if not (event_id is None and sequence == 0) and not (
                isinstance(event_id, str) and 0 < len(event_id) <= 64 and sequence > 0):
            raise EnvelopeError("snapshot event_id must name the event at its sequence (null at 0)")
        active = obj.get("active")
        revoked = obj.get("revoked")
        ends = obj.get("ends")
        if (not isinstance(active, list) or not isinstance(revoked, list)
                or not isinstance(ends, dict)):
            raise EnvelopeError("snapshot needs active[], revoked[] and ends{}")
        match = _KEY_ID.fullmatch
        for name, ids in (("active", active), ("revoked", revoked)):
            for key_id in ids:
                if not isinstance(key_id, str) or match(key_id) is None:
                    raise EnvelopeError(
                        f"snapshot {name}[] holds something that is not a key ID")
        parsed_ends: dict[str, datetime] = {}
        for key_id, at in ends.items():
            if match(key_id) is None:
                raise EnvelopeError("snapshot ends{} names something that is not a key ID")
            parsed_ends[key_id] = parse_time(at, "snapshot ends{}")
        return cls(sequence=sequence, time=parse_time(obj.get("time"), "snapshot time"),
                   event_id=event_id, active=tuple(active), revoked=tuple(revoked),
                   ends=parsed_ends)


@dataclass(frozen=True, slots=True)
class SignedSnapshot:
    """A snapshot body with its detached signature, as key_service serves it and Redis keeps it."""

    body: bytes
    signature: str
    signing_key: str

    @classmethod
    def sign(cls, snapshot: Snapshot, signer: Signer) -> SignedSnapshot:
        """Sign ``snapshot``'s canonical body."""
        body = snapshot.to_bytes()
        return cls(body=body, signature=signer.sign(body), signing_key=signer.key_id)

    def verify(self, verifier: Verifier) -> Snapshot:
        """Check the signature, then parse; raise SignatureError or EnvelopeError."""
        verifier.verify(self.body, self.signature, self.signing_key)
        return Snapshot.from_bytes(self.body)
