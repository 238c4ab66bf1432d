"""Send-rate limits: GCRA reservations, most urgent waiter first, per provider and domain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pytest
from tests.conftest import RunningWorker, make_settings
from tests.fakes import FakeProvider, plain_email

from postroom.config import Settings
from postroom.messages import Priority, RenderedEmail, parse_event
from postroom.providers.base import SendResult
from postroom.providers.ses import SesProvider
from postroom.submission import submit
from postroom.wiring import build_sending_provider, open_database, open_postroom, prepare_database
from postroom.worker.handover import HandOver
from postroom.worker.retry import RetryPolicy
from postroom.worker.throttle import LocalReservations, Rate, SendLimits, Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def emails(*recipients: str) -> list[RenderedEmail]:
    return [plain_email(n, recipient) for n, recipient in enumerate(recipients)]


async def test_reservations_keep_the_rate_after_the_burst() -> None:
    clock = FakeClock()
    store = LocalReservations(clock)
    waits = [await store.reserve("k", 1, Rate(10, burst=3)) for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])


async def test_a_take_larger_than_the_burst_waits_instead_of_never_fitting() -> None:
    clock = FakeClock()
    store = LocalReservations(clock)
    assert await store.reserve("k", 1000, Rate(100, burst=1)) == pytest.approx(9.99)


async def test_throttle_spaces_calls_to_the_provider_request_rate() -> None:
    clock = FakeClock()
    throttle = Throttle(
        "esp", SendLimits(requests=Rate(5)), LocalReservations(clock), sleep=clock.sleep
    )
    start = clock.now
    for _ in range(11):
        await throttle.admit(emails("a@example.com"), Priority.TRANSACTIONAL)
    # 11 calls at 5/s: the first at once, the last 2 s later.
    assert clock.now - start == pytest.approx(2.0)
    assert throttle.waited == pytest.approx(2.0)


async def test_only_limited_domains_are_counted() -> None:
    clock = FakeClock()
    limits = SendLimits(domains={"gmail.com": Rate(2)})
    throttle = Throttle("esp", limits, LocalReservations(clock), sleep=clock.sleep)
    batch = emails("a@Gmail.com", "b@gmail.com", "c@gmail.com", "d@other.example")
    await throttle.admit(batch, Priority.MARKETING)
    await throttle.admit(emails("x@other.example") * 50, Priority.MARKETING)
    # Three gmail.com recipients at 2/s wait 1 s; other domains never wait.
    assert sum(clock.sleeps) == pytest.approx(1.0)


async def test_the_most_urgent_waiter_goes_first() -> None:
    """Real time, short: a marketing call is waiting when a critical and a marketing call
    arrive; the critical one takes the next slot although it came last."""
    throttle = Throttle("esp", SendLimits(requests=Rate(50)), LocalReservations())
    await throttle.admit(emails("a@example.com"), Priority.MARKETING)  # the next one waits
    order: list[str] = []

    async def call(name: str, priority: Priority) -> None:
        await throttle.admit(emails("a@example.com"), priority)
        order.append(name)

    first = asyncio.create_task(call("marketing-1", Priority.MARKETING))
    await asyncio.sleep(0)
    second = asyncio.create_task(call("marketing-2", Priority.MARKETING))
    await asyncio.sleep(0)
    third = asyncio.create_task(call("critical", Priority.CRITICAL))
    await asyncio.gather(first, second, third)
    assert order == ["marketing-1", "critical", "marketing-2"]


async def test_no_limits_no_waiting() -> None:
    clock = FakeClock()
    throttle = Throttle("esp", SendLimits(), LocalReservations(clock), sleep=clock.sleep)
    assert await throttle.admit(emails("a@example.com") * 100, Priority.MARKETING) == 0.0
    assert clock.sleeps == []


async def test_the_worker_keeps_the_configured_provider_rate(settings: Settings) -> None:
    """Wired from settings: 20 emails at 40 recipients/s through a provider that takes one
    message per call never go faster than the limit."""
    limited = settings.model_copy(update={"provider_rate": 40.0})
    await prepare_database(limited)
    provider = TimedProvider(name="fake", max_batch_size=1)
    postroom = await open_postroom(limited, provider=provider)
    try:
        events = [
            parse_event(
                {
                    "email_type": "sign_in_link",
                    "recipient_email": f"r{n}@example.com",
                    "template_data": {
                        "sign_in_url": f"https://p.example/{n}",
                        "expires_minutes": 15,
                    },
                },
                max_bytes=100_000,
            )
            for n in range(20)
        ]
        await submit(postroom, events)
        worker = RunningWorker(postroom)
        try:
            await worker.until(lambda: _delivered(provider, 20))
        finally:
            await worker.shutdown()
    finally:
        await postroom.close()
    times = sorted(provider.times)
    assert times[-1] - times[0] >= 19 / 40 - 0.01
    assert max(sum(1 for t in times if s <= t < s + 0.25) for s in times) <= 11


class TimedProvider(FakeProvider):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.times: list[float] = []

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        self.times.extend(time.monotonic() for _ in batch)
        return await super().send(batch)


async def _delivered(provider: FakeProvider, count: int) -> bool:
    return len(provider.delivered) >= count


@pytest.mark.parametrize("warmup", [False, True], ids=["breaker", "warmup-and-breaker"])
async def test_ses_as_wired_takes_a_request_token_per_sendemail_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warmup: bool
) -> None:
    """SES makes one SendEmail call per message: behind its breaker (and warm-up), as the
    worker gets it from settings, a hand-over of 20 messages at 10 requests/s spans 1.9 s
    of calls, not one token for the whole hand-over."""
    sent_at: list[float] = []
    clock = FakeClock()

    async def send(self: SesProvider, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        sent_at.extend(clock.now for _ in batch)
        return [SendResult(email.send_id, provider_message_id="ses-id") for email in batch]

    monkeypatch.setattr(SesProvider, "send", send)
    warm = {"warmup_start": date(2026, 1, 1), "warmup_target": 10**6} if warmup else {}
    settings = make_settings(
        tmp_path,
        provider="ses",
        ses_region="us-east-1",
        ses_access_key_id="testing",
        ses_secret_access_key="testing",
        **warm,
    )
    await prepare_database(settings)
    db = open_database(settings.resolved_database_url)
    try:
        provider = build_sending_provider(settings, db)
        throttle = Throttle(
            "ses", SendLimits(requests=Rate(10)), LocalReservations(clock), sleep=clock.sleep
        )
        handover = HandOver(
            provider, RetryPolicy.from_settings(settings), sleep=clock.sleep, throttle=throttle
        )
        batch = emails(*(f"r{n}@example.com" for n in range(20)))
        results = await handover.send(batch, Priority.MARKETING)
    finally:
        await db.dispose()
    assert all(result.ok for result in results)
    assert sorted(sent_at)[-1] - sorted(sent_at)[0] == pytest.approx(1.9)
    assert throttle.waited == pytest.approx(1.9)
