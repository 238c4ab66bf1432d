"""Hand-over edge cases: a misbehaving provider never loses the results of other chunks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from postroom.errors import AmbiguousProviderError
from postroom.messages import RenderedEmail
from postroom.providers.base import SendResult
from postroom.worker.handover import HandOver
from postroom.worker.retry import RetryPolicy

EMAIL = RenderedEmail(
    send_id="S0",
    message_id="<S0@example.com>",
    sender="a@example.com",
    recipient="b@example.com",
    recipient_name=None,
    subject="Hi",
    html="<p>Hi</p>",
    text="Hi",
    date="Mon, 01 Jan 2024 00:00:00 +0000",
)


class ShortChangingProvider:
    """Answers the chunk holding S3 with one result too few (a provider bug)."""

    name = "buggy"
    max_batch_size = 2

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        results = [SendResult(e.send_id, provider_message_id=f"id-{e.send_id}") for e in batch]
        return results[:-1] if any(e.send_id == "S3" for e in batch) else results

    async def close(self) -> None:
        pass


async def test_a_chunk_with_the_wrong_number_of_results_is_ambiguous_alone() -> None:
    emails = [replace(EMAIL, send_id=f"S{i}") for i in range(5)]  # chunks: S0 S1 | S2 S3 | S4
    results = await HandOver(ShortChangingProvider(), RetryPolicy()).send(emails)
    assert [r.send_id for r in results] == [e.send_id for e in emails]
    assert [r.provider_message_id for r in results if r.ok] == ["id-S0", "id-S1", "id-S4"]
    assert all(isinstance(r.error, AmbiguousProviderError) for r in results[2:4])
