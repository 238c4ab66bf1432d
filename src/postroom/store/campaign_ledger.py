"""A campaign's per-recipient ledger: design §4 applied to a chunk of up to 1,000 recipients.

A chunk job costs two transactions whatever its size. ``prepare`` reads the chunk's open
(``pending``) recipients, marks the suppressed ones and records a hand-over on the chunk's row
(``handovers`` + 1, ``sending_since``) *before* the provider call; ``settle`` records each
recipient's outcome, the chunk's counters and the end of the hand-over together, and finishes
the chunk (and the campaign) when nobody is left open. A hand-over is marked once per chunk
rather than on each recipient: the recipients it covers are exactly the chunk's ``pending``
ones, as nothing else writes them meanwhile, and a million-recipient campaign is spared a
million row updates.

A later delivery that finds a hand-over still marked was in flight when a worker died:
within a lease another worker holds it (the delivery is released for later); past a lease it
is in doubt and its recipients become ``ambiguous`` unless the policy resends — the chunk is
resolved per recipient, never re-sent whole. The worker that outlived its lease then finds
its hand-over number gone at ``settle`` and writes nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, func, select, text, update

from postroom.store.campaign_records import (
    CampaignState,
    ChunkJob,
    ChunkRecipient,
    ChunkState,
    PreparedChunk,
    RecipientState,
)
from postroom.store.database import Database
from postroom.store.schema import campaign_chunks, campaigns
from postroom.store.sqlite_driver import sqlite_connection
from postroom.store.suppressions import Suppressions

# Plain SQL with named parameters: run on the stdlib driver on SQLite (``sqlite_driver``),
# through Core on PostgreSQL. A chunk's statements touch up to 1,000 rows each.
_READ_OPEN = (
    "SELECT position, subscriber_id, email, name, variant, attempts FROM campaign_recipients "
    "WHERE campaign_id = :c AND position >= :first AND position < :end "
    "AND status = 'pending' ORDER BY position"
)
_SET_ROW = (
    "UPDATE campaign_recipients SET status = :status, updated_at = :now, error = :error, "
    "provider_message_id = :pid, attempts = :attempts "
    "WHERE campaign_id = :c AND position = :p AND status = 'pending'"
)
# A recipient's ``attempts`` is the number of the last hand-over that recorded it, so those of
# the hand-over being recorded that are still unwritten are the open rows numbered below it
# (one left open by a transient failure keeps ``pending`` but is numbered, and not swept).
_SET_REST = (
    "UPDATE campaign_recipients SET status = :status, updated_at = :now, error = :error, "
    "provider_message_id = :pid, attempts = :attempts "
    "WHERE campaign_id = :c AND position >= :first AND position < :end AND status = 'pending' "
    "AND attempts < :attempts"
)
_STILL_OPEN = text(
    "SELECT count(*) FROM campaign_recipients WHERE campaign_id = :c AND position >= :first "
    "AND position < :end AND status = 'pending'"
)
_COUNTED = {
    RecipientState.SENT: "sent",
    RecipientState.FAILED: "failed",
    RecipientState.SUPPRESSED: "suppressed",
    RecipientState.AMBIGUOUS: "ambiguous",
}


def _select(conn: Connection, statement: str, params: dict[str, Any]) -> list[Any]:
    driver = sqlite_connection(conn)
    if driver is not None:
        return driver.execute(statement, params).fetchall()
    return list(conn.execute(text(statement), params).all())


def _many(conn: Connection, statement: str, rows: list[dict[str, Any]]) -> int:
    """Run ``statement`` once per row; the rows it changed in all."""
    if not rows:
        return 0
    driver = sqlite_connection(conn)
    if driver is not None:
        return driver.executemany(statement, rows).rowcount
    return int(conn.execute(text(statement), rows).rowcount)


class RecipientOutcome(NamedTuple):
    """What became of one recipient: a final state, or ``PENDING`` to try again later (a
    tuple: a chunk makes a thousand at a time)."""

    position: int
    state: RecipientState
    provider_message_id: str | None = None
    error: str | None = None


class CampaignLedger:
    def __init__(
        self,
        db: Database,
        suppressions: Suppressions,
        *,
        resend_ambiguous: bool = False,
        guard: ReputationGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._guard = guard
        self._db = db
        self._suppressions = suppressions
        self._resend_ambiguous = resend_ambiguous
        self._clock = clock

    async def prepare(self, job: ChunkJob, lease_seconds: float) -> PreparedChunk:
        return await self._db.write(lambda conn: self._prepare(conn, job, lease_seconds))

    def _prepare(self, conn: Connection, job: ChunkJob, lease_seconds: float) -> PreparedChunk:
        now = self._clock()
        row = conn.execute(
            select(
                campaigns.c.status,
                campaigns.c.ab_winner,
                campaigns.c.bounced_hard,
                campaigns.c.complained,
                campaigns.c.status_reason,
            ).where(campaigns.c.id == job.campaign_id)
        ).first()
        if row is None:
            return PreparedChunk(CampaignState.CANCELLED)  # deleted: nothing to send
        state = CampaignState(row.status)
        chunk = _chunk(conn, job, lock=True)
        if chunk is None or chunk.state == ChunkState.DONE.value:
            return PreparedChunk(CampaignState.FINISHED)
        overridden = (row.status_reason or "").startswith(OVERRIDE_PREFIX)
        if state is CampaignState.SENDING and self._guard is not None and not overridden:
            reason = self._guard.breached(conn, job.campaign_id, row.bounced_hard, row.complained)
            if reason is not None:
                _pause(conn, job.campaign_id, reason, datetime.fromtimestamp(now, UTC))
                state = CampaignState.PAUSED
        if state is not CampaignState.SENDING:
            if state is CampaignState.PAUSED:
                _set_chunk_state(conn, job, ChunkState.HELD)  # resume publishes it again
            return PreparedChunk(state)
        in_doubt = chunk.sending_since is not None
        if in_doubt and now - chunk.sending_since < lease_seconds:
            return PreparedChunk(state, busy=True)
        span = {"c": job.campaign_id, "first": chunk.first_position}
        span["end"] = chunk.first_position + chunk.size
        counts: Counter[str] = Counter()
        if in_doubt and not self._resend_ambiguous:
            # The last hand-over's worker died with the chunk's open recipients in hand.
            values = _outcome(RecipientState.AMBIGUOUS, now, chunk.handovers, error="in doubt")
            counts["ambiguous"] += _execute(conn, _SET_REST, {**span, **values})
        # (position, subscriber_id, email, name, variant, attempts) per open recipient
        rows = _select(conn, _READ_OPEN, span)
        blocked = self._suppressions.blocked_within(
            conn, [row[2] for row in rows if row[2]], marketing=True
        )
        handover = chunk.handovers + 1
        suppressed: list[dict[str, object]] = []
        to_send: list[ChunkRecipient] = []
        for position, subscriber_id, email, name, variant, attempts in rows:
            # No address: the subscriber was erased (GDPR) after the snapshot.
            if not email or (blocked and email.lower() in blocked):
                change = _outcome(RecipientState.SUPPRESSED, now, attempts)
                suppressed.append({**change, "c": job.campaign_id, "p": position})
            else:
                to_send.append(ChunkRecipient(position, subscriber_id, email, name, variant))
        counts["suppressed"] += _many(conn, _SET_ROW, suppressed)
        marks: dict[str, object] = {"sending_since": None}
        if to_send:
            marks = {"sending_since": now, "handovers": handover}
        _update_chunk(conn, job, counts, datetime.fromtimestamp(now, UTC), **marks)
        return PreparedChunk(
            state,
            to_send=to_send,
            ab_winner=row.ab_winner,
            handover=handover if to_send else None,
        )

    async def heartbeat(self, job: ChunkJob, handover: int) -> None:
        """Keep a chunk's hand-over fresh while a slow provider call lasts."""
        c = campaign_chunks.c
        statement = (
            update(campaign_chunks)
            .where(
                c.campaign_id == job.campaign_id,
                c.chunk == job.chunk,
                c.handovers == handover,
                c.sending_since.is_not(None),
            )
            .values(sending_since=self._clock())
        )
        await self._db.write(lambda conn: conn.execute(statement))

    async def settle(
        self, job: ChunkJob, handover: int | None, outcomes: Sequence[RecipientOutcome]
    ) -> int:
        """Record the outcomes of hand-over number ``handover`` (None when ``prepare`` handed
        nobody over); return how many of the chunk's recipients are still open."""
        return await self._db.write(lambda conn: self._settle(conn, job, handover, outcomes))

    def _settle(
        self,
        conn: Connection,
        job: ChunkJob,
        handover: int | None,
        outcomes: Sequence[RecipientOutcome],
    ) -> int:
        now = self._clock()
        when = datetime.fromtimestamp(now, UTC)
        # Locked: a later delivery that would judge this hand-over in doubt waits for it.
        chunk = _chunk(conn, job, lock=True)
        if chunk is None:
            return 0
        span = {"c": job.campaign_id, "first": chunk.first_position}
        span["end"] = chunk.first_position + chunk.size
        if handover is not None:
            if chunk.handovers != handover or chunk.sending_since is None:
                # This worker outlived its lease and another delivery resolved the chunk.
                return int(conn.execute(_STILL_OPEN, span).scalar_one())
            counts = _record(conn, span, handover, outcomes, now)
            _update_chunk(conn, job, counts, when, sending_since=None)
        still_open = int(conn.execute(_STILL_OPEN, span).scalar_one())
        if still_open == 0:
            # The campaign's row is locked first so that the last chunks' settles take turns:
            # under READ COMMITTED each would otherwise see the other's chunk still open, and
            # neither would finish the campaign.
            conn.execute(
                select(campaigns.c.id).where(campaigns.c.id == job.campaign_id).with_for_update()
            )
            _set_chunk_state(conn, job, ChunkState.DONE, when)
            _finish_if_complete(conn, job.campaign_id, when)
        return still_open


def _record(
    conn: Connection,
    span: dict[str, Any],
    handover: int,
    outcomes: Sequence[RecipientOutcome],
    now: float,
) -> Counter[str]:
    """Write ``outcomes``; the counter changes they make. Most of a chunk usually shares one
    outcome (sent, with the batch call's id): that one is written as a single range update
    over the rows left open, the others row by row first."""
    groups: dict[tuple[RecipientState, str | None, str | None], list[int]] = {}
    for o in outcomes:
        key = (o.state, o.provider_message_id, o.error[:500] if o.error else None)
        groups.setdefault(key, []).append(o.position)
    counts: Counter[str] = Counter()
    if not groups:
        return counts
    largest = max(groups, key=lambda key: len(groups[key]))
    for key, positions in groups.items():
        if key == largest:
            continue
        state, pid, error = key
        values = {**_outcome(state, now, handover, pid, error), "c": span["c"]}
        changed = _many(conn, _SET_ROW, [{**values, "p": p} for p in positions])
        if state in _COUNTED:
            counts[_COUNTED[state]] += changed
    state, pid, error = largest
    changed = _execute(conn, _SET_REST, {**span, **_outcome(state, now, handover, pid, error)})
    if state in _COUNTED:
        counts[_COUNTED[state]] += changed
    return counts


def _execute(conn: Connection, statement: str, params: dict[str, Any]) -> int:
    driver = sqlite_connection(conn)
    if driver is not None:
        return driver.execute(statement, params).rowcount
    return int(conn.execute(text(statement), params).rowcount)


def _outcome(
    state: RecipientState,
    now: float,
    attempts: int,
    provider_message_id: str | None = None,
    error: str | None = None,
) -> dict[str, object]:
    return {
        "status": state.value,
        "now": now,
        "error": error[:500] if error else None,
        "pid": provider_message_id,
        "attempts": attempts,
    }


def _chunk(conn: Connection, job: ChunkJob, *, lock: bool = False) -> Row[Any] | None:
    """The chunk's row; ``lock`` holds it until commit (PostgreSQL; SQLite's write
    transactions are serial anyway), so two deliveries of one chunk decide one after the
    other: the second then finds the recipients ``sending`` and stands back."""
    c = campaign_chunks.c
    query = select(campaign_chunks).where(c.campaign_id == job.campaign_id, c.chunk == job.chunk)
    return conn.execute(query.with_for_update() if lock else query).first()


def _set_chunk_state(
    conn: Connection, job: ChunkJob, state: ChunkState, when: datetime | None = None
) -> None:
    c = campaign_chunks.c
    conn.execute(
        update(campaign_chunks)
        .where(c.campaign_id == job.campaign_id, c.chunk == job.chunk)
        .values(state=state.value, updated_at=when or datetime.now(UTC))
    )


def _update_chunk(
    conn: Connection, job: ChunkJob, counts: Counter[str], when: datetime, **marks: object
) -> None:
    """Add ``counts`` to the chunk's counters and set ``marks`` (its hand-over columns)."""
    c = campaign_chunks.c
    values: dict[str, object] = {name: c[name] + n for name, n in counts.items() if n}
    conn.execute(
        update(campaign_chunks)
        .where(c.campaign_id == job.campaign_id, c.chunk == job.chunk)
        .values(updated_at=when, **values, **marks)
    )


GUARD_PREFIX = "paused itself:"
OVERRIDE_PREFIX = "resumed by an operator after it paused itself"


@dataclass(frozen=True, slots=True)
class ReputationGuard:
    """Checked before every chunk goes out: a campaign whose hard-bounce or complaint rate
    (of its recipients sent so far, once ``min_sends`` have gone) has crossed the critical
    line pauses itself, so it stops within a chunk or two of crossing it however fast it
    sends. The alert monitor reports it (``alerts/``). An operator who resumes a campaign it
    paused overrides it for that campaign (``Campaigns.resume``)."""

    bounce_rate: float
    complaint_rate: float
    min_sends: int

    def breached(
        self, conn: Connection, campaign_id: str, bounced: int, complained: int
    ) -> str | None:
        if bounced + complained == 0:
            return None
        c = campaign_chunks.c
        sent = int(
            conn.execute(
                select(func.coalesce(func.sum(c.sent), 0)).where(c.campaign_id == campaign_id)
            ).scalar_one()
        )
        if sent < self.min_sends:
            return None
        for what, count, line in (
            ("hard-bounce", bounced, self.bounce_rate),
            ("complaint", complained, self.complaint_rate),
        ):
            if count / sent > line:
                return (
                    f"{GUARD_PREFIX} {what} rate {count / sent:.2%} of {sent} sent is over "
                    f"the critical line {line:.2%}"
                )
        return None


def _pause(conn: Connection, campaign_id: str, reason: str, when: datetime) -> None:
    conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign_id, campaigns.c.status == CampaignState.SENDING.value)
        .values(status=CampaignState.PAUSED.value, status_reason=reason, updated_at=when)
    )


def _finish_if_complete(conn: Connection, campaign_id: str, when: datetime) -> None:
    c = campaign_chunks.c
    unfinished = conn.execute(
        select(c.chunk)
        .where(c.campaign_id == campaign_id, c.state != ChunkState.DONE.value)
        .limit(1)
    ).first()
    if unfinished is None:
        conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id, campaigns.c.status == "sending")
            .values(status=CampaignState.FINISHED.value, finished_at=when, updated_at=when)
        )
