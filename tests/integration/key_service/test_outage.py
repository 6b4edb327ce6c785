"""Readiness and the API while the database is cut (through the fault proxy)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from apikeys_shared.config import generate_secrets
from key_service.app import create_app
from key_service.config import load_config
from key_service.db import create_engine, migrate_async
from tests.conftest import AmqpNames
from tests.integration.key_service.conftest import AiohttpClient
from tests.support.faultproxy import FaultProxy
from tests.support.services import PG_ADMIN_URL


# asyncpg can leave a socket transport unclosed when the fault proxy cuts a connection attempt
# mid-way ("unclosed transport <_SelectorSocketTransport ...>", seen in 2 of some 30 runs); the
# ResourceWarning comes whenever the garbage collector finds it and is not what this test is
# about, so this test alone lets unraisable-exception warnings pass, and collects garbage before
# it ends so that none is reported against a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_readyz_is_503_while_postgres_is_cut(
    postgres_url: str, fault_proxy: Callable[[str, int], FaultProxy],
    aiohttp_client: AiohttpClient, tmp_path: Path, amqp_names: AmqpNames,
) -> None:
    await migrate_async(postgres_url)
    url = make_url(postgres_url)
    proxy = fault_proxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = generate_secrets()
    env |= {"KEY_SERVICE_DATABASE_URL": proxied, "KEY_SERVICE_DATA_DIR": str(tmp_path),
            "APIKEYS_EXCHANGE": amqp_names.exchange}
    client = await aiohttp_client(create_app(load_config(env)))
    assert (await client.get("/readyz")).status == 200
    proxy.cut()
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert resp.content_type == "application/problem+json"
    assert (await client.get("/healthz")).status == 200
    # The API fails closed with 503 (no session can be checked), never a 5xx crash or a 200.
    resp = await client.get("/api/v1/session", cookies={"ks_session": "x" * 43})
    assert resp.status == 503
    assert resp.content_type == "application/problem+json"
    proxy.restore()
    assert (await client.get("/readyz")).status == 200
    gc.collect()


# -- a failover, as the engine sees it ------------------------------------------------------
async def test_a_statement_cut_short_by_a_dying_server_is_operational_error(
    postgres_url: str,
) -> None:
    # pg_terminate_backend is what a fast or immediate shutdown does to every session
    # (57P01): the statement in flight fails as "database away", and the pool drops the
    # connection.
    engine = create_engine(postgres_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            admin = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            with pytest.raises(OperationalError) as caught:
                await conn.execute(text("SELECT 1"))
            assert caught.value.connection_invalidated
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_a_write_refused_by_a_standby_is_operational_error(postgres_url: str) -> None:
    # A server that turned standby under a pooled connection refuses writes (25006).
    await migrate_async(postgres_url)
    engine = create_engine(postgres_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SET TRANSACTION READ ONLY"))
            with pytest.raises(OperationalError):
                await conn.execute(text("DELETE FROM sessions"))
    finally:
        await engine.dispose()


async def test_no_host_that_takes_writes_is_operational_error(postgres_url: str) -> None:
    # Several hosts and target_session_attrs, none of them fitting (here: the one server is a
    # primary, and only a standby is asked for).
    url = make_url(postgres_url)
    only_standby = url.set(
        host=None, port=None,
        query={"host": f"{url.host}:{url.port or 5432}", "target_session_attrs": "standby"},
    ).render_as_string(hide_password=False)
    engine = create_engine(only_standby, pool_size=1)
    try:
        with pytest.raises(OperationalError):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
