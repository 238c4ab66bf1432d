"""``postroom migrate`` on PostgreSQL: an empty database, and one at the first revision with
data in it, both end at the head revision with nothing lost."""

from __future__ import annotations

import psycopg
from alembic.script import ScriptDirectory
from tests.conftest import fresh_postgres_database

from postroom.store.migrate import alembic_config, pending_revision, upgrade

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def test_empty_database_migrates_to_head() -> None:
    with fresh_postgres_database() as url:
        upgrade(url)
        assert pending_revision(url) == (HEAD, HEAD)


def test_previous_version_with_data_migrates_to_head_keeping_it() -> None:
    with fresh_postgres_database() as url:
        upgrade(url, "0001")
        assert pending_revision(url) == ("0001", HEAD)
        with psycopg.connect(plain(url)) as conn:
            conn.execute(
                "INSERT INTO sends (id, idempotency_key, recipient, email_type, priority, "
                "status, attempts, document, content_hash, created_at, updated_at) VALUES "
                "('01JX0000000000000000000000', 'k', 'a@example.com', 'welcome', "
                "'transactional', 'sent', 1, '{}', 'h', now(), now())"
            )
            conn.execute(
                "INSERT INTO suppressions (email, scope, reason, created_at) "
                "VALUES ('gone@example.com', 'all', 'hard_bounce', now())"
            )
        upgrade(url)
        assert pending_revision(url) == (HEAD, HEAD)
        with psycopg.connect(plain(url)) as conn:
            sends = conn.execute("SELECT recipient, status FROM sends").fetchall()
            suppressed = conn.execute("SELECT count(*) FROM suppressions").fetchone()
        assert sends == [("a@example.com", "sent")]
        assert suppressed == (1,)
