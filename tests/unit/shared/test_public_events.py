"""The subscribers' form of key events: the same event without the hash, signed, and parsed as
strictly as the full form."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from apikeys_shared.errors import EnvelopeError, SignatureError
from apikeys_shared.events import DATASCHEMA_V1, DATASCHEMA_V2, Event, KeyRecord, SignedEvent
from apikeys_shared.keys import new_key_id
from apikeys_shared.public_events import (
    PUBLIC_DATASCHEMAS,
    PublicEvent,
    PublicRecord,
    sign_public,
    verify_public,
)
from apikeys_shared.signing import Signer, Verifier, generate_signing_key

SIGNING, VERIFY = generate_signing_key()
SIGNER = Signer.from_base64(SIGNING)
VERIFIER = Verifier.from_base64([VERIFY])
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _event(*, rolled: bool = False, revoked: bool = False) -> Event:
    record = KeyRecord(
        key_id=new_key_id(), name="billing", status="revoked" if revoked else "active",
        issued_at=NOW, revoked_at=NOW if revoked else None, secret_hash="ab" * 32,
        hash_version="p1", revokes_at=NOW + timedelta(hours=1) if rolled else None,
        replaced_by=new_key_id() if rolled else None,
    )
    return Event.for_record(record, sequence=9, source="urn:test", time=NOW)


@pytest.mark.parametrize("kind", ["issued", "rolled", "revoked"])
def test_the_public_form_is_the_event_without_the_hash(kind: str) -> None:
    event = _event(rolled=kind == "rolled", revoked=kind == "revoked")
    signed = sign_public(event, SIGNER)
    body = json.loads(signed.body)
    full = json.loads(event.to_bytes())
    assert body["dataschema"] == PUBLIC_DATASCHEMAS[full["dataschema"]]
    assert full["dataschema"] == (DATASCHEMA_V2 if kind == "rolled" else DATASCHEMA_V1)
    assert body["data"] == {k: v for k, v in full["data"].items()
                            if k not in ("secret_hash", "hash_version")}
    assert {k: v for k, v in body.items() if k not in ("data", "dataschema")} == {
        k: v for k, v in full.items() if k not in ("data", "dataschema")}
    public = verify_public(signed, VERIFIER)
    assert public == PublicEvent.of(event)
    assert public.record == PublicRecord.of(event.record)
    assert public.record.active_at(NOW) == event.record.active_at(NOW)
    # A full event (from RabbitMQ) reads as the same public event.
    assert verify_public(SignedEvent.sign(event, SIGNER), VERIFIER) == public


def test_a_gateway_never_takes_the_public_form() -> None:
    with pytest.raises(EnvelopeError, match="unsupported dataschema"):
        sign_public(_event(), SIGNER).verify(VERIFIER)


def test_a_public_form_carrying_a_hash_is_refused() -> None:
    body = json.loads(sign_public(_event(), SIGNER).body)
    body["data"]["secret_hash"] = "cd" * 32
    with pytest.raises(EnvelopeError, match="secret_hash"):
        PublicEvent.from_bytes(json.dumps(body).encode())


@pytest.mark.parametrize("change", [
    {"type": "apikey.revoked"}, {"sequence": "0"}, {"extra": 1}, {"data": []},
    {"dataschema": "urn:apikeys:key-record-public:3"},
])
def test_the_public_form_is_parsed_as_strictly(change: dict[str, object]) -> None:
    body = json.loads(sign_public(_event(), SIGNER).body)
    with pytest.raises(EnvelopeError):
        PublicEvent.from_bytes(json.dumps({**body, **change}).encode())


def test_the_signature_covers_the_public_body() -> None:
    signed = sign_public(_event(), SIGNER)
    tampered = SignedEvent(signed.body.replace(b"billing", b"billinG"), signed.signature,
                           signed.signing_key)
    with pytest.raises(SignatureError):
        verify_public(tampered, VERIFIER)
