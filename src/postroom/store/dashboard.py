"""Read-only queries behind the admin dashboard: time series over the send ledger, and alerts.

Every ledger query starts from the ``sends(status, updated_at)`` index with a lower bound on
``updated_at`` (a row is updated when it is sent or fails, so ``sent_at >= since`` implies it),
and reaches ``send_feedback`` by its primary key: the cost grows with the sends in the window,
not with the ledger. Buckets are whole multiples of the step since the epoch, computed in SQL,
so a window of a million sends comes back as a few dozen rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Connection, cast, extract, func, select

from postroom.store.database import Database
from postroom.store.schema import alerts, send_feedback, sends

FAILED_STATUSES = ("failed", "dead")
STATUSES = ("sent", "failed", "dead", "suppressed", "ambiguous", "retry_scheduled")
# send_feedback.state values (store/feedback_rules.py RANK): a complaint proves delivery.
DELIVERED_STATES = ("delivered", "complained")
BOUNCED_STATES = ("bounced_hard", "bounced_soft", "policy_blocked")


@dataclass(frozen=True, slots=True)
class TimeSeries:
    """Counts per bucket: ``values[name][i]`` covers ``[start + i*step, start + (i+1)*step)``."""

    start: datetime
    step: timedelta
    values: dict[str, list[int]]

    @property
    def buckets(self) -> int:
        return len(next(iter(self.values.values()), []))

    def bucket_start(self, index: int) -> datetime:
        return self.start + index * self.step


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: str
    rule: str
    severity: str
    subject: str
    message: str
    value: float | None
    threshold: float | None
    fired_at: datetime
    resolved_at: datetime | None


class Dashboard:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def sends_per_minute(
        self, *, minutes: int = 60, now: datetime | None = None
    ) -> TimeSeries:
        """Sends that were ``sent`` and that ``failed`` (failed or dead) per minute."""
        window = _Window(now or datetime.now(UTC), 60, minutes)
        return await self._db.read(lambda conn: _outcomes(conn, window))

    async def feedback_over_time(
        self, *, step_seconds: int = 3600, buckets: int = 24, now: datetime | None = None
    ) -> TimeSeries:
        """Per bucket of sending time: ``sent``, and of those ``delivered``, ``bounced`` and
        ``complained`` by the strongest feedback heard about each send."""
        window = _Window(now or datetime.now(UTC), step_seconds, buckets)
        return await self._db.read(lambda conn: _feedback(conn, window))

    async def status_counts(
        self, *, hours: int = 24, now: datetime | None = None
    ) -> dict[str, int]:
        """Ledger rows per final or waiting status, last changed within ``hours``."""
        since = (now or datetime.now(UTC)) - timedelta(hours=hours)
        query = (
            select(sends.c.status, func.count())
            .where(sends.c.status.in_(STATUSES), sends.c.updated_at >= since)
            .group_by(sends.c.status)
        )

        def work(conn: Connection) -> dict[str, int]:
            counts = dict.fromkeys(STATUSES, 0)
            counts.update({str(s): int(n) for s, n in conn.execute(query)})
            return counts

        return await self._db.read(work)

    async def alerts(self, *, limit: int = 100) -> list[AlertRecord]:
        """The latest alerts, newest first (served by the index on ``fired_at``)."""
        query = select(alerts).order_by(alerts.c.fired_at.desc(), alerts.c.id).limit(limit)

        def work(conn: Connection) -> list[AlertRecord]:
            return [
                AlertRecord(
                    id=r.id,
                    rule=r.rule,
                    severity=r.severity,
                    subject=r.subject,
                    message=r.message,
                    value=r.value,
                    threshold=r.threshold,
                    fired_at=r.fired_at,
                    resolved_at=r.resolved_at,
                )
                for r in conn.execute(query)
            ]

        return await self._db.read(work)


@dataclass(frozen=True, slots=True)
class _Window:
    """``count`` buckets of ``step`` seconds, the last one holding ``now``."""

    now: datetime
    step: int
    count: int

    @property
    def first_bucket(self) -> int:
        return int(self.now.timestamp()) // self.step - self.count + 1

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.first_bucket * self.step, UTC)

    def series(self, names: Sequence[str]) -> TimeSeries:
        values = {name: [0] * self.count for name in names}
        return TimeSeries(self.start, timedelta(seconds=self.step), values)

    def add(self, series: TimeSeries, name: str, bucket: Any, count: Any) -> None:
        index = int(bucket) - self.first_bucket
        if 0 <= index < self.count:
            series.values[name][index] += int(count)


def _bucket(conn: Connection, column: Any, step: int) -> ColumnElement[Any]:
    """The column's whole ``step``-second periods since the epoch (UTC: stored naive UTC)."""
    seconds: ColumnElement[Any]
    if conn.dialect.name == "sqlite":
        seconds = cast(func.strftime("%s", column), BigInteger)
    else:
        seconds = cast(func.floor(extract("epoch", column)), BigInteger)
    return (seconds // step).label("bucket")


def _outcomes(conn: Connection, window: _Window) -> TimeSeries:
    series = window.series(["sent", "failed"])
    since = window.start
    bucket = _bucket(conn, sends.c.updated_at, window.step)
    failed = (
        select(bucket, func.count())
        .where(sends.c.status.in_(FAILED_STATUSES), sends.c.updated_at >= since)
        .group_by(bucket)
    )
    for found in conn.execute(failed):
        window.add(series, "failed", found[0], found[1])
    sent_bucket = _bucket(conn, sends.c.sent_at, window.step)
    sent = (
        select(sent_bucket, func.count())
        .where(sends.c.status == "sent", sends.c.updated_at >= since, sends.c.sent_at >= since)
        .group_by(sent_bucket)
    )
    for found in conn.execute(sent):
        window.add(series, "sent", found[0], found[1])
    return series


def _feedback(conn: Connection, window: _Window) -> TimeSeries:
    series = window.series(["sent", "delivered", "bounced", "complained"])
    since = window.start
    bucket = _bucket(conn, sends.c.sent_at, window.step)
    query = (
        select(bucket, send_feedback.c.state, func.count())
        .select_from(sends.outerjoin(send_feedback, send_feedback.c.send_id == sends.c.id))
        .where(sends.c.status == "sent", sends.c.updated_at >= since, sends.c.sent_at >= since)
        .group_by(bucket, send_feedback.c.state)
    )
    for found_bucket, state, count in conn.execute(query):
        window.add(series, "sent", found_bucket, count)
        if state in DELIVERED_STATES:
            window.add(series, "delivered", found_bucket, count)
        if state in BOUNCED_STATES:
            window.add(series, "bounced", found_bucket, count)
        if state == "complained":
            window.add(series, "complained", found_bucket, count)
    return series
