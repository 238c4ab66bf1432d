"""Ingesting verified webhook events: store once, bind to our sends, apply the suppression rules.

One call commits all of its effects or none (its own transaction, or on SQLite a savepoint
in a transaction shared with concurrent calls):

- **Idempotent.** An event is stored once per content hash (SendGrid re-sends events under new
  ids) and once per ESP event id; a replayed one-use token (Mailgun) is refused before
  anything is written.
- **Bound before it acts.** An event suppresses someone only when it names a send in our
  ledger or a campaign recipient (``feedback_binding``) *and* that went to the event's
  recipient. Unbound events are stored and change nothing.
- **Order-independent.** A send's (and a campaign recipient's) feedback state only moves up
  a fixed ranking (a late ``delivered`` never undoes a ``bounced_hard``), and the soft-bounce
  rule is computed from those states, never from the order events arrived in.

On SQLite the hot statements run on the driver (``feedback_sqlite``) and concurrent requests
share a transaction (``feedback_group``); on PostgreSQL each request is a transaction of Core
statements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from postroom.errors import WebhookVerificationError
from postroom.store import feedback_sqlite as sqlite_sql
from postroom.store.database import Database
from postroom.store.feedback_audience import mark_bounced, mark_complained
from postroom.store.feedback_binding import BoundSend, bind
from postroom.store.feedback_campaigns import apply_to_campaigns
from postroom.store.feedback_events import event_ids, event_row, insert_events, stored_key
from postroom.store.feedback_group import GroupCommit
from postroom.store.feedback_rules import (
    RANK,
    is_policy_block,
    soft_bounce_streak,
    state_for,
    stronger,
    suppression_for,
)
from postroom.store.schema import send_feedback, webhook_tokens
from postroom.store.sqlite_driver import sqlite_connection, stored_time
from postroom.store.suppressions import Suppressions, SuppressionScope
from postroom.webhooks.events import FeedbackType, NormalizedEvent

__all__ = ["BoundSend", "FeedbackStore", "IngestResult"]

log = logging.getLogger("postroom.feedback")

_STATES = select(send_feedback.c.send_id, send_feedback.c.state).where(
    send_feedback.c.send_id.in_(bindparam("ids", expanding=True))
)
_LATEST_STATES = (
    select(send_feedback.c.state)
    .where(send_feedback.c.recipient == bindparam("recipient"))
    .order_by(send_feedback.c.send_created_at.desc())
    .limit(bindparam("window"))
)
_EXPIRED_TOKENS = delete(webhook_tokens).where(webhook_tokens.c.expires_at < bindparam("now"))
_PURGE_EVERY = 1000  # token claims between two purges of expired tokens


def _per_dialect(build: Callable[[Any], Any]) -> dict[str, Any]:
    """One statement per dialect, built once: building costs more than running on SQLite."""
    return {"postgresql": build(postgresql), "sqlite": build(sqlite)}


def _rank(column: Any) -> Any:
    """``column``'s rank in ``feedback_rules.RANK`` (0 for anything else)."""
    return case(RANK, value=column, else_=0)


def _upsert_state(d: Any) -> Any:
    """A send's state inserted or raised, never lowered, in one statement: the WHERE is
    checked against the row as it stands once locked, so concurrent requests about the same
    send cannot lower it, and a request's states go in with one executemany."""
    stmt = d.insert(send_feedback)
    return stmt.on_conflict_do_update(
        index_elements=[send_feedback.c.send_id],
        set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
        where=_rank(send_feedback.c.state) < _rank(stmt.excluded.state),
    )


_UPSERT_STATE = _per_dialect(_upsert_state)
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
class _Request:
    batch: Sequence[NormalizedEvent]
    replay_token: str | None
    replay_ttl: float
    now: datetime


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
        self._group: GroupCommit[_Request, IngestResult] | None = None
        if db.dialect == "sqlite":
            self._group = GroupCommit(db, self._ingest, size=lambda r: max(1, len(r.batch)))

    async def ingest(
        self,
        batch: Sequence[NormalizedEvent],
        *,
        replay_token: str | None = None,
        replay_ttl: float = 0.0,
    ) -> IngestResult:
        """Store ``batch`` and apply its rules; all of it commits or none. A ``replay_token``
        seen before (within ``replay_ttl`` seconds) raises
        ``WebhookVerificationError('replay')`` and writes nothing. Returns once committed."""
        request = _Request(batch, replay_token, replay_ttl, self._now())
        if self._group is not None:
            return await self._group.run(request)
        return await self._db.write(lambda conn: self._ingest(conn, request))

    async def state(self, send_id: str) -> str | None:
        """The send's feedback state (``None`` until an event about it arrives)."""
        row = await self._db.read(lambda conn: conn.execute(_STATES, {"ids": [send_id]}).first())
        return None if row is None else str(row.state)

    def _ingest(self, conn: Connection, request: _Request) -> IngestResult:
        now = request.now
        if request.replay_token is not None:
            self._claims += 1
            if self._claims % _PURGE_EVERY == 1:
                conn.execute(_EXPIRED_TOKENS, {"now": now})
            _claim_token(conn, request.replay_token, now, request.replay_ttl)
        result = IngestResult()
        by_hash = {e.content_hash: e for e in request.batch}
        unique_events = list(by_hash.values())
        result.duplicates = len(request.batch) - len(unique_events)
        hashes = list(by_hash)
        bindings = bind(conn, unique_events)
        rows = [
            event_row(event_id, e, h, bindings.get(i), now)
            for i, (event_id, e, h) in enumerate(
                zip(event_ids(len(hashes)), unique_events, hashes, strict=True)
            )
        ]
        inserted = insert_events(conn, rows, now)
        result.stored = len(inserted)
        result.duplicates += len(rows) - len(inserted)
        fresh = [
            (event, bindings[i])
            for i, event in enumerate(unique_events)
            if i in bindings and stored_key(hashes[i]) in inserted
        ]
        result.bound = len(fresh)
        if fresh:
            self._apply(conn, fresh, inserted, now, result)
        return result

    def _apply(
        self,
        conn: Connection,
        fresh: list[tuple[NormalizedEvent, BoundSend]],
        stored_keys: set[bytes],
        now: datetime,
        result: IngestResult,
    ) -> None:
        _advance_states(conn, [pair for pair in fresh if pair[1].campaign_id is None], now)
        campaign_states = apply_to_campaigns(conn, fresh, stored_keys, now)
        # Soft-bounced addresses, each with the states of the campaign recipients that
        # bounced here: they count, newest first, before the address's ledger sends.
        soft_bounced: dict[str, list[str]] = {}
        # Rows are written in a fixed order (here: by address) so that two requests touching
        # the same rows on PostgreSQL wait for each other instead of deadlocking.
        for event, send in sorted(fresh, key=lambda pair: pair[1].recipient):
            rule = suppression_for(event)
            if rule is not None:
                scope, reason = rule
                self._suppress(conn, send.recipient, scope, reason, _detail(event), result)
                if reason == "hard_bounce":
                    mark_bounced(conn, send.recipient, now)
                elif reason == "complaint":
                    mark_complained(conn, send.recipient, now)
            elif is_policy_block(event):
                alert = f"policy block from {event.provider} for send {send.id}: " + (
                    event.enhanced_status or event.diagnostic or "5.7.x"
                )
                log.warning("%s", alert)
                result.alerts.append(alert)
            elif event.type is FeedbackType.BOUNCED_SOFT:
                first = soft_bounced.setdefault(send.recipient, [])
                campaign_state = campaign_states.get(send.id)
                if campaign_state is not None:
                    first.append(campaign_state)
        for recipient, first in sorted(soft_bounced.items()):
            self._soft_bounce_rule(conn, recipient, first, result)

    def _soft_bounce_rule(
        self, conn: Connection, recipient: str, first: list[str], result: IngestResult
    ) -> None:
        latest = conn.execute(
            _LATEST_STATES, {"recipient": recipient, "window": self._soft_window}
        ).scalars()
        states = [*first, *latest][: self._soft_window]
        if soft_bounce_streak(states) >= self._soft_limit:
            detail = f"{self._soft_limit} soft bounces in the last {self._soft_window} sends"
            self._suppress(conn, recipient, SuppressionScope.ALL, "soft_bounces", detail, result)

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
    key, expires_at = token[:255], now + timedelta(seconds=ttl)
    driver = sqlite_connection(conn)
    if driver is not None:
        claimed = driver.execute(
            sqlite_sql.CLAIM_ONE_USE_KEY, (key, stored_time(expires_at), stored_time(now))
        ).fetchone()
    else:
        claimed = conn.execute(
            _CLAIM_TOKEN[conn.dialect.name], {"key": key, "expires_at": expires_at, "now": now}
        ).first()
    if claimed is None:
        raise WebhookVerificationError("replay", "this request's token was already used")


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
    driver = sqlite_connection(conn)
    if driver is not None:
        # One upsert for the lot; its WHERE compares ranks, so a state only rises.
        stored_now = stored_time(now)
        driver.executemany(
            sqlite_sql.UPSERT_STATE,
            [
                (send_id, send.recipient, send.stored_created_at, state, stored_now)
                for send_id, (send, state) in sorted(wanted.items())
            ],
        )
        return
    # The same upsert, in a fixed order of sends, so that two requests touching the same
    # rows wait for each other instead of deadlocking.
    rows: list[dict[str, Any]] = []
    for send_id, (send, state) in sorted(wanted.items()):
        assert send.created_at is not None  # a ledger send
        rows.append(
            {
                "send_id": send_id,
                "recipient": send.recipient,
                "send_created_at": send.created_at,
                "state": state,
                "updated_at": now,
            }
        )
    if rows:
        conn.execute(_UPSERT_STATE[conn.dialect.name], rows)


def _detail(event: NormalizedEvent) -> str:
    parts = [event.provider, event.esp_event]
    parts += [p for p in (event.enhanced_status, event.diagnostic or event.reason) if p]
    return " ".join(parts)[:500]
