"""The feedback rules, without a database."""

from __future__ import annotations

import itertools

import pytest

from postroom.store.feedback_rules import (
    POLICY_BLOCKED,
    campaign_counter,
    soft_bounce_streak,
    state_for,
    stronger,
    suppression_for,
)
from postroom.store.suppressions import SuppressionScope
from postroom.webhooks.events import FeedbackType, NormalizedEvent


def event(kind: FeedbackType, enhanced: str | None = None) -> NormalizedEvent:
    return NormalizedEvent(
        provider="x",
        type=kind,
        esp_event="e",
        recipient="a@example.com",
        occurred_at=None,
        enhanced_status=enhanced,
    )


@pytest.mark.parametrize(
    ("kind", "enhanced", "rule"),
    [
        (FeedbackType.BOUNCED_HARD, "5.1.1", (SuppressionScope.ALL, "hard_bounce")),
        (FeedbackType.BOUNCED_HARD, None, (SuppressionScope.ALL, "hard_bounce")),
        (FeedbackType.BOUNCED_HARD, "5.7.1", None),  # policy block: alert, never suppress
        (FeedbackType.COMPLAINED, None, (SuppressionScope.MARKETING, "complaint")),
        (FeedbackType.UNSUBSCRIBED, None, (SuppressionScope.MARKETING, "unsubscribe")),
        (FeedbackType.BOUNCED_SOFT, "4.2.2", None),  # counted, not suppressing on its own
        (FeedbackType.DROPPED, "5.0.0", None),
        (FeedbackType.DELIVERED, None, None),
        (FeedbackType.IGNORED, None, None),
    ],
)
def test_what_an_event_suppresses(
    kind: FeedbackType, enhanced: str | None, rule: tuple[SuppressionScope, str] | None
) -> None:
    assert suppression_for(event(kind, enhanced)) == rule


def test_states_only_move_up_whatever_the_order() -> None:
    kinds = [
        FeedbackType.DELIVERED,
        FeedbackType.BOUNCED_HARD,
        FeedbackType.DEFERRED,
        FeedbackType.OPENED,
    ]
    finals = set()
    for order in itertools.permutations(kinds):
        state: str | None = None
        for kind in order:
            new = state_for(event(kind))
            assert new is not None
            state = stronger(state, new)
        finals.add(state)
    assert finals == {"bounced_hard"}


def test_engagement_proves_delivery_and_policy_blocks_are_kept_apart() -> None:
    assert state_for(event(FeedbackType.CLICKED)) == "delivered"
    assert state_for(event(FeedbackType.BOUNCED_SOFT, "4.7.1")) == POLICY_BLOCKED
    assert state_for(event(FeedbackType.UNSUBSCRIBED)) is None


@pytest.mark.parametrize(
    ("latest_first", "streak"),
    [
        (["bounced_soft", "bounced_soft", "bounced_soft"], 3),
        (["bounced_soft", "deferred", "bounced_soft", "delivered", "bounced_soft"], 2),
        (["delivered", "bounced_soft", "bounced_soft", "bounced_soft"], 0),
        (["bounced_soft", POLICY_BLOCKED, "bounced_soft"], 2),
        ([], 0),
    ],
)
def test_soft_bounce_streak_stops_at_the_last_delivery(
    latest_first: list[str], streak: int
) -> None:
    assert soft_bounce_streak(latest_first) == streak


def test_each_campaign_counter_moves_once_per_recipient_whatever_the_order() -> None:
    # Every order of arrival: states only rise, and a counter moves when the state becomes it.
    for arrivals in itertools.permutations(["delivered", "bounced_soft", "complained"]):
        state: str | None = None
        counted: list[str] = []
        for heard in arrivals:
            new = stronger(state, heard)
            if (counter := campaign_counter(state, new)) is not None:
                counted.append(counter)
            state = new
        assert len(counted) == len(set(counted)), arrivals
        assert counted[-1] == "complained"
    assert campaign_counter(None, POLICY_BLOCKED) == "bounced_soft"
    assert campaign_counter("delivered", "delivered") is None
    assert campaign_counter(None, FeedbackType.DEFERRED.value) is None
