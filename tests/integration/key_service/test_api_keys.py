"""The key API end to end through the app, on SQLite and PostgreSQL: every status it answers."""

from __future__ import annotations

import base64
import json
import uuid

from apikeys_shared.keys import is_valid_key_id, is_valid_secret
from tests.integration.key_service.conftest import Client
from tests.integration.key_service.problems import expect_problem


def _json_headers(client: Client) -> dict[str, str]:
    return client.headers(**{"Content-Type": "application/json"})


async def _issue(admin: Client, name: str) -> dict[str, object]:
    resp = await admin.http.post("/api/v1/keys", json={"name": name}, headers=admin.headers())
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def test_issue_returns_the_secret_once(admin: Client) -> None:
    resp = await admin.http.post(
        "/api/v1/keys", json={"name": "  billing app  "}, headers=admin.headers()
    )
    assert resp.status == 201
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"key_id", "name", "status", "issued_at", "revoked_at", "revokes_at",
                         "replaces", "replaced_by", "last_used_at", "secret"}
    assert (body["revokes_at"], body["replaces"], body["replaced_by"]) == (None, None, None)
    assert body["name"] == "billing app"
    assert body["status"] == "active"
    assert body["revoked_at"] is None
    assert is_valid_key_id(body["key_id"])
    assert is_valid_secret(body["secret"])
    assert body["issued_at"].endswith("Z")
    got = await admin.http.get(f"/api/v1/keys/{body['key_id']}")
    assert got.status == 200
    again = await got.json()
    assert "secret" not in again
    assert again == {k: v for k, v in body.items() if k != "secret"}


async def test_revoke_then_conflict_then_list_order(admin: Client) -> None:
    names = [f"k{i}" for i in range(5)]
    keys = [await _issue(admin, n) for n in names]
    # Revoke k1 then k3: revoked keys go to the bottom, most recently revoked last.
    for index in (1, 3):
        resp = await admin.http.post(
            f"/api/v1/keys/{keys[index]['key_id']}/revoke", headers=admin.headers()
        )
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "revoked"
        assert body["revoked_at"] is not None
    resp = await admin.http.post(
        f"/api/v1/keys/{keys[1]['key_id']}/revoke", headers=admin.headers()
    )
    await expect_problem(resp, 409)
    listing = await (await admin.http.get("/api/v1/keys")).json()
    assert [i["name"] for i in listing["items"]] == ["k4", "k2", "k0", "k1", "k3"]
    assert listing["next_cursor"] is None
    assert [i["revoked_at"] is None for i in listing["items"]] == [True] * 3 + [False] * 2


async def test_pagination_walks_every_key_once_in_order(admin: Client) -> None:
    keys = [await _issue(admin, f"p{i}") for i in range(7)]
    for index in (0, 5, 2):
        resp = await admin.http.post(
            f"/api/v1/keys/{keys[index]['key_id']}/revoke", headers=admin.headers()
        )
        assert resp.status == 200
    expected = ["p6", "p4", "p3", "p1", "p0", "p5", "p2"]
    for limit in (1, 2, 3, 4, 7, 500):
        seen: list[str] = []
        cursor: str | None = None
        while True:
            query = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
            page = await (await admin.http.get("/api/v1/keys", params=query)).json()
            assert len(page["items"]) <= limit
            seen += [i["name"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, limit


async def test_bad_names_are_400_naming_the_field_and_change_nothing(admin: Client) -> None:
    for name in ["", "   ", "x" * 101, 42, None, ["a"], {"a": 1}, "tab\tinside", "nul\x00"]:
        resp = await admin.http.post("/api/v1/keys", json={"name": name}, headers=admin.headers())
        await expect_problem(resp, 400, "name")
    resp = await admin.http.post("/api/v1/keys", json={}, headers=admin.headers())
    await expect_problem(resp, 400, "name")
    listing = await (await admin.http.get("/api/v1/keys")).json()
    assert listing["items"] == []
    audit = await (await admin.http.get("/api/v1/audit")).json()
    assert audit["items"] == []


async def test_hundred_characters_is_the_limit(admin: Client) -> None:
    body = await _issue(admin, "y" * 100)
    assert body["name"] == "y" * 100


async def test_malformed_json_wrong_type_and_large_bodies(admin: Client) -> None:
    resp = await admin.http.post(
        "/api/v1/keys", data=b"{not json", headers=_json_headers(admin)
    )
    await expect_problem(resp, 400)
    resp = await admin.http.post(
        "/api/v1/keys", data=b"[1, 2]", headers=_json_headers(admin)
    )
    await expect_problem(resp, 400)
    resp = await admin.http.post(
        "/api/v1/keys", data=b"name=x", headers=admin.headers(**{"Content-Type": "text/plain"})
    )
    await expect_problem(resp, 415)
    resp = await admin.http.post(
        "/api/v1/keys", json={"name": "x" * 20000}, headers=admin.headers()
    )
    await expect_problem(resp, 413)

    async def chunks() -> object:
        # No Content-Length: the limit must hold for streamed bodies too.
        for _ in range(40):
            yield b" " * 1024
    resp = await admin.http.post(
        "/api/v1/keys", data=chunks(), headers=_json_headers(admin)
    )
    await expect_problem(resp, 413)
    listing = await (await admin.http.get("/api/v1/keys")).json()
    assert listing["items"] == []


async def test_unknown_and_malformed_ids_are_404(admin: Client) -> None:
    unknown = "01890a5d-ac96-774b-bcce-b302099a8057"
    for key_id in (unknown, "not-a-uuid", str(uuid.uuid4()).upper(), "1" * 36):
        await expect_problem(await admin.http.get(f"/api/v1/keys/{key_id}"), 404)
        resp = await admin.http.post(f"/api/v1/keys/{key_id}/revoke", headers=admin.headers())
        await expect_problem(resp, 404)


async def test_bad_limit_and_cursor_are_400(admin: Client) -> None:
    for limit in ("0", "501", "ten", "-1"):
        resp = await admin.http.get("/api/v1/keys", params={"limit": limit})
        await expect_problem(resp, 400, "limit")
    # The last two: well-formed cursors whose times have no UTC equivalent (OverflowError).
    edges = [
        base64.urlsafe_b64encode(json.dumps(
            {"p": "a", "t": t, "k": "01890a5d-ac96-774b-bcce-b302099a8057"}).encode()
        ).decode().rstrip("=")
        for t in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00")
    ]
    for cursor in ("garbage", "eyJwIjoieiJ9", "!!!", *edges):
        resp = await admin.http.get("/api/v1/keys", params={"cursor": cursor})
        await expect_problem(resp, 400, "cursor")
        resp = await admin.http.get("/api/v1/audit", params={"cursor": cursor})
        await expect_problem(resp, 400, "cursor")


async def test_audit_rows_for_issue_and_revoke(admin: Client) -> None:
    key = await _issue(admin, "audited")
    resp = await admin.http.post(
        f"/api/v1/keys/{key['key_id']}/revoke",
        headers=admin.headers(**{"X-Request-Id": "req-revoke-1"}),
    )
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] == "req-revoke-1"
    audit = await (await admin.http.get("/api/v1/audit")).json()
    revoked, issued = audit["items"]
    assert (revoked["action"], issued["action"]) == ("key.revoked", "key.issued")
    for row in (revoked, issued):
        assert row["actor"] == "admin"
        assert row["key_id"] == key["key_id"]
        assert row["client_address"] == "127.0.0.1"
        assert row["at"].endswith("Z")
    assert revoked["request_id"] == "req-revoke-1"
    page = await (await admin.http.get("/api/v1/audit", params={"limit": "1"})).json()
    assert [r["action"] for r in page["items"]] == ["key.revoked"]
    rest = await (await admin.http.get(
        "/api/v1/audit", params={"limit": "1", "cursor": page["next_cursor"]}
    )).json()
    assert [r["action"] for r in rest["items"]] == ["key.issued"]
    assert rest["next_cursor"] is None


async def test_unknown_route_and_method_are_problems(admin: Client) -> None:
    await expect_problem(await admin.http.get("/api/v1/nothing"), 404)
    resp = await admin.http.put("/api/v1/keys", json={}, headers=admin.headers())
    body = await expect_problem(resp, 405)
    assert body["title"] == "Method Not Allowed"


async def test_deeply_nested_json_is_400_not_500(admin: Client, anon: Client) -> None:
    # json.loads raises RecursionError (not ValueError) past ~1000 levels; within the body limit.
    nested = b"[" * 5000 + b"]" * 5000
    resp = await admin.http.post("/api/v1/keys", data=nested, headers=_json_headers(admin))
    await expect_problem(resp, 400)
    resp = await anon.http.post(
        "/api/v1/session", data=nested, headers={"Content-Type": "application/json"}
    )
    await expect_problem(resp, 400)
    listing = await (await admin.http.get("/api/v1/keys")).json()
    assert listing["items"] == []


async def test_deeply_nested_cursor_is_400_not_500(admin: Client) -> None:
    import base64

    cursor = base64.urlsafe_b64encode(b"[" * 4000).decode().rstrip("=")
    resp = await admin.http.get("/api/v1/keys", params={"cursor": cursor})
    await expect_problem(resp, 400, "cursor")
