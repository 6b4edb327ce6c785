"""Turning an outbox row into a signed event, and the internal routes' input parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from aiohttp.test_utils import make_mocked_request

from apikeys_shared.config import generate_secrets
from apikeys_shared.events import KeyRecord
from apikeys_shared.keys import new_key_id
from apikeys_shared.signing import Signer, Verifier
from key_service.db import create_engine
from key_service.internal import _integer
from key_service.outbox import OutboxError, _build
from key_service.relay import _sqlite_lock_path


def _keys() -> tuple[Signer, Verifier]:
    env = generate_secrets()
    return (
        Signer.from_base64(env["APIKEYS_SIGNING_KEY"]),
        Verifier.from_base64([env["APIKEYS_VERIFY_KEYS"]]),
    )


def _row(status: str = "active", event_type: str = "apikey.issued", record: str | None = None,
         ) -> SimpleNamespace:
    key_id = new_key_id()
    now = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    if record is None:
        record = json.dumps(KeyRecord(
            key_id=key_id, name="n", status="revoked" if status == "revoked" else "active",
            issued_at=now, revoked_at=now if status == "revoked" else None,
            secret_hash="0f" * 32, hash_version="p1",
        ).to_json())
    return SimpleNamespace(
        id=7, event_id="3b7c1b55-3c4f-4d1e-9a57-0d6f3f1c2a10", event_type=event_type,
        record=record, created_at=now,
    )


def test_a_row_becomes_a_signed_event_at_its_sequence() -> None:
    signer, verifier = _keys()
    row = _row()
    signed = _build(row, 42, "urn:test", signer)
    event = signed.verify(verifier)
    assert event.sequence == 42
    assert event.id == row.event_id
    assert event.source == "urn:test"
    assert event.time == row.created_at
    assert event.record.to_json() == json.loads(row.record)
    assert signed.signing_key == signer.key_id
    signed.body.decode("ascii")  # the feed and Redis carry it as ASCII text


@pytest.mark.parametrize(("row", "message"), [
    (_row(record="{not json"), "malformed key record"),
    (_row(record=json.dumps({"key_id": "x"})), "malformed key record"),
    (_row(status="revoked", event_type="apikey.issued"), "for a revoked key"),
    (_row(event_type="apikey.renamed"), "event type"),
])
def test_a_malformed_row_is_refused_naming_it(row: SimpleNamespace, message: str) -> None:
    signer, _ = _keys()
    with pytest.raises(OutboxError, match=message) as info:
        _build(row, 1, "urn:test", signer)
    assert "row 7" in str(info.value)


@pytest.mark.parametrize(("query", "expected"), [
    ("", 500), ("?limit=1", 1), ("?limit=1000", 1000), ("?limit=0999", 999),
])
def test_limit_parsing_accepts_the_range(query: str, expected: int) -> None:
    request = make_mocked_request("GET", f"/internal/v1/events{query}")
    assert _integer(request, "limit", 500, 1, 1000) == expected


@pytest.mark.parametrize("raw", ["0", "1001", "-1", "+5", "1e3", " 5", "\uff15", "", "9" * 25])
def test_limit_parsing_refuses_everything_else(raw: str) -> None:
    request = make_mocked_request("GET", f"/internal/v1/events?limit={quote(raw)}")
    with pytest.raises(ValueError, match="limit must be an integer from 1 to 1000"):
        _integer(request, "limit", 500, 1, 1000)


def test_the_sqlite_relay_lock_file_sits_beside_the_database(tmp_path: Path) -> None:
    database = tmp_path / "keys.db"
    assert _sqlite_lock_path(create_engine(f"sqlite+aiosqlite:///{database}")) == (
        f"{database}.relay-lock"
    )
    assert _sqlite_lock_path(create_engine("sqlite+aiosqlite:///:memory:")) is None
    assert _sqlite_lock_path(create_engine("postgresql+asyncpg://u@h/db")) is None
