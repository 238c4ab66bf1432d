"""The campaign ledger on both databases: a chunk's hand-over is marked on the chunk before
the provider call, and a delivery that finds one marked decides by the lease: busy within it,
in doubt past it (ambiguous, or handed over again when the policy resends)."""

from __future__ import annotations

from sqlalchemy import select
from tests.unit.store.test_campaigns import POST, audience

from postroom.store.campaign_ledger import CampaignLedger, RecipientOutcome
from postroom.store.campaign_records import (
    CampaignState,
    ChunkJob,
    ChunkRecipient,
    NewCampaign,
    PreparedChunk,
    RecipientState,
)
from postroom.store.schema import campaign_chunks, campaign_recipients
from postroom.store.suppressions import SuppressionScope
from postroom.wiring import Postroom

LEASE = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def _started(postroom: Postroom, count: int) -> ChunkJob:
    await audience(postroom, count)
    campaign = await postroom.campaigns.create(
        NewCampaign("letters", "new_post_notification", POST)
    )
    assert await postroom.campaigns.start(campaign.id)
    return ChunkJob(campaign.id, 0)


async def _statuses(postroom: Postroom, job: ChunkJob) -> dict[str, int]:
    r = campaign_recipients.c
    query = select(r.status, r.attempts).where(r.campaign_id == job.campaign_id)
    rows = await postroom.db.read(lambda conn: conn.execute(query).all())
    counts: dict[str, int] = {}
    for row in rows:
        key = f"{row.status}@{row.attempts}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _all(
    recipients: list[ChunkRecipient], state: RecipientState, pid: str
) -> list[RecipientOutcome]:
    return [RecipientOutcome(r.position, state, pid) for r in recipients]


async def _hand_over(postroom: Postroom, job: ChunkJob) -> tuple[int | None, float | None]:
    c = campaign_chunks.c
    query = select(c.handovers, c.sending_since).where(
        c.campaign_id == job.campaign_id, c.chunk == job.chunk
    )
    row = await postroom.db.read(lambda conn: conn.execute(query).one())
    return row.handovers, row.sending_since


async def test_a_hand_over_is_marked_on_the_chunk_until_its_outcomes_are_recorded(
    postroom: Postroom,
) -> None:
    job = await _started(postroom, 10)
    clock = Clock()
    ledger = CampaignLedger(postroom.db, postroom.suppressions, clock=clock)
    prepared = await ledger.prepare(job, LEASE)
    assert (len(prepared.to_send), prepared.handover) == (10, 1)
    assert await _hand_over(postroom, job) == (1, clock.now)
    # Another delivery of the chunk within the lease stands back.
    assert (await ledger.prepare(job, LEASE)).busy
    clock.now += 20
    await ledger.heartbeat(job, 1)
    clock.now += 20  # past the first lease, within the one the heartbeat renewed
    assert (await ledger.prepare(job, LEASE)).busy
    outcomes = _all(prepared.to_send, RecipientState.SENT, "esp-1")
    outcomes[0] = RecipientOutcome(0, RecipientState.PENDING, error="421 try later")
    assert await ledger.settle(job, prepared.handover, outcomes) == 1
    assert await _hand_over(postroom, job) == (1, None)
    assert await _statuses(postroom, job) == {"sent@1": 9, "pending@1": 1}
    # The one left open goes in the next hand-over, alone.
    again = await ledger.prepare(job, LEASE)
    assert ([r.position for r in again.to_send], again.handover) == ([0], 2)
    sent = [RecipientOutcome(0, RecipientState.SENT, "esp-2")]
    assert await ledger.settle(job, again.handover, sent) == 0
    assert await _statuses(postroom, job) == {"sent@1": 9, "sent@2": 1}
    status = await postroom.campaigns.get(job.campaign_id)
    assert (status.status, status.sent, status.pending) == (CampaignState.FINISHED, 10, 0)


async def _taken_over(
    postroom: Postroom, *, resend: bool
) -> tuple[ChunkJob, CampaignLedger, PreparedChunk, PreparedChunk]:
    """A chunk of 10 handed over by a worker that then goes silent, and the delivery that
    finds it past its lease."""
    job = await _started(postroom, 10)
    clock = Clock()
    ledger = CampaignLedger(
        postroom.db, postroom.suppressions, resend_ambiguous=resend, clock=clock
    )
    lost = await ledger.prepare(job, LEASE)
    clock.now += LEASE + 1
    return job, ledger, lost, await ledger.prepare(job, LEASE)


async def test_a_hand_over_past_its_lease_is_in_doubt_and_never_sent_again(
    postroom: Postroom,
) -> None:
    job, ledger, lost, later = await _taken_over(postroom, resend=False)
    assert later.to_send == [] and later.handover is None
    assert await ledger.settle(job, later.handover, []) == 0
    assert await _statuses(postroom, job) == {"ambiguous@1": 10}
    # The first worker was only slow: its late outcomes change nothing.
    outcomes = _all(lost.to_send, RecipientState.SENT, "esp-1")
    assert await ledger.settle(job, lost.handover, outcomes) == 0
    status = await postroom.campaigns.get(job.campaign_id)
    assert (status.status, status.ambiguous, status.sent) == (CampaignState.FINISHED, 10, 0)


async def test_a_hand_over_in_doubt_is_handed_over_again_when_the_policy_resends(
    postroom: Postroom,
) -> None:
    job, ledger, lost, again = await _taken_over(postroom, resend=True)
    assert (len(again.to_send), again.handover) == (10, 2)
    outcomes = _all(again.to_send, RecipientState.SENT, "esp-2")
    # The slow first worker settles after the takeover: nothing of it is written.
    stale = _all(lost.to_send, RecipientState.FAILED, "x")
    assert await ledger.settle(job, lost.handover, stale) == 10
    assert await ledger.settle(job, again.handover, outcomes) == 0
    assert await _statuses(postroom, job) == {"sent@2": 10}


async def test_suppressed_recipients_are_recorded_without_a_hand_over(postroom: Postroom) -> None:
    job = await _started(postroom, 3)
    for position in range(3):
        await postroom.suppressions.add(
            f"r{position:05d}@example.com", SuppressionScope.ALL, "hard_bounce"
        )
    ledger = CampaignLedger(postroom.db, postroom.suppressions)
    prepared = await ledger.prepare(job, LEASE)
    assert prepared.to_send == [] and prepared.handover is None
    assert await _hand_over(postroom, job) == (0, None)
    assert await ledger.settle(job, None, []) == 0
    status = await postroom.campaigns.get(job.campaign_id)
    assert (status.status, status.suppressed) == (CampaignState.FINISHED, 3)
