"""The worker's delivery semantics (design §4) against a scripted provider."""

from __future__ import annotations

from typing import Any

import orjson
from tests.conftest import RunningWorker
from tests.fakes import FakeProvider

from postroom.errors import (
    AmbiguousProviderError,
    PermanentProviderError,
    RateLimitedError,
    TransientProviderError,
)
from postroom.messages import EmailEvent, Priority, parse_event
from postroom.queue.base import OutgoingMessage
from postroom.store.ledger import SendStatus
from postroom.store.suppressions import SuppressionScope
from postroom.submission import submit
from postroom.wiring import Postroom


def welcome(to: str = "reader@example.com", **extra: Any) -> EmailEvent:
    document = {
        "email_type": "welcome",
        "recipient_email": to,
        "recipient_name": "Ada Reader",
        "template_data": {"creator_name": "Jane Doe"},
        "metadata": {"user_id": "u-1"},
        **extra,
    }
    return parse_event(document, max_bytes=100_000)


async def status_of(postroom: Postroom, send_id: str) -> SendStatus | None:
    record = await postroom.ledger.get(send_id)
    return record.status if record else None


async def test_delivers_once_and_records_provider_id(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    [accepted] = await submit(postroom, [welcome()])
    await running_worker.until(lambda: _is(postroom, accepted.id, SendStatus.SENT))
    record = await postroom.ledger.get(accepted.id)
    assert record is not None
    assert record.provider_message_id == f"fake-{accepted.id}"
    assert record.message_id and accepted.id in record.message_id
    assert len(fake_provider.delivered) == 1
    assert await postroom.queue.depth() == {p: 0 for p in Priority}


async def test_duplicate_submission_returns_existing_row_and_sends_once(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    [first] = await submit(postroom, [welcome()])
    [second] = await submit(postroom, [welcome()])
    assert second.id == first.id and second.duplicate
    await running_worker.until(lambda: _is(postroom, first.id, SendStatus.SENT))
    [third] = await submit(postroom, [welcome()])
    assert third.duplicate and third.status is SendStatus.SENT
    await running_worker.until(lambda: _queue_empty(postroom))
    assert len(fake_provider.delivered) == 1


async def test_redelivered_copy_of_a_sent_message_is_acked_without_sending(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    event = welcome()
    [accepted] = await submit(postroom, [event])
    await running_worker.until(lambda: _is(postroom, accepted.id, SendStatus.SENT))
    # A broker redelivery looks like a second copy of the same document.
    body = event.model_copy(update={"idempotency_key": accepted.idempotency_key}).to_json()
    await postroom.queue.enqueue([OutgoingMessage("copy-1", Priority.TRANSACTIONAL, body)])
    await running_worker.until(lambda: _queue_empty(postroom))
    assert len(fake_provider.delivered) == 1
    assert running_worker.pipeline.stats.duplicates == 1


async def test_transient_failures_then_success_deliver_exactly_once(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    fake_provider.script = lambda _email, seen: (
        TransientProviderError("503 from ESP") if seen < 2 else None
    )
    [accepted] = await submit(postroom, [welcome()])
    await running_worker.until(lambda: _is(postroom, accepted.id, SendStatus.SENT))
    assert fake_provider.offered[accepted.id] == 3
    assert len(fake_provider.delivered) == 1
    attempts = await postroom.ledger.attempts(accepted.id)
    assert [a.outcome for a in attempts] == ["sent"]  # immediate retries are one attempt


async def test_transient_failures_beyond_immediate_retries_go_through_the_queue(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    # 3 immediate retries = 4 offers per attempt; fail the whole first attempt.
    fake_provider.script = lambda _email, seen: (
        TransientProviderError("connection refused") if seen < 4 else None
    )
    [accepted] = await submit(postroom, [welcome()])
    await running_worker.until(lambda: _is(postroom, accepted.id, SendStatus.SENT))
    attempts = await postroom.ledger.attempts(accepted.id)
    assert [a.outcome for a in attempts] == ["retry_scheduled", "sent"]
    assert len(fake_provider.delivered) == 1


async def test_persistent_failure_ends_in_dlq_and_replay_delivers_once(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    broken = True
    fake_provider.script = lambda _email, _seen: (
        TransientProviderError("ESP unavailable") if broken else None
    )
    [accepted] = await submit(postroom, [welcome()])
    await running_worker.until(lambda: _is(postroom, accepted.id, SendStatus.DEAD))
    [letter] = await postroom.queue.dlq_list()
    assert "gave up after 3 attempts" in letter.reason and "ESP unavailable" in letter.reason
    # schedule of 2 queue retries + the first attempt, each with 1 + 3 immediate offers
    assert fake_provider.offered[accepted.id] == 3 * 4
    broken = False
    assert await postroom.queue.dlq_replay([letter.id]) == 1
    await running_worker.until(lambda: _is(postroom, accepted.id, SendStatus.SENT))
    assert len(fake_provider.delivered) == 1
    assert await postroom.queue.dlq_list() == []


async def test_permanent_failure_goes_straight_to_dlq(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    fake_provider.script = lambda _e, _s: PermanentProviderError("content rejected")
    [accepted] = await submit(postroom, [welcome()])
    await running_worker.until(lambda: _is(postroom, accepted.id, SendStatus.FAILED))
    await running_worker.until(lambda: _dlq_size(postroom, 1))
    assert fake_provider.offered[accepted.id] == 1
    [letter] = await postroom.queue.dlq_list()
    assert "content rejected" in letter.reason


async def test_bad_address_is_suppressed_not_dead_lettered(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    fake_provider.script = lambda _e, _s: PermanentProviderError("550 5.1.1", suppress=True)
    [accepted] = await submit(postroom, [welcome("gone@example.com")])
    await running_worker.until(lambda: _is(postroom, accepted.id, SendStatus.FAILED))
    await running_worker.until(lambda: _queue_empty(postroom))
    assert await postroom.suppressions.blocked(["gone@example.com"], marketing=False)
    assert await postroom.queue.dlq_list() == []


async def test_rate_limit_with_long_retry_after_waits_in_the_queue(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    fake_provider.script = lambda _e, seen: (
        RateLimitedError("429", retry_after=0.3) if seen == 0 else None
    )
    [accepted] = await submit(postroom, [welcome()])
    await running_worker.until(lambda: _is(postroom, accepted.id, SendStatus.SENT))
    assert fake_provider.offered[accepted.id] == 2


async def test_suppressed_recipient_is_not_sent(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    await postroom.suppressions.add("blocked@example.com", SuppressionScope.ALL, "hard_bounce")
    [accepted] = await submit(postroom, [welcome("Blocked@Example.com")])
    await running_worker.until(lambda: _is(postroom, accepted.id, SendStatus.SUPPRESSED))
    assert fake_provider.delivered == []


async def test_marketing_suppression_spares_transactional_mail(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    await postroom.suppressions.add("fan@example.com", SuppressionScope.MARKETING, "complaint")
    post = parse_event(
        {
            "email_type": "new_post_notification",
            "recipient_email": "fan@example.com",
            "template_data": {
                "creator_name": "Jane",
                "post_title": "Hello",
                "post_url": "https://example.com/p/1",
            },
        },
        max_bytes=100_000,
    )
    [marketing, transactional] = await submit(postroom, [post, welcome("fan@example.com")])
    await running_worker.until(lambda: _is(postroom, marketing.id, SendStatus.SUPPRESSED))
    await running_worker.until(lambda: _is(postroom, transactional.id, SendStatus.SENT))
    assert [e.email_type for e in fake_provider.delivered] == ["welcome"]


async def test_bad_documents_go_to_dlq_and_the_worker_keeps_going(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    bad = [
        b"not json",
        b"[1, 2]",
        orjson.dumps({"email_type": "welcome", "recipient_email": "not-an-address"}),
        orjson.dumps({"email_type": "no_such_type", "recipient_email": "a@example.com"}),
        orjson.dumps(
            {
                "email_type": "welcome",
                "recipient_email": "a@example.com",
                "recipient_name": "x\r\nBcc: b@example.com",
            }
        ),
        orjson.dumps({"email_type": "welcome", "recipient_email": "a@example.com"}),  # no data
        orjson.dumps(
            {
                "email_type": "welcome",
                "recipient_email": "a@example.com",
                "template_data": {"creator_name": "Jane\r\nBcc: x@evil.example"},
            }
        ),
    ]
    await postroom.queue.enqueue(
        [OutgoingMessage(f"bad-{i}", Priority.TRANSACTIONAL, body) for i, body in enumerate(bad)]
    )
    [good] = await submit(postroom, [welcome()])
    await running_worker.until(lambda: _is(postroom, good.id, SendStatus.SENT))
    await running_worker.until(lambda: _dlq_size(postroom, len(bad)))
    reasons = {letter.id: letter.reason for letter in await postroom.queue.dlq_list()}
    assert "not valid JSON" in reasons["bad-0"]
    assert "JSON object" in reasons["bad-1"]
    assert "recipient_email" in reasons["bad-2"]
    assert "no_such_type" in reasons["bad-3"]
    assert "recipient_name" in reasons["bad-4"] and "line break" in reasons["bad-4"]
    assert "template_data.creator_name: required" in reasons["bad-5"]
    assert "cannot render" in reasons["bad-6"] and "line break" in reasons["bad-6"]
    assert [e.recipient for e in fake_provider.delivered] == ["reader@example.com"]


async def test_ambiguous_result_resends_transactional_but_not_marketing(
    postroom: Postroom, fake_provider: FakeProvider, running_worker: RunningWorker
) -> None:
    fake_provider.script = lambda _e, seen: (
        AmbiguousProviderError("reset after request sent") if seen == 0 else None
    )
    post = parse_event(
        {
            "email_type": "new_post_notification",
            "recipient_email": "fan@example.com",
            "template_data": {"creator_name": "J", "post_title": "T", "post_url": "https://e.com/"},
        },
        max_bytes=100_000,
    )
    [marketing, transactional] = await submit(postroom, [post, welcome()])
    await running_worker.until(lambda: _is(postroom, transactional.id, SendStatus.SENT))
    await running_worker.until(lambda: _is(postroom, marketing.id, SendStatus.AMBIGUOUS))
    await running_worker.until(lambda: _queue_empty(postroom))
    assert fake_provider.offered == {marketing.id: 1, transactional.id: 2}
    assert running_worker.pipeline.stats.ambiguous == 2
    assert running_worker.pipeline.stats.ambiguous_resent == 1
    # Both are on record, the resent one as well (design §4: always counted and reported).
    assert await postroom.ledger.count_attempts(SendStatus.AMBIGUOUS) == 2
    history = [a.outcome for a in await postroom.ledger.attempts(transactional.id)]
    assert history == ["ambiguous", "retry_scheduled", "sent"]


async def test_priority_classes_are_claimed_most_urgent_first(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    marketing = [
        parse_event(
            {
                "email_type": "new_post_notification",
                "recipient_email": f"m{i}@example.com",
                "template_data": {
                    "creator_name": "J",
                    "post_title": "T",
                    "post_url": "https://e.com/",
                },
            },
            max_bytes=100_000,
        )
        for i in range(20)
    ]
    await submit(postroom, marketing)
    sign_in = parse_event(
        {
            "email_type": "sign_in_link",
            "recipient_email": "login@example.com",
            "template_data": {"sign_in_url": "https://e.com/login/abc", "expires_minutes": 15},
        },
        max_bytes=100_000,
    )
    await submit(postroom, [sign_in])
    deliveries = await postroom.queue.receive(1, 5.0)
    assert orjson.loads(deliveries[0].body)["email_type"] == "sign_in_link"
    assert deliveries[0].priority is Priority.CRITICAL


async def _is(postroom: Postroom, send_id: str, status: SendStatus) -> bool:
    return await status_of(postroom, send_id) is status


async def _queue_empty(postroom: Postroom) -> bool:
    return sum((await postroom.queue.depth()).values()) == 0


async def _dlq_size(postroom: Postroom, size: int) -> bool:
    return len(await postroom.queue.dlq_list()) == size


async def test_a_row_noted_ambiguous_before_a_crash_is_resent_once_not_stuck(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    # A worker noted an abandoned row ambiguous and died before moving it to `sending`; the
    # message is still in the queue. The next worker must send it (transactional), once.
    [accepted] = await submit(postroom, [welcome()])
    await postroom.ledger.begin_sending([(accepted.id, f"<{accepted.id}@x>")], "fake")
    await postroom.ledger.note_ambiguous([accepted.id], "outcome unknown; resent by policy")
    running = RunningWorker(postroom)
    try:
        await running.until(lambda: _is(postroom, accepted.id, SendStatus.SENT))
        await running.until(lambda: _queue_empty(postroom))
    finally:
        await running.shutdown()
    assert len(fake_provider.delivered) == 1
    assert await postroom.ledger.count_attempts(SendStatus.AMBIGUOUS) == 1  # counted once


async def test_outcomes_are_recorded_through_a_short_database_outage(
    postroom: Postroom, fake_provider: FakeProvider, monkeypatch: Any
) -> None:
    """The mail went out; the ledger write fails twice: the worker tries again rather than
    leaving the row `sending` (which would later count as ambiguous and be resent)."""
    record = postroom.ledger.record
    failures = [RuntimeError("database went away"), RuntimeError("still away")]

    async def flaky_record(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop(0)
        await record(*args, **kwargs)

    monkeypatch.setattr(postroom.ledger, "record", flaky_record)
    [accepted] = await submit(postroom, [welcome()])
    worker = RunningWorker(postroom)
    try:
        await worker.until(lambda: _is(postroom, accepted.id, SendStatus.SENT))
    finally:
        await worker.shutdown()
    assert failures == []
    assert len(fake_provider.delivered) == 1
    assert await postroom.queue.depth() == {p: 0 for p in Priority}
