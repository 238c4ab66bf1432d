"""A scriptable provider for tests: decides each message's result and records every call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from postroom.errors import ProviderError
from postroom.messages import RenderedEmail
from postroom.providers.base import SendResult

Script = Callable[[RenderedEmail, int], ProviderError | None]
"""Given a message and how many times it was offered before, the error to return (or None)."""


@dataclass
class FakeProvider:
    name: str = "fake"
    max_batch_size: int = 100
    script: Script = field(default=lambda _email, _seen: None)
    calls: list[list[RenderedEmail]] = field(default_factory=list)
    offered: dict[str, int] = field(default_factory=dict)
    delivered: list[RenderedEmail] = field(default_factory=list)
    closed: bool = False

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        self.calls.append(list(batch))
        results = []
        for email in batch:
            seen = self.offered.get(email.send_id, 0)
            self.offered[email.send_id] = seen + 1
            error = self.script(email, seen)
            if error is None:
                self.delivered.append(email)
                results.append(
                    SendResult(email.send_id, provider_message_id=f"fake-{email.send_id}")
                )
            else:
                results.append(SendResult(email.send_id, error=error))
        return results

    async def close(self) -> None:
        self.closed = True

    def delivered_to(self, recipient: str) -> list[RenderedEmail]:
        return [e for e in self.delivered if e.recipient.lower() == recipient.lower()]


def plain_email(n: int, recipient: str | None = None) -> RenderedEmail:
    """A small rendered message, number ``n`` (send id ``s0000n``), for provider-side tests."""
    return RenderedEmail(
        send_id=f"s{n:05d}",
        message_id=f"<s{n:05d}@example.com>",
        sender="Platform <noreply@example.com>",
        recipient=recipient or f"r{n}@example.com",
        recipient_name=None,
        subject="Hello",
        html="<p>Hello</p>",
        text="Hello",
        date="Sat, 28 Nov 2026 05:00:00 +0000",
    )
