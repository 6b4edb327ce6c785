"""Logging in and out, CSRF tokens, login throttling and role checks on every admin route."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiohttp import ClientResponse
from multidict import CIMultiDict
from sqlalchemy import select, update

from key_service.app import create_app
from key_service.config import load_config
from key_service.db import migrate_async
from key_service.models import Session, utcnow
from key_service.users import ADMIN_ROLE, VIEWER_ROLE, create_user
from tests.integration.key_service.conftest import (
    PASSWORD,
    AiohttpClient,
    AiohttpServerClient,
    Client,
    add_user,
    sessionmaker_of,
)

PROBLEM = "application/problem+json"
KEY = "01890a5d-ac96-774b-bcce-b302099a8057"
# Every admin route: method, path, JSON body.
ADMIN_ROUTES: list[tuple[str, str, object]] = [
    ("GET", "/api/v1/keys", None),
    ("POST", "/api/v1/keys", {"name": "role test"}),
    ("GET", f"/api/v1/keys/{KEY}", None),
    ("POST", f"/api/v1/keys/{KEY}/revoke", None),
    ("GET", "/api/v1/audit", None),
]


async def _status(resp: ClientResponse, status: int) -> None:
    assert resp.status == status, await resp.text()
    if status >= 400:
        assert resp.content_type == PROBLEM


async def test_login_sets_a_strict_httponly_cookie_and_returns_csrf(
    anon: Client, aiohttp_client: AiohttpServerClient,
) -> None:
    await create_user(sessionmaker_of(anon), "alice", PASSWORD, ADMIN_ROLE)
    resp = await anon.http.post("/api/v1/session", json={"username": "alice", "password": PASSWORD})
    await _status(resp, 200)
    body = await resp.json()
    assert body["username"] == "alice"
    assert body["role"] == ADMIN_ROLE
    assert len(body["csrf_token"]) >= 32
    cookie = resp.cookies["ks_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert not cookie["secure"]
    # Only hashes are stored: neither the session ID nor the CSRF token appear in the row.
    async with sessionmaker_of(anon)() as db:
        rows = (await db.scalars(select(Session))).all()
    assert len(rows) == 1
    assert cookie.value not in (rows[0].id_hash, rows[0].csrf_hash)
    assert body["csrf_token"] not in (rows[0].id_hash, rows[0].csrf_hash)
    # GET /session hands out the same view again (the page calls it on load).
    again = await anon.http.get("/api/v1/session")
    await _status(again, 200)
    assert await again.json() == body
    # A second login gets a fresh session ID and a different CSRF token.
    second = await aiohttp_client(anon.http.server)
    resp2 = await second.post("/api/v1/session", json={"username": "alice", "password": PASSWORD})
    await _status(resp2, 200)
    assert resp2.cookies["ks_session"].value != cookie.value
    assert (await resp2.json())["csrf_token"] != body["csrf_token"]


async def test_wrong_password_unknown_user_and_bad_bodies(anon: Client) -> None:
    await add_user(anon, "bob", ADMIN_ROLE)
    wrong = await anon.http.post("/api/v1/session", json={"username": "bob", "password": "nope"})
    await _status(wrong, 401)
    unknown = await anon.http.post(
        "/api/v1/session", json={"username": "nobody", "password": PASSWORD}
    )
    await _status(unknown, 401)
    # The same answer whether or not the user exists.
    assert (await wrong.json())["detail"] == (await unknown.json())["detail"]
    assert "ks_session" not in wrong.cookies
    for body, field in (({"password": PASSWORD}, "username"), ({"username": "bob"}, "password"),
                        ({"username": 1, "password": PASSWORD}, "username")):
        resp = await anon.http.post("/api/v1/session", json=body)
        await _status(resp, 400)
        assert (await resp.json())["field"] == field
    resp = await anon.http.post(
        "/api/v1/session", data=b"{", headers={"Content-Type": "application/json"}
    )
    await _status(resp, 400)
    resp = await anon.http.post("/api/v1/session", data=b"username=bob")
    await _status(resp, 415)
    huge = {"username": "bob", "password": "x" * 20000}
    resp = await anon.http.post("/api/v1/session", json=huge)
    await _status(resp, 413)
    await _status(await anon.http.get("/api/v1/session"), 401)


async def test_logout_needs_csrf_then_ends_the_session(admin: Client) -> None:
    resp = await admin.http.delete("/api/v1/session")
    await _status(resp, 403)
    resp = await admin.http.delete("/api/v1/session", headers={"X-CSRF-Token": "wrong"})
    await _status(resp, 403)
    resp = await admin.http.delete("/api/v1/session", headers=admin.headers())
    await _status(resp, 204)
    await _status(await admin.http.get("/api/v1/session"), 401)
    await _status(await admin.http.get("/api/v1/keys"), 401)
    resp = await admin.http.delete("/api/v1/session", headers=admin.headers())
    await _status(resp, 401)


async def test_every_state_change_needs_the_csrf_token(admin: Client) -> None:
    issued = await admin.http.post("/api/v1/keys", json={"name": "x"}, headers=admin.headers())
    await _status(issued, 201)
    key_id = (await issued.json())["key_id"]
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": admin.csrf + "0"},
                    {"X-CSRF-Token": "é"}):
        resp = await admin.http.post("/api/v1/keys", json={"name": "y"}, headers=headers)
        await _status(resp, 403)
        resp = await admin.http.post(f"/api/v1/keys/{key_id}/revoke", headers=headers)
        await _status(resp, 403)
    listing = await (await admin.http.get("/api/v1/keys")).json()
    assert [(k["name"], k["status"]) for k in listing["items"]] == [("x", "active")]


async def test_another_sessions_csrf_token_is_refused(
    admin: Client, viewer: Client,
) -> None:
    resp = await admin.http.post(
        "/api/v1/keys", json={"name": "x"}, headers={"X-CSRF-Token": viewer.csrf or ""}
    )
    await _status(resp, 403)


async def test_role_by_route(anon: Client, viewer: Client, admin: Client) -> None:
    for method, path, body in ADMIN_ROUTES:
        # No session: 401, with or without a (meaningless) CSRF header.
        for headers in ({}, {"X-CSRF-Token": "x"}):
            resp = await anon.http.request(method, path, json=body, headers=headers)
            await _status(resp, 401)
        # An ordinary user, with a valid CSRF token: 403.
        resp = await viewer.http.request(method, path, json=body, headers=viewer.headers())
        await _status(resp, 403)
        # The administrator: allowed (the revoke of an unknown key is then a 404).
        resp = await admin.http.request(method, path, json=body, headers=admin.headers())
        expected = {"POST /api/v1/keys": 201, f"POST /api/v1/keys/{KEY}/revoke": 404,
                    f"GET /api/v1/keys/{KEY}": 404}.get(f"{method} {path}", 200)
        await _status(resp, expected)
    # Nothing the others tried was written: only the administrator's key exists.
    listing = await (await admin.http.get("/api/v1/keys")).json()
    assert [k["name"] for k in listing["items"]] == ["role test"]


async def test_viewer_session_works_for_session_routes(viewer: Client) -> None:
    resp = await viewer.http.get("/api/v1/session")
    await _status(resp, 200)
    assert (await resp.json())["role"] == "viewer"


async def test_failed_logins_are_throttled_per_username(anon: Client) -> None:
    # The fixture allows 3 failures per username and 6 per address.
    await add_user(anon, "carol", ADMIN_ROLE)
    for _ in range(3):
        resp = await anon.http.post("/api/v1/session", json={"username": "carol", "password": "x"})
        await _status(resp, 401)
    resp = await anon.http.post("/api/v1/session", json={"username": "carol", "password": PASSWORD})
    await _status(resp, 429)
    retry_after = int(resp.headers["Retry-After"])
    assert 1 <= retry_after <= 900
    # Another username from the same address is still allowed (under the address limit).
    await add_user(anon, "dave", ADMIN_ROLE)
    resp = await anon.http.post("/api/v1/session", json={"username": "dave", "password": PASSWORD})
    await _status(resp, 200)


async def test_failed_logins_are_throttled_per_address(anon: Client) -> None:
    await add_user(anon, "erin", ADMIN_ROLE)
    for i in range(6):
        resp = await anon.http.post(
            "/api/v1/session", json={"username": f"guess{i}", "password": "x"}
        )
        await _status(resp, 401)
    resp = await anon.http.post("/api/v1/session", json={"username": "erin", "password": PASSWORD})
    await _status(resp, 429)
    assert int(resp.headers["Retry-After"]) >= 1


async def test_a_strangers_guesses_lock_an_account_only_for_the_stranger(
    ks_env: dict[str, str], aiohttp_client: AiohttpClient,
) -> None:
    # Behind a trusted proxy, so that X-Forwarded-For names the client. 3 failures per
    # username and address, 6 per address (the fixture's), 5 per username from anywhere.
    config = load_config({**ks_env, "KEY_SERVICE_TRUSTED_PROXIES": "127.0.0.1",
                          "KEY_SERVICE_LOGIN_MAX_FAILURES_PER_USER": "5"})
    await migrate_async(config.database_url)
    client = Client(await aiohttp_client(create_app(config)))
    await add_user(client, "hank", ADMIN_ROLE)

    async def login(password: str, address: str) -> int:
        resp = await client.http.post(
            "/api/v1/session", json={"username": "hank", "password": password},
            headers={"X-Forwarded-For": address},
        )
        await resp.read()
        return resp.status

    stranger, owner, others = "198.51.100.7", "203.0.113.5", ["192.0.2.1", "192.0.2.2"]
    assert [await login("x", stranger) for _ in range(4)] == [401, 401, 401, 429]
    assert await login(PASSWORD, stranger) == 429  # locked for the stranger
    assert await login(PASSWORD, owner) == 200  # not for the owner
    # A guess spread over addresses meets the per-username limit (the owner's login above
    # cleared the username's count, so it takes five failures from here): the account is
    # locked everywhere but where it logged in from lately.
    assert [await login("x", a) for a in others for _ in range(2)] == [401] * 4
    assert await login("x", "192.0.2.3") == 401
    assert await login(PASSWORD, "192.0.2.4") == 429
    assert await login(PASSWORD, owner) == 200
    # IPv6 addresses count by their /64: one client may hold all of it.
    spray = [f"2001:db8:0:1::{n:x}" for n in range(1, 5)]
    assert [await login("x", a) for a in spray] == [401, 401, 401, 429]
    assert await login(PASSWORD, "2001:db8:0:1::abc") == 429
    assert await login(PASSWORD, "2001:db8:0:2::1") == 200  # another /64: counted apart


async def test_forwarded_addresses_with_ports_count_as_one_client(
    ks_env: dict[str, str], aiohttp_client: AiohttpClient,
) -> None:
    # A proxy that appends the client's port (a new one per connection) must not give every
    # attempt a count of its own: 3 failures per username and address (the fixture's).
    config = load_config({**ks_env, "KEY_SERVICE_TRUSTED_PROXIES": "127.0.0.1"})
    await migrate_async(config.database_url)
    client = Client(await aiohttp_client(create_app(config)))
    await add_user(client, "ivan", ADMIN_ROLE)
    statuses = []
    for port in range(40001, 40005):
        resp = await client.http.post(
            "/api/v1/session", json={"username": "ivan", "password": "x"},
            headers={"X-Forwarded-For": f"198.51.100.7:{port}"},
        )
        await resp.read()
        statuses.append(resp.status)
    assert statuses == [401, 401, 401, 429]
    resp = await client.http.post(
        "/api/v1/session", json={"username": "ivan", "password": PASSWORD},
        headers={"X-Forwarded-For": "[2001:db8::7]:40001"},
    )
    assert resp.status == 200  # another client


async def test_a_good_login_clears_the_username_count(anon: Client) -> None:
    await add_user(anon, "frank", ADMIN_ROLE)
    for _ in range(2):
        resp = await anon.http.post("/api/v1/session", json={"username": "frank", "password": "x"})
        await _status(resp, 401)
    ok = await anon.http.post("/api/v1/session", json={"username": "frank", "password": PASSWORD})
    await _status(ok, 200)
    for _ in range(2):
        resp = await anon.http.post("/api/v1/session", json={"username": "frank", "password": "x"})
        await _status(resp, 401)
    ok = await anon.http.post("/api/v1/session", json={"username": "frank", "password": PASSWORD})
    await _status(ok, 200)


async def test_another_accounts_login_never_clears_a_case_variants_count(
    anon: Client,
) -> None:
    # Usernames are case-sensitive ("admin" and "Admin" are two accounts), so the throttle
    # counts them apart: a good login to one must not reset (or vouch for) the other's count.
    await add_user(anon, "grace", ADMIN_ROLE)
    await add_user(anon, "Grace", VIEWER_ROLE)

    async def login(username: str, password: str) -> int:
        resp = await anon.http.post(
            "/api/v1/session", json={"username": username, "password": password})
        await resp.read()
        return resp.status

    # The fixture allows 3 failures per username and address.
    assert [await login("grace", "x") for _ in range(2)] == [401, 401]
    assert await login("Grace", PASSWORD) == 200
    assert await login("grace", "x") == 401
    assert await login("grace", "x") == 429  # the fourth failure: the count was not cleared


async def test_expired_sessions_are_refused(admin: Client) -> None:
    async with sessionmaker_of(admin)() as db, db.begin():
        await db.execute(update(Session).values(expires_at=utcnow() - timedelta(seconds=1)))
    await _status(await admin.http.get("/api/v1/session"), 401)
    await _status(await admin.http.get("/api/v1/keys"), 401)


async def test_logging_in_again_ends_the_previous_session(admin: Client) -> None:
    before = admin.http.session.cookie_jar.filter_cookies(admin.http.make_url("/"))
    old = before["ks_session"].value
    again = {"username": "admin", "password": PASSWORD}
    resp = await admin.http.post("/api/v1/session", json=again)
    await _status(resp, 200)
    resp = await admin.http.get("/api/v1/session", cookies={"ks_session": old})
    await _status(resp, 401)


@pytest.mark.parametrize(
    ("setting", "proxies", "forwarded", "secure"),
    [
        # auto (the default): Secure when the login came over HTTPS, as a trusted proxy says
        ("auto", "", [], False),
        ("auto", "127.0.0.1", [("X-Forwarded-Proto", "https")], True),
        ("auto", "127.0.0.1", [("X-Forwarded-Proto", "http, https")], True),
        ("auto", "127.0.0.1", [("X-Forwarded-Proto", "https, http")], False),
        ("auto", "127.0.0.1", [("X-Forwarded-Proto", "http")], False),
        ("auto", "127.0.0.1", [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")],
         False),
        ("auto", "10.0.0.0/8", [("X-Forwarded-Proto", "https")], False),  # peer not trusted
        ("auto", "", [("X-Forwarded-Proto", "https")], False),
        ("true", "", [], True),
        ("false", "127.0.0.1", [("X-Forwarded-Proto", "https")], False),
    ],
)
async def test_the_cookie_is_secure_as_configured_or_as_the_connection_was(
    ks_env: dict[str, str], aiohttp_client: AiohttpClient, setting: str, proxies: str,
    forwarded: list[tuple[str, str]], secure: bool,
) -> None:
    config = load_config({**ks_env, "KEY_SERVICE_COOKIE_SECURE": setting,
                          "KEY_SERVICE_TRUSTED_PROXIES": proxies})
    await migrate_async(config.database_url)
    client = Client(await aiohttp_client(create_app(config)))
    await add_user(client, "sec", ADMIN_ROLE)
    login = {"username": "sec", "password": PASSWORD}
    resp = await client.http.post("/api/v1/session", json=login, headers=CIMultiDict(forwarded))
    await _status(resp, 200)
    assert bool(resp.cookies["ks_session"]["secure"]) is secure
    assert resp.cookies["ks_session"]["httponly"] is True


async def test_the_login_form_never_submits_the_password_in_a_url(anon: Client) -> None:
    # Until login.js has attached its handler (or with scripts off), the browser submits the
    # form natively: as a GET that would put the password in the URL, the history and every
    # proxy's access log. A POST to the page keeps it in the body (and is refused with a 405).
    import re

    resp = await anon.http.get("/backoffice/login")
    assert resp.status == 200
    form = re.search(r"<form\b[^>]*>", await resp.text())
    assert form is not None
    assert re.search(r'\bmethod="post"', form.group(0)), form.group(0)
    native = await anon.http.post(
        "/backoffice/login", data={"username": "admin", "password": PASSWORD},
    )
    assert native.status == 405
    assert PASSWORD not in await native.text()


async def test_concurrent_guesses_get_no_more_tries_than_the_limit(anon: Client) -> None:
    # 20 wrong passwords at once for one username (limit 3): without a reservation before the
    # password check, every request passes the throttle check before any failure is counted,
    # and all 20 guesses are tried.
    import asyncio

    await add_user(anon, "gina", ADMIN_ROLE)

    async def guess(i: int) -> int:
        resp = await anon.http.post(
            "/api/v1/session", json={"username": "gina", "password": f"wrong {i}"}
        )
        await resp.read()
        return resp.status

    statuses = await asyncio.gather(*(guess(i) for i in range(20)))
    assert sorted(statuses) == [401] * 3 + [429] * 17, statuses
    resp = await anon.http.post("/api/v1/session", json={"username": "gina", "password": PASSWORD})
    await _status(resp, 429)


async def test_a_username_with_a_nul_character_is_an_ordinary_failure(anon: Client) -> None:
    # PostgreSQL refuses NUL in text: without a check first, the throttle's and the user
    # lookup's queries fail inside the driver and the login answers 500.
    for username in ("ad\x00min", "\x00", "lone \ud800 surrogate"):
        resp = await anon.http.post(
            "/api/v1/session", json={"username": username, "password": "whatever"}
        )
        assert resp.status in (400, 401), await resp.text()
        assert resp.content_type == PROBLEM


async def test_a_password_with_a_lone_surrogate_is_an_ordinary_failure(anon: Client) -> None:
    await add_user(anon, "hank", ADMIN_ROLE)
    resp = await anon.http.post(
        "/api/v1/session", data=b'{"username": "hank", "password": "x\\ud800y"}',
        headers={"Content-Type": "application/json"},
    )
    await _status(resp, 401)
