"""The audience: subscribers (one per lower-cased address), creators' lists, subscriptions.

Subscribing a batch (and its rules) is in ``store/subscribing.py``, the subscriber's own
choices in ``store/subscriber_choices.py``; both run through :class:`Subscribers`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select, update
from ulid import ULID

from postroom.errors import InvalidMessageError
from postroom.store.audience import (
    ListRecord,
    NewSubscriber,
    Subscribed,
    SubscriberRecord,
    SubscriberStatus,
    SubscriptionRecord,
    SubscriptionStatus,
    subscriber_from_row,
    subscription_from_row,
)
from postroom.store.consent import Consent, ConsentKind, consent_row, record_consents
from postroom.store.database import Database
from postroom.store.schema import lists, subscribers, subscriptions
from postroom.store.subscriber_choices import (
    ListChoice,
    SubscriberChoices,
    apply_choices_within,
    read_choices,
)
from postroom.store.subscribing import ensure_subscribers, subscribe_within

__all__ = [
    "ListChoice",
    "ListRecord",
    "NewSubscriber",
    "Subscribed",
    "SubscriberChoices",
    "SubscriberRecord",
    "SubscriberStatus",
    "Subscribers",
    "SubscriptionRecord",
    "SubscriptionStatus",
]


class Subscribers:
    """Repository of subscribers, lists and subscriptions."""

    def __init__(
        self,
        db: Database,
        *,
        implied_consent_days: int = 730,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self.implied_consent_days = implied_consent_days
        self._now = clock or (lambda: datetime.now(UTC))

    async def create_list(self, name: str, creator: str, list_id: str | None = None) -> ListRecord:
        record = ListRecord(list_id or str(ULID()), name, creator, self._now())

        def work(conn: Connection) -> None:
            if conn.execute(select(lists.c.id).where(lists.c.id == record.id)).first():
                raise InvalidMessageError(f"a list with id {record.id!r} exists", "id")
            conn.execute(
                lists.insert(),
                {
                    "id": record.id,
                    "name": name,
                    "creator": creator,
                    "created_at": record.created_at,
                },
            )

        await self._db.write(work)
        return record

    async def get_list(self, list_id: str) -> ListRecord | None:
        def work(conn: Connection) -> ListRecord | None:
            found = conn.execute(select(lists).where(lists.c.id == list_id)).first()
            if found is None:
                return None
            counts = conn.execute(
                select(subscriptions.c.status, func.count())
                .where(subscriptions.c.list_id == list_id)
                .group_by(subscriptions.c.status)
            ).all()
            totals = {s.value: 0 for s in SubscriptionStatus}
            totals.update({status: int(n) for status, n in counts})
            return ListRecord(
                id=found.id,
                name=found.name,
                creator=found.creator,
                created_at=found.created_at,
                counts=totals,
            )

        return await self._db.read(work)

    async def subscribe(
        self,
        list_id: str,
        entries: Sequence[NewSubscriber],
        *,
        pending: bool = False,
        resubscribe: bool = False,
    ) -> list[Subscribed]:
        """Subscribe ``entries`` to ``list_id`` in one transaction (see ``store.subscribing``)."""
        return await self._db.write(
            lambda conn: self.subscribe_within(
                conn, list_id, entries, pending=pending, resubscribe=resubscribe
            )
        )

    async def upsert(
        self,
        email: str,
        name: str | None,
        list_ids: Sequence[str],
        consent: Consent,
        *,
        pending: bool,
    ) -> list[Subscribed]:
        """Create or update one subscriber and subscribe it to each of ``list_ids`` (the API:
        the subscriber asked, so an unsubscribed subscription is revived)."""
        entry = NewSubscriber(email=email, name=name, consent=consent)

        def work(conn: Connection) -> list[Subscribed]:
            if not list_ids:
                ensure_subscribers(conn, [entry], self._now())
                return []
            return [
                self.subscribe_within(conn, lid, [entry], pending=pending, resubscribe=True)[0]
                for lid in list_ids
            ]

        return await self._db.write(work)

    def subscribe_within(
        self,
        conn: Connection,
        list_id: str,
        entries: Sequence[NewSubscriber],
        *,
        pending: bool,
        resubscribe: bool,
    ) -> list[Subscribed]:
        """:meth:`subscribe` in the caller's transaction."""
        return subscribe_within(
            conn,
            list_id,
            entries,
            pending=pending,
            resubscribe=resubscribe,
            clock=self._now,
            implied_consent_days=self.implied_consent_days,
        )

    async def get(self, email: str) -> tuple[SubscriberRecord, list[SubscriptionRecord]] | None:
        """The subscriber of ``email`` with its subscriptions, or None."""

        def work(conn: Connection) -> tuple[SubscriberRecord, list[SubscriptionRecord]] | None:
            row = conn.execute(select(subscribers).where(subscribers.c.email == email.lower()))
            found = row.first()
            if found is None:
                return None
            subs = conn.execute(
                select(subscriptions)
                .where(subscriptions.c.subscriber_id == found.id)
                .order_by(subscriptions.c.list_id)
            )
            return subscriber_from_row(found), [subscription_from_row(s) for s in subs]

        return await self._db.read(work)

    async def confirm(self, subscriber_id: str, list_id: str, ip: str | None) -> str | None:
        """Confirm a pending (double opt-in) subscription: active, with express consent
        recorded. Returns the subscription's status afterwards (None when there is none)."""

        def work(conn: Connection) -> str | None:
            found = conn.execute(
                select(subscriptions.c.status).where(
                    subscriptions.c.list_id == list_id,
                    subscriptions.c.subscriber_id == subscriber_id,
                )
            ).scalar_one_or_none()
            if found != SubscriptionStatus.PENDING.value:
                return found
            now = self._now()
            consent = Consent(ConsentKind.EXPRESS, "double opt-in", now, ip)
            conn.execute(
                update(subscriptions)
                .where(
                    subscriptions.c.list_id == list_id,
                    subscriptions.c.subscriber_id == subscriber_id,
                )
                .values(
                    status=SubscriptionStatus.ACTIVE.value,
                    consent=ConsentKind.EXPRESS.value,
                    consent_expires_at=None,
                    confirmed_at=now,
                    updated_at=now,
                )
            )
            record_consents(
                conn,
                [consent_row(subscriber_id, list_id, consent, self.implied_consent_days, now)],
            )
            return SubscriptionStatus.ACTIVE.value

        return await self._db.write(work)

    async def unsubscribe(self, email: str, list_id: str) -> bool:
        """Unsubscribe ``email`` from ``list_id``; False when it was not subscribed."""
        now = self._now()
        person = select(subscribers.c.id).where(subscribers.c.email == email.lower())
        query = (
            update(subscriptions)
            .where(
                subscriptions.c.list_id == list_id,
                subscriptions.c.subscriber_id == person.scalar_subquery(),
                subscriptions.c.status != SubscriptionStatus.UNSUBSCRIBED.value,
            )
            .values(
                status=SubscriptionStatus.UNSUBSCRIBED.value, unsubscribed_at=now, updated_at=now
            )
        )
        return bool(await self._db.write(lambda conn: conn.execute(query).rowcount))

    async def active_page(
        self, list_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[SubscriberRecord]:
        """A page of ``list_id``'s mailable subscribers in id order, after subscriber id
        ``after``: active subscription, active subscriber, consent not expired. Keyset paging
        on the (list_id, status, subscriber_id) index, for campaigns. Suppressions are the
        caller's to subtract (the worker checks them again at send time)."""
        now = self._now()
        query = (
            select(subscribers)
            .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
            .where(
                subscriptions.c.list_id == list_id,
                subscriptions.c.status == SubscriptionStatus.ACTIVE.value,
                subscribers.c.status == SubscriberStatus.ACTIVE.value,
                (subscriptions.c.consent_expires_at.is_(None))
                | (subscriptions.c.consent_expires_at > now),
            )
            .order_by(subscriptions.c.subscriber_id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(subscriptions.c.subscriber_id > after)
        return await self._db.read(
            lambda conn: [subscriber_from_row(r) for r in conn.execute(query)]
        )

    # --- the subscriber's own controls (api/preferences.py; the rules are in
    # store/subscriber_choices.py) -----------------------------------------------------------

    async def choices(self, email: str) -> SubscriberChoices | None:
        """``email``'s subscriber and its subscriptions with list names, or None."""
        return await self._db.read(lambda conn: read_choices(conn, email.lower()))

    async def apply_choices(
        self, email: str, wanted: Collection[str], ip: str | None = None
    ) -> SubscriberChoices | None:
        """Unsubscribe ``email`` from its active lists not in ``wanted`` and re-subscribe it
        to those in ``wanted`` it had left itself; the state afterwards (None: no subscriber).
        See :func:`~postroom.store.subscriber_choices.apply_choices_within`."""
        now = self._now()
        days = self.implied_consent_days
        return await self._db.write(
            lambda conn: apply_choices_within(conn, email.lower(), wanted, ip, now, days)
        )
