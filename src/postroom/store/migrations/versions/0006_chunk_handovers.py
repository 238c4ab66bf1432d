"""a campaign chunk's hand-over is recorded on the chunk, not on each recipient

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

``campaign_chunks.handovers`` counts the chunk's hand-overs and ``sending_since`` marks one in
progress (cleared when its outcomes are recorded). Recipients no longer pass through
``sending``: rows left so by a hand-over in progress when the database is upgraded go back to
``pending`` and their chunk is marked in its place, so the in-doubt rule sees them the same;
each chunk's count starts at its recipients' highest ``attempts``.

``campaign_recipients`` loses its foreign key: checking it cost a trigger per snapshot row
(about half of a million-row snapshot on PostgreSQL), and a campaign's rows are only ever
written for a campaign that exists and never deleted with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_IN_FLIGHT = (
    "FROM campaign_recipients r WHERE r.campaign_id = campaign_chunks.campaign_id "
    "AND r.position >= campaign_chunks.first_position "
    "AND r.position < campaign_chunks.first_position + campaign_chunks.size "
    "AND r.status = 'sending'"
)


def upgrade() -> None:
    with op.batch_alter_table("campaign_chunks") as batch:
        batch.add_column(sa.Column("handovers", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("sending_since", sa.Float(), nullable=True))
    sending_since = f"SELECT max(coalesce(r.updated_at, 0)) {_IN_FLIGHT}"
    moved = f"UPDATE campaign_chunks SET sending_since = ({sending_since}) "  # noqa: S608
    op.execute(f"{moved} WHERE EXISTS (SELECT 1 {_IN_FLIGHT})")
    # Hand-overs are numbered past every attempt a recipient of the chunk has had.
    op.execute(
        "UPDATE campaign_chunks SET handovers = coalesce((SELECT max(r.attempts) "
        "FROM campaign_recipients r WHERE r.campaign_id = campaign_chunks.campaign_id "
        "AND r.position >= campaign_chunks.first_position "
        "AND r.position < campaign_chunks.first_position + campaign_chunks.size), 0)"
    )
    op.execute("UPDATE campaign_recipients SET status = 'pending' WHERE status = 'sending'")
    with op.batch_alter_table("campaign_recipients") as batch:
        batch.drop_constraint("fk_campaign_recipients_campaign_id_campaigns", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("campaign_recipients") as batch:
        batch.create_foreign_key(
            "fk_campaign_recipients_campaign_id_campaigns",
            "campaigns",
            ["campaign_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.execute(
        "UPDATE campaign_recipients SET status = 'sending' WHERE status = 'pending' AND "
        "EXISTS (SELECT 1 FROM campaign_chunks c WHERE c.campaign_id = "
        "campaign_recipients.campaign_id AND c.sending_since IS NOT NULL AND "
        "campaign_recipients.position >= c.first_position AND "
        "campaign_recipients.position < c.first_position + c.size)"
    )
    with op.batch_alter_table("campaign_chunks") as batch:
        batch.drop_column("sending_since")
        batch.drop_column("handovers")
