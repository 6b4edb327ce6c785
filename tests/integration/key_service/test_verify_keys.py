"""``GET /api/v1/verify-keys``: the public keys subscribers verify events with, no secret needed."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace

import pytest

from apikeys_shared.errors import ConfigError
from apikeys_shared.events import SignedEvent
from apikeys_shared.signing import Verifier, generate_signing_key
from key_service.app import create_app
from key_service.config import KeyServiceConfig, load_config
from tests.integration.key_service.conftest import AiohttpClient, Client

PATH = "/api/v1/verify-keys"


async def test_the_signing_keys_public_half_verifies_the_feed_without_any_credential(
    admin: Client, anon: Client, ks_config: KeyServiceConfig,
) -> None:
    resp = await admin.http.post("/api/v1/keys", json={"name": "k"}, headers=admin.headers())
    assert resp.status == 201
    resp = await anon.http.get(PATH)  # no session, no token
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "public, max-age=60"
    (key,) = (await resp.json())["keys"]
    raw = base64.b64decode(key["public_key"], validate=True)
    assert len(raw) == 32
    assert key == {
        "fingerprint": hashlib.sha256(raw).hexdigest()[:16], "public_key": key["public_key"],
        "algorithm": "Ed25519", "current": True,
    }
    feed = await anon.http.get(
        "/internal/v1/events",
        headers={"Authorization": f"Bearer {ks_config.secrets.internal_token}"},
    )
    (entry,) = (await feed.json())["events"]
    signed = SignedEvent.from_json(entry)
    assert signed.signing_key == key["fingerprint"]
    assert signed.verify(Verifier.from_base64([key["public_key"]])).type == "apikey.issued"


async def test_during_a_rotation_the_previous_key_is_listed_too(
    ks_env: dict[str, str], ks_config: KeyServiceConfig, aiohttp_client: AiohttpClient,
) -> None:
    _, previous = generate_signing_key()
    current = ks_env["APIKEYS_VERIFY_KEYS"]
    rotating = load_config({**ks_env, "APIKEYS_VERIFY_KEYS": f"{previous},{current}"})
    client = await aiohttp_client(create_app(replace(ks_config, verify_keys=rotating.verify_keys)))
    keys = (await (await client.get(PATH)).json())["keys"]
    assert [(k["public_key"], k["current"]) for k in keys] == [(current, True), (previous, False)]


def test_a_malformed_verify_key_stops_key_service_naming_the_variable(
    ks_env: dict[str, str],
) -> None:
    with pytest.raises(ConfigError, match="APIKEYS_VERIFY_KEYS"):
        load_config({**ks_env, "APIKEYS_VERIFY_KEYS": "not base64!"})
    assert load_config({**ks_env, "APIKEYS_VERIFY_KEYS": ""}).verify_keys is None
