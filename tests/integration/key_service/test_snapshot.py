"""``GET /internal/v1/snapshot``: every revoked key and rolled key's end, as of the feed's last
sequence, signed, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from apikeys_shared.events import Event, SignedEvent
from apikeys_shared.signing import Verifier
from apikeys_shared.snapshot import SignedSnapshot, Snapshot
from key_service.app import create_app
from key_service.appkeys import ENGINE
from key_service.config import KeyServiceConfig, load_config
from key_service.db import migrate_async
from key_service.internal import _SNAPSHOTS
from key_service.snapshot import SnapshotCache, read_snapshot
from tests.integration.key_service.conftest import AiohttpClient, Client
from tests.support.stack import eventually

PATH = "/internal/v1/snapshot"


def _verifier(config: KeyServiceConfig) -> Verifier:
    assert config.secrets.signer is not None
    return Verifier.from_base64([config.secrets.signer.verify_key_base64])


def _internal(config: KeyServiceConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.secrets.internal_token}"}


async def _post(client: Client, path: str, body: object | None = None) -> Any:
    resp = await client.http.post(path, json=body, headers=client.headers())
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()


async def _snapshot(client: Client, config: KeyServiceConfig) -> tuple[SignedSnapshot, Snapshot]:
    resp = await client.http.get(PATH, headers=_internal(config))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    signed = SignedSnapshot(body=await resp.read(), signature=resp.headers["X-Signature"],
                            signing_key=resp.headers["X-Signing-Key"])
    return signed, signed.verify(_verifier(config))


async def _feed(client: Client, config: KeyServiceConfig) -> tuple[list[Event], int]:
    resp = await client.http.get("/internal/v1/events?limit=1000", headers=_internal(config))
    page = await resp.json()
    return [SignedEvent.from_json(e).verify(_verifier(config))
            for e in page["events"]], page["last_sequence"]


async def test_the_snapshot_says_what_the_feed_says_up_to_its_sequence(
    admin: Client, ks_config: KeyServiceConfig,
) -> None:
    kept = await _post(admin, "/api/v1/keys", {"name": "kept"})
    gone = await _post(admin, "/api/v1/keys", {"name": "gone"})
    rolled = await _post(admin, "/api/v1/keys", {"name": "rolled"})
    await _post(admin, f"/api/v1/keys/{gone['key_id']}/revoke")
    replacement = await _post(admin, f"/api/v1/keys/{rolled['key_id']}/roll",
                              {"overlap_seconds": 3600})
    _, snapshot = await _snapshot(admin, ks_config)

    events, last = await _feed(admin, ks_config)
    assert snapshot.sequence == last > 0
    latest: dict[str, Event] = {}
    for event in events:
        latest[event.record.key_id] = event
    assert set(snapshot.revoked) == {
        key_id for key_id, e in latest.items() if e.record.status == "revoked"} == {
        gone["key_id"]}
    assert snapshot.ends == {
        key_id: e.record.revokes_at for key_id, e in latest.items()
        if e.record.status == "active" and e.record.revokes_at is not None}
    revokes_at = datetime.fromisoformat(
        replacement["replaced_key"]["revokes_at"].replace("Z", "+00:00"))
    assert snapshot.ends == {rolled["key_id"]: revokes_at}
    assert kept["key_id"] not in snapshot.revoked


async def test_it_is_served_again_until_the_feed_moves(
    admin: Client, ks_config: KeyServiceConfig,
) -> None:
    key = await _post(admin, "/api/v1/keys", {"name": "k"})
    first, _ = await _snapshot(admin, ks_config)
    again, _ = await _snapshot(admin, ks_config)
    assert again == first
    await _post(admin, f"/api/v1/keys/{key['key_id']}/revoke")
    await _feed(admin, ks_config)  # the revocation has its sequence now
    _, later = await _snapshot(admin, ks_config)
    assert later.revoked == (key["key_id"],)
    assert later.sequence == Snapshot.from_bytes(first.body).sequence + 1


async def test_only_the_internal_token_reads_it(
    admin: Client, anon: Client, ks_config: KeyServiceConfig,
) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-token"},
                    {"Authorization": f"Basic {ks_config.secrets.internal_token}"}):
        resp = await anon.http.get(PATH, headers=headers)
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
    # A session is not the internal token either.
    assert (await admin.http.get(PATH)).status == 401


async def test_brought_up_to_date_from_the_feed_it_equals_a_read_of_the_table(
    admin: Client, ks_config: KeyServiceConfig,
) -> None:
    keys = [await _post(admin, "/api/v1/keys", {"name": f"k{n}"}) for n in range(4)]
    await _snapshot(admin, ks_config)  # cached: later asks start from here
    await _post(admin, f"/api/v1/keys/{keys[0]['key_id']}/revoke")
    await _post(admin, f"/api/v1/keys/{keys[1]['key_id']}/roll", {"overlap_seconds": 600})
    await _post(admin, f"/api/v1/keys/{keys[2]['key_id']}/roll", {"overlap_seconds": 600})
    await _post(admin, f"/api/v1/keys/{keys[2]['key_id']}/revoke")  # rolled, then revoked
    _, updated = await _snapshot(admin, ks_config)
    engine = admin.http.server.app[ENGINE]
    assert ks_config.secrets.signer is not None
    fresh = (await read_snapshot(engine, ks_config.secrets.signer, SnapshotCache())).verify(
        _verifier(ks_config))
    assert updated.sequence == fresh.sequence
    assert sorted(updated.revoked) == sorted(fresh.revoked) == sorted(
        [keys[0]["key_id"], keys[2]["key_id"]])
    assert updated.ends == fresh.ends
    assert list(updated.ends) == [keys[1]["key_id"]]


async def test_key_service_prepares_it_as_it_starts(
    admin: Client, ks_config: KeyServiceConfig,
) -> None:
    cache = admin.http.server.app[_SNAPSHOTS]

    async def made() -> bool:
        return cache.signed is not None

    await eventually(made, "the snapshot made at start")
    prepared = cache.signed
    signed, _ = await _snapshot(admin, ks_config)
    assert signed == prepared  # the first gateway to ask is served what was prepared


async def test_key_service_is_ready_only_once_it_tried_to_make_it(
    postgres_url: str, secrets_env: dict[str, str], tmp_path: Path,
    aiohttp_client: AiohttpClient,
) -> None:
    # The keys table locked against reads (as a long migration or a dump might): key_service's
    # database answers, but the snapshot cannot be made until the lock goes.
    config = load_config({**secrets_env, "KEY_SERVICE_DATABASE_URL": postgres_url,
                          "KEY_SERVICE_DATA_DIR": str(tmp_path / "data")})
    await migrate_async(postgres_url)
    locker = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        locking = locker.transaction()
        await locking.start()
        await locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        client = Client(await aiohttp_client(create_app(config)))
        resp = await client.http.get("/readyz")
        assert resp.status == 503
        assert "snapshot" in (await resp.json(content_type=None))["detail"]
        assert resp.headers["Retry-After"] == "1"
        await locking.rollback()
    finally:
        await locker.close()
    resp = await client.http.get("/readyz")
    assert resp.status == 200, await resp.text()
    assert client.http.server.app[_SNAPSHOTS].signed is not None
