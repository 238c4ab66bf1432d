"""The RabbitMQ queue backend (``POSTROOM_QUEUE_URL=amqp://…`` or ``amqps://…``), on aio-pika.

Layout and headers: :mod:`postroom.queue.rabbitmq_topology`. One connection per handle
(``connect_robust``: it reconnects and restores the topology and the consumers by itself).

* **Publishing** waits for publisher confirms and is ``mandatory``: an unroutable message is a
  :class:`~postroom.errors.QueueError`, not a silent loss.
* **Receiving** consumes all three class queues on one channel with a per-consumer prefetch,
  into one buffer per class; ``receive`` hands out what is buffered, most urgent class first,
  waiting at most ``receive_wait`` when nothing is. Consumers start on the first ``receive``,
  so a handle that only publishes (the API, the CLI) never holds messages.
* **Leases** are kept by the handle (:mod:`postroom.queue.rabbitmq_leases`): a handed-out
  message that is not settled or extended within its lease is returned to the queue (``nack``
  with requeue) and goes to the next receiver, as with the SQL backend. ``extend`` pushes that
  local deadline; it asks nothing of the broker.
* **Retry and release** publish a copy (attempt + 1 for a retry) to the wait queue of the
  smallest tier not shorter than the delay, then ack the original; a delay longer than every
  tier carries a not-before header and is parked again on arrival.
* **Dead letters** go to ``{prefix}.dead`` with the reason, attempt and last error in headers;
  quorum queues move a message returned more often than ``max_deliveries - 1`` times there
  themselves (``x-delivery-limit``). DLQ operations: :mod:`postroom.queue.rabbitmq_dead_letters`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from postroom.errors import ConfigurationError, QueueError
from postroom.messages import Priority
from postroom.queue import rabbitmq_topology as topo
from postroom.queue.base import DeadLettersElsewhere, Delivery, OutgoingMessage
from postroom.queue.rabbitmq_dead_letters import DeadLetterReader
from postroom.queue.rabbitmq_leases import Leases, alive, give_back, settle
from postroom.queue.rabbitmq_topology import BROKER_ERRORS, broker_errors

log = logging.getLogger("postroom.queue.rabbitmq")

# After the consumers start, wait this long at most for the broker's first deliveries, so the
# first receive sees what was already queued (and hands out the most urgent of it).
_FIRST_FILL_WAIT = 0.5
# How long a publish waits for a lost connection to come back before it fails.
_RECONNECT_WAIT = 10.0
# How long a pause in deliveries ends a receive's batch (see ``_collect``).
_SETTLE = 0.005
# Our options in the URL's query; the rest of the URL goes to aio-pika as it is.
_URL_OPTIONS = ("prefix", "prefetch")


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without our options (``prefix``, ``prefetch``), and those options."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in _URL_OPTIONS}
    rest = urlencode([(k, v) for k, v in query if k not in _URL_OPTIONS])
    return urlunsplit(parts._replace(query=rest)), ours


class RabbitMqQueue(DeadLettersElsewhere):
    """:class:`~postroom.queue.base.QueueBackend` on RabbitMQ quorum queues."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "postroom",
        max_deliveries: int = 10,
        prefetch: int = 256,
        wait_tiers: Iterable[float] = topo.DEFAULT_WAIT_TIERS,
        receive_wait: float = 0.05,
    ) -> None:
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            raise ConfigurationError(
                f"not a RabbitMQ URL (amqp:// or amqps://): {urlsplit(url).scheme}://…"
            )
        self._url = url
        self.topology = topo.Topology.build(prefix, wait_tiers, max_deliveries)
        self._prefetch = prefetch
        self._receive_wait = receive_wait
        self._lock = asyncio.Lock()
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._work: AbstractExchange | None = None
        self._consuming = False
        self._buffers: dict[Priority, deque[AbstractIncomingMessage]] = {
            priority: deque() for priority in topo.CLASSES
        }
        self._arrived = asyncio.Event()
        self._token = secrets.token_hex(4)
        self._leases = Leases(self._token)
        # Shown by `rabbitmqctl list_connections client_properties` and the management UI.
        self.connection_name = f"postroom {prefix} pid {os.getpid()} {self._token}"

    @classmethod
    def from_url(
        cls, url: str, *, max_deliveries: int = 10, extra_wait_tiers: Iterable[float] = ()
    ) -> RabbitMqQueue:
        """From ``amqp[s]://user:password@host:port/vhost[?prefix=postroom&prefetch=256]``;
        the wait tiers are the default ones and ``extra_wait_tiers`` (the retry schedule)."""
        broker_url, options = split_url(url)
        try:
            prefetch = int(options.get("prefetch", "256"))
        except ValueError:
            prefetch = 0
        if prefetch < 1:
            raise ConfigurationError("POSTROOM_QUEUE_URL: prefetch must be a positive integer")
        return cls(
            broker_url,
            prefix=options.get("prefix", "postroom"),
            max_deliveries=max_deliveries,
            prefetch=prefetch,
            wait_tiers=[*topo.DEFAULT_WAIT_TIERS, *extra_wait_tiers],
        )

    # -- connection, topology, consumers ------------------------------------------------

    async def _ready(self) -> tuple[AbstractRobustChannel, AbstractExchange]:
        if self._publisher is None or self._work is None:
            async with self._lock:
                if self._publisher is None:
                    await self._connect()
        assert self._publisher is not None and self._work is not None
        try:
            # After a lost connection, wait (a while) for connect_robust to restore the channel
            # rather than fail every publish in the meantime.
            await asyncio.wait_for(self._publisher.ready(), _RECONNECT_WAIT)
        except TimeoutError as exc:
            raise QueueError(
                f"RabbitMQ: not connected again within {_RECONNECT_WAIT:.0f} s"
            ) from exc
        return self._publisher, self._work

    async def _connect(self) -> None:
        with broker_errors("connecting"):
            connection = await aio_pika.connect_robust(
                self._url, client_properties={"connection_name": self.connection_name}
            )
            try:
                publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
                await topo.declare(publisher, self.topology)
                self._work = await publisher.get_exchange(self.topology.work_exchange, ensure=False)
            except BaseException:
                await connection.close()
                raise
        self._connection, self._publisher = connection, publisher

    async def _start_consuming(self) -> None:
        if self._consuming:
            return
        await self._ready()
        async with self._lock:
            if self._consuming:
                return
            assert self._connection is not None
            with broker_errors("starting consumers"):
                channel = await self._connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=self._prefetch)
                expected = 0
                for priority in topo.CLASSES:
                    queue = await channel.get_queue(self.topology.work_queue(priority))
                    ready = getattr(queue.declaration_result, "message_count", 0) or 0
                    expected += min(ready, self._prefetch)
                    await queue.consume(functools.partial(self._on_message, priority))
            self._consuming = True
            await self._await_first_fill(expected)

    async def _await_first_fill(self, expected: int) -> None:
        deadline = time.monotonic() + _FIRST_FILL_WAIT
        while self._buffered() < expected and (left := deadline - time.monotonic()) > 0:
            await self._next_arrival(left)

    async def _on_message(self, priority: Priority, message: AbstractIncomingMessage) -> None:
        self._buffers[priority].append(message)
        self._arrived.set()

    def _buffered(self) -> int:
        return sum(len(buffer) for buffer in self._buffers.values())

    # -- the protocol ----------------------------------------------------------------

    async def enqueue(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        _, work = await self._ready()
        publishes = [
            work.publish(
                aio_pika.Message(
                    m.body, message_id=m.id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                routing_key=m.priority.value,
                mandatory=True,
            )
            for m in messages
        ]
        # One channel keeps the order; a failure leaves the messages before it published.
        with broker_errors(f"publishing {len(messages)} messages"):
            await asyncio.gather(*publishes)

    async def receive(self, max_messages: int, lease_seconds: float) -> list[Delivery]:
        await self._start_consuming()
        await self._collect(max_messages)
        deliveries: list[Delivery] = []
        now = time.time()
        for priority in topo.CLASSES:
            buffer = self._buffers[priority]
            while buffer and len(deliveries) < max_messages:
                message = buffer.popleft()
                if not alive(message):
                    continue  # its channel closed: the broker has requeued it
                not_before = topo.header_time(message.headers or {}, topo.NOT_BEFORE)
                if not_before is not None and not_before > now:
                    await self._park(message, priority, not_before - now)
                    continue
                deliveries.append(self._leases.lease(message, priority, lease_seconds))
        return deliveries

    async def _collect(self, wanted: int) -> None:
        """Wait up to ``receive_wait`` for a first delivery, then while more keep coming (a
        gap of ``_SETTLE`` ends it) and fewer than ``wanted`` are buffered: messages the broker
        is still sending (published a moment ago, a higher class among them) join this batch.
        Never longer than ``receive_wait`` in all, however the deliveries trickle in."""
        deadline = time.monotonic() + self._receive_wait
        if not self._buffered() and not await self._next_arrival(self._receive_wait):
            return
        while self._buffered() < wanted and time.monotonic() < deadline:
            if not await self._next_arrival(_SETTLE):
                return

    async def _next_arrival(self, within: float) -> bool:
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), within)
        except TimeoutError:
            return False
        return True

    async def ack(self, deliveries: Sequence[Delivery]) -> int:
        acked = 0
        for delivery in deliveries:
            held = self._leases.take(delivery)
            if held is not None and await settle(held.message):
                acked += 1
        return acked

    async def extend(self, deliveries: Sequence[Delivery], lease_seconds: float) -> int:
        return self._leases.extend(deliveries, lease_seconds)

    async def retry(self, delivery: Delivery, delay_seconds: float, error: str) -> bool:
        return await self._republish(
            delivery, delay_seconds, postroom_attempt=delivery.attempt + 1, postroom_error=error
        )

    async def release(self, delivery: Delivery, delay_seconds: float = 0.0) -> bool:
        # A copy rather than a requeue: a quorum queue counts every requeue towards the
        # delivery limit, and a release is not a failed delivery.
        return await self._republish(delivery, delay_seconds)

    async def _republish(self, delivery: Delivery, delay: float, **headers: Any) -> bool:
        held = self._leases.take(delivery)
        if held is None or not alive(held.message):
            return False
        try:
            await self._publish_delayed(held.message, delivery.priority, delay, **headers)
        except QueueError:
            await give_back(held.message)  # it comes back now rather than never
            raise
        return await settle(held.message)

    async def _park(
        self, message: AbstractIncomingMessage, priority: Priority, delay: float
    ) -> None:
        """Send a message back to wait for the rest of a delay longer than every tier."""
        try:
            await self._publish_delayed(message, priority, delay)
        except QueueError:
            log.exception("could not park a delayed message; it is returned to the queue")
            await give_back(message)
            return
        await settle(message)

    async def _publish_delayed(
        self, message: AbstractIncomingMessage, priority: Priority, delay: float, **headers: Any
    ) -> None:
        publisher, work = await self._ready()
        if delay <= 0:
            copy = topo.copy_of(message, postroom_not_before=None, **headers)
            with broker_errors("publishing a retry"):
                await work.publish(copy, routing_key=priority.value, mandatory=True)
            return
        tier = self.topology.tier_for(delay)
        not_before = topo.epoch_millis(time.time() + delay) if delay > tier else None
        copy = topo.copy_of(message, postroom_not_before=not_before, **headers)
        with broker_errors("publishing a delayed retry"):
            await publisher.default_exchange.publish(
                copy, routing_key=self.topology.wait_queue(priority, tier), mandatory=True
            )

    async def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        held = self._leases.take(delivery)
        if held is None or not alive(held.message):
            return False
        letter = topo.copy_of(
            held.message,
            postroom_reason=reason,
            postroom_attempt=delivery.attempt,
            postroom_priority=delivery.priority.value,
            postroom_dead_at=topo.epoch_millis(time.time()),
            postroom_not_before=None,
        )
        try:
            publisher, _ = await self._ready()
            with broker_errors("dead-lettering"):
                await publisher.default_exchange.publish(
                    letter, routing_key=self.topology.dead_queue, mandatory=True
                )
        except QueueError:
            await give_back(held.message)
            raise
        return await settle(held.message)

    # -- the dead-letter queue (rabbitmq_dead_letters) --------------------------------------

    async def _dead_letters(self) -> DeadLetterReader:
        _, work = await self._ready()
        assert self._connection is not None
        return DeadLetterReader(self._connection, work, self.topology)

    # -- counts and shutdown ---------------------------------------------------------------

    async def depth(self) -> dict[Priority, int]:
        """Ready messages (work and wait queues, as the broker counts them) plus the messages
        this handle has buffered or leased. Messages other processes hold unacked are not
        counted: AMQP reports only ready messages."""
        publisher, _ = await self._ready()
        counts = dict.fromkeys(Priority, 0)
        with broker_errors("counting messages"):
            channel = await publisher.get_underlay_channel()
            for priority in topo.CLASSES:
                for name in self.topology.queues_of(priority):
                    declared = await channel.queue_declare(name, passive=True)
                    counts[priority] += declared.message_count or 0
        for priority, buffer in self._buffers.items():
            counts[priority] += sum(1 for message in buffer if alive(message))
        for held in self._leases:
            counts[held.delivery.priority] += 1
        return counts

    async def close(self) -> None:
        """Close the connection: RabbitMQ returns every unacked message (leased or buffered)."""
        await self._leases.close()
        if self._connection is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                await self._connection.close()
        self._connection = self._publisher = self._work = None
        self._consuming = False
        for buffer in self._buffers.values():
            buffer.clear()
