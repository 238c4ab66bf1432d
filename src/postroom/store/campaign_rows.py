"""The campaign repository's statements and row mappings (``store/campaigns.py`` holds the
repository): the audience snapshot, chunk rows, status sums, A/B documents and counts."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Row, and_, func, select, text, update

from postroom.errors import InvalidMessageError, NotFoundError
from postroom.store.campaign_records import (
    CHUNK_SIZE,
    AbMetric,
    AbTest,
    CampaignState,
    CampaignStatus,
    ChunkJob,
    ChunkState,
    NewCampaign,
    RecipientState,
    Variant,
    VariantResult,
)
from postroom.store.schema import campaign_chunks, campaign_recipients, campaigns

SNAPSHOT = """
INSERT INTO campaign_recipients
    (campaign_id, position, subscriber_id, email, name, status, attempts)
SELECT :campaign_id, row_number() OVER (ORDER BY {order}) - 1, sub.id, sub.email, sub.name,
       'pending', 0
FROM subscriptions s JOIN subscribers sub ON sub.id = s.subscriber_id
WHERE s.list_id = :list_id AND s.status = 'active' AND sub.status = 'active'
  AND sub.email IS NOT NULL
  AND (s.consent_expires_at IS NULL OR s.consent_expires_at > :now)
"""
COUNTS = select(
    func.coalesce(func.sum(campaign_chunks.c.sent), 0),
    func.coalesce(func.sum(campaign_chunks.c.failed), 0),
    func.coalesce(func.sum(campaign_chunks.c.suppressed), 0),
    func.coalesce(func.sum(campaign_chunks.c.ambiguous), 0),
)


FEEDBACK_COUNTERS = ("delivered", "bounced_hard", "bounced_soft", "complained", "unsubscribed")


def check(new: NewCampaign) -> None:
    if new.spread_seconds < 0:
        raise InvalidMessageError("must not be negative", "spread_seconds")
    ab = new.ab_test
    if ab is None:
        return
    if not 2 <= len(ab.variants) <= 4:
        raise InvalidMessageError("an A/B test takes 2 to 4 variants", "ab_test.variants")
    if not 0 < ab.share <= 1:
        raise InvalidMessageError("must be in (0, 1]", "ab_test.share")
    if not 0 <= ab.default < len(ab.variants):
        raise InvalidMessageError("must name one of the variants", "ab_test.default")
    if ab.wait_seconds < 0:
        raise InvalidMessageError("must not be negative", "ab_test.wait_seconds")
    for index, variant in enumerate(ab.variants):
        if variant.subject is None and variant.from_name is None:
            raise InvalidMessageError("give a subject or a from_name", f"ab_test.variants.{index}")


def ab_document(ab: AbTest | None) -> dict[str, Any] | None:
    if ab is None:
        return None
    document = asdict(ab)
    document["metric"] = ab.metric.value
    return document


def ab_test(document: dict[str, Any] | None) -> AbTest | None:
    if document is None:
        return None
    return AbTest(
        variants=tuple(Variant(**v) for v in document["variants"]),
        share=document["share"],
        wait_seconds=document["wait_seconds"],
        metric=AbMetric(document["metric"]),
        default=document["default"],
        alpha=document["alpha"],
    )


def test_size(total: int, ab: AbTest) -> int:
    return min(total, max(len(ab.variants), math.ceil(total * ab.share)))


def snapshot(
    conn: Connection, campaign_id: str, list_id: str, shuffled: bool, now: datetime
) -> int:
    # An A/B test group must be a random sample: subscriber ids follow sign-up order.
    order = "random()" if shuffled else "s.subscriber_id"  # the list index's own order
    params = {"campaign_id": campaign_id, "list_id": list_id, "now": naive(now)}
    return int(conn.execute(text(SNAPSHOT.format(order=order)), params).rowcount)


def naive(when: datetime) -> datetime:
    # Raw SQL bypasses UtcDateTime: bind the stored form (naive UTC).
    return when.astimezone(UTC).replace(tzinfo=None)


def chunk_rows(campaign_id: str, total: int, test_size: int, now: datetime) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    # The test group and the rest are cut apart, so that no chunk mixes the two.
    for start, end, state in (
        (0, test_size, ChunkState.HELD),
        (test_size, total, ChunkState.WAITING),
    ):
        for first in range(start, end, CHUNK_SIZE):
            rows.append(
                {
                    "campaign_id": campaign_id,
                    "chunk": len(rows),
                    "first_position": first,
                    "size": min(CHUNK_SIZE, end - first),
                    "state": state.value,
                    "not_before": None,
                    "sent": 0,
                    "failed": 0,
                    "suppressed": 0,
                    "ambiguous": 0,
                    "updated_at": now,
                }
            )
    return rows


def spread(rows: list[dict[str, Any]], seconds: float, now: datetime) -> None:
    """Give chunk ``i`` of ``n`` a start ``i/n`` of the way through the window."""
    if seconds <= 0 or not rows:
        return
    for index, row in enumerate(rows):
        row["not_before"] = now + timedelta(seconds=seconds * index / len(rows))


def chunk_update(job: ChunkJob, state: ChunkState) -> Any:
    return update(campaign_chunks).where(
        and_(
            campaign_chunks.c.campaign_id == job.campaign_id,
            campaign_chunks.c.chunk == job.chunk,
            campaign_chunks.c.state == state.value,
        )
    )


def row(conn: Connection, campaign_id: str) -> Row[Any]:
    row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).first()
    if row is None:
        raise NotFoundError(f"no campaign with id {campaign_id!r}")
    return row


def set_status(
    conn: Connection, campaign_id: str, state: CampaignState, reason: str | None, now: datetime
) -> None:
    conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign_id)
        .values(status=state.value, status_reason=reason, updated_at=now)
    )


def status(conn: Connection, campaign_id: str) -> CampaignStatus | None:
    row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).first()
    if row is None:
        return None
    sent, failed, suppressed, ambiguous = conn.execute(
        COUNTS.where(campaign_chunks.c.campaign_id == campaign_id)
    ).one()
    document = orjson.loads(row.document)
    ab = ab_test(document.get("ab_test"))
    return CampaignStatus(
        id=row.id,
        list_id=row.list_id,
        email_type=row.email_type,
        status=CampaignState(row.status),
        status_reason=row.status_reason,
        send_at=row.send_at,
        created_at=row.created_at,
        started_at=row.started_at,
        snapshot_at=row.snapshot_at,
        finished_at=row.finished_at,
        total=row.total,
        chunks=row.chunks,
        sent=int(sent),
        failed=int(failed),
        suppressed=int(suppressed),
        ambiguous=int(ambiguous),
        **{name: getattr(row, name) for name in FEEDBACK_COUNTERS},
        ab_state=row.ab_state,
        ab_winner=row.ab_winner,
        variants=variant_results(conn, campaign_id, ab) if ab else (),
    )


def variant_counts(conn: Connection, campaign_id: str) -> dict[int, tuple[int, int, int]]:
    """Per variant of the test group: (sent, unique human opens, unique clicks)."""
    r = campaign_recipients.c
    query = (
        select(
            r.variant,
            func.count().filter(r.status == RecipientState.SENT.value),
            func.count(r.opened_at),
            func.count(r.clicked_at),
        )
        .where(r.campaign_id == campaign_id, r.variant.is_not(None))
        .group_by(r.variant)
    )
    return {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in conn.execute(query)}


def variant_results(conn: Connection, campaign_id: str, ab: AbTest) -> tuple[VariantResult, ...]:
    counts = variant_counts(conn, campaign_id)
    return tuple(
        VariantResult(index, v.subject, v.from_name, *counts.get(index, (0, 0, 0)))
        for index, v in enumerate(ab.variants)
    )
