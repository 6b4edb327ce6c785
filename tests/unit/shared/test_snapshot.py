"""The revocation snapshot's body: canonical, signed like an event body, parsed strictly."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from apikeys_shared.errors import EnvelopeError, SignatureError
from apikeys_shared.events import Event, KeyRecord, SignedEvent
from apikeys_shared.signing import Signer, Verifier, generate_signing_key
from apikeys_shared.snapshot import SignedSnapshot, Snapshot

A = "0190f0a0-0000-7000-8000-000000000001"
B = "0190f0a0-0000-7000-8000-000000000002"
AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
EVENT = "6f1c1f3e-5b0e-4a53-9d3c-2b8f1a0e7c11"


@pytest.fixture
def keys() -> tuple[Signer, Verifier]:
    signing, verify = generate_signing_key()
    return Signer.from_base64(signing), Verifier.from_base64([verify])


def _snapshot() -> Snapshot:
    return Snapshot(sequence=42, time=AT, event_id=EVENT, active=(A,), revoked=(B,),
                    ends={A: AT})


def test_a_signed_snapshot_verifies_and_reads_back(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    signed = SignedSnapshot.sign(_snapshot(), signer)
    read = signed.verify(verifier)
    assert (read.sequence, read.time, read.event_id, read.active, read.revoked, read.ends) == (
        42, AT, EVENT, (A,), (B,), {A: AT})
    assert signed.signing_key == signer.key_id
    # Canonical: the same content gives the same bytes, the IDs in order.
    assert signed.body == SignedSnapshot.sign(_snapshot(), signer).body
    both = SignedSnapshot.sign(Snapshot(sequence=1, time=AT, event_id=EVENT, active=(B, A),
                                        revoked=(), ends={}), signer)
    assert json.loads(both.body)["active"] == [A, B]


def test_a_changed_body_or_another_key_does_not_verify(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    signed = SignedSnapshot.sign(_snapshot(), signer)
    emptied = signed.body.replace(B.encode(), A.encode())
    with pytest.raises(SignatureError):
        SignedSnapshot(emptied, signed.signature, signed.signing_key).verify(verifier)
    other, _ = generate_signing_key()
    with pytest.raises(SignatureError):
        SignedSnapshot.sign(_snapshot(), Signer.from_base64(other)).verify(verifier)


def test_an_event_body_is_not_a_snapshot(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    record = KeyRecord(key_id=A, name="k", status="active", issued_at=AT, revoked_at=None,
                       secret_hash="h" * 64, hash_version="v1")
    event = SignedEvent.sign(Event.for_record(record, sequence=1, source="/test"), signer)
    with pytest.raises(EnvelopeError, match="type"):
        SignedSnapshot(event.body, event.signature, event.signing_key).verify(verifier)


@pytest.mark.parametrize(("change", "message"), [
    ({"type": "apikey.revoked"}, "type"),
    ({"version": 2}, "version"),
    ({"sequence": -1}, "sequence"),
    ({"sequence": True}, "sequence"),
    ({"sequence": "42"}, "sequence"),
    ({"revoked": {}}, "revoked"),
    ({"active": None}, "active"),
    ({"active": ["not-a-key-id"]}, "active"),
    ({"revoked": ["not-a-key-id"]}, "revoked"),
    ({"revoked": [A.upper()]}, "revoked"),
    ({"revoked": [7]}, "revoked"),
    ({"ends": []}, "ends"),
    ({"ends": {"x": "2026-12-01T09:00:00Z"}}, "ends"),
    ({"ends": {A: "tomorrow"}}, "ends"),
    ({"time": None}, "time"),
    ({"event_id": None}, "event_id"),  # at a sequence above 0 it names the event there
    ({"event_id": 7}, "event_id"),
    ({"event_id": ""}, "event_id"),
    ({"sequence": 0}, "event_id"),  # and at 0 there is none
])
def test_parsing_is_strict(change: dict[str, object], message: str) -> None:
    body = json.loads(_snapshot().to_bytes())
    body.update(change)
    with pytest.raises(EnvelopeError, match=message):
        Snapshot.from_bytes(json.dumps(body).encode())


def test_a_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="JSON"):
        Snapshot.from_bytes(b"\xff{")
