"""The Alembic migrations build exactly the schema of models.py, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

import key_service
from key_service.db import create_engine, migrate_async
from key_service.keys import active_list_query, revoked_list_query
from key_service.models import ApiKey, Base, schema_objects_for

MIGRATIONS = Path(key_service.__file__).resolve().parent / "migrations"


def _diff(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={
        "compare_type": True, "include_object": schema_objects_for(conn.dialect.name),
    })
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_match_the_models_and_are_idempotent(database_url: str) -> None:
    await migrate_async(database_url)
    await migrate_async(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    finally:
        await engine.dispose()
    assert {"api_keys", "users", "sessions", "audit_log", "outbox", "login_throttle",
            "management_tokens", "key_usage_days", "usage_batches",
            "gateway_processes"} <= tables
    assert version == "0005"


def _to(revision: str, direction: str) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)
    return run


async def test_0002_keeps_the_rows_of_0001_and_goes_back(database_url: str) -> None:
    engine = create_engine(database_url)
    issued = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to("0001", "upgrade"))
            await conn.execute(text(
                "INSERT INTO api_keys (key_id, name, secret_hash, hash_version, status, "
                "issued_at) VALUES (:k, 'old key', :h, 'p1', 'active', :t)"
            ), {"k": "00000000-0000-7000-8000-000000000001", "h": "0" * 64, "t": issued})
            await conn.execute(text(
                "INSERT INTO audit_log (at, actor, action, key_id) "
                "VALUES (:t, 'ada', 'key.issued', :k)"
            ), {"k": "00000000-0000-7000-8000-000000000001", "t": issued})
        async with engine.begin() as conn:
            await conn.run_sync(_to("head", "upgrade"))
            row = (await conn.execute(text(
                "SELECT actor, actor_type, actor_token_id, token_id, key_id FROM audit_log"
            ))).one()
            key = (await conn.execute(text(
                "SELECT name, revokes_at, replaces, replaced_by FROM api_keys"
            ))).one()
        assert tuple(row) == ("ada", "user", None, None, "00000000-0000-7000-8000-000000000001")
        assert tuple(key) == ("old key", None, None, None)
        async with engine.begin() as conn:
            await conn.run_sync(_to("0001", "downgrade"))
            assert (await conn.execute(text("SELECT actor FROM audit_log"))).scalar() == "ada"
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "management_tokens" not in tables
    finally:
        await engine.dispose()


async def test_0003_keeps_the_keys_and_goes_back(database_url: str) -> None:
    engine = create_engine(database_url)
    issued = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to("0002", "upgrade"))
            await conn.execute(text(
                "INSERT INTO api_keys (key_id, name, secret_hash, hash_version, status, "
                "issued_at) VALUES (:k, 'old key', :h, 'p1', 'active', :t)"
            ), {"k": "00000000-0000-7000-8000-000000000001", "h": "0" * 64, "t": issued})
        async with engine.begin() as conn:
            await conn.run_sync(_to("head", "upgrade"))
            key = (await conn.execute(text("SELECT name, last_used_at FROM api_keys"))).one()
        assert tuple(key) == ("old key", None)
        async with engine.begin() as conn:
            await conn.run_sync(_to("0002", "downgrade"))
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("api_keys")})
            name = (await conn.execute(text("SELECT name FROM api_keys"))).scalar()
        assert not {"key_usage_days", "usage_batches"} & tables
        assert "last_used_at" not in columns
        assert name == "old key"
    finally:
        await engine.dispose()


async def test_replicas_may_migrate_at_once(postgres_url: str) -> None:
    await asyncio.gather(*(migrate_async(postgres_url) for _ in range(3)))
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_sqlite_file_is_in_wal_mode(sqlite_url: str) -> None:
    await migrate_async(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
    finally:
        await engine.dispose()


def _rows(count: int) -> list[dict[str, object]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "key_id": f"00000000-0000-7000-8000-{i:012x}", "name": f"bulk {i}",
            "secret_hash": "0" * 64, "hash_version": "p1",
            "status": "revoked" if i % 10 == 0 else "active",
            "issued_at": start + timedelta(seconds=i),
            "revoked_at": start + timedelta(days=1, seconds=i) if i % 10 == 0 else None,
        }
        for i in range(count)
    ]


class _Explain(Executable, ClauseElement):
    """``EXPLAIN <query>``, with the query's parameters bound as usual."""

    inherit_cache = False

    def __init__(self, query: ClauseElement) -> None:
        self.query = query


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.query, **kw)


async def test_list_queries_walk_an_index_without_sorting(postgres_url: str) -> None:
    await migrate_async(postgres_url)
    engine = create_engine(postgres_url)
    deep = datetime(2026, 1, 1, 3, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(ApiKey), _rows(20_000))
            await conn.execute(text("ANALYZE api_keys"))
            plans = []
            for query in (
                active_list_query((deep, "ffffffff-0000-7000-8000-000000000000"), 51),
                revoked_list_query((deep, "00000000-0000-7000-8000-000000000000"), 51),
                active_list_query(None, 51),
            ):
                rows = (await conn.execute(_Explain(query))).scalars().all()
                plans.append("\n".join(rows))
    finally:
        await engine.dispose()
    assert "ix_api_keys_active_list" in plans[0], plans[0]
    assert "ix_api_keys_revoked_list" in plans[1], plans[1]
    assert "ix_api_keys_active_list" in plans[2], plans[2]
    for plan in plans:
        assert "Sort" not in plan, plan
        assert "Seq Scan" not in plan, plan
