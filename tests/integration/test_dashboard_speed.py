"""How long the overview takes on a ledger of a million sends (outside the default suite:
seeding takes a minute or two). Run with

    .venv/bin/python -m pytest tests/integration/test_dashboard_speed.py -m long -s

It prints the median time of ``GET /admin`` (rates of the last 24 hours) and
``GET /admin?span=7d`` (rates of the last 7 days, which reads every send of the week). The
figures in docs/architecture.md ("Dashboard") come from this test.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import fresh_postgres_database, make_settings
from tests.dashboard_data import seed_ledger

from postroom.api.app import create_app
from postroom.config import Settings
from postroom.store import migrate
from postroom.wiring import Postroom

pytestmark = pytest.mark.long
LEDGER_ROWS = 1_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
def big_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield make_settings(tmp_path)
        return
    with fresh_postgres_database() as url:
        migrate.upgrade(url)
        yield make_settings(tmp_path, database_url=url)


def median_seconds(client: TestClient, path: str, runs: int = 5) -> float:
    client.get(path)  # warm caches (pages, templates) as a running server has them
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200
    return statistics.median(times)


def test_overview_is_fast_on_a_million_ledger_rows(big_settings: Settings) -> None:
    with TestClient(create_app(big_settings)) as client:
        postroom: Postroom = client.app.state.postroom  # type: ignore[attr-defined]
        now = datetime.now(UTC)
        started = time.perf_counter()
        client.portal.call(  # type: ignore[union-attr]
            lambda: seed_ledger(postroom.db, LEDGER_ROWS, now=now, days=30, last_hour=2000)
        )
        seeded = time.perf_counter() - started
        client.post("/admin/login", data={"key": "test-key"})
        day = median_seconds(client, "/admin")
        week = median_seconds(client, "/admin?span=7d")
    print(
        f"\n{postroom.db.dialect}: {LEDGER_ROWS:,} sends seeded in {seeded:.0f}s; "
        f"GET /admin {day * 1000:.0f} ms, GET /admin?span=7d {week * 1000:.0f} ms"
    )
    assert day < 1.0
