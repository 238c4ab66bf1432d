"""The RabbitMQ layout of the queue seam: names, queue arguments and wait tiers, declared
idempotently; the headers a Postroom message carries through it; broker errors mapped to ours.

::

    producers ──► {prefix}.work (direct exchange, routing key = priority class)
                     ├─► {prefix}.critical        quorum, x-delivery-limit ─┐
                     ├─► {prefix}.transactional   quorum, x-delivery-limit ─┼─► {prefix}.dead
                     └─► {prefix}.marketing       quorum, x-delivery-limit ─┘   (dead-letter queue)
    retry/release ──► {prefix}.wait.{class}.{tier}   quorum, x-message-ttl = tier,
                                                     dead-letters back to {prefix}.work

RabbitMQ expires messages only at the head of a queue, so every wait queue holds one delay
(its tier) and a message goes to the smallest tier not shorter than its delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, HeadersType
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelPreconditionFailed

from postroom.errors import ConfigurationError, QueueError
from postroom.messages import Priority
from postroom.queue.base import DeadLetter

CLASSES = tuple(sorted(Priority, key=lambda priority: priority.rank))
DEFAULT_WAIT_TIERS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0)
"""Delays (seconds) with a wait queue each; the worker's retry schedule and lease are added."""

# Headers Postroom sets; a message without them (an external producer's) is a first delivery.
ATTEMPT = "postroom-attempt"
LAST_ERROR = "postroom-error"
# Times are whole epoch milliseconds: AMQP header floats are 32 bits (a 128 s resolution today).
NOT_BEFORE = "postroom-not-before"  # a delay longer than the longest tier
REASON = "postroom-reason"
PRIORITY = "postroom-priority"
DEAD_AT = "postroom-dead-at"
DELIVERY_COUNT = "x-delivery-count"  # set by quorum queues: earlier hand-outs of this copy
# Long reasons and errors would not fit a header frame (frame_max, 128 KiB by default).
HEADER_TEXT_LIMIT = 2000

_DEAD_LETTER_SAFELY = {
    # Dead-letter from a quorum queue only once the target queue has confirmed the message.
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",  # required by at-least-once; no length limit is set
}


BROKER_ERRORS = (AMQPError, ChannelInvalidStateError, OSError, asyncio.TimeoutError)


@contextlib.contextmanager
def broker_errors(doing: str) -> Iterator[None]:
    """Broker and connection failures as :class:`QueueError`; a refused declaration (the
    queues exist with other arguments) as :class:`ConfigurationError`."""
    try:
        yield
    except QueueError:
        raise
    except ChannelPreconditionFailed as exc:
        raise ConfigurationError(
            f"RabbitMQ refused the queue layout ({exc}); a queue exists with other arguments "
            "(a changed max_deliveries?): delete it, or use another prefix"
        ) from exc
    except BROKER_ERRORS as exc:
        raise QueueError(f"RabbitMQ: {doing} failed: {exc!r}") from exc


def tier_name(tier: float) -> str:
    milliseconds = round(tier * 1000)
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


@dataclass(frozen=True)
class Topology:
    """The names and arguments of one Postroom installation's exchanges and queues."""

    prefix: str
    tiers: tuple[float, ...]
    max_deliveries: int

    @classmethod
    def build(cls, prefix: str, tiers: Iterable[float], max_deliveries: int) -> Topology:
        # Tiers are whole milliseconds (x-message-ttl); duplicates after rounding are one queue.
        rounded = sorted({round(tier, 3) for tier in tiers if tier > 0})
        if not rounded:
            raise ValueError("at least one wait tier is needed")
        return cls(prefix, tuple(rounded), max_deliveries)

    @property
    def work_exchange(self) -> str:
        return f"{self.prefix}.work"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    def work_queue(self, priority: Priority) -> str:
        return f"{self.prefix}.{priority.value}"

    def wait_queue(self, priority: Priority, tier: float) -> str:
        return f"{self.prefix}.wait.{priority.value}.{tier_name(tier)}"

    def queues_of(self, priority: Priority) -> list[str]:
        """The work queue and every wait queue of one class (what ``depth`` counts)."""
        return [self.work_queue(priority)] + [self.wait_queue(priority, t) for t in self.tiers]

    def tier_for(self, delay: float) -> float:
        """The smallest tier not shorter than ``delay`` (a delay is never shortened), or the
        longest tier when ``delay`` is longer than all of them (the caller adds a not-before)."""
        return next((tier for tier in self.tiers if tier >= delay), self.tiers[-1])

    def work_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            # Quorum queues count returns (crash, lease expiry); past the limit the message is
            # dead-lettered. The limit counts returns, max_deliveries counts hand-outs.
            "x-delivery-limit": self.max_deliveries - 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_queue,
            **_DEAD_LETTER_SAFELY,
        }

    def wait_arguments(self, priority: Priority, tier: float) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": round(tier * 1000),
            "x-dead-letter-exchange": self.work_exchange,
            "x-dead-letter-routing-key": priority.value,
            **_DEAD_LETTER_SAFELY,
        }


async def declare(channel: AbstractChannel, topology: Topology) -> None:
    """Declare everything; a no-op when it exists with the same arguments. Different arguments
    (another max_deliveries, say) make RabbitMQ refuse with PRECONDITION_FAILED."""
    work = await channel.declare_exchange(
        topology.work_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    # A classic queue: reading the DLQ returns messages unacked, which a quorum queue would
    # count as deliveries (and RabbitMQ 4 drops quorum messages after 20 of them).
    await channel.declare_queue(
        topology.dead_queue, durable=True, arguments={"x-queue-type": "classic"}
    )
    for priority in CLASSES:
        queue = await channel.declare_queue(
            topology.work_queue(priority), durable=True, arguments=topology.work_arguments()
        )
        await queue.bind(work, routing_key=priority.value)
        for tier in topology.tiers:
            await channel.declare_queue(
                topology.wait_queue(priority, tier),
                durable=True,
                arguments=topology.wait_arguments(priority, tier),
            )


async def delete(channel: AbstractChannel, topology: Topology) -> None:
    """Remove every queue and the exchange (tests, uninstall). Missing ones are skipped."""
    for priority in CLASSES:
        for name in topology.queues_of(priority):
            await channel.queue_delete(name)
    await channel.queue_delete(topology.dead_queue)
    await channel.exchange_delete(topology.work_exchange)


def message_id(message: AbstractIncomingMessage) -> str:
    """The AMQP message_id, or one derived from the body for a producer that set none (stable
    across redeliveries, so a dead letter can be found again by it)."""
    return message.message_id or f"sha256-{hashlib.sha256(message.body).hexdigest()[:32]}"


def header_int(headers: Mapping[str, Any], name: str) -> int:
    value = headers.get(name)
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def epoch_millis(seconds: float) -> int:
    """A time for a header (see NOT_BEFORE)."""
    return round(seconds * 1000)


def header_time(headers: Mapping[str, Any], name: str) -> float | None:
    """A time header (epoch milliseconds) as epoch seconds."""
    value = headers.get(name)
    try:
        return int(value) / 1000 if value is not None else None
    except (TypeError, ValueError):
        return None


def header_text(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def copy_of(message: AbstractIncomingMessage, **headers: Any) -> aio_pika.Message:
    """A persistent copy to republish, with the broker's own ``x-`` headers left behind (they
    describe the old copy) and ``headers`` set (None removes one)."""
    kept: HeadersType = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            kept.pop(name, None)
        else:
            kept[name] = value[:HEADER_TEXT_LIMIT] if isinstance(value, str) else value
    return aio_pika.Message(
        message.body,
        message_id=message_id(message),
        headers=kept,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def dead_letter_of(message: AbstractIncomingMessage, max_deliveries: int) -> DeadLetter:
    """A DLQ message as a :class:`DeadLetter`: put there by ``dead_letter`` (our headers) or
    by RabbitMQ itself (the ``x-death`` header), e.g. on reaching the delivery limit."""
    headers: Mapping[str, Any] = message.headers or {}
    deaths = headers.get("x-death")
    death: Mapping[str, Any] = deaths[0] if isinstance(deaths, list) and deaths else {}
    reason = header_text(headers, REASON) or _broker_reason(death, max_deliveries)
    dead_at_epoch = header_time(headers, DEAD_AT)
    if dead_at_epoch is not None:
        dead_at = datetime.fromtimestamp(dead_at_epoch, UTC)
    elif isinstance(death.get("time"), datetime):
        dead_at = death["time"].astimezone(UTC)
    else:
        dead_at = message.timestamp.astimezone(UTC) if message.timestamp else datetime.now(UTC)
    return DeadLetter(
        id=message_id(message),
        priority=_priority_of(headers, death),
        body=message.body,
        reason=reason,
        attempt=header_int(headers, ATTEMPT),
        dead_at=dead_at,
    )


def _broker_reason(death: Mapping[str, Any], max_deliveries: int) -> str:
    why = header_text(death, "reason") or "unknown"
    if why == "delivery_limit":
        return f"delivery limit reached: handed out {max_deliveries} times without an outcome"
    return f"dead-lettered by RabbitMQ ({why}) from {header_text(death, 'queue') or '?'}"


def _priority_of(headers: Mapping[str, Any], death: Mapping[str, Any]) -> Priority:
    keys = death.get("routing-keys")
    candidates = [header_text(headers, PRIORITY)]
    if isinstance(keys, list) and keys:
        candidates.append(str(keys[0]))
    known = {priority.value: priority for priority in Priority}
    return next((known[c] for c in candidates if c in known), Priority.TRANSACTIONAL)
