"""Gateway processes and their heartbeats, for revocation receipts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the gateway_processes table."""
    op.create_table(
        "gateway_processes",
        sa.Column("instance_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        # Naive UTC on every backend (models.UTCDateTime converts at the boundary).
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("applied_sequence", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("instance_id"),
    )
    op.create_index("ix_gateway_processes_seen_at", "gateway_processes", ["seen_at"])


def downgrade() -> None:
    """Back to 0002."""
    op.drop_index("ix_gateway_processes_seen_at", table_name="gateway_processes")
    op.drop_table("gateway_processes")
