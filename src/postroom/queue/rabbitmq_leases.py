"""The leases of the RabbitMQ backend: the messages a handle has handed out and not settled.

RabbitMQ itself keeps an unacked message with its consumer until the channel closes, so a
lease is a local timer: a message not settled or extended within it is returned to the queue
(``nack`` with requeue) and goes to the next receiver, as with the SQL backend. Also here: how
a held message is settled with the broker (ack) or given back (nack with requeue).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError, DeliveryError

from postroom.messages import Priority
from postroom.queue import rabbitmq_topology as topo
from postroom.queue.base import Delivery
from postroom.queue.rabbitmq_topology import BROKER_ERRORS

# The backend's logger: an expired lease is logged as the backend's doing.
log = logging.getLogger("postroom.queue.rabbitmq")


@dataclass(slots=True)
class Held:
    message: AbstractIncomingMessage
    delivery: Delivery
    timer: asyncio.TimerHandle


class Leases:
    """The messages one handle holds, by receipt (``{token}-{n}``), each with its timer."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._receipts = itertools.count(1)
        self._held: dict[str, Held] = {}
        self._background: set[asyncio.Task[None]] = set()

    def lease(
        self, message: AbstractIncomingMessage, priority: Priority, lease_seconds: float
    ) -> Delivery:
        headers = message.headers or {}
        delivery = Delivery(
            id=topo.message_id(message),
            priority=priority,
            body=message.body,
            attempt=topo.header_int(headers, topo.ATTEMPT),
            deliveries=topo.header_int(headers, topo.DELIVERY_COUNT) + 1,
            receipt=f"{self._token}-{next(self._receipts)}",
        )
        timer = self._expire_later(delivery.receipt, lease_seconds)
        self._held[delivery.receipt] = Held(message, delivery, timer)
        return delivery

    def take(self, delivery: Delivery) -> Held | None:
        """Stop the lease of ``delivery`` if this handle still holds it."""
        held = self._held.get(delivery.receipt)
        if held is None or held.delivery.id != delivery.id:
            return None
        del self._held[delivery.receipt]
        held.timer.cancel()
        return held

    def extend(self, deliveries: Sequence[Delivery], lease_seconds: float) -> int:
        extended = 0
        for delivery in deliveries:
            held = self._held.get(delivery.receipt)
            if held is None or held.delivery.id != delivery.id or not alive(held.message):
                continue
            held.timer.cancel()
            held.timer = self._expire_later(delivery.receipt, lease_seconds)
            extended += 1
        return extended

    def __iter__(self) -> Iterator[Held]:
        return iter(self._held.values())

    async def close(self) -> None:
        """Drop every lease (the caller closes the connection, which returns the messages)
        and wait for the give-backs of expired ones still under way."""
        for held in self._held.values():
            held.timer.cancel()
        self._held.clear()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _expire_later(self, receipt: str, lease_seconds: float) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(lease_seconds, self._expire, receipt)

    def _expire(self, receipt: str) -> None:
        held = self._held.pop(receipt, None)
        if held is not None:
            log.info("lease of message %s ran out; returning it to the queue", held.delivery.id)
            self._in_background(give_back(held.message))

    def _in_background(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def alive(message: AbstractIncomingMessage) -> bool:
    """Whether the channel the message came on is still open (acks are still possible)."""
    try:
        return not message.channel.is_closed
    except ChannelInvalidStateError:
        return False


async def settle(message: AbstractIncomingMessage) -> bool:
    """Ack; False when the channel closed meanwhile (the broker has requeued the message)."""
    try:
        await message.ack()
    except (*BROKER_ERRORS, DeliveryError):
        return False
    return True


async def give_back(message: AbstractIncomingMessage) -> None:
    with contextlib.suppress(*BROKER_ERRORS):
        await message.nack(requeue=True)
