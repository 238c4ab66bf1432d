"""What the audience repository reads and writes: statuses and records of subscribers, lists
and subscriptions (``store/subscribers.py`` and the modules it runs hold the queries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row

from postroom.store.consent import Consent, ConsentKind


class SubscriberStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    SUNSET = "sunset"
    ERASED = "erased"


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    PENDING = "pending"  # double opt-in: waiting for the confirm link


@dataclass(frozen=True, slots=True)
class NewSubscriber:
    """One address to subscribe: ``email`` already checked and lower-cased. ``dated`` is
    False when the consent time is only the time of an import (the file gave none): such a
    consent never renews an existing one, or importing a file twice would extend its
    implied consent each time."""

    email: str
    name: str | None
    consent: Consent
    dated: bool = True


@dataclass(frozen=True, slots=True)
class SubscriberRecord:
    id: str
    email: str
    name: str | None
    status: SubscriberStatus
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    list_id: str
    status: SubscriptionStatus
    consent: ConsentKind
    consent_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None


@dataclass(frozen=True, slots=True)
class ListRecord:
    id: str
    name: str
    creator: str
    created_at: datetime
    counts: dict[str, int] = field(default_factory=dict)  # subscriptions by status


@dataclass(frozen=True, slots=True)
class Subscribed:
    """What subscribing one address did: ``created`` (new subscription), ``updated``
    (stronger consent, or revived), ``unchanged``, or ``skipped`` with the reason."""

    subscriber_id: str
    email: str
    outcome: str
    status: SubscriptionStatus | None
    reason: str | None = None


def subscriber_from_row(row: Row[Any]) -> SubscriberRecord:
    return SubscriberRecord(
        id=row.id,
        email=row.email,
        name=row.name,
        status=SubscriberStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def subscription_from_row(row: Row[Any]) -> SubscriptionRecord:
    return SubscriptionRecord(
        list_id=row.list_id,
        status=SubscriptionStatus(row.status),
        consent=ConsentKind(row.consent),
        consent_expires_at=row.consent_expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        confirmed_at=row.confirmed_at,
        unsubscribed_at=row.unsubscribed_at,
    )
