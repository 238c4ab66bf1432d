"""The provider contract.

A provider turns a batch of rendered messages into per-recipient results. It never raises for a
failure of one message: each :class:`SendResult` carries either the provider's message id or a
:class:`~postroom.errors.ProviderError` subclass that tells the worker what to do (retry soon,
retry after ``retry_after``, never retry, or treat as possibly sent). It raises only for bugs.

``send`` must keep the order of its input and return exactly one result per message. A message's
``send_id`` is stable across retries; providers that can deduplicate on it (the outbox, ESPs with
an idempotency key) must do so, which turns an ambiguous resend into a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from postroom.errors import ProviderError
from postroom.messages import RenderedEmail

__all__ = [
    "LONGEST_WAIT_IN_PLACE",
    "CallsPerMessage",
    "MessageSigner",
    "Provider",
    "RenderedEmail",
    "SendResult",
]

LONGEST_WAIT_IN_PLACE = 5.0
"""The longest rate-limit pause waited out in place, by the hand-over or inside a provider's
call; mail facing a longer one goes back through the queue, so no worker slot or queue lease
is held while it waits (a lease outlived would let another worker take the message)."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome for one message: ``provider_message_id`` on success, else ``error``.

    ``provider`` names who handled it when that is not the provider called (a failover
    wrapper that routed the message to its secondary).
    """

    send_id: str
    provider_message_id: str | None = None
    error: ProviderError | None = None
    provider: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class MessageSigner(Protocol):
    """Signs a finished MIME message (DKIM); the signer lives outside this seam."""

    def sign(self, message: bytes) -> bytes: ...


@runtime_checkable
class CallsPerMessage(Protocol):
    """A provider that makes one API call per message of a batch (SES's SendEmail), so that
    request-rate limits count messages, not batches."""

    calls_per_message: bool


class Provider(Protocol):
    """A way to hand mail over. Implementations live one per module in this package."""

    name: str
    max_batch_size: int

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        """Send every message of ``batch``; one result per message, in input order."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...
