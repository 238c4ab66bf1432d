"""The SQS backend beyond the shared contract, against moto in server mode: wiring from
POSTROOM_QUEUE_URL, delays longer than SQS's 15 minutes, documents other producers sent, and a
worker delivering through it."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiobotocore.session import get_session
from tests.conftest import RunningWorker, make_settings
from tests.fakes import FakeProvider
from tests.moto_server import delete_sqs_queues, moto_endpoint

from postroom.messages import EmailEvent, Priority
from postroom.queue import sqs_messages as sm
from postroom.queue.base import OutgoingMessage
from postroom.queue.sqs import SqsQueue
from postroom.store.database import open_database
from postroom.submission import submit
from postroom.wiring import build_queue, open_postroom, prepare_database


@pytest.fixture
def moto_server() -> str:
    return moto_endpoint()


@pytest.fixture
async def prefix(moto_server: str) -> AsyncIterator[str]:
    name = f"postroom-test-{secrets.token_hex(4)}"
    yield name
    await delete_sqs_queues(moto_server, name)


async def send_raw(endpoint: str, queue_name: str, body: str, **attributes: str) -> None:
    async with get_session().create_client(
        "sqs", region_name="us-east-1", endpoint_url=endpoint
    ) as sqs:
        url = (await sqs.get_queue_url(QueueName=queue_name))["QueueUrl"]
        await sqs.send_message(
            QueueUrl=url,
            MessageBody=body,
            MessageAttributes={
                name: {"DataType": "Number", "StringValue": value}
                for name, value in attributes.items()
            },
        )


async def test_settings_choose_sqs(moto_server: str, prefix: str, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        queue_url=f"sqs://?region=us-east-1&prefix={prefix}",
        sqs_endpoint_url=moto_server,
        max_deliveries=4,
    )
    db = open_database(settings.resolved_database_url)
    queue = build_queue(settings, db)
    try:
        assert isinstance(queue, SqsQueue)
        await queue.enqueue([OutgoingMessage("m1", Priority.CRITICAL, b'{"a": 1}')])
        (delivery,) = await queue.receive(10, 30)
        assert (delivery.id, delivery.priority, delivery.body) == (
            "m1",
            Priority.CRITICAL,
            b'{"a": 1}',
        )
        assert await queue.ack([delivery]) == 1
    finally:
        await queue.close()
        await db.dispose()


async def test_not_before_keeps_a_message_hidden_until_due(moto_server: str, prefix: str) -> None:
    queue = SqsQueue(region="us-east-1", prefix=prefix, endpoint_url=moto_server)
    try:
        await queue.depth()  # creates the queues
        name = sm.queue_name(prefix, Priority.TRANSACTIONAL)
        await send_raw(
            moto_server, name, '{"due": "later"}', **{sm.NOT_BEFORE: str(time.time() + 3600)}
        )
        await send_raw(moto_server, name, '{"due": "now"}', **{sm.NOT_BEFORE: str(time.time() - 1)})

        deliveries = await queue.receive(10, 30)

        assert [d.body for d in deliveries] == [b'{"due": "now"}']
        # The early one was received and hidden again for the rest of its delay.
        assert (await queue.depth())[Priority.TRANSACTIONAL] == 2
        assert await queue.receive(10, 30) == []
    finally:
        await queue.close()


async def test_a_retry_past_15_minutes_is_delayed_and_carries_a_not_before(
    moto_server: str, prefix: str
) -> None:
    queue = SqsQueue(region="us-east-1", prefix=prefix, endpoint_url=moto_server)
    try:
        await queue.enqueue([OutgoingMessage("m1", Priority.MARKETING, b"{}")])
        (held,) = await queue.receive(1, 30)

        assert await queue.retry(held, 4 * 3600, "rate limited") is True

        async with get_session().create_client(
            "sqs", region_name="us-east-1", endpoint_url=moto_server
        ) as sqs:
            url = (await sqs.get_queue_url(QueueName=sm.queue_name(prefix, Priority.MARKETING)))[
                "QueueUrl"
            ]
            counts = await sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessagesDelayed",
                    "ApproximateNumberOfMessages",
                ],
            )
        assert counts["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
        assert counts["Attributes"]["ApproximateNumberOfMessages"] == "0"
        assert await queue.ack([held]) == 0  # the retry ended that lease
    finally:
        await queue.close()


async def test_a_document_another_producer_sent(moto_server: str, prefix: str) -> None:
    queue = SqsQueue(region="us-east-1", prefix=prefix, endpoint_url=moto_server)
    try:
        await queue.depth()
        await send_raw(moto_server, sm.queue_name(prefix, Priority.CRITICAL), '{"email_type": "x"}')

        (delivery,) = await queue.receive(10, 30)

        assert (delivery.priority, delivery.body, delivery.attempt) == (
            Priority.CRITICAL,
            b'{"email_type": "x"}',
            0,
        )
        assert delivery.id  # SQS's own message id
        assert await queue.dead_letter(delivery, "invalid document") is True
        letter = await queue.dlq_get(delivery.id)
        assert letter is not None
        assert (letter.priority, letter.reason) == (Priority.CRITICAL, "invalid document")
    finally:
        await queue.close()


async def test_a_worker_on_sqs_delivers(moto_server: str, prefix: str, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        queue_url=f"sqs://?region=us-east-1&prefix={prefix}&endpoint={moto_server}",
    )
    provider = FakeProvider()
    await prepare_database(settings)
    postroom = await open_postroom(settings, provider=provider)
    try:
        running = RunningWorker(postroom)
        try:
            event = EmailEvent(
                email_type="welcome",
                recipient_email="reader@example.com",
                template_data={"creator_name": "Jane"},
            )
            await submit(postroom, [event])

            async def delivered_and_acked() -> bool:
                depth = await postroom.queue.depth()
                return len(provider.delivered) == 1 and sum(depth.values()) == 0

            await running.until(delivered_and_acked)
        finally:
            await running.shutdown()
        assert [e.recipient for e in provider.delivered] == ["reader@example.com"]
    finally:
        await postroom.close()
