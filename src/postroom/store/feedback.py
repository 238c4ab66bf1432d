"""Ingesting verified webhook events: store once, bind to our sends, apply the suppression rules.

One call is one transaction, so a request either leaves all of its effects or none:

- **Idempotent.** An event is stored once per content hash (SendGrid re-sends events under new
  ids) and once per ESP event id; a replayed one-use token (Mailgun) is refused before
  anything is written.
- **Bound before it acts.** An event suppresses someone only when it names a send in our
  ledger (our send id, our Message-ID, or the ESP's message id) *and* that send went to the
  event's recipient. Unbound events are stored and change nothing.
- **Order-independent.** A send's feedback state only moves up a fixed ranking (a late
  ``delivered`` never undoes a ``bounced_hard``), and the soft-bounce rule is computed from
  those states, never from the order events arrived in.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from ulid import ULID

from postroom.errors import WebhookVerificationError
from postroom.store.database import Database
from postroom.store.feedback_rules import (
    RANK,
    is_policy_block,
    soft_bounce_streak,
    state_for,
    stronger,
    suppression_for,
)
from postroom.store.schema import events, send_feedback, sends, webhook_tokens
from postroom.store.suppressions import Suppressions, SuppressionScope
from postroom.webhooks.events import FeedbackType, NormalizedEvent

log = logging.getLogger("postroom.feedback")

_SENDS_BY_ID = select(sends.c.id, sends.c.recipient, sends.c.message_id, sends.c.created_at).where(
    sends.c.id.in_(bindparam("ids", expanding=True))
)
_SENDS_BY_PROVIDER_ID = select(
    sends.c.id, sends.c.recipient, sends.c.provider_message_id, sends.c.created_at
).where(sends.c.provider_message_id.in_(bindparam("ids", expanding=True)))
_STATES = select(send_feedback.c.send_id, send_feedback.c.state).where(
    send_feedback.c.send_id.in_(bindparam("ids", expanding=True))
)
_LATEST_STATES = (
    select(send_feedback.c.state)
    .where(send_feedback.c.recipient == bindparam("recipient"))
    .order_by(send_feedback.c.send_created_at.desc())
    .limit(bindparam("window"))
)
_RAISE_STATE = (
    update(send_feedback)
    .where(
        send_feedback.c.send_id == bindparam("b_send_id"),
        send_feedback.c.state.in_(bindparam("weaker", expanding=True)),
    )
    .values(state=bindparam("b_state"), updated_at=bindparam("b_now"))
)
_EXPIRED_TOKENS = delete(webhook_tokens).where(webhook_tokens.c.expires_at < bindparam("now"))
_PURGE_EVERY = 1000  # token claims between two purges of expired tokens


def _per_dialect(build: Callable[[Any], Any]) -> dict[str, Any]:
    """One statement per dialect, built once: building costs more than running on SQLite."""
    return {"postgresql": build(postgresql), "sqlite": build(sqlite)}


_INSERT_EVENTS = _per_dialect(
    lambda d: d.insert(events).on_conflict_do_nothing().returning(events.c.dedupe_key)
)
_INSERT_STATE = _per_dialect(
    lambda d: d.insert(send_feedback).on_conflict_do_nothing().returning(send_feedback.c.send_id)
)
# A new token, or one whose earlier use has expired; nothing comes back for a live one.
_CLAIM_TOKEN = _per_dialect(
    lambda d: (
        (stmt := d.insert(webhook_tokens))
        .on_conflict_do_update(
            index_elements=[webhook_tokens.c.key],
            set_={"expires_at": stmt.excluded.expires_at},
            where=webhook_tokens.c.expires_at < bindparam("now"),
        )
        .returning(webhook_tokens.c.key)
    )
)


@dataclass(frozen=True, slots=True)
class BoundSend:
    id: str
    recipient: str
    created_at: datetime


@dataclass
class IngestResult:
    """What one ingestion did."""

    stored: int = 0
    duplicates: int = 0
    bound: int = 0
    suppressed: list[tuple[str, SuppressionScope, str]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)


class FeedbackStore:
    """Repository of webhook feedback: events, per-send states, one-use tokens."""

    def __init__(
        self,
        db: Database,
        suppressions: Suppressions,
        *,
        soft_bounce_limit: int = 3,
        soft_bounce_window: int = 5,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self._suppressions = suppressions
        self._soft_limit = soft_bounce_limit
        self._soft_window = soft_bounce_window
        self._now = clock or (lambda: datetime.now(UTC))
        self._claims = 0

    async def ingest(
        self,
        batch: Sequence[NormalizedEvent],
        *,
        replay_token: str | None = None,
        replay_ttl: float = 0.0,
    ) -> IngestResult:
        """Store ``batch`` and apply its rules in one transaction. A ``replay_token`` seen
        before (within ``replay_ttl`` seconds) raises ``WebhookVerificationError('replay')``
        and writes nothing."""
        now = self._now()
        return await self._db.write(
            lambda conn: self._ingest(conn, batch, now, replay_token, replay_ttl)
        )

    async def state(self, send_id: str) -> str | None:
        """The send's feedback state (``None`` until an event about it arrives)."""
        row = await self._db.read(lambda conn: conn.execute(_STATES, {"ids": [send_id]}).first())
        return None if row is None else str(row.state)

    def _ingest(
        self,
        conn: Connection,
        batch: Sequence[NormalizedEvent],
        now: datetime,
        replay_token: str | None,
        replay_ttl: float,
    ) -> IngestResult:
        if replay_token is not None:
            self._claims += 1
            if self._claims % _PURGE_EVERY == 1:
                conn.execute(_EXPIRED_TOKENS, {"now": now})
            _claim_token(conn, replay_token, now, replay_ttl)
        result = IngestResult()
        by_hash = {e.content_hash: e for e in batch}
        unique_events = list(by_hash.values())
        hashes = list(by_hash)
        result.duplicates = len(batch) - len(unique_events)
        bindings = _bind(conn, unique_events)
        rows = [
            _event_row(e, h, bindings.get(i), now)
            for i, (e, h) in enumerate(zip(unique_events, hashes, strict=True))
        ]
        inserted = _insert_events(conn, rows)
        result.stored = len(inserted)
        result.duplicates += len(rows) - len(inserted)
        fresh = [
            (event, bindings[i])
            for i, event in enumerate(unique_events)
            if rows[i]["dedupe_key"] in inserted and i in bindings
        ]
        result.bound = len(fresh)
        self._apply(conn, fresh, now, result)
        return result

    def _apply(
        self,
        conn: Connection,
        fresh: list[tuple[NormalizedEvent, BoundSend]],
        now: datetime,
        result: IngestResult,
    ) -> None:
        soft_bounced: set[str] = set()
        _advance_states(conn, fresh, now)
        # Rows are written in a fixed order (here: by address) so that two requests touching
        # the same rows on PostgreSQL wait for each other instead of deadlocking.
        for event, send in sorted(fresh, key=lambda pair: pair[1].recipient):
            rule = suppression_for(event)
            if rule is None:
                if event.type is FeedbackType.BOUNCED_SOFT and not is_policy_block(event):
                    soft_bounced.add(send.recipient)
                elif is_policy_block(event):
                    alert = f"policy block from {event.provider} for send {send.id}: " + (
                        event.enhanced_status or event.diagnostic or "5.7.x"
                    )
                    log.warning("%s", alert)
                    result.alerts.append(alert)
                continue
            scope, reason = rule
            self._suppress(conn, send.recipient, scope, reason, _detail(event), result)
        for recipient in sorted(soft_bounced):
            states = conn.execute(
                _LATEST_STATES, {"recipient": recipient, "window": self._soft_window}
            ).scalars()
            if soft_bounce_streak(states) >= self._soft_limit:
                detail = f"{self._soft_limit} soft bounces in the last {self._soft_window} sends"
                self._suppress(
                    conn, recipient, SuppressionScope.ALL, "soft_bounces", detail, result
                )

    def _suppress(
        self,
        conn: Connection,
        email: str,
        scope: SuppressionScope,
        reason: str,
        detail: str,
        result: IngestResult,
    ) -> None:
        self._suppressions.add_within(conn, email, scope, reason, detail)
        result.suppressed.append((email, scope, reason))


# --- the transaction's steps ----------------------------------------------------------------


def _claim_token(conn: Connection, token: str, now: datetime, ttl: float) -> None:
    claimed = conn.execute(
        _CLAIM_TOKEN[conn.dialect.name],
        {"key": token[:255], "expires_at": now + timedelta(seconds=ttl), "now": now},
    ).first()
    if claimed is None:
        raise WebhookVerificationError("replay", "this request's token was already used")


def _send_id_in(message_id: str | None) -> str | None:
    """Our Message-ID is ``<send-id@sender-domain>``: the send id is its local part."""
    if not message_id:
        return None
    local = message_id.strip().strip("<>").partition("@")[0]
    return local or None


def _bind(conn: Connection, batch: Sequence[NormalizedEvent]) -> dict[int, BoundSend]:
    """Index in ``batch`` → the send it is about, for events bound to a send of ours that
    went to the event's recipient."""
    our_ids = {
        i for e in batch for i in (e.postroom_send_id, _send_id_in(e.postroom_message_id)) if i
    }
    by_id = (
        {r.id: r for r in conn.execute(_SENDS_BY_ID, {"ids": sorted(our_ids)})} if our_ids else {}
    )
    esp_ids = {i for e in batch for i in e.lookup_ids}
    by_esp_id: dict[str, list[Any]] = {}
    if esp_ids:
        for row in conn.execute(_SENDS_BY_PROVIDER_ID, {"ids": sorted(esp_ids)}):
            by_esp_id.setdefault(row.provider_message_id, []).append(row)
    bound: dict[int, BoundSend] = {}
    for index, event in enumerate(batch):
        candidates = [by_id[i] for i in (event.postroom_send_id,) if i in by_id]
        from_message_id = _send_id_in(event.postroom_message_id)
        if from_message_id in by_id:
            row = by_id[from_message_id]
            if row.message_id in (None, event.postroom_message_id):
                candidates.append(row)
        candidates += [row for i in event.lookup_ids for row in by_esp_id.get(i, [])]
        send = _matching(candidates, event.recipient)
        if send is not None:
            bound[index] = send
    return bound


def _matching(candidates: list[Any], recipient: str | None) -> BoundSend | None:
    if recipient is not None:
        matches = {r.id: r for r in candidates if r.recipient == recipient}
    else:
        # No recipient in the event (a Postmark variant): only an id naming exactly one
        # send binds it, and the send says who it went to.
        matches = {r.id: r for r in candidates}
    if len(matches) != 1:
        return None
    row = next(iter(matches.values()))
    return BoundSend(row.id, row.recipient, row.created_at)


def _event_row(
    event: NormalizedEvent, content_hash: str, send: BoundSend | None, now: datetime
) -> dict[str, Any]:
    return {
        "id": str(ULID()),
        "provider": event.provider,
        "event_type": event.type.value,
        "recipient": event.recipient or (send.recipient if send else ""),
        "send_id": send.id if send else None,
        "provider_message_id": (event.esp_message_id or "")[:255] or None,
        "dedupe_key": content_hash,
        "event_key": _event_key(event),
        "occurred_at": event.occurred_at or now,
        "received_at": now,
        "payload": event.to_json(content_hash),
    }


def _event_key(event: NormalizedEvent) -> str | None:
    if not event.esp_event_id:
        return None
    basis = "\x1f".join(
        (event.provider, event.esp_event_id, event.recipient or "", event.type.value)
    )
    return hashlib.sha256(basis.encode()).hexdigest()


def _insert_events(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert ``rows``, skipping any already stored; the dedupe keys of those inserted (one
    multi-row INSERT … RETURNING per batch)."""
    if not rows:
        return set()
    ordered = sorted(rows, key=lambda row: str(row["dedupe_key"]))  # a fixed lock order
    return set(conn.execute(_INSERT_EVENTS[conn.dialect.name], ordered).scalars())


def _advance_states(
    conn: Connection, fresh: list[tuple[NormalizedEvent, BoundSend]], now: datetime
) -> None:
    wanted: dict[str, tuple[BoundSend, str]] = {}
    for event, send in fresh:
        state = state_for(event)
        if state is None:
            continue
        previous = wanted.get(send.id)
        wanted[send.id] = (send, stronger(previous[1] if previous else None, state))
    for send_id, (send, state) in sorted(wanted.items()):
        values = {
            "send_id": send_id,
            "recipient": send.recipient,
            "send_created_at": send.created_at,
            "state": state,
            "updated_at": now,
        }
        if conn.execute(_INSERT_STATE[conn.dialect.name], values).first():
            continue
        # Only ever upwards, decided in the UPDATE itself so that concurrent requests about
        # the same send cannot lower it.
        weaker = [s for s, rank in RANK.items() if rank < RANK[state]]
        if weaker:
            conn.execute(
                _RAISE_STATE,
                {"b_send_id": send_id, "b_state": state, "b_now": now, "weaker": weaker},
            )


def _detail(event: NormalizedEvent) -> str:
    parts = [event.provider, event.esp_event]
    parts += [p for p in (event.enhanced_status, event.diagnostic or event.reason) if p]
    return " ".join(parts)[:500]
