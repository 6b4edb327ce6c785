"""After issuing 1,000 keys, no secret is anywhere but in the responses that issued them.

Scanned: the SQLite file (and its WAL), every PostgreSQL table dumped as text, the outbox and
audit rows, and every log line captured at DEBUG. Each secret is looked for directly, and the
scanner of the shared library must find no well-formed secret at all.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from apikeys_shared.keys import find_secrets
from key_service.appkeys import CONFIG, METRICS, OUTBOX_WAKEUP, SESSIONMAKER
from key_service.keys import Actor, KeyService
from key_service.logs import JsonFormatter
from key_service.models import ApiKey, AuditEntry, OutboxEvent
from tests.integration.key_service.conftest import Client

COUNT = 1000
VIA_HTTP = 100


def key_service_of(app: web.Application) -> KeyService:
    """The service layer wired as the app wires it (wakes the app's relay)."""
    return KeyService(
        app[SESSIONMAKER], app[CONFIG].secrets.peppers, wakeup=app[OUTBOX_WAKEUP],
        metrics=app[METRICS],
    )


def _assert_clean(haystack: str, secrets: set[str], what: str) -> None:
    found = [s for s in secrets if s in haystack]
    assert not found, f"{len(found)} secrets found in {what}"
    scanned = list(find_secrets(haystack))
    assert not scanned, f"the scanner found {len(scanned)} secrets in {what}"


async def _issue_many(admin: Client) -> set[str]:
    # Most keys through the running app's service layer (fast), the rest through the HTTP API
    # (so that request handling and its logs are part of the scan); the relay runs meanwhile.
    secrets: set[str] = set()
    service = key_service_of(admin.http.app)
    actor = Actor(user_id=None, username="leak-test", client_address="127.0.0.1")
    for start in range(0, COUNT - VIA_HTTP, 50):
        issued = await asyncio.gather(
            *(service.issue(f"leak test {i}", actor) for i in range(start, start + 50))
        )
        secrets.update(i.secret for i in issued)

    async def one(i: int) -> None:
        resp = await admin.http.post(
            "/api/v1/keys", json={"name": f"via http {i}"}, headers=admin.headers()
        )
        assert resp.status == 201
        secrets.add((await resp.json())["secret"])

    for start in range(0, VIA_HTTP, 25):
        await asyncio.gather(*(one(i) for i in range(start, start + 25)))
    return secrets


async def test_no_secret_is_stored_or_logged(
    admin: Client, database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = await _issue_many(admin)
    assert len(secrets) == COUNT
    listing = await admin.http.get("/api/v1/keys", params={"limit": "500"})
    _assert_clean(await listing.text(), secrets, "the key list")

    sessionmaker = admin.http.app[SESSIONMAKER]
    async with sessionmaker() as db:
        keys = (await db.scalars(select(ApiKey))).all()
        outbox = (await db.scalars(select(OutboxEvent))).all()
        audit = (await db.scalars(select(AuditEntry))).all()
        if database_url.startswith("postgresql"):
            names = (await db.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ))).scalars().all()
            dump = []
            for name in names:
                # Table names come from pg_tables, not from input.
                rows = await db.execute(text(f'SELECT t::text FROM "{name}" AS t'))  # noqa: S608
                dump += rows.scalars().all()
            assert len(dump) >= 3 * COUNT
            _assert_clean("\n".join(dump), secrets, "the PostgreSQL tables")
    assert len(keys) == COUNT
    assert len(outbox) == COUNT
    assert len(audit) == COUNT
    _assert_clean("\n".join(f"{e.record}\n{e.body}" for e in outbox), secrets, "the outbox")
    _assert_clean("\n".join(repr(vars(a)) for a in audit), secrets, "the audit rows")

    if database_url.startswith("sqlite"):
        path = Path(str(make_url(database_url).database))
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        assert path in files
        blob = b"".join(p.read_bytes() for p in files).decode("latin-1")
        assert keys[0].key_id in blob  # the scan does see the data
        _assert_clean(blob, secrets, "the SQLite files")

    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    assert sum('"message": "request"' in line for line in lines) >= VIA_HTTP
    logs = "\n".join(lines)
    _assert_clean(logs, secrets, "the logs")
    # Nor any hash, session ID or CSRF token.
    assert not [k for k in keys if k.secret_hash in logs]
    assert admin.csrf is not None
    assert admin.csrf not in logs
    cookie = admin.http.session.cookie_jar.filter_cookies(admin.http.make_url("/"))
    assert cookie["ks_session"].value not in logs
