"""Analytics read back exactly: a known mix of sends and feedback gives known counts and rates."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import RunningWorker

from postroom.messages import parse_event
from postroom.store.feedback import FeedbackStore
from postroom.store.ledger import SendStatus
from postroom.store.stats import Stats
from postroom.submission import submit
from postroom.webhooks.events import FeedbackType, NormalizedEvent
from postroom.wiring import Postroom


def event(
    kind: FeedbackType, send_id: str, recipient: str, n: int, **extra: object
) -> NormalizedEvent:
    return NormalizedEvent(
        provider="sendgrid",
        type=kind,
        esp_event=kind.value,
        recipient=recipient,
        occurred_at=datetime(2026, 11, 28, 12, n % 60, tzinfo=UTC),
        esp_event_id=f"ev-{kind.value}-{send_id}-{n}",
        postroom_send_id=send_id,
        **extra,  # type: ignore[arg-type]
    )


async def test_a_known_mix_gives_exact_counts_and_rates(postroom: Postroom) -> None:
    recipients = [f"r{n}@gmail.com" for n in range(6)] + [f"r{n}@yahoo.com" for n in range(6, 10)]
    events_in = [
        parse_event(
            {"email_type": "welcome", "recipient_email": r, "template_data": {"creator_name": "J"}},
            max_bytes=100_000,
        )
        for r in recipients
    ]
    accepted = await submit(postroom, events_in)
    worker = RunningWorker(postroom)

    async def all_sent() -> bool:
        return (await postroom.ledger.count_by_status()).get(SendStatus.SENT, 0) == 10

    try:
        await worker.until(all_sent)
    finally:
        await worker.shutdown()
    ids = [a.id for a in accepted]
    feedback = [
        *(event(FeedbackType.DELIVERED, ids[n], recipients[n], n) for n in range(8)),
        event(FeedbackType.BOUNCED_HARD, ids[8], recipients[8], 8),
        event(FeedbackType.BOUNCED_SOFT, ids[9], recipients[9], 9),
        event(FeedbackType.COMPLAINED, ids[7], recipients[7], 7),
        # Three people open (one of them twice), two opens are machine-made (one of those
        # by someone who also opened by hand).
        *(event(FeedbackType.OPENED, ids[n], recipients[n], 20 + n) for n in (0, 1, 2)),
        event(FeedbackType.OPENED, ids[0], recipients[0], 30),
        *(
            event(FeedbackType.OPENED, ids[n], recipients[n], 40 + n, machine_open=True)
            for n in (2, 3)
        ),
        *(
            event(FeedbackType.CLICKED, ids[n], recipients[n], 50 + n, url="https://x/")
            for n in (0, 1)
        ),
        event(FeedbackType.UNSUBSCRIBED, ids[6], recipients[6], 6),
    ]
    store = FeedbackStore(postroom.db, postroom.suppressions)
    await store.ingest(feedback)

    stats = Stats(postroom.db)
    [overall] = await stats.summary(group_by=())
    row = overall.as_dict()
    assert row["sent"] == 10
    assert (row["delivered"], row["bounced_hard"], row["bounced_soft"]) == (8, 1, 1)
    assert (row["complained"], row["unsubscribed"], row["clicked"]) == (1, 1, 2)
    assert (row["opened_human"], row["opened_machine"]) == (3, 2)
    assert row["delivery_rate"] == 0.8 and row["hard_bounce_rate"] == 0.1
    assert row["complaint_rate"] == 0.125 and row["open_rate"] == 0.375
    assert row["click_rate"] == 0.25 and row["unsubscribe_rate"] == 0.125

    by_domain = {r.key["domain"]: r.as_dict() for r in await stats.summary(group_by=["domain"])}
    assert by_domain["gmail.com"]["sent"] == 6 and by_domain["yahoo.com"]["sent"] == 4
    assert by_domain["gmail.com"]["delivered"] == 6 and by_domain["yahoo.com"]["delivered"] == 2
    assert by_domain["yahoo.com"]["bounced_hard"] == 1

    [today] = await stats.summary(group_by=["day", "email_type"])
    assert today.key == {"day": datetime.now(UTC).date().isoformat(), "email_type": "welcome"}
    assert await stats.summary(days=0, group_by=["email_type"]) == []
