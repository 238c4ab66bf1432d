"""webhook feedback: per-send feedback state, one-use webhook tokens, events.event_key

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "send_feedback",
        sa.Column("send_id", sa.String(length=26), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("send_created_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["send_id"],
            ["sends.id"],
            name=op.f("fk_send_feedback_send_id_sends"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("send_id", name=op.f("pk_send_feedback")),
    )
    with op.batch_alter_table("send_feedback", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_send_feedback_recipient_send_created_at"),
            ["recipient", "send_created_at"],
            unique=False,
        )

    op.create_table(
        "webhook_tokens",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_webhook_tokens")),
    )
    with op.batch_alter_table("webhook_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_tokens_expires_at"), ["expires_at"], unique=False
        )

    # A nullable column: SQLite adds it in place, no table rebuild.
    op.add_column("events", sa.Column("event_key", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_events_event_key"), "events", ["event_key"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_events_event_key"), table_name="events")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("event_key")
    with op.batch_alter_table("webhook_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_tokens_expires_at"))
    op.drop_table("webhook_tokens")
    with op.batch_alter_table("send_feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_send_feedback_recipient_send_created_at"))
    op.drop_table("send_feedback")
