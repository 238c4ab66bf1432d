"""What bound feedback does to the audience, in the ingest transaction.

A hard bounce that suppresses an address marks its subscriber ``bounced``; a complaint marks
it ``complained`` and unsubscribes it from every list. ``bounced`` outranks ``complained`` (a
dead address stays dead whichever event came first), and an erased subscriber is never
touched. The ESP's own unsubscribe events only suppress marketing (``feedback.py``): they do
not say which of our lists the reader meant.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Update, bindparam, select, update

from postroom.store.audience import SubscriberStatus, SubscriptionStatus
from postroom.store.schema import subscribers, subscriptions

_ERASED = SubscriberStatus.ERASED.value
_BOUNCED = SubscriberStatus.BOUNCED.value
_COMPLAINED = SubscriberStatus.COMPLAINED.value
_UNSUBSCRIBED = SubscriptionStatus.UNSUBSCRIBED.value


def _mark(status: str, stronger_or_same: list[str]) -> Update:
    return (
        update(subscribers)
        .where(
            subscribers.c.email == bindparam("b_email"),
            subscribers.c.status.not_in(stronger_or_same),
        )
        .values(status=status, updated_at=bindparam("b_now"))
    )


_MARK_BOUNCED = _mark(_BOUNCED, [_ERASED, _BOUNCED])
_MARK_COMPLAINED = _mark(_COMPLAINED, [_ERASED, _BOUNCED, _COMPLAINED])
_UNSUBSCRIBE_EVERYWHERE = (
    update(subscriptions)
    .where(
        subscriptions.c.subscriber_id.in_(
            select(subscribers.c.id).where(
                subscribers.c.email == bindparam("b_email"), subscribers.c.status != _ERASED
            )
        ),
        subscriptions.c.status != _UNSUBSCRIBED,
    )
    .values(status=_UNSUBSCRIBED, unsubscribed_at=bindparam("b_now"), updated_at=bindparam("b_now"))
)


def mark_bounced(conn: Connection, email: str, now: datetime) -> None:
    conn.execute(_MARK_BOUNCED, {"b_email": email.lower(), "b_now": now})


def mark_complained(conn: Connection, email: str, now: datetime) -> None:
    values = {"b_email": email.lower(), "b_now": now}
    conn.execute(_MARK_COMPLAINED, values)
    conn.execute(_UNSUBSCRIBE_EVERYWHERE, values)
