"""Run Alembic migrations programmatically (``postroom migrate``) and check the schema version."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from postroom.errors import ConfigurationError
from postroom.store.database import is_sqlite, sync_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is interpolation syntax in Alembic's ConfigParser.
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return config


@contextlib.contextmanager
def _reachable(database_url: str) -> Iterator[None]:
    """A database that cannot be opened is a configuration problem: say so in one line."""
    try:
        yield
    except DBAPIError as exc:
        shown = make_url(sync_url(database_url)).render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigurationError(f"cannot use the database {shown}: {reason}") from exc


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to ``revision``; safe to run on an up-to-date database."""
    with _migration_lock(database_url), _reachable(database_url):
        command.upgrade(alembic_config(database_url), revision)


@contextlib.contextmanager
def _migration_lock(database_url: str) -> Iterator[None]:
    """One migration at a time per SQLite file: every process of the embedded default
    migrates at start, and two starting together would both create the first tables. (On
    PostgreSQL ``postroom migrate`` runs once per release, by the operator.)"""
    path = make_url(sync_url(database_url)).database if is_sqlite(database_url) else None
    if not path or path == ":memory:":
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def pending_revision(database_url: str) -> tuple[str | None, str | None]:
    """(current revision, head revision); equal when the database is up to date."""
    config = alembic_config(database_url)
    head = ScriptDirectory.from_config(config).get_current_head()
    engine = create_sync_engine(sync_url(database_url))
    try:
        with _reachable(database_url), engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return current, head
