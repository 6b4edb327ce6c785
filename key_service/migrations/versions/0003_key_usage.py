"""Key usage: each key's last use, requests per key per UTC day, and usage reports taken in.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add api_keys.last_used_at, key_usage_days and usage_batches."""
    # Naive UTC on every backend (models.UTCDateTime converts at the boundary).
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(), nullable=True))
    op.create_table(
        "key_usage_days",
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "day"),
    )
    op.create_index("ix_key_usage_days_day", "key_usage_days", ["day"])
    op.create_table(
        "usage_batches",
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.create_index("ix_usage_batches_received_at", "usage_batches", ["received_at"])


def downgrade() -> None:
    """Back to 0002: usage is forgotten."""
    op.drop_index("ix_usage_batches_received_at", table_name="usage_batches")
    op.drop_table("usage_batches")
    op.drop_index("ix_key_usage_days_day", table_name="key_usage_days")
    op.drop_table("key_usage_days")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
