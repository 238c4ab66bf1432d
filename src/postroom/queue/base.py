"""The queue contract every backend satisfies (run by ``tests/contract/test_queue_contract.py``).

Delivery is at least once. A received message is leased, not removed: it comes back to some
receiver when the lease runs out unless it was acked, retried or dead-lettered first. Ack,
retry and dead-letter are idempotent and must not fail when the lease has already expired and
another receiver holds the message: they then do nothing and return ``False``.

``receive`` drains the priority classes in order (critical, transactional, marketing): a
message of a higher class ready to go is always handed out before one of a lower class.
Within a class, messages come roughly in the order they became available.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from postroom.messages import Priority


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to enqueue. ``id`` deduplicates enqueues where the backend can (SQL)."""

    id: str
    priority: Priority
    body: bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """A leased message. ``attempt`` counts retries scheduled so far (0 on first delivery);
    ``deliveries`` counts how often it was handed out, crashes included."""

    id: str
    priority: Priority
    body: bytes
    attempt: int
    deliveries: int
    receipt: str  # the lease: proves this receiver still holds the message


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message parked in the dead-letter queue with why it is there."""

    id: str
    priority: Priority
    body: bytes
    reason: str
    attempt: int
    dead_at: datetime


class QueueBackend(Protocol):
    """A durable queue with one logical queue per :class:`Priority`."""

    async def enqueue(self, messages: Sequence[OutgoingMessage]) -> None:
        """Store all of ``messages`` durably before returning (all or nothing where possible)."""
        ...

    async def receive(self, max_messages: int, lease_seconds: float) -> list[Delivery]:
        """Lease up to ``max_messages`` ready messages, most urgent class first. Never blocks
        long: returns an empty list when nothing is ready."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Remove handled messages; returns how many were still held by this receiver."""
        ...

    async def extend(self, deliveries: Sequence[Delivery], lease_seconds: float) -> int:
        """Hold still-held messages for another ``lease_seconds`` from now (a worker whose
        hand-over runs long keeps its messages); returns how many were still held."""
        ...

    async def retry(self, delivery: Delivery, delay_seconds: float, error: str) -> bool:
        """Make the message available again after ``delay_seconds`` with ``attempt + 1``."""
        ...

    async def release(self, delivery: Delivery, delay_seconds: float = 0.0) -> bool:
        """Give the message back without counting an attempt (shutdown, busy resource)."""
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        """Move the message to the dead-letter queue with ``reason``."""
        ...

    async def dlq_list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        ...

    async def dlq_get(self, message_id: str) -> DeadLetter | None: ...

    async def dlq_replay(self, message_ids: Sequence[str] | None = None) -> int:
        """Put dead letters back on their queue with ``attempt`` reset; ``None`` means all.
        Returns how many were replayed."""
        ...

    async def dlq_purge(self, message_ids: Sequence[str] | None = None) -> int:
        """Delete dead letters for good; ``None`` means all. Returns how many."""
        ...

    async def depth(self) -> dict[Priority, int]:
        """Messages waiting or leased, per class (for health and metrics)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class JoinsTransactions(Protocol):
    """A queue that lives in the application database and can take part in a transaction
    the caller holds, so that ledger rows and queue state commit together (the SQL queue).

    ``conn`` is the store's transaction handle; a caller uses these only when
    :meth:`shares` says the queue is in the same database.
    """

    def shares(self, db: object) -> bool: ...

    def enqueue_within(self, conn: Any, messages: Sequence[OutgoingMessage]) -> None: ...

    def ack_within(self, conn: Any, deliveries: Sequence[Delivery]) -> int: ...

    def retry_within(
        self, conn: Any, delivery: Delivery, delay_seconds: float, error: str
    ) -> bool: ...

    def release_within(self, conn: Any, delivery: Delivery, delay_seconds: float = 0.0) -> bool: ...

    def dead_letter_within(self, conn: Any, delivery: Delivery, reason: str) -> bool: ...


class DeadLetterStore(Protocol):
    """A broker's dead-letter queue, read and changed the slow way brokers allow."""

    async def page(self, limit: int, offset: int) -> list[DeadLetter]: ...

    async def find(self, message_id: str) -> DeadLetter | None: ...

    async def replay(self, message_ids: Sequence[str] | None) -> int: ...

    async def purge(self, message_ids: Sequence[str] | None) -> int: ...


class DeadLettersElsewhere:
    """The DLQ operations of a broker backend whose dead letters live in a
    :class:`DeadLetterStore` of their own (RabbitMQ, SQS)."""

    async def _dead_letters(self) -> DeadLetterStore:
        raise NotImplementedError

    async def dlq_list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        return await (await self._dead_letters()).page(limit, offset)

    async def dlq_get(self, message_id: str) -> DeadLetter | None:
        return await (await self._dead_letters()).find(message_id)

    async def dlq_replay(self, message_ids: Sequence[str] | None = None) -> int:
        return await (await self._dead_letters()).replay(message_ids)

    async def dlq_purge(self, message_ids: Sequence[str] | None = None) -> int:
        return await (await self._dead_letters()).purge(message_ids)


@dataclass(frozen=True, slots=True)
class Backlog:
    """How far behind a queue is: the oldest waiting message's age per class, and how many
    messages are dead-lettered."""

    oldest_age: dict[Priority, float]
    dead_letters: int


@runtime_checkable
class ReportsBacklog(Protocol):
    """A queue that can say :class:`Backlog` cheaply (for metrics and alerts)."""

    async def backlog(self) -> Backlog: ...


def joining(queue: QueueBackend, db: object) -> JoinsTransactions | None:
    """``queue`` as a participant in ``db``'s transactions, or None when it cannot be one."""
    if isinstance(queue, JoinsTransactions) and queue.shares(db):
        return queue
    return None
