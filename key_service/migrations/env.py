"""Alembic environment: runs on the connection ``key_service.db.migrate_async`` hands over.

Run standalone (``alembic -x url=...``), it makes its own async engine and drives the migration
through ``run_sync``, so the same async drivers (aiosqlite, asyncpg) serve both ways.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from key_service.db import create_engine
from key_service.models import Base, schema_objects_for

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=schema_objects_for(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the database as: alembic -x url=<SQLAlchemy URL> ...")
    asyncio.run(_run_standalone(url))


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) mode is not supported; run against a database")
_main()
