"""webhook events' dedupe keys stored as 16 bytes instead of 64 hex characters

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

``events.dedupe_key`` and ``events.event_key`` each sit in a unique index at a random
position; as hex text they made the indexes three times the size and each insert about 20 µs
dearer on SQLite. Both become the first 16 bytes of the SHA-256 they held, so an event stored
before the upgrade is still recognised when its ESP sends it again after.

Downgrading writes the 16 bytes back as 32 hex characters: the earlier code's 64-character
keys no longer match them, so an event stored before the downgrade and sent again after it
would be stored twice.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_KEYS = ("dedupe_key", "event_key")


def _short_key(value: str | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return bytes.fromhex(value[:32])


def _hex_key(value: str | bytes | None) -> str | None:
    return value.hex() if isinstance(value, bytes) else value


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for key in _KEYS:
            op.alter_column(
                "events",
                key,
                type_=sa.LargeBinary(16),
                postgresql_using=f"decode(substr({key}, 1, 32), 'hex')",
            )
        return
    _convert_sqlite(_short_key)
    with op.batch_alter_table("events") as batch:
        for key in _KEYS:
            batch.alter_column(key, type_=sa.LargeBinary(16), existing_type=sa.String(64))


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for key in _KEYS:
            op.alter_column(
                "events", key, type_=sa.String(64), postgresql_using=f"encode({key}, 'hex')"
            )
        return
    _convert_sqlite(_hex_key)
    with op.batch_alter_table("events") as batch:
        for key in _KEYS:
            batch.alter_column(key, type_=sa.String(64), existing_type=sa.LargeBinary(16))


def _convert_sqlite(function: object) -> None:
    """Rewrite both keys in place with ``function`` (SQLite 3.40 has no ``unhex``); SQLite
    keeps a value's own type whatever the column declares, so the table copy that changes
    the declared type then carries the converted values over as they are."""
    driver = op.get_bind().connection.driver_connection
    driver.create_function("postroom_key", 1, function, deterministic=True)  # type: ignore[union-attr]
    op.execute(
        "UPDATE events SET dedupe_key = postroom_key(dedupe_key), "
        "event_key = postroom_key(event_key)"
    )
