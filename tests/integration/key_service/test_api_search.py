"""Searching the key list (``GET /api/v1/keys?q=``) on SQLite and PostgreSQL: what it finds, in
the list's order, page by page; and on PostgreSQL, that an index serves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text

from key_service.db import create_engine, migrate_async
from key_service.keys import active_list_query, revoked_list_query, search_filter
from key_service.models import ApiKey
from tests.integration.key_service.conftest import Client
from tests.integration.key_service.problems import expect_problem
from tests.integration.key_service.test_migrations import _Explain


async def _issue(admin: Client, name: str) -> dict[str, Any]:
    resp = await admin.http.post("/api/v1/keys", json={"name": name}, headers=admin.headers())
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def _revoke(admin: Client, key: dict[str, Any]) -> None:
    resp = await admin.http.post(f"/api/v1/keys/{key['key_id']}/revoke", headers=admin.headers())
    assert resp.status == 200


async def _search(admin: Client, q: str, limit: int = 500) -> list[str]:
    """The names ``q`` finds, page by page of ``limit``, in list order."""
    names: list[str] = []
    cursor: str | None = None
    while True:
        params = {"q": q, "limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        resp = await admin.http.get("/api/v1/keys", params=params)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        assert len(page["items"]) <= limit
        names += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return names


async def test_search_finds_name_fragments_and_id_prefixes_in_list_order(admin: Client) -> None:
    names = ["Billing export", "shipping", "billing IMPORT", "50% off_sale", "a/b path",
             "old billing", "Invoices", "Bob's \\server\\share"]
    keys = {name: await _issue(admin, name) for name in names}
    await _revoke(admin, keys["billing IMPORT"])
    await _revoke(admin, keys["old billing"])
    # Active newest first, then revoked, latest revoked last: on every page size.
    for limit in (1, 2, 500):
        assert await _search(admin, "billing", limit) == [
            "Billing export", "billing IMPORT", "old billing"], limit
    assert await _search(admin, "BILL") == ["Billing export", "billing IMPORT", "old billing"]
    assert await _search(admin, "  ping ") == ["shipping"]  # trimmed
    # LIKE's wildcards and the escape character are plain characters in q.
    assert await _search(admin, "%") == ["50% off_sale"]
    assert await _search(admin, "_") == ["50% off_sale"]
    assert await _search(admin, "/") == ["a/b path"]
    # So are quotes and backslashes, in the pattern rendered into the statement.
    assert await _search(admin, "b's \\s") == ["Bob's \\server\\share"]
    assert await _search(admin, "'") == ["Bob's \\server\\share"]
    assert await _search(admin, "nothing like it") == []
    # A key ID prefix, in either case, finds the keys whose IDs begin with it.
    invoices = keys["Invoices"]["key_id"]
    assert await _search(admin, invoices) == ["Invoices"]
    assert await _search(admin, invoices[:30].upper()) == ["Invoices"]
    everyone = await _search(admin, "")
    assert len(everyone) == len(names)  # a blank q is no search
    sharing = [k["name"] for k in keys.values() if k["key_id"].startswith(invoices[:4])]
    assert sorted(await _search(admin, invoices[:4])) == sorted(sharing)
    # A cursor continues the search it came from.
    first = await (await admin.http.get(
        "/api/v1/keys", params={"q": "billing", "limit": "1"})).json()
    rest = await (await admin.http.get("/api/v1/keys", params={
        "q": "billing", "cursor": first["next_cursor"]})).json()
    assert [i["name"] for i in rest["items"]] == ["billing IMPORT", "old billing"]
    assert rest["next_cursor"] is None


async def test_bad_q_is_400_naming_it(admin: Client) -> None:
    await _issue(admin, "some key")
    for q in ("x" * 101, "tab\tinside", "nul\x00"):
        resp = await admin.http.get("/api/v1/keys", params={"q": q})
        await expect_problem(resp, 400, "q")
    assert await _search(admin, "x" * 100) == []  # a hundred characters is the limit


def _rows(count: int) -> list[dict[str, object]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "key_id": f"{i:08x}-0000-7000-8000-000000000000", "name": f"service {i} key",
            "secret_hash": "0" * 64, "hash_version": "p1",
            "status": "revoked" if i % 10 == 0 else "active",
            "issued_at": start + timedelta(seconds=i),
            "revoked_at": start + timedelta(days=1, seconds=i) if i % 10 == 0 else None,
        }
        for i in range(count)
    ]


async def test_postgresql_searches_use_the_search_indexes(postgres_url: str) -> None:
    await migrate_async(postgres_url)
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(ApiKey), _rows(100_000))
            await conn.execute(text("ANALYZE api_keys"))
            plans: dict[str, str] = {}
            for label, query in {
                "rare name": active_list_query(None, 51, search_filter("e 12345 k", "postgresql")),
                "id prefix": active_list_query(None, 51, search_filter("00004e2", "postgresql")),
                "revoked, rare name": revoked_list_query(
                    None, 51, search_filter("e 12340 k", "postgresql")),
            }.items():
                rows = (await conn.execute(_Explain(query))).scalars().all()
                plans[label] = "\n".join(rows)
            found = (await conn.execute(
                active_list_query(None, 51, search_filter("e 12345 k", "postgresql"))
            )).all()
    finally:
        await engine.dispose()
    assert [row.name for row in found] == ["service 12345 key"]
    assert "ix_api_keys_name_trgm" in plans["rare name"], plans["rare name"]
    assert "ix_api_keys_key_id_prefix" in plans["id prefix"], plans["id prefix"]
    assert "ix_api_keys_name_trgm" in plans["revoked, rare name"], plans["revoked, rare name"]
    for label, plan in plans.items():
        assert "Seq Scan" not in plan, (label, plan)
