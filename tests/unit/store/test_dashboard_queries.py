"""The dashboard's time series count exactly what the ledger holds, bucket by bucket, on
SQLite and PostgreSQL, and leave out what is outside the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from tests.dashboard_data import seed_alerts

from postroom.store.dashboard import Dashboard
from postroom.store.schema import send_feedback, sends
from postroom.wiring import Postroom

NOW = datetime(2026, 11, 28, 12, 30, 20, tzinfo=UTC)


def send(n: int, status: str, at: datetime) -> dict[str, Any]:
    sent = status == "sent"
    return {
        "id": f"D{n:025d}",
        "idempotency_key": f"k{n}",
        "recipient": f"r{n}@example.com",
        "email_type": "welcome",
        "priority": "transactional",
        "status": status,
        "attempts": 1,
        "document": b"{}",
        "content_hash": "0" * 64,
        "created_at": at - timedelta(seconds=1),
        "updated_at": at,
        "sent_at": at if sent else None,
    }


def feedback(n: int, state: str, at: datetime) -> dict[str, Any]:
    return {
        "send_id": f"D{n:025d}",
        "recipient": f"r{n}@example.com",
        "send_created_at": at,
        "state": state,
        "updated_at": at,
    }


async def insert_rows(
    postroom: Postroom, rows: list[dict[str, Any]], fb: list[dict[str, Any]]
) -> None:
    def work(conn: Any) -> None:
        conn.execute(insert(sends), rows)
        if fb:
            conn.execute(insert(send_feedback), fb)

    await postroom.db.write(work)


async def test_sends_per_minute_counts_sent_and_failed_in_their_minutes(
    postroom: Postroom,
) -> None:
    this_minute = NOW.replace(second=5)
    rows = [
        send(0, "sent", this_minute),
        send(1, "sent", this_minute + timedelta(seconds=10)),
        send(2, "sent", this_minute - timedelta(seconds=61)),  # 12:29:04
        send(3, "failed", this_minute - timedelta(minutes=3)),
        send(4, "dead", this_minute - timedelta(minutes=3)),
        send(5, "sent", this_minute - timedelta(minutes=59)),  # the first bucket
        send(6, "sent", this_minute - timedelta(minutes=61)),  # outside the hour
        send(7, "suppressed", this_minute),  # neither sent nor failed
    ]
    await insert_rows(postroom, rows, [])
    series = await Dashboard(postroom.db).sends_per_minute(minutes=60, now=NOW)
    assert series.buckets == 60
    assert series.start == datetime(2026, 11, 28, 11, 31, tzinfo=UTC)
    assert series.values["sent"][-1] == 2
    assert series.values["sent"][-2] == 1
    assert series.values["sent"][0] == 1
    assert sum(series.values["sent"]) == 4
    assert series.values["failed"][-4] == 2
    assert sum(series.values["failed"]) == 2


async def test_feedback_over_time_groups_by_sending_hour_and_strongest_state(
    postroom: Postroom,
) -> None:
    hour = NOW.replace(minute=0, second=0)
    rows, fb = [], []
    states = ["delivered"] * 6 + ["complained", "bounced_hard", "bounced_soft", None]
    for n, state in enumerate(states):  # this hour: 10 sent
        at = hour + timedelta(minutes=n)
        rows.append(send(n, "sent", at))
        if state:
            fb.append(feedback(n, state, at))
    earlier = hour - timedelta(hours=5)
    for n in range(10, 14):  # five hours ago: 4 sent, 3 delivered, 1 policy block
        rows.append(send(n, "sent", earlier))
        fb.append(feedback(n, "delivered" if n < 13 else "policy_blocked", earlier))
    rows.append(send(20, "sent", hour - timedelta(hours=30)))  # before the window
    rows.append(send(21, "failed", hour))  # not sent: not in the cohort
    await insert_rows(postroom, rows, fb)

    series = await Dashboard(postroom.db).feedback_over_time(step_seconds=3600, buckets=24, now=NOW)
    values = series.values
    assert series.start == hour - timedelta(hours=23)
    assert (values["sent"][-1], values["delivered"][-1]) == (10, 7)
    assert (values["bounced"][-1], values["complained"][-1]) == (2, 1)
    assert (values["sent"][-6], values["delivered"][-6], values["bounced"][-6]) == (4, 3, 1)
    assert sum(values["sent"]) == 14


async def test_status_counts_and_alerts_newest_first(postroom: Postroom) -> None:
    rows = [send(n, s, NOW - timedelta(hours=1)) for n, s in enumerate(["sent", "sent", "dead"])]
    rows.append(send(9, "sent", NOW - timedelta(hours=30)))
    await insert_rows(postroom, rows, [])
    await seed_alerts(postroom.db, NOW)
    dashboard = Dashboard(postroom.db)
    counts = await dashboard.status_counts(hours=24, now=NOW)
    assert (counts["sent"], counts["dead"], counts["failed"]) == (2, 1, 0)
    alerts = await dashboard.alerts(limit=10)
    assert [a.rule for a in alerts] == ["complaint_rate", "hard_bounce_rate", "queue_lag"]
    assert alerts[0].resolved_at is None and alerts[1].resolved_at is not None
