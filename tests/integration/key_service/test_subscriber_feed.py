"""``GET /api/v1/events``: the feed for subscribers, with an ``events:read`` token, never a hash."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apikeys_shared.errors import EnvelopeError
from apikeys_shared.events import Event, SignedEvent
from apikeys_shared.public_events import PUBLIC_DATASCHEMAS, PublicEvent, verify_public
from apikeys_shared.signing import Verifier
from key_service.config import KeyServiceConfig
from tests.integration.key_service.conftest import Client
from tests.integration.key_service.problems import expect_problem
from tests.integration.key_service.test_api_tokens import bearer, make_token

PATH = "/api/v1/events"


async def _keys(admin: Client) -> list[dict[str, Any]]:
    issued = []
    for name in ("one", "two", "three"):
        resp = await admin.http.post("/api/v1/keys", json={"name": name}, headers=admin.headers())
        assert resp.status == 201
        issued.append(await resp.json())
    resp = await admin.http.post(f"/api/v1/keys/{issued[0]['key_id']}/revoke",
                                 headers=admin.headers())
    assert resp.status == 200
    return issued


async def test_the_same_events_in_order_without_the_secret_hash(
    admin: Client, anon: Client, ks_config: KeyServiceConfig,
) -> None:
    issued = await _keys(admin)
    token = (await make_token(admin, "events:read", name="billing subscriber"))["token"]
    verifier = Verifier.from_base64(
        [k["public_key"] for k in (await (await anon.http.get("/api/v1/verify-keys")).json())
         ["keys"]])
    resp = await anon.http.get(f"{PATH}?after=0&limit=3", headers=bearer(token))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    first = await resp.json()
    assert first["last_sequence"] == 4
    rest = await (await anon.http.get(f"{PATH}?after=00000000000000000003",
                                      headers=bearer(token))).json()
    entries = first["events"] + rest["events"]
    events = [verify_public(SignedEvent.from_json(e), verifier) for e in entries]
    assert [(e.sequence, e.type, e.record.key_id) for e in events] == [
        (1, "apikey.issued", issued[0]["key_id"]), (2, "apikey.issued", issued[1]["key_id"]),
        (3, "apikey.issued", issued[2]["key_id"]), (4, "apikey.revoked", issued[0]["key_id"]),
    ]
    for entry in entries:
        body = json.loads(entry["body"])
        assert body["dataschema"] == PUBLIC_DATASCHEMAS[body["dataschema"].replace(
            "key-record-public", "key-record")]
        assert "secret_hash" not in body["data"]
        assert "hash_version" not in body["data"]
        assert "secret_hash" not in entry["body"]
    # The gateways' feed holds the same events, with the hash: same IDs, sequences and records.
    internal = await (await anon.http.get(
        "/internal/v1/events",
        headers={"Authorization": f"Bearer {ks_config.secrets.internal_token}"})).json()
    full = [SignedEvent.from_json(e).verify(verifier) for e in internal["events"]]
    assert [PublicEvent.of(e) for e in full] == events


async def test_a_gateway_refuses_the_public_form(admin: Client, anon: Client) -> None:
    await _keys(admin)
    token = (await make_token(admin, "events:read"))["token"]
    entry = (await (await anon.http.get(PATH, headers=bearer(token))).json())["events"][0]
    with pytest.raises(EnvelopeError, match="unsupported dataschema"):
        Event.from_bytes(entry["body"].encode())


async def test_only_events_read_opens_it(admin: Client, anon: Client, viewer: Client) -> None:
    writer = (await make_token(admin, "keys:read", "keys:write", "audit:read"))["token"]
    refused = await expect_problem(await anon.http.get(PATH, headers=bearer(writer)), 403)
    assert "events:read" in str(refused["detail"])
    await expect_problem(await anon.http.get(PATH), 401)
    await expect_problem(await anon.http.get(PATH, headers=bearer("ksmt_nonsense")), 401)
    await expect_problem(await viewer.http.get(PATH), 403)
    assert (await admin.http.get(PATH)).status == 200  # an administrator holds every scope


async def test_bad_paging_names_the_parameter(admin: Client, anon: Client) -> None:
    token = (await make_token(admin, "events:read"))["token"]
    for query, field in (("?after=-1", "after"), ("?limit=0", "limit"), ("?limit=1001", "limit"),
                         ("?after=x", "after")):
        await expect_problem(
            await anon.http.get(f"{PATH}{query}", headers=bearer(token)), 400, field)
