"""Test helpers: mint signed key records, and a stand-in for key_service's internal lookup.

The stand-in replaces only the network peer in integration tests of the gateway's own pipeline;
tests against the real key_service app live beside these.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from apikeys_shared.config import Env, load_secrets
from apikeys_shared.events import Event, KeyRecord, SignedEvent
from apikeys_shared.keys import generate_secret, new_key_id
from apikeys_shared.signing import Signer

SOURCE = "urn:apikeys:test"


@dataclass(frozen=True)
class IssuedKey:
    """A key as its owner holds it, plus its current record and sequence."""

    key_id: str
    secret: str
    record: KeyRecord
    sequence: int

    @property
    def headers(self) -> dict[str, str]:
        """The two credential headers."""
        return {"X-AuthenticationKeyId": self.key_id, "X-AuthenticationKeyValue": self.secret}


@dataclass
class Keyring:
    """Issues and revokes keys by signing records with the deployment's signing key."""

    env: dict[str, str]
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        secrets = load_secrets(Env(self.env), signer=True, verifier=True)
        assert secrets.signer is not None
        self.signer: Signer = secrets.signer
        self.peppers = secrets.peppers

    def issue(self, name: str = "test key") -> IssuedKey:
        """A new active key, its record signed at the next sequence."""
        key_id, secret = new_key_id(), generate_secret()
        digest, version = self.peppers.hash(key_id, secret)
        record = KeyRecord(
            key_id=key_id, name=name, status="active", issued_at=datetime.now(UTC),
            revoked_at=None, secret_hash=digest, hash_version=version,
        )
        return IssuedKey(key_id, secret, record, next(self._seq))

    def revoke(self, key: IssuedKey) -> IssuedKey:
        """The same key, revoked, at the next sequence."""
        return self.change(key, status="revoked", revoked_at=datetime.now(UTC), revokes_at=None,
                           replaced_by=None)

    def change(self, key: IssuedKey, **fields: Any) -> IssuedKey:
        """The same key with ``fields`` of its record changed, at the next sequence."""
        return replace(key, record=replace(key.record, **fields), sequence=next(self._seq))

    def signed(self, key: IssuedKey, signer: Signer | None = None) -> SignedEvent:
        """The signed event carrying ``key``'s record."""
        event = Event.for_record(key.record, sequence=key.sequence, source=SOURCE)
        return SignedEvent.sign(event, signer or self.signer)


@dataclass
class FakeKeyService:
    """Serves ``/internal/v1/keys/{id}`` from a dict, counting calls (``down`` answers 503),
    and ``/internal/v1/events`` from a list.

    ``hold``: while it is an event not set, key lookups are answered only once it is (a
    key_service as slow as a test needs; ``calls`` counts them as they arrive).
    """

    token: str
    records: dict[str, SignedEvent] = field(default_factory=dict)
    calls: int = 0
    down: bool = False
    hold: asyncio.Event | None = None
    # What /internal/v1/events serves (its entries as JSON values, shaped right or not).
    feed: list[object] = field(default_factory=list)

    def put(self, signed: SignedEvent, key_id: str) -> None:
        """Serve ``signed`` for ``key_id``."""
        self.records[key_id] = signed

    def app(self) -> web.Application:
        """The aiohttp app to run with ``aiohttp_server``."""
        app = web.Application()
        app.router.add_get("/internal/v1/keys/{key_id}", self._key)
        app.router.add_get("/internal/v1/events", self._events)
        return app

    async def _events(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"title": "Unauthorized"}, status=401)
        return web.json_response({"events": self.feed, "last_sequence": len(self.feed)})

    async def _key(self, request: web.Request) -> web.Response:
        self.calls += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"title": "Unauthorized"}, status=401)
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            return web.json_response({"title": "Service Unavailable"}, status=503)
        signed = self.records.get(request.match_info["key_id"])
        if signed is None:
            return web.json_response({"title": "Not Found"}, status=404)
        return web.json_response(signed.to_json())
