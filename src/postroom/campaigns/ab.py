"""Choosing an A/B test's winner.

The test: the variant with the highest rate of the metric (unique human opens, or unique
clicks, per recipient sent) against the runner-up, by a two-sided two-proportion z-test
with a pooled standard error. With more than two variants the best is compared with the
runner-up at ``alpha / (k - 1)`` (Bonferroni), since it must beat every other variant. When
the difference is not significant — or there is no data — the configured default goes out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Arm:
    variant: int
    sent: int
    successes: int

    @property
    def rate(self) -> float:
        return self.successes / self.sent if self.sent else 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    winner: int
    significant: bool
    p_value: float | None
    reason: str


def two_proportion_p_value(a: Arm, b: Arm) -> float | None:
    """Two-sided p-value that ``a`` and ``b`` share one rate; None without data."""
    if a.sent == 0 or b.sent == 0:
        return None
    pooled = (a.successes + b.successes) / (a.sent + b.sent)
    variance = pooled * (1 - pooled) * (1 / a.sent + 1 / b.sent)
    if variance <= 0:
        return None if a.rate == b.rate else 0.0
    z = (a.rate - b.rate) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


def decide(arms: list[Arm], *, default: int, alpha: float) -> Decision:
    ranked = sorted(arms, key=lambda arm: (arm.rate, -arm.variant), reverse=True)
    if len(ranked) < 2:
        return Decision(default, False, None, "fewer than two variants were sent")
    best, runner_up = ranked[0], ranked[1]
    p_value = two_proportion_p_value(best, runner_up)
    threshold = alpha / (len(arms) - 1)
    summary = ", ".join(f"variant {a.variant}: {a.successes}/{a.sent}" for a in arms)
    if p_value is None:
        return Decision(default, False, None, f"no data to compare ({summary}); default sent")
    if p_value < threshold and best.rate > runner_up.rate:
        reason = (
            f"variant {best.variant} won ({summary}); two-proportion z-test against "
            f"variant {runner_up.variant}: p={p_value:.4g} < {threshold:.4g}"
        )
        return Decision(best.variant, True, p_value, reason)
    reason = (
        f"no significant difference ({summary}); two-proportion z-test p={p_value:.4g} "
        f">= {threshold:.4g}; default variant {default} sent"
    )
    return Decision(default, False, p_value, reason)
