"""Rolling a key through the app, on SQLite and PostgreSQL: every status of
``POST /api/v1/keys/{key_id}/roll``, the rows and events a roll writes, and the app's own
scheduler revoking the old key when its overlap ends."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from apikeys_shared.events import DATASCHEMA_V2, KeyRecord
from apikeys_shared.keys import is_valid_secret, new_key_id
from key_service.models import OutboxEvent
from tests.integration.key_service.conftest import Client, sessionmaker_of
from tests.integration.key_service.problems import expect_problem
from tests.support.stack import eventually


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _issue(client: Client, name: str = "billing export") -> dict[str, Any]:
    resp = await client.http.post("/api/v1/keys", json={"name": name}, headers=client.headers())
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _roll(client: Client, key_id: str, overlap: object = 86400) -> Any:
    return await client.http.post(
        f"/api/v1/keys/{key_id}/roll", json={"overlap_seconds": overlap},
        headers=client.headers(),
    )


async def _outbox(client: Client) -> list[OutboxEvent]:
    async with sessionmaker_of(client)() as db:
        return list((await db.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all())


async def test_a_roll_issues_the_replacement_and_schedules_the_old_key(admin: Client) -> None:
    old = await _issue(admin)
    resp = await _roll(admin, old["key_id"], 3600)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    new = await resp.json()
    assert resp.headers["Location"] == f"/api/v1/keys/{new['key_id']}"
    assert set(new) == {"key_id", "name", "status", "issued_at", "revoked_at", "revokes_at",
                        "replaces", "replaced_by", "last_used_at", "secret", "replaced_key"}
    assert (new["name"], new["status"], new["replaces"]) == (
        "billing export", "active", old["key_id"])
    assert (new["revoked_at"], new["revokes_at"], new["replaced_by"]) == (None, None, None)
    assert is_valid_secret(new["secret"])
    assert new["key_id"] != old["key_id"]
    replaced = new["replaced_key"]
    assert (replaced["key_id"], replaced["status"], replaced["replaced_by"]) == (
        old["key_id"], "active", new["key_id"])
    assert _time(replaced["revokes_at"]) - _time(new["issued_at"]) == timedelta(hours=1)

    got = await (await admin.http.get(f"/api/v1/keys/{old['key_id']}")).json()
    assert got == replaced
    listing = await (await admin.http.get("/api/v1/keys")).json()
    assert [k["key_id"] for k in listing["items"]] == [new["key_id"], old["key_id"]]

    # Two events, the replacement first: apikey.issued (dataschema 1) for the new key, then
    # apikey.rolled (dataschema 2) for the old one, whose record carries revokes_at.
    events = (await _outbox(admin))[1:]
    assert [(e.key_id, e.event_type) for e in events] == [
        (new["key_id"], "apikey.issued"), (old["key_id"], "apikey.rolled"),
    ]
    record = KeyRecord.from_json(json.loads(events[1].record))
    assert record.dataschema == DATASCHEMA_V2
    assert record.revokes_at == _time(replaced["revokes_at"])
    assert record.replaced_by == new["key_id"]
    assert record.active_at(_time(new["issued_at"]))
    assert not record.active_at(_time(replaced["revokes_at"]))
    assert new["secret"] not in events[0].record + events[1].record

    audit = (await (await admin.http.get("/api/v1/audit")).json())["items"]
    assert [(a["action"], a["key_id"], a["actor"]) for a in audit] == [
        ("key.rolled", old["key_id"], "admin"),
        ("key.issued", new["key_id"], "admin"),
        ("key.issued", old["key_id"], "admin"),
    ]


async def test_a_key_is_rolled_once_and_a_revoked_key_never(admin: Client) -> None:
    old = await _issue(admin)
    first = await _roll(admin, old["key_id"])
    assert first.status == 201
    problem = await expect_problem(await _roll(admin, old["key_id"]), 409)
    assert "already rolled" in str(problem["detail"])
    # The replacement itself can be rolled in its turn.
    new = await first.json()
    assert (await _roll(admin, new["key_id"], 3600)).status == 201
    dead = await _issue(admin, "dead")
    resp = await admin.http.post(f"/api/v1/keys/{dead['key_id']}/revoke", headers=admin.headers())
    assert resp.status == 200
    problem = await expect_problem(await _roll(admin, dead["key_id"]), 409)
    assert "revoked" in str(problem["detail"])
    assert len(await _outbox(admin)) == 7  # 3 issued, 2 rolls of two events each, 1 revoked


async def test_bad_overlaps_are_400_and_change_nothing(admin: Client) -> None:
    key = await _issue(admin)
    path = f"/api/v1/keys/{key['key_id']}/roll"
    for overlap in (-1, 30 * 86400 + 1, 1.5, 3600.0, "3600", True, None, [60], {"s": 1}):
        await expect_problem(await _roll(admin, key["key_id"], overlap), 400, "overlap_seconds")
    resp = await admin.http.post(path, json={}, headers=admin.headers())
    await expect_problem(resp, 400, "overlap_seconds")
    json_type = admin.headers(**{"Content-Type": "application/json"})
    await expect_problem(await admin.http.post(path, data=b"{oops", headers=json_type), 400)
    await expect_problem(await admin.http.post(path, data=b"3600", headers=json_type), 400)
    await expect_problem(await admin.http.post(
        path, data=b"overlap=1", headers=admin.headers(**{"Content-Type": "text/plain"})), 415)
    await expect_problem(await admin.http.post(
        path, json={"overlap_seconds": 60, "pad": "x" * 20000}, headers=admin.headers()), 413)
    listing = await (await admin.http.get("/api/v1/keys")).json()
    assert [(k["key_id"], k["revokes_at"]) for k in listing["items"]] == [(key["key_id"], None)]
    # The bounds themselves are allowed.
    assert (await _roll(admin, key["key_id"], 30 * 86400)).status == 201


async def test_unknown_ids_404_and_who_may_roll(
    admin: Client, viewer: Client, anon: Client,
) -> None:
    for key_id in (new_key_id(), "not-a-uuid", "1" * 36):
        await expect_problem(await _roll(admin, key_id), 404)
    key = await _issue(admin)
    path = f"/api/v1/keys/{key['key_id']}/roll"
    await expect_problem(await anon.http.post(path, json={"overlap_seconds": 60}), 401)
    await expect_problem(await _roll(viewer, key["key_id"]), 403)
    # An administrator without the CSRF token is refused too.
    await expect_problem(await admin.http.post(path, json={"overlap_seconds": 60}), 403)
    assert len(await _outbox(admin)) == 1


async def test_revoking_the_old_key_early_still_works(admin: Client) -> None:
    old = await _issue(admin)
    assert (await _roll(admin, old["key_id"], 7 * 86400)).status == 201
    resp = await admin.http.post(f"/api/v1/keys/{old['key_id']}/revoke", headers=admin.headers())
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "revoked"
    assert body["revokes_at"] is None  # the schedule lapsed with the revocation
    revoked_event = (await _outbox(admin))[-1]
    assert revoked_event.event_type == "apikey.revoked"
    # A revoked key's record is the plain first dataschema that every subscriber reads.
    assert set(json.loads(revoked_event.record)) == {
        "key_id", "name", "status", "issued_at", "revoked_at", "secret_hash", "hash_version",
    }


async def test_the_apps_scheduler_revokes_the_old_key_when_the_overlap_ends(
    admin: Client,
) -> None:
    # Overlap 0: due at once, so the running app's own scheduler (woken by the roll) revokes
    # it without the test waiting for any overlap.
    old = await _issue(admin)
    resp = await _roll(admin, old["key_id"], 0)
    assert resp.status == 201
    replaced = (await resp.json())["replaced_key"]

    async def revoked() -> bool:
        got = await (await admin.http.get(f"/api/v1/keys/{old['key_id']}")).json()
        return bool(got["status"] == "revoked")

    await eventually(revoked, "the scheduler revoked the rolled key")
    got = await (await admin.http.get(f"/api/v1/keys/{old['key_id']}")).json()
    assert got["revoked_at"] == replaced["revokes_at"]
    assert got["revokes_at"] is None
    assert got["replaced_by"] == replaced["replaced_by"]
    audit = (await (await admin.http.get("/api/v1/audit")).json())["items"]
    assert (audit[0]["action"], audit[0]["actor"], audit[0]["actor_type"], audit[0]["key_id"]) \
        == ("key.revoked", "key_service", "system", old["key_id"])
    assert (await _outbox(admin))[-1].event_type == "apikey.revoked"
