"""The initial schema: users, sessions, login throttle, keys, audit log and outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets 64-bit integers.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    # Naive UTC on every backend (models.UTCDateTime converts at the boundary).
    return sa.Column(name, sa.DateTime(), nullable=nullable)


def upgrade() -> None:
    """Create every table and index of models.py."""
    op.create_table(
        "users",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("user_id", _BIG_ID, nullable=False),
        sa.Column("csrf_hash", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_table(
        "login_throttle",
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        _ts("window_start"),
        sa.PrimaryKeyConstraint("scope", "subject"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(400), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("hash_version", sa.String(16), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        _ts("issued_at"),
        _ts("revoked_at", nullable=True),
        sa.Column("issued_by", _BIG_ID, nullable=True),
        sa.Column("revoked_by", _BIG_ID, nullable=True),
        sa.ForeignKeyConstraint(["issued_by"], ["users.id"]),
        sa.ForeignKeyConstraint(["revoked_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index("ix_api_keys_active_list", "api_keys", ["status", "issued_at", "key_id"])
    op.create_index("ix_api_keys_revoked_list", "api_keys", ["status", "revoked_at", "key_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        _ts("at"),
        sa.Column("actor_id", _BIG_ID, nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_key_id", "audit_log", ["key_id"])
    op.create_table(
        "outbox",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("signature", sa.String(128), nullable=True),
        sa.Column("signing_key", sa.String(32), nullable=True),
        _ts("sent_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
        sa.UniqueConstraint("sequence"),
    )
    op.create_index("ix_outbox_key_id", "outbox", ["key_id"])
    op.create_index("ix_outbox_unsent", "outbox", ["sent_at", "sequence"])


def downgrade() -> None:
    """Drop every table (dependants first)."""
    for table in ("outbox", "audit_log", "api_keys", "login_throttle", "sessions", "users"):
        op.drop_table(table)
