"""Management tokens through the app, on SQLite and PostgreSQL: making them (administrators'
sessions only), using them (Bearer, scopes, no CSRF), and every status of every token route."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select, text

from apikeys_shared.keys import new_key_id
from key_service.access import require_scope
from key_service.app import create_app
from key_service.config import KeyServiceConfig
from key_service.logs import JsonFormatter
from key_service.models import AuditEntry, ManagementToken
from key_service.scopes import EVENTS_READ, SCOPES
from key_service.tokenformat import TOKEN_PREFIX, find_tokens, mint_token, parse_token
from key_service.users import ADMIN_ROLE
from tests.integration.key_service.conftest import (
    AiohttpServerClient,
    Client,
    login_client,
    sessionmaker_of,
)
from tests.integration.key_service.problems import expect_problem

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


async def make_token(admin: Client, *scopes: str, name: str = "deploy pipeline") -> dict[str, Any]:
    """Create a token through the API as ``admin``; the answer (with the token's text)."""
    resp = await admin.http.post(
        "/api/v1/tokens", json={"name": name, "scopes": list(scopes)}, headers=admin.headers()
    )
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


async def test_create_shows_the_token_once(admin: Client) -> None:
    resp = await admin.http.post(
        "/api/v1/tokens", json={"name": "  CI deploy  ", "scopes": ["keys:write", "keys:read"]},
        headers=admin.headers(),
    )
    assert resp.status == 201
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"token_id", "name", "scopes", "status", "created_at", "revoked_at",
                         "token"}
    assert body["name"] == "CI deploy"
    assert body["scopes"] == ["keys:read", "keys:write"]  # canonical order
    assert (body["status"], body["revoked_at"]) == ("active", None)
    assert body["token"].startswith(TOKEN_PREFIX)
    assert parse_token(body["token"]) == body["token_id"]
    listing = await (await admin.http.get("/api/v1/tokens")).json()
    assert listing["items"] == [{k: v for k, v in body.items() if k != "token"}]
    assert listing["next_cursor"] is None
    audit = (await (await admin.http.get("/api/v1/audit")).json())["items"]
    assert [(a["action"], a["token_id"], a["key_id"], a["actor"], a["actor_type"])
            for a in audit] == [("token.created", body["token_id"], None, "admin", "user")]


async def test_a_token_manages_keys_within_its_scopes_without_session_or_csrf(
    admin: Client, anon: Client,
) -> None:
    writer = await make_token(admin, "keys:write", name="writer")
    reader = await make_token(admin, "keys:read", name="reader")
    http = anon.http

    resp = await http.post("/api/v1/keys", json={"name": "from CI"},
                           headers=bearer(writer["token"]))
    assert resp.status == 201, await resp.text()
    key = await resp.json()
    resp = await http.get(f"/api/v1/keys/{key['key_id']}", headers=bearer(reader["token"]))
    assert resp.status == 200
    resp = await http.get("/api/v1/keys", headers=bearer(reader["token"]))
    assert [k["key_id"] for k in (await resp.json())["items"]] == [key["key_id"]]

    # Each lacks the other's scope: 403 naming it.
    for method, path, token, scope in [
        ("GET", "/api/v1/keys", writer, "keys:read"),
        ("GET", f"/api/v1/keys/{key['key_id']}", writer, "keys:read"),
        ("POST", "/api/v1/keys", reader, "keys:write"),
        ("POST", f"/api/v1/keys/{key['key_id']}/revoke", reader, "keys:write"),
        ("POST", f"/api/v1/keys/{key['key_id']}/roll", reader, "keys:write"),
        ("GET", "/api/v1/audit", writer, "audit:read"),
    ]:
        resp = await http.request(method, path, json={"name": "x", "overlap_seconds": 60},
                                  headers=bearer(token["token"]))
        problem = await expect_problem(resp, 403)
        assert scope in str(problem["detail"]), (path, problem)
        assert f'scope="{scope}"' in resp.headers["WWW-Authenticate"]

    resp = await http.post(f"/api/v1/keys/{key['key_id']}/revoke",
                           headers=bearer(writer["token"]))
    assert resp.status == 200
    assert (await resp.json())["status"] == "revoked"

    # The audit rows name the token (ID and name), never its text.
    auditor = await make_token(admin, "audit:read", name="auditor")
    resp = await http.get("/api/v1/audit", headers=bearer(auditor["token"]))
    assert resp.status == 200
    rows = (await resp.json())["items"]
    by_token = [r for r in rows if r["actor_type"] == "token"]
    assert [(r["action"], r["actor"], r["actor_token_id"], r["key_id"]) for r in by_token] == [
        ("key.revoked", "writer", writer["token_id"], key["key_id"]),
        ("key.issued", "writer", writer["token_id"], key["key_id"]),
    ]
    assert all(r["client_address"] == "127.0.0.1" and r["request_id"] for r in by_token)
    assert writer["token"] not in str(rows)


async def test_every_bad_token_gets_the_same_401(admin: Client, anon: Client) -> None:
    good = await make_token(admin, *SCOPES)
    revoked = await make_token(admin, *SCOPES, name="revoked")
    resp = await admin.http.post(f"/api/v1/tokens/{revoked['token_id']}/revoke",
                                 headers=admin.headers())
    assert resp.status == 200
    text_ = good["token"]
    tampered = text_[:50] + ("A" if text_[50] != "A" else "B") + text_[51:]
    bad = {
        "malformed": "not-a-token",
        "empty": "",
        "bad checksum": tampered,
        "another scheme's word": "ksmt_",
        "unknown": mint_token(new_key_id()),
        # The right ID with another secret (a well-formed token that does not match the hash).
        "wrong secret": mint_token(good["token_id"]),
        "revoked": revoked["token"],
    }
    answers = []
    for label, token in bad.items():
        for method, path in [("GET", "/api/v1/keys"), ("POST", "/api/v1/keys")]:
            resp = await anon.http.request(method, path, json={"name": "x"},
                                           headers=bearer(token))
            problem = await expect_problem(resp, 401)
            answers.append((problem["detail"], resp.headers["WWW-Authenticate"]))
            assert label  # (named for the failure message of the loop)
    assert len(set(answers)) == 1, answers
    assert 'error="invalid_token"' in answers[0][1]
    # Lower-case scheme, extra spaces: still the token's request.
    resp = await anon.http.get("/api/v1/keys", headers={"Authorization": f"bearer  {text_} "})
    assert resp.status == 200


async def test_a_bearer_request_ignores_the_session_cookie(admin: Client) -> None:
    # An administrator's browser that also sends a bad token gets the token's answer: the
    # session is not a fallback, and the CSRF check does not stand in for the token.
    resp = await admin.http.get("/api/v1/keys", headers=bearer("nonsense"))
    await expect_problem(resp, 401)
    resp = await admin.http.post("/api/v1/keys", json={"name": "x"},
                                 headers={**admin.headers(), **bearer("nonsense")})
    await expect_problem(resp, 401)
    resp = await admin.http.get("/api/v1/session", headers=bearer("nonsense"))
    await expect_problem(resp, 401)
    resp = await admin.http.delete("/api/v1/session", headers=bearer("nonsense"))
    await expect_problem(resp, 401)
    # Other schemes (a proxy's Basic authentication) are not a token: the session answers.
    resp = await admin.http.get("/api/v1/keys", headers={"Authorization": "Basic eDp5"})
    assert resp.status == 200


async def test_a_token_cannot_manage_tokens(admin: Client, anon: Client) -> None:
    every = await make_token(admin, *SCOPES, name="all scopes")
    other = await make_token(admin, "keys:read", name="other")
    for method, path, body in [
        ("POST", "/api/v1/tokens", {"name": "child", "scopes": ["keys:read"]}),
        ("GET", "/api/v1/tokens", None),
        ("POST", f"/api/v1/tokens/{other['token_id']}/revoke", None),
        ("POST", f"/api/v1/tokens/{every['token_id']}/revoke", None),
    ]:
        resp = await anon.http.request(method, path, json=body, headers=bearer(every["token"]))
        problem = await expect_problem(resp, 403)
        assert "cannot manage management tokens" in str(problem["detail"])
        # Nor with the administrator's cookie beside it.
        resp = await admin.http.request(method, path, json=body,
                                        headers={**admin.headers(), **bearer(every["token"])})
        await expect_problem(resp, 403)
    listing = await (await admin.http.get("/api/v1/tokens")).json()
    assert {t["name"]: t["status"] for t in listing["items"]} == {
        "all scopes": "active", "other": "active",
    }


async def test_token_routes_refuse_viewers_strangers_and_missing_csrf(
    admin: Client, viewer: Client, anon: Client,
) -> None:
    token = await make_token(admin, "keys:read")
    routes = [
        ("POST", "/api/v1/tokens", {"name": "t", "scopes": ["keys:read"]}),
        ("GET", "/api/v1/tokens", None),
        ("POST", f"/api/v1/tokens/{token['token_id']}/revoke", None),
    ]
    for method, path, body in routes:
        await expect_problem(await anon.http.request(method, path, json=body), 401)
        resp = await viewer.http.request(method, path, json=body, headers=viewer.headers())
        await expect_problem(resp, 403)
    for method, path, body in routes:
        if method == "POST":
            await expect_problem(await admin.http.request(method, path, json=body), 403)
    listing = await (await admin.http.get("/api/v1/tokens")).json()
    assert [t["status"] for t in listing["items"]] == ["active"]


async def test_bad_creations_are_400_415_413_and_change_nothing(admin: Client) -> None:
    for body, field in [
        ({"scopes": ["keys:read"]}, "name"),
        ({"name": "", "scopes": ["keys:read"]}, "name"),
        ({"name": "x" * 101, "scopes": ["keys:read"]}, "name"),
        ({"name": "tab\there", "scopes": ["keys:read"]}, "name"),
        ({"name": "t"}, "scopes"),
        ({"name": "t", "scopes": []}, "scopes"),
        ({"name": "t", "scopes": "keys:read"}, "scopes"),
        ({"name": "t", "scopes": ["keys:admin"]}, "scopes"),
        ({"name": "t", "scopes": ["keys:read", "keys:read"]}, "scopes"),
        ({"name": "t", "scopes": [None]}, "scopes"),
    ]:
        resp = await admin.http.post("/api/v1/tokens", json=body, headers=admin.headers())
        await expect_problem(resp, 400, field)
    json_type = admin.headers(**{"Content-Type": "application/json"})
    await expect_problem(
        await admin.http.post("/api/v1/tokens", data=b"{nope", headers=json_type), 400)
    await expect_problem(
        await admin.http.post("/api/v1/tokens", data=b"[]", headers=json_type), 400)
    await expect_problem(await admin.http.post(
        "/api/v1/tokens", data=b"name=t", headers=admin.headers(**{"Content-Type": "text/plain"})
    ), 415)
    await expect_problem(await admin.http.post(
        "/api/v1/tokens", json={"name": "t", "scopes": ["keys:read"], "pad": "x" * 20000},
        headers=admin.headers(),
    ), 413)
    assert (await (await admin.http.get("/api/v1/tokens")).json())["items"] == []
    assert (await (await admin.http.get("/api/v1/audit")).json())["items"] == []


async def test_revoke_then_409_404_and_the_token_stops_working(
    admin: Client, anon: Client,
) -> None:
    token = await make_token(admin, "keys:read")
    assert (await anon.http.get("/api/v1/keys", headers=bearer(token["token"]))).status == 200
    path = f"/api/v1/tokens/{token['token_id']}/revoke"
    resp = await admin.http.post(path, headers=admin.headers())
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "revoked"
    assert body["revoked_at"] is not None
    assert "token" not in body
    await expect_problem(await admin.http.post(path, headers=admin.headers()), 409)
    await expect_problem(await anon.http.get("/api/v1/keys", headers=bearer(token["token"])), 401)
    for token_id in (new_key_id(), "not-a-uuid", token["token_id"].upper()):
        resp = await admin.http.post(f"/api/v1/tokens/{token_id}/revoke", headers=admin.headers())
        await expect_problem(resp, 404)
    audit = (await (await admin.http.get("/api/v1/audit")).json())["items"]
    assert [a["action"] for a in audit] == ["token.revoked", "token.created"]


async def test_the_list_pages_newest_first(admin: Client) -> None:
    made = [await make_token(admin, "keys:read", name=f"t{i}") for i in range(5)]
    expected = [t["token_id"] for t in reversed(made)]
    for limit in (1, 2, 5, 500):
        seen: list[str] = []
        cursor = ""
        while True:
            page = await (await admin.http.get(
                "/api/v1/tokens", params={"limit": str(limit), "cursor": cursor}
            )).json()
            seen += [t["token_id"] for t in page["items"]]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert seen == expected, limit
    for params, field in [({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                          ({"cursor": "garbage"}, "cursor"), ({"cursor": "dG9rZW5zOng"}, "cursor")]:
        await expect_problem(await admin.http.get("/api/v1/tokens", params=params), 400, field)


async def test_the_token_is_stored_and_logged_nowhere(
    admin: Client, anon: Client, database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    made = [await make_token(admin, *SCOPES, name=f"leak check {i}") for i in range(20)]
    texts = {t["token"] for t in made}
    for token in made:
        resp = await anon.http.post("/api/v1/keys", json={"name": "k"},
                                    headers=bearer(token["token"]))
        assert resp.status == 201
    sessionmaker = sessionmaker_of(anon)
    async with sessionmaker() as db:
        rows = (await db.scalars(select(ManagementToken))).all()
        audit = (await db.scalars(select(AuditEntry))).all()
        if database_url.startswith("postgresql"):
            dump = "\n".join((await db.execute(text(
                "SELECT t::text FROM management_tokens AS t UNION ALL "
                "SELECT a::text FROM audit_log AS a"
            ))).scalars().all())
        else:
            dump = "\n".join(repr(vars(r)) for r in [*rows, *audit])
    assert len(rows) == 20
    assert len(audit) == 40
    assert not [t for t in texts if t in dump]
    assert list(find_tokens(dump)) == []
    logs = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert sum('"message": "request"' in line for line in logs.splitlines()) >= 40
    assert not [t for t in texts if t in logs]
    assert list(find_tokens(logs)) == []
    assert not [r.secret_hash for r in rows if r.secret_hash in logs]


@pytest.fixture
async def events_route(
    ks_config: KeyServiceConfig, aiohttp_client: AiohttpClient,
) -> Client:
    """The app with one more route guarded by ``events:read``, as a subscriber feed would be."""

    async def feed(request: web.Request) -> web.Response:
        principal = await require_scope(request, EVENTS_READ)
        return web.json_response({"kind": principal.kind, "name": principal.name})

    app = create_app(ks_config)
    app.router.add_get("/api/v1/test-feed", feed)
    return Client(await aiohttp_client(app))


async def test_the_events_read_scope_guards_a_route(
    events_route: Client, aiohttp_client: AiohttpServerClient,
) -> None:
    admin = await login_client(events_route, aiohttp_client, "ada", ADMIN_ROLE)
    viewer = await login_client(events_route, aiohttp_client, "vic", "viewer")
    reader = await make_token(admin, EVENTS_READ, name="subscriber")
    others = await make_token(admin, "keys:read", "keys:write", "audit:read", name="no events")
    http = events_route.http
    resp = await http.get("/api/v1/test-feed", headers=bearer(reader["token"]))
    assert resp.status == 200
    assert await resp.json() == {"kind": "token", "name": "subscriber"}
    problem = await expect_problem(
        await http.get("/api/v1/test-feed", headers=bearer(others["token"])), 403)
    assert "events:read" in str(problem["detail"])
    resp = await admin.http.get("/api/v1/test-feed")
    assert await resp.json() == {"kind": "user", "name": "ada"}
    await expect_problem(await viewer.http.get("/api/v1/test-feed"), 403)
    await expect_problem(await http.get("/api/v1/test-feed"), 401)
    # The scope is of no use elsewhere.
    await expect_problem(await http.get("/api/v1/keys", headers=bearer(reader["token"])), 403)


async def test_an_unknown_scope_in_code_is_a_programming_error(
    ks_config: KeyServiceConfig, aiohttp_client: AiohttpClient,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        await require_scope(request, "keys:everything")
        return web.json_response({})

    app = create_app(ks_config)
    app.router.add_get("/api/v1/broken", broken)
    client = await aiohttp_client(app)
    resp = await client.get("/api/v1/broken")
    await expect_problem(resp, 500)
