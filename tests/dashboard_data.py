"""Synthetic but realistic operating data for the admin dashboard: ledger rows with outcomes
and feedback over a window, alerts, suppressions. Used by the dashboard tests, the overview
timing (tests/integration/test_dashboard_speed.py) and the README screenshot
(tests/integration/dashboard_screenshot.py).

Rows go in through SQLAlchemy Core in chunks, so the same code seeds SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert

from postroom.store.database import Database
from postroom.store.schema import alerts, send_attempts, send_feedback, sends

_CHUNK = 20_000
_TYPES = (
    ("welcome", "transactional"),
    ("receipt", "transactional"),
    ("sign_in_link", "critical"),
    ("new_post_notification", "marketing"),
)
_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "proton.me", "example.org")


def _status(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.955:
        return "sent"
    if roll < 0.97:
        return "failed"
    if roll < 0.975:
        return "dead"
    if roll < 0.99:
        return "suppressed"
    if roll < 0.992:
        return "ambiguous"
    return "retry_scheduled"


def _feedback(rng: random.Random, storm: bool) -> str | None:
    """The strongest feedback heard about a sent message; ``storm`` is a bad list's hour."""
    roll = rng.random()
    hard, soft, complaint = (0.05, 0.02, 0.004) if storm else (0.009, 0.006, 0.0006)
    if roll < hard:
        return "bounced_hard"
    if roll < hard + soft:
        return "bounced_soft"
    if roll < hard + soft + complaint:
        return "complained"
    if roll < 0.985:
        return "delivered"
    return None  # nothing heard yet


async def seed_ledger(
    db: Database,
    count: int,
    *,
    now: datetime,
    days: float = 30.0,
    last_hour: int = 0,
    storm_hours_ago: tuple[float, float] | None = None,
    seed: int = 7,
    id_prefix: str = "S",
) -> int:
    """Insert ``count`` sends spread evenly over the last ``days``, oldest first, plus
    ``last_hour`` more in the last hour (a busier evening), with attempts and feedback.
    Returns how many were ``sent``."""
    rng = random.Random(seed)
    window = days * 86400

    def moment(i: int) -> datetime:
        if i >= count:  # the last hour's extra sends, in a rising and falling wave
            t = rng.random()
            shaped = (t + 0.15 * math.sin(t * 6 * math.pi)) % 1.0
            return now - timedelta(seconds=3600 * (1 - shaped))
        # In order, as a ledger fills: row order follows time, as in production.
        return now - timedelta(seconds=window * (1 - (i + rng.random()) / count))

    sent_total = 0
    rows: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    storm = storm_hours_ago or (-1.0, -1.0)
    for i in range(count + last_hour):
        at = moment(i)
        status = _status(rng)
        email_type, priority = _TYPES[i % len(_TYPES)]
        send_id = f"{id_prefix}{i:025d}"
        recipient = f"reader{i}@{_DOMAINS[i % len(_DOMAINS)]}"
        sent_at = at + timedelta(milliseconds=rng.randint(20, 900)) if status == "sent" else None
        rows.append(
            {
                "id": send_id,
                "idempotency_key": f"seed-{send_id}",
                "recipient": recipient,
                "email_type": email_type,
                "priority": priority,
                "status": status,
                "attempts": 1,
                "document": b'{"email_type":"%s"}' % email_type.encode(),
                "content_hash": "0" * 64,
                "message_id": f"<{send_id}@platform.example>",
                "provider": "sendgrid",
                "provider_message_id": f"pm-{send_id}" if sent_at else None,
                "last_error": None if sent_at else "550 5.1.1 user unknown",
                "created_at": at,
                "updated_at": sent_at or at,
                "sent_at": sent_at,
            }
        )
        attempts.append(
            {
                "send_id": send_id,
                "attempt": 1,
                "outcome": "sent" if sent_at else "failed",
                "provider": "sendgrid",
                "at": sent_at or at,
            }
        )
        if sent_at is not None:
            sent_total += 1
            hours_ago = (now - sent_at).total_seconds() / 3600
            state = _feedback(rng, storm[0] <= hours_ago <= storm[1])
            if state is not None:
                feedback.append(
                    {
                        "send_id": send_id,
                        "recipient": recipient,
                        "send_created_at": at,
                        "state": state,
                        "updated_at": sent_at + timedelta(minutes=1),
                    }
                )
        if len(rows) >= _CHUNK:
            await _flush(db, rows, attempts, feedback)
    await _flush(db, rows, attempts, feedback)
    return sent_total


async def _flush(
    db: Database,
    rows: list[dict[str, Any]],
    attempts: list[dict[str, Any]],
    feedback: list[dict[str, Any]],
) -> None:
    def work(conn: Connection) -> None:
        if rows:
            conn.execute(insert(sends), rows)
        if attempts:
            conn.execute(insert(send_attempts), attempts)
        if feedback:
            conn.execute(insert(send_feedback), feedback)

    await db.write(work)
    rows.clear()
    attempts.clear()
    feedback.clear()


def alert_rows(now: datetime) -> list[dict[str, Any]]:
    """A few alerts the engine would have fired: one still open, two resolved."""
    return [
        {
            "id": "A0000000000000000000000001",
            "rule": "complaint_rate",
            "severity": "critical",
            "subject": "campaign 01JDASHBOARD",
            "message": "complaint rate 0.42% over 24 h (critical above 0.3%)",
            "value": 0.0042,
            "threshold": 0.003,
            "fired_at": now - timedelta(hours=5, minutes=40),
            "resolved_at": None,
        },
        {
            "id": "A0000000000000000000000002",
            "rule": "hard_bounce_rate",
            "severity": "critical",
            "subject": "provider sendgrid",
            "message": "hard-bounce rate 5.1% over the last 1,000 sends (limit 2%)",
            "value": 0.051,
            "threshold": 0.02,
            "fired_at": now - timedelta(hours=6, minutes=5),
            "resolved_at": now - timedelta(hours=3, minutes=50),
        },
        {
            "id": "A0000000000000000000000003",
            "rule": "queue_lag",
            "severity": "warning",
            "subject": "queue marketing",
            "message": "oldest marketing message waited 6m12s (threshold 5m)",
            "value": 372.0,
            "threshold": 300.0,
            "fired_at": now - timedelta(days=2, hours=1),
            "resolved_at": now - timedelta(days=2),
        },
    ]


async def seed_alerts(db: Database, now: datetime) -> None:
    rows = alert_rows(now)
    await db.write(lambda conn: conn.execute(insert(alerts), rows))
