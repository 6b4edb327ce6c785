"""``/internal/v1/*``: the contract gateways build on, through the whole app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from apikeys_shared.events import SignedEvent
from apikeys_shared.keys import new_key_id
from apikeys_shared.signing import Verifier
from key_service.config import KeyServiceConfig

from .conftest import AdminClient, AiohttpClient, start_admin

FEED = "/internal/v1/events"


def _bearer(config: KeyServiceConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.secrets.internal_token}"}


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["detail"]
    return body


@pytest.fixture
async def admin(app_config: KeyServiceConfig, aiohttp_client: AiohttpClient) -> AdminClient:
    """The app on the test database, with a logged-in administrator."""
    return await start_admin(app_config, aiohttp_client)


async def _feed(http: TestClient[Any, Any], config: KeyServiceConfig, query: str) -> Any:
    resp = await http.get(f"{FEED}{query}", headers=_bearer(config))
    assert resp.status == 200, await resp.text()
    return await resp.json()


_BAD_HEADERS = [
    None, "Bearer wrong-token-wrong-token-wrong-token-wrong", "Basic {token}", "{token}",
    "Bearer", "Bearer {token}x", "Bearer {token_upper}",
]


async def test_without_the_right_token_the_answer_is_401(
    admin: AdminClient, app_config: KeyServiceConfig,
) -> None:
    token = app_config.secrets.internal_token
    for path in (FEED, f"{FEED}?after=0", f"/internal/v1/keys/{new_key_id()}"):
        for header in _BAD_HEADERS:
            headers = {} if header is None else {
                "Authorization": header.format(token=token, token_upper=token.upper()),
            }
            resp = await admin.http.get(path, headers=headers)
            await _problem(resp, 401)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # The session cookie of an administrator is not a service token either.
    await _problem(await admin.http.get(FEED), 401)


async def test_feed_pages_signed_events_in_sequence_order(
    admin: AdminClient, app_config: KeyServiceConfig, verifier: Verifier,
) -> None:
    http = admin.http
    empty = await _feed(http, app_config, "")
    assert empty == {"events": [], "last_sequence": 0}

    issued = [await admin.issue(f"key {n}") for n in range(5)]
    revoked = [await admin.revoke(k["key_id"]) for k in issued[:2]]
    # No waiting for the relay: the feed numbers committed rows itself.
    whole = await _feed(http, app_config, "")
    events = [SignedEvent.from_json(e).verify(verifier) for e in whole["events"]]
    assert whole["last_sequence"] == 7
    assert [e.sequence for e in events] == list(range(1, 8))
    assert [e.record.key_id for e in events] == (
        [k["key_id"] for k in issued] + [k["key_id"] for k in revoked]
    )
    assert [e.type for e in events] == ["apikey.issued"] * 5 + ["apikey.revoked"] * 2
    assert events[5].record.revoked_at is not None

    page = await _feed(http, app_config, "?after=3&limit=2")
    assert [SignedEvent.from_json(e).verify(verifier).sequence for e in page["events"]] == [4, 5]
    assert page["last_sequence"] == 7
    # An event's own zero-padded sequence, passed back as is, means the same.
    padded = await _feed(http, app_config, "?after=00000000000000000003&limit=2")
    assert padded["events"] == page["events"]
    assert await _feed(http, app_config, "?after=7") == {"events": [], "last_sequence": 7}
    assert (await _feed(http, app_config, "?after=999"))["events"] == []
    assert len((await _feed(http, app_config, "?limit=1000"))["events"]) == 7


_BAD_QUERIES = [
    ("?after=-1", "after"), ("?after=abc", "after"), ("?after=1.5", "after"),
    ("?after=", "after"), ("?after=99999999999999999999", "after"),
    ("?limit=0", "limit"), ("?limit=1001", "limit"), ("?limit=ten", "limit"),
    ("?after=1&limit=-5", "limit"),
]


async def test_bad_feed_parameters_are_400_naming_the_field(
    admin: AdminClient, app_config: KeyServiceConfig,
) -> None:
    for query, field in _BAD_QUERIES:
        resp = await admin.http.get(f"{FEED}{query}", headers=_bearer(app_config))
        body = await _problem(resp, 400)
        assert body["field"] == field, query
        assert field in body["detail"]


async def test_key_lookup_returns_the_latest_signed_record(
    admin: AdminClient, app_config: KeyServiceConfig, verifier: Verifier,
) -> None:
    key = await admin.issue("lookup")
    resp = await admin.http.get(f"/internal/v1/keys/{key['key_id']}", headers=_bearer(app_config))
    assert resp.status == 200, await resp.text()
    event = SignedEvent.from_json(await resp.json()).verify(verifier)
    assert event.record.key_id == key["key_id"]
    assert event.record.status == "active"
    assert event.record.name == "lookup"

    await admin.revoke(key["key_id"])
    resp = await admin.http.get(f"/internal/v1/keys/{key['key_id']}", headers=_bearer(app_config))
    assert resp.status == 200
    event = SignedEvent.from_json(await resp.json()).verify(verifier)
    assert event.record.status == "revoked"
    assert event.type == "apikey.revoked"


async def test_unknown_or_malformed_key_ids_are_404(
    admin: AdminClient, app_config: KeyServiceConfig,
) -> None:
    key = await admin.issue("another key")
    for key_id in (
        new_key_id(), "not-a-key", key["key_id"].upper(), "0" * 36, key["key_id"] + "0",
        key["key_id"][:-1],
    ):
        resp = await admin.http.get(f"/internal/v1/keys/{key_id}", headers=_bearer(app_config))
        await _problem(resp, 404)


async def test_a_token_of_invalid_utf8_is_401_not_500(admin: AdminClient) -> None:
    # aiohttp decodes header bytes that are not UTF-8 as surrogate escapes, which str.encode()
    # refuses; the client library cannot send them, so the request is written by hand.
    server = admin.http.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            f"GET {FEED} HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n".encode()
            + b"Authorization: Bearer \xff\xfe\r\n\r\n"
        )
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert status_line.split()[1] == b"401", status_line
