"""What the alert rules count, read with bounded queries (the rules are in ``postroom.alerts``).

An evaluation runs every few seconds, so every query here stays cheap on a ledger of millions
of rows: the latest sends come off the ``sends(status, updated_at)`` index, campaign sends
from the primary-key ranges of their most recently updated chunks, failed attempts from the
last few thousand ``send_attempts`` by primary key, running campaigns from their counter rows
(kept by the feedback processor) and the sums of their chunks. Only the 24 h complaint counts
scan a day of sends; the monitor reuses them for a minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, func, or_, select

from postroom.store.database import Database
from postroom.store.schema import (
    campaign_chunks,
    campaign_recipients,
    campaigns,
    send_attempts,
    send_feedback,
    sends,
)

ATTEMPTS_LOOKBACK = 5000
"""Latest hand-over attempts searched for failures: with a key revoked nearly every attempt
fails, so a few thousand is plenty."""
_LIVE = ("sending", "paused")


@dataclass(frozen=True, slots=True)
class Rate:
    """``hits`` (bounces, complaints) among ``sent``."""

    sent: int
    hits: int

    @property
    def value(self) -> float:
        return self.hits / self.sent if self.sent else 0.0


@dataclass(frozen=True, slots=True)
class CampaignReading:
    """A running or paused campaign's counters: ``sent`` sums its chunks, the rest are its
    row's."""

    id: str
    status: str
    sent: int
    bounced_hard: int
    complained: int


@dataclass(frozen=True, slots=True)
class Measured:
    bounces: Rate
    complaints: Rate | None
    campaigns: list[CampaignReading]
    failed_attempts: list[tuple[str | None, str | None]]


class AlertReadings:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def measure(
        self, now: datetime, *, bounce_window: int, attempts_since: datetime, complaints: bool
    ) -> Measured:
        """Everything in one read transaction; the 24 h complaints only when asked."""

        def work(conn: Connection) -> Measured:
            return Measured(
                bounces=latest_bounces(conn, bounce_window, now),
                complaints=complaints_24h(conn, now) if complaints else None,
                campaigns=live_campaigns(conn),
                failed_attempts=failed_attempts(conn, attempts_since),
            )

        return await self._db.read(work)

    async def campaigns(self) -> list[CampaignReading]:
        return await self._db.read(live_campaigns)


def latest_bounces(conn: Connection, window: int, now: datetime) -> Rate:
    """Hard bounces among the latest ``window`` sends, ledger and campaigns pooled."""
    bounced = send_feedback.c.state == "bounced_hard"
    ledger = conn.execute(
        select(sends.c.updated_at, bounced)
        .select_from(sends.outerjoin(send_feedback, send_feedback.c.send_id == sends.c.id))
        .where(sends.c.status == "sent")
        .order_by(sends.c.updated_at.desc())
        .limit(window)
    ).all()
    pooled = [(row[0].timestamp(), bool(row[1])) for row in ledger]
    pooled += _latest_campaign_sends(conn, window, now)
    pooled.sort(reverse=True)
    latest = pooled[:window]
    return Rate(sent=len(latest), hits=sum(1 for _, hit in latest if hit))


def _latest_campaign_sends(
    conn: Connection, window: int, now: datetime
) -> list[tuple[float, bool]]:
    """The recipients of the most recently updated chunks, until ``window`` sends are found:
    a few primary-key ranges of ``campaign_recipients``."""
    recent = conn.execute(
        select(
            campaign_chunks.c.campaign_id,
            campaign_chunks.c.first_position,
            campaign_chunks.c.size,
            campaign_chunks.c.sent,
        )
        .select_from(
            campaign_chunks.join(campaigns, campaigns.c.id == campaign_chunks.c.campaign_id)
        )
        .where(
            campaign_chunks.c.sent > 0,
            or_(campaigns.c.status.in_(_LIVE), campaigns.c.finished_at >= now - timedelta(days=1)),
        )
        .order_by(campaign_chunks.c.updated_at.desc())
        .limit(max(1, window // 100))
    ).all()
    found: list[tuple[float, bool]] = []
    counted = 0
    for campaign_id, first, size, sent in recent:
        if counted >= window:
            break
        counted += int(sent)
        rows = conn.execute(
            select(campaign_recipients.c.updated_at, campaign_recipients.c.feedback).where(
                campaign_recipients.c.campaign_id == campaign_id,
                campaign_recipients.c.position >= first,
                campaign_recipients.c.position < first + size,
                campaign_recipients.c.status == "sent",
            )
        )
        found += [(float(at or 0.0), feedback == "bounced_hard") for at, feedback in rows]
    return found


def complaints_24h(conn: Connection, now: datetime) -> Rate:
    """Complaints among the last 24 h's sends (per sent: not every provider reports
    deliveries), ledger and campaigns started in the window pooled."""
    since = now - timedelta(days=1)
    window = and_(sends.c.status == "sent", sends.c.updated_at >= since, sends.c.sent_at >= since)
    sent = int(conn.execute(select(func.count()).where(window)).scalar_one())
    complained = int(
        conn.execute(
            select(func.count())
            .select_from(sends.join(send_feedback, send_feedback.c.send_id == sends.c.id))
            .where(window, send_feedback.c.state == "complained")
        ).scalar_one()
    )
    recent = or_(campaigns.c.status == "sending", campaigns.c.started_at >= since)
    campaign_sent = conn.execute(
        select(func.coalesce(func.sum(campaign_chunks.c.sent), 0))
        .select_from(
            campaign_chunks.join(campaigns, campaigns.c.id == campaign_chunks.c.campaign_id)
        )
        .where(recent)
    ).scalar_one()
    campaign_complained = conn.execute(
        select(func.coalesce(func.sum(campaigns.c.complained), 0)).where(recent)
    ).scalar_one()
    return Rate(sent + int(campaign_sent), complained + int(campaign_complained))


def live_campaigns(conn: Connection) -> list[CampaignReading]:
    """Sending and paused campaigns with their counters (a paused one keeps its alert open):
    the ``campaigns(status, send_at)`` index, then each one's chunks by primary key."""
    counters = (
        campaigns.c.id,
        campaigns.c.status,
        campaigns.c.bounced_hard,
        campaigns.c.complained,
    )
    rows = conn.execute(
        select(*counters, func.coalesce(func.sum(campaign_chunks.c.sent), 0))
        .select_from(
            campaigns.outerjoin(campaign_chunks, campaign_chunks.c.campaign_id == campaigns.c.id)
        )
        .where(campaigns.c.status.in_(_LIVE))
        .group_by(*counters)
        .order_by(campaigns.c.id)
    )
    return [
        CampaignReading(str(i), str(status), int(sent), int(bounced), int(complained))
        for i, status, bounced, complained, sent in rows
    ]


def failed_attempts(conn: Connection, since: datetime) -> list[tuple[str | None, str | None]]:
    """(provider, error) of the failed attempts since ``since`` among the latest
    :data:`ATTEMPTS_LOOKBACK` attempts: a primary-key range, however long the table."""
    last = conn.execute(select(func.max(send_attempts.c.id))).scalar()
    if last is None:
        return []
    rows = conn.execute(
        select(send_attempts.c.provider, send_attempts.c.error).where(
            send_attempts.c.id > int(last) - ATTEMPTS_LOOKBACK,
            send_attempts.c.outcome == "failed",
            send_attempts.c.at >= since,
        )
    )
    return [(provider, error) for provider, error in rows]
