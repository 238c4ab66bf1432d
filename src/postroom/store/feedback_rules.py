"""The feedback rules as pure functions: what an event does to its send and its address.

The store (``feedback.py``) applies them inside the ingest transaction; here they can be read
and tested without a database.
"""

from __future__ import annotations

from collections.abc import Iterable

from postroom.store.suppressions import SuppressionScope
from postroom.webhooks.events import FeedbackType, NormalizedEvent

# A send's feedback state only ever moves up this ranking. Opens and clicks prove delivery.
# A policy block (5.7.x) is a bounce about us, not the address: kept apart so that it is
# never counted towards the soft-bounce rule.
POLICY_BLOCKED = "policy_blocked"
RANK = {
    FeedbackType.DEFERRED.value: 1,
    FeedbackType.DELIVERED.value: 2,
    FeedbackType.BOUNCED_SOFT.value: 3,
    POLICY_BLOCKED: 3,
    FeedbackType.DROPPED.value: 4,
    FeedbackType.BOUNCED_HARD.value: 5,
    FeedbackType.COMPLAINED.value: 6,
}
_STATE_OF = {
    FeedbackType.OPENED: FeedbackType.DELIVERED.value,
    FeedbackType.CLICKED: FeedbackType.DELIVERED.value,
}


def is_policy_block(event: NormalizedEvent) -> bool:
    """A 5.7.x rejection: about our sending (policy, reputation, authentication), not about
    the address, so it never suppresses anyone; it alerts instead."""
    return event.type in (FeedbackType.BOUNCED_HARD, FeedbackType.BOUNCED_SOFT) and bool(
        event.enhanced_status and event.enhanced_status.startswith(("5.7.", "4.7."))
    )


def suppression_for(event: NormalizedEvent) -> tuple[SuppressionScope, str] | None:
    """What a bound event suppresses on its own (soft bounces count instead)."""
    if event.type is FeedbackType.BOUNCED_HARD and not is_policy_block(event):
        return SuppressionScope.ALL, "hard_bounce"
    if event.type is FeedbackType.COMPLAINED:
        return SuppressionScope.MARKETING, "complaint"
    if event.type is FeedbackType.UNSUBSCRIBED:
        return SuppressionScope.MARKETING, "unsubscribe"
    return None


def state_for(event: NormalizedEvent) -> str | None:
    if is_policy_block(event):
        return POLICY_BLOCKED
    state = _STATE_OF.get(event.type, event.type.value)
    return state if state in RANK else None


def stronger(current: str | None, new: str) -> str:
    if current is None or RANK.get(new, 0) > RANK.get(current, 0):
        return new
    return current


# The campaign counter a recipient's feedback state counts towards when the state first
# reaches it. States only rise, so each is reached at most once and each counter moves once
# per recipient, whatever the order or number of events. A policy block counts as a soft
# bounce: the message bounced, though not because of the address.
_CAMPAIGN_COUNTER = {
    FeedbackType.DELIVERED.value: "delivered",
    FeedbackType.BOUNCED_SOFT.value: "bounced_soft",
    POLICY_BLOCKED: "bounced_soft",
    FeedbackType.BOUNCED_HARD.value: "bounced_hard",
    FeedbackType.COMPLAINED.value: "complained",
}
CAMPAIGN_COUNTERS = ("delivered", "bounced_hard", "bounced_soft", "complained", "unsubscribed")


def campaign_counter(old: str | None, new: str | None) -> str | None:
    """The counter to raise when a campaign recipient's state moves from ``old`` to ``new``."""
    if new is None or new == old:
        return None
    return _CAMPAIGN_COUNTER.get(new)


def is_human_open(event: NormalizedEvent) -> bool:
    return event.type is FeedbackType.OPENED and not event.machine_open


def soft_bounce_streak(latest_states: Iterable[str]) -> int:
    """Soft bounces among an address's latest sends (newest first) since its last delivery."""
    count = 0
    for state in latest_states:
        if state == FeedbackType.DELIVERED.value:
            break
        if state == FeedbackType.BOUNCED_SOFT.value:
            count += 1
    return count
