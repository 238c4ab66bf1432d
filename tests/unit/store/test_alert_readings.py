"""The alert readings on both databases: exact counts from synthetic rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from tests.unit.alerts.synthetic import add_attempt, add_campaign, add_chunk, add_sends

from postroom.alerts.readings import auth_failures
from postroom.config import Settings
from postroom.store.alert_readings import AlertReadings, CampaignReading, Rate
from postroom.store.database import Database, open_database
from postroom.wiring import prepare_database

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
_CREDENTIALS = "sendgrid HTTP 401 (credentials): bad key"


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    await prepare_database(settings)
    database = open_database(settings.resolved_database_url)
    try:
        yield database
    finally:
        await database.dispose()


async def test_readings_count_exactly(db: Database) -> None:
    await add_sends(db, 200, NOW - timedelta(days=3), feedback={"bounced_hard": 50})
    await add_sends(db, 100, NOW - timedelta(days=2))
    await add_sends(
        db, 600, NOW - timedelta(hours=3), feedback={"bounced_hard": 6, "complained": 2}
    )
    await add_campaign(db, "c1", at=NOW - timedelta(hours=2))
    await add_chunk(db, "c1", 0, sent=200, bounced=4, complained=1, at=NOW - timedelta(hours=1))
    await add_chunk(db, "c1", 1, sent=100, bounced=0, at=NOW - timedelta(minutes=30))
    await add_campaign(db, "old", status="finished", at=NOW - timedelta(days=3))
    await add_chunk(db, "old", 0, sent=500, bounced=100, at=NOW - timedelta(days=3))
    await add_attempt(db, "sendgrid", _CREDENTIALS, NOW)
    await add_attempt(db, "sendgrid", _CREDENTIALS, NOW)
    await add_attempt(db, "ses", "ses AccessDeniedException: no", NOW - timedelta(hours=1))

    measured = await AlertReadings(db).measure(
        NOW, bounce_window=1000, attempts_since=NOW - timedelta(minutes=15), complaints=True
    )
    bounces, complaints, campaigns = measured.bounces, measured.complaints, measured.campaigns
    # The latest 1,000: 300 campaign sends, 600 recent ledger sends, 100 clean older ones;
    # not the bouncing sends of three days ago, nor the finished campaign of then.
    assert bounces == Rate(sent=1000, hits=4 + 6)
    # The day: 600 ledger sends (the 50 failed attempts' sends are not sent) and campaign c1.
    assert complaints == Rate(sent=600 + 300, hits=2 + 1)
    assert campaigns == [CampaignReading("c1", "sending", 300, 4, 1)]
    assert sorted(measured.failed_attempts) == [("sendgrid", _CREDENTIALS)] * 2
    assert auth_failures(measured.failed_attempts) == {"sendgrid": 2}
    assert await AlertReadings(db).campaigns() == campaigns
