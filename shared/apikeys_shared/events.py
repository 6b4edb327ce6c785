"""Key events: the CloudEvents 1.0 envelope (structured JSON mode) and its signed wire form.

An event's ``data`` is the whole key record, never the secret. The same signed body serves three
purposes: the AMQP message on ``apikeys.events``, an entry of key_service's replayable feed, and
the record a gateway keeps in Redis. Consumers apply a record only when its ``sequence`` is newer
than the one they hold, and ``revoked`` is terminal.

Two shapes of ``data`` exist, each named by its ``dataschema``, and parsing is strict about both:

* ``urn:apikeys:key-record:1``: the seven fields of every key.
* ``urn:apikeys:key-record:2``: those seven plus ``revokes_at`` and ``replaced_by``, the
  scheduled end of a rolled key (docs/events.md, "Rolling a key").

A record is always written in the oldest shape that holds it: only a rolled key waiting for its
revocation (type ``apikey.rolled``) needs version 2, so a subscriber that knows only version 1
keeps understanding every issue and revocation, and refuses (never misreads) a roll.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .errors import EnvelopeError
from .keys import is_valid_key_id
from .signing import Signer, Verifier

__all__ = [
    "CONTENT_TYPE",
    "DATASCHEMAS",
    "DATASCHEMA_V1",
    "DATASCHEMA_V2",
    "EVENT_TYPES",
    "EXCHANGE",
    "MAX_SEQUENCE",
    "ROUTING_KEYS",
    "SEQUENCE_DIGITS",
    "Event",
    "KeyRecord",
    "SignedEvent",
    "event_type_for",
    "format_sequence",
    "format_time",
    "parse_time",
]

EXCHANGE = "apikeys.events"
CONTENT_TYPE = "application/cloudevents+json"
SPECVERSION = "1.0"
DATASCHEMA_V1 = "urn:apikeys:key-record:1"
DATASCHEMA_V2 = "urn:apikeys:key-record:2"
DATASCHEMAS = (DATASCHEMA_V1, DATASCHEMA_V2)
EventType = Literal["apikey.issued", "apikey.rolled", "apikey.revoked"]
EVENT_TYPES: tuple[EventType, ...] = ("apikey.issued", "apikey.rolled", "apikey.revoked")
ROUTING_KEYS: dict[str, str] = {
    "apikey.issued": "key.issued", "apikey.rolled": "key.rolled", "apikey.revoked": "key.revoked",
}
Status = Literal["active", "revoked"]

_REQUIRED = ("specversion", "id", "source", "type", "time", "sequence", "dataschema", "data")
_KNOWN = {*_REQUIRED, "datacontenttype", "subject"}
_V1_FIELDS = (
    "key_id", "name", "status", "issued_at", "revoked_at", "secret_hash", "hash_version",
)
_V2_FIELDS = (*_V1_FIELDS, "revokes_at", "replaced_by")
_FIELDS = {DATASCHEMA_V1: _V1_FIELDS, DATASCHEMA_V2: _V2_FIELDS}
_HEX64 = re.compile(r"[0-9a-f]{64}")
# ``sequence`` on the wire: zero-padded to SEQUENCE_DIGITS, so that string order is numeric order
# (the CloudEvents sequence extension requires a lexicographically orderable string). Events
# signed before the padding carry the plain decimal form, which parsers still accept.
SEQUENCE_DIGITS = 20
MAX_SEQUENCE = 2**63 - 1  # the outbox's BIGINT
_SEQ = re.compile(rf"[0-9]{{{SEQUENCE_DIGITS}}}|[1-9][0-9]{{0,18}}")


def format_sequence(sequence: int) -> str:
    """``sequence`` as the event attribute: zero-padded decimal, so that string order is numeric."""
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence {sequence} is outside 1..{MAX_SEQUENCE}")
    return f"{sequence:0{SEQUENCE_DIGITS}d}"


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. ``2026-11-27T15:04:05.123456Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: object, what: str = "time") -> datetime:
    """Parse an RFC 3339 timestamp with an offset; raise EnvelopeError otherwise."""
    if not isinstance(value, str):
        raise EnvelopeError(f"{what} must be an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise EnvelopeError(f"{what} is not an RFC 3339 timestamp") from exc
    if parsed.tzinfo is None:
        raise EnvelopeError(f"{what} must carry a UTC offset")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+01:00 has no UTC time
        raise EnvelopeError(f"{what} is out of range in UTC") from exc


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What every consumer knows of a key: never the secret, only its keyed hash.

    ``revokes_at`` and ``replaced_by`` are set together, on a key that was rolled and waits for
    its scheduled revocation: from ``revokes_at`` on it must not authenticate, whatever its
    ``status`` still says (see ``active_at``).
    """

    key_id: str
    name: str
    status: Status
    issued_at: datetime
    revoked_at: datetime | None
    secret_hash: str
    hash_version: str
    revokes_at: datetime | None = None
    replaced_by: str | None = None

    @property
    def active(self) -> bool:
        """True while the status is active (a rolled key may still be past ``revokes_at``)."""
        return self.status == "active"

    def active_at(self, now: datetime) -> bool:
        """True when the key may authenticate at the wall-clock moment ``now`` (aware)."""
        return self.status == "active" and (self.revokes_at is None or now < self.revokes_at)

    @property
    def dataschema(self) -> str:
        """The oldest ``dataschema`` that holds this record."""
        if self.revokes_at is None and self.replaced_by is None:
            return DATASCHEMA_V1
        return DATASCHEMA_V2

    def to_json(self) -> dict[str, Any]:
        """The record as the ``data`` object of an event, in the shape of ``dataschema``."""
        data: dict[str, Any] = {
            "key_id": self.key_id,
            "name": self.name,
            "status": self.status,
            "issued_at": format_time(self.issued_at),
            "revoked_at": None if self.revoked_at is None else format_time(self.revoked_at),
            "secret_hash": self.secret_hash,
            "hash_version": self.hash_version,
        }
        if self.dataschema == DATASCHEMA_V2:
            data["revokes_at"] = None if self.revokes_at is None else format_time(self.revokes_at)
            data["replaced_by"] = self.replaced_by
        return data

    @classmethod
    def from_json(cls, data: object, dataschema: str | None = None) -> KeyRecord:
        """Parse and validate a ``data`` object; raise EnvelopeError naming the bad field.

        With ``dataschema`` the fields must be exactly that version's; without it (a record
        stored on its own) the version is told by the fields present.
        """
        if not isinstance(data, dict):
            raise EnvelopeError("data must be an object")
        if dataschema is None:
            dataschema = DATASCHEMA_V2 if "revokes_at" in data else DATASCHEMA_V1
        fields = _FIELDS[dataschema]
        missing = [f for f in fields if f not in data]
        if missing:
            raise EnvelopeError(f"data is missing {', '.join(missing)}")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise EnvelopeError(f"data has unknown fields {', '.join(unknown)}")
        if not is_valid_key_id(data["key_id"]):
            raise EnvelopeError("data.key_id is not a key ID")
        if not isinstance(data["name"], str):
            raise EnvelopeError("data.name must be a string")
        status = data["status"]
        if status not in ("active", "revoked"):
            raise EnvelopeError("data.status must be active or revoked")
        revoked_at = data["revoked_at"]
        if (status == "revoked") != (revoked_at is not None):
            raise EnvelopeError("data.revoked_at must be set exactly when status is revoked")
        if not isinstance(data["secret_hash"], str) or not _HEX64.fullmatch(data["secret_hash"]):
            raise EnvelopeError("data.secret_hash must be 64 lowercase hex characters")
        if not isinstance(data["hash_version"], str) or not data["hash_version"]:
            raise EnvelopeError("data.hash_version must be a non-empty string")
        revokes_at, replaced_by = data.get("revokes_at"), data.get("replaced_by")
        if (revokes_at is None) != (replaced_by is None):
            raise EnvelopeError("data.revokes_at and data.replaced_by must be set together")
        if replaced_by is not None and (
            not is_valid_key_id(replaced_by) or replaced_by == data["key_id"]
        ):
            raise EnvelopeError("data.replaced_by must be the key ID of another key")
        return cls(
            key_id=data["key_id"],
            name=data["name"],
            status=status,
            issued_at=parse_time(data["issued_at"], "data.issued_at"),
            revoked_at=None if revoked_at is None else parse_time(revoked_at, "data.revoked_at"),
            secret_hash=data["secret_hash"],
            hash_version=data["hash_version"],
            revokes_at=None if revokes_at is None else parse_time(revokes_at, "data.revokes_at"),
            replaced_by=replaced_by,
        )


def event_type_for(record: KeyRecord) -> EventType:
    """The type of the event that announces ``record``: revoked, rolled, or issued."""
    if record.status == "revoked":
        return "apikey.revoked"
    if record.revokes_at is not None:
        return "apikey.rolled"
    return "apikey.issued"


@dataclass(frozen=True)
class Event:
    """A parsed key event."""

    id: str
    source: str
    type: EventType
    time: datetime
    sequence: int
    record: KeyRecord

    @property
    def routing_key(self) -> str:
        """``key.issued``, ``key.rolled`` or ``key.revoked``."""
        return ROUTING_KEYS[self.type]

    @classmethod
    def for_record(
        cls, record: KeyRecord, *, sequence: int, source: str, time: datetime | None = None,
        event_id: str | None = None,
    ) -> Event:
        """The event that announces ``record`` in its current state."""
        return cls(
            id=event_id or str(uuid.uuid4()),
            source=source,
            type=event_type_for(record),
            time=time or datetime.now(UTC),
            sequence=sequence,
            record=record,
        )

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, ASCII): the exact bytes that get signed."""
        return self.envelope(self.record.dataschema, self.record.to_json())

    def envelope(self, dataschema: str, data: dict[str, Any]) -> bytes:
        """This event's envelope around ``data`` of ``dataschema``, as canonical JSON (also the
        subscribers' form of the event, in ``public_events``)."""
        body = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": format_time(self.time),
            "sequence": format_sequence(self.sequence),
            "datacontenttype": "application/json",
            "dataschema": dataschema,
            "subject": self.record.key_id,
            "data": data,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Event:
        """Parse an event body; strict about versions, types and missing or unknown fields."""
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: json's answer to nesting deeper than the stack, not ValueError.
            raise EnvelopeError("event body is not JSON") from exc
        if not isinstance(obj, dict):
            raise EnvelopeError("event body must be a JSON object")
        missing = [f for f in _REQUIRED if f not in obj]
        if missing:
            raise EnvelopeError(f"event is missing {', '.join(missing)}")
        unknown = sorted(set(obj) - _KNOWN)
        if unknown:
            raise EnvelopeError(f"event has unknown attributes {', '.join(unknown)}")
        if obj["specversion"] != SPECVERSION:
            raise EnvelopeError(f"unsupported specversion {obj['specversion']!r}")
        if obj["dataschema"] not in DATASCHEMAS:
            raise EnvelopeError(f"unsupported dataschema {obj['dataschema']!r}")
        if obj["type"] not in EVENT_TYPES:
            raise EnvelopeError(f"unknown event type {obj['type']!r}")
        if obj.get("datacontenttype", "application/json") != "application/json":
            raise EnvelopeError("datacontenttype must be application/json")
        for name in ("id", "source"):
            if not isinstance(obj[name], str) or not obj[name]:
                raise EnvelopeError(f"{name} must be a non-empty string")
        sequence = obj["sequence"]
        if (not isinstance(sequence, str) or not _SEQ.fullmatch(sequence)
                or not 1 <= int(sequence) <= MAX_SEQUENCE):
            raise EnvelopeError(
                f"sequence must be a decimal string of {SEQUENCE_DIGITS} digits "
                f"from 1 to {MAX_SEQUENCE}"
            )
        record = KeyRecord.from_json(obj["data"], obj["dataschema"])
        if obj["type"] != event_type_for(record):
            raise EnvelopeError(f"type {obj['type']} does not match the record's state")
        if "subject" in obj and obj["subject"] != record.key_id:
            raise EnvelopeError("subject must equal data.key_id")
        return cls(
            id=obj["id"],
            source=obj["source"],
            type=obj["type"],
            time=parse_time(obj["time"]),
            sequence=int(sequence),
            record=record,
        )


@dataclass(frozen=True)
class SignedEvent:
    """An event body with its detached Ed25519 signature, as it travels and is stored.

    ``to_json`` / ``from_json`` give the form used by the feed and by Redis:
    ``{"body": "<event JSON as text>", "signature": "<base64>", "signing_key": "<fingerprint>"}``.
    """

    body: bytes
    signature: str
    signing_key: str

    @classmethod
    def sign(cls, event: Event, signer: Signer) -> SignedEvent:
        """Serialize and sign ``event``."""
        body = event.to_bytes()
        return cls(body=body, signature=signer.sign(body), signing_key=signer.key_id)

    def verify(self, verifier: Verifier) -> Event:
        """Check the signature, then parse; raise SignatureError or EnvelopeError."""
        verifier.verify(self.body, self.signature, self.signing_key)
        return Event.from_bytes(self.body)

    @property
    def amqp_headers(self) -> dict[str, str]:
        """The AMQP headers that carry the signature."""
        return {"x-signature": self.signature, "x-signing-key": self.signing_key}

    def to_json(self) -> dict[str, str]:
        """The feed and Redis form."""
        return {
            "body": self.body.decode("ascii"),
            "signature": self.signature,
            "signing_key": self.signing_key,
        }

    def to_text(self) -> str:
        """``to_json`` as compact JSON text (what Redis stores)."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, obj: object) -> SignedEvent:
        """Parse the feed / Redis form; raise EnvelopeError when it is not that shape."""
        if not isinstance(obj, dict):
            raise EnvelopeError("signed event must be an object")
        body, signature, key = obj.get("body"), obj.get("signature"), obj.get("signing_key")
        if not (isinstance(body, str) and isinstance(signature, str) and isinstance(key, str)):
            raise EnvelopeError("signed event needs string body, signature and signing_key")
        try:
            raw = body.encode("ascii")
        except UnicodeEncodeError as exc:
            raise EnvelopeError("signed event body must be ASCII JSON") from exc
        return cls(body=raw, signature=signature, signing_key=key)

    @classmethod
    def from_text(cls, text: str | bytes) -> SignedEvent:
        """Parse ``to_text`` output."""
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: whoever can write Redis must not be able to crash the reader.
            raise EnvelopeError("signed event is not JSON") from exc
        return cls.from_json(obj)

    @classmethod
    def from_amqp(
        cls, body: bytes, headers: dict[str, Any] | None,
    ) -> SignedEvent:
        """Build from an AMQP message body and its headers; missing headers fail verification."""
        headers = headers or {}
        sig = headers.get("x-signature")
        key = headers.get("x-signing-key")
        if isinstance(sig, bytes):
            sig = sig.decode("ascii", "replace")
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not isinstance(sig, str) or not isinstance(key, str):
            raise EnvelopeError("message lacks x-signature / x-signing-key headers")
        return cls(body=body, signature=sig, signing_key=key)
