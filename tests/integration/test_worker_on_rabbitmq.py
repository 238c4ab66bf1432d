"""A worker on the RabbitMQ backend, wired from POSTROOM_QUEUE_URL: a document another service
publishes straight onto the exchange is delivered like one submitted through the API, and an
invalid one lands in the dead-letter queue with the validation error."""

from __future__ import annotations

from pathlib import Path

import aio_pika
import orjson
from tests.conftest import RunningWorker, make_settings
from tests.contract.rabbitmq_broker import RABBITMQ_URL, throwaway_prefix
from tests.fakes import FakeProvider

from postroom.messages import EmailEvent
from postroom.queue import rabbitmq_topology
from postroom.queue.rabbitmq import RabbitMqQueue
from postroom.submission import submit
from postroom.wiring import open_postroom, prepare_database

RETRY_SCHEDULE = (0.05, 0.1)
LEASE = 5.0


async def publish_from_outside(exchange: str, document: dict[str, object]) -> None:
    """What a service in any language does: the §3 document, routing key = class."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        work = await channel.get_exchange(exchange)
        message = aio_pika.Message(
            orjson.dumps(document), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await work.publish(message, routing_key="transactional", mandatory=True)


async def test_external_and_api_documents_are_delivered(tmp_path: Path) -> None:
    # The wiring declares a wait queue for the default tiers, the retry schedule and the lease.
    tiers = (*rabbitmq_topology.DEFAULT_WAIT_TIERS, *RETRY_SCHEDULE, LEASE)
    async with throwaway_prefix(tiers) as prefix:
        settings = make_settings(
            tmp_path,
            queue_url=f"{RABBITMQ_URL}?prefix={prefix}",
            retry_schedule=list(RETRY_SCHEDULE),
            lease_seconds=LEASE,
        )
        provider = FakeProvider()
        await prepare_database(settings)
        postroom = await open_postroom(settings, provider=provider)
        try:
            assert isinstance(postroom.queue, RabbitMqQueue)
            exchange = postroom.queue.topology.work_exchange
            running = RunningWorker(postroom)
            try:
                await submit(
                    postroom,
                    [
                        EmailEvent(
                            email_type="welcome",
                            recipient_email="api@example.com",
                            template_data={"creator_name": "Jane"},
                        )
                    ],
                )
                await publish_from_outside(
                    exchange,
                    {
                        "email_type": "welcome",
                        "recipient_email": "outside@example.com",
                        "template_data": {"creator_name": "Jane"},
                        "metadata": {"user_id": "u-1"},
                    },
                )
                await publish_from_outside(exchange, {"email_type": "welcome"})

                async def delivered_and_parked() -> bool:
                    return (
                        len(provider.delivered) == 2 and len(await postroom.queue.dlq_list()) == 1
                    )

                await running.until(delivered_and_parked)
            finally:
                await running.shutdown()

            assert sorted(e.recipient for e in provider.delivered) == [
                "api@example.com",
                "outside@example.com",
            ]
            (letter,) = await postroom.queue.dlq_list()
            assert "recipient_email" in letter.reason
            assert orjson.loads(letter.body) == {"email_type": "welcome"}
            assert sum((await postroom.queue.depth()).values()) == 0
        finally:
            await postroom.close()
