"""The suppression list keyed by address hash: the send-time check, removal with a recorded
reason, erased entries, keyset pages, and migration 0004 re-keying existing entries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.command import downgrade
from sqlalchemy import create_engine, text
from tests.conftest import fresh_postgres_database

from postroom.store.database import open_database, sync_url
from postroom.store.migrate import alembic_config, upgrade
from postroom.store.suppressions import (
    Suppressions,
    SuppressionScope,
    _read_cursor,
    address_hash,
)
from postroom.wiring import Postroom


async def test_entries_are_keyed_by_hash_and_checked_case_insensitively(
    postroom: Postroom,
) -> None:
    s = postroom.suppressions
    await s.add("Gone@Example.com", SuppressionScope.ALL, "hard_bounce", "550 5.1.1")
    await s.add("fan@example.com", SuppressionScope.MARKETING, "complaint")
    [entry] = await s.get("gone@example.com")
    assert entry.address_hash == address_hash("GONE@example.com") and len(entry.address_hash) == 64
    assert entry.email == "gone@example.com" and entry.reason == "hard_bounce"
    emails = ["GONE@example.com", "fan@example.com", "ok@example.com"]
    assert await s.blocked(emails, marketing=True) == {"gone@example.com", "fan@example.com"}
    assert await s.blocked(emails, marketing=False) == {"gone@example.com"}


async def test_removal_is_recorded_and_an_erased_entry_needs_force(postroom: Postroom) -> None:
    s = postroom.suppressions
    await s.add("a@example.com", SuppressionScope.MARKETING, "unsubscribe")
    assert await s.remove("A@example.com", reason="asked to resubscribe by phone") == 1
    assert await s.blocked(["a@example.com"], marketing=True) == set()
    [removal] = await s.removals("a@example.com")
    assert removal["suppressed_reason"] == "unsubscribe"
    assert removal["reason"] == "asked to resubscribe by phone"

    await postroom.db.write(lambda conn: s.erase_within(conn, "b@example.com"))
    [erased] = await s.get("b@example.com")
    assert erased.email is None and erased.reason == "erased"
    assert await s.blocked(["b@example.com"], marketing=False) == {"b@example.com"}
    assert await s.remove("b@example.com", reason="oops") == 0
    assert await s.blocked(["b@example.com"], marketing=False) == {"b@example.com"}
    assert await s.remove("b@example.com", reason="re-subscribed in person", force=True) == 1


async def test_pages_follow_the_key_with_a_cursor(postroom: Postroom) -> None:
    s = postroom.suppressions
    for i in range(7):
        await s.add(f"r{i}@example.com", SuppressionScope.ALL, "hard_bounce")
        await s.add(f"r{i}@example.com", SuppressionScope.MARKETING, "complaint")
    seen = []
    cursor = None
    while True:
        page = await s.page(limit=4, cursor=cursor)
        seen += [(e.address_hash, e.scope) for e in page.entries]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert len(seen) == 14 and seen == sorted(seen) and len(set(seen)) == 14
    marketing = await s.page(scope=SuppressionScope.MARKETING, limit=100)
    assert len(marketing.entries) == 7 and marketing.cursor is None
    with pytest.raises(ValueError):
        _read_cursor("bm90LWEtY3Vyc29y")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    with fresh_postgres_database() as url:
        yield url


async def test_migration_0004_rekeys_existing_entries_and_reverts(empty_database: str) -> None:
    url = empty_database
    upgrade(url, "0003")
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO suppressions (email, scope, reason, created_at) "
                "VALUES ('old@example.com', 'all', 'hard_bounce', '2026-01-01 00:00:00')"
            )
        )
    upgrade(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT address_hash, email FROM suppressions")).one()
    assert tuple(row) == (address_hash("old@example.com"), "old@example.com")
    db = open_database(url)
    try:  # on SQLite through the driver fast path
        blocked = await Suppressions(db).blocked(["OLD@example.com"], marketing=False)
    finally:
        await db.dispose()
    assert blocked == {"old@example.com"}

    downgrade(alembic_config(url), "0003")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT email, scope FROM suppressions")).all() == [
            ("old@example.com", "all")
        ]
    engine.dispose()
    upgrade(url)
