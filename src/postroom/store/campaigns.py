"""Campaigns: create, snapshot the audience, track chunks, pause, resume, cancel, report.

A campaign's audience is snapshotted once, when sending starts, into ``campaign_recipients``
(one row per position) by a single ``INSERT … SELECT``: the active subscriptions of active
subscribers on the list whose consent has not expired. Suppression is checked later, at send
time, like every other send: an address suppressed between the snapshot and its chunk is
skipped and counted ``suppressed``. Positions are then cut into chunks of up to 1,000; a chunk
is one queue message, published once it is due (see ``ChunkState``). What happens to each
recipient is in ``store/campaign_ledger.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Row, func, select, text, update
from ulid import ULID

from postroom.errors import InvalidMessageError, NotFoundError
from postroom.store import campaign_rows as rows
from postroom.store.campaign_ledger import GUARD_PREFIX, OVERRIDE_PREFIX
from postroom.store.campaign_records import (
    CampaignContent,
    CampaignState,
    CampaignStatus,
    ChunkJob,
    ChunkState,
    NewCampaign,
)
from postroom.store.database import Database
from postroom.store.schema import campaign_chunks, campaigns, lists


class Campaigns:
    """Repository of campaigns and their chunks."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        self._now = clock or (lambda: datetime.now(UTC))

    async def create(self, new: NewCampaign) -> CampaignStatus:
        rows.check(new)
        now = self._now()
        campaign_id = str(ULID())
        document = {
            "template_data": new.template_data,
            "metadata": new.metadata,
            "spread_seconds": new.spread_seconds,
            "ab_test": rows.ab_document(new.ab_test),
        }

        def work(conn: Connection) -> None:
            if conn.execute(select(lists.c.id).where(lists.c.id == new.list_id)).first() is None:
                raise InvalidMessageError(f"no list with id {new.list_id!r}", "list_id")
            conn.execute(
                campaigns.insert(),
                {
                    "id": campaign_id,
                    "list_id": new.list_id,
                    "email_type": new.email_type,
                    "document": orjson.dumps(document),
                    "status": CampaignState.SCHEDULED.value,
                    "ab_state": "testing" if new.ab_test else None,
                    "send_at": new.send_at or now,
                    "total": 0,
                    "chunks": 0,
                    **dict.fromkeys(rows.FEEDBACK_COUNTERS, 0),
                    "created_at": now,
                    "updated_at": now,
                },
            )

        await self._db.write(work)
        return await self.get(campaign_id)

    async def get(self, campaign_id: str) -> CampaignStatus:
        status = await self._db.read(lambda conn: rows.status(conn, campaign_id))
        if status is None:
            raise NotFoundError(f"no campaign with id {campaign_id!r}")
        return status

    async def list_recent(
        self, limit: int = 50, status: CampaignState | None = None
    ) -> list[CampaignStatus]:
        def work(conn: Connection) -> list[CampaignStatus]:
            query = select(campaigns.c.id).order_by(campaigns.c.created_at.desc()).limit(limit)
            if status is not None:
                query = query.where(campaigns.c.status == status.value)
            ids = conn.execute(query).scalars().all()
            return [s for s in (rows.status(conn, i) for i in ids) if s is not None]

        return await self._db.read(work)

    async def content(self, campaign_id: str) -> CampaignContent:
        def work(conn: Connection) -> Row[Any] | None:
            return conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).first()

        row = await self._db.read(work)
        if row is None:
            raise NotFoundError(f"no campaign with id {campaign_id!r}")
        document = orjson.loads(row.document)
        return CampaignContent(
            id=campaign_id,
            list_id=row.list_id,
            email_type=row.email_type,
            template_data=document["template_data"],
            metadata=document["metadata"],
            ab_test=rows.ab_test(document.get("ab_test")),
        )

    async def pause(self, campaign_id: str, reason: str) -> CampaignStatus:
        """Stop sending: chunks park as workers come to them; ``resume`` sends them."""
        return await self._move(
            campaign_id,
            {CampaignState.SCHEDULED, CampaignState.SENDING},
            CampaignState.PAUSED,
            reason,
        )

    async def resume(self, campaign_id: str) -> CampaignStatus:
        def work(conn: Connection) -> None:
            row = rows.row(conn, campaign_id)
            if row.status != CampaignState.PAUSED.value:
                raise InvalidMessageError(f"campaign is {row.status}, not paused", "status")
            target = CampaignState.SENDING if row.started_at else CampaignState.SCHEDULED
            reason = None
            if (row.status_reason or "").startswith(GUARD_PREFIX):
                # The operator looked and decided: the guard does not pause it again.
                reason = f"{OVERRIDE_PREFIX} ({row.status_reason})"[:500]
            rows.set_status(conn, campaign_id, target, reason, self._now())

        await self._db.write(work)
        return await self.get(campaign_id)

    async def cancel(self, campaign_id: str, reason: str) -> CampaignStatus:
        allowed = {CampaignState.SCHEDULED, CampaignState.SENDING, CampaignState.PAUSED}
        return await self._move(campaign_id, allowed, CampaignState.CANCELLED, reason)

    async def _move(
        self, campaign_id: str, allowed: set[CampaignState], target: CampaignState, reason: str
    ) -> CampaignStatus:
        def work(conn: Connection) -> None:
            row = rows.row(conn, campaign_id)
            if row.status not in {s.value for s in allowed}:
                raise InvalidMessageError(
                    f"campaign is {row.status}; cannot make it {target.value}", "status"
                )
            rows.set_status(conn, campaign_id, target, reason[:500], self._now())

        await self._db.write(work)
        return await self.get(campaign_id)

    # The scheduler's side -------------------------------------------------------------

    async def due(self) -> list[str]:
        """Scheduled campaigns whose time has come."""
        now = self._now()

        def work(conn: Connection) -> list[str]:
            query = select(campaigns.c.id).where(
                campaigns.c.status == CampaignState.SCHEDULED.value, campaigns.c.send_at <= now
            )
            return list(conn.execute(query.order_by(campaigns.c.send_at)).scalars())

        return await self._db.read(work)

    async def start(self, campaign_id: str) -> bool:
        """Snapshot the audience and cut it into held chunks; False if another process
        started it first or it is no longer scheduled."""
        now = self._now()

        def work(conn: Connection) -> bool:
            moved = conn.execute(
                update(campaigns)
                .where(
                    campaigns.c.id == campaign_id,
                    campaigns.c.status == CampaignState.SCHEDULED.value,
                )
                .values(status=CampaignState.SENDING.value, started_at=now, updated_at=now)
            )
            if moved.rowcount != 1:
                return False
            row = rows.row(conn, campaign_id)
            document = orjson.loads(row.document)
            ab_test = rows.ab_test(document.get("ab_test"))
            total = rows.snapshot(conn, campaign_id, row.list_id, ab_test is not None, now)
            test_size = rows.test_size(total, ab_test) if ab_test else total
            chunk_rows = rows.chunk_rows(campaign_id, total, test_size, now)
            if ab_test is not None:
                conn.execute(
                    text(
                        "UPDATE campaign_recipients SET variant = position % :k "
                        "WHERE campaign_id = :c AND position < :n"
                    ),
                    {"k": len(ab_test.variants), "c": campaign_id, "n": test_size},
                )
            rows.spread(chunk_rows, float(document.get("spread_seconds") or 0.0), now)
            if chunk_rows:
                conn.execute(campaign_chunks.insert(), chunk_rows)
            done = not chunk_rows
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(
                    total=total,
                    chunks=len(chunk_rows),
                    snapshot_at=now,
                    status=(CampaignState.FINISHED if done else CampaignState.SENDING).value,
                    finished_at=now if done else None,
                    ab_state=row.ab_state if total else None,
                )
            )
            return True

        return await self._db.write(work)

    async def take_due_chunks(self, limit: int = 500) -> list[ChunkJob]:
        """Held chunks of sending campaigns that are due, moved to ``queued``: the caller
        publishes them next. One that never gets published (a crash in between) is found
        again by :meth:`stale_chunks`."""
        now = self._now()
        chunks = campaign_chunks.c
        due = (chunks.not_before.is_(None)) | (chunks.not_before <= now)
        return await self._db.write(
            lambda conn: _move_chunks(
                conn, ChunkState.HELD, due, {"state": ChunkState.QUEUED.value}, now, limit
            )
        )

    async def stale_chunks(self, older_than: float, limit: int = 500) -> list[ChunkJob]:
        """Queued chunks of sending campaigns untouched for ``older_than`` seconds: their
        job was lost before it was published (publishing again is harmless: recipients
        already handled are skipped). Touched again so they are not republished at once."""
        now = self._now()
        stale = campaign_chunks.c.updated_at < now - timedelta(seconds=older_than)
        return await self._db.write(
            lambda conn: _move_chunks(conn, ChunkState.QUEUED, stale, {}, now, limit)
        )

    async def release_rest(self, campaign_id: str, winner: int, reason: str) -> bool:
        """After an A/B test: the rest of the audience gets ``winner``; its chunks become
        due. False if the decision was already taken."""
        now = self._now()

        def work(conn: Connection) -> bool:
            moved = conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.ab_state == "waiting")
                .values(ab_state="decided", ab_winner=winner, status_reason=reason, updated_at=now)
            )
            if moved.rowcount != 1:
                return False
            conn.execute(
                update(campaign_chunks)
                .where(
                    campaign_chunks.c.campaign_id == campaign_id,
                    campaign_chunks.c.state == ChunkState.WAITING.value,
                )
                .values(state=ChunkState.HELD.value, updated_at=now)
            )
            return True

        return await self._db.write(work)

    async def variant_counts(self, campaign_id: str) -> dict[int, tuple[int, int, int]]:
        return await self._db.read(lambda conn: rows.variant_counts(conn, campaign_id))

    async def ab_waiting(self) -> list[tuple[str, datetime]]:
        """A/B campaigns whose test group is all sent: (id, when its last chunk finished).
        Marks ``testing`` ones ``waiting`` as their test chunks complete."""
        now = self._now()

        def work(conn: Connection) -> list[tuple[str, datetime]]:
            found = []
            query = select(campaigns.c.id, campaigns.c.ab_state).where(
                campaigns.c.status == CampaignState.SENDING.value,
                campaigns.c.ab_state.in_(["testing", "waiting"]),
            )
            for row in conn.execute(query).all():
                open_chunks, finished = conn.execute(
                    select(
                        func.count().filter(
                            campaign_chunks.c.state.in_(
                                [ChunkState.HELD.value, ChunkState.QUEUED.value]
                            )
                        ),
                        func.max(campaign_chunks.c.updated_at).filter(
                            campaign_chunks.c.state == ChunkState.DONE.value
                        ),
                    ).where(campaign_chunks.c.campaign_id == row.id)
                ).one()
                if open_chunks:
                    continue
                if row.ab_state == "testing":
                    conn.execute(
                        update(campaigns)
                        .where(campaigns.c.id == row.id)
                        .values(ab_state="waiting", updated_at=now)
                    )
                found.append((row.id, finished or now))
            return found

        return await self._db.write(work)


def _move_chunks(
    conn: Connection,
    state: ChunkState,
    condition: Any,
    values: dict[str, Any],
    now: datetime,
    limit: int,
) -> list[ChunkJob]:
    """Chunks of sending campaigns in ``state`` meeting ``condition``, in order, each updated
    with ``values`` (and touched) under a compare-and-set on its state."""
    query = (
        select(campaign_chunks.c.campaign_id, campaign_chunks.c.chunk)
        .join(campaigns, campaigns.c.id == campaign_chunks.c.campaign_id)
        .where(
            campaigns.c.status == CampaignState.SENDING.value,
            campaign_chunks.c.state == state.value,
            condition,
        )
        .order_by(campaign_chunks.c.campaign_id, campaign_chunks.c.chunk)
        .limit(limit)
    )
    jobs = [ChunkJob(r.campaign_id, r.chunk) for r in conn.execute(query)]
    for job in jobs:
        conn.execute(rows.chunk_update(job, state).values(updated_at=now, **values))
    return jobs
