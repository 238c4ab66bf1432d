"""Accepting email events from the API, the CLI or Python: validate, record, enqueue.

The ledger row is committed before the queue message is published. If publishing fails the
caller gets an error and the row stays ``queued``; sending the same document again (same
idempotency key) publishes it then, so a failed enqueue is never a lost email.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postroom.errors import InvalidMessageError
from postroom.messages import EmailEvent, Priority
from postroom.queue.base import OutgoingMessage, joining
from postroom.store.ledger import NewSend, SendRecord, SendStatus
from postroom.wiring import Postroom


@dataclass(frozen=True, slots=True)
class Accepted:
    id: str
    idempotency_key: str
    recipient: str
    status: SendStatus
    duplicate: bool


def check_renderable(postroom: Postroom, event: EmailEvent) -> None:
    """Refuse now what the worker could never send: unknown type, unsafe subject."""
    postroom.registry.get(event.email_type).check_data(event.template_data)
    postroom.renderer.check_subject(event)


def priority_of(postroom: Postroom, event: EmailEvent) -> Priority:
    return event.priority or postroom.registry.get(event.email_type).priority


async def submit(
    postroom: Postroom, events: Sequence[EmailEvent], *, checked: bool = False
) -> list[Accepted]:
    """Record and enqueue ``events``; all are checked before anything is written.

    Raises :class:`IdempotencyConflictError` when a key was used before with another document,
    and the errors of :func:`check_renderable` (unless the caller ran it: ``checked``).
    """
    if not checked:
        for event in events:
            check_renderable(postroom, event)
    new = [NewSend.for_event(e, priority_of(postroom, e).value) for e in map(_with_key, events)]
    _refuse_oversize(new, postroom.settings.max_document_bytes)
    _refuse_conflicts_within(new)

    def publishable(rows: list[tuple[SendRecord, bool]]) -> list[OutgoingMessage]:
        # Rows come back in the order of ``new``, and conflicts were refused, so each row's
        # document is the one we hold. A row still ``queued`` that we did not create may have
        # missed its enqueue (a failure after an earlier commit): publishing it again is safe,
        # the SQL queue deduplicates and workers check the ledger.
        return [
            OutgoingMessage(id=record.id, priority=Priority(record.priority), body=send.document)
            for send, (record, _created) in zip(new, rows, strict=True)
            if record.status is SendStatus.QUEUED
        ]

    queue = postroom.queue
    if (joined := joining(queue, postroom.db)) is not None:
        # Same database: ledger rows and queue jobs commit together, nothing in between.
        rows = await postroom.ledger.create_many(
            new,
            refuse_conflicts=True,
            then=lambda conn, rows: joined.enqueue_within(conn, publishable(rows)),
        )
    else:
        rows = await postroom.ledger.create_many(new, refuse_conflicts=True)
        await queue.enqueue(publishable(rows))
    if any(record.status is SendStatus.QUEUED for record, _ in rows):
        postroom.wake_workers()
    return [
        Accepted(
            id=record.id,
            idempotency_key=record.idempotency_key,
            recipient=record.recipient,
            status=record.status,
            duplicate=not created,
        )
        for record, created in rows
    ]


def _refuse_oversize(new: Sequence[NewSend], limit: int) -> None:
    """Measured as queued, derived key included: a worker measures the same bytes."""
    for index, send in enumerate(new):
        if len(send.document) > limit:
            where = f" (document {index})" if len(new) > 1 else ""
            raise InvalidMessageError(
                f"document is {len(send.document)} bytes with its idempotency key; "
                f"the limit is {limit}{where}"
            )


def _refuse_conflicts_within(new: Sequence[NewSend]) -> None:
    """Two documents of one request with the same key and recipient must be the same email;
    different ones are a mistake in the request, told before anything is written."""
    first: dict[tuple[str, str], tuple[int, str]] = {}
    for index, send in enumerate(new):
        seen = first.setdefault((send.idempotency_key, send.recipient), (index, send.content_hash))
        if seen[1] != send.content_hash:
            raise InvalidMessageError(
                f"documents {seen[0]} and {index} share an idempotency key and recipient "
                "but differ",
                field="idempotency_key",
            )


def _with_key(event: EmailEvent) -> EmailEvent:
    """Pin the derived key into the document so every consumer derives nothing again."""
    if event.idempotency_key:
        return event
    return event.model_copy(update={"idempotency_key": event.effective_idempotency_key()})
