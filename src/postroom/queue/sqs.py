"""The Amazon SQS queue backend (``POSTROOM_QUEUE_URL=sqs://?region=…&prefix=…``), on aiobotocore.

Queues ``{prefix}-critical``, ``{prefix}-transactional``, ``{prefix}-marketing`` (standard
queues) redrive to ``{prefix}-dead`` after ``max_deliveries`` receives. Message layout:
:mod:`postroom.queue.sqs_messages`.

* **Leases** are visibility timeouts (whole seconds, rounded up); the receipt handle is the
  lease receipt and ``extend`` is ChangeMessageVisibility. SQS may honour a delete with an
  out-of-date receipt handle, so each handle also keeps its leases' deadlines and does not
  settle a message whose lease it knows to have run out (it has gone, or will go, to the next
  receiver).
* **Receiving** short-polls the classes in order, critical first, and so never blocks.
* **Retry and release** send a copy (attempt + 1 for a retry) with ``DelaySeconds`` and delete
  the original. A delay over SQS's 15 minutes carries a not-before attribute; a receiver that
  gets the copy early hides it again (ChangeMessageVisibility, up to 12 h a time), which counts
  as a receive towards the redrive limit.
* **Dead letters** are sent to the DLQ with the reason, attempt and last error as attributes,
  then the original is deleted. DLQ operations: :mod:`postroom.queue.sqs_dead_letters`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from postroom.errors import QueueError
from postroom.messages import Priority
from postroom.queue import sqs_messages as sm
from postroom.queue.base import DeadLettersElsewhere, Delivery, OutgoingMessage
from postroom.queue.sqs_dead_letters import SqsDeadLetters, delete_received
from postroom.queue.sqs_messages import aws_errors


@dataclass(slots=True)
class _Lease:
    delivery: Delivery
    queue_url: str
    message: Mapping[str, Any]
    deadline: float  # monotonic; never later than SQS's own


class SqsQueue(DeadLettersElsewhere):
    """:class:`~postroom.queue.base.QueueBackend` on Amazon SQS (or moto, localstack)."""

    # Standard queues are at least once even between live receivers: two receivers now and
    # then get the same message (the ledger makes the second a duplicate it acks).
    may_deliver_twice: ClassVar[bool] = True

    def __init__(
        self,
        *,
        region: str | None = None,
        prefix: str = "postroom",
        endpoint_url: str | None = None,
        max_deliveries: int = 10,
        dlq_wait_seconds: int = 1,
    ) -> None:
        self.region = region
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.max_deliveries = max_deliveries
        # Long polling asks every SQS server, so a DLQ read does not end early on a sample.
        self._dlq_wait = dlq_wait_seconds
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()
        self._client: Any = None
        self._urls: dict[Priority, str] = {}
        self._dead_url = ""
        self._leases: dict[str, _Lease] = {}

    @classmethod
    def from_url(
        cls, url: str, *, endpoint_url: str | None = None, max_deliveries: int = 10
    ) -> SqsQueue:
        """From ``sqs://?region=us-east-1&prefix=postroom[&endpoint=http://…]``; an endpoint
        in the URL wins over ``endpoint_url`` (POSTROOM_SQS_ENDPOINT_URL)."""
        where = sm.SqsLocation.parse(url)
        return cls(
            region=where.region,
            prefix=where.prefix,
            endpoint_url=where.endpoint_url or endpoint_url,
            max_deliveries=max_deliveries,
        )

    async def _sqs(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    with aws_errors("setting up the queues"):
                        await self._open()
        return self._client

    async def _open(self) -> None:
        client = await self._stack.enter_async_context(
            get_session().create_client(
                "sqs", region_name=self.region, endpoint_url=self.endpoint_url
            )
        )
        self._dead_url = await _ensure_queue(client, sm.dead_queue_name(self.prefix))
        arn = await client.get_queue_attributes(
            QueueUrl=self._dead_url, AttributeNames=["QueueArn"]
        )
        redrive = json.dumps(
            {
                "deadLetterTargetArn": arn["Attributes"]["QueueArn"],
                "maxReceiveCount": self.max_deliveries,
            }
        )
        for priority in sm.CLASSES:
            url = await _ensure_queue(client, sm.queue_name(self.prefix, priority))
            await client.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": redrive})
            self._urls[priority] = url
        self._client = client

    async def enqueue(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        sqs = await self._sqs()
        by_class: dict[Priority, list[dict[str, Any]]] = {}
        for m in messages:
            body, attributes = sm.encode_body(m.body)
            attributes |= {sm.ID: sm.string(m.id), sm.PRIORITY: sm.string(m.priority.value)}
            entry = {"MessageBody": body, "MessageAttributes": attributes}
            by_class.setdefault(m.priority, []).append(entry)

        async def send_in_order(priority: Priority, entries: list[dict[str, Any]]) -> int:
            # One batch after the other: SQS keeps roughly the order in which it was sent.
            failed = 0
            for batch in sm.batches(entries):
                result = await sqs.send_message_batch(QueueUrl=self._urls[priority], Entries=batch)
                failed += len(result.get("Failed", []))
            return failed

        with aws_errors(f"sending {len(messages)} messages"):
            failed = await asyncio.gather(*(send_in_order(*group) for group in by_class.items()))
        if sum(failed):
            raise QueueError(f"SQS refused {sum(failed)} of {len(messages)} messages")

    async def receive(self, max_messages: int, lease_seconds: float) -> list[Delivery]:
        sqs = await self._sqs()
        visibility = sm.seconds(lease_seconds, sm.MAX_VISIBILITY_SECONDS)
        deliveries: list[Delivery] = []
        for priority in sm.CLASSES:
            while len(deliveries) < max_messages:
                wanted = min(sm.BATCH_ENTRIES, max_messages - len(deliveries))
                started = time.monotonic()
                with aws_errors("receiving"):
                    response = await sqs.receive_message(
                        QueueUrl=self._urls[priority],
                        MaxNumberOfMessages=wanted,
                        VisibilityTimeout=visibility,
                        WaitTimeSeconds=0,
                        AttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                        MessageAttributeNames=["All"],
                    )
                received = response.get("Messages", [])
                for message in received:
                    if await self._hidden_until_due(priority, message):
                        continue
                    lease = self._lease(priority, message, started + visibility)
                    deliveries.append(lease.delivery)
                if len(received) < wanted:
                    break
        return deliveries

    async def _hidden_until_due(self, priority: Priority, message: Mapping[str, Any]) -> bool:
        """Hide a message whose not-before lies ahead for the rest of its delay. SQS hides a
        message for at most 12 h in all (counted here from its sending, to be safe); past
        that, a fresh copy carries the delay on."""
        not_before = sm.number_attribute(message, sm.NOT_BEFORE)
        now = time.time()
        if not_before is None or not_before <= now:
            return False
        sent = int(message.get("Attributes", {}).get("SentTimestamp", "0")) / 1000
        room = sm.MAX_VISIBILITY_SECONDS - (now - sent) - 60
        url = self._urls[priority]
        if room < 60:
            delay = min(not_before - now, sm.MAX_DELAY_SECONDS)
            await self._send_copy(url, message, sm.decode_body(message), priority, delay)
            await delete_received(self._client, url, [message])
            return True
        with aws_errors("hiding a delayed message"):
            await self._client.change_message_visibility(
                QueueUrl=url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=sm.seconds(min(not_before - now, room), round(room)),
            )
        return True

    def _lease(self, priority: Priority, message: Mapping[str, Any], deadline: float) -> _Lease:
        delivery = Delivery(
            id=sm.message_id(message),
            priority=priority,
            body=sm.decode_body(message),
            attempt=int(sm.number_attribute(message, sm.ATTEMPT) or 0),
            deliveries=sm.receive_count(message),
            receipt=message["ReceiptHandle"],
        )
        lease = _Lease(delivery, self._urls[priority], message, deadline)
        self._leases[delivery.receipt] = lease
        return lease

    def _take(self, delivery: Delivery) -> _Lease | None:
        """Forget the lease of ``delivery``; return it if it is still running."""
        lease = self._leases.pop(delivery.receipt, None)
        if lease is None or lease.delivery.id != delivery.id:
            return None
        return lease if time.monotonic() < lease.deadline else None

    async def ack(self, deliveries: Sequence[Delivery]) -> int:
        leases = [lease for d in deliveries if (lease := self._take(d)) is not None]
        return await self._delete(leases)

    async def _delete(self, leases: Sequence[_Lease]) -> int:
        by_queue: dict[str, list[Mapping[str, Any]]] = {}
        for lease in leases:
            by_queue.setdefault(lease.queue_url, []).append(lease.message)
        deleted = 0
        for url, messages in by_queue.items():
            deleted += await delete_received(self._client, url, messages)
        return deleted

    async def extend(self, deliveries: Sequence[Delivery], lease_seconds: float) -> int:
        visibility = sm.seconds(lease_seconds, sm.MAX_VISIBILITY_SECONDS)
        now = time.monotonic()
        live = [
            lease
            for d in deliveries
            if (lease := self._leases.get(d.receipt)) is not None and now < lease.deadline
        ]
        by_queue: dict[str, list[_Lease]] = {}
        for lease in live:
            by_queue.setdefault(lease.queue_url, []).append(lease)
        extended = 0
        for url, leases in by_queue.items():
            for chunk in sm.chunks(leases):
                entries = [
                    {
                        "Id": str(i),
                        "ReceiptHandle": held.delivery.receipt,
                        "VisibilityTimeout": visibility,
                    }
                    for i, held in enumerate(chunk)
                ]
                with aws_errors("extending leases"):
                    result = await self._client.change_message_visibility_batch(
                        QueueUrl=url, Entries=entries
                    )
                for success in result.get("Successful", []):
                    chunk[int(success["Id"])].deadline = now + visibility
                    extended += 1
        return extended

    async def retry(self, delivery: Delivery, delay_seconds: float, error: str) -> bool:
        return await self._resend(
            delivery, delay_seconds, attempt=delivery.attempt + 1, error=error
        )

    async def release(self, delivery: Delivery, delay_seconds: float = 0.0) -> bool:
        # A copy rather than a visibility change: that would count as a receive towards the
        # redrive limit, and a release is not a failed delivery.
        return await self._resend(delivery, delay_seconds)

    async def _resend(self, delivery: Delivery, delay: float, **changes: str | float) -> bool:
        lease = self._take(delivery)
        if lease is None:
            return False
        not_before = time.time() + delay if delay > sm.MAX_DELAY_SECONDS else None
        await self._send_copy(
            lease.queue_url,
            lease.message,
            delivery.body,
            delivery.priority,
            delay,
            not_before=not_before,
            **changes,
        )
        await self._delete([lease])
        return True

    async def _send_copy(
        self,
        url: str,
        message: Mapping[str, Any],
        body: bytes,
        priority: Priority,
        delay: float,
        **changes: str | float | None,
    ) -> None:
        text, encoding = sm.encode_body(body)
        attributes = sm.resend_attributes(message, priority, **changes)
        with aws_errors("sending a copy"):
            await self._client.send_message(
                QueueUrl=url,
                MessageBody=text,
                MessageAttributes=attributes | encoding,
                DelaySeconds=sm.seconds(delay, sm.MAX_DELAY_SECONDS),
            )

    async def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        lease = self._take(delivery)
        if lease is None:
            return False
        await self._send_copy(
            self._dead_url,
            lease.message,
            delivery.body,
            delivery.priority,
            0,
            reason=reason,
            attempt=delivery.attempt,
            dead_at=time.time(),
            not_before=None,
        )
        await self._delete([lease])
        return True

    # -- the dead-letter queue (sqs_dead_letters) ----------------------------------------

    async def _dead_letters(self) -> SqsDeadLetters:
        client = await self._sqs()
        return SqsDeadLetters(
            client, self._dead_url, self._urls, self.max_deliveries, self._dlq_wait
        )

    async def depth(self) -> dict[Priority, int]:
        """Waiting, delayed and in-flight messages per class, as SQS counts them
        (approximately, on real SQS)."""
        sqs = await self._sqs()
        counts = dict.fromkeys(Priority, 0)
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        for priority, url in self._urls.items():
            with aws_errors("counting messages"):
                result = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
            counts[priority] = sum(int(result["Attributes"].get(name, 0)) for name in names)
        return counts

    async def close(self) -> None:
        """Close the client; leased messages come back when their visibility runs out."""
        self._leases.clear()
        await self._stack.aclose()
        self._client = None


async def _ensure_queue(client: Any, name: str) -> str:
    try:
        result = await client.get_queue_url(QueueName=name)
    except ClientError as exc:
        if "NonExistentQueue" not in str(exc) and "QueueDoesNotExist" not in str(exc):
            raise
        result = await client.create_queue(QueueName=name)
    return str(result["QueueUrl"])
