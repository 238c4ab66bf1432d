"""The audience: subscribers (one per lower-cased address), creators' lists, subscriptions.

Subscribing works on batches so that the API (one address) and a CSV import (a thousand rows
a transaction) take the same path. It is idempotent: subscribing an address again changes
nothing unless it brings stronger consent. An unsubscribed subscription is never revived by
an import, only by the subscriber asking again (``resubscribe``, the API).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
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
from postroom.store.consent import Consent, ConsentKind, consent_row, record_consents, stronger
from postroom.store.database import Database
from postroom.store.schema import lists, subscribers, subscriptions
from postroom.store.subscriber_choices import (
    ListChoice,
    SubscriberChoices,
    apply_choices_within,
    read_choices,
)

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

_INSERT_SUBSCRIBERS = {
    "postgresql": postgresql.insert(subscribers).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(subscribers).on_conflict_do_nothing(),
}
_INSERT_SUBSCRIPTIONS = {
    "postgresql": postgresql.insert(subscriptions).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(subscriptions).on_conflict_do_nothing(),
}
_REVIVABLE_STATUSES = {SubscriberStatus.UNSUBSCRIBED.value, SubscriberStatus.SUNSET.value}


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
        """Subscribe ``entries`` to ``list_id`` in one transaction (see the module doc)."""
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
                _ensure_subscribers(conn, [entry], self._now())
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
        if conn.execute(select(lists.c.id).where(lists.c.id == list_id)).first() is None:
            raise InvalidMessageError(f"no list with id {list_id!r}", "list_ids")
        now = self._now()
        people = _ensure_subscribers(conn, entries, now)
        ids = sorted({people[e.email].id for e in entries})
        current = {
            row.subscriber_id: row
            for row in conn.execute(
                # Only the columns needed: converting every timestamp of a 1,000-row batch
                # cost a third of an import's time inside the write transaction.
                select(
                    subscriptions.c.subscriber_id,
                    subscriptions.c.status,
                    subscriptions.c.consent_expires_at,
                ).where(subscriptions.c.list_id == list_id, subscriptions.c.subscriber_id.in_(ids))
            )
        }
        results: list[Subscribed] = []
        consents: list[dict[str, Any]] = []
        done: set[str] = set()
        new_rows: list[dict[str, Any]] = []
        for entry in entries:
            person = people[entry.email]
            if person.id in done:  # a file may name an address twice: the first one counts
                results.append(Subscribed(person.id, person.email, "unchanged", None))
                continue
            done.add(person.id)
            result = self._subscribe_one(
                conn,
                list_id,
                entry,
                person,
                current.get(person.id),
                pending,
                resubscribe,
                now,
                new_rows,
            )
            results.append(result)
            if result.outcome in ("created", "updated"):
                consents.append(
                    consent_row(person.id, list_id, entry.consent, self.implied_consent_days, now)
                )
        if new_rows:
            conn.execute(_INSERT_SUBSCRIPTIONS[conn.dialect.name], new_rows)
        record_consents(conn, consents)
        return results

    def _subscribe_one(
        self,
        conn: Connection,
        list_id: str,
        entry: NewSubscriber,
        person: _Person,
        existing: Row[Any, Any, Any] | None,
        pending: bool,
        resubscribe: bool,
        now: datetime,
        new_rows: list[dict[str, Any]],
    ) -> Subscribed:
        def outcome(what: str, status: str | None, reason: str | None = None) -> Subscribed:
            return Subscribed(
                person.id,
                person.email,
                what,
                SubscriptionStatus(status) if status else None,
                reason,
            )

        status_ok = person.status is SubscriberStatus.ACTIVE or (
            resubscribe and person.status.value in _REVIVABLE_STATUSES
        )
        if not status_ok:
            return outcome("skipped", None, f"the subscriber is {person.status.value}")
        expiry = entry.consent.expires_at(self.implied_consent_days)
        if expiry is not None and expiry <= now:
            return outcome("skipped", None, "implied consent given then has expired")
        wanted = SubscriptionStatus.PENDING if pending else SubscriptionStatus.ACTIVE
        if existing is None:
            new_rows.append(  # inserted together after the batch: one statement, not 1,000
                {
                    "list_id": list_id,
                    "subscriber_id": person.id,
                    "status": wanted.value,
                    "consent": entry.consent.kind.value,
                    "consent_expires_at": expiry,
                    "created_at": now,
                    "updated_at": now,
                    "confirmed_at": None if pending else now,
                    "unsubscribed_at": None,
                }
            )
            return outcome("created", wanted.value)
        changes: dict[str, Any] = {}
        if existing.status == SubscriptionStatus.UNSUBSCRIBED.value:
            if not resubscribe:
                return outcome("skipped", existing.status, "unsubscribed from this list")
            changes = {"status": wanted.value, "unsubscribed_at": None}
            changes["confirmed_at"] = None if pending else now
        renews = entry.dated or entry.consent.kind is ConsentKind.EXPRESS
        if changes or (renews and stronger(entry.consent, expiry, existing.consent_expires_at)):
            changes |= {"consent": entry.consent.kind.value, "consent_expires_at": expiry}
        if not changes:
            return outcome("unchanged", existing.status)
        if person.status is not SubscriberStatus.ACTIVE:
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id == person.id)
                .values(status=SubscriberStatus.ACTIVE.value, updated_at=now)
            )
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.list_id == list_id, subscriptions.c.subscriber_id == person.id)
            .values(**changes, updated_at=now)
        )
        return outcome("updated", changes.get("status", existing.status))

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


def _ensure_subscribers(
    conn: Connection, entries: Sequence[NewSubscriber], now: datetime
) -> dict[str, _Person]:
    """Every entry's subscriber, created when new; a given name replaces the stored one."""
    emails = sorted({e.email for e in entries})
    names = {e.email: e.name for e in entries if e.name}
    rows = [
        {
            "id": str(ULID()),
            "email": email,
            "name": names.get(email),
            "status": SubscriberStatus.ACTIVE.value,
            "created_at": now,
            "updated_at": now,
        }
        for email in emails
    ]
    if rows:
        conn.execute(_INSERT_SUBSCRIBERS[conn.dialect.name], rows)
    columns = (subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.status)
    found = {
        r.email: r for r in conn.execute(select(*columns).where(subscribers.c.email.in_(emails)))
    }
    for email, name in names.items():
        if found[email].name != name:
            conn.execute(
                update(subscribers)
                .where(subscribers.c.email == email)
                .values(name=name, updated_at=now)
            )
    return {
        email: _Person(row.id, email, SubscriberStatus(row.status)) for email, row in found.items()
    }


@dataclass(frozen=True, slots=True)
class _Person:
    id: str
    email: str
    status: SubscriberStatus
