"""What the campaign repository reads and writes (``store/campaigns.py`` holds the queries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

CHUNK_SIZE = 1000
"""Recipients per chunk job: one queue message, one batch call to an ESP that takes 1,000."""


class CampaignState(StrEnum):
    SCHEDULED = "scheduled"  # waiting for ``send_at``
    SENDING = "sending"  # snapshot taken, chunks going out
    PAUSED = "paused"  # chunks park as they come up; resume sends them
    CANCELLED = "cancelled"  # nothing more is sent; what went out stays counted
    FINISHED = "finished"  # every recipient has an outcome


class ChunkState(StrEnum):
    WAITING = "waiting"  # the rest of an A/B campaign, until a winner is chosen
    HELD = "held"  # to be published once due (``not_before``) and the campaign is sending
    QUEUED = "queued"  # published as a chunk job
    DONE = "done"  # every recipient of the chunk has an outcome


class RecipientState(StrEnum):
    # Also while its chunk's hand-over is in progress (``campaign_chunks.sending_since``,
    # written before the provider call, as ``sending`` is in the send ledger).
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    AMBIGUOUS = "ambiguous"  # a worker died mid-call: not resent (marketing policy)


class AbMetric(StrEnum):
    OPENS = "opens"  # unique human opens
    CLICKS = "clicks"  # unique clicks


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of an A/B test: a subject template and/or a sender display name."""

    subject: str | None = None
    from_name: str | None = None


@dataclass(frozen=True, slots=True)
class AbTest:
    variants: tuple[Variant, ...]
    share: float = 0.2  # of the audience tried, split evenly across the variants
    wait_seconds: float = 4 * 3600.0  # after the test group has been sent
    metric: AbMetric = AbMetric.OPENS
    default: int = 0  # the variant sent to the rest when no winner is significant
    alpha: float = 0.05


@dataclass(frozen=True, slots=True)
class NewCampaign:
    list_id: str
    email_type: str
    template_data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    send_at: datetime | None = None  # None: now
    spread_seconds: float = 0.0  # deliver over this window instead of at once
    ab_test: AbTest | None = None


@dataclass(frozen=True, slots=True)
class VariantResult:
    variant: int
    subject: str | None
    from_name: str | None
    sent: int
    opened: int
    clicked: int


@dataclass(frozen=True, slots=True)
class CampaignStatus:
    """A campaign with its counts. ``total`` = sent + failed + suppressed + ambiguous +
    pending; a campaign is ``finished`` only when ``pending`` is 0."""

    id: str
    list_id: str
    email_type: str
    status: CampaignState
    status_reason: str | None
    send_at: datetime
    created_at: datetime
    started_at: datetime | None
    snapshot_at: datetime | None
    finished_at: datetime | None
    total: int
    chunks: int
    sent: int
    failed: int
    suppressed: int
    ambiguous: int
    delivered: int
    bounced_hard: int
    bounced_soft: int
    complained: int
    unsubscribed: int
    ab_state: str | None = None
    ab_winner: int | None = None
    variants: tuple[VariantResult, ...] = ()

    @property
    def pending(self) -> int:
        return self.total - self.sent - self.failed - self.suppressed - self.ambiguous

    def as_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}
        data["pending"] = self.pending
        data["variants"] = [{name: getattr(v, name) for name in v.__slots__} for v in self.variants]
        return data


@dataclass(frozen=True, slots=True)
class ChunkJob:
    """What a chunk job's queue message names."""

    campaign_id: str
    chunk: int

    @property
    def job_id(self) -> str:
        return f"{self.campaign_id}.c{self.chunk}"


class ChunkRecipient(NamedTuple):
    """A recipient a chunk hands over now (a tuple: a chunk makes a thousand at a time)."""

    position: int
    subscriber_id: str
    email: str
    name: str | None
    variant: int | None

    def send_id(self, campaign_id: str) -> str:
        return f"{campaign_id}.{self.position}"


@dataclass(frozen=True, slots=True)
class CampaignContent:
    """What every chunk of a campaign renders from (cached by workers: it never changes)."""

    id: str
    list_id: str
    email_type: str
    template_data: dict[str, Any]
    metadata: dict[str, Any]
    ab_test: AbTest | None


@dataclass(slots=True)
class PreparedChunk:
    """The recipients of a chunk to hand over now, and what the campaign says."""

    state: CampaignState
    to_send: list[ChunkRecipient] = field(default_factory=list)
    busy: bool = False  # another worker holds some of its recipients within their lease
    ab_winner: int | None = None
    handover: int | None = None  # the chunk's hand-over number, when ``to_send`` has anyone


def parse_send_id(send_id: str) -> tuple[str, int] | None:
    """``(campaign id, position)`` for a campaign recipient's send id, else None."""
    campaign_id, dot, position = send_id.partition(".")
    if not dot or len(campaign_id) != 26 or not position.isdigit():
        return None
    return campaign_id, int(position)
