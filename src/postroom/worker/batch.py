"""What a claimed batch carries through the pipeline's stages (``worker/pipeline.py``): the
messages, what to tell the queue once the ledger has committed, and the worker's counters."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from postroom.messages import EmailEvent, Priority, RenderedEmail
from postroom.queue.base import Delivery
from postroom.rendering.registry import EmailType
from postroom.store.ledger import Outcome, SendRecord


@dataclass(slots=True)
class Item:
    """A message on its way through the stages."""

    delivery: Delivery
    event: EmailEvent
    email_type: EmailType
    record: SendRecord | None = None
    rendered: RenderedEmail | None = None
    priority: Priority = field(default=Priority.TRANSACTIONAL)

    @property
    def send_id(self) -> str:
        assert self.record is not None
        return self.record.id


@dataclass(slots=True)
class Settlement:
    """What to tell the queue once the ledger has committed."""

    ack: list[Delivery] = field(default_factory=list)
    retry: list[tuple[Delivery, float, str]] = field(default_factory=list)
    release: list[tuple[Delivery, float]] = field(default_factory=list)
    dead: list[tuple[Delivery, str]] = field(default_factory=list)
    suppress: list[tuple[str, str]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    # Abandoned ``sending`` rows to resend: marked ambiguous before the hand-over, so that a
    # resend after a crash leaves its trace even when the resend then succeeds.
    noted: list[Item] = field(default_factory=list)
    email_types: dict[str, str] = field(default_factory=dict)  # send id → type, for metrics

    def absorb(self, other: Settlement) -> None:
        for name in self.__slots__:
            if name == "email_types":
                self.email_types.update(other.email_types)
            else:
                getattr(self, name).extend(getattr(other, name))


@dataclass
class PipelineStats:
    """Counters a worker reports (and tests read)."""

    sent: int = 0
    duplicates: int = 0
    suppressed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    ambiguous: int = 0
    ambiguous_resent: int = 0

    def absorb(self, other: PipelineStats) -> None:
        for counter in fields(self):
            setattr(self, counter.name, getattr(self, counter.name) + getattr(other, counter.name))
