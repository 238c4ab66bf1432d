"""Engines and connection settings per database.

SQLite is opened in WAL mode with ``BEGIN IMMEDIATE`` transactions: several processes (API,
workers) write to the same file, and a deferred transaction that later upgrades to a write
lock fails with "database is locked" instead of waiting for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from postroom.errors import ConfigurationError

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


def async_url(url: str) -> str:
    """Normalize a database URL to its async driver (``sqlite://`` → ``sqlite+aiosqlite://``)."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with a terse message
        raise ConfigurationError(f"POSTROOM_DATABASE_URL is not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ConfigurationError(
            f"POSTROOM_DATABASE_URL: unsupported database {backend!r}; use sqlite or postgresql"
        )
    return parsed.set(drivername=_ASYNC_DRIVERS[backend]).render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The same database through a synchronous driver (for Alembic)."""
    parsed = make_url(async_url(url))
    driver = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, synchronous: str = "NORMAL") -> AsyncEngine:
    """An async engine for ``url`` with Postroom's connection settings."""
    url = async_url(url)
    if not is_sqlite(url):
        return create_async_engine(url, pool_pre_ping=True)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})
    _configure_sqlite(engine, synchronous)
    return engine


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below, not the driver, open transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
