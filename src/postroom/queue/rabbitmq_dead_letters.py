"""The dead-letter queue operations of the RabbitMQ backend, over ``{prefix}.dead``.

AMQP cannot look into a queue. Each operation reads the DLQ one ``basic.get`` at a time on a
channel of its own and leaves what it reads unacked, so the next ``get`` moves on; it acks what
it takes away, and closing the channel puts back the rest, in place. The cost is a round trip
per dead letter read: up to ``offset + limit`` for a page, up to the one asked for by ``find``,
the whole queue for replay and purge by id; purging everything is one ``queue.purge``. Two
operations at once see each other's unread part only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from postroom.queue import rabbitmq_topology as topo
from postroom.queue.base import DeadLetter
from postroom.queue.rabbitmq_topology import broker_errors


class DeadLetterReader:
    """Reads, replays and purges dead letters; ``work`` is the exchange replays go to."""

    def __init__(
        self, connection: AbstractRobustConnection, work: AbstractExchange, topology: topo.Topology
    ) -> None:
        self._connection = connection
        self._work = work
        self._topology = topology

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[AbstractQueue]:
        with broker_errors("reading the dead-letter queue"):
            channel = await self._connection.channel(publisher_confirms=False)
            try:
                yield await channel.get_queue(self._topology.dead_queue, ensure=False)
            finally:
                await channel.close()

    def _letter(self, message: AbstractIncomingMessage) -> DeadLetter:
        return topo.dead_letter_of(message, self._topology.max_deliveries)

    async def page(self, limit: int, offset: int) -> list[DeadLetter]:
        read: list[AbstractIncomingMessage] = []
        async with self._reading() as queue:
            while len(read) < offset + limit and (message := await _next(queue)):
                read.append(message)
        return [self._letter(message) for message in read[offset:]]

    async def find(self, message_id: str) -> DeadLetter | None:
        async with self._reading() as queue:
            while message := await _next(queue):
                if topo.message_id(message) == message_id:
                    return self._letter(message)
        return None

    async def replay(self, message_ids: Sequence[str] | None) -> int:
        """Publish the chosen letters to their class with a fresh attempt count (confirmed),
        then ack them out of the DLQ."""
        wanted = None if message_ids is None else set(message_ids)
        replayed = 0
        async with self._reading() as queue:
            while message := await _next(queue):
                if wanted is not None and topo.message_id(message) not in wanted:
                    continue
                fresh = topo.copy_of(
                    message,
                    postroom_attempt=None,
                    postroom_error=None,
                    postroom_reason=None,
                    postroom_dead_at=None,
                    postroom_priority=None,
                )
                routing_key = self._letter(message).priority.value
                with broker_errors("replaying a dead letter"):
                    await self._work.publish(fresh, routing_key=routing_key, mandatory=True)
                    await message.ack()
                replayed += 1
        return replayed

    async def purge(self, message_ids: Sequence[str] | None) -> int:
        async with self._reading() as queue:
            if message_ids is None:
                with broker_errors("purging the dead-letter queue"):
                    result = await queue.purge()
                return int(getattr(result, "message_count", 0) or 0)
            wanted = set(message_ids)
            purged = 0
            while message := await _next(queue):
                if topo.message_id(message) in wanted:
                    with broker_errors("purging a dead letter"):
                        await message.ack()
                    purged += 1
            return purged


async def _next(queue: AbstractQueue) -> AbstractIncomingMessage | None:
    """The next dead letter, left unacked, or None at the end of the queue."""
    return await queue.get(no_ack=False, fail=False)
