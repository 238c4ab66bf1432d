"""Everything held about one address: exported on request (GDPR Art. 15, 20) and erased on
request (Art. 17), keeping only the suppression hash so the address is never mailed again.

The address appears in: the subscriber and its subscriptions and consent records; the send
ledger (``sends.recipient``, the queued document, errors that quote it) with its attempts and
feedback; webhook events (recipient and raw payload); SQL-queue jobs and dead letters of those
sends; the suppression list and its removal records. Erasure deletes the rows (ledger rows of
the address go: an audit of them would itself be personal data), and leaves the subscriber as
a tombstone with status ``erased`` and no address. ``sends`` has no index on ``recipient``
alone (the ledger's insert path stays as it is), so a request scans it: rare, and offline work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, delete, or_, select, update

from postroom.store.database import Database
from postroom.store.schema import (
    campaign_recipients,
    consent_records,
    dead_letters,
    events,
    lists,
    queue_jobs,
    send_attempts,
    send_feedback,
    sends,
    subscribers,
    subscriptions,
)
from postroom.store.subscribers import SubscriberStatus
from postroom.store.suppressions import Suppressions, address_hash

_CHUNK = 500  # ids per IN list


@dataclass(frozen=True, slots=True)
class Erased:
    """How many rows of each kind an erasure removed."""

    counts: dict[str, int]


def _document(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def _plain(row: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    # str(): SQLAlchemy's column names are a str subclass, which orjson refuses as keys.
    return {str(k): v for k, v in row._mapping.items() if k not in drop}


class PersonalData:
    """Export and erasure of one address across every table."""

    def __init__(
        self,
        db: Database,
        suppressions: Suppressions,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self._suppressions = suppressions
        self._now = clock or (lambda: datetime.now(UTC))

    async def export(self, email: str) -> dict[str, Any]:
        """Everything held about ``email`` as plain data (datetimes left as datetimes)."""
        key = email.lower()
        held = await self._db.read(lambda conn: _export_within(conn, key))
        held["suppressions"] = [
            {
                "scope": s.scope.value,
                "reason": s.reason,
                "detail": s.detail,
                "created_at": s.created_at,
            }
            for s in await self._suppressions.get(key)
        ]
        held["suppression_removals"] = await self._suppressions.removals(key)
        return held

    async def erase(self, email: str) -> Erased:
        """Remove everything held about ``email`` in one transaction, and suppress its hash
        for every kind of mail."""
        key = email.lower()

        def work(conn: Connection) -> Erased:
            counts = _erase_within(conn, key)
            self._suppressions.erase_within(conn, key, detail=f"erased {self._now():%Y-%m-%d}")
            return Erased(counts)

        return await self._db.write(work)


def _send_ids(conn: Connection, key: str) -> list[str]:
    return list(conn.execute(select(sends.c.id).where(sends.c.recipient == key)).scalars())


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _export_within(conn: Connection, key: str) -> dict[str, Any]:
    person = conn.execute(select(subscribers).where(subscribers.c.email == key)).first()
    held: dict[str, Any] = {"email": key, "address_hash": address_hash(key)}
    held["subscriber"] = _plain(person) if person else None
    held["subscriptions"] = []
    held["campaigns"] = []
    held["consent_records"] = []
    if person is not None:
        subs = conn.execute(
            select(subscriptions, lists.c.name.label("list_name"), lists.c.creator)
            .join(lists, lists.c.id == subscriptions.c.list_id)
            .where(subscriptions.c.subscriber_id == person.id)
            .order_by(subscriptions.c.list_id)
        )
        held["subscriptions"] = [_plain(r, ("subscriber_id",)) for r in subs]
        consents = conn.execute(
            select(consent_records)
            .where(consent_records.c.subscriber_id == person.id)
            .order_by(consent_records.c.id)
        )
        held["consent_records"] = [_plain(r, ("id", "subscriber_id")) for r in consents]
        held["campaigns"] = [
            _plain(r, ("subscriber_id", "email", "name"))
            for r in conn.execute(
                select(campaign_recipients)
                .where(campaign_recipients.c.subscriber_id == person.id)
                .order_by(campaign_recipients.c.campaign_id)
            )
        ]
    ids = _send_ids(conn, key)
    held["sends"] = []
    for chunk in _chunks(ids):
        for row in conn.execute(select(sends).where(sends.c.id.in_(chunk)).order_by(sends.c.id)):
            send = _plain(row, ("document", "content_hash"))
            send["document"] = _document(row.document)
            send["attempts"] = [
                _plain(a, ("id", "send_id"))
                for a in conn.execute(
                    select(send_attempts)
                    .where(send_attempts.c.send_id == row.id)
                    .order_by(send_attempts.c.id)
                )
            ]
            held["sends"].append(send)
    held["events"] = [
        {**_plain(r, ("payload", "dedupe_key", "event_key")), "payload": _document(r.payload)}
        for r in conn.execute(_events_of(key, ids).order_by(events.c.occurred_at))
    ]
    return held


def _events_of(key: str, send_ids: list[str]) -> Any:
    match = events.c.recipient == key
    if send_ids:
        match = or_(match, *(events.c.send_id.in_(c) for c in _chunks(send_ids)))
    return select(events).where(match)


def _erase_within(conn: Connection, key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    ids = _send_ids(conn, key)
    counts["events"] = conn.execute(delete(events).where(events.c.recipient == key)).rowcount
    for chunk in _chunks(ids):
        counts["events"] += conn.execute(delete(events).where(events.c.send_id.in_(chunk))).rowcount
        # The SQL queue keys a job by its send id; its body is the document, address and all.
        for table, name in ((queue_jobs, "queue_jobs"), (dead_letters, "dead_letters")):
            gone = conn.execute(delete(table).where(table.c.id.in_(chunk))).rowcount
            counts[name] = counts.get(name, 0) + gone
        conn.execute(delete(send_attempts).where(send_attempts.c.send_id.in_(chunk)))
        conn.execute(delete(send_feedback).where(send_feedback.c.send_id.in_(chunk)))
    conn.execute(delete(send_feedback).where(send_feedback.c.recipient == key))
    counts["sends"] = conn.execute(delete(sends).where(sends.c.recipient == key)).rowcount
    person = conn.execute(select(subscribers.c.id).where(subscribers.c.email == key)).first()
    counts["subscriptions"] = counts["consent_records"] = 0
    if person is not None:
        counts["consent_records"] = conn.execute(
            delete(consent_records).where(consent_records.c.subscriber_id == person.id)
        ).rowcount
        counts["subscriptions"] = conn.execute(
            delete(subscriptions).where(subscriptions.c.subscriber_id == person.id)
        ).rowcount
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == person.id)
            .values(email=None, name=None, status=SubscriberStatus.ERASED.value)
        )
        # Campaigns keep their recipient rows as their record, without the address. (No
        # index on subscriber_id: an erasure scans them, which is rare enough to afford.)
        counts["campaign_recipients"] = conn.execute(
            update(campaign_recipients)
            .where(campaign_recipients.c.subscriber_id == person.id)
            .values(email=None, name=None)
        ).rowcount
    counts["subscriber"] = 1 if person is not None else 0
    return counts
