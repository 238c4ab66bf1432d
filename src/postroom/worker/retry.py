"""Retry policy as pure functions: what to do after a failed hand-over (design §2.4)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from postroom.config import AmbiguousPolicy, Settings
from postroom.errors import ProviderError, RateLimitedError
from postroom.providers.base import LONGEST_WAIT_IN_PLACE

MAX_IMMEDIATE_WAIT = LONGEST_WAIT_IN_PLACE
"""A provider that asks for a longer pause than this is retried through the queue instead, so
the worker's slot is not held while it waits (the providers' own limit inside a call)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    immediate_retries: int = 3
    immediate_delay: float = 0.2
    schedule: tuple[float, ...] = (300.0, 900.0, 3600.0, 14400.0, 43200.0)
    ambiguous: AmbiguousPolicy = AmbiguousPolicy.BY_CATEGORY

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            immediate_retries=settings.immediate_retries,
            immediate_delay=settings.immediate_retry_delay,
            schedule=tuple(settings.retry_schedule),
            ambiguous=settings.ambiguous_policy,
        )

    def immediate_delay_for(
        self, retry_index: int, error: ProviderError, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before immediate retry number ``retry_index`` (0-based), or ``None``
        when the immediate retries are spent or the provider wants a longer pause."""
        if retry_index >= self.immediate_retries:
            return None
        if isinstance(error, RateLimitedError):
            return error.retry_after if error.retry_after <= MAX_IMMEDIATE_WAIT else None
        base = self.immediate_delay * (2.0**retry_index)
        # Jitter spreads the retries of many workers hit by the same outage.
        draw = rng.random() if rng is not None else random.random()
        return base * (0.5 + draw)

    def queue_delay(self, attempt: int, error: ProviderError | None = None) -> float | None:
        """Delay before queue retry number ``attempt`` (0-based), or ``None`` when the
        schedule is spent and the message belongs in the dead-letter queue."""
        if attempt >= len(self.schedule):
            return None
        delay = self.schedule[attempt]
        if isinstance(error, RateLimitedError):
            delay = max(delay, error.retry_after)
        return delay

    def resend_ambiguous(self, *, marketing: bool) -> bool:
        """Whether a send that may already have gone out is sent again.

        A duplicate sign-in link or receipt is better than none; a duplicate newsletter
        annoys a whole audience, so marketing is not resent by default. The email type decides,
        not the queue priority, which a producer may raise.
        """
        if self.ambiguous is AmbiguousPolicy.RESEND:
            return True
        if self.ambiguous is AmbiguousPolicy.NEVER:
            return False
        return not marketing
