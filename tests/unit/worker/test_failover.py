"""Circuit breaker and failover: a provider that is down stops being called, mail goes to the
secondary meanwhile (or waits without spending attempts), and a probe closes the circuit."""

from __future__ import annotations

from tests.conftest import RunningWorker
from tests.fakes import FakeProvider, plain_email

from postroom.errors import RateLimitedError, TransientProviderError
from postroom.messages import RenderedEmail, parse_event
from postroom.store.ledger import SendStatus
from postroom.submission import submit
from postroom.wiring import Postroom, open_postroom
from postroom.worker.failover import BreakerState, CircuitBreaker, FailoverProvider


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def down(_email: RenderedEmail, _seen: int) -> TransientProviderError:
    return TransientProviderError("503 Service Unavailable")


async def test_breaker_opens_after_consecutive_failures_and_routes_to_the_secondary() -> None:
    clock = Clock()
    primary, secondary = FakeProvider(name="primary", script=down), FakeProvider(name="backup")
    provider = FailoverProvider(
        primary, CircuitBreaker("primary", threshold=3, open_seconds=30, clock=clock), secondary
    )
    for n in range(2):
        [result] = await provider.send([plain_email(n)])
        assert isinstance(result.error, TransientProviderError)
    # The third failure opens the circuit; that call's mail goes to the secondary at once.
    [result] = await provider.send([plain_email(2)])
    assert result.ok and result.provider == "backup"
    assert provider.breaker.state is BreakerState.OPEN
    calls_before = len(primary.calls)
    results = await provider.send([plain_email(n) for n in range(3, 8)])
    assert all(r.ok and r.provider == "backup" for r in results)
    assert len(primary.calls) == calls_before  # the primary is left alone while open

    # After the open period one probe goes to the primary; it has recovered.
    primary.script = lambda _e, _s: None
    clock.now += 30
    [result] = await provider.send([plain_email(9)])
    assert result.ok and result.provider is None
    assert provider.breaker.state is BreakerState.CLOSED


async def test_a_failed_probe_opens_the_circuit_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker("primary", threshold=1, open_seconds=10, clock=clock)
    provider = FailoverProvider(FakeProvider(name="primary", script=down), breaker)
    await provider.send([plain_email(0)])
    assert breaker.state is BreakerState.OPEN
    clock.now += 10
    await provider.send([plain_email(1)])  # the probe fails
    assert breaker.state is BreakerState.OPEN and breaker.retry_after() == 10


async def test_rate_limiting_is_not_a_failure() -> None:
    breaker = CircuitBreaker("primary", threshold=1)
    limited = FakeProvider(
        name="primary", script=lambda _e, _s: RateLimitedError("429", retry_after=1.0)
    )
    await FailoverProvider(limited, breaker).send([plain_email(0)])
    assert breaker.state is BreakerState.CLOSED


async def test_while_open_without_secondary_mail_waits_without_spending_attempts(
    postroom: Postroom,
) -> None:
    primary = FakeProvider(name="primary", script=down)
    breaker = CircuitBreaker("primary", threshold=1, open_seconds=0.5)
    guarded = await open_postroom(
        postroom.settings.model_copy(update={"immediate_retries": 0, "retry_schedule": [0.05]}),
        provider=FailoverProvider(primary, breaker),
    )
    try:
        event = parse_event(
            {
                "email_type": "welcome",
                "recipient_email": "ada@example.com",
                "template_data": {"creator_name": "Jane"},
            },
            max_bytes=100_000,
        )
        [accepted] = await submit(guarded, [event])
        worker = RunningWorker(guarded)
        try:
            # First attempt fails and opens the circuit; the retry (attempt 1 of a
            # one-delay schedule) then meets an open circuit and is released, again and
            # again, without reaching the dead-letter queue.
            await worker.until(lambda: _offered(primary, 1))
            await worker.until(lambda: _status(guarded, accepted.id, SendStatus.RETRY_SCHEDULED))
            primary.script = lambda _e, _s: None  # the provider recovers
            await worker.until(lambda: _status(guarded, accepted.id, SendStatus.SENT), timeout=5)
        finally:
            await worker.shutdown()
        assert await guarded.queue.dlq_list() == []
        assert len(primary.delivered) == 1
    finally:
        await guarded.close()


async def _offered(provider: FakeProvider, times: int) -> bool:
    return sum(provider.offered.values()) >= times


async def _status(postroom: Postroom, send_id: str, status: SendStatus) -> bool:
    record = await postroom.ledger.get(send_id)
    return record is not None and record.status is status
