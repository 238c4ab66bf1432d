"""The stdlib-driver helpers store times exactly as SQLAlchemy's SQLite DATETIME does, so
rows written either way compare and sort alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Column, DateTime, MetaData, Table, create_engine, insert, select, text

from postroom.store.sqlite_driver import loaded_time, stored_time

TIMES = [
    datetime(2026, 11, 28, 14, 41, 44, 581586, tzinfo=UTC),
    datetime(2026, 11, 28, 14, 41, 44, tzinfo=UTC),  # no microseconds: still six digits
    datetime(2026, 11, 28, 19, 41, 44, 5, tzinfo=timezone(timedelta(hours=5))),
    datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Paris")),
    datetime(1, 1, 1, tzinfo=UTC),
]


@pytest.mark.parametrize("when", TIMES, ids=str)
def test_a_time_is_stored_as_sqlalchemy_stores_it(when: datetime) -> None:
    table = Table("t", MetaData(), Column("at", DateTime()))
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        table.create(conn)
        naive_utc = when.astimezone(UTC).replace(tzinfo=None)
        conn.execute(insert(table), {"at": naive_utc})
        stored = conn.execute(text("SELECT at FROM t")).scalar_one()
        assert conn.execute(select(table.c.at)).scalar_one() == naive_utc
    assert stored_time(when) == stored
    assert loaded_time(stored) == when


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        stored_time(datetime(2026, 11, 28, 14, 0))
