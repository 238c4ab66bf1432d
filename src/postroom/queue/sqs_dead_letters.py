"""The dead-letter queue operations of the SQS backend, over ``{prefix}-dead``.

SQS cannot look into a queue either: each operation receives the whole DLQ, 10 messages a
request, hiding what it has read (long polling, so that an empty answer means empty rather than
"not on the servers sampled"), deletes what it takes away and makes the rest visible again at
once. The cost is about one request per 10 dead letters, plus a second of waiting at the end.
Letters are ordered by when they died, as SQS keeps no order of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from postroom.errors import QueueError
from postroom.messages import Priority
from postroom.queue import sqs_messages as sm
from postroom.queue.base import DeadLetter
from postroom.queue.sqs_messages import aws_errors

Message = dict[str, Any]  # a message as ReceiveMessage returns it
# How long a DLQ read hides the messages it has not given back yet.
_READ_VISIBILITY = 120


class SqsDeadLetters:
    """Reads, replays and purges dead letters; replays go to ``class_urls``."""

    def __init__(
        self,
        client: Any,
        dead_url: str,
        class_urls: Mapping[Priority, str],
        max_deliveries: int,
        wait_seconds: int,
    ) -> None:
        self._sqs = client
        self._dead_url = dead_url
        self._class_urls = class_urls
        self._max_deliveries = max_deliveries
        self._wait = wait_seconds

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[tuple[list[Message], list[Message]]]:
        """Every dead letter, and a list for the caller to add those it deleted to; the
        others are made visible again on the way out."""
        read: dict[str, Message] = {}
        try:
            while received := await self._receive():
                # A read longer than the visibility timeout sees some messages twice.
                read.update((m["MessageId"], m) for m in received)
            taken: list[Message] = []
            yield list(read.values()), taken
            for message in taken:
                read.pop(message["MessageId"], None)
        finally:
            await self._show_again(list(read.values()))

    async def _receive(self) -> list[Message]:
        with aws_errors("reading the dead-letter queue"):
            response = await self._sqs.receive_message(
                QueueUrl=self._dead_url,
                MaxNumberOfMessages=sm.BATCH_ENTRIES,
                VisibilityTimeout=_READ_VISIBILITY,
                WaitTimeSeconds=self._wait,
                AttributeNames=["SentTimestamp"],
                MessageAttributeNames=["All"],
            )
        messages: list[Message] = response.get("Messages", [])
        return messages

    async def _show_again(self, messages: Sequence[Mapping[str, Any]]) -> None:
        for chunk in sm.chunks(messages):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ]
            # Best effort: what is not shown again now comes back when the read hide ends.
            with contextlib.suppress(BotoCoreError, ClientError):
                await self._sqs.change_message_visibility_batch(
                    QueueUrl=self._dead_url, Entries=entries
                )

    def _letters(self, messages: Sequence[Mapping[str, Any]]) -> list[DeadLetter]:
        letters = [sm.dead_letter_of(m, self._max_deliveries) for m in messages]
        return sorted(letters, key=lambda letter: letter.dead_at)

    async def page(self, limit: int, offset: int) -> list[DeadLetter]:
        async with self._reading() as (messages, _):
            return self._letters(messages)[offset : offset + limit]

    async def find(self, message_id: str) -> DeadLetter | None:
        async with self._reading() as (messages, _):
            found = [m for m in messages if sm.message_id(m) == message_id]
            return self._letters(found)[0] if found else None

    async def replay(self, message_ids: Sequence[str] | None) -> int:
        """Send the chosen letters to their class with a fresh attempt count, then delete
        them from the DLQ."""
        async with self._reading() as (messages, taken):
            chosen = _chosen(messages, message_ids)
            by_class: dict[Priority, list[dict[str, Any]]] = {}
            for message in chosen:
                priority = sm.priority_of(message)
                body, encoding = sm.encode_body(sm.decode_body(message))
                attributes = sm.resend_attributes(
                    message, priority, attempt=None, error=None, reason=None, dead_at=None
                )
                entry = {"MessageBody": body, "MessageAttributes": attributes | encoding}
                by_class.setdefault(priority, []).append(entry)
            for priority, entries in by_class.items():
                for batch in sm.batches(entries):
                    with aws_errors("replaying dead letters"):
                        result = await self._sqs.send_message_batch(
                            QueueUrl=self._class_urls[priority], Entries=batch
                        )
                    if result.get("Failed"):
                        raise QueueError(f"SQS refused a replayed message: {result['Failed'][0]}")
            await delete_received(self._sqs, self._dead_url, chosen)
            taken.extend(chosen)
            return len(chosen)

    async def purge(self, message_ids: Sequence[str] | None) -> int:
        async with self._reading() as (messages, taken):
            chosen = _chosen(messages, message_ids)
            await delete_received(self._sqs, self._dead_url, chosen)
            taken.extend(chosen)
            return len(chosen)


async def delete_received(client: Any, url: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """DeleteMessageBatch, 10 at a time; returns how many SQS deleted."""
    deleted = 0
    for chunk in sm.chunks(messages):
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
        with aws_errors("deleting messages"):
            result = await client.delete_message_batch(QueueUrl=url, Entries=entries)
        deleted += len(result.get("Successful", []))
    return deleted


def _chosen(messages: Sequence[Message], message_ids: Sequence[str] | None) -> list[Message]:
    if message_ids is None:
        return list(messages)
    wanted = set(message_ids)
    return [m for m in messages if sm.message_id(m) in wanted]
