"""The QueueBackend contract (``postroom.queue.base``), run against every backend in conftest."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import TYPE_CHECKING

import pytest

from postroom.messages import Priority
from postroom.queue.base import Delivery, OutgoingMessage, QueueBackend

if TYPE_CHECKING:  # conftest is not importable as a module under every pytest import mode
    from .conftest import QueueHarness

LONG_LEASE = 30.0
CRITICAL, TRANSACTIONAL, MARKETING = Priority.CRITICAL, Priority.TRANSACTIONAL, Priority.MARKETING


def message(
    message_id: str, priority: Priority = TRANSACTIONAL, body: bytes | None = None
) -> OutgoingMessage:
    return OutgoingMessage(message_id, priority, body if body is not None else message_id.encode())


async def enqueue_one_by_one(queue: QueueBackend, messages: list[OutgoingMessage]) -> None:
    # Separate calls, so that each message becomes available after the one before it.
    for item in messages:
        await queue.enqueue([item])


async def receive_one(queue: QueueBackend, lease: float = LONG_LEASE) -> Delivery:
    deliveries = await queue.receive(1, lease)
    assert len(deliveries) == 1, deliveries
    return deliveries[0]


def ids(deliveries: list[Delivery]) -> list[str]:
    return [delivery.id for delivery in deliveries]


async def test_round_trip_preserves_body_bytes(queue_backend: QueueBackend) -> None:
    body = bytes(range(256)) + b'{"json": "\xc3\xa9"}\r\n\x00'
    await queue_backend.enqueue([message("m1", MARKETING, body)])

    delivery = await receive_one(queue_backend)

    assert (delivery.id, delivery.priority, delivery.body) == ("m1", MARKETING, body)
    assert (delivery.attempt, delivery.deliveries) == (0, 1)
    assert delivery.receipt
    assert await queue_backend.ack([delivery]) == 1
    assert await queue_backend.receive(10, LONG_LEASE) == []
    assert sum((await queue_backend.depth()).values()) == 0


async def test_empty_queue_receives_nothing(queue_backend: QueueBackend) -> None:
    assert await queue_backend.receive(10, LONG_LEASE) == []
    assert await queue_backend.ack([]) == 0


async def test_batch_ack_counts_held_messages(queue_backend: QueueBackend) -> None:
    await queue_backend.enqueue([message(f"m{i}") for i in range(5)])
    deliveries = await queue_backend.receive(5, LONG_LEASE)

    assert await queue_backend.ack(deliveries) == 5
    assert await queue_backend.ack(deliveries) == 0


async def test_leased_message_is_not_delivered_twice(queue_backend: QueueBackend) -> None:
    await queue_backend.enqueue([message("m1"), message("m2"), message("m3")])

    first = await queue_backend.receive(10, LONG_LEASE)

    assert sorted(ids(first)) == ["m1", "m2", "m3"]
    assert await queue_backend.receive(10, LONG_LEASE) == []


async def test_expired_lease_redelivers(
    queue_harness: QueueHarness, queue_backend: QueueBackend
) -> None:
    await queue_backend.enqueue([message("m1")])
    first = await receive_one(queue_backend, queue_harness.short_lease)
    assert await queue_backend.receive(1, LONG_LEASE) == []

    await asyncio.sleep(queue_harness.short_lease * 1.5)
    second = await receive_one(queue_backend)

    assert second.id == "m1"
    assert (second.attempt, second.deliveries) == (0, first.deliveries + 1)
    assert second.receipt != first.receipt


async def test_stale_receipt_does_nothing(
    queue_harness: QueueHarness, queue_backend: QueueBackend
) -> None:
    await queue_backend.enqueue([message("m1")])
    stale = await receive_one(queue_backend, queue_harness.short_lease)
    await asyncio.sleep(queue_harness.short_lease * 1.5)
    holder = await receive_one(queue_backend)

    assert await queue_backend.ack([stale]) == 0
    assert await queue_backend.retry(stale, 0, "late") is False
    assert await queue_backend.release(stale) is False
    assert await queue_backend.dead_letter(stale, "late") is False
    assert await queue_backend.dlq_get("m1") is None
    # The new holder still has it: nothing else can receive it, and its ack works.
    assert await queue_backend.receive(1, LONG_LEASE) == []
    assert await queue_backend.ack([holder]) == 1


async def test_retry_waits_for_delay_and_counts_attempt(
    queue_harness: QueueHarness, queue_backend: QueueBackend
) -> None:
    await queue_backend.enqueue([message("m1")])
    first = await receive_one(queue_backend)

    assert await queue_backend.retry(first, queue_harness.short_lease, "timeout") is True
    assert await queue_backend.receive(1, LONG_LEASE) == []
    assert await queue_backend.ack([first]) == 0  # the retry ended that lease

    await asyncio.sleep(queue_harness.short_lease * 1.5)
    second = await receive_one(queue_backend)
    assert (second.id, second.attempt) == ("m1", 1)
    # A retry is an outcome: hand-outs without one are counted afresh (poison detection).
    assert second.deliveries == first.deliveries


async def test_a_short_delay_is_not_held_behind_a_long_one(
    queue_harness: QueueHarness, queue_backend: QueueBackend
) -> None:
    # Brokers expire messages from the head of a queue: a 30 s retry queued first must not
    # hold back a short one queued after it.
    await queue_backend.enqueue([message("long"), message("short")])
    long, short = await queue_backend.receive(2, LONG_LEASE)

    assert await queue_backend.retry(long, LONG_LEASE, "slow provider") is True
    assert await queue_backend.retry(short, queue_harness.short_lease, "blip") is True
    await asyncio.sleep(queue_harness.short_lease * 1.5)

    assert ids(await queue_backend.receive(10, LONG_LEASE)) == ["short"]
    assert (await queue_backend.depth())[TRANSACTIONAL] == 2


async def test_release_does_not_count_an_attempt(queue_backend: QueueBackend) -> None:
    await queue_backend.enqueue([message("m1")])
    first = await receive_one(queue_backend)

    assert await queue_backend.release(first) is True
    second = await receive_one(queue_backend)

    assert (second.id, second.attempt) == ("m1", 0)


async def test_release_with_delay_hides_message(queue_backend: QueueBackend) -> None:
    await queue_backend.enqueue([message("m1")])
    first = await receive_one(queue_backend)

    assert await queue_backend.release(first, LONG_LEASE) is True
    assert await queue_backend.receive(1, LONG_LEASE) == []
    assert (await queue_backend.depth())[TRANSACTIONAL] == 1


async def test_higher_class_first_in_one_batch(queue_backend: QueueBackend) -> None:
    await enqueue_one_by_one(
        queue_backend,
        [message("m", MARKETING), message("t", TRANSACTIONAL), message("c", CRITICAL)],
    )

    assert ids(await queue_backend.receive(10, LONG_LEASE)) == ["c", "t", "m"]


async def test_higher_class_first_one_at_a_time(queue_backend: QueueBackend) -> None:
    await enqueue_one_by_one(
        queue_backend,
        [message("m", MARKETING), message("t", TRANSACTIONAL), message("c", CRITICAL)],
    )

    order = [(await receive_one(queue_backend)).id for _ in range(3)]

    assert order == ["c", "t", "m"]


async def test_backlog_does_not_hold_back_urgent_mail(queue_backend: QueueBackend) -> None:
    await queue_backend.enqueue([message(f"m{i:02}", MARKETING) for i in range(20)])
    await queue_backend.enqueue([message("c", CRITICAL)])

    batch = await queue_backend.receive(5, LONG_LEASE)

    assert ids(batch) == ["c", "m00", "m01", "m02", "m03"]


async def test_fifo_within_a_class(queue_backend: QueueBackend) -> None:
    names = [f"t{i}" for i in range(5)]
    await enqueue_one_by_one(queue_backend, [message(name) for name in names])

    assert [(await receive_one(queue_backend)).id for _ in names[:2]] == names[:2]
    assert ids(await queue_backend.receive(10, LONG_LEASE)) == names[2:]


async def test_dead_letter_list_and_get(queue_backend: QueueBackend) -> None:
    await enqueue_one_by_one(queue_backend, [message("a", CRITICAL, b"A"), message("b")])
    a, b = await queue_backend.receive(2, LONG_LEASE)

    assert await queue_backend.dead_letter(a, "invalid document") is True
    assert await queue_backend.dead_letter(b, "5.1.1 unknown user") is True
    assert await queue_backend.dead_letter(a, "again") is False

    letters = await queue_backend.dlq_list()
    assert [(x.id, x.priority, x.reason) for x in letters] == [
        ("a", CRITICAL, "invalid document"),
        ("b", TRANSACTIONAL, "5.1.1 unknown user"),
    ]
    assert await queue_backend.receive(10, LONG_LEASE) == []
    assert [x.id for x in await queue_backend.dlq_list(limit=1, offset=1)] == ["b"]
    letter = await queue_backend.dlq_get("a")
    assert letter is not None
    assert (letter.body, letter.attempt) == (b"A", 0)
    assert letter.dead_at.tzinfo is not None
    assert letter.dead_at.utcoffset() == UTC.utcoffset(None)
    assert await queue_backend.dlq_get("missing") is None
    assert sum((await queue_backend.depth()).values()) == 0


async def test_dlq_replay_resets_attempt(queue_backend: QueueBackend) -> None:
    await queue_backend.enqueue([message("a", MARKETING, b"A"), message("b")])
    for delivery in await queue_backend.receive(2, LONG_LEASE):
        await queue_backend.retry(delivery, 0, "transient")
    for delivery in await queue_backend.receive(2, LONG_LEASE):
        assert delivery.attempt == 1
        await queue_backend.dead_letter(delivery, "gave up")
    assert [x.attempt for x in await queue_backend.dlq_list()] == [1, 1]

    assert await queue_backend.dlq_replay(["a", "missing"]) == 1

    replayed = await receive_one(queue_backend)
    assert (replayed.id, replayed.priority, replayed.body, replayed.attempt) == (
        "a",
        MARKETING,
        b"A",
        0,
    )
    assert [x.id for x in await queue_backend.dlq_list()] == ["b"]
    assert await queue_backend.dlq_replay() == 1
    assert (await receive_one(queue_backend)).id == "b"
    assert await queue_backend.dlq_list() == []


async def test_dlq_purge(queue_backend: QueueBackend) -> None:
    await queue_backend.enqueue([message(name) for name in ("a", "b", "c")])
    for delivery in await queue_backend.receive(3, LONG_LEASE):
        await queue_backend.dead_letter(delivery, "bad")

    assert await queue_backend.dlq_purge(["a", "missing"]) == 1
    assert await queue_backend.dlq_get("a") is None
    assert await queue_backend.dlq_purge() == 2
    assert await queue_backend.dlq_list() == []
    assert await queue_backend.dlq_replay() == 0
    assert await queue_backend.receive(10, LONG_LEASE) == []


async def test_enqueue_is_idempotent_by_id(queue_backend: QueueBackend) -> None:
    if not getattr(queue_backend, "deduplicates_enqueue", False):
        pytest.skip("this backend cannot deduplicate enqueues by id")
    await queue_backend.enqueue([message("a", body=b"first")])
    await queue_backend.enqueue([message("a", body=b"second"), message("b"), message("b")])

    assert (await queue_backend.depth())[TRANSACTIONAL] == 2
    deliveries = await queue_backend.receive(10, LONG_LEASE)
    assert [(x.id, x.body) for x in deliveries] == [("a", b"first"), ("b", b"b")]


async def test_poison_message_goes_to_dlq(queue_harness: QueueHarness) -> None:
    queue = await queue_harness.open(max_deliveries=2)
    await queue.enqueue([message("poison")])
    lease = queue_harness.short_lease

    for expected in (1, 2):  # a worker crashes on "poison" each time: no ack, no retry
        poison = await receive_one(queue, lease)
        assert (poison.id, poison.deliveries) == ("poison", expected)
        await asyncio.sleep(lease * 1.5)
    await queue.enqueue([message("fine")])

    # The poison message is parked, not handed out, and does not take a place in the batch.
    assert ids(await queue.receive(1, LONG_LEASE)) == ["fine"]
    letter = await queue.dlq_get("poison")
    assert letter is not None
    assert "delivery limit" in letter.reason
    assert (await queue.depth())[TRANSACTIONAL] == 1


async def test_depth_counts_waiting_and_leased(queue_backend: QueueBackend) -> None:
    assert await queue_backend.depth() == {CRITICAL: 0, TRANSACTIONAL: 0, MARKETING: 0}
    await queue_backend.enqueue([message("c1", CRITICAL), message("c2", CRITICAL)])
    await queue_backend.enqueue([message("m1", MARKETING)])

    held = await receive_one(queue_backend)
    assert await queue_backend.depth() == {CRITICAL: 2, TRANSACTIONAL: 0, MARKETING: 1}

    await queue_backend.ack([held])
    assert await queue_backend.depth() == {CRITICAL: 1, TRANSACTIONAL: 0, MARKETING: 1}


async def test_concurrent_receivers_share_without_overlap(queue_harness: QueueHarness) -> None:
    producer = await queue_harness.open()
    total = 500
    await producer.enqueue([message(f"m{i:03}", MARKETING) for i in range(total)])
    receivers = [await queue_harness.open() for _ in range(4)]

    async def drain(queue: QueueBackend) -> list[str]:
        got: list[str] = []
        while deliveries := await queue.receive(7, LONG_LEASE):
            got += ids(deliveries)
            assert await queue.ack(deliveries) == len(deliveries)
        return got

    claimed = await asyncio.gather(*(drain(queue) for queue in receivers))

    every = [message_id for batch in claimed for message_id in batch]
    assert len(set(every)) == total
    # SQS standard queues deliver a message twice now and then, by their own documentation.
    if not getattr(producer, "may_deliver_twice", False):
        assert len(every) == total
    assert sum((await producer.depth()).values()) == 0


async def test_extend_keeps_a_long_running_message(
    queue_harness: QueueHarness, queue_backend: QueueBackend
) -> None:
    await queue_backend.enqueue([message("m1")])
    held = await queue_backend.receive(1, queue_harness.short_lease)
    # Outlive the first lease several times over, extending well before each runs out (a
    # slow broker call must not eat the rest of a lease: SQS leases are whole seconds).
    for _ in range(4):
        await asyncio.sleep(queue_harness.short_lease * 0.4)
        assert await queue_backend.extend(held, queue_harness.short_lease) == 1
    assert await queue_backend.receive(1, LONG_LEASE) == []
    assert await queue_backend.ack(held) == 1


async def test_extend_holds_messages_of_several_classes_at_once(
    queue_harness: QueueHarness, queue_backend: QueueBackend
) -> None:
    await queue_backend.enqueue([message("c", CRITICAL), message("m", MARKETING)])
    held = await queue_backend.receive(2, queue_harness.short_lease)
    await asyncio.sleep(queue_harness.short_lease * 0.6)

    assert await queue_backend.extend(held, LONG_LEASE) == 2
    await asyncio.sleep(queue_harness.short_lease * 0.9)  # past the first lease
    assert await queue_backend.receive(10, LONG_LEASE) == []
    assert await queue_backend.ack(held) == 2


async def test_extend_after_losing_the_lease_holds_nothing(
    queue_harness: QueueHarness, queue_backend: QueueBackend
) -> None:
    await queue_backend.enqueue([message("m1")])
    lost = await queue_backend.receive(1, queue_harness.short_lease)
    await asyncio.sleep(queue_harness.short_lease * 1.5)
    taken = await receive_one(queue_backend)
    assert await queue_backend.extend(lost, LONG_LEASE) == 0
    assert await queue_backend.ack([taken]) == 1
