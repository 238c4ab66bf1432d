"""Consent records: who agreed to which list, when, how and from where (CASL, GDPR Art. 7).

Express consent (a subscriber asked, or confirmed a double opt-in link) does not expire.
Implied consent (an existing business relationship, such as a purchase) lasts two years from
when it was given under CASL, configurable with ``POSTROOM_IMPLIED_CONSENT_DAYS``; the
subscription carries its expiry so a campaign can leave expired consent out without a join.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from postroom.store.schema import consent_records


class ConsentKind(StrEnum):
    EXPRESS = "express"
    IMPLIED = "implied"


@dataclass(frozen=True, slots=True)
class Consent:
    """A consent as given: ``at`` is when (not when we recorded it), ``ip`` where from."""

    kind: ConsentKind
    source: str
    at: datetime
    ip: str | None = None

    def expires_at(self, implied_days: int) -> datetime | None:
        if self.kind is ConsentKind.EXPRESS:
            return None
        return self.at + timedelta(days=implied_days)


def stronger(new: Consent, new_expiry: datetime | None, old_expiry: datetime | None) -> bool:
    """Whether ``new`` should become a subscription's current consent over one expiring at
    ``old_expiry`` (None: express, never expires, so nothing is stronger): express beats
    implied, a later expiry an earlier one."""
    if old_expiry is None:
        return False
    return new_expiry is None or new_expiry > old_expiry


_INSERT_ONCE = {
    "postgresql": postgresql.insert(consent_records).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(consent_records).on_conflict_do_nothing(),
}


def record_consents(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert consent records (``consent_row``), skipping any recorded before."""
    if rows:
        conn.execute(_INSERT_ONCE[conn.dialect.name], rows)


def consent_row(
    subscriber_id: str, list_id: str, consent: Consent, implied_days: int, now: datetime
) -> dict[str, Any]:
    return {
        "subscriber_id": subscriber_id,
        "list_id": list_id,
        "kind": consent.kind.value,
        "source": consent.source,
        "ip": consent.ip,
        "consented_at": consent.at,
        "expires_at": consent.expires_at(implied_days),
        "recorded_at": now,
    }
