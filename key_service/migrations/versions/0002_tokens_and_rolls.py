"""Management tokens, rolled keys, and audit rows whose actor may be a token.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    # Naive UTC on every backend (models.UTCDateTime converts at the boundary).
    return sa.Column(name, sa.DateTime(), nullable=nullable)


def upgrade() -> None:
    """Add the roll columns, the management_tokens table, and the token-aware audit columns."""
    op.add_column("api_keys", _ts("revokes_at", nullable=True))
    op.add_column("api_keys", sa.Column("replaces", sa.String(36), nullable=True))
    op.add_column("api_keys", sa.Column("replaced_by", sa.String(36), nullable=True))
    op.create_index("ix_api_keys_revokes_at", "api_keys", ["revokes_at"])
    op.create_table(
        "management_tokens",
        sa.Column("token_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(400), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("hash_version", sa.String(16), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        sa.Column("created_by", _BIG_ID, nullable=True),
        sa.Column("revoked_by", _BIG_ID, nullable=True),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"]),
        sa.ForeignKeyConstraint(["revoked_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("token_id"),
    )
    # SQLite cannot alter a column in place: batch mode rebuilds the table (indexes included).
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("actor", existing_type=sa.String(64), type_=sa.String(400),
                           existing_nullable=False)
        batch.add_column(sa.Column("actor_type", sa.String(8), nullable=False,
                                   server_default="user"))
        batch.add_column(sa.Column("actor_token_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("token_id", sa.String(36), nullable=True))
        batch.alter_column("key_id", existing_type=sa.String(36), nullable=True)


def downgrade() -> None:
    """Back to 0001; audit rows about tokens (they have no key) go with the tokens."""
    op.execute("DELETE FROM audit_log WHERE key_id IS NULL")
    op.execute("UPDATE audit_log SET actor = substr(actor, 1, 64)")
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("key_id", existing_type=sa.String(36), nullable=False)
        batch.drop_column("token_id")
        batch.drop_column("actor_token_id")
        batch.drop_column("actor_type")
        batch.alter_column("actor", existing_type=sa.String(400), type_=sa.String(64),
                           existing_nullable=False)
    op.drop_table("management_tokens")
    op.drop_index("ix_api_keys_revokes_at", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("replaced_by")
        batch.drop_column("replaces")
        batch.drop_column("revokes_at")
