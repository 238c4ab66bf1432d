"""The retry policy as the pure function it is."""

from __future__ import annotations

import random

import pytest

from postroom.config import AmbiguousPolicy
from postroom.errors import RateLimitedError, TransientProviderError
from postroom.worker.retry import MAX_IMMEDIATE_WAIT, RetryPolicy

POLICY = RetryPolicy(immediate_retries=3, immediate_delay=0.2, schedule=(300.0, 900.0, 3600.0))
TRANSIENT = TransientProviderError("503")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_immediate_delays_grow_and_are_jittered_within_bounds(index: int) -> None:
    base = 0.2 * 2**index
    delays = {
        POLICY.immediate_delay_for(index, TRANSIENT, random.Random(seed)) for seed in range(20)
    }
    assert all(d is not None and base * 0.5 <= d <= base * 1.5 for d in delays)
    assert len(delays) > 1  # jitter: not every worker retries at the same instant


def test_immediate_retries_are_spent_after_the_configured_number() -> None:
    assert POLICY.immediate_delay_for(3, TRANSIENT) is None


def test_retry_after_is_waited_in_place_only_when_short() -> None:
    short = RateLimitedError("429", retry_after=MAX_IMMEDIATE_WAIT)
    long = RateLimitedError("429", retry_after=MAX_IMMEDIATE_WAIT + 1)
    assert POLICY.immediate_delay_for(0, short) == MAX_IMMEDIATE_WAIT
    assert POLICY.immediate_delay_for(0, long) is None


def test_queue_delays_follow_the_schedule_then_the_dead_letter_queue() -> None:
    assert [POLICY.queue_delay(n, TRANSIENT) for n in range(4)] == [300.0, 900.0, 3600.0, None]


def test_a_provider_asking_for_longer_is_never_retried_sooner() -> None:
    assert POLICY.queue_delay(0, RateLimitedError("429", retry_after=1200)) == 1200
    assert POLICY.queue_delay(1, RateLimitedError("429", retry_after=10)) == 900.0


@pytest.mark.parametrize(
    ("policy", "marketing", "resend"),
    [
        (AmbiguousPolicy.BY_CATEGORY, False, True),
        (AmbiguousPolicy.BY_CATEGORY, True, False),
        (AmbiguousPolicy.RESEND, True, True),
        (AmbiguousPolicy.NEVER, False, False),
    ],
)
def test_ambiguous_sends_are_resent_by_policy(
    policy: AmbiguousPolicy, marketing: bool, resend: bool
) -> None:
    assert RetryPolicy(ambiguous=policy).resend_ambiguous(marketing=marketing) is resend
