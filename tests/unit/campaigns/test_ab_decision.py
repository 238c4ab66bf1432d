"""The A/B winner: the best variant against the runner-up, two-proportion z-test."""

from __future__ import annotations

import math

import pytest

from postroom.campaigns.ab import Arm, decide, two_proportion_p_value


def test_p_value_matches_a_hand_computed_z_test() -> None:
    # 60/200 vs 40/200: pooled 0.25, se = sqrt(.25*.75*(2/200)) = 0.0433, z = 2.309
    p = two_proportion_p_value(Arm(0, 200, 60), Arm(1, 200, 40))
    assert p == pytest.approx(math.erfc(2.3094 / math.sqrt(2)), rel=1e-3)
    assert p == pytest.approx(0.0209, abs=5e-4)


def test_a_clear_difference_picks_the_better_variant() -> None:
    decision = decide([Arm(0, 100, 10), Arm(1, 100, 40)], default=0, alpha=0.05)
    assert (decision.winner, decision.significant) == (1, True)
    assert "z-test" in decision.reason


def test_no_significant_difference_sends_the_default() -> None:
    decision = decide([Arm(0, 100, 21), Arm(1, 100, 25)], default=0, alpha=0.05)
    assert (decision.winner, decision.significant) == (0, False)
    decision = decide([Arm(0, 100, 25), Arm(1, 100, 21)], default=1, alpha=0.05)
    assert decision.winner == 1


def test_more_variants_need_the_best_to_beat_the_runner_up_at_a_corrected_level() -> None:
    # p ≈ 0.021 between the best two: enough for two variants, not at 0.05/3 for four.
    two = decide([Arm(0, 200, 60), Arm(1, 200, 40)], default=1, alpha=0.05)
    four = decide(
        [Arm(0, 200, 60), Arm(1, 200, 40), Arm(2, 200, 10), Arm(3, 200, 5)], default=1, alpha=0.05
    )
    assert (two.winner, four.winner) == (0, 1)


def test_no_data_sends_the_default() -> None:
    assert decide([Arm(0, 0, 0), Arm(1, 0, 0)], default=1, alpha=0.05).winner == 1
    assert decide([Arm(0, 50, 0), Arm(1, 50, 0)], default=1, alpha=0.05).winner == 1
