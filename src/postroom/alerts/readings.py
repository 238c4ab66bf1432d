"""What the alert rules judge, measured from the database, the queue and the breakers.

Every query is bounded so that an evaluation every few seconds stays cheap on a ledger of
millions of rows: the latest sends come off the ``sends(status, updated_at)`` index, credential
failures from the last few thousand ``send_attempts`` by primary key, campaigns from their
counter rows. The 24 h complaint counts scan a day of sends and are refreshed at most once a
minute. Everything is read from the database (or the queue), never from a worker's memory,
so the monitor may run in any process; breakers are the exception (see :func:`open_breakers`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.metrics_core import Metric
from sqlalchemy import Connection, and_, func, or_, select

from postroom import metrics
from postroom.alerts.rules import (
    CampaignReading,
    Rate,
    Readings,
    dlq_baseline,
    dlq_growth,
    is_auth_failure,
)
from postroom.queue.base import QueueBackend, ReportsBacklog
from postroom.store.database import Database
from postroom.store.schema import (
    campaign_chunks,
    campaign_recipients,
    campaigns,
    send_attempts,
    send_feedback,
    sends,
)

AUTH_LOOKBACK = 5000
"""Latest hand-over attempts searched for refused credentials: with a key revoked nearly every
attempt fails, so a few thousand is plenty, and a primary-key range keeps it cheap."""
DLQ_COUNT_CAP = 10_000
"""A broker without a cheap dead-letter count is counted by listing, up to this many."""
SLOW_EVERY = 60.0
"""Seconds the 24 h complaint counts are reused for."""
_LIVE = ("sending", "paused")


class Reader:
    """Takes :class:`Readings`; keeps the DLQ samples that make "growing" a comparison."""

    def __init__(
        self,
        db: Database,
        queue: QueueBackend,
        *,
        bounce_window: int,
        auth_window: float,
        dlq_window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._queue = queue
        self._bounce_window = bounce_window
        self._auth_window = auth_window
        self._dlq_window = dlq_window
        self._clock = clock
        self.dlq_samples: list[tuple[float, int]] = []
        self._complaints: tuple[float, Rate] | None = None

    async def read(self) -> Readings:
        now = self._clock()
        at = datetime.fromtimestamp(now, UTC)
        readings = await self._db.read(lambda conn: self._from_database(conn, now, at))
        await self._read_queue(readings, now)
        readings.open_breakers = open_breakers()
        return readings

    async def read_campaigns(self) -> Readings:
        """The running campaigns alone (the monitor's fast path)."""
        return Readings(campaigns=await self._db.read(live_campaigns))

    def _from_database(self, conn: Connection, now: float, at: datetime) -> Readings:
        if self._complaints is None or now - self._complaints[0] >= SLOW_EVERY:
            self._complaints = (now, complaints_24h(conn, at))
        return Readings(
            bounces=latest_bounces(conn, self._bounce_window, at),
            complaints=self._complaints[1],
            campaigns=live_campaigns(conn),
            auth_failures=auth_failures(conn, at - timedelta(seconds=self._auth_window)),
        )

    async def _read_queue(self, readings: Readings, now: float) -> None:
        if isinstance(self._queue, ReportsBacklog):
            backlog = await self._queue.backlog()
            readings.oldest_age = {p.value: age for p, age in backlog.oldest_age.items()}
            dead = backlog.dead_letters
        else:
            dead = len(await self._queue.dlq_list(limit=DLQ_COUNT_CAP))
        self.dlq_samples.append((now, dead))
        del self.dlq_samples[: dlq_baseline(self.dlq_samples, now, self._dlq_window)]
        readings.dead_letters = dead
        readings.dlq_growth = dlq_growth(self.dlq_samples, now, self._dlq_window)


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
    """Sending and paused campaigns with their counters (a paused one keeps its alert open)."""
    sent = (
        select(campaign_chunks.c.campaign_id, func.sum(campaign_chunks.c.sent).label("sent"))
        .group_by(campaign_chunks.c.campaign_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            campaigns.c.id,
            campaigns.c.status,
            func.coalesce(sent.c.sent, 0),
            campaigns.c.bounced_hard,
            campaigns.c.complained,
        )
        .select_from(campaigns.outerjoin(sent, sent.c.campaign_id == campaigns.c.id))
        .where(campaigns.c.status.in_(_LIVE))
        .order_by(campaigns.c.id)
    )
    return [
        CampaignReading(str(i), str(status), int(n), int(bounced), int(complained))
        for i, status, n, bounced, complained in rows
    ]


def auth_failures(conn: Connection, since: datetime) -> dict[str, int]:
    """Failed attempts since ``since`` whose error says the provider refused our
    credentials, per provider, among the latest :data:`AUTH_LOOKBACK` attempts."""
    last = conn.execute(select(func.max(send_attempts.c.id))).scalar()
    if last is None:
        return {}
    rows = conn.execute(
        select(send_attempts.c.provider, send_attempts.c.error).where(
            send_attempts.c.id > int(last) - AUTH_LOOKBACK,
            send_attempts.c.outcome == "failed",
            send_attempts.c.at >= since,
        )
    )
    counts: dict[str, int] = {}
    for provider, error in rows:
        if is_auth_failure(error):
            name = str(provider or "unknown")
            counts[name] = counts.get(name, 0) + 1
    return counts


def open_breakers() -> list[str]:
    """Providers whose circuit breaker is open, from the ``postroom_circuit_open`` gauge.

    The breaker lives in each worker process. Without ``PROMETHEUS_MULTIPROC_DIR`` this sees
    only this process's breakers (``postroom serve``, or a monitor inside a worker); with it,
    every process on this host (the gauge keeps its maximum, so a worker that died with its
    breaker open reports it until the folder is cleared at the next start). Workers on other
    hosts are not seen: alert on the metric in Prometheus there.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        families: Iterable[Metric] = registry.collect()
    else:
        families = metrics.CIRCUIT_OPEN.collect()
    return sorted(
        {
            sample.labels["provider"]
            for family in families
            if family.name == "postroom_circuit_open"
            for sample in family.samples
            if sample.value >= 1
        }
    )
