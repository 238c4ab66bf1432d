"""What a subscriber chooses for themself in the preference centre: which of their lists they
keep (``Subscribers.choices`` / ``Subscribers.apply_choices`` run these in a transaction).

A subscription its subscriber left after it had been confirmed may be taken up again from
the preference centre. One left while still pending, or never held, may not: double opt-in
must stay a click on the confirmation link. Nothing is revived for a subscriber who bounced,
complained or was erased. A sunset subscriber who keeps a list is active again: choosing is
engagement.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from postroom.store.audience import SubscriberStatus, SubscriptionStatus
from postroom.store.consent import Consent, ConsentKind, consent_row, record_consents
from postroom.store.schema import lists, subscribers, subscriptions

_REVIVABLE_SUBSCRIBERS = {
    SubscriberStatus.ACTIVE,
    SubscriberStatus.UNSUBSCRIBED,
    SubscriberStatus.SUNSET,
}
CONSENT_SOURCE = "preference centre"


@dataclass(frozen=True, slots=True)
class ListChoice:
    """One subscription as the preference centre shows it."""

    list_id: str
    name: str
    status: SubscriptionStatus
    confirmed: bool  # it was active once (confirmed_at set), not only ever pending


@dataclass(frozen=True, slots=True)
class SubscriberChoices:
    subscriber_id: str
    status: SubscriberStatus
    lists: list[ListChoice]

    @property
    def active_list_ids(self) -> list[str]:
        return [c.list_id for c in self.lists if c.status is SubscriptionStatus.ACTIVE]

    def revivable(self, choice: ListChoice) -> bool:
        """Whether ticking ``choice`` again re-subscribes (see the module doc)."""
        return (
            choice.status is SubscriptionStatus.UNSUBSCRIBED
            and choice.confirmed
            and self.status in _REVIVABLE_SUBSCRIBERS
        )


def read_choices(conn: Connection, email: str) -> SubscriberChoices | None:
    """The subscriber of the lower-cased ``email`` with its lists by name, or None."""
    person = conn.execute(
        select(subscribers.c.id, subscribers.c.status).where(subscribers.c.email == email)
    ).first()
    if person is None:
        return None
    rows = conn.execute(
        select(
            subscriptions.c.list_id,
            lists.c.name,
            subscriptions.c.status,
            subscriptions.c.confirmed_at.is_not(None).label("confirmed"),
        )
        .join(lists, lists.c.id == subscriptions.c.list_id)
        .where(subscriptions.c.subscriber_id == person.id)
        .order_by(lists.c.name, subscriptions.c.list_id)
    )
    return SubscriberChoices(
        person.id,
        SubscriberStatus(person.status),
        [
            ListChoice(r.list_id, r.name, SubscriptionStatus(r.status), bool(r.confirmed))
            for r in rows
        ],
    )


def apply_choices_within(
    conn: Connection,
    email: str,
    wanted: Collection[str],
    ip: str | None,
    now: datetime,
    implied_consent_days: int,
) -> SubscriberChoices | None:
    """Keep the lists in ``wanted``: unsubscribe the other active ones, re-subscribe the
    revivable ones asked for (express consent recorded, from ``ip``); the state afterwards."""
    before = read_choices(conn, email)
    if before is None:
        return None
    person_id = before.subscriber_id
    consents: list[dict[str, Any]] = []
    for choice in before.lists:
        if choice.status is SubscriptionStatus.ACTIVE and choice.list_id not in wanted:
            values: dict[str, Any] = {
                "status": SubscriptionStatus.UNSUBSCRIBED.value,
                "unsubscribed_at": now,
            }
        elif before.revivable(choice) and choice.list_id in wanted:
            values = {
                "status": SubscriptionStatus.ACTIVE.value,
                "unsubscribed_at": None,
                "consent": ConsentKind.EXPRESS.value,
                "consent_expires_at": None,
            }
            consent = Consent(ConsentKind.EXPRESS, CONSENT_SOURCE, now, ip)
            consents.append(
                consent_row(person_id, choice.list_id, consent, implied_consent_days, now)
            )
        else:
            continue
        conn.execute(
            update(subscriptions)
            .where(
                subscriptions.c.list_id == choice.list_id,
                subscriptions.c.subscriber_id == person_id,
            )
            .values(**values, updated_at=now)
        )
    record_consents(conn, consents)
    after = read_choices(conn, email)
    assert after is not None  # the subscriber row was read in this transaction
    dormant = after.status in _REVIVABLE_SUBSCRIBERS - {SubscriberStatus.ACTIVE}
    if dormant and after.active_list_ids:
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == person_id)
            .values(status=SubscriberStatus.ACTIVE.value, updated_at=now)
        )
        after = read_choices(conn, email)
    return after
