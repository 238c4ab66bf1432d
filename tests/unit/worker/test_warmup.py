"""Warm-up: a daily cap that grows to the target, kept across workers in the database; mail
over the cap goes to the fallback provider or waits for the next day without spending an
attempt."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

import pytest
from tests.conftest import RunningWorker
from tests.fakes import FakeProvider, plain_email

from postroom.config import Settings
from postroom.errors import ProviderUnavailableError
from postroom.messages import parse_event
from postroom.store.database import open_database
from postroom.store.ledger import SendStatus
from postroom.store.send_counts import SendCounts
from postroom.submission import submit
from postroom.wiring import open_postroom, prepare_database
from postroom.worker.warmup import WarmupProvider, WarmupSchedule

DAY = date(2026, 11, 28)


def test_the_cap_grows_from_the_initial_volume_to_the_target() -> None:
    schedule = WarmupSchedule(start=DAY, target=102_400, initial=200, days=10)
    caps = [schedule.cap(date.fromordinal(DAY.toordinal() + n)) for n in range(11)]
    assert caps[0] == 200
    assert caps[1:4] == [400, 800, 1600]  # 200 → 102,400 in 9 steps is times 2 a day
    assert all(a < b for a, b in itertools.pairwise(caps[:9]))  # type: ignore[operator]
    assert caps[9] is None and caps[10] is None  # warm-up over: no cap
    assert schedule.cap(date(2026, 11, 1)) == 200  # before the start: the first day's cap


def test_a_schedule_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError, match="initial"):
        WarmupSchedule(start=DAY, target=100, initial=200)


class Cap:
    def __init__(self) -> None:
        self.used = 0

    async def take(self, _counter: str, _day: date, wanted: int, cap: int) -> int:
        granted = max(0, min(wanted, cap - self.used))
        self.used += granted
        return granted


async def test_mail_over_the_cap_goes_to_the_fallback() -> None:
    primary, fallback = FakeProvider(name="new-ip"), FakeProvider(name="shared-ip")
    provider = WarmupProvider(
        primary,
        WarmupSchedule(start=DAY, target=1000, initial=3, days=5),
        Cap().take,
        fallback,
        clock=lambda: datetime(2026, 11, 28, 12, tzinfo=UTC),
    )
    results = await provider.send([plain_email(n) for n in range(5)])
    assert [r.provider for r in results] == [None, None, None, "shared-ip", "shared-ip"]
    assert all(r.ok for r in results)
    assert len(primary.delivered) == 3 and len(fallback.delivered) == 2


async def test_without_fallback_mail_over_the_cap_waits_for_the_next_day() -> None:
    provider = WarmupProvider(
        FakeProvider(name="new-ip"),
        WarmupSchedule(start=DAY, target=1000, initial=2, days=5),
        Cap().take,
        clock=lambda: datetime(2026, 11, 28, 18, tzinfo=UTC),
    )
    results = await provider.send([plain_email(n) for n in range(3)])
    assert [r.ok for r in results] == [True, True, False]
    error = results[2].error
    assert isinstance(error, ProviderUnavailableError)
    assert error.retry_after == 6 * 3600  # until midnight UTC


async def test_counts_are_taken_from_the_cap_in_the_database(settings: Settings) -> None:
    await prepare_database(settings)
    db = open_database(settings.resolved_database_url)
    counts = SendCounts(db)
    try:

        async def take(wanted: int) -> int:
            return await db.write(lambda c: counts.take_within(c, "warmup:x", DAY, wanted, 200))

        assert [await take(150), await take(100), await take(10)] == [150, 50, 0]
        assert await counts.used("warmup:x", DAY) == 200
        assert await counts.used("warmup:x", date(2026, 11, 29)) == 0
    finally:
        await db.dispose()


async def test_the_worker_sends_the_days_cap_and_holds_the_rest(settings: Settings) -> None:
    warming = settings.model_copy(
        update={
            "warmup_start": datetime.now(UTC).date(),
            "warmup_initial": 5,
            "warmup_target": 10_000,
            "warmup_days": 10,
        }
    )
    await prepare_database(warming)
    postroom = await open_postroom(warming)  # the outbox, wrapped by the wiring
    try:
        events = [
            parse_event(
                {
                    "email_type": "welcome",
                    "recipient_email": f"r{n}@example.com",
                    "template_data": {"creator_name": "Jane"},
                },
                max_bytes=100_000,
            )
            for n in range(8)
        ]
        await submit(postroom, events)
        worker = RunningWorker(postroom)

        async def settled() -> bool:
            counts = await postroom.ledger.count_by_status()
            return counts.get(SendStatus.SENT, 0) + counts.get(SendStatus.RETRY_SCHEDULED, 0) == 8

        try:
            await worker.until(settled)
        except AssertionError:
            raise AssertionError(str(await postroom.ledger.count_by_status())) from None
        finally:
            await worker.shutdown()
        counts = await postroom.ledger.count_by_status()
        assert counts == {SendStatus.SENT: 5, SendStatus.RETRY_SCHEDULED: 3}
        assert len(list((warming.data_dir / "outbox").rglob("*.eml"))) == 5
        assert await postroom.queue.dlq_list() == []
    finally:
        await postroom.close()
