"""``postroom bench fanout`` runs a real campaign to the end through worker processes."""

from __future__ import annotations

import psycopg
import pytest
from tests.conftest import fresh_postgres_database

from postroom.bench.fanout import run_fanout


@pytest.mark.slow
@pytest.mark.parametrize("esp", ["mailgun", "sendgrid"])
def test_the_fake_esp_receives_every_recipient(esp: str) -> None:
    # run_fanout waits until the fake ESP has counted every recipient; it raises on a
    # campaign that fails or is cancelled.
    report = run_fanout(3_000, esp, "sql://", None, workers=2)
    assert report.recipients == 3_000
    assert 0 < report.snapshot_seconds < report.handoff_seconds
    names = sorted(u.name for u in report.processes)
    assert names == ["benchmark (main)", "worker 1", "worker 2"]
    assert all(u.peak_rss_mib > 10 and u.cpu_seconds > 0 for u in report.processes)
    assert "recipients/s" in "\n".join(report.lines())


@pytest.mark.slow
def test_a_reused_postgresql_database_is_left_without_the_runs_rows() -> None:
    """Run twice on one PostgreSQL database: each run removes its rows and vacuums them, so
    the second starts clean and the tables hold no dead rows of either."""
    with fresh_postgres_database() as url:
        for _ in range(2):
            report = run_fanout(2_000, "mailgun", "sql://", url, workers=1)
            assert report.recipients == 2_000
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
            live = conn.execute("SELECT count(*) FROM campaign_recipients").fetchone()
            dead = conn.execute(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'campaign_recipients'"
            ).fetchone()
    assert live == (0,)
    assert dead == (0,)
