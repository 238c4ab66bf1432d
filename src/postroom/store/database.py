"""How Postroom talks to its database: one call per transaction.

Repositories write each transaction as a plain function of a synchronous SQLAlchemy
``Connection`` and hand it to :class:`Database`. On PostgreSQL the function runs on the event
loop over the async psycopg driver (``AsyncConnection.run_sync``). On SQLite it runs on the
event loop itself over the stdlib driver: aiosqlite pays a thread hop for every DBAPI call
(about 28 per claim-and-ack, ~1.3 ms for a one-row insert), and even one hop per transaction
to a thread cost 1-3 ms under load (wake-up plus GIL contention), more than the work.

SQLite is opened in WAL mode. Write transactions start with ``BEGIN IMMEDIATE`` because several
processes (API, workers) write to one file, and a deferred transaction that later needs the
write lock fails with "database is locked" instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from postroom.errors import ConfigurationError

T = TypeVar("T")
log = logging.getLogger("postroom.store")
Transaction = Connection
"""A connection inside a transaction: what work functions receive (so callers outside the
store need not import SQLAlchemy to name it)."""
Work = Callable[[Transaction], T]

_LOCK_TIMEOUT = 30.0
_FIRST_RETRY = 0.00005
_MAX_BLOCKING_RETRY = 0.001
_MAX_RETRY = 0.002


def _is_lock_error(exc: OperationalError | sqlite3.OperationalError) -> bool:
    message = str(exc.orig if isinstance(exc, OperationalError) else exc).lower()
    return "database is locked" in message or "database is busy" in message


def _parse(url: str) -> Any:
    try:
        return make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with a terse message
        raise ConfigurationError(f"POSTROOM_DATABASE_URL is not a database URL: {url!r}") from exc


def backend_name(url: str) -> str:
    backend: str = _parse(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"POSTROOM_DATABASE_URL: unsupported database {backend!r}; use sqlite or postgresql"
        )
    return backend


def is_sqlite(url: str) -> bool:
    return backend_name(url) == "sqlite"


def sync_url(url: str) -> str:
    """The URL with Postroom's synchronous driver (stdlib sqlite3, psycopg)."""
    driver = "sqlite" if is_sqlite(url) else "postgresql+psycopg"
    rendered: str = _parse(url).set(drivername=driver).render_as_string(hide_password=False)
    return rendered


class Database:
    """Runs transactions: ``await db.write(fn)`` and ``await db.read(fn)``."""

    dialect: str

    async def write(self, work: Work[T]) -> T:
        """Run ``work`` in a write transaction; commit when it returns, roll back if it raises."""
        raise NotImplementedError

    async def read(self, work: Work[T]) -> T:
        """Run ``work`` in a transaction that does not take the write lock."""
        raise NotImplementedError

    async def dispose(self) -> None:
        raise NotImplementedError

    async def ping(self) -> None:
        """Raise if the database does not answer."""
        await self.read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str, *, synchronous: str = "NORMAL") -> None:
        database = _parse(url).database
        on_disk = bool(database) and database != ":memory:"
        if on_disk:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_sync_engine(
            sync_url(url), poolclass=StaticPool, connect_args={"timeout": 0}
        )
        self._checkpoints = _Checkpointer(database) if on_disk else None
        _configure_sqlite(self.engine, synchronous, background_checkpoints=on_disk)
        self._connection: Connection | None = None

    async def write(self, work: Work[T]) -> T:
        return await self._run(work, read_only=False)

    async def read(self, work: Work[T]) -> T:
        return await self._run(work, read_only=True)

    async def _run(self, work: Work[T], *, read_only: bool) -> T:
        # The transaction runs on the event loop: it is short and CPU-bound, and a hand-off
        # to a thread cost more than the work (a wake-up plus a fight for the GIL, 1-3 ms
        # per call measured here). Nothing can interleave, since ``work`` does not await.
        # SQLite's own busy handler sleeps 1, 2, 5 … 100 ms between lock attempts, putting
        # tens of milliseconds on a send whenever the API and a worker process write at
        # once; lock conflicts are retried here instead. The holder of the lock is another
        # process's transaction of 50-100 µs, so the first retries wait in place, 50 µs
        # growing to 0.8 ms (1.5 ms in all): an ``asyncio.sleep`` that short lasts a whole
        # millisecond or more (timer granularity), which was most of a send's lock waits. Past
        # that, retries sleep without blocking the loop. Rerunning ``work`` is safe: it touches
        # nothing but the database.
        delay = _FIRST_RETRY
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                return self._attempt(work, read_only)
            except (OperationalError, sqlite3.OperationalError) as exc:
                if not _is_lock_error(exc) or time.monotonic() + delay > deadline:
                    raise
            if delay < _MAX_BLOCKING_RETRY:
                time.sleep(delay)  # noqa: ASYNC251 - shorter than the loop's timers can wait
            else:
                await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY)

    def _attempt(self, work: Work[T], read_only: bool) -> T:
        # The transaction is begun and ended on the driver: SQLAlchemy's begin/commit
        # machinery cost ~0.2 ms per transaction, more than a whole claim. Core statements in
        # ``work`` autobegin SQLAlchemy's own view of it (its do_begin emits nothing on
        # SQLite), and its commit or rollback ends the driver's transaction.
        conn = self._connection
        if conn is None or conn.closed:
            conn = self._connection = self.engine.connect()
        driver = conn.connection.dbapi_connection
        assert driver is not None
        driver.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except BaseException:
            if conn.in_transaction():
                conn.rollback()
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            raise
        if conn.in_transaction():
            conn.commit()
        if driver.in_transaction:
            driver.execute("COMMIT")
        return result

    async def dispose(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self.engine.dispose()
        if self._checkpoints is not None:
            await asyncio.to_thread(self._checkpoints.stop)


class _Checkpointer:
    """Copies the WAL into the database file from a thread of its own.

    SQLite's automatic checkpoint runs inside whichever commit crosses 1,000 WAL pages and
    fsyncs the database file there: a 5-10 ms stall on that commit, on the event loop, every
    few hundred commits (measured here), which is most of a transactional send's p99. With
    automatic checkpoints off, this thread runs a PASSIVE checkpoint every ``interval``
    seconds; PASSIVE never blocks writers or readers, and the fsync releases the GIL.
    """

    def __init__(self, path: str, interval: float = 0.2) -> None:
        self._path = path
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                stopping = self._stopping.wait(self._interval)
                try:
                    if connection is None:
                        connection = sqlite3.connect(self._path, timeout=0, isolation_level=None)
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy, or no database yet: next round
                    log.debug("WAL checkpoint skipped: %s", exc)
                if stopping:
                    return
        finally:
            if connection is not None:
                connection.close()

    def stop(self) -> None:
        """Run a last checkpoint and end the thread."""
        self._stopping.set()
        self._thread.join()


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        # psycopg 3 serves both the async engine here and Alembic's sync one.
        self.engine: AsyncEngine = create_async_engine(sync_url(url), pool_pre_ping=True)

    async def write(self, work: Work[T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    async def read(self, work: Work[T]) -> T:
        return await self.write(work)

    async def dispose(self) -> None:
        await self.engine.dispose()


def open_database(url: str, *, synchronous: str = "NORMAL") -> Database:
    if is_sqlite(url):
        return SqliteDatabase(url, synchronous=synchronous)
    return PostgresDatabase(url)


def _configure_sqlite(engine: Engine, synchronous: str, *, background_checkpoints: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SqliteDatabase._attempt, not the driver, open transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        # No waiting inside SQLite: SqliteDatabase._run retries lock conflicts itself.
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.execute("PRAGMA foreign_keys=ON")
        if background_checkpoints:  # see _Checkpointer
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()
