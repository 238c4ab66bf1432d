"""The inactive-subscriber sunset, read from tables that exist anyway (no state of its own):
subscribers and subscriptions, feedback events, and the send ledger.

A subscriber is *quiet* when it is active, holds an active subscription, took its latest one
more than N days ago, and has no human open (an ``opened`` event not flagged machine-made,
e.g. Apple Mail Privacy Protection) and no click in the last N days. A quiet subscriber gets
one re-engagement email; if still quiet M days after that email went, it becomes ``sunset``,
which campaigns skip. The email is found again in the ledger by its idempotency key
(``sunset:<subscriber id>:<yyyymmdd>``, which the unique ledger index serves as a range),
its email type and recipient: that is what makes a second run send nothing twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    and_,
    bindparam,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)

from postroom.store.audience import SubscriberStatus, SubscriptionStatus
from postroom.store.database import Database
from postroom.store.ledger_records import SendStatus
from postroom.store.schema import events, sends, subscribers, subscriptions

REENGAGEMENT_TYPE = "reengagement"
KEY_PREFIX = "sunset:"
# NormalizedEvent.to_json writes the flag only when it is set, compactly (orjson); the same
# test as store/stats.py's human/machine split of opens.
_MACHINE_OPEN = '%"machine_open":true%'
# An email that ended without being sent still ends the wait: we tried, and a bounce or a
# suppression says as much about the address as silence does.
_ENDED = {SendStatus.FAILED, SendStatus.DEAD, SendStatus.SUPPRESSED, SendStatus.AMBIGUOUS}


class SunsetAction(StrEnum):
    REENGAGE = "reengage"  # send the re-engagement email
    SUNSET = "sunset"  # the grace after it is over: status sunset
    WAIT = "wait"  # the email is on its way, or the grace is running


@dataclass(frozen=True, slots=True)
class Reengagement:
    """The latest re-engagement email to a subscriber, from the ledger."""

    created_at: datetime
    settled_at: datetime | None  # sent, or ended for good; None while it is on its way


@dataclass(frozen=True, slots=True)
class Quiet:
    """A subscriber with no human open or click in the inactivity window."""

    subscriber_id: str
    email: str
    name: str | None
    reengagement: Reengagement | None


@dataclass
class SunsetPlan:
    """What one run would do, at ``now``."""

    now: datetime
    reengage: list[Quiet] = field(default_factory=list)
    sunset: list[Quiet] = field(default_factory=list)
    waiting: int = 0


def idempotency_key(subscriber_id: str, now: datetime) -> str:
    """The re-engagement email's ledger key: one email per subscriber per cycle's day."""
    return f"{KEY_PREFIX}{subscriber_id}:{now.astimezone(UTC):%Y%m%d}"


def decide(
    last: Reengagement | None, now: datetime, inactive_days: int, grace_days: int
) -> SunsetAction:
    """What to do with a quiet subscriber whose latest re-engagement email is ``last``.

    An email older than the inactivity window belongs to an earlier cycle (the subscriber
    was engaged after it, or they would be sunset already), so a new cycle starts."""
    if last is None or last.created_at < now - timedelta(days=inactive_days):
        return SunsetAction.REENGAGE
    if last.settled_at is None:
        return SunsetAction.WAIT
    if last.settled_at <= now - timedelta(days=grace_days):
        return SunsetAction.SUNSET
    return SunsetAction.WAIT


class SunsetStore:
    """Finds quiet subscribers and sunsets them; sending the email is the caller's (through
    the normal submission path)."""

    def __init__(
        self,
        db: Database,
        *,
        inactive_days: int = 180,
        grace_days: int = 30,
        email_type: str = REENGAGEMENT_TYPE,
        page_size: int = 1000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self.inactive_days = inactive_days
        self.grace_days = grace_days
        self.email_type = email_type
        self._page_size = page_size
        self._now = clock or (lambda: datetime.now(UTC))

    async def plan(self) -> SunsetPlan:
        """Every quiet subscriber sorted into what to do now; reads only."""
        plan = SunsetPlan(self._now())
        after = ""
        while True:
            page = await self._db.read(
                functools.partial(self._quiet_page, now=plan.now, after=after)
            )
            for quiet, action in page.decided:
                if action is SunsetAction.REENGAGE:
                    plan.reengage.append(quiet)
                elif action is SunsetAction.SUNSET:
                    plan.sunset.append(quiet)
                else:
                    plan.waiting += 1
            if page.last is None:
                return plan
            after = page.last

    async def mark_sunset(self, quiet: Sequence[Quiet], now: datetime) -> int:
        """Set status ``sunset`` on those of ``quiet`` still active and still quiet (an open
        may have arrived since the plan); how many changed."""
        changed = 0
        for start in range(0, len(quiet), self._page_size):
            chunk = list(quiet[start : start + self._page_size])
            changed += await self._db.write(functools.partial(self._sunset, chunk=chunk, now=now))
        return changed

    def _sunset(self, conn: Connection, chunk: list[Quiet], now: datetime) -> int:
        engaged = _engaged(conn, [q.email for q in chunk], self._since(now))
        ids = sorted(q.subscriber_id for q in chunk if q.email not in engaged)
        if not ids:
            return 0
        result = conn.execute(
            update(subscribers)
            .where(
                subscribers.c.id.in_(ids),
                subscribers.c.status == SubscriberStatus.ACTIVE.value,
            )
            .values(status=SubscriberStatus.SUNSET.value, updated_at=now)
        )
        return int(result.rowcount)

    def _since(self, now: datetime) -> datetime:
        return now - timedelta(days=self.inactive_days)

    def _quiet_page(self, conn: Connection, now: datetime, after: str) -> _Page:
        since = self._since(now)
        latest_subscription = func.max(
            func.coalesce(subscriptions.c.confirmed_at, subscriptions.c.created_at)
        )
        rows = conn.execute(
            select(subscribers.c.id, subscribers.c.email, subscribers.c.name)
            .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
            .where(
                subscribers.c.id > after,
                subscribers.c.status == SubscriberStatus.ACTIVE.value,
                subscriptions.c.status == SubscriptionStatus.ACTIVE.value,
            )
            .group_by(subscribers.c.id, subscribers.c.email, subscribers.c.name)
            .having(latest_subscription <= since)
            .order_by(subscribers.c.id)
            .limit(self._page_size)
        ).all()
        if not rows:
            return _Page([], None)
        engaged = _engaged(conn, [r.email for r in rows], since)
        quiet = [r for r in rows if r.email not in engaged]
        latest = self._latest_reengagements(conn, quiet)
        decided = [
            (
                q := Quiet(r.id, r.email, r.name, latest.get(r.id)),
                decide(q.reengagement, now, self.inactive_days, self.grace_days),
            )
            for r in quiet
        ]
        return _Page(decided, rows[-1].id)

    def _latest_reengagements(
        self, conn: Connection, rows: Sequence[Any]
    ) -> dict[str, Reengagement]:
        """Subscriber id → its latest re-engagement email, for ``rows`` (sorted by id)."""
        if not rows:
            return {}
        email_of = {r.id: r.email for r in rows}
        found = conn.execute(
            select(
                sends.c.idempotency_key,
                sends.c.recipient,
                sends.c.status,
                sends.c.created_at,
                sends.c.updated_at,
                sends.c.sent_at,
            ).where(
                # Keys are sunset:<id>:<8 digits>: a range on the unique (key, recipient)
                # index. Its bounds hold only letters and digits where keys differ, so the
                # range means the same under any collation.
                sends.c.idempotency_key >= f"{KEY_PREFIX}{rows[0].id}:00000000",
                sends.c.idempotency_key <= f"{KEY_PREFIX}{rows[-1].id}:99999999",
                sends.c.email_type == self.email_type,
                sends.c.recipient.in_(
                    bindparam("emails", sorted(email_of.values()), expanding=True)
                ),
            )
        )
        latest: dict[str, Reengagement] = {}
        for row in found:
            subscriber_id = row.idempotency_key.removeprefix(KEY_PREFIX).partition(":")[0]
            if email_of.get(subscriber_id) != row.recipient:
                continue
            status = SendStatus(row.status)
            settled = row.sent_at if status is SendStatus.SENT else None
            if status in _ENDED:
                settled = row.updated_at
            seen = latest.get(subscriber_id)
            if seen is None or row.created_at > seen.created_at:
                latest[subscriber_id] = Reengagement(row.created_at, settled)
        return latest


@dataclass(frozen=True, slots=True)
class _Page:
    decided: list[tuple[Quiet, SunsetAction]]
    last: str | None  # the page's last subscriber id; None after the last page


def _engaged(conn: Connection, emails: Sequence[str], since: datetime) -> set[str]:
    """Those of ``emails`` with a human open or a click since ``since``."""
    if not emails:
        return set()
    human = or_(
        events.c.event_type == "clicked",
        and_(events.c.event_type == "opened", _payload_text(conn).not_like(_MACHINE_OPEN)),
    )
    query = (
        select(events.c.recipient)
        .distinct()
        .where(
            events.c.recipient.in_(bindparam("emails", sorted(emails), expanding=True)),
            events.c.occurred_at >= since,
            human,
        )
    )
    return set(conn.execute(query).scalars())


def _payload_text(conn: Connection) -> ColumnElement[str]:
    """The event's JSON payload (stored as bytes) as text, for LIKE on either database."""
    if conn.dialect.name == "sqlite":
        return cast(events.c.payload, String)
    return func.convert_from(events.c.payload, literal("UTF8"))
