"""Subscribing a batch of addresses to a list (``Subscribers.subscribe`` / ``upsert`` run this
in a transaction).

Subscribing works on batches so that the API (one address) and a CSV import (a thousand rows
a transaction) take the same path. It is idempotent: subscribing an address again changes
nothing unless it brings stronger consent. An unsubscribed subscription is never revived by
an import, only by the subscriber asking again (``resubscribe``, the API).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update
from sqlalchemy.dialects import postgresql, sqlite
from ulid import ULID

from postroom.errors import InvalidMessageError
from postroom.store.audience import (
    NewSubscriber,
    Subscribed,
    SubscriberStatus,
    SubscriptionStatus,
)
from postroom.store.consent import ConsentKind, consent_row, record_consents, stronger
from postroom.store.schema import lists, subscribers, subscriptions

_INSERT_SUBSCRIBERS = {
    "postgresql": postgresql.insert(subscribers).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(subscribers).on_conflict_do_nothing(),
}
_INSERT_SUBSCRIPTIONS = {
    "postgresql": postgresql.insert(subscriptions).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(subscriptions).on_conflict_do_nothing(),
}
_REVIVABLE_STATUSES = {SubscriberStatus.UNSUBSCRIBED.value, SubscriberStatus.SUNSET.value}


def subscribe_within(
    conn: Connection,
    list_id: str,
    entries: Sequence[NewSubscriber],
    *,
    pending: bool,
    resubscribe: bool,
    clock: Callable[[], datetime],
    implied_consent_days: int,
) -> list[Subscribed]:
    """Subscribe ``entries`` to ``list_id`` in the caller's transaction (see the module doc)."""
    if conn.execute(select(lists.c.id).where(lists.c.id == list_id)).first() is None:
        raise InvalidMessageError(f"no list with id {list_id!r}", "list_ids")
    now = clock()
    people = ensure_subscribers(conn, entries, now)
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
        result = _subscribe_one(
            conn,
            list_id,
            entry,
            person,
            current.get(person.id),
            pending,
            resubscribe,
            now,
            new_rows,
            implied_consent_days,
        )
        results.append(result)
        if result.outcome in ("created", "updated"):
            consents.append(
                consent_row(person.id, list_id, entry.consent, implied_consent_days, now)
            )
    if new_rows:
        conn.execute(_INSERT_SUBSCRIPTIONS[conn.dialect.name], new_rows)
    record_consents(conn, consents)
    return results


def _subscribe_one(
    conn: Connection,
    list_id: str,
    entry: NewSubscriber,
    person: Person,
    existing: Row[Any, Any, Any] | None,
    pending: bool,
    resubscribe: bool,
    now: datetime,
    new_rows: list[dict[str, Any]],
    implied_consent_days: int,
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
    expiry = entry.consent.expires_at(implied_consent_days)
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


def ensure_subscribers(
    conn: Connection, entries: Sequence[NewSubscriber], now: datetime
) -> dict[str, Person]:
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
        email: Person(row.id, email, SubscriberStatus(row.status)) for email, row in found.items()
    }


@dataclass(frozen=True, slots=True)
class Person:
    """A subscriber as subscribing needs it."""

    id: str
    email: str
    status: SubscriberStatus
