"""Indexes for searching the key list (``GET /api/v1/keys?q=``), on PostgreSQL.

A key ID prefix is served by a ``varchar_pattern_ops`` index (left-anchored matches, whatever
the database's collation). A name fragment is served by a trigram GIN index when the pg_trgm
extension is there or can be made (it is a trusted extension: a database owner may create it);
without it the search still works, walking the list index. On SQLite nothing is made: no index
can serve a name fragment there, so the search walks the list index (docs/api.md).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("key_service")


def _trigrams(bind: sa.Connection) -> bool:
    """True when pg_trgm is installed in this database, after installing it if it can be."""
    installed = "SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'"
    if bind.execute(sa.text(installed)).scalar() is not None:
        return True
    available = "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'"
    if bind.execute(sa.text(available)).scalar() is None:
        log.warning("pg_trgm is not available: key names are searched without an index")
        return False
    try:
        with bind.begin_nested():  # a refusal must not abort the migration's transaction
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("pg_trgm could not be created (%s): key names are searched without an "
                    "index", type(exc.orig).__name__)
        return False
    return True


def upgrade() -> None:
    """The key ID prefix index, and the names' trigram index where pg_trgm can be had."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.create_index("ix_api_keys_key_id_prefix", "api_keys", ["key_id"],
                    postgresql_ops={"key_id": "varchar_pattern_ops"})
    if _trigrams(bind):
        # A short pending list: every search reads all of it (models.GIN_PENDING_KB).
        op.create_index("ix_api_keys_name_trgm", "api_keys", ["name"], postgresql_using="gin",
                        postgresql_ops={"name": "gin_trgm_ops"},
                        postgresql_with={"gin_pending_list_limit": 128})


def downgrade() -> None:
    """Drop the search indexes (pg_trgm stays: other things may use it)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_api_keys_name_trgm")
    op.drop_index("ix_api_keys_key_id_prefix", table_name="api_keys")
