"""The embedded database copies its WAL into the database file from a background thread,
never inside a commit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sqlalchemy import text

from postroom.store.database import SqliteDatabase


async def test_commits_do_not_checkpoint_and_the_background_thread_does(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    db = SqliteDatabase(f"sqlite:///{path}")
    try:
        autocheckpoint = await db.read(
            lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
        )
        assert autocheckpoint == 0

        def fill(conn: object) -> None:
            conn.execute(text("CREATE TABLE blobs (body BLOB)"))  # type: ignore[attr-defined]
            for _ in range(300):
                conn.execute(text("INSERT INTO blobs VALUES (:b)"), {"b": os.urandom(4096)})  # type: ignore[attr-defined]

        await db.write(fill)
        # Only a checkpoint moves pages from the WAL into the database file.
        for _ in range(100):
            if path.stat().st_size > 300 * 4096:
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size > 300 * 4096
    finally:
        await db.dispose()
