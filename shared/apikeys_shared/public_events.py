"""Key events for subscribers: the same events without the keyed secret hash, signed alike.

Gateways need each key's ``secret_hash`` (and the ``hash_version`` naming its pepper); nobody
else does, and a subscriber that never holds them cannot leak them. key_service's subscriber feed
(``GET /api/v1/events``, docs/events.md) therefore serves each event in a *public* form: the
same envelope (``id``, ``sequence``, ``type``, ``time``, ...) whose ``data`` lacks those two
fields, under a dataschema of its own (``urn:apikeys:key-record-public:N`` for
``urn:apikeys:key-record:N``), signed by key_service's signing key like every event. A gateway's
parser (``Event.from_bytes``) refuses these dataschemas, so a public record can never stand in
for a full one.

Subscribers read both forms with ``PublicEvent.from_bytes`` (or ``verify_public``): a full event
from RabbitMQ and a public one from the feed give the same ``PublicEvent``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import EnvelopeError
from .events import (
    DATASCHEMA_V1,
    DATASCHEMA_V2,
    ROUTING_KEYS,
    Event,
    EventType,
    KeyRecord,
    SignedEvent,
    Status,
)
from .signing import Signer, Verifier

__all__ = [
    "PUBLIC_DATASCHEMAS",
    "PublicEvent",
    "PublicRecord",
    "sign_public",
    "verify_public",
]

PUBLIC_DATASCHEMAS: dict[str, str] = {
    DATASCHEMA_V1: "urn:apikeys:key-record-public:1",
    DATASCHEMA_V2: "urn:apikeys:key-record-public:2",
}
_FULL_DATASCHEMAS = {public: full for full, public in PUBLIC_DATASCHEMAS.items()}
_HIDDEN = ("secret_hash", "hash_version")
# Stand-ins for the hidden fields while a public body goes through the full parser's checks;
# they never leave this module (a PublicRecord has no such fields).
_STAND_INS = {"secret_hash": "0" * 64, "hash_version": "public"}


@dataclass(frozen=True)
class PublicRecord:
    """A key as subscribers know it: everything but the keyed secret hash."""

    key_id: str
    name: str
    status: Status
    issued_at: datetime
    revoked_at: datetime | None
    revokes_at: datetime | None = None
    replaced_by: str | None = None

    def active_at(self, now: datetime) -> bool:
        """True when the key may authenticate at the wall-clock moment ``now`` (aware)."""
        return self.status == "active" and (self.revokes_at is None or now < self.revokes_at)

    @classmethod
    def of(cls, record: KeyRecord) -> PublicRecord:
        """``record`` without its hash."""
        return cls(
            key_id=record.key_id, name=record.name, status=record.status,
            issued_at=record.issued_at, revoked_at=record.revoked_at,
            revokes_at=record.revokes_at, replaced_by=record.replaced_by,
        )


@dataclass(frozen=True)
class PublicEvent:
    """A key event as subscribers know it (see the module docstring)."""

    id: str
    source: str
    type: EventType
    time: datetime
    sequence: int
    record: PublicRecord

    @property
    def routing_key(self) -> str:
        """``key.issued``, ``key.rolled`` or ``key.revoked``."""
        return ROUTING_KEYS[self.type]

    @classmethod
    def from_bytes(cls, body: bytes) -> PublicEvent:
        """Parse an event body of either form; as strict as ``Event.from_bytes``."""
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise EnvelopeError("event body is not JSON") from exc
        schema = obj.get("dataschema") if isinstance(obj, dict) else None
        full = _FULL_DATASCHEMAS.get(schema) if isinstance(schema, str) else None
        if full is None:
            return cls.of(Event.from_bytes(body))
        data = obj.get("data")
        if not isinstance(data, dict):
            raise EnvelopeError("data must be an object")
        hidden = sorted(set(_HIDDEN) & set(data))
        if hidden:
            raise EnvelopeError(f"data has unknown fields {', '.join(hidden)}")
        obj = {**obj, "dataschema": full, "data": {**data, **_STAND_INS}}
        return cls.of(Event.from_bytes(json.dumps(obj).encode()))

    @classmethod
    def of(cls, event: Event) -> PublicEvent:
        """``event`` without the record's hash."""
        return cls(id=event.id, source=event.source, type=event.type, time=event.time,
                   sequence=event.sequence, record=PublicRecord.of(event.record))


def _public_bytes(event: Event) -> bytes:
    data: dict[str, Any] = {
        name: value for name, value in event.record.to_json().items() if name not in _HIDDEN
    }
    return event.envelope(PUBLIC_DATASCHEMAS[event.record.dataschema], data)


def sign_public(event: Event, signer: Signer) -> SignedEvent:
    """The public form of ``event``, signed: what the subscriber feed serves."""
    body = _public_bytes(event)
    return SignedEvent(body=body, signature=signer.sign(body), signing_key=signer.key_id)


def verify_public(signed: SignedEvent, verifier: Verifier) -> PublicEvent:
    """Check the signature over the exact bytes, then parse either form; raise SignatureError
    or EnvelopeError."""
    verifier.verify(signed.body, signed.signature, signed.signing_key)
    return PublicEvent.from_bytes(signed.body)
