"""The normalized feedback vocabulary every ESP's webhook events are mapped into.

The vocabulary is closed: an ESP event that fits none of the kinds below becomes ``ignored``
with the ESP's own kind kept in ``esp_event`` (and a short label in ``ignored_kind``), never an
exception. Ingestion dedupes on :attr:`NormalizedEvent.content_hash` because SendGrid re-sends
events with new event ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import Any

import orjson


class FeedbackType(StrEnum):
    DELIVERED = "delivered"
    BOUNCED_HARD = "bounced_hard"  # permanent recipient failure: suppress the address
    BOUNCED_SOFT = "bounced_soft"  # delivery ended for a temporary or non-address reason
    DEFERRED = "deferred"  # temporary failure in progress; the ESP retries
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    DROPPED = "dropped"  # the ESP refused to attempt delivery
    IGNORED = "ignored"  # valid, outside this vocabulary (accepted, resubscribed, SNS control)


# Fields that identify *what happened*: two deliveries of the same event agree on all of them
# even when the ESP gave the second one a new event id (SendGrid does), so the id, the SNS
# envelope id and the user agent are left out.
_HASHED_FIELDS = (
    "provider",
    "type",
    "esp_event",
    "recipient",
    "esp_message_id",
    "postroom_send_id",
    "occurred_at",
    "smtp_code",
    "enhanced_status",
    "diagnostic",
    "reason",
    "url",
    "ignored_kind",
    "scope",
)


@dataclass(frozen=True, slots=True)
class NormalizedEvent:
    """One feedback event about one recipient of one message."""

    provider: str
    type: FeedbackType
    esp_event: str  # the ESP's own name for the event ("bounce", "failed", "Bounce" ...)
    recipient: str | None  # lower-cased; None when the ESP did not say (a Postmark variant)
    occurred_at: datetime | None
    esp_message_id: str | None = None
    esp_event_id: str | None = None
    postroom_send_id: str | None = None
    postroom_message_id: str | None = None
    smtp_code: int | None = None
    enhanced_status: str | None = None  # RFC 3463, e.g. "5.1.1"
    diagnostic: str | None = None  # the remote server's words (or the ESP's, when it has none)
    reason: str | None = None  # the ESP's reason or classification ("Bounced Address" ...)
    url: str | None = None  # clicks
    user_agent: str | None = None  # opens and clicks
    machine_open: bool = False  # the open looks machine-made (Apple MPP, proxies, ESP flag)
    ignored_kind: str | None = None  # for ``ignored``: accepted, resubscribed, sns-<Type> ...
    scope: str | None = None  # unsubscribes: "global", "asm_group_id=10", a contact list
    # Ids under which our ledger may hold this message: SendGrid's API answers with a prefix
    # of the id its webhooks carry, Mailgun's with the id in angle brackets.
    lookup_ids: tuple[str, ...] = ()
    transport_id: str | None = None  # the SNS MessageId of the envelope that carried it
    subscribe_url: str | None = None  # SNS SubscriptionConfirmation: where to confirm

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) over the fields that say what happened; the dedupe key."""
        values = list(_HASHED_VALUES(self))
        if self.occurred_at is not None:
            values[_OCCURRED_AT] = self.occurred_at.isoformat()
        return hashlib.sha256(orjson.dumps(values)).hexdigest()

    def to_dict(self, content_hash: str | None = None) -> dict[str, Any]:
        """A JSON-ready dict (unset fields left out), with the content hash (pass it when
        already known: hashing is a good part of the cost)."""
        data: dict[str, Any] = {
            name: value
            for name, value in zip(_FIELD_NAMES, _ALL_VALUES(self), strict=True)
            if not (value is None or value is False or value == ())
        }
        data["type"] = self.type.value
        if self.occurred_at is not None:
            data["occurred_at"] = self.occurred_at.isoformat()
        if self.lookup_ids:
            data["lookup_ids"] = list(self.lookup_ids)
        data["content_hash"] = content_hash or self.content_hash
        return data

    def to_json(self, content_hash: str | None = None) -> bytes:
        return orjson.dumps(self.to_dict(content_hash))


_FIELD_NAMES = tuple(f.name for f in fields(NormalizedEvent))
# One C call fetches them all: a loop of getattr was a third of hashing and serializing.
_ALL_VALUES = attrgetter(*_FIELD_NAMES)
_HASHED_VALUES = attrgetter(*_HASHED_FIELDS)
_OCCURRED_AT = _HASHED_FIELDS.index("occurred_at")
