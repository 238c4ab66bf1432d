"""What bound events do to campaign recipients and campaign counters (in the ingest transaction).

Per recipient (``campaign_recipients``): ``feedback`` rises by the ranking of
``send_feedback.state``; ``opened_at`` is the earliest human open (machine-flagged opens do not
count), ``clicked_at`` the earliest click. Per campaign: ``delivered``, ``bounced_hard``,
``bounced_soft`` and ``complained`` move once per recipient, when its state first reaches that
outcome (``feedback_rules.campaign_counter``); ``unsubscribed`` moves when the first
unsubscribe event bound to the recipient is stored. Replays and re-sent events are not fresh
(``feedback.py`` stores each event once) and states only rise, so nothing is counted twice.
The recipient's row is read FOR UPDATE, so on PostgreSQL two requests about one recipient
take turns instead of both seeing the old state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import Connection, bindparam, select, update

from postroom.store.feedback_binding import BoundSend
from postroom.store.feedback_rules import (
    CAMPAIGN_COUNTERS,
    campaign_counter,
    is_human_open,
    state_for,
    stronger,
)
from postroom.store.schema import campaign_recipients, campaigns, events
from postroom.webhooks.events import FeedbackType, NormalizedEvent

CAMPAIGN_SEND_ID_KEY = "campaign_send_id"
"""The key under which a stored event's payload names the campaign recipient it is bound to
(``events.send_id`` references the ledger, so it stays null for them)."""

_ROW = campaign_recipients.c
_RECIPIENT = (
    select(_ROW.feedback, _ROW.opened_at, _ROW.clicked_at)
    .where(_ROW.campaign_id == bindparam("campaign_id"), _ROW.position == bindparam("position"))
    .with_for_update()
)
_UPDATE_RECIPIENT = (
    update(campaign_recipients)
    .where(_ROW.campaign_id == bindparam("b_campaign_id"), _ROW.position == bindparam("b_position"))
    .values(
        feedback=bindparam("b_feedback"),
        opened_at=bindparam("b_opened_at"),
        clicked_at=bindparam("b_clicked_at"),
    )
)
_COUNT = (
    update(campaigns)
    .where(campaigns.c.id == bindparam("b_id"))
    .values({name: campaigns.c[name] + bindparam(f"b_{name}") for name in CAMPAIGN_COUNTERS})
)
_UNSUBSCRIBES = select(events.c.dedupe_key, events.c.payload).where(
    events.c.recipient == bindparam("recipient"),
    events.c.event_type == FeedbackType.UNSUBSCRIBED.value,
    events.c.send_id.is_(None),
)


@dataclass
class _Heard:
    """What a request's fresh events say about one campaign recipient."""

    send: BoundSend
    state: str | None = None
    opened_at: datetime | None = None
    clicked_at: datetime | None = None
    unsubscribed: bool = False


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b < a) else a


def apply_to_campaigns(
    conn: Connection,
    fresh: Iterable[tuple[NormalizedEvent, BoundSend]],
    stored_keys: set[bytes],
    now: datetime,
) -> dict[str, str | None]:
    """Apply ``fresh`` events bound to campaign recipients (others are skipped); return each
    recipient's state afterwards, by send id. ``stored_keys``: the dedupe keys this request
    stored."""
    heard: dict[tuple[str, int], _Heard] = {}
    for event, send in fresh:
        if send.campaign_id is None:
            continue
        one = heard.setdefault((send.campaign_id, send.position), _Heard(send))
        state = state_for(event)
        if state is not None:
            one.state = stronger(one.state, state)
        when = event.occurred_at or now
        if is_human_open(event):
            one.opened_at = _earliest(one.opened_at, when)
        elif event.type is FeedbackType.CLICKED:
            one.clicked_at = _earliest(one.clicked_at, when)
        elif event.type is FeedbackType.UNSUBSCRIBED:
            one.unsubscribed = True
    counts: dict[str, Counter[str]] = {}
    states: dict[str, str | None] = {}
    for (campaign_id, position), one in sorted(heard.items()):  # a fixed lock order
        row = conn.execute(_RECIPIENT, {"campaign_id": campaign_id, "position": position}).first()
        if row is None:  # its campaign was deleted since the event was bound
            continue
        state = stronger(row.feedback, one.state) if one.state else row.feedback
        opened_at = _earliest(row.opened_at, one.opened_at)
        clicked_at = _earliest(row.clicked_at, one.clicked_at)
        if (state, opened_at, clicked_at) != (row.feedback, row.opened_at, row.clicked_at):
            values = {"b_feedback": state, "b_opened_at": opened_at, "b_clicked_at": clicked_at}
            conn.execute(
                _UPDATE_RECIPIENT,
                {"b_campaign_id": campaign_id, "b_position": position, **values},
            )
        counted = counts.setdefault(campaign_id, Counter())
        counter = campaign_counter(row.feedback, state)
        if counter is not None:
            counted[counter] += 1
        if one.unsubscribed and _first_unsubscribe(conn, one.send, stored_keys):
            counted["unsubscribed"] += 1
        states[one.send.id] = state
    for campaign_id, counted in sorted(counts.items()):
        if counted:
            increments = {f"b_{name}": counted[name] for name in CAMPAIGN_COUNTERS}
            conn.execute(_COUNT, {"b_id": campaign_id, **increments})
    return states


def _first_unsubscribe(conn: Connection, send: BoundSend, stored_keys: set[bytes]) -> bool:
    """No unsubscribe bound to this campaign recipient was stored before this request. (An
    address has few unsubscribe events, found through the events' recipient index.)"""
    for row in conn.execute(_UNSUBSCRIBES, {"recipient": send.recipient}):
        if row.dedupe_key in stored_keys:
            continue
        if orjson.loads(row.payload).get(CAMPAIGN_SEND_ID_KEY) == send.id:
            return False
    return True
