"""Run Alembic migrations programmatically (``postroom migrate``) and check the schema version."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as create_sync_engine

from postroom.store.database import sync_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is interpolation syntax in Alembic's ConfigParser.
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to ``revision``; safe to run on an up-to-date database."""
    command.upgrade(alembic_config(database_url), revision)


def pending_revision(database_url: str) -> tuple[str | None, str | None]:
    """(current revision, head revision); equal when the database is up to date."""
    config = alembic_config(database_url)
    head = ScriptDirectory.from_config(config).get_current_head()
    engine = create_sync_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return current, head
