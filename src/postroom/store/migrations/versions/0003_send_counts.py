"""send counts: per-day counters for daily caps (warm-up)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "send_counts",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("counter", sa.String(length=100), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "counter", name=op.f("pk_send_counts")),
    )


def downgrade() -> None:
    op.drop_table("send_counts")
