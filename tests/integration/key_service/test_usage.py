"""Key usage through the app, on SQLite and PostgreSQL: gateways' reports in
(``POST /internal/v1/usage``), ``last_used_at`` and ``GET /api/v1/keys/{id}/usage`` out."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apikeys_shared.events import format_time
from auth_gateway.usage import MAX_BATCH_KEYS
from auth_gateway.usage import UsageBatch as UsageBatch_
from key_service.config import KeyServiceConfig
from key_service.models import KeyUsageDay, UsageBatch
from key_service.usage import (
    BATCH_ID_DAYS,
    RETENTION_DAYS,
    UsageReport,
    UsageService,
    parse_report,
)
from tests.integration.key_service.conftest import Client, sessionmaker_of
from tests.integration.key_service.problems import expect_problem
from tests.integration.key_service.test_api_tokens import bearer, make_token


def _internal(config: KeyServiceConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.secrets.internal_token}"}


def _report(keys: dict[str, tuple[datetime, int]], batch_id: str | None = None,
            day: date | None = None) -> dict[str, Any]:
    first = next(iter(keys.values()))[0]
    return {
        "batch_id": batch_id or uuid.uuid4().hex,
        "day": (day or first.date()).isoformat(),
        "keys": [{"key_id": k, "last_used_at": format_time(t), "count": n}
                 for k, (t, n) in keys.items()],
    }


async def _issue(admin: Client, name: str = "usage") -> str:
    resp = await admin.http.post("/api/v1/keys", json={"name": name}, headers=admin.headers())
    assert resp.status == 201
    key_id: str = (await resp.json())["key_id"]
    return key_id


async def _post(client: Client, config: KeyServiceConfig, body: object) -> Any:
    resp = await client.http.post("/internal/v1/usage", json=body, headers=_internal(config))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_reports_add_up_and_last_used_only_moves_forward(
    admin: Client, ks_config: KeyServiceConfig,
) -> None:
    key_id = await _issue(admin)
    other = await _issue(admin, "other")
    fresh = await (await admin.http.get(f"/api/v1/keys/{key_id}")).json()
    assert fresh["last_used_at"] is None
    now = datetime.now(UTC).replace(microsecond=0)
    earlier = now - timedelta(seconds=30)
    # Two gateway processes; the one with the later use reports first.
    assert await _post(admin, ks_config, _report({key_id: (now, 3)})) == {
        "accepted": True, "unknown_keys": 0}
    await _post(admin, ks_config, _report({key_id: (earlier, 4), other: (earlier, 1)}))
    got = await (await admin.http.get(f"/api/v1/keys/{key_id}")).json()
    assert got["last_used_at"] == format_time(now)
    listing = await (await admin.http.get("/api/v1/keys")).json()
    by_id = {item["key_id"]: item for item in listing["items"]}
    assert by_id[key_id]["last_used_at"] == format_time(now)
    assert by_id[other]["last_used_at"] == format_time(earlier)
    usage = await (await admin.http.get(f"/api/v1/keys/{key_id}/usage")).json()
    assert usage == {
        "key_id": key_id, "last_used_at": format_time(now), "retention_days": RETENTION_DAYS,
        "days": [{"day": now.date().isoformat(), "requests": 7}],
    }


async def test_a_report_sent_again_counts_once(admin: Client, ks_config: KeyServiceConfig) -> None:
    key_id = await _issue(admin)
    body = _report({key_id: (datetime.now(UTC), 5)})
    await _post(admin, ks_config, body)
    assert await _post(admin, ks_config, body) == {"accepted": False, "unknown_keys": 0}
    usage = await (await admin.http.get(f"/api/v1/keys/{key_id}/usage")).json()
    assert usage["days"][0]["requests"] == 5


async def test_concurrent_reports_lose_no_count(admin: Client, ks_config: KeyServiceConfig) -> None:
    keys = [await _issue(admin, f"c{i}") for i in range(3)]
    now = datetime.now(UTC)
    bodies = [_report({k: (now - timedelta(seconds=i), i + 1) for k in reversed(keys)})
              for i in range(8)]
    await asyncio.gather(*(_post(admin, ks_config, body) for body in bodies))
    for key_id in keys:
        usage = await (await admin.http.get(f"/api/v1/keys/{key_id}/usage")).json()
        assert usage["days"][0]["requests"] == sum(range(1, 9))
        assert usage["last_used_at"] == format_time(now)


async def test_unknown_keys_are_passed_over(admin: Client, ks_config: KeyServiceConfig) -> None:
    key_id = await _issue(admin)
    stranger = "00000000-0000-7000-8000-000000000099"
    now = datetime.now(UTC)
    assert await _post(admin, ks_config, _report({key_id: (now, 1), stranger: (now, 2)})) == {
        "accepted": True, "unknown_keys": 1}


async def test_a_clock_ahead_cannot_pin_last_used_in_the_future(
    admin: Client, ks_config: KeyServiceConfig,
) -> None:
    key_id = await _issue(admin)
    ahead = datetime.now(UTC) + timedelta(days=400)
    await _post(admin, ks_config, _report({key_id: (ahead, 1)}))
    got = await (await admin.http.get(f"/api/v1/keys/{key_id}")).json()
    assert datetime.fromisoformat(got["last_used_at"]) <= datetime.now(UTC)


async def test_bad_reports_are_named(admin: Client, ks_config: KeyServiceConfig) -> None:
    key_id = await _issue(admin)
    now = datetime.now(UTC)
    good = _report({key_id: (now, 1)})
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "batch_id": "x"}, "batch_id"),
        ({k: v for k, v in good.items() if k != "day"}, "day"),
        ({**good, "day": "2026-13-01"}, "day"),
        ({**good, "keys": []}, "keys"),
        ({**good, "keys": [{**good["keys"][0], "key_id": "nope"}]}, "keys"),
        ({**good, "keys": [{**good["keys"][0], "count": 0}]}, "keys"),
        ({**good, "keys": [{**good["keys"][0], "count": True}]}, "keys"),
        ({**good, "keys": [{**good["keys"][0], "last_used_at": "yesterday"}]}, "keys"),
        ({**good, "keys": good["keys"] * 2}, "keys"),
        ({**good, "day": (now.date() - timedelta(days=1)).isoformat()}, "keys"),
        ({**good, "keys": [good["keys"][0]] * 101}, "keys"),
    ]
    for body, field in cases:
        resp = await admin.http.post("/internal/v1/usage", json=body, headers=_internal(ks_config))
        await expect_problem(resp, 400, field)
    resp = await admin.http.post("/internal/v1/usage", json=good)
    await expect_problem(resp, 401)
    resp = await admin.http.post("/internal/v1/usage", data=b"[]", headers={
        **_internal(ks_config), "Content-Type": "application/json"})
    await expect_problem(resp, 400)
    # Nothing of the refused reports was kept.
    usage = await (await admin.http.get(f"/api/v1/keys/{key_id}/usage")).json()
    assert (usage["last_used_at"], usage["days"]) == (None, [])


async def test_usage_needs_keys_read_and_a_known_key(
    admin: Client, anon: Client, viewer: Client,
) -> None:
    key_id = await _issue(admin)
    await expect_problem(await anon.http.get(f"/api/v1/keys/{key_id}/usage"), 401)
    await expect_problem(await viewer.http.get(f"/api/v1/keys/{key_id}/usage"), 403)
    await expect_problem(await admin.http.get(
        "/api/v1/keys/00000000-0000-7000-8000-000000000099/usage"), 404)
    await expect_problem(await admin.http.get("/api/v1/keys/not-an-id/usage"), 404)
    reader = await make_token(admin, "keys:read")
    resp = await anon.http.get(f"/api/v1/keys/{key_id}/usage", headers=bearer(reader["token"]))
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    writer = await make_token(admin, "keys:write")
    await expect_problem(await anon.http.get(
        f"/api/v1/keys/{key_id}/usage", headers=bearer(writer["token"])), 403)


async def test_old_days_and_report_ids_are_pruned(admin: Client) -> None:
    key_id = await _issue(admin)
    sessionmaker: async_sessionmaker[AsyncSession] = sessionmaker_of(admin)
    today = datetime.now(UTC)
    oldest_kept = today.date() - timedelta(days=RETENTION_DAYS - 1)
    async with sessionmaker() as db, db.begin():
        db.add_all([
            KeyUsageDay(key_id=key_id, day=oldest_kept, requests=2),
            KeyUsageDay(key_id=key_id, day=oldest_kept - timedelta(days=1), requests=3),
            UsageBatch(batch_id="kept-batch", received_at=today),
            UsageBatch(batch_id="gone-batch",
                       received_at=today - timedelta(days=BATCH_ID_DAYS, seconds=1)),
        ])
    service = UsageService(sessionmaker)
    assert await service.prune() == (1, 1)
    usage = await service.usage(key_id)
    assert usage.days == [(oldest_kept, 2)]
    # A report about a day past the retention moves last_used_at, and adds no count.
    old = datetime.combine(oldest_kept - timedelta(days=3), datetime.min.time(), UTC)
    outcome = await service.record(_parsed(key_id, old))
    assert outcome.accepted
    usage = await service.usage(key_id)
    assert (usage.last_used_at, usage.days) == (old, [(oldest_kept, 2)])


def _parsed(key_id: str, at: datetime) -> UsageReport:
    return parse_report(_report({key_id: (at, 9)}))


async def test_the_largest_report_a_gateway_sends_fits_the_body_limit(
    admin: Client, ks_config: KeyServiceConfig,
) -> None:
    key_id = await _issue(admin)
    now = datetime.now(UTC)
    others = [f"00000000-0000-7000-8000-{i:012x}" for i in range(1, MAX_BATCH_KEYS)]
    batch = UsageBatch_(uuid.uuid4().hex, now.date(),
                        {k: (now.timestamp(), 10**12) for k in [key_id, *others]})
    assert await _post(admin, ks_config, batch.to_json()) == {
        "accepted": True, "unknown_keys": MAX_BATCH_KEYS - 1}
    usage = await (await admin.http.get(f"/api/v1/keys/{key_id}/usage")).json()
    assert usage["days"] == [{"day": now.date().isoformat(), "requests": 10**12}]
