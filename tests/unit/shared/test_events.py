"""The CloudEvents envelope, its two record shapes (dataschema 1 and 2) and its signature."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apikeys_shared.errors import EnvelopeError, SignatureError
from apikeys_shared.events import (
    CONTENT_TYPE,
    DATASCHEMA_V1,
    DATASCHEMA_V2,
    MAX_SEQUENCE,
    ROUTING_KEYS,
    SEQUENCE_DIGITS,
    Event,
    KeyRecord,
    SignedEvent,
    event_type_for,
    format_sequence,
)
from apikeys_shared.keys import new_key_id
from apikeys_shared.signing import Signer, Verifier, generate_signing_key

SIGNING, VERIFY = generate_signing_key()
SIGNER = Signer.from_base64(SIGNING)
VERIFIER = Verifier.from_base64([VERIFY])


def _record(status: str = "active", name: str = "billing export") -> KeyRecord:
    now = datetime(2026, 11, 27, 15, 4, 5, 123456, tzinfo=UTC)
    return KeyRecord(
        key_id=new_key_id(),
        name=name,
        status=status,  # type: ignore[arg-type]
        issued_at=now,
        revoked_at=now if status == "revoked" else None,
        secret_hash="ab" * 32,
        hash_version="p1",
    )


def _signed(status: str = "active", sequence: int = 7) -> SignedEvent:
    return SignedEvent.sign(
        Event.for_record(_record(status), sequence=sequence, source="urn:test"), SIGNER
    )


def test_round_trip_through_the_envelope() -> None:
    record = _record("revoked", name="naïve ☃ name")
    event = Event.for_record(record, sequence=42, source="urn:apikeys:key_service")
    body = event.to_bytes()
    obj = json.loads(body)
    assert obj["specversion"] == "1.0"
    assert obj["type"] == "apikey.revoked"
    assert obj["sequence"] == "00000000000000000042"
    assert obj["dataschema"] == DATASCHEMA_V1
    assert set(obj["data"]) == {
        "key_id", "name", "status", "issued_at", "revoked_at", "secret_hash", "hash_version",
    }
    assert "secret" not in obj["data"]
    assert body.isascii()
    parsed = Event.from_bytes(body)
    assert parsed == event
    assert parsed.routing_key == "key.revoked"
    assert CONTENT_TYPE == "application/cloudevents+json"


def _rolled(revokes_in: timedelta = timedelta(hours=24)) -> KeyRecord:
    record = _record()
    return replace(record, revokes_at=record.issued_at + revokes_in, replaced_by=new_key_id())


def test_a_rolled_record_is_dataschema_2_and_type_rolled() -> None:
    record = _rolled()
    event = Event.for_record(record, sequence=9, source="urn:test")
    obj = json.loads(event.to_bytes())
    assert obj["type"] == "apikey.rolled"
    assert obj["dataschema"] == DATASCHEMA_V2
    assert obj["data"]["revokes_at"] == "2026-11-28T15:04:05.123456Z"
    assert obj["data"]["replaced_by"] == record.replaced_by
    assert set(obj["data"]) == {
        "key_id", "name", "status", "issued_at", "revoked_at", "secret_hash", "hash_version",
        "revokes_at", "replaced_by",
    }
    parsed = Event.from_bytes(event.to_bytes())
    assert parsed == event
    assert parsed.routing_key == "key.rolled" == ROUTING_KEYS["apikey.rolled"]
    signed = SignedEvent.sign(event, SIGNER)
    assert signed.verify(VERIFIER).record == record


def test_records_without_the_new_fields_keep_dataschema_1_byte_for_byte() -> None:
    # What every subscriber written for version 1 understands: issued and revoked keys look
    # exactly as they always did, and an old stored record (no revokes_at) still parses.
    for status in ("active", "revoked"):
        record = _record(status)
        data = record.to_json()
        assert "revokes_at" not in data
        assert KeyRecord.from_json(data) == record
        assert KeyRecord.from_json(data, DATASCHEMA_V1) == record
        assert json.loads(Event.for_record(record, sequence=1, source="s").to_bytes())[
            "dataschema"] == DATASCHEMA_V1


def test_dataschema_2_with_empty_new_fields_is_an_ordinary_issue() -> None:
    data = {**_record().to_json(), "revokes_at": None, "replaced_by": None}
    record = KeyRecord.from_json(data, DATASCHEMA_V2)
    assert event_type_for(record) == "apikey.issued"
    body = json.loads(_signed().body)
    body.update(dataschema=DATASCHEMA_V2, data={**body["data"], "revokes_at": None,
                                                "replaced_by": None})
    assert Event.from_bytes(json.dumps(body).encode()).record.revokes_at is None


def test_active_at_is_the_status_and_the_clock() -> None:
    record = _rolled(timedelta(seconds=3))
    assert record.revokes_at is not None
    moment = record.revokes_at
    assert record.active_at(moment - timedelta(microseconds=1))
    assert not record.active_at(moment)
    assert not record.active_at(moment + timedelta(days=1))
    assert record.active  # the status alone still says active
    plain = _record()
    assert plain.active_at(datetime(9999, 1, 1, tzinfo=UTC))
    assert not _record("revoked").active_at(plain.issued_at)


def test_an_old_subscriber_sees_a_roll_as_an_unknown_dataschema() -> None:
    # A parser that knows only version 1 refuses the roll outright (docs/events.md): it is told
    # "unsupported dataschema", never handed a record it would misread as plainly active.
    body = Event.for_record(_rolled(), sequence=3, source="s").to_bytes()
    obj = json.loads(body)
    v1_fields = set(_record().to_json())
    assert obj["dataschema"] != DATASCHEMA_V1
    assert set(obj["data"]) - v1_fields == {"revokes_at", "replaced_by"}
    assert obj["type"] not in ("apikey.issued", "apikey.revoked")


def test_signed_event_verifies_and_survives_every_wire_form() -> None:
    signed = _signed()
    assert signed.verify(VERIFIER).sequence == 7
    assert SignedEvent.from_text(signed.to_text()) == signed
    assert SignedEvent.from_json(signed.to_json()) == signed
    assert SignedEvent.from_amqp(signed.body, signed.amqp_headers) == signed
    as_bytes = {k: v.encode() for k, v in signed.amqp_headers.items()}
    assert SignedEvent.from_amqp(signed.body, dict(as_bytes)) == signed


@settings(max_examples=300)
@given(st.data())
def test_any_changed_byte_fails_verification(data: st.DataObject) -> None:
    signed = _signed()
    position = data.draw(st.integers(0, len(signed.body) - 1))
    flip = data.draw(st.integers(1, 255))
    body = bytearray(signed.body)
    body[position] ^= flip
    tampered = SignedEvent(bytes(body), signed.signature, signed.signing_key)
    with pytest.raises((SignatureError, EnvelopeError)):
        tampered.verify(VERIFIER)


@given(st.integers(0, 63), st.integers(1, 255))
def test_any_changed_signature_byte_fails_verification(position: int, flip: int) -> None:
    signed = _signed()
    raw = bytearray(base64.b64decode(signed.signature))
    raw[position] ^= flip
    forged = SignedEvent(signed.body, base64.b64encode(raw).decode(), signed.signing_key)
    with pytest.raises(SignatureError):
        forged.verify(VERIFIER)


def test_a_stranger_key_cannot_sign() -> None:
    stranger = Signer.from_base64(generate_signing_key()[0])
    forged = SignedEvent.sign(Event.for_record(_record(), sequence=1, source="x"), stranger)
    with pytest.raises(SignatureError):
        forged.verify(VERIFIER)
    # nor by claiming the trusted key's name
    renamed = SignedEvent(forged.body, forged.signature, SIGNER.key_id)
    with pytest.raises(SignatureError):
        renamed.verify(VERIFIER)


@pytest.mark.parametrize("headers", [None, {}, {"x-signature": "abc"}, {"x-signing-key": "k"}])
def test_unsigned_messages_are_refused(headers: dict[str, str] | None) -> None:
    with pytest.raises(EnvelopeError):
        SignedEvent.from_amqp(b"{}", headers)


def test_missing_signature_fails() -> None:
    with pytest.raises(SignatureError):
        VERIFIER.verify(b"x", None, None)
    with pytest.raises(SignatureError):
        VERIFIER.verify(b"x", "not base64!", None)


def _body(**changes: object) -> bytes:
    obj = json.loads(_signed().body)
    for key, value in changes.items():
        if value is ...:
            obj.pop(key)
        else:
            obj[key] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        _body(specversion="0.3"),
        _body(specversion="2.0"),
        _body(dataschema="urn:apikeys:key-record:2"),  # version 2 needs its two fields
        _body(dataschema="urn:apikeys:key-record:3"),
        _body(type="apikey.renamed"),
        _body(type="apikey.revoked"),  # type disagrees with status
        _body(type="apikey.rolled"),  # a roll needs revokes_at
        _body(sequence=7),
        _body(sequence="007"),
        _body(sequence="-1"),
        _body(id=""),
        _body(time="yesterday"),
        _body(time="2026-11-27T15:04:05"),  # no offset
        _body(time="0001-01-01T00:00:00+01:00"),  # before year 1 in UTC (OverflowError)
        _body(time="9999-12-31T23:59:59-01:00"),  # after year 9999 in UTC
        _body(subject="someone-else"),
        _body(extra="x"),
        _body(datacontenttype="text/plain"),
        *(_body(**{f: ...}) for f in ("specversion", "id", "source", "type", "time",
                                       "sequence", "dataschema", "data")),
    ],
)
def test_strict_parsing_refuses_malformed_envelopes(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        Event.from_bytes(body)


@pytest.mark.parametrize("boundary", [9, 99, 999, 10**9 - 1, 10**17 - 1])
def test_sequence_strings_sort_as_their_numbers_across_a_power_of_ten(boundary: int) -> None:
    numbers = [1, boundary - 1, boundary, boundary + 1, boundary * 10, MAX_SEQUENCE]
    texts = [json.loads(_signed(sequence=n).body)["sequence"] for n in numbers]
    assert sorted(texts) == texts  # string order ...
    assert [Event.from_bytes(_signed(sequence=n).body).sequence for n in numbers] == numbers
    assert {len(t) for t in texts} == {SEQUENCE_DIGITS}


def test_the_plain_decimal_sequence_of_older_events_still_parses() -> None:
    assert Event.from_bytes(_body(sequence="42")).sequence == 42
    assert Event.from_bytes(_body(sequence=str(MAX_SEQUENCE))).sequence == MAX_SEQUENCE


@pytest.mark.parametrize(
    "sequence",
    ["0" * SEQUENCE_DIGITS, str(MAX_SEQUENCE + 1).zfill(SEQUENCE_DIGITS), "9" * SEQUENCE_DIGITS,
     "0" * (SEQUENCE_DIGITS + 1) + "1", "0042", "+0000000000000000042",
     "0000000000000000004" + chr(0xFF12)],
)
def test_a_sequence_out_of_range_or_half_padded_is_refused(sequence: str) -> None:
    with pytest.raises(EnvelopeError, match="sequence"):
        Event.from_bytes(_body(sequence=sequence))


def test_a_sequence_outside_the_outbox_range_cannot_be_formatted() -> None:
    for bad in (0, -1, MAX_SEQUENCE + 1):
        with pytest.raises(ValueError, match="sequence"):
            format_sequence(bad)


def _data(**changes: object) -> dict[str, object]:
    data = _record().to_json()
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    "data",
    [
        "string",
        _data(key_id="nope"),
        _data(name=5),
        _data(status="paused"),
        _data(revoked_at="2026-11-27T15:04:05Z"),  # active with a revocation time
        _data(issued_at="0001-01-01T00:30:00+01:00"),  # no UTC equivalent
        _data(status="revoked"),  # revoked without one
        _data(secret_hash="AB" * 32),
        _data(secret_hash="ab"),
        _data(hash_version=""),
        _data(secret="leak"),
        *(_data(**{f: ...}) for f in ("key_id", "name", "status", "issued_at", "revoked_at",
                                       "secret_hash", "hash_version")),
    ],
)
def test_strict_parsing_refuses_malformed_records(data: object) -> None:
    with pytest.raises(EnvelopeError):
        KeyRecord.from_json(data)


def _v2(**changes: object) -> dict[str, object]:
    data = _rolled().to_json()
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    ("data", "dataschema"),
    [
        (_v2(revokes_at="tomorrow"), DATASCHEMA_V2),
        (_v2(revokes_at="2026-11-27T15:04:05"), DATASCHEMA_V2),  # no offset
        (_v2(revokes_at=None), DATASCHEMA_V2),  # replaced_by without revokes_at
        (_v2(replaced_by=None), DATASCHEMA_V2),  # revokes_at without replaced_by
        (_v2(replaced_by="not-a-key"), DATASCHEMA_V2),
        (_v2(replaced_by=5), DATASCHEMA_V2),
        (_v2(replaced_by=...), DATASCHEMA_V2),
        (_v2(revokes_at=...), DATASCHEMA_V2),
        (_v2(extra=1), DATASCHEMA_V2),
        (_v2(), DATASCHEMA_V1),  # version 1 has no revokes_at
        (_data(), DATASCHEMA_V2),  # version 2 needs both new fields
        (_data(replaced_by=None), None),  # inferred version 1: replaced_by is unknown there
    ],
)
def test_strict_parsing_refuses_malformed_version_2_records(
    data: dict[str, object], dataschema: str | None,
) -> None:
    with pytest.raises(EnvelopeError):
        KeyRecord.from_json(data, dataschema)


def test_a_key_cannot_replace_itself() -> None:
    data = _v2()
    data["replaced_by"] = data["key_id"]
    with pytest.raises(EnvelopeError):
        KeyRecord.from_json(data)


@pytest.mark.parametrize(
    "obj", [None, [], {"body": 1, "signature": "a", "signing_key": "b"}, {"body": "é",
             "signature": "a", "signing_key": "b"}],
)
def test_malformed_signed_forms_are_refused(obj: object) -> None:
    with pytest.raises(EnvelopeError):
        SignedEvent.from_json(obj)
    with pytest.raises(EnvelopeError):
        SignedEvent.from_text(b"\xff")


def test_deeply_nested_json_is_an_envelope_error_not_a_recursion_error() -> None:
    # A Redis record or event body is untrusted input until verified: json.loads answers deep
    # nesting with RecursionError, which the parsers must turn into their own error.
    nested = "[" * 100_000 + "]" * 100_000
    with pytest.raises(EnvelopeError):
        SignedEvent.from_text(nested)
    with pytest.raises(EnvelopeError):
        Event.from_bytes(nested.encode())
