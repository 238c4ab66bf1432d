"""The RabbitMQ backend beyond the shared contract, on the local broker: external producers,
unroutable publishes, delays longer than every wait tier, and a connection the broker closes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator

import aio_pika
import orjson
import pytest
from tests.conftest import require_service
from tests.contract.rabbitmq_broker import RABBITMQ_URL, throwaway_prefix

from postroom.errors import QueueError
from postroom.messages import Priority
from postroom.queue.base import OutgoingMessage
from postroom.queue.rabbitmq import RabbitMqQueue

TIERS = (0.2, 0.5)
DOCUMENT = orjson.dumps(
    {"email_type": "welcome", "recipient_email": "reader@example.com", "template_data": {}}
)


@pytest.fixture
async def queue() -> AsyncIterator[RabbitMqQueue]:
    async with throwaway_prefix(TIERS) as prefix:
        handle = RabbitMqQueue(RABBITMQ_URL, prefix=prefix, wait_tiers=TIERS)
        try:
            yield handle
        finally:
            await handle.close()


async def publish_from_outside(queue: RabbitMqQueue, body: bytes, **properties: str) -> None:
    """What another service does: the plain document, routing key = class, no headers."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(queue.topology.work_exchange)
        await exchange.publish(aio_pika.Message(body, **properties), routing_key="critical")


async def test_an_external_document_is_a_first_delivery(queue: RabbitMqQueue) -> None:
    await queue.depth()  # declares the topology, as a running worker would have
    await publish_from_outside(queue, DOCUMENT)
    await publish_from_outside(queue, DOCUMENT, message_id="order-17")

    first, second = await queue.receive(10, 30)

    assert (first.priority, first.body, first.attempt, first.deliveries) == (
        Priority.CRITICAL,
        DOCUMENT,
        0,
        1,
    )
    assert first.id  # aio-pika sets a random message_id when the producer gives none
    assert second.id == "order-17"
    assert await queue.retry(first, 0, "transient") is True
    (again,) = await queue.receive(10, 30)
    assert (again.id, again.attempt) == (first.id, 1)


async def test_receive_on_an_empty_queue_returns_at_once(queue: RabbitMqQueue) -> None:
    await queue.receive(1, 30)  # starts the consumers
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await queue.receive(64, 30) == []
    assert loop.time() - started < 0.5  # receive_wait is 50 ms


async def test_an_unroutable_publish_is_an_error_not_a_loss(queue: RabbitMqQueue) -> None:
    await queue.depth()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        marketing = await channel.get_queue(queue.topology.work_queue(Priority.MARKETING))
        await marketing.unbind(queue.topology.work_exchange, routing_key="marketing")

    with pytest.raises(QueueError, match="NO_ROUTE"):
        await queue.enqueue([OutgoingMessage("m1", Priority.MARKETING, b"{}")])
    await queue.enqueue([OutgoingMessage("t1", Priority.TRANSACTIONAL, b"{}")])  # still fine


async def test_a_delay_longer_than_every_tier_is_served_in_full(queue: RabbitMqQueue) -> None:
    await queue.enqueue([OutgoingMessage("m1", Priority.TRANSACTIONAL, b"{}")])
    (held,) = await queue.receive(1, 30)
    started = asyncio.get_running_loop().time()

    assert await queue.retry(held, 1.2, "try later") is True  # the longest tier is 0.5 s

    # It passes through the 0.5 s wait queue twice or more, handed out only when due.
    while not (deliveries := await queue.receive(1, 30)):
        assert asyncio.get_running_loop().time() - started < 5
    waited = asyncio.get_running_loop().time() - started
    assert 1.2 <= waited < 2.5
    assert (deliveries[0].id, deliveries[0].attempt) == ("m1", 1)


def close_from_the_broker(connection_name: str) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl")
    require_service(rabbitmqctl is not None, "rabbitmqctl (to close a connection)")
    assert rabbitmqctl is not None
    listed = subprocess.run(
        [rabbitmqctl, "-q", "--no-table-headers", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    (pid,) = [line.split("\t")[0] for line in listed.splitlines() if connection_name in line]
    subprocess.run(
        [rabbitmqctl, "-q", "close_connection", pid, "test: connection lost"],
        check=True,
        timeout=30,
    )


async def test_the_connection_comes_back_after_the_broker_closes_it(
    queue: RabbitMqQueue,
) -> None:
    await queue.enqueue([OutgoingMessage("m1", Priority.TRANSACTIONAL, b"{}")])
    (lost,) = await queue.receive(1, 30)

    await asyncio.to_thread(close_from_the_broker, queue.connection_name)

    # The broker took the unacked message back; it comes again on the new connection.
    for _ in range(100):
        if deliveries := await queue.receive(1, 30):
            break
    assert [(d.id, d.deliveries) for d in deliveries] == [("m1", 2)]
    assert await queue.ack([lost]) == 0  # its channel is gone
    assert await queue.ack(deliveries) == 1
    await queue.enqueue([OutgoingMessage("m2", Priority.TRANSACTIONAL, b"{}")])
    assert [d.id for d in await queue.receive(1, 30)] == ["m2"]


async def test_transactional_mail_is_claimed_ahead_of_a_large_marketing_backlog(
    queue: RabbitMqQueue,
) -> None:
    backlog = [OutgoingMessage(f"m{i:05}", Priority.MARKETING, b"{}") for i in range(10_000)]
    for start in range(0, len(backlog), 1000):
        await queue.enqueue(backlog[start : start + 1000])
    first = await queue.receive(64, 30)  # the worker is busy with the newsletter …
    assert {d.priority for d in first} == {Priority.MARKETING}

    await queue.enqueue([OutgoingMessage("t1", Priority.TRANSACTIONAL, b"{}")])
    # The broker pushes it to this consumer a few milliseconds later (more on a loaded
    # machine); a claim made before it arrives cannot know of it.
    await asyncio.sleep(0.2)
    batch = await queue.receive(64, 30)

    # … and the next claim starts with the transactional message all the same.
    assert batch[0].id == "t1"
    assert [d.priority for d in batch[1:]] == [Priority.MARKETING] * 63
    assert (await queue.depth())[Priority.MARKETING] == 10_000
