"""audience: subscribers, lists, subscriptions, consent; suppressions keyed by address hash

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Must stay equal to postroom.store.suppressions.address_hash (copied so that this migration
# computes the same key whatever later code does).
_HASH_PREFIX = b"postroom-suppression-v1\x00"


def _address_hash(email: str) -> str:
    return hashlib.sha256(_HASH_PREFIX + email.lower().encode()).hexdigest()


def _id_column() -> sa.Column[int]:
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def upgrade() -> None:
    with op.batch_alter_table("suppressions") as batch:
        batch.add_column(sa.Column("address_hash", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    emails = conn.execute(sa.text("SELECT DISTINCT email FROM suppressions")).scalars().all()
    for email in emails:
        conn.execute(
            sa.text("UPDATE suppressions SET address_hash = :h WHERE email = :e"),
            {"h": _address_hash(email), "e": email},
        )
    with op.batch_alter_table("suppressions", recreate="always") as batch:
        batch.drop_constraint("pk_suppressions", type_="primary")
        batch.alter_column("address_hash", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("email", existing_type=sa.String(length=320), nullable=True)
        batch.create_primary_key("pk_suppressions", ["address_hash", "scope"])

    op.create_table(
        "suppression_removals",
        _id_column(),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("suppressed_reason", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("removed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppression_removals")),
    )
    op.create_index(
        op.f("ix_suppression_removals_address_hash"), "suppression_removals", ["address_hash"]
    )
    op.create_table(
        "subscribers",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscribers")),
        sa.UniqueConstraint("email", name=op.f("uq_subscribers_email")),
    )
    op.create_table(
        "lists",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("creator", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lists")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("list_id", sa.String(length=64), nullable=False),
        sa.Column("subscriber_id", sa.String(length=26), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("consent", sa.String(length=16), nullable=False),
        sa.Column("consent_expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(), nullable=True),
        sa.Column("unsubscribed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["lists.id"],
            name=op.f("fk_subscriptions_list_id_lists"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_subscriptions_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("list_id", "subscriber_id", name=op.f("pk_subscriptions")),
    )
    op.create_index(
        op.f("ix_subscriptions_list_id_status_subscriber_id"),
        "subscriptions",
        ["list_id", "status", "subscriber_id"],
    )
    op.create_index(op.f("ix_subscriptions_subscriber_id"), "subscriptions", ["subscriber_id"])
    op.create_table(
        "consent_records",
        _id_column(),
        sa.Column("subscriber_id", sa.String(length=26), nullable=False),
        sa.Column("list_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("consented_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_consent_records_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["lists.id"],
            name=op.f("fk_consent_records_list_id_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_records")),
        sa.UniqueConstraint(
            "subscriber_id",
            "list_id",
            "kind",
            "source",
            "consented_at",
            name=op.f("uq_consent_records_subscriber_id_list_id_kind_source_consented_at"),
        ),
    )


def downgrade() -> None:
    op.drop_table("consent_records")
    op.drop_table("subscriptions")
    op.drop_table("lists")
    op.drop_table("subscribers")
    op.drop_table("suppression_removals")
    op.execute("DELETE FROM suppressions WHERE email IS NULL")  # erased: no address to restore
    with op.batch_alter_table("suppressions", recreate="always") as batch:
        batch.drop_constraint("pk_suppressions", type_="primary")
        batch.alter_column("email", existing_type=sa.String(length=320), nullable=False)
        batch.create_primary_key("pk_suppressions", ["email", "scope"])
        batch.drop_column("address_hash")
