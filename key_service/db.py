"""Engines, sessions and migrations for SQLite (the embedded default) and PostgreSQL.

SQLite transactions start with ``BEGIN IMMEDIATE`` unless a session asks for a read-only one
(``read_session``): a deferred transaction that reads and later writes cannot wait for the write
lock (SQLite answers "database is locked" at once to avoid a deadlock), whereas an immediate one
takes the lock up front and so queues behind other writers for up to the busy timeout.
``write_session`` also queues a process's own SQLite writers on an asyncio lock: SQLite's busy
handler sleeps up to 100 ms between tries, so writers that contend inside SQLite are many times
slower than writers that simply take turns.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = [
    "READ_ONLY",
    "create_engine",
    "is_sqlite",
    "make_sessionmaker",
    "migrate",
    "migrate_async",
    "read_session",
    "write_connection",
    "write_session",
]

if TYPE_CHECKING:
    from alembic.config import Config

# Execution option that makes a SQLite transaction a plain deferred BEGIN (reads only).
READ_ONLY = "key_service_read_only"
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant will do: it only has to be the same in every key_service process.
_MIGRATION_LOCK = 0x6B65797376630001


def is_sqlite(url: str) -> bool:
    """True for the embedded SQLite backend."""
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; a busy timeout queues writers instead of
    # failing them; foreign keys are off by default in SQLite.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Stop the driver from issuing its own deferred BEGIN; _sqlite_begin issues ours.
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# SQLSTATEs that say the server is going away or cannot take writes now (a crash, a restart, a
# failover: docs/scaling.md), rather than that a statement is wrong: connection exceptions
# (08...), operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot
# connect now, 57P04 database dropped) and 25006, a write sent to a standby.
_UNAVAILABLE_STATES = ("08", "57P", "25006")


def _is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (a driver error, or SQLAlchemy's adaptation of one) means "database
    away", not "bug"."""
    for error in (exc, exc.__cause__):
        if isinstance(error, (OSError, TimeoutError, asyncpg.exceptions.ConnectionDoesNotExistError,
                              asyncpg.exceptions.TargetServerAttributeNotMatched)):
            return True
        if str(getattr(error, "sqlstate", None) or "").startswith(_UNAVAILABLE_STATES):
            return True
    return False


def _translate_connect_errors(
    dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any],
) -> Any:
    # asyncpg raises plain OSError / TimeoutError when the server cannot be reached (and,
    # given several hosts, TargetServerAttributeNotMatched when none takes writes), and
    # SQLAlchemy passes those through untranslated. As DBAPI errors they become
    # sqlalchemy.exc.OperationalError, so every caller handles "database away" as one
    # SQLAlchemyError, whichever step (connect or query) it happened at.
    try:
        return dialect.connect(*cargs, **cparams)
    except Exception as exc:
        if not _is_unavailable(exc):
            raise
        raise dialect.loaded_dbapi.OperationalError(
            f"cannot connect to the database: {type(exc).__name__}", exc
        ) from exc


def _translate_unavailable(context: ExceptionContext) -> BaseException | None:
    # A statement cut short by a dying server (asyncpg: AdminShutdownError, a closed
    # connection, a write refused by a server that became a standby) arrives as a generic
    # DBAPIError, which the API would answer with a 500. It is OperationalError (503, "try
    # again") like every other "database away", and its connection is dropped from the pool.
    if isinstance(context.sqlalchemy_exception, OperationalError):
        return None
    if not (context.is_disconnect or _is_unavailable(context.original_exception)):
        return None
    context.is_disconnect = True
    return OperationalError(
        context.statement, context.parameters, context.original_exception,
        hide_parameters=True, connection_invalidated=True,
    )


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for ``url``; SQLite files get their directory, WAL and immediate writes."""
    # hide_parameters: an error message must never carry a bound secret hash into a log line.
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 10}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
        hide_parameters=True, connect_args={"timeout": 10, "command_timeout": 30},
    )
    event.listen(engine.sync_engine, "do_connect", _translate_connect_errors)
    event.listen(engine.sync_engine, "handle_error", _translate_unavailable)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (no surprise lazy loads)."""
    return async_sessionmaker(engine, expire_on_commit=False)


_write_locks: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


def _write_lock(engine: object) -> asyncio.Lock | None:
    if isinstance(engine, AsyncEngine) and engine.dialect.name == "sqlite":
        return _write_locks.setdefault(engine, asyncio.Lock())
    return None


@asynccontextmanager
async def write_session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session in a write transaction, committed at the end (rolled back on error)."""
    lock = _write_lock(sessionmaker.kw.get("bind"))
    if lock is not None:
        async with lock, sessionmaker() as session, session.begin():
            yield session
        return
    async with sessionmaker() as session, session.begin():
        yield session


@asynccontextmanager
async def write_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()`` that, on SQLite, takes turns with this process's other writers."""
    lock = _write_lock(engine)
    if lock is not None:
        async with lock, engine.begin() as conn:
            yield conn
        return
    async with engine.begin() as conn:
        yield conn


@asynccontextmanager
async def read_session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session for reads only: on SQLite it does not take the write lock."""
    async with sessionmaker() as session:
        await session.connection(execution_options={READ_ONLY: True})
        yield session


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas starting together migrate one after the other, not on top of each other.
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    # Imported here: Alembic is only needed when migrating, and is slow to import.
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


async def migrate_async(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (idempotent, safe to run concurrently)."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
    finally:
        await engine.dispose()


def migrate(url: str) -> None:
    """Synchronous ``migrate_async`` for the command line."""
    asyncio.run(migrate_async(url))
