"""The send ledger's records: states, new rows, stored rows, attempts and outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ulid import ULID

from postroom.messages import EmailEvent


class SendStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    DEAD = "dead"
    AMBIGUOUS = "ambiguous"


# Rows a worker may move to ``sending``. Failed and dead rows qualify because the only way a
# message for them reaches a worker again is an operator's DLQ replay (or a producer re-sending
# the same key after a failure), both of which mean "try again".
SENDABLE = (
    SendStatus.QUEUED,
    SendStatus.RETRY_SCHEDULED,
    SendStatus.AMBIGUOUS,
    SendStatus.FAILED,
    SendStatus.DEAD,
)
FINAL = (SendStatus.SENT, SendStatus.SUPPRESSED)


@dataclass(frozen=True, slots=True)
class NewSend:
    id: str
    idempotency_key: str
    recipient: str
    email_type: str
    priority: str
    document: bytes
    content_hash: str

    @classmethod
    def for_event(cls, event: EmailEvent, priority: str) -> NewSend:
        """A row for ``event`` (its idempotency key should be pinned already)."""
        return cls(
            id=str(ULID()),
            idempotency_key=event.effective_idempotency_key(),
            recipient=event.recipient_key,
            email_type=event.email_type,
            priority=priority,
            document=event.to_json(),
            content_hash=event.content_hash(),
        )


@dataclass(frozen=True, slots=True)
class SendRecord:
    id: str
    idempotency_key: str
    recipient: str
    email_type: str
    priority: str
    status: SendStatus
    attempts: int
    content_hash: str
    message_id: str | None
    provider: str | None
    provider_message_id: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    attempt: int
    outcome: str
    provider: str | None
    provider_message_id: str | None
    error: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one hand-over attempt, to be recorded."""

    send_id: str
    status: SendStatus
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None
