"""Gateway heartbeats and ``POST /api/v1/keys/{id}/revoke?wait=N``, through the whole app.

The heartbeats here are posted by the test as a gateway would post them; the end-to-end test
with real gateway processes is tests/e2e/test_receipts.py.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from apikeys_shared.events import Event, format_time
from key_service.appkeys import CONFIG
from key_service.models import GatewayProcess, utcnow

from .conftest import Client, sessionmaker_of
from .problems import expect_problem

HEARTBEAT = "/internal/v1/gateways/heartbeat"


def _bearer(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.http.app[CONFIG].secrets.internal_token}"}


def _beat(name: str, applied: int, instance_id: str | None = None) -> dict[str, Any]:
    return {
        "instance_id": instance_id or secrets.token_hex(8), "name": name, "host": "gw-host",
        "pid": 4242, "started_at": format_time(utcnow()), "applied_sequence": applied,
    }


async def _post_beat(client: Client, beat: dict[str, Any]) -> int:
    resp = await client.http.post(HEARTBEAT, json=beat, headers=_bearer(client))
    assert resp.status == 200, await resp.text()
    last: int = (await resp.json())["last_sequence"]
    return last


async def _issue(client: Client) -> str:
    resp = await client.http.post("/api/v1/keys", json={"name": "k"}, headers=client.headers())
    assert resp.status == 201
    key_id: str = (await resp.json())["key_id"]
    return key_id


async def _sequence_of_revocation(client: Client, key_id: str) -> int:
    resp = await client.http.get("/internal/v1/events", headers=_bearer(client))
    events = [Event.from_bytes(e["body"].encode()) for e in (await resp.json())["events"]]
    [found] = [e for e in events if e.record.key_id == key_id and not e.record.active]
    return found.sequence


async def test_heartbeats_need_the_internal_token_and_a_well_formed_body(admin: Client) -> None:
    resp = await admin.http.post(HEARTBEAT, json=_beat("a", 0))
    await expect_problem(resp, 401)
    for field, value in (("instance_id", "NOT-HEX"), ("applied_sequence", -1),
                         ("pid", True), ("name", ""), ("started_at", "yesterday")):
        resp = await admin.http.post(
            HEARTBEAT, json={**_beat("a", 0), field: value}, headers=_bearer(admin),
        )
        await expect_problem(resp, 400, field)
    resp = await admin.http.post(HEARTBEAT, data=b"[", headers=_bearer(admin))
    await expect_problem(resp, 400, "body")


async def test_a_heartbeat_is_answered_with_the_newest_sequence(admin: Client) -> None:
    assert await _post_beat(admin, _beat("a", 0)) == 0
    key_id = await _issue(admin)
    await admin.http.post(f"/api/v1/keys/{key_id}/revoke?wait=0.1", headers=admin.headers())
    assert await _post_beat(admin, _beat("a", 0)) == 2


async def test_without_wait_the_receipt_is_what_is_known_at_once(admin: Client) -> None:
    await _post_beat(admin, _beat("gw-a", 10**6))
    key_id = await _issue(admin)
    resp = await admin.http.post(f"/api/v1/keys/{key_id}/revoke", headers=admin.headers())
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "revoked"
    # Not sequenced yet: nobody can have applied it, whatever its watermark says.
    receipt = body["propagation"]
    assert receipt["sequence"] is None
    assert (receipt["processes"], receipt["confirmed"]) == (1, 0)
    assert [p["name"] for p in receipt["pending"]] == ["gw-a"]
    assert receipt["gone"] == []


async def test_wait_returns_once_every_live_process_applied_the_event(admin: Client) -> None:
    a, b = _beat("gw-a", 0), _beat("gw-b", 0)
    await _post_beat(admin, a)
    await _post_beat(admin, b)
    key_id = await _issue(admin)
    call = asyncio.create_task(admin.http.post(
        f"/api/v1/keys/{key_id}/revoke?wait=30", headers=admin.headers(),
    ))

    async def confirm() -> None:
        while True:
            resp = await admin.http.get("/internal/v1/events", headers=_bearer(admin))
            if len((await resp.json())["events"]) == 2:
                break
            await asyncio.sleep(0.01)
        sequence = await _sequence_of_revocation(admin, key_id)
        await _post_beat(admin, {**a, "applied_sequence": sequence})
        assert not call.done()  # b has not confirmed yet
        await _post_beat(admin, {**b, "applied_sequence": sequence})

    await confirm()
    resp = await call
    assert resp.status == 200
    receipt = (await resp.json())["propagation"]
    assert receipt["sequence"] == await _sequence_of_revocation(admin, key_id)
    assert (receipt["processes"], receipt["confirmed"], receipt["pending"]) == (2, 2, [])
    assert isinstance(receipt["ms"], int)


async def test_wait_runs_out_with_the_pending_processes_named(admin: Client) -> None:
    await _post_beat(admin, _beat("gw-a", 10**6))
    await _post_beat(admin, _beat("gw-b", 0))
    key_id = await _issue(admin)
    resp = await admin.http.post(f"/api/v1/keys/{key_id}/revoke?wait=0.3", headers=admin.headers())
    assert resp.status == 200
    receipt = (await resp.json())["propagation"]
    assert (receipt["processes"], receipt["confirmed"]) == (2, 1)
    [pending] = receipt["pending"]
    assert (pending["name"], pending["applied_sequence"]) == ("gw-b", 0)


async def test_a_process_silent_past_the_bound_is_gone_not_confirmed(admin: Client) -> None:
    gone = _beat("gw-old", 10**6)
    await _post_beat(admin, gone)
    await _post_beat(admin, _beat("gw-live", 10**6))
    bound = admin.http.app[CONFIG].gateway_gone_after
    async with sessionmaker_of(admin)() as db, db.begin():
        await db.execute(
            update(GatewayProcess)
            .where(GatewayProcess.instance_id == gone["instance_id"])
            .values(seen_at=utcnow() - timedelta(seconds=bound + 1))
        )
    key_id = await _issue(admin)
    resp = await admin.http.post(f"/api/v1/keys/{key_id}/revoke?wait=5", headers=admin.headers())
    receipt = (await resp.json())["propagation"]
    assert (receipt["processes"], receipt["confirmed"], receipt["pending"]) == (1, 1, [])
    assert [p["name"] for p in receipt["gone"]] == ["gw-old"]


async def test_a_process_that_stopped_cleanly_is_no_longer_listed(admin: Client) -> None:
    leaving = _beat("gw-leaving", 0)
    await _post_beat(admin, leaving)
    await _post_beat(admin, _beat("gw-staying", 10**6))
    key_id = await _issue(admin)
    path = f"/internal/v1/gateways/{leaving['instance_id']}"
    resp = await admin.http.delete(path)
    await expect_problem(resp, 401)
    resp = await admin.http.delete(path, headers=_bearer(admin))
    assert resp.status == 204
    resp = await admin.http.delete(path, headers=_bearer(admin))
    await expect_problem(resp, 404)
    resp = await admin.http.post(f"/api/v1/keys/{key_id}/revoke?wait=5", headers=admin.headers())
    receipt = (await resp.json())["propagation"]
    assert (receipt["processes"], receipt["confirmed"], receipt["gone"]) == (1, 1, [])


async def test_revoking_a_revoked_key_with_wait_gives_the_first_revocations_receipt(
    admin: Client,
) -> None:
    a = _beat("gw-a", 0)
    await _post_beat(admin, a)
    key_id = await _issue(admin)
    resp = await admin.http.post(f"/api/v1/keys/{key_id}/revoke", headers=admin.headers())
    assert resp.status == 200
    sequence = await _sequence_of_revocation(admin, key_id)
    await _post_beat(admin, {**a, "applied_sequence": sequence})
    resp = await admin.http.post(f"/api/v1/keys/{key_id}/revoke?wait=5", headers=admin.headers())
    body = await expect_problem(resp, 409)
    receipt = body["propagation"]
    assert isinstance(receipt, dict)
    assert (receipt["sequence"], receipt["processes"], receipt["confirmed"]) == (sequence, 1, 1)


async def test_a_bad_wait_is_refused_and_revokes_nothing(admin: Client) -> None:
    key_id = await _issue(admin)
    for raw in ("0", "31", "-1", "abc", "nan", "inf", "1e2", "1_0", ""):
        resp = await admin.http.post(
            f"/api/v1/keys/{key_id}/revoke", params={"wait": raw}, headers=admin.headers(),
        )
        body = await expect_problem(resp, 400, "wait")
        assert "wait" in str(body["detail"])
    resp = await admin.http.get(f"/api/v1/keys/{key_id}", headers=admin.headers())
    assert (await resp.json())["status"] == "active"
